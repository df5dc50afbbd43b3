//! How a run ended, as its `Outcome` tells it, against the real engine: an
//! out-of-memory kill says so, a signal someone else sent (`docker stop`) is
//! told apart from the ones warmpool sends itself (timeout, forwarded signals),
//! and an engine that goes away mid-run (its socket pulled out from under the
//! run) is told apart from a container killed under a living engine.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use warmpool_core::{Job, Profile};
use warmpool_exec::{Executor, Outcome, OutputSink, RunControl, StreamKind};
use warmpool_runtime::{DockerRuntime, Runtime};

/// The shared engine's socket, which the tests reach through [`EngineSocket`].
const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// Run `job` warm on an engine handle of its own, in the background, its
/// container removed before the handle resolves.
fn spawn_warm(p: &Profile, job: Job) -> tokio::task::JoinHandle<(Captured, Outcome)> {
    let p = p.clone();
    tokio::spawn(async move {
        let e = engine();
        let r = run_warm(&e, &p, job).await;
        e.executor.drain().await;
        r
    })
}

/// Wait (bounded) until the job's container runs `needle` (in `docker top`); its id.
async fn running_job(e: &Engine, p: &Profile, needle: &str) -> String {
    let label = p.labels[TEST_LABEL].clone();
    for _ in 0..400 {
        let found = e
            .runtime
            .list(&[(TEST_LABEL, label.as_str()), ("warmpool.role", "job")])
            .await
            .expect("list");
        if let Some(c) = found.into_iter().next() {
            let top = Command::new("docker")
                .args(["top", &c.id])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&top.stdout).contains(needle) {
                return c.id;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no container of {label} ran {needle:?}");
}

#[tokio::test]
async fn an_out_of_memory_kill_says_so() {
    let e = engine();
    let mut p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    p.memory = Some(32 * 1024 * 1024);
    // dd's 100 MiB block is past the limit as soon as it is filled.
    let (out, o) = run_warm(
        &e,
        &p,
        job(&["sh", "-c", "dd if=/dev/zero of=/dev/null bs=100M count=1"]),
    )
    .await;
    assert!(o.oom_killed, "{o:?} {out:?}");
    assert!(o.lost.is_none(), "the gate survived and reported: {o:?}");
    assert_eq!(out.code, 137, "dd was killed: {out:?}");
    assert_eq!(
        o.outside_signal, None,
        "the OOM killer's SIGKILL is not seen"
    );
    assert!(!o.engine_lost);

    // The same profile, a job within the limit: no claim.
    let (out, o) = run_warm(
        &e,
        &p,
        job(&["sh", "-c", "dd if=/dev/zero of=/dev/null bs=1M count=4"]),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!o.oom_killed, "{o:?}");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_stop_from_outside_names_its_signal() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let running = spawn_warm(&p, job(&["sh", "-c", "echo started; sleep 30"]));
    let id = running_job(&e, &p, "sleep 30").await;
    // What `docker stop` (or an engine shutdown) does first, sent by an outsider:
    // this test, not the run's own enforcer.
    e.runtime
        .kill(&id, warmpool_runtime::Signal::Term)
        .await
        .expect("SIGTERM");
    let (out, o) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the run ends when its job dies of the signal")
        .unwrap();
    assert_eq!(o.outside_signal, Some(15), "{o:?}");
    assert_eq!(out.code, 128 + 15, "{out:?}");
    assert!(o.lost.is_none(), "the gate reported the exit: {o:?}");
    assert!(!o.timed_out && !o.oom_killed && !o.engine_lost, "{o:?}");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn the_timeouts_own_sigterm_is_not_outside() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let j = Job {
        timeout: Some(Duration::from_millis(500)),
        ..job(&["sleep", "30"])
    };
    let (out, o) = run_warm(&e, &p, j).await;
    assert!(o.timed_out, "{o:?}");
    assert_eq!(out.code, 128 + 15, "sleep dies of the forwarded SIGTERM");
    assert_eq!(o.outside_signal, None, "warmpool sent it: {o:?}");
    assert!(!o.oom_killed && !o.engine_lost, "{o:?}");
    assert_clean(&e, &p).await;
}

/// Collects output and, once the job says "ready", passes a signal on to it
/// through the run's `RunControl`, as `warmpool run` passes on its own.
struct SignalOnReady {
    sink: CollectSink,
    tx: Option<mpsc::UnboundedSender<warmpool_runtime::Signal>>,
}

impl OutputSink for SignalOnReady {
    async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
        self.sink.write(stream, data).await?;
        if self.sink.stdout.windows(5).any(|w| w == b"ready") {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(warmpool_runtime::Signal::Usr1);
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_signal_passed_on_by_warmpool_is_not_outside() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let resolved = resolve(&e, &p).await;
    let parked = e.executor.park(resolved).await.expect("park");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut sink = SignalOnReady {
        sink: CollectSink::default(),
        tx: Some(tx),
    };
    let o = parked
        .run(
            job(&[
                "sh",
                "-c",
                "trap 'echo got USR1; exit 4' USR1; echo ready; while :; do sleep 0.05; done",
            ]),
            &mut sink,
            RunControl::with_signals(rx),
        )
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&sink.sink.stdout).into_owned();
    assert_eq!(stdout, "ready\ngot USR1\n");
    assert_eq!(o.exit_code(), 4);
    assert_eq!(o.outside_signal, None, "warmpool passed it on: {o:?}");
    assert_clean(&e, &p).await;
}

#[tokio::test]
async fn a_container_killed_under_a_living_engine_is_not_a_lost_engine() {
    let e = engine();
    let p = profile(BUSYBOX);
    let _cleanup = cleanup(&p);
    let running = spawn_warm(&p, job(&["sh", "-c", "echo started; sleep 30"]));
    let id = running_job(&e, &p, "sleep 30").await;
    // SIGKILL: the gate never sees it, so nothing says whose it was.
    e.runtime
        .kill(&id, warmpool_runtime::Signal::Kill)
        .await
        .expect("SIGKILL");
    let (out, o) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the run ends when its container dies")
        .unwrap();
    assert_eq!(out.code, 137, "{out:?}");
    assert!(o.lost.is_some(), "{o:?}");
    assert!(!o.engine_lost, "the engine answered: {o:?}");
    assert_eq!(o.outside_signal, None, "{o:?}");
    assert_clean(&e, &p).await;
}

/// A socket that stands for the engine's: it passes every connection on to the
/// real engine until [`EngineSocket::pull`] cuts them all and stops answering,
/// as an engine that dies does (its containers run on under containerd).
struct EngineSocket {
    path: PathBuf,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl EngineSocket {
    fn start(path: &Path) -> EngineSocket {
        let listener = UnixListener::bind(path).expect("bind the stand-in socket");
        let connections = Arc::new(Mutex::new(Vec::new()));
        let conns = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut engine) = UnixStream::connect(ENGINE_SOCKET).await else {
                    continue;
                };
                let relay = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                });
                conns.lock().unwrap().push(relay.abort_handle());
            }
        });
        EngineSocket {
            path: path.to_path_buf(),
            accept,
            connections,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The engine is gone: every connection cut, nobody answers a new one.
    fn pull(&self) {
        self.accept.abort();
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineSocket {
    fn drop(&mut self) {
        self.pull();
    }
}

/// Collects output and says once when the job has printed "started".
struct SayWhenStarted {
    sink: CollectSink,
    started: Option<oneshot::Sender<()>>,
}

impl OutputSink for SayWhenStarted {
    async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
        self.sink.write(stream, data).await?;
        if self.sink.stdout.windows(7).any(|w| w == b"started") {
            if let Some(tx) = self.started.take() {
                let _ = tx.send(());
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_engine_that_goes_away_mid_run_is_a_lost_engine() {
    ensure_images();
    let p = profile(BUSYBOX);
    // Removes the job's container (still running: the engine only seemed to go)
    // through the real socket.
    let _cleanup = cleanup(&p);
    let dir = std::env::temp_dir().join(unique("warmpool-engine-socket"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = EngineSocket::start(&dir.join("docker.sock"));
    let runtime = Arc::new(DockerRuntime::connect(Some(&socket.host())).expect("connect"));
    let executor = Executor::new(runtime);
    let resolved = executor.resolve(&p).await.expect("resolve");
    let parked = executor.park(resolved).await.expect("park");
    let (tx, started) = oneshot::channel();
    let run = tokio::spawn(async move {
        let mut sink = SayWhenStarted {
            sink: CollectSink::default(),
            started: Some(tx),
        };
        parked
            .run(
                job(&["sh", "-c", "echo started; sleep 30"]),
                &mut sink,
                RunControl::default(),
            )
            .await
    });
    tokio::time::timeout(Duration::from_secs(20), started)
        .await
        .expect("the job starts")
        .expect("the run is alive");
    socket.pull();
    let o = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the run ends when the engine goes")
        .unwrap()
        .expect("an outcome, not an error");
    assert!(o.started, "{o:?}");
    assert!(o.engine_lost, "{o:?}");
    assert!(o.lost.is_some(), "no exit frame: {o:?}");
    assert!(
        o.lost
            .as_deref()
            .unwrap_or("")
            .contains("engine did not answer"),
        "{o:?}"
    );
    assert_eq!(o.outside_signal, None);
    drop(socket);
    let _ = std::fs::remove_dir_all(&dir);
}
