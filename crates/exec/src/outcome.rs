//! What a run produced: how the job ended and how long each phase took.

use std::time::Duration;
use warmpool_gate::protocol::ExitStatus;

/// Which of the job's streams a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// Time spent getting a container to the gate's READY.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParkTimings {
    pub create: Duration,
    pub attach: Duration,
    pub start: Duration,
    /// From start to the READY frame.
    pub ready: Duration,
    pub total: Duration,
}

/// Time from handing the job over.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTimings {
    /// To the first byte of output (stdout or stderr), if there was any.
    pub first_output: Option<Duration>,
    /// To the exit frame (or to the kill, for a job that had to be killed).
    pub exit: Duration,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub container: String,
    pub exit: ExitStatus,
    /// The gate said the job's process exists (its STARTED frame). A run that was
    /// lost before this never started the job: it is safe to run it elsewhere.
    pub started: bool,
    /// The job ran past its timeout and was stopped (SIGTERM, then a kill after the grace).
    pub timed_out: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The job could not be started (no such program, not executable).
    pub start_error: Option<String>,
    /// The container ended without the gate reporting an exit (killed from outside,
    /// out of memory): what is known about why.
    pub lost: Option<String>,
    pub park: ParkTimings,
    pub run: RunTimings,
}

impl Outcome {
    /// The exit code `docker run` would give: the job's code, or 128 + signal.
    pub fn exit_code(&self) -> i32 {
        self.exit.as_shell_code()
    }
}
