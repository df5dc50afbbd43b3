//! What a run produced: how the job ended, what else is known about why, and how
//! long each phase took. Also the pure rules that turn what the gate and the host
//! saw into those facts (whose signal it was); no I/O here.

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
    /// The kernel's OOM killer killed a process of the job while it ran (the
    /// container's memory limit): the gate saw the cgroup's OOM-kill counter rise.
    /// False also when the gate could not tell (no cgroup counter, or the
    /// container died before the gate could report).
    pub oom_killed: bool,
    /// The first signal the gate received that warmpool did not send: a `docker
    /// stop`, an engine shutdown, a `docker kill -s` by someone else. Signals
    /// warmpool sends itself (the timeout's SIGTERM, signals passed on through
    /// [`crate::RunControl`], the kill) are not outside. SIGKILL never shows here:
    /// the gate cannot see it (a container killed so is `lost`).
    pub outside_signal: Option<i32>,
    /// The run ended without the gate's exit frame and the engine did not answer
    /// afterwards: the engine went away, not just the container.
    pub engine_lost: bool,
    pub park: ParkTimings,
    pub run: RunTimings,
}

impl Outcome {
    /// The exit code `docker run` would give: the job's code, or 128 + signal.
    pub fn exit_code(&self) -> i32 {
        self.exit.as_shell_code()
    }
}

/// Whose signals the gate reported: the host writes down each signal it sends to
/// a run's container before sending it; each `SIGNAL` frame then takes one of
/// those, or, when none is left, was sent by someone else. Two equal signals that
/// arrive together reach the gate as one (Unix does not queue them), so an
/// outsider's SIGTERM sent while warmpool's own is in flight is taken for ours.
#[derive(Debug)]
pub(crate) struct SignalLedger {
    /// Signals sent and not yet reported back, by number (1..=64).
    in_flight: [u32; 65],
    outside: Option<i32>,
}

impl Default for SignalLedger {
    fn default() -> Self {
        SignalLedger {
            in_flight: [0; 65],
            outside: None,
        }
    }
}

impl SignalLedger {
    /// The host is about to send `sig` to the container.
    pub(crate) fn sent(&mut self, sig: i32) {
        if let Some(n) = usize::try_from(sig)
            .ok()
            .and_then(|i| self.in_flight.get_mut(i))
        {
            *n = n.saturating_add(1);
        }
    }

    /// The gate received `sig` and passed it on to the job.
    pub(crate) fn received(&mut self, sig: i32) {
        match usize::try_from(sig)
            .ok()
            .and_then(|i| self.in_flight.get_mut(i))
        {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                self.outside.get_or_insert(sig);
            }
        }
    }

    /// The first signal nobody here sent.
    pub(crate) fn outside(&self) -> Option<i32> {
        self.outside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_nobody_here_sent_is_outside() {
        let mut l = SignalLedger::default();
        l.received(15);
        assert_eq!(l.outside(), Some(15));
    }

    #[test]
    fn signals_the_host_sent_are_not_outside() {
        let mut l = SignalLedger::default();
        l.sent(15);
        l.sent(10);
        l.received(10);
        l.received(15);
        assert_eq!(l.outside(), None);
    }

    #[test]
    fn each_sent_signal_accounts_for_one_report() {
        let mut l = SignalLedger::default();
        l.sent(15);
        l.received(15);
        l.received(15);
        assert_eq!(
            l.outside(),
            Some(15),
            "the second SIGTERM came from elsewhere"
        );
    }

    #[test]
    fn the_first_outside_signal_is_kept() {
        let mut l = SignalLedger::default();
        l.sent(2);
        l.received(1);
        l.received(2);
        l.received(15);
        assert_eq!(l.outside(), Some(1));
    }

    #[test]
    fn numbers_out_of_range_are_outside_and_never_panic() {
        let mut l = SignalLedger::default();
        l.sent(-1);
        l.sent(1000);
        l.received(200);
        assert_eq!(l.outside(), Some(200));
    }
}
