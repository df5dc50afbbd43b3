//! A job's life as pure code: the states it is stored in, the finer phases it
//! goes through in the hands of the node that runs it, the events that move it,
//! and the one transition function that says what each event does in each phase.
//! The race rules (cancel against exit, cancel against a claim) and the mapping
//! from how a run ended to the job's final state are decided here, once.
//!
//! No I/O: the service drives this (it owns one `Phase` per running job) and the
//! store enforces the stored part atomically (see [`JobState::can_finish`]).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use warmpool_gate::protocol::ExitStatus;

/// The error of a job that was running when warmpool stopped or restarted.
pub const INTERRUPTED_ERROR: &str =
    "warmpool stopped while the job ran (restart); its container was removed";

/// The error of a job cancelled before it started.
pub const CANCELLED_QUEUED_ERROR: &str = "cancelled before it started";
/// Why a job taken from the queue ended when its node stopped before it got
/// a container.
pub const STOPPED_BEFORE_START_ERROR: &str =
    "warmpool stopped before the job got a container; submit it again";

/// The error of a job cancelled while it ran.
pub const CANCELLED_RUNNING_ERROR: &str = "cancelled while it ran; its container was killed";

/// Where a job is in its life, as stored and shown. Queued and running jobs are
/// open; the others are final and never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited with another code or a signal, or could not be started.
    Failed,
    TimedOut,
    Cancelled,
    /// Was running when it was stopped by something other than itself: warmpool
    /// stopped, the engine went away, or the container was stopped from outside.
    Interrupted,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Cancelled,
        JobState::Interrupted,
    ];

    /// The name in the store and the API (`timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }

    /// The state named `s` (as in [`JobState::as_str`]), if any.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether the job is over: its record no longer changes.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// Stored states a job may be finished from (the store's compare-and-set).
    pub const FINISHABLE: [JobState; 2] = [JobState::Queued, JobState::Running];

    /// Whether a job stored in this state may be finished (any final state).
    pub fn can_finish(self) -> bool {
        JobState::FINISHABLE.contains(&self)
    }

    /// Whether a job stored in this state may start running (hand-over).
    pub fn can_start(self) -> bool {
        self == JobState::Queued
    }

    /// What a cancel does to a job stored in this state.
    pub fn on_cancel(self) -> StoredCancel {
        match self {
            JobState::Queued => StoredCancel::EndNow,
            JobState::Running => StoredCancel::AskRunner,
            done => StoredCancel::AlreadyEnded(done),
        }
    }
}

/// A cancel as the store applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredCancel {
    /// Not started: it ends `cancelled` at once and never runs.
    EndNow,
    /// Running: the cancel is recorded; the node running it kills it and stores
    /// how it ended (its own exit, if that came first).
    AskRunner,
    /// Over already: nothing changes.
    AlreadyEnded(JobState),
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::parse(s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A state name that is not one of [`JobState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job state `{0}`; use one of queued, running, succeeded, failed, timed_out, \
     cancelled, interrupted"
)]
pub struct UnknownState(pub String);

/// How a job ended, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    /// Either output stream was cut at the profile's cap.
    pub truncated: bool,
}

impl Finish {
    /// An end with no exit (the job never ran, or nothing is known of its exit).
    pub fn without_exit(state: JobState, error: impl Into<String>) -> Finish {
        Finish {
            state,
            exit_code: None,
            signal: None,
            error: Some(error.into()),
            truncated: false,
        }
    }
}

/// How a run on a container ended: the facts, with no judgement yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// The job's exit, or for a lost container what its exit code implies.
    pub exit: ExitStatus,
    /// `Some(why)`: the container ended without the gate reporting the job's exit
    /// (killed, out of memory as a whole, the engine went away).
    pub lost: Option<String>,
    /// The gate could not start the job's program.
    pub start_error: Option<String>,
    /// The job ran past its timeout and was stopped by warmpool.
    pub timed_out: bool,
    /// The kernel's OOM killer killed a process of the job.
    pub oom_killed: bool,
    /// A signal reached the container that warmpool did not send (docker stop,
    /// docker kill by someone else, an engine shutdown).
    pub outside_signal: Option<i32>,
    /// The run ended without an exit and the engine did not answer afterwards.
    pub engine_lost: bool,
    /// Output was cut at the profile's cap.
    pub truncated: bool,
}

impl RunEnd {
    /// A run that ended with the gate's exit frame and nothing unusual.
    pub fn exited(exit: ExitStatus) -> RunEnd {
        RunEnd {
            exit,
            lost: None,
            start_error: None,
            timed_out: false,
            oom_killed: false,
            outside_signal: None,
            engine_lost: false,
            truncated: false,
        }
    }

    /// A container that ended without an exit frame.
    pub fn lost(exit: ExitStatus, why: impl Into<String>) -> RunEnd {
        RunEnd {
            lost: Some(why.into()),
            ..RunEnd::exited(exit)
        }
    }
}

/// The final state of a run: one pure function of how it ended, whether a cancel
/// had been asked for, and whether warmpool is stopping.
///
/// Rules, in order:
/// - The gate reported an exit (the job ended by itself, or of a signal warmpool
///   forwarded): that exit decides, even if a cancel was asked for meanwhile — a
///   job whose exit arrived before its cancel took effect ends with its exit.
///   A start error fails it; a timeout is `timed_out`; a non-zero end after a
///   signal from outside is `interrupted`; an OOM kill says so in `error`.
/// - No exit (the container was killed under the job): a cancel explains it
///   (`cancelled`); else the engine going away, warmpool stopping or a signal
///   from outside make it `interrupted`; an OOM kill or anything else `failed`.
pub fn final_state(end: &RunEnd, cancelling: bool, stopping: bool) -> Finish {
    let (exit_code, signal) = match end.exit {
        ExitStatus::Code(c) => (Some(c), None),
        ExitStatus::Signal(s) => (None, Some(s)),
    };
    let done = |state: JobState, error: Option<String>| Finish {
        state,
        exit_code,
        signal,
        error,
        truncated: end.truncated,
    };
    let oom = "killed by the out-of-memory killer: the job needs more than the profile's \
               `memory` limit";
    let outside = |s: i32| {
        format!(
            "stopped from outside warmpool (signal {s}: a docker stop, a docker kill or an \
             engine shutdown)"
        )
    };
    match &end.lost {
        None => {
            if let Some(e) = &end.start_error {
                return done(JobState::Failed, Some(e.clone()));
            }
            let ok = end.exit == ExitStatus::Code(0);
            if end.timed_out {
                done(JobState::TimedOut, None)
            } else if ok {
                done(JobState::Succeeded, None)
            } else if end.oom_killed {
                done(JobState::Failed, Some(oom.into()))
            } else if let Some(s) = end.outside_signal {
                done(JobState::Interrupted, Some(outside(s)))
            } else {
                done(JobState::Failed, None)
            }
        }
        Some(why) => {
            if cancelling {
                done(JobState::Cancelled, Some(CANCELLED_RUNNING_ERROR.into()))
            } else if end.oom_killed {
                done(JobState::Failed, Some(format!("{oom} ({why})")))
            } else if end.engine_lost {
                done(
                    JobState::Interrupted,
                    Some(format!(
                        "the container engine went away while the job ran: {why}"
                    )),
                )
            } else if stopping {
                done(
                    JobState::Interrupted,
                    Some(format!(
                        "warmpool stopped and killed the job at the end of its shutdown grace: {why}"
                    )),
                )
            } else if let Some(s) = end.outside_signal {
                done(
                    JobState::Interrupted,
                    Some(format!("{}: {why}", outside(s))),
                )
            } else if end.timed_out {
                done(JobState::TimedOut, Some(why.clone()))
            } else {
                done(JobState::Failed, Some(why.clone()))
            }
        }
    }
}

/// Where a job is in the hands of the node running it. A node holds a job only
/// once it took it from the shared queue (stored as running on that node, one
/// commit); a queued job belongs to no node, and its cancel is the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Taken from the queue (stored running on this node); its container is
    /// being claimed (a parked one, or one started now).
    Taken,
    /// Handed over: the gate runs it.
    Running,
    /// Running, a cancel was asked for and its container is being killed.
    Cancelling,
    /// Over.
    Ended(JobState),
}

impl Phase {
    /// The state the store shows for this phase.
    pub fn stored(&self) -> JobState {
        match self {
            Phase::Taken | Phase::Running | Phase::Cancelling => JobState::Running,
            Phase::Ended(s) => *s,
        }
    }
}

/// What can happen to a job on the node running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A container was claimed for it: the spec goes to the gate.
    Claimed,
    /// A cancel was asked for.
    CancelRequested,
    /// It could not be started: no pool, a missing secret, a refused hook, a
    /// failed claim or park.
    NotStarted(String),
    /// warmpool is stopping before the job got its container.
    Stopping,
    /// The run on its container ended.
    Ended { run: RunEnd, stopping: bool },
}

/// What the driver must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Kill the job's container; its run then ends without an exit.
    Kill,
    /// Store this end (a no-op if the job ended already).
    Store(Finish),
}

/// An event that cannot happen in a phase (a bug in the driver, or a late event
/// for a job that is over).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a job {phase:?} cannot take the event {event}")]
pub struct Illegal {
    pub phase: Phase,
    pub event: &'static str,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Claimed => "claimed",
            Event::CancelRequested => "cancel requested",
            Event::NotStarted(_) => "not started",
            Event::Stopping => "stopping",
            Event::Ended { .. } => "ended",
        }
    }
}

/// The one transition function: the next phase and what to do, or `Illegal`.
pub fn transition(phase: &Phase, event: Event) -> Result<(Phase, Action), Illegal> {
    use Phase as P;
    let cancelled = || Finish::without_exit(JobState::Cancelled, CANCELLED_QUEUED_ERROR);
    let illegal = |event: &Event| Illegal {
        phase: phase.clone(),
        event: event.name(),
    };
    Ok(match (phase, event) {
        (P::Taken, Event::Claimed) => (P::Running, Action::Nothing),
        // A claim dropped half way leaves nothing behind: a cold park in flight
        // finishes and its container goes to the pool (the pool's rule).
        (P::Taken, Event::CancelRequested) => {
            (P::Ended(JobState::Cancelled), Action::Store(cancelled()))
        }
        (P::Taken, Event::NotStarted(why)) => (
            P::Ended(JobState::Failed),
            Action::Store(Finish::without_exit(JobState::Failed, why)),
        ),
        (P::Taken, Event::Stopping) => (
            P::Ended(JobState::Interrupted),
            Action::Store(Finish::without_exit(
                JobState::Interrupted,
                STOPPED_BEFORE_START_ERROR,
            )),
        ),
        (P::Running, Event::CancelRequested) => (P::Cancelling, Action::Kill),
        // Asked twice: the kill is under way.
        (P::Cancelling, Event::CancelRequested) => (P::Cancelling, Action::Nothing),
        (P::Running, Event::Ended { run, stopping }) => {
            let f = final_state(&run, false, stopping);
            (P::Ended(f.state), Action::Store(f))
        }
        (P::Cancelling, Event::Ended { run, stopping }) => {
            let f = final_state(&run, true, stopping);
            (P::Ended(f.state), Action::Store(f))
        }
        (_, event) => return Err(illegal(&event)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> RunEnd {
        RunEnd::exited(ExitStatus::Code(code))
    }

    fn ended(run: RunEnd) -> Event {
        Event::Ended {
            run,
            stopping: false,
        }
    }

    fn go(phase: Phase, event: Event) -> (Phase, Action) {
        transition(&phase, event).expect("legal")
    }

    #[test]
    fn taken_to_running_to_succeeded() {
        assert_eq!(
            go(Phase::Taken, Event::Claimed),
            (Phase::Running, Action::Nothing)
        );
        let (p, a) = go(Phase::Running, ended(exit(0)));
        assert_eq!(p, Phase::Ended(JobState::Succeeded));
        assert!(matches!(
            a,
            Action::Store(Finish {
                state: JobState::Succeeded,
                exit_code: Some(0),
                ..
            })
        ));
    }

    #[test]
    fn cancel_of_a_job_without_its_container_ends_it_at_once() {
        let (p, a) = go(Phase::Taken, Event::CancelRequested);
        assert_eq!(p, Phase::Ended(JobState::Cancelled));
        assert_eq!(
            a,
            Action::Store(Finish::without_exit(
                JobState::Cancelled,
                CANCELLED_QUEUED_ERROR
            ))
        );
    }

    #[test]
    fn cancel_of_a_running_job_kills_it_once() {
        assert_eq!(
            go(Phase::Running, Event::CancelRequested),
            (Phase::Cancelling, Action::Kill)
        );
        assert_eq!(
            go(Phase::Cancelling, Event::CancelRequested),
            (Phase::Cancelling, Action::Nothing)
        );
    }

    #[test]
    fn an_exit_that_came_before_the_cancel_took_effect_wins() {
        let (p, a) = go(Phase::Cancelling, ended(exit(0)));
        assert_eq!(p, Phase::Ended(JobState::Succeeded));
        assert!(matches!(
            a,
            Action::Store(Finish {
                state: JobState::Succeeded,
                exit_code: Some(0),
                error: None,
                ..
            })
        ));
        let (p, _) = go(Phase::Cancelling, ended(exit(3)));
        assert_eq!(p, Phase::Ended(JobState::Failed));
    }

    #[test]
    fn a_killed_container_of_a_cancelled_job_is_cancelled() {
        let run = RunEnd::lost(ExitStatus::Signal(9), "killed");
        let (p, a) = go(Phase::Cancelling, ended(run));
        assert_eq!(p, Phase::Ended(JobState::Cancelled));
        assert!(matches!(
            a,
            Action::Store(Finish {
                state: JobState::Cancelled,
                signal: Some(9),
                ..
            })
        ));
    }

    #[test]
    fn not_started_fails() {
        let (p, a) = go(Phase::Taken, Event::NotStarted("no secret".into()));
        assert_eq!(p, Phase::Ended(JobState::Failed));
        assert_eq!(
            a,
            Action::Store(Finish::without_exit(JobState::Failed, "no secret"))
        );
    }

    #[test]
    fn stopping_before_the_container_interrupts_it() {
        let (p, a) = go(Phase::Taken, Event::Stopping);
        assert_eq!(p, Phase::Ended(JobState::Interrupted));
        assert_eq!(
            a,
            Action::Store(Finish::without_exit(
                JobState::Interrupted,
                STOPPED_BEFORE_START_ERROR
            ))
        );
    }

    #[test]
    fn illegal_events_are_refused() {
        let over = Phase::Ended(JobState::Succeeded);
        for e in [
            Event::Claimed,
            Event::CancelRequested,
            Event::Stopping,
            ended(exit(0)),
        ] {
            assert!(transition(&over, e).is_err());
        }
        assert!(
            transition(&Phase::Taken, ended(exit(0))).is_err(),
            "a run needs a container"
        );
        assert!(transition(&Phase::Running, Event::Claimed).is_err());
        assert!(
            transition(&Phase::Running, Event::Stopping).is_err(),
            "a running job runs on through the grace"
        );
        assert!(transition(&Phase::Running, Event::NotStarted("x".into())).is_err());
        assert!(transition(&Phase::Cancelling, Event::Claimed).is_err());
        let err = transition(&over, Event::Claimed).unwrap_err();
        assert!(err.to_string().contains("claimed"), "{err}");
    }

    #[test]
    fn stored_phases() {
        assert_eq!(Phase::Taken.stored(), JobState::Running);
        assert_eq!(Phase::Cancelling.stored(), JobState::Running);
        assert_eq!(
            Phase::Ended(JobState::TimedOut).stored(),
            JobState::TimedOut
        );
    }

    #[test]
    fn outcome_mapping() {
        let f = final_state(&exit(0), false, false);
        assert_eq!(
            (f.state, f.exit_code, f.signal, f.error),
            (JobState::Succeeded, Some(0), None, None)
        );
        let f = final_state(&exit(2), false, false);
        assert_eq!((f.state, f.exit_code), (JobState::Failed, Some(2)));
        let f = final_state(&RunEnd::exited(ExitStatus::Signal(11)), false, false);
        assert_eq!(
            (f.state, f.signal, f.error),
            (JobState::Failed, Some(11), None)
        );

        let timed = RunEnd {
            timed_out: true,
            ..RunEnd::exited(ExitStatus::Signal(15))
        };
        let f = final_state(&timed, false, false);
        assert_eq!((f.state, f.signal), (JobState::TimedOut, Some(15)));

        let start = RunEnd {
            start_error: Some("no such file".into()),
            ..exit(127)
        };
        let f = final_state(&start, false, false);
        assert_eq!(
            (f.state, f.error.as_deref()),
            (JobState::Failed, Some("no such file"))
        );

        let oom = RunEnd {
            oom_killed: true,
            ..RunEnd::exited(ExitStatus::Signal(9))
        };
        let f = final_state(&oom, false, false);
        assert_eq!(f.state, JobState::Failed);
        assert!(
            f.error
                .as_deref()
                .is_some_and(|e| e.contains("out-of-memory")),
            "{f:?}"
        );
        // A job that survived the loss of a child to the OOM killer succeeded.
        let f = final_state(
            &RunEnd {
                oom_killed: true,
                ..exit(0)
            },
            false,
            false,
        );
        assert_eq!(f.state, JobState::Succeeded);

        let stopped = RunEnd {
            outside_signal: Some(15),
            ..RunEnd::exited(ExitStatus::Signal(15))
        };
        let f = final_state(&stopped, false, false);
        assert_eq!(f.state, JobState::Interrupted);
        assert!(
            f.error.as_deref().is_some_and(|e| e.contains("signal 15")),
            "{f:?}"
        );
        // One that handled the signal and exited 0 finished its work.
        let f = final_state(
            &RunEnd {
                outside_signal: Some(15),
                ..exit(0)
            },
            false,
            false,
        );
        assert_eq!(f.state, JobState::Succeeded);

        let truncated = RunEnd {
            truncated: true,
            ..exit(0)
        };
        assert!(final_state(&truncated, false, false).truncated);
    }

    #[test]
    fn lost_container_mapping() {
        let lost = RunEnd::lost(ExitStatus::Signal(9), "container exit code 137");
        let f = final_state(&lost, false, false);
        assert_eq!((f.state, f.signal), (JobState::Failed, Some(9)));
        assert!(f.error.as_deref().is_some_and(|e| e.contains("137")));

        assert_eq!(final_state(&lost, true, false).state, JobState::Cancelled);
        let f = final_state(&lost, false, true);
        assert_eq!(f.state, JobState::Interrupted);
        assert!(
            f.error
                .as_deref()
                .is_some_and(|e| e.contains("shutdown grace")),
            "{f:?}"
        );

        let engine = RunEnd {
            engine_lost: true,
            ..lost.clone()
        };
        let f = final_state(&engine, false, false);
        assert_eq!(f.state, JobState::Interrupted);
        assert!(
            f.error
                .as_deref()
                .is_some_and(|e| e.contains("engine went away")),
            "{f:?}"
        );
        // A cancel explains a killed container before anything else does.
        assert_eq!(final_state(&engine, true, false).state, JobState::Cancelled);

        let oom = RunEnd {
            oom_killed: true,
            ..lost.clone()
        };
        let f = final_state(&oom, false, false);
        assert_eq!(f.state, JobState::Failed);
        assert!(f
            .error
            .as_deref()
            .is_some_and(|e| e.contains("out-of-memory")));

        let outside = RunEnd {
            outside_signal: Some(15),
            ..lost.clone()
        };
        assert_eq!(
            final_state(&outside, false, false).state,
            JobState::Interrupted
        );
        let timed = RunEnd {
            timed_out: true,
            ..lost
        };
        assert_eq!(final_state(&timed, false, false).state, JobState::TimedOut);
    }

    #[test]
    fn stored_rules() {
        assert!(JobState::Queued.can_finish() && JobState::Running.can_finish());
        assert!(!JobState::Succeeded.can_finish());
        assert!(JobState::Queued.can_start() && !JobState::Running.can_start());
        assert_eq!(JobState::Queued.on_cancel(), StoredCancel::EndNow);
        assert_eq!(JobState::Running.on_cancel(), StoredCancel::AskRunner);
        assert_eq!(
            JobState::Failed.on_cancel(),
            StoredCancel::AlreadyEnded(JobState::Failed)
        );
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
            assert_eq!(state.is_final(), !state.can_finish());
        }
        assert!("TimedOut".parse::<JobState>().is_err());
    }
}
