//! Shared by the engine suites: the test images, unique labels, and ways to run
//! one job warm, cold, and through plain `docker run --rm --init`.
#![allow(dead_code)]

pub mod server;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use warmpool_core::{Job, Profile};
use warmpool_exec::{Executor, Outcome, OutputSink, ResolvedProfile, RunControl, StreamKind};
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
