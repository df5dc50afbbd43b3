//! warmpool's words for what an engine reports and accepts: container states,
//! container and image events, signals. Plain enums with no engine strings in
//! them; each backend translates its own vocabulary into these at its edge
//! (Docker's in `docker/translate.rs`), so nothing above this crate parses one.

use std::fmt;
use std::str::FromStr;

/// Where a container is in its life, as the engine lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Stopping,
    Removing,
    Exited,
    Dead,
    /// A state this warmpool has no word for (a newer engine), or none given.
    Unknown,
}

impl ContainerState {
    /// Whether the container's processes are there to be handed a job or a signal.
    pub fn is_running(self) -> bool {
        self == ContainerState::Running
    }

    /// A short lowercase name, for messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Stopping => "stopping",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerAction {
    Create,
    Start,
    Restart,
    Pause,
    Unpause,
    /// A signal was sent to its PID 1; `None` when the engine did not say which or
    /// warmpool has no name for it.
    Kill {
        signal: Option<Signal>,
    },
    /// Its PID 1 exited; the exit code when the engine reported one.
    Die {
        exit_code: Option<i64>,
    },
    /// The kernel's out-of-memory killer killed a process in it.
    Oom,
    /// The engine stopped it (a stop request: TERM, grace, KILL).
    Stop,
    /// It was removed.
    Destroy,
    /// Anything else (attach, exec, rename, health checks, ...): nothing warmpool acts on.
    Other,
}

/// Something that happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageAction {
    Pull,
    Push,
    Tag,
    Untag,
    Delete,
    Import,
    Load,
    Save,
    /// Anything else: nothing warmpool acts on.
    Other,
}

impl ImageAction {
    /// Whether a reference may now name another image (or none): a profile's
    /// image must be looked up again.
    pub fn may_move_a_reference(self) -> bool {
        matches!(
            self,
            ImageAction::Pull
                | ImageAction::Tag
                | ImageAction::Untag
                | ImageAction::Delete
                | ImageAction::Import
                | ImageAction::Load
        )
    }
}

/// A signal warmpool sends to a container's PID 1 (the gate, which passes it on
/// to the job) or reads in an engine's event. Numbers are Linux's, the ABI every
/// container here runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Kill,
    Usr1,
    Usr2,
    Pipe,
    Alrm,
    Term,
    Cont,
    Stop,
    Winch,
}

/// Every [`Signal`], for tables and tests.
pub const SIGNALS: [Signal; 12] = [
    Signal::Hup,
    Signal::Int,
    Signal::Quit,
    Signal::Kill,
    Signal::Usr1,
    Signal::Usr2,
    Signal::Pipe,
    Signal::Alrm,
    Signal::Term,
    Signal::Cont,
    Signal::Stop,
    Signal::Winch,
];

impl Signal {
    /// The signal's number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Pipe => 13,
            Signal::Alrm => 14,
            Signal::Term => 15,
            Signal::Cont => 18,
            Signal::Stop => 19,
            Signal::Winch => 28,
        }
    }

    /// The signal with this Linux number, if warmpool names it.
    pub fn from_number(n: i32) -> Option<Signal> {
        SIGNALS.into_iter().find(|s| s.number() == n)
    }

    /// The conventional name, `SIGTERM` and so on.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Pipe => "SIGPIPE",
            Signal::Alrm => "SIGALRM",
            Signal::Term => "SIGTERM",
            Signal::Cont => "SIGCONT",
            Signal::Stop => "SIGSTOP",
            Signal::Winch => "SIGWINCH",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A signal name or number that names no [`Signal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal \"{0}\": give a name such as TERM, SIGTERM, KILL, HUP, INT, QUIT, USR1, USR2, or its number")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    /// `TERM`, `SIGTERM`, `sigterm` and `15` all name [`Signal::Term`].
    fn from_str(s: &str) -> Result<Signal, UnknownSignal> {
        let unknown = || UnknownSignal(s.to_string());
        let t = s.trim();
        if let Ok(n) = t.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(unknown);
        }
        let upper = t.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS
            .into_iter()
            .find(|sig| &sig.name()[3..] == bare)
            .ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_linux_and_round_trip() {
        assert_eq!(Signal::Term.number(), 15);
        assert_eq!(Signal::Kill.number(), 9);
        assert_eq!(Signal::Usr1.number(), 10);
        assert_eq!(Signal::Usr2.number(), 12);
        for s in SIGNALS {
            assert_eq!(Signal::from_number(s.number()), Some(s), "{s}");
        }
        assert_eq!(Signal::from_number(0), None);
        assert_eq!(Signal::from_number(64), None);
    }

    #[test]
    fn parses_names_with_and_without_sig_and_numbers() {
        for s in SIGNALS {
            assert_eq!(s.name().parse(), Ok(s));
            assert_eq!(s.name()[3..].parse(), Ok(s));
            assert_eq!(s.name().to_lowercase().parse(), Ok(s));
            assert_eq!(s.number().to_string().parse(), Ok(s));
        }
        assert_eq!(" TERM ".parse(), Ok(Signal::Term));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in ["", "SIG", "TERMINATE", "SIGFOO", "99", "-15", "SIG15"] {
            assert_eq!(
                bad.parse::<Signal>(),
                Err(UnknownSignal(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn image_actions_that_move_references() {
        assert!(ImageAction::Tag.may_move_a_reference());
        assert!(ImageAction::Delete.may_move_a_reference());
        assert!(!ImageAction::Push.may_move_a_reference());
        assert!(!ImageAction::Save.may_move_a_reference());
        assert!(!ImageAction::Other.may_move_a_reference());
    }

    #[test]
    fn states_display_their_names() {
        assert_eq!(ContainerState::Running.to_string(), "running");
        assert!(ContainerState::Running.is_running());
        assert!(!ContainerState::Created.is_running());
    }
}
