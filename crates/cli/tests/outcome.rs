//! How a run ended, as its `Outcome` tells it, against the real engine: an
//! out-of-memory kill says so, a signal someone else sent (`docker stop`) is
//! told apart from the ones warmpool sends itself (timeout, forwarded signals).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use tokio::sync::mpsc;
use warmpool_core::{Job, Profile};
use warmpool_exec::{Outcome, OutputSink, RunControl, StreamKind};
use warmpool_runtime::Runtime;

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
            let top = Command::new("docker").args(["top", &c.id]).output().unwrap();
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
    assert_eq!(o.outside_signal, None, "the OOM killer's SIGKILL is not seen");
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
    e.runtime.kill(&id, "SIGTERM").await.expect("SIGTERM");
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
    tx: Option<mpsc::UnboundedSender<&'static str>>,
}

impl OutputSink for SignalOnReady {
    async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
        self.sink.write(stream, data).await?;
        if self.sink.stdout.windows(5).any(|w| w == b"ready") {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send("SIGUSR1");
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
