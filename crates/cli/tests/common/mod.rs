//! Shared by the engine suites: the test images, unique labels, and ways to run
//! one job warm, cold, and through plain `docker run --rm --init`.
#![allow(dead_code)]

pub mod github;
pub mod server;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use warmpool_core::{Job, Profile};
use warmpool_exec::{
    AfterRun, Executor, Outcome, OutputSink, Parked, Recycle, ResolvedProfile, RunControl,
    StreamKind,
};
use warmpool_runtime::{DockerRuntime, Runtime};

pub const BUSYBOX: &str = "warmpool-test/busybox:latest";
pub const CMD_ONLY: &str = "warmpool-test/cmd:latest";
pub const ENTRY: &str = "warmpool-test/entry:latest";
pub const USER: &str = "warmpool-test/user:latest";
pub const NOSHELL: &str = "warmpool-test/noshell:latest";

/// The label key every test container carries, with a value unique to the test.
pub const TEST_LABEL: &str = "warmpool-test-run";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build the test images once per test binary (cheap when the engine has them cached).
pub fn ensure_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/images/build.sh"))
            .output()
            .expect("run tests/images/build.sh");
        assert!(
            out.status.success(),
            "building the test images failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A name no other test (or session) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes, when dropped, every container carrying this test's label, so even a
/// failing test leaves nothing on the engine (it runs `docker rm -f`).
pub struct CleanupGuard(pub String);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        // Twice, a moment apart: a container whose creation was in flight when the
        // test ended (a killed server mid-park) appears only after the first pass.
        self.remove_all();
        std::thread::sleep(std::time::Duration::from_millis(500));
        self.remove_all();
    }
}

impl CleanupGuard {
    fn remove_all(&self) {
        let filter = format!("label={TEST_LABEL}={}", self.0);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// The guard for a profile made by [`profile`].
pub fn cleanup(p: &Profile) -> CleanupGuard {
    CleanupGuard(p.labels[TEST_LABEL].clone())
}

/// A profile for `image` whose containers carry a label unique to this test.
pub fn profile(image: &str) -> Profile {
    let name = unique("t");
    let mut p = Profile::new(&name, image);
    p.network = Some("none".into());
    p.labels = BTreeMap::from([(TEST_LABEL.to_string(), name.clone())]);
    p
}

#[derive(Clone)]
pub struct Engine {
    pub runtime: Arc<DockerRuntime>,
    pub executor: Executor,
}

pub fn engine() -> Engine {
    ensure_images();
    let runtime = Arc::new(DockerRuntime::connect(None).expect("connect to the engine"));
    let executor = Executor::new(runtime.clone());
    Engine { runtime, executor }
}

/// What a run printed and how it ended, in `docker run` terms.
#[derive(Clone, PartialEq, Eq)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: i32,
}

// Readable in assertion failures: text, and only the start of a long stream.
impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |b: &[u8]| {
            let t = String::from_utf8_lossy(&b[..b.len().min(2048)]).into_owned();
            if b.len() > 2048 {
                format!("{t}... ({} bytes)", b.len())
            } else {
                t
            }
        };
        f.debug_struct("Captured")
            .field("stdout", &show(&self.stdout))
            .field("stderr", &show(&self.stderr))
            .field("code", &self.code)
            .finish()
    }
}

impl Captured {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// HOSTNAME is the container's ID: the one thing that differs run to run.
    pub fn without_hostname(mut self) -> Captured {
        for s in [&mut self.stdout, &mut self.stderr] {
            let text = String::from_utf8_lossy(s).into_owned();
            if text.contains("HOSTNAME=") {
                let kept: Vec<&str> = text
                    .split_inclusive('\n')
                    .filter(|l| !l.starts_with("HOSTNAME="))
                    .collect();
                *s = kept.concat().into_bytes();
            }
        }
        self
    }
}

#[derive(Default)]
pub struct CollectSink {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl OutputSink for CollectSink {
    async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
        match stream {
            StreamKind::Stdout => self.stdout.extend_from_slice(data),
            StreamKind::Stderr => self.stderr.extend_from_slice(data),
        }
        Ok(())
    }
}

pub async fn resolve(e: &Engine, p: &Profile) -> Arc<ResolvedProfile> {
    e.executor.resolve(p).await.expect("resolve profile")
}

fn captured(sink: CollectSink, o: &Outcome) -> Captured {
    Captured {
        stdout: sink.stdout,
        stderr: sink.stderr,
        code: o.exit_code(),
    }
}

/// Park first, then hand the job over: the warm path.
pub async fn run_warm(e: &Engine, p: &Profile, job: Job) -> (Captured, Outcome) {
    let resolved = resolve(e, p).await;
    let parked = e.executor.park(resolved).await.expect("park");
    let mut sink = CollectSink::default();
    let o = parked
        .run(job, &mut sink, RunControl::default())
        .await
        .expect("warm run");
    (captured(sink, &o), o)
}

/// Park and run in one go: the cold path.
pub async fn run_cold(e: &Engine, p: &Profile, job: Job) -> (Captured, Outcome) {
    let resolved = resolve(e, p).await;
    let mut sink = CollectSink::default();
    let o = e
        .executor
        .run_cold(resolved, job, &mut sink, RunControl::default())
        .await
        .expect("cold run");
    (captured(sink, &o), o)
}

/// The reference: `docker run --rm --init` with the profile's env and knobs as flags.
pub fn docker_run(p: &Profile, job: &Job) -> Captured {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--init", "--log-driver", "none"]);
    cmd.args(["--label", &format!("{TEST_LABEL}={}", p.name)]);
    if let Some(n) = &p.network {
        cmd.args(["--network", n]);
    }
    if let Some(u) = &p.user {
        cmd.args(["--user", u]);
    }
    if let Some(w) = &p.workdir {
        cmd.args(["--workdir", w]);
    }
    if p.read_only {
        cmd.arg("--read-only");
    }
    for t in &p.tmpfs {
        if t.options.is_empty() {
            cmd.args(["--tmpfs", &t.path]);
        } else {
            cmd.args(["--tmpfs", &format!("{}:{}", t.path, t.options)]);
        }
    }
    for (k, v) in p.env.iter().chain(job.env.iter()) {
        cmd.args(["-e", &format!("{k}={v}")]);
    }
    if job.stdin.is_some() {
        cmd.arg("-i");
    }
    cmd.arg(&p.image);
    cmd.args(&job.args);
    cmd.stdin(if job.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("docker run");
    if let Some(bytes) = &job.stdin {
        let mut stdin = child.stdin.take().unwrap();
        let bytes = bytes.clone();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let out = child.wait_with_output().expect("docker run output");
    Captured {
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.status.code().unwrap_or(-1),
    }
}

/// Containers (any state) carrying this test's label.
pub async fn leftovers(e: &Engine, p: &Profile) -> Vec<String> {
    e.runtime
        .list(&[(TEST_LABEL, p.labels[TEST_LABEL].as_str())])
        .await
        .expect("list")
        .into_iter()
        .map(|c| format!("{} ({})", c.name, c.state))
        .collect()
}

/// After a test: background removals done, nothing of ours left on the engine.
pub async fn assert_clean(e: &Engine, p: &Profile) {
    e.executor.drain().await;
    let left = leftovers(e, p).await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

pub fn job(args: &[&str]) -> Job {
    Job {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Job::default()
    }
}

/// How a case of the engine suites runs. `SingleUse`: every job in a fresh
/// container (the default profile). `Reuse`: a reuse profile (read-only root,
/// `/tmp` as tmpfs, `reuse` above 1), and the job under test runs in a
/// container that has already served [`dirty_job`] and been reset by its gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    SingleUse,
    Reuse,
}

/// Jobs per container on a reuse profile: more than any case runs.
pub const REUSE_JOBS: usize = 1000;

impl Mode {
    /// [`profile`] for this mode.
    pub fn profile(self, image: &str) -> Profile {
        let mut p = profile(image);
        if self == Mode::Reuse {
            // What a reusable profile needs (config.rs `reusable`): a read-only
            // root, scratch space on tmpfs, Docker's default seccomp profile.
            p.read_only = true;
            p.tmpfs = vec![warmpool_core::config::Tmpfs {
                path: "/tmp".into(),
                options: String::new(),
            }];
            p.reuse = REUSE_JOBS;
        }
        p
    }
}

/// Generates `single_use::NAME` and `reuse::NAME` tests for each `async fn
/// NAME(mode: Mode)` listed, so a failure's name says which mode failed.
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod single_use {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Mode::SingleUse).await
                }
            )*
        }
        mod reuse {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Mode::Reuse).await
                }
            )*
        }
    };
}

/// The secret the dirty job carries in its env and its stdin.
pub const DIRTY_SECRET: &str = "dirty-job-secret-0f1e2d";

/// What the dirty job prints last (before the hostname, for shell images).
pub const DIRTY_DONE: &str = "dirty job done";

/// The job a reused container serves before the job under test: as dirty as
/// the image lets it be. With a shell (busybox-based images) it writes into
/// every place it may write (the profile's tmpfs mounts, /dev, /dev/shm,
/// /dev/mqueue, its working directory): files, a directory it then makes
/// unreadable, a symlink, a fifo; it changes the modes and owners of those
/// places, leaves background processes (one in a session of its own, holding
/// its output open), SysV objects, and a copy of its stdin; it carries a
/// secret in env and stdin; it prints its hostname last. Steps the profile's
/// user may not take fail quietly. Without a shell (noshell) it makes SysV
/// objects; an image whose entrypoint takes the arguments (entry) only runs.
pub fn dirty_job(p: &Profile) -> Job {
    let args: Vec<String> = match p.image.as_str() {
        NOSHELL => vec!["sysv".into()],
        ENTRY => vec!["dirty".into()],
        _ => {
            let places: Vec<String> = ["/tmp", "/dev", "/dev/shm", "/dev/mqueue"]
                .iter()
                .map(|s| s.to_string())
                .chain(p.tmpfs.iter().map(|t| t.path.clone()))
                .collect();
            let script = format!(
                r#"exec 2>/dev/null
cat > /tmp/.dirty-stdin
for d in {places} "$PWD"; do
  echo "$DIRTY_ENV" > "$d/.dirty-file"
  echo q > "$d/dirty-mq"
  mkdir -p "$d/dirty-dir/sub" && echo x > "$d/dirty-dir/sub/f" && chmod 000 "$d/dirty-dir"
  ln -s / "$d/dirty-link"
  mkfifo "$d/dirty-fifo"
done
jobtool sysv >/dev/null
setsid sh -c 'sleep 1000 & sleep 1001 &'
sleep 1002 >/dev/null &
for d in {places} "$PWD"; do chmod 0700 "$d"; chown 1000:1000 "$d"; done
chmod 0777 /tmp
cd /tmp
echo {DIRTY_DONE}
hostname"#,
                places = places.join(" "),
            );
            vec!["sh".into(), "-c".into(), script]
        }
    };
    Job {
        args,
        env: vec![("DIRTY_ENV".into(), DIRTY_SECRET.into())],
        stdin: Some(format!("{DIRTY_SECRET}\n").into_bytes()),
        ..Job::default()
    }
}

/// A container of a reuse profile, kept across jobs: each job runs on it with
/// `Parked::run_then` (as a pool's `Claimed::run` does), and the next waits
/// for the gate's reset. Dropped, it removes its container.
pub struct Reused {
    id: String,
    parked: Option<Parked>,
}

impl Reused {
    /// A new container of `p` that has served [`dirty_job`] and been reset:
    /// the next job is its second.
    pub async fn dirty(e: &Engine, p: &Profile) -> Reused {
        assert!(p.reuse > 2, "profile {} is not a reuse profile", p.name);
        let parked = e.executor.park(resolve(e, p).await).await.expect("park");
        let mut r = Reused {
            id: parked.id().to_string(),
            parked: Some(parked),
        };
        let (out, o) = r.run(dirty_job(p)).await;
        assert_eq!(o.exit_code(), 0, "the dirty job failed: {out:?} {o:?}");
        let text = out.stdout_text();
        if text.contains(DIRTY_DONE) {
            // The hostname the job saw names the container: the same one.
            let host = text.lines().last().unwrap_or_default();
            assert!(
                !host.is_empty() && r.id.starts_with(host),
                "the dirty job ran in {host:?}, not {}: {out:?}",
                r.id
            );
        }
        assert_eq!(r.jobs(), Some(1), "not parked again after the dirty job");
        r
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Jobs its container has served, if it is parked again (reset).
    pub fn jobs(&self) -> Option<usize> {
        self.parked.as_ref().map(Parked::jobs)
    }

    /// Run `job` on the container, then wait for its reset (see `run_with`).
    pub async fn run(&mut self, job: Job) -> (Captured, Outcome) {
        self.run_with(job, RunControl::default()).await
    }

    /// Run `job` on the container, which must be parked again after its last
    /// job; then wait for the gate's reset. A failed reset fails the test; a
    /// container not reset at all (its job killed, its last job) is removed,
    /// and no further job can run here.
    pub async fn run_with(&mut self, job: Job, control: RunControl) -> (Captured, Outcome) {
        let (sink, o) = self.try_run(job, control).await.expect("run");
        (captured(sink, &o), o)
    }

    /// `run_with`, returning the executor's error.
    pub async fn try_run(
        &mut self,
        job: Job,
        control: RunControl,
    ) -> Result<(CollectSink, Outcome), warmpool_exec::ExecError> {
        let parked = self.parked.take().unwrap_or_else(|| {
            panic!(
                "container {} was not parked again after its last job",
                self.id
            )
        });
        assert_eq!(parked.id(), self.id);
        let served = parked.jobs();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let recycle: Recycle = Box::new(move |after| {
            let _ = tx.send(after);
        });
        let mut sink = CollectSink::default();
        let o = parked
            .run_then(job, &mut sink, control, Some(recycle))
            .await?;
        assert_eq!(o.container, self.id, "the job ran in another container");
        match rx.await {
            Ok(AfterRun::Reset(parked)) => {
                assert_eq!(parked.id(), self.id);
                assert_eq!(parked.jobs(), served + 1);
                self.parked = Some(*parked);
            }
            Ok(AfterRun::ResetFailed(why)) => panic!(
                "the gate could not reset container {} after job {} ({o:?}): {why}",
                self.id,
                served + 1
            ),
            // Not to be reset (dropped uncalled): removed.
            Err(_) => {}
        }
        Ok((sink, o))
    }
}

/// Run `job` as the mode's warm path: single use, on a container parked
/// first (`run_warm`); reuse, as the second job of a container whose first
/// was [`dirty_job`] (the container is removed afterwards).
pub async fn run_in(e: &Engine, mode: Mode, p: &Profile, job: Job) -> (Captured, Outcome) {
    match mode {
        Mode::SingleUse => run_warm(e, p, job).await,
        Mode::Reuse => Reused::dirty(e, p).await.run(job).await,
    }
}
