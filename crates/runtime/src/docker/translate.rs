//! Docker's strings to warmpool's words and back: event actions, container
//! states, signal names, architectures, API versions. The only place these strings are spelled; everything
//! above the runtime crate sees the enums of `crate::vocab`.

use crate::vocab::{ContainerAction, ContainerState, ImageAction, Signal};
use std::collections::HashMap;

/// A container event's action. `attributes` are the actor's: `exitCode` of a
/// `die`, `signal` (a number) of a `kill`.
pub(crate) fn container_action(
    action: &str,
    attributes: &HashMap<String, String>,
) -> ContainerAction {
    match action {
        "create" => ContainerAction::Create,
        "start" => ContainerAction::Start,
        "restart" => ContainerAction::Restart,
        "pause" => ContainerAction::Pause,
        "unpause" => ContainerAction::Unpause,
        "kill" => ContainerAction::Kill {
            signal: attributes.get("signal").and_then(|s| signal_from_docker(s)),
        },
        "die" => ContainerAction::Die {
            exit_code: attributes
                .get("exitCode")
                .and_then(|c| c.trim().parse().ok()),
        },
        "oom" => ContainerAction::Oom,
        "stop" => ContainerAction::Stop,
        "destroy" => ContainerAction::Destroy,
        // Includes `exec_die`, `exec_start: sh ...`, `health_status: healthy`:
        // actions with a suffix are never one of the above.
        _ => ContainerAction::Other,
    }
}

/// An image event's action.
pub(crate) fn image_action(action: &str) -> ImageAction {
    match action {
        "pull" => ImageAction::Pull,
        "push" => ImageAction::Push,
        "tag" => ImageAction::Tag,
        "untag" => ImageAction::Untag,
        "delete" => ImageAction::Delete,
        "import" => ImageAction::Import,
        "load" => ImageAction::Load,
        "save" => ImageAction::Save,
        _ => ImageAction::Other,
    }
}

/// A container's `State` as the engine lists it.
pub(crate) fn container_state(state: &str) -> ContainerState {
    match state {
        "created" => ContainerState::Created,
        "running" => ContainerState::Running,
        "paused" => ContainerState::Paused,
        "restarting" => ContainerState::Restarting,
        "stopping" => ContainerState::Stopping,
        "removing" => ContainerState::Removing,
        "exited" => ContainerState::Exited,
        "dead" => ContainerState::Dead,
        _ => ContainerState::Unknown,
    }
}

/// The `signal` parameter of the kill endpoint.
pub(crate) fn signal_to_docker(signal: Signal) -> &'static str {
    // The engine takes the conventional names.
    signal.name()
}

/// A signal as the engine writes it in events: a number (`"15"`), or, from
/// some engines, a name.
pub(crate) fn signal_from_docker(s: &str) -> Option<Signal> {
    s.parse().ok()
}

/// Lowest Engine API version warmpool is tested with (Docker 20.10).
pub(crate) const OLDEST_TESTED_API: (u32, u32) = (1, 41);

/// Whether an API version such as `"1.41"` is `min` or later; unreadable is not.
pub(crate) fn api_at_least(version: &str, min: (u32, u32)) -> bool {
    let parsed = version
        .trim()
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    parsed.is_some_and(|v| v >= min)
}

/// Docker names architectures as Go does; Rust as the target triple does.
pub(crate) fn arch_from_docker(arch: &str) -> String {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "x86",
        "ppc64le" => "powerpc64",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SIGNALS;

    fn no_attrs() -> HashMap<String, String> {
        HashMap::new()
    }

    fn attrs(k: &str, v: &str) -> HashMap<String, String> {
        HashMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn container_actions() {
        let table = [
            ("create", ContainerAction::Create),
            ("start", ContainerAction::Start),
            ("restart", ContainerAction::Restart),
            ("pause", ContainerAction::Pause),
            ("unpause", ContainerAction::Unpause),
            ("kill", ContainerAction::Kill { signal: None }),
            ("die", ContainerAction::Die { exit_code: None }),
            ("oom", ContainerAction::Oom),
            ("stop", ContainerAction::Stop),
            ("destroy", ContainerAction::Destroy),
            ("attach", ContainerAction::Other),
            ("detach", ContainerAction::Other),
            ("rename", ContainerAction::Other),
            ("exec_die", ContainerAction::Other),
            ("exec_start: sh -c true", ContainerAction::Other),
            ("health_status: healthy", ContainerAction::Other),
            ("DIE", ContainerAction::Other),
            ("", ContainerAction::Other),
        ];
        for (docker, ours) in table {
            assert_eq!(container_action(docker, &no_attrs()), ours, "{docker:?}");
        }
    }

    #[test]
    fn die_carries_its_exit_code() {
        assert_eq!(
            container_action("die", &attrs("exitCode", "137")),
            ContainerAction::Die {
                exit_code: Some(137)
            }
        );
        assert_eq!(
            container_action("die", &attrs("exitCode", "0")),
            ContainerAction::Die { exit_code: Some(0) }
        );
        // Garbage from the engine is no code, never a panic.
        assert_eq!(
            container_action("die", &attrs("exitCode", "x")),
            ContainerAction::Die { exit_code: None }
        );
    }

    #[test]
    fn kill_carries_its_signal() {
        assert_eq!(
            container_action("kill", &attrs("signal", "15")),
            ContainerAction::Kill {
                signal: Some(Signal::Term)
            }
        );
        assert_eq!(
            container_action("kill", &attrs("signal", "9")),
            ContainerAction::Kill {
                signal: Some(Signal::Kill)
            }
        );
        assert_eq!(
            container_action("kill", &attrs("signal", "SIGHUP")),
            ContainerAction::Kill {
                signal: Some(Signal::Hup)
            }
        );
        assert_eq!(
            container_action("kill", &attrs("signal", "63")),
            ContainerAction::Kill { signal: None }
        );
    }

    #[test]
    fn image_actions() {
        let table = [
            ("pull", ImageAction::Pull),
            ("push", ImageAction::Push),
            ("tag", ImageAction::Tag),
            ("untag", ImageAction::Untag),
            ("delete", ImageAction::Delete),
            ("import", ImageAction::Import),
            ("load", ImageAction::Load),
            ("save", ImageAction::Save),
            ("prune", ImageAction::Other),
            ("", ImageAction::Other),
        ];
        for (docker, ours) in table {
            assert_eq!(image_action(docker), ours, "{docker:?}");
        }
    }

    #[test]
    fn container_states() {
        let table = [
            ("created", ContainerState::Created),
            ("running", ContainerState::Running),
            ("paused", ContainerState::Paused),
            ("restarting", ContainerState::Restarting),
            ("stopping", ContainerState::Stopping),
            ("removing", ContainerState::Removing),
            ("exited", ContainerState::Exited),
            ("dead", ContainerState::Dead),
            ("", ContainerState::Unknown),
            ("hibernating", ContainerState::Unknown),
            ("Running", ContainerState::Unknown),
        ];
        for (docker, ours) in table {
            assert_eq!(container_state(docker), ours, "{docker:?}");
            if ours != ContainerState::Unknown {
                // Our names are Docker's for the states both have.
                assert_eq!(ours.name(), docker);
            }
        }
    }

    #[test]
    fn signals_both_ways() {
        for s in SIGNALS {
            let docker = signal_to_docker(s);
            assert!(docker.starts_with("SIG"), "{docker}");
            assert_eq!(signal_from_docker(docker), Some(s));
            assert_eq!(signal_from_docker(&s.number().to_string()), Some(s));
        }
        assert_eq!(signal_to_docker(Signal::Term), "SIGTERM");
        assert_eq!(signal_to_docker(Signal::Kill), "SIGKILL");
        assert_eq!(signal_from_docker(""), None);
    }

    #[test]
    fn architectures() {
        assert_eq!(arch_from_docker("amd64"), "x86_64");
        assert_eq!(arch_from_docker("arm64"), "aarch64");
        assert_eq!(arch_from_docker("386"), "x86");
        assert_eq!(arch_from_docker("s390x"), "s390x");
    }

    #[test]
    fn api_versions() {
        assert!(api_at_least("1.41", (1, 41)));
        assert!(api_at_least("1.43", (1, 41)));
        assert!(api_at_least("2.0", (1, 41)));
        assert!(!api_at_least("1.40", (1, 41)));
        assert!(!api_at_least("1.4", (1, 41)));
        assert!(!api_at_least("", (1, 41)));
        assert!(!api_at_least("one.two", (1, 41)));
    }
}
