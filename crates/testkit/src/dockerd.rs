//! A second Docker engine owned by a test: one per simulated node.
//!
//! [`Dockerd::start`] runs `dockerd` with everything of its own under a fresh
//! temp dir `/tmp/wpd-<pid>-<n>/` (short on purpose: a unix socket path must
//! be under 108 bytes):
//!
//! | path / setting     | what                                                          |
//! |--------------------|---------------------------------------------------------------|
//! | `d.sock`           | the API socket ([`Dockerd::socket_path`], [`Dockerd::docker_host`]) |
//! | `root/`            | data root: images, containers, volumes (kept across restarts) |
//! | `run/`             | exec root, with the containerd dockerd starts for itself      |
//! | `d.pid`            | pidfile                                                       |
//! | `daemon.json`      | an empty config, so the host's `/etc/docker/daemon.json` is not read |
//! | `dockerd.log`      | dockerd's (and its containerd's) output, appended across restarts |
//! | cgroup parent      | `/wpd-<pid>-<n>` (cgroupfs driver): the containers' processes |
//!
//! Networking is off and private: dockerd runs in a network namespace of its
//! own (`unshare --net`, which then execs dockerd: same pid) with
//! `--bridge=none --iptables=false --ip-forward=false --ip-masq=false`. The
//! namespace matters: with `--bridge=none` dockerd deletes any `docker0` link it
//! sees, which in the host's namespace would be the host engine's bridge.
//! Nothing on the host's network changes. The engine has the `none` and `host`
//! networks only (no `bridge`): a container, by default, has its loopback and
//! nothing else; `--network host` is the engine's namespace, which also has
//! only a `lo`, not the host's interfaces. Storage: `overlay2`, falling back to `vfs` when overlay2
//! cannot start (e.g. a temp dir on overlayfs); `WARMPOOL_TESTKIT_STORAGE_DRIVER`
//! forces one. dockerd starts its own containerd (under `run/containerd`), so
//! two engines, and the host's, never share one; the host engine
//! (`/var/run/docker.sock`) is never touched, except that
//! [`Dockerd::load_image`] reads an image from it with `docker save`.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use warmpool_testkit::dockerd::Dockerd;
//! let mut node = Dockerd::start()?;
//! node.load_image("warmpool-test/busybox:latest")?; // from the host engine
//! let out = node.docker().args(["run", "--rm", "warmpool-test/busybox:latest", "echo", "hi"]).output()?;
//! assert_eq!(out.stdout, b"hi\n");
//! // Give node.docker_host() to the code under test (DOCKER_HOST or bollard).
//! node.kill()?; // the node crashes
//! node.restart()?; // and comes back, images kept
//! # Ok(()) }
//! ```
//!
//! From async code the calls block their thread; on a current-thread runtime
//! that stalls every task, so move the engine through `spawn_blocking`
//! (`Dockerd` is `Send`):
//!
//! ```no_run
//! # async fn f(mut node: warmpool_testkit::dockerd::Dockerd) -> anyhow::Result<()> {
//! let node = tokio::task::spawn_blocking(move || node.restart().map(|()| node)).await??;
//! # Ok(()) }
//! ```
//!
//! Cleanup. Dropping a `Dockerd` SIGKILLs every process of the engine
//! (dockerd, its containerd, the containerd shims, every process in the
//! engine's cgroup parent, and any `docker` client pointed at its socket),
//! unmounts everything mounted under the temp dir (overlay mounts, network
//! namespaces), removes the shims' sockets from `/run/containerd/s/`, the
//! cgroups and the temp dir. The same cleanup runs if the test process dies
//! without dropping it (SIGKILL, `process::exit`, a `static`): at `start` a
//! watchdog (`sh`, its own process group, deaf to SIGINT/SIGTERM/SIGHUP) blocks
//! reading a pipe whose only writer is the test process; the pipe's EOF, on
//! drop or when the test process exits however it exits, starts the cleanup.
//! `Drop` waits for it, so after the drop nothing is left.
//!
//! Limits:
//! - Needs root (dockerd does), Linux, `dockerd` + `containerd` + `runc`, the
//!   `docker` CLI, `unshare` (util-linux), and `sh`, `awk`, `find`, `umount`
//!   for the cleanup.
//! - No container networking: nothing reaches the host or other containers
//!   over the network, no published ports, and a container asking for the
//!   `bridge` network (e.g. a profile with `network = "bridge"`) fails to
//!   start; the default, `none` and `host` work.
//! - The methods block (a start takes about a second, a stop up to a few):
//!   from async code, use a multi-thread runtime or `spawn_blocking`.
//! - `stop` gives running containers 2 s (`docker stop -t 2` on each, then
//!   SIGTERM to dockerd), then they are killed.
//! - With dockerd 20.10 the engine's ID (`docker info` `.ID`) is the host's:
//!   it comes from `/etc/docker/key.json`, which 20.10 reads whatever the data
//!   root (23.0 and later keep an ID in the data root). Tell engines apart by
//!   socket or data root (`.DockerRootDir`).
//! - The temp dir is under `/tmp` (not `$TMPDIR`), to keep the socket path short.

use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The cleanup, run by the watchdog (mode `watch`) and by [`Dockerd::kill`]
/// (mode `kill`).
const CLEANUP: &str = include_str!("dockerd_cleanup.sh");

/// How long `start` waits for the API to answer `/_ping`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits for dockerd to exit after SIGTERM (containers get 2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable that forces a storage driver (e.g. `vfs`).
pub const STORAGE_DRIVER_ENV: &str = "WARMPOOL_TESTKIT_STORAGE_DRIVER";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A Docker engine owned by the test; see the [module docs](self).
pub struct Dockerd {
    dir: PathBuf,
    name: String,
    storage_driver: String,
    daemon: Option<Child>,
    watchdog: Option<Watchdog>,
}

struct Watchdog {
    child: Child,
    /// The pipe's only write end: closing it (drop) starts the cleanup.
    stdin: Option<ChildStdin>,
}

impl Dockerd {
    /// Starts an engine in a fresh temp dir and waits until its API answers.
    /// Storage driver: `$WARMPOOL_TESTKIT_STORAGE_DRIVER` if set, else
    /// `overlay2`, else (overlay2 could not start) `vfs`.
    pub fn start() -> Result<Dockerd> {
        let drivers: Vec<String> = match std::env::var(STORAGE_DRIVER_ENV) {
            Ok(v) if !v.trim().is_empty() => vec![v.trim().to_string()],
            _ => vec!["overlay2".into(), "vfs".into()],
        };
        Self::start_with_drivers(drivers)
    }

    /// [`start`](Self::start) with this storage driver and no fallback.
    pub fn start_with_storage_driver(driver: &str) -> Result<Dockerd> {
        Self::start_with_drivers(vec![driver.to_string()])
    }

    fn start_with_drivers(drivers: Vec<String>) -> Result<Dockerd> {
        let (dir, name) = make_dir()?;
        let watchdog = spawn_watchdog(&dir, &name)?;
        let mut d = Dockerd {
            dir,
            name,
            storage_driver: String::new(),
            daemon: None,
            watchdog: Some(watchdog),
        };
        fs::write(d.dir.join("daemon.json"), "{}\n").context("write daemon.json")?;
        let mut errors = Vec::new();
        for driver in drivers {
            d.storage_driver = driver.clone();
            match d.spawn_and_wait() {
                Ok(()) => return Ok(d),
                Err(e) => {
                    errors.push(format!("{driver}: {e:#}"));
                    // A fresh start for the next driver: nothing of this one stays.
                    d.kill()?;
                    let root = d.dir.join("root");
                    if root.exists() {
                        fs::remove_dir_all(&root)
                            .with_context(|| format!("remove {}", root.display()))?;
                    }
                }
            }
        }
        bail!("dockerd did not start:\n{}", errors.join("\n"))
    }

    /// The engine's API socket, e.g. `/tmp/wpd-1234-0/d.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("d.sock")
    }

    /// `unix:///tmp/wpd-.../d.sock`, for `DOCKER_HOST` or `docker -H`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// The temp dir holding everything of this engine.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data root (images, containers), kept across [`restart`](Self::restart).
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// dockerd's output, appended across restarts: read it when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The cgroup parent of the engine's containers (a single path component,
    /// e.g. `wpd-1234-0`; the engine uses `/wpd-1234-0/<container id>`).
    pub fn cgroup_parent(&self) -> &str {
        &self.name
    }

    /// The storage driver in use (`overlay2` or `vfs`).
    pub fn storage_driver(&self) -> &str {
        &self.storage_driver
    }

    /// dockerd's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Whether dockerd was started and has not been stopped or killed (it may
    /// still have died on its own).
    pub fn is_running(&mut self) -> bool {
        match self.daemon.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// A `docker` command aimed at this engine (`docker -H unix://...`).
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env_remove("DOCKER_CONTEXT")
            .arg("-H")
            .arg(self.docker_host());
        c
    }

    /// Copies an image from the host engine (whatever the `docker` CLI reaches
    /// from the environment) into this one: `docker save tag | docker -H ... load`.
    pub fn load_image(&self, tag: &str) -> Result<()> {
        let mut save = Command::new("docker")
            .args(["save", tag])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn docker save")?;
        let out = save
            .stdout
            .take()
            .ok_or_else(|| anyhow!("docker save: no stdout"))?;
        let load = self
            .docker()
            .arg("load")
            .arg("-q")
            .stdin(Stdio::from(out))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn docker load")?;
        let load_out = load.wait_with_output().context("wait docker load")?;
        let save_out = save.wait_with_output().context("wait docker save")?;
        if !save_out.status.success() {
            bail!(
                "docker save {tag}: {}: {}",
                save_out.status,
                String::from_utf8_lossy(&save_out.stderr).trim()
            );
        }
        if !load_out.status.success() {
            bail!(
                "docker load of {tag} into {}: {}: {}",
                self.docker_host(),
                load_out.status,
                String::from_utf8_lossy(&load_out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stops dockerd gracefully (`docker stop -t 2` on every running
    /// container, then SIGTERM: dockerd stops what is left and its containerd)
    /// and waits for it to exit. A no-op when it is
    /// not running. If it has not exited after 30 s, kills everything
    /// (as [`kill`](Self::kill)) and returns an error.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.daemon.take() else {
            return Ok(());
        };
        if child.try_wait().context("dockerd status")?.is_some() {
            return Ok(());
        }
        // dockerd's shutdown gives each container its own stop timeout (10 s
        // by default, whatever --shutdown-timeout says): stop them first with
        // a short one. Best effort: the SIGTERM below stops what is left.
        self.stop_containers();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("run kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {}: {status}", child.id());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait().context("dockerd status")?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.daemon = Some(child);
                self.kill()?;
                bail!(
                    "dockerd did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it (log: {})",
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops dockerd (see [`stop`](Self::stop); nothing to stop after
    /// [`kill`](Self::kill)) and starts it again on the same data root: images
    /// and container records are kept, running containers are not.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn_and_wait()
    }

    /// Simulates the node crashing and rebooting: SIGKILL to dockerd, its
    /// containerd, the shims and every container process at once, then the
    /// mounts and the runtime state (exec root, pidfile, socket) go, as after a
    /// reboot. The data root stays: [`restart`](Self::restart) brings the
    /// engine back with its images (containers that were running are recorded
    /// as exited).
    pub fn kill(&mut self) -> Result<()> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(CLEANUP)
            .arg("dockerd-cleanup")
            .arg("kill")
            .env("WPD_DIR", &self.dir)
            .env("WPD_CGROUP", &self.name)
            .stdin(Stdio::null())
            .output()
            .context("run the cleanup script")?;
        if let Some(mut child) = self.daemon.take() {
            // SIGKILLed above; if it somehow was not, make sure.
            let _ = child.kill();
            let _ = child.wait();
        }
        if !out.status.success() || !out.stderr.is_empty() {
            bail!(
                "killing the engine in {}: {}: {}",
                self.dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `docker stop -t 2` on every running container, each bounded by 15 s.
    fn stop_containers(&self) {
        let Ok(out) = self.docker().args(["ps", "-q"]).output() else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return;
        }
        let Ok(mut stop) = self
            .docker()
            .args(["stop", "-t", "2"])
            .args(&ids)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while matches!(stop.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = stop.kill();
        let _ = stop.wait();
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open dockerd.log")?;
        let log2 = log.try_clone().context("clone log fd")?;
        let d = &self.dir;
        // Its own network namespace: with `--bridge=none`, dockerd deletes any
        // `docker0` it sees, which in the host's namespace is the host engine's.
        let mut cmd = Command::new("unshare");
        cmd.arg("--net")
            .arg("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("run"))
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .arg("--host")
            .arg(self.docker_host())
            .arg(format!("--storage-driver={}", self.storage_driver))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--shutdown-timeout=2",
            ])
            .arg(format!("--cgroup-parent=/{}", self.name))
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Its own process group: a Ctrl-C on the test run must not start a
            // graceful shutdown racing the watchdog's cleanup.
            .process_group(0);
        let log_start = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
        let child = cmd
            .spawn()
            .context("spawn unshare --net dockerd (are util-linux and dockerd installed?)")?;
        let pid = child.id();
        self.daemon = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.daemon.as_mut() {
                if let Some(status) = child.try_wait().context("dockerd status")? {
                    self.daemon = None;
                    bail!(
                        "dockerd exited during start: {status}\n{}",
                        self.log_since(log_start)
                    );
                }
            }
            if ping(&self.socket_path()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "dockerd (pid {pid}) did not answer /_ping within {START_TIMEOUT:?}\n{}",
                    self.log_since(log_start)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines dockerd wrote since offset `from` of its log.
    fn log_since(&self, from: u64) -> String {
        let text = fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(from).unwrap_or(0).min(text.len());
        let text = String::from_utf8_lossy(&text[start..]).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("dockerd log ({}):\n{tail}", self.log_path().display())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Closing the pipe starts the watchdog's cleanup; wait for it, so nothing
        // is left when the drop returns.
        if let Some(mut w) = self.watchdog.take() {
            drop(w.stdin.take());
            let _ = w.child.wait();
        }
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl std::fmt::Debug for Dockerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dockerd")
            .field("dir", &self.dir)
            .field("storage_driver", &self.storage_driver)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Creates `/tmp/wpd-<pid>-<n>` (mode 0700), skipping names already taken.
fn make_dir() -> Result<(PathBuf, String)> {
    let pid = std::process::id();
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("wpd-{pid}-{n}");
        let dir = PathBuf::from("/tmp").join(&name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok((dir, name)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }
    bail!("no free /tmp/wpd-{pid}-<n> name")
}

fn spawn_watchdog(dir: &Path, name: &str) -> Result<Watchdog> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(CLEANUP)
        .arg("dockerd-watchdog")
        .arg("watch")
        .env("WPD_DIR", dir)
        .env("WPD_CGROUP", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawn the watchdog (sh)")?;
    let stdin = child.stdin.take();
    if stdin.is_none() {
        let _ = child.kill();
        let _ = fs::remove_dir(dir);
        bail!("watchdog: no stdin pipe");
    }
    Ok(Watchdog { child, stdin })
}

/// Whether the engine's API answers `GET /_ping` with 200.
fn ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    if s.read_to_end(&mut buf).is_err() {
        return false;
    }
    let head = String::from_utf8_lossy(&buf);
    head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")
}
