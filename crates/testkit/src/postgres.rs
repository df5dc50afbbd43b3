//! A throwaway PostgreSQL cluster: `initdb` in a temp directory, the server on
//! a free loopback port (and a unix socket in that directory), trust
//! authentication, `fsync` off. One cluster serves many tests: each creates its
//! own database ([`PgCluster::create_database`]).
//!
//! Nothing outlives the test process: dropping the cluster stops the server
//! (`-m immediate`) and removes the directory, and a watchdog (a `sh` in its own
//! session, started with the cluster) does the same as soon as the test process
//! is gone, whether it returned, panicked, aborted or was killed; so a cluster
//! kept in a `static` (never dropped) is cleaned up too.
//!
//! PostgreSQL refuses to run as root: as root, every PostgreSQL binary runs as
//! `nobody` (`runuser -u nobody --`) and the directory is given to `nobody`.
//! The binaries are found in `PATH`, else the newest `/usr/lib/postgresql/*/bin`
//! (`WARMPOOL_PG_BIN` names the directory explicitly). Without them, `start`
//! panics saying to install PostgreSQL: a test that needs it never skips.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The superuser `initdb` creates; trusted on loopback and the socket.
pub const SUPERUSER: &str = "postgres";

/// The user PostgreSQL runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

/// How long `pg_ctl` waits for a start, a stop or a restart (seconds).
const PG_CTL_WAIT_SECS: &str = "60";

/// A running throwaway cluster. Stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    /// The temp directory: `data/`, the socket, the logs.
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `Some("nobody")` when running as root.
    run_as: Option<&'static str>,
    watchdog: Option<Child>,
    running: bool,
}

impl PgCluster {
    /// Creates and starts a cluster. Panics (with what to do) if PostgreSQL is
    /// not installed or the cluster cannot start.
    pub fn start() -> PgCluster {
        if find_bin_dir().is_none() {
            // Installed when missing and we are root (Debian); else it says what to do.
            let need = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/need.sh");
            let _ = Command::new("bash").arg(need).arg("postgresql").status();
        }
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed: no initdb in PATH, in $WARMPOOL_PG_BIN or under \
                 /usr/lib/postgresql/*/bin; install it with `apt-get install postgresql` \
                 (the PostgreSQL tests never skip)"
            )
        });
        let run_as = running_as_root().then_some(UNPRIVILEGED);
        let dir = temp_dir(run_as.is_some());
        let mut builder = fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", dir.display()));
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            run_as,
            watchdog: None,
            running: false,
        };
        // From here on, a panic drops the cluster: its directory goes.
        if let Some(user) = run_as {
            cluster.run_checked(
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(&cluster.dir),
            );
        }
        cluster.watchdog = Some(cluster.spawn_watchdog());
        let data = cluster.data_dir();
        let mut initdb = cluster.pg_command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        cluster.run_checked(&mut initdb);
        cluster.start_on_a_free_port();
        cluster
    }

    /// The URL of database `db` (over TCP on loopback, as the superuser).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Creates database `name` (letters, digits and `_` only); its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}: use lowercase letters, digits and _"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Runs `sql` in database `db` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let bin = self.bin.join("psql");
        let mut psql = Command::new(&bin);
        psql.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            db,
            "-c",
            sql,
        ]);
        let out = psql
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", bin.display()));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection is cut.
    pub fn restart(&mut self) {
        let mut restart = self.pg_ctl("restart");
        restart.args(["-m", "fast"]);
        self.run_checked(&mut restart);
        self.running = true;
    }

    /// Stops the server (`-m fast`); [`PgCluster::resume`] starts it again.
    pub fn stop(&mut self) {
        let mut stop = self.pg_ctl("stop");
        stop.args(["-m", "fast"]);
        self.run_checked(&mut stop);
        self.running = false;
    }

    /// Starts a stopped server again, on the same port.
    pub fn resume(&mut self) {
        if !self.running {
            assert!(self.try_start(self.port), "{}", self.server_log());
        }
    }

    /// The server's log so far (for a failing test's message).
    pub fn server_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        format!("PostgreSQL's log ({}):\n{log}", self.dir.display())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start_on_a_free_port(&mut self) {
        // Another process may take the port between our probe and the bind.
        for _ in 0..5 {
            let port = free_port();
            if self.try_start(port) {
                self.port = port;
                return;
            }
        }
        panic!(
            "the throwaway PostgreSQL did not start on any of 5 ports; {}",
            self.server_log()
        );
    }

    fn try_start(&mut self, port: u16) -> bool {
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.dir.display()
        );
        let mut start = self.pg_ctl("start");
        start.args(["-o", &options]);
        let started = self.run(&mut start).0;
        self.running = started;
        started
    }

    /// `pg_ctl ACTION` on this cluster, waiting, logging to `postgres.log`.
    fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", PG_CTL_WAIT_SECS, action]);
        cmd
    }

    /// A PostgreSQL binary, as the unprivileged user when we are root.
    fn pg_command(&self, name: &str) -> Command {
        let bin = self.bin.join(name);
        match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(bin);
                cmd
            }
            None => Command::new(bin),
        }
    }

    /// Runs `cmd` with its output in a file (a pipe would be held open by a
    /// server it starts); whether it succeeded, and that output.
    fn run(&self, cmd: &mut Command) -> (bool, String) {
        let out_path = self.dir.join("command.out");
        let out = fs::File::create(&out_path)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", out_path.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("could not open {}: {e}", out_path.display()));
        let status = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&out_path) {
            let _ = f.read_to_string(&mut text);
        }
        (status.success(), text)
    }

    fn run_checked(&self, cmd: &mut Command) {
        let (ok, text) = self.run(cmd);
        assert!(ok, "{cmd:?} failed:\n{text}\n{}", self.server_log());
    }

    /// A `sh` in its own session that waits for this process to go, then stops
    /// the server at once and removes the directory.
    fn spawn_watchdog(&self) -> Child {
        const SCRIPT: &str = r#"
pid=$1; dir=$2; pg_ctl=$3; shift 3
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
"$@" "$pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
rm -rf "$dir"
"#;
        let mut cmd = Command::new("setsid");
        cmd.args(["sh", "-c", SCRIPT, "warmpool-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(self.bin.join("pg_ctl"));
        if let Some(user) = self.run_as {
            cmd.args(["runuser", "-u", user, "--"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start the PostgreSQL watchdog: {e}"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut stop = self.pg_ctl("stop");
            stop.args(["-m", "immediate"]);
            let _ = self.run(&mut stop);
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the process's effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WARMPOOL_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| d.join("initdb").is_file());
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| d.join("initdb").is_file()) {
            // A symlink (e.g. /usr/local/bin/initdb) leads to the directory
            // holding the other binaries (psql, pg_ctl) of the same version.
            let real = fs::canonicalize(dir.join("initdb")).ok();
            return Some(
                real.and_then(|r| r.parent().map(Path::to_path_buf))
                    .unwrap_or(dir),
            );
        }
    }
    // Debian keeps the server binaries out of PATH, one directory per version.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A new directory's path under the temp dir; under `/tmp` when PostgreSQL
/// runs as another user and `$TMPDIR` is closed to others.
fn temp_dir(for_another_user: bool) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut base = std::env::temp_dir();
    let open_to_others = fs::metadata(&base).is_ok_and(|m| m.mode() & 0o001 != 0);
    if for_another_user && !open_to_others {
        base = PathBuf::from("/tmp");
    }
    base.join(format!(
        "warmpool-pg-{}-{n}-{nanos:08x}",
        std::process::id()
    ))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    fn gone_within(path: &Path, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if !path.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        !path.exists()
    }

    #[test]
    fn a_cluster_serves_databases_restarts_and_goes_on_drop() {
        let mut cluster = PgCluster::start();
        let url = cluster.create_database("first");
        assert_eq!(
            url,
            format!("postgres://postgres@127.0.0.1:{}/first", cluster.port())
        );
        cluster.psql("first", "CREATE TABLE t (n int); INSERT INTO t VALUES (7)");
        assert!(cluster
            .socket_dir()
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists());

        cluster.restart();
        assert_eq!(cluster.psql("first", "SELECT n FROM t"), "7");
        cluster.stop();
        assert!(TcpStream::connect(("127.0.0.1", cluster.port())).is_err());
        cluster.resume();
        assert_eq!(cluster.psql("first", "SELECT count(*) FROM t"), "1");

        let dir = cluster.dir.clone();
        let port = cluster.port();
        drop(cluster);
        assert!(!dir.exists(), "the directory goes with the cluster");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    /// A child test process that starts a cluster and aborts: the watchdog stops
    /// the server and removes the directory.
    #[test]
    fn nothing_outlives_an_aborted_process() {
        if std::env::var_os("WARMPOOL_TESTKIT_ABORT_CHILD").is_some() {
            let cluster = PgCluster::start();
            println!("DIR={} PORT={}", cluster.dir.display(), cluster.port());
            std::process::abort();
        }
        let exe = std::env::current_exe().expect("the test binary");
        let out = Command::new(exe)
            .args([
                "--exact",
                "postgres::tests::nothing_outlives_an_aborted_process",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("WARMPOOL_TESTKIT_ABORT_CHILD", "1")
            .output()
            .expect("run the child");
        assert!(!out.status.success(), "the child aborts");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find("DIR=").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("the child's output: {stdout}"));
        let mut parts = line.split(' ');
        let dir = PathBuf::from(parts.next().unwrap_or_default().trim_start_matches("DIR="));
        let port: u16 = parts
            .next()
            .and_then(|p| p.trim_start_matches("PORT=").parse().ok())
            .expect("a port");
        assert!(
            gone_within(&dir, Duration::from_secs(30)),
            "{} is removed by the watchdog",
            dir.display()
        );
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
