//! A container parked at its gate, and the one path every job takes from there:
//! hand over the spec, stream the frames, take the exit, remove the container.

use crate::outcome::{Outcome, ParkTimings, RunTimings, SignalLedger, StreamKind};
use crate::{keep_tail, stderr_note, ExecError, Executor, ResolvedProfile};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use warmpool_core::job::compose;
use warmpool_core::Job;
use warmpool_gate::protocol::{ExitStatus, Frame, FrameDecoder};
use warmpool_runtime::{Output, Runtime, RuntimeError, Signal};

/// Where a job's output goes, chunk by chunk, as it arrives. Never handed the
/// whole output: a job that writes gigabytes costs one chunk of memory.
///
/// A run calls [`write`](OutputSink::write) with each piece of a stream, in order,
/// and [`cut`](OutputSink::cut) once if the stream reaches the profile's
/// `output_limit`; nothing more of that stream follows a cut. There is no
/// end-of-stream call: the run borrows the sink and the caller has it back when
/// the run returns (an outcome or an error), so a sink that holds bytes back (a
/// redactor waiting to see whether a tail grows into a secret) flushes them then,
/// for each stream not cut. (A job run again because its first container died
/// before it started writes on through the same sink: one stream, not two.)
pub trait OutputSink: Send {
    fn write(
        &mut self,
        stream: StreamKind,
        data: &[u8],
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// `stream` reached `limit` bytes and was cut there: the job goes on, its
    /// further output on this stream is dropped. A sink that holds bytes back
    /// ends the stream first (a secret straddling the cap must not leave its
    /// prefix behind), then writes the marker. By default: the marker.
    fn cut(
        &mut self,
        stream: StreamKind,
        limit: u64,
    ) -> impl Future<Output = std::io::Result<()>> + Send {
        async move {
            self.write(stream, cut_marker(stream, limit).as_bytes())
                .await
        }
    }
}

/// The line that ends a stream cut at `limit` bytes.
pub fn cut_marker(stream: StreamKind, limit: u64) -> String {
    format!(
        "\n[warmpool: {} cut at {limit} bytes; the job went on]\n",
        stream.name()
    )
}

/// Signals to pass on to a running job (as `docker run` proxies its own signals).
/// Cheap to clone: a job that is run again (its container died before it started)
/// keeps the same source of signals.
#[derive(Clone, Default)]
pub struct RunControl {
    signals: Option<Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Signal>>>>,
    cancelled: Option<Arc<AtomicBool>>,
}

impl RunControl {
    /// Pass on the signals received here to the job.
    pub fn with_signals(rx: mpsc::UnboundedReceiver<Signal>) -> RunControl {
        RunControl {
            signals: Some(Arc::new(tokio::sync::Mutex::new(rx))),
            cancelled: None,
        }
    }

    /// The caller's "this job is cancelled" flag: a cancelled job is never run
    /// again on another container.
    pub fn with_cancel_flag(mut self, flag: Arc<AtomicBool>) -> RunControl {
        self.cancelled = Some(flag);
        self
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// How long the stream may still deliver frames after the engine says the
/// container has stopped.
const AFTER_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long after a job's exit its container is acknowledged and removed: the
/// caller stores the job's end first (a commit takes well under this), and the
/// container's teardown does not compete with it for the disk.
const RETIRE_DELAY: Duration = Duration::from_millis(20);
/// How long the engine may take to answer "are you there" after a run ended
/// without an exit frame; no answer by then counts as the engine gone.
const ENGINE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a gate may take to reset its container after a job (reuse).
const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of a reusable container after a job (see [`Parked::run_then`]).
pub enum AfterRun {
    /// Its gate reset it and checked the reset: parked again, for the next job.
    Reset(Box<Parked>),
    /// Its gate could not reset it (why): it is removed.
    ResetFailed(String),
}

/// Told what became of a container after its job, once its gate has reset it
/// (or failed to). Dropped uncalled when the container is not reused (single
/// use, its last job, a job that ended without its gate's word).
pub type Recycle = Box<dyn FnOnce(AfterRun) + Send>;

/// A started container whose gate waits for a job.
pub struct Parked {
    executor: Executor,
    profile: Arc<ResolvedProfile>,
    id: Option<String>,
    output: BoxStream<'static, Result<Output, RuntimeError>>,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    decoder: FrameDecoder,
    parked_at: Instant,
    /// When it was first parked (its age counts against `max_age`).
    born: Instant,
    /// Jobs it has run.
    jobs: usize,
    timings: ParkTimings,
    /// The engine's wait on this container, sent when it was parked (see `run`).
    watchdog: Option<tokio::task::JoinHandle<Result<i64, RuntimeError>>>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("id", &self.id)
            .field("profile", &self.profile.profile.name)
            .finish()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        // A parked container that never ran a job (shutdown, error) is removed too.
        if let Some(id) = self.id.take() {
            self.executor.remove_later(id);
        }
    }
}

impl Parked {
    pub(crate) fn new(
        executor: Executor,
        profile: Arc<ResolvedProfile>,
        id: String,
        output: BoxStream<'static, Result<Output, RuntimeError>>,
        input: Pin<Box<dyn AsyncWrite + Send>>,
        decoder: FrameDecoder,
        timings: ParkTimings,
    ) -> Parked {
        // The watchdog's wait goes out now, while the container is parked: off
        // any job's path, and already waiting when the container stops (it
        // removes itself then, and a later wait would find nothing).
        let runtime = executor.runtime.clone();
        let watch_id = id.clone();
        let watchdog = tokio::spawn(async move { runtime.wait(&watch_id).await });
        Parked {
            executor,
            profile,
            id: Some(id),
            output,
            input,
            decoder,
            parked_at: Instant::now(),
            born: Instant::now(),
            jobs: 0,
            timings,
            watchdog: Some(watchdog),
        }
    }

    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    pub fn profile(&self) -> &Arc<ResolvedProfile> {
        &self.profile
    }

    /// How long this container has been waiting for a job.
    pub fn parked_for(&self) -> Duration {
        self.parked_at.elapsed()
    }

    pub fn park_timings(&self) -> ParkTimings {
        self.timings
    }

    /// How long ago it was first parked.
    pub fn age(&self) -> Duration {
        self.born.elapsed()
    }

    /// Jobs it has run (0 for a fresh container).
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Run `job` here: the only way any job runs. Consumes the container; it is
    /// removed in the background once the job has ended. The job is only read
    /// (a caller that may run it again lends it instead of copying its stdin).
    pub async fn run<S: OutputSink>(
        self,
        job: impl std::borrow::Borrow<Job> + Send,
        sink: &mut S,
        control: RunControl,
    ) -> Result<Outcome, ExecError> {
        self.run_then(job, sink, control, None).await
    }

    /// [`run`](Self::run), and for a profile with `reuse` above 1 whose
    /// container has jobs left: once the job's exit is reported (the outcome
    /// returns then), its gate resets the container, and `recycle` is told
    /// whether it can take the next job. Otherwise the container is removed
    /// and `recycle` dropped.
    pub async fn run_then<S: OutputSink>(
        mut self,
        job: impl std::borrow::Borrow<Job> + Send,
        sink: &mut S,
        control: RunControl,
        recycle: Option<Recycle>,
    ) -> Result<Outcome, ExecError> {
        let job = job.borrow();
        let id = self.id().to_string();
        let spec = compose(&self.profile.image, &self.profile.profile, job)?;
        let profile = &self.profile.profile;
        let timeout = job.timeout.unwrap_or(profile.job_timeout);
        let limit = profile.output_limit;
        let runtime = self.executor.runtime.clone();

        let handover = Instant::now();
        let encoded = spec.encode();
        drop(spec);
        let write = async {
            self.input.write_all(&encoded).await?;
            self.input.flush().await
        };
        if let Err(e) = write.await {
            return Err(ExecError::StreamLost {
                container: id,
                reason: format!("handing the job over failed: {e}"),
            });
        }
        drop(encoded);

        // Timeout and signals are enforced by a task of their own, so a caller that
        // reads the output slowly (or not at all) never delays a kill. It writes
        // down each signal it sends, so the gate's reports of them are not taken
        // for someone else's.
        let signals = Arc::new(Mutex::new(SignalLedger::default()));
        let enforcer = Enforcer::spawn(
            runtime.clone(),
            id.clone(),
            tokio::time::Instant::from_std(handover + timeout),
            profile.kill_grace,
            control.signals,
            signals.clone(),
        );

        // The engine's wait is a watchdog for a container that dies without an exit
        // frame (killed from outside, out of memory): the frames stay the source of
        // truth. Its request went out when the container was parked.
        // Polled by reference: a container that is reused keeps its wait.
        let mut watchdog = self.watchdog.take();
        let stopped = async {
            match watchdog.as_mut() {
                Some(w) => w.await.unwrap_or_else(|e| {
                    Err(RuntimeError::Engine {
                        action: "wait for the container".into(),
                        message: e.to_string(),
                    })
                }),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        let mut watching = true;
        let mut stop_code: Option<i64> = None;

        let mut streams = [StreamState::new(limit), StreamState::new(limit)];
        let mut first_output: Option<Duration> = None;
        let mut started = false;
        let mut start_error = None;
        let mut gate_stderr = Vec::new();
        let mut exit: Option<ExitStatus> = None;
        let mut exit_framed = false;
        let mut lost: Option<String> = None;
        let mut oom_killed = false;
        let mut give_up_at = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);

        'run: loop {
            tokio::select! {
                biased;
                _ = enforcer.killed.notified() => {
                    // The job is gone with its container; do not wait on the stream (an
                    // attach can outlive its container, bollard#251).
                    exit = Some(ExitStatus::Signal(9));
                    break 'run;
                }
                item = self.output.next() => match item {
                    Some(Ok(Output::Stdout(bytes))) => {
                        self.decoder.push(&bytes);
                        loop {
                            let frame = match self.decoder.next_frame() {
                                Ok(Some(f)) => f,
                                Ok(None) => break,
                                Err(e) => return Err(ExecError::Protocol { container: id, reason: e.to_string() }),
                            };
                            let (kind, data) = match frame {
                                Frame::Stdout(d) => (StreamKind::Stdout, d),
                                Frame::Stderr(d) => (StreamKind::Stderr, d),
                                Frame::Started(_) => {
                                    started = true;
                                    continue;
                                }
                                Frame::StartFailed(msg) => {
                                    start_error = Some(msg);
                                    continue;
                                }
                                Frame::Signal(sig) => {
                                    lock(&signals).received(sig);
                                    continue;
                                }
                                Frame::Oom(kills) => {
                                    oom_killed |= kills > 0;
                                    continue;
                                }
                                Frame::Exit(status) => {
                                    exit = Some(status);
                                    exit_framed = true;
                                    break 'run;
                                }
                                Frame::Ready(_) => {
                                    return Err(ExecError::Protocol { container: id, reason: "a second READY frame".into() });
                                }
                                Frame::Reset { .. } => {
                                    return Err(ExecError::Protocol { container: id, reason: "a RESET frame during a job".into() });
                                }
                            };
                            if first_output.is_none() && !data.is_empty() {
                                first_output = Some(handover.elapsed());
                            }
                            // A caller that reads slowly holds the job back (backpressure),
                            // but not a kill: once the job is killed, stop writing, so the
                            // attach stream is dropped and the engine can tear the container
                            // down (it waits for an attached reader otherwise).
                            tokio::select! {
                                _ = streams[kind as usize].deliver(kind, &data, sink) => {}
                                _ = enforcer.killed.notified() => {
                                    exit = Some(ExitStatus::Signal(9));
                                    break 'run;
                                }
                            }
                        }
                    }
                    Some(Ok(Output::Stderr(bytes))) => keep_tail(&mut gate_stderr, &bytes),
                    Some(Err(e)) => {
                        lost = Some(format!("the attach stream broke: {e}"));
                        break 'run;
                    }
                    None => {
                        lost = Some(format!("the container ended before the gate reported an exit{}", stderr_note(&gate_stderr)));
                        break 'run;
                    }
                },
                result = &mut stopped, if watching => {
                    watching = false;
                    match result {
                        Ok(code) => stop_code = Some(code),
                        // Gone already (removed): stopped, code unknown.
                        Err(e) if e.is_not_found() => stop_code = Some(-1),
                        Err(e) => {
                            // The engine could not tell; the frames and the timeout still hold.
                            tracing::debug!(container = %id, error = %e, "watchdog wait failed");
                        }
                    }
                    if stop_code.is_some() {
                        give_up_at = tokio::time::Instant::now() + AFTER_STOP_GRACE;
                    }
                }
                _ = tokio::time::sleep_until(give_up_at), if stop_code.is_some() => {
                    break 'run;
                }
            }
        }
        let exit_time = handover.elapsed();
        let timed_out = enforcer.timed_out();
        drop(enforcer);
        let outside_signal = lock(&signals).outside();
        let mut lost_engine = false;

        let mut ack = None;
        // The gate's own word on the exit, its container alive: a reuse
        // profile's container with jobs left is reset by its gate next.
        let reset_next = exit_framed
            && watching
            && recycle.is_some()
            && self.jobs + 1 < self.profile.profile.reuse;
        let exit = match exit {
            Some(status) if reset_next => status,
            // The gate waits for the acknowledgement (EOF) before it exits; it goes
            // out with the removal, a moment after the caller has the outcome.
            Some(status) => {
                ack = Some(std::mem::replace(
                    &mut self.input,
                    Box::pin(tokio::io::sink()),
                ));
                status
            }
            None => {
                // No exit frame: the container died under the job.
                let code = match stop_code {
                    Some(c) => c,
                    // The watchdog's wait, registered while the container ran, still
                    // gets its exit code; a new wait would find an auto-removed
                    // container gone.
                    None if watching => tokio::time::timeout(Duration::from_secs(5), &mut stopped)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(-1),
                    None => -1,
                };
                let why = lost.take().unwrap_or_else(|| {
                    format!(
                        "the container stopped before the gate reported an exit{}",
                        stderr_note(&gate_stderr)
                    )
                });
                // Off the job's usual path (a run that got its exit frame, or that
                // warmpool killed itself, never asks): did the container die, or
                // the engine with it?
                lost_engine = warmpool_runtime::ping(runtime.as_ref(), ENGINE_CHECK_TIMEOUT)
                    .await
                    .is_err();
                let engine_note = if lost_engine {
                    "; the engine did not answer afterwards"
                } else {
                    ""
                };
                lost = Some(if code >= 0 {
                    format!("{why} (container exit code {code}){engine_note}")
                } else {
                    format!("{why} (container exit code unknown){engine_note}")
                });
                lost_status(code)
            }
        };

        // Its wait goes on with it, if it goes on.
        self.watchdog = watchdog.filter(|_| watching);
        self.jobs += 1;
        let park = self.timings;
        match recycle {
            Some(recycle) if reset_next => {
                // Off the job's path: the caller has its outcome meanwhile.
                tokio::spawn(async move {
                    let after = match tokio::time::timeout(RESET_TIMEOUT, self.await_reset()).await
                    {
                        Ok(Ok(())) => {
                            self.parked_at = Instant::now();
                            AfterRun::Reset(Box::new(self))
                        }
                        // Dropped: the container is removed.
                        Ok(Err(why)) => AfterRun::ResetFailed(why),
                        Err(_) => AfterRun::ResetFailed(format!(
                            "the gate did not report its reset within {RESET_TIMEOUT:?}"
                        )),
                    };
                    recycle(after);
                });
            }
            // The container served its last job: remove it off the job's path.
            _ => {
                if let Some(id) = self.id.take() {
                    self.executor.remove_after(id, RETIRE_DELAY, ack);
                }
            }
        }
        Ok(Outcome {
            container: id,
            exit,
            started,
            timed_out,
            stdout_truncated: streams[0].truncated,
            stderr_truncated: streams[1].truncated,
            start_error,
            lost,
            oom_killed,
            outside_signal,
            engine_lost: lost_engine,
            park,
            run: RunTimings {
                first_output,
                exit: exit_time,
            },
        })
    }
}

impl Parked {
    /// After a job's exit, in reuse mode: the gate's RESET, then its READY for
    /// the next job. `Err`: why the container cannot serve again.
    async fn await_reset(&mut self) -> Result<(), String> {
        let mut gate_stderr = Vec::new();
        let mut reset = false;
        loop {
            while let Some(frame) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                match frame {
                    Frame::Reset { ok: true, report } if !reset => {
                        tracing::debug!(container = %self.id(), report = %report, "the gate reset its container");
                        reset = true;
                    }
                    Frame::Reset { ok: false, report } => {
                        return Err(format!("its gate could not reset it: {report}"))
                    }
                    Frame::Ready(_) if reset => return Ok(()),
                    other => {
                        let kind = match other {
                            Frame::Stdout(_) | Frame::Stderr(_) => "output",
                            Frame::Ready(_) => "READY before RESET",
                            Frame::Reset { .. } => "a second RESET",
                            _ => "a job's frame",
                        };
                        return Err(format!("its gate sent {kind} where a reset was due"));
                    }
                }
            }
            match self.output.next().await {
                Some(Ok(Output::Stdout(bytes))) => self.decoder.push(&bytes),
                Some(Ok(Output::Stderr(bytes))) => keep_tail(&mut gate_stderr, &bytes),
                Some(Err(e)) => {
                    return Err(format!("the attach stream broke during its reset: {e}"))
                }
                None => {
                    return Err(format!(
                        "the container ended during its reset{}",
                        stderr_note(&gate_stderr)
                    ))
                }
            }
        }
    }
}

/// The ledger, also if a panic elsewhere poisoned its lock (it holds counts only).
fn lock(ledger: &Mutex<SignalLedger>) -> std::sync::MutexGuard<'_, SignalLedger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What to report for a job whose container died without an exit frame. Never 0:
/// the job did not report success.
fn lost_status(container_code: i64) -> ExitStatus {
    match container_code {
        129..=159 => ExitStatus::Signal((container_code - 128) as i32),
        1..=255 => ExitStatus::Code(container_code as i32),
        // Unknown, or 0 without the gate's word for it: as `docker run` does when it
        // cannot tell, 125.
        _ => ExitStatus::Code(125),
    }
}

/// Enforces a job's timeout (SIGTERM, grace, kill) and passes signals on, in a task
/// of its own; aborted when dropped.
struct Enforcer {
    killed: Arc<tokio::sync::Notify>,
    timed_out: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Enforcer {
    fn spawn(
        runtime: Arc<dyn Runtime>,
        id: String,
        deadline: tokio::time::Instant,
        grace: Duration,
        signals: Option<Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Signal>>>>,
        sent: Arc<Mutex<SignalLedger>>,
    ) -> Enforcer {
        let killed = Arc::new(tokio::sync::Notify::new());
        let timed_out = Arc::new(AtomicBool::new(false));
        let (k, t) = (killed.clone(), timed_out.clone());
        let task = tokio::spawn(async move {
            // Held while this job runs; released when the task ends or is aborted.
            let mut signals = match &signals {
                Some(rx) => Some(rx.lock().await),
                None => None,
            };
            let mut kill_at = None;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline), if kill_at.is_none() => {
                        t.store(true, Ordering::SeqCst);
                        kill_at = Some(tokio::time::Instant::now() + grace);
                        // The gate forwards SIGTERM to the job's process group.
                        lock(&sent).sent(Signal::Term.number());
                        if let Err(e) = runtime.kill(&id, Signal::Term).await {
                            tracing::debug!(container = %id, error = %e, "SIGTERM on timeout failed");
                        }
                    }
                    _ = sleep_until_some(kill_at) => {
                        lock(&sent).sent(Signal::Kill.number());
                        if let Err(e) = runtime.kill(&id, Signal::Kill).await {
                            if !e.is_not_found() {
                                tracing::warn!(container = %id, error = %e, "killing a timed-out job failed");
                            }
                        }
                        k.notify_one();
                        return;
                    }
                    Some(sig) = recv_signal(&mut signals) => {
                        lock(&sent).sent(sig.number());
                        if let Err(e) = runtime.kill(&id, sig).await {
                            tracing::debug!(container = %id, error = %e, "forwarding a signal failed");
                        }
                    }
                }
            }
        });
        Enforcer {
            killed,
            timed_out,
            task,
        }
    }

    fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }
}

impl Drop for Enforcer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv_signal(
    rx: &mut Option<tokio::sync::MutexGuard<'_, mpsc::UnboundedReceiver<Signal>>>,
) -> Option<Signal> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Per-stream accounting: the cap, and whether the sink still takes output. The
/// cap counts the job's own bytes, before any sink rewrites them.
struct StreamState {
    written: u64,
    limit: u64,
    truncated: bool,
    sink_broken: bool,
}

impl StreamState {
    fn new(limit: u64) -> StreamState {
        StreamState {
            written: 0,
            limit,
            truncated: false,
            sink_broken: false,
        }
    }

    async fn deliver<S: OutputSink>(&mut self, kind: StreamKind, data: &[u8], sink: &mut S) {
        if self.truncated || self.sink_broken {
            return;
        }
        let room = self.limit.saturating_sub(self.written);
        let (take, cut) = if (data.len() as u64) > room {
            (room as usize, true)
        } else {
            (data.len(), false)
        };
        self.written += take as u64;
        let mut result = Ok(());
        if take > 0 {
            result = sink.write(kind, &data[..take]).await;
        }
        if cut {
            self.truncated = true;
            if result.is_ok() {
                result = sink.cut(kind, self.limit).await;
            }
        }
        if let Err(e) = result {
            // The reader went away; the job still runs to its end.
            tracing::debug!(stream = kind.name(), error = %e, "output sink failed; dropping further output");
            self.sink_broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warmpool_core::redact::Redactor;

    /// Records what a run hands its sink.
    #[derive(Default)]
    struct Recording {
        events: Vec<(StreamKind, String)>,
    }

    impl OutputSink for Recording {
        async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
            let text = String::from_utf8_lossy(data).into_owned();
            self.events.push((stream, text));
            Ok(())
        }
    }

    /// A sink that redacts each stream as the service's does: on a cut, it ends
    /// the stream's redactor before the marker.
    struct Redacting {
        redactors: [Redactor; 2],
        out: [Vec<u8>; 2],
    }

    impl Redacting {
        fn new(secret: &str) -> Redacting {
            let r = Redactor::new([secret]);
            Redacting {
                redactors: [r.fresh(), r],
                out: [Vec::new(), Vec::new()],
            }
        }

        /// What the caller does once the run has returned.
        fn end(&mut self) {
            for (r, out) in self.redactors.iter_mut().zip(self.out.iter_mut()) {
                r.finish(out);
            }
        }
    }

    impl OutputSink for Redacting {
        async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
            let i = stream as usize;
            self.redactors[i].push(data, &mut self.out[i]);
            Ok(())
        }

        async fn cut(&mut self, stream: StreamKind, limit: u64) -> std::io::Result<()> {
            let i = stream as usize;
            self.redactors[i].finish(&mut self.out[i]);
            self.out[i].extend_from_slice(cut_marker(stream, limit).as_bytes());
            Ok(())
        }
    }

    async fn deliver_all<S: OutputSink>(limit: u64, chunks: &[&str], sink: &mut S) -> bool {
        let mut state = StreamState::new(limit);
        for c in chunks {
            state.deliver(StreamKind::Stdout, c.as_bytes(), sink).await;
        }
        state.truncated
    }

    #[tokio::test]
    async fn output_under_the_cap_is_written_whole() {
        let mut sink = Recording::default();
        // Exactly at the cap is not over it.
        let truncated = deliver_all(6, &["abc", "def"], &mut sink).await;
        assert!(!truncated);
        let texts: Vec<&str> = sink.events.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["abc", "def"]);
    }

    #[tokio::test]
    async fn the_default_cut_writes_the_marker_once() {
        let mut sink = Recording::default();
        let truncated = deliver_all(5, &["abc", "defgh", "more", "and more"], &mut sink).await;
        assert!(truncated);
        let texts: Vec<&str> = sink.events.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "abc",
                "de",
                "\n[warmpool: stdout cut at 5 bytes; the job went on]\n"
            ]
        );
        assert!(sink.events.iter().all(|(k, _)| *k == StreamKind::Stdout));
    }

    #[tokio::test]
    async fn a_secret_straddling_the_cap_leaves_no_prefix() {
        let mut sink = Redacting::new("TOKEN-0123456789");
        // The cap falls 6 bytes into the secret, which came in two writes.
        let truncated = deliver_all(12, &["hello TOK", "EN-0123", "456789\n"], &mut sink).await;
        assert!(truncated);
        sink.end();
        assert_eq!(
            String::from_utf8_lossy(&sink.out[0]),
            "hello [redacted]\n[warmpool: stdout cut at 12 bytes; the job went on]\n"
        );
    }

    #[tokio::test]
    async fn a_secret_split_across_writes_is_hidden_without_a_cut() {
        let mut sink = Redacting::new("TOKEN-0123456789");
        let truncated = deliver_all(
            1 << 20,
            &["a TOKEN-01", "23456789 b\n", "c TOKE"],
            &mut sink,
        )
        .await;
        assert!(!truncated);
        sink.end();
        assert_eq!(
            String::from_utf8_lossy(&sink.out[0]),
            "a [redacted] b\nc [redacted]"
        );
    }
}
