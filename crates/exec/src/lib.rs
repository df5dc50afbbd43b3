//! The execution layer: the one way warmpool runs a job.
//!
//! [`Executor::park`] creates a container for a profile, attaches, starts it, and
//! waits for the gate's READY frame: the container is then [`Parked`]. From there,
//! [`Parked::run`] is the only path a job takes: hand over the spec, stream the
//! frames, take the exit frame, remove the container off the job's path. A cold
//! start is `park` followed at once by `run`; a warm start is a `run` on a container
//! parked earlier. Nothing here decides *when* to park; that is the pool's job.

mod outcome;
mod parked;
mod spec;

pub use outcome::{Outcome, ParkTimings, RunTimings, StreamKind};
pub use parked::{cut_marker, AfterRun, OutputSink, Parked, Recycle, RunControl};
pub use spec::container_spec;
/// The signals a [`RunControl`] passes on.
pub use warmpool_runtime::Signal;

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use warmpool_core::{ImageConfig, JobError, Profile};
use warmpool_gate::protocol::{Frame, FrameDecoder};
use warmpool_runtime::{Output, Runtime, RuntimeError};

use futures_util::StreamExt;

/// How long a new container may take from create to the gate's READY frame.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("profile \"{profile}\": image \"{image}\" is not on the engine; build it (docker build -t {image} ...) or pull it, then try again")]
    ImageMissing { profile: String, image: String },
    #[error("invalid job: {0}")]
    Job(#[from] JobError),
    #[error("the gate did not start in a container of image \"{image}\": {reason}")]
    GateDidNotStart { image: String, reason: String },
    #[error("the gate in container {container} broke the protocol: {reason}")]
    Protocol { container: String, reason: String },
    #[error("the attach stream of container {container} broke: {reason}")]
    StreamLost { container: String, reason: String },
}

/// A profile with its image looked up on the engine.
#[derive(Debug, Clone)]
pub struct ResolvedProfile {
    pub profile: Profile,
    pub image: ImageConfig,
}

/// Parks containers and runs jobs on them, over any [`Runtime`].
#[derive(Clone)]
pub struct Executor {
    pub(crate) runtime: Arc<dyn Runtime>,
    /// Container removals happen here, off the job's path; `drain` waits for them.
    pub(crate) cleanup: TaskTracker,
    /// One drain at a time: a drain closes, waits and reopens the tracker, and two
    /// interleaved could each wait for a close the other undid.
    draining: Arc<tokio::sync::Mutex<()>>,
}

impl Executor {
    pub fn new(runtime: Arc<dyn Runtime>) -> Executor {
        Executor {
            runtime,
            cleanup: TaskTracker::new(),
            draining: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Look the profile's image up; a missing image is an error naming the profile.
    pub async fn resolve(&self, profile: &Profile) -> Result<Arc<ResolvedProfile>, ExecError> {
        match self.runtime.image(&profile.image).await? {
            Some(image) => Ok(Arc::new(ResolvedProfile {
                profile: profile.clone(),
                image,
            })),
            None => Err(ExecError::ImageMissing {
                profile: profile.name.clone(),
                image: profile.image.clone(),
            }),
        }
    }

    /// Create, attach and start a container for `profile` and wait until its gate
    /// says READY. On any failure the container is removed.
    ///
    /// A park, once begun, runs to its end whoever drops this future: dropped in
    /// the middle of the engine's create, a removal by name would go out before
    /// the engine knows the name, and the create would then land a container that
    /// nobody owns (left `Created`, as no auto-remove ever fires). So the park
    /// runs in a task of the cleanup tracker (`drain` waits for it), and a parked
    /// container nobody receives is dropped with the task's result: removed.
    pub async fn park(&self, profile: Arc<ResolvedProfile>) -> Result<Parked, ExecError> {
        let executor = self.clone();
        let task = self
            .cleanup
            .spawn(async move { executor.park_to_the_end(profile).await });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ExecError::Runtime(RuntimeError::Engine {
                action: "park a container".into(),
                message: format!("the parking task failed: {e}"),
            })),
        }
    }

    /// [`Executor::park`]'s body; dropping it half way may leave a container behind.
    async fn park_to_the_end(&self, profile: Arc<ResolvedProfile>) -> Result<Parked, ExecError> {
        let started = Instant::now();
        let spec = container_spec(&profile.profile, &profile.image);
        // From here on, a failure or a cancellation must not leave the container
        // behind: until the engine gives us its id, remove it by its (unique) name.
        let mut guard = RemoveOnDrop {
            executor: self.clone(),
            id: Some(spec.name.clone()),
        };
        let id = self.runtime.create(&spec).await?;
        guard.id = Some(id.clone());
        let created = started.elapsed();
        let attachment = self.runtime.attach(&id).await?;
        let attached = started.elapsed();
        self.runtime
            .start(&id)
            .await
            .map_err(|e| ExecError::GateDidNotStart {
                image: profile.profile.image.clone(),
                reason: e.to_string(),
            })?;
        let start_done = started.elapsed();

        let mut output = attachment.output;
        let mut decoder = FrameDecoder::new();
        let mut gate_stderr = Vec::new();
        let ready = tokio::time::timeout(PARK_TIMEOUT, async {
            loop {
                match output.next().await {
                    Some(Ok(Output::Stdout(bytes))) => {
                        decoder.push(&bytes);
                        match decoder.next_frame() {
                            Ok(Some(Frame::Ready(version))) => return Ok(version),
                            Ok(Some(other)) => {
                                return Err(format!("expected READY, got {other:?}"));
                            }
                            Ok(None) => {}
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Some(Ok(Output::Stderr(bytes))) => {
                        keep_tail(&mut gate_stderr, &bytes);
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => {
                        return Err(format!(
                            "the container exited before the gate said READY{}",
                            stderr_note(&gate_stderr)
                        ))
                    }
                }
            }
        })
        .await;
        let version = match ready {
            Ok(Ok(v)) => v,
            Ok(Err(reason)) => {
                return Err(ExecError::GateDidNotStart {
                    image: profile.profile.image.clone(),
                    reason,
                })
            }
            Err(_) => {
                return Err(ExecError::GateDidNotStart {
                    image: profile.profile.image.clone(),
                    reason: format!("no READY within {PARK_TIMEOUT:?}"),
                })
            }
        };
        if version != warmpool_gate::GATE_VERSION {
            return Err(ExecError::GateDidNotStart {
                image: profile.profile.image.clone(),
                reason: format!(
                    "the gate is {version}, this warmpool needs {}",
                    warmpool_gate::GATE_VERSION
                ),
            });
        }
        guard.id = None;
        Ok(Parked::new(
            self.clone(),
            profile,
            id,
            output,
            attachment.input,
            decoder,
            ParkTimings {
                create: created,
                attach: attached - created,
                start: start_done - attached,
                ready: started.elapsed() - start_done,
                total: started.elapsed(),
            },
        ))
    }

    /// The cold path: park a container now and run the job on it. Exactly the warm
    /// path, with the parking done on the job's time.
    pub async fn run_cold<S: OutputSink>(
        &self,
        profile: Arc<ResolvedProfile>,
        job: warmpool_core::Job,
        sink: &mut S,
        control: RunControl,
    ) -> Result<Outcome, ExecError> {
        // Refuse bad input before creating anything for it.
        warmpool_core::job::compose(&profile.image, &profile.profile, &job)?;
        let parked = self.park(profile).await?;
        parked.run(job, sink, control).await
    }

    /// Remove a container in the background (errors are logged, never raised: a
    /// container that is already gone is the goal).
    pub fn remove_later(&self, id: String) {
        self.remove_after(id, Duration::ZERO, None);
    }

    /// Remove a container in the background after `delay`, first acknowledging
    /// its gate's exit (closing `ack`) when given. A delay keeps the container's
    /// teardown (disk work on the engine's side) from competing with what the
    /// caller does right after a job's end (storing it).
    pub(crate) fn remove_after(
        &self,
        id: String,
        delay: Duration,
        ack: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    ) {
        let runtime = self.runtime.clone();
        let task = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(mut ack) = ack {
                // The gate exits once it sees EOF on its stdin.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::io::AsyncWriteExt::shutdown(&mut ack),
                )
                .await;
            }
            if let Err(e) = runtime.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "removing a used container failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.cleanup.spawn_on(task, &handle);
            }
            Err(_) => tracing::warn!(
                "a container could not be removed: no async runtime is running (it removes itself once its gate exits)"
            ),
        }
    }

    /// Wait until every background removal has finished.
    pub async fn drain(&self) {
        let _one_at_a_time = self.draining.lock().await;
        self.cleanup.close();
        self.cleanup.wait().await;
        self.cleanup.reopen();
    }
}

struct RemoveOnDrop {
    executor: Executor,
    id: Option<String>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.executor.remove_later(id);
        }
    }
}

/// Keep the last 8 KiB of a diagnostic stream.
pub(crate) fn keep_tail(buf: &mut Vec<u8>, bytes: &[u8]) {
    const MAX: usize = 8 * 1024;
    buf.extend_from_slice(bytes);
    if buf.len() > MAX {
        let cut = buf.len() - MAX;
        buf.drain(..cut);
    }
}

pub(crate) fn stderr_note(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; it said: {s}")
    }
}
