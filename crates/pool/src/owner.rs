//! One instance, one owner: before a server sweeps an instance's containers it
//! takes the instance's marker on the engine, and refuses to start (naming who
//! holds it and where) when a live process already does. Owns the marker and the
//! rule "is its owner alive"; never touches containers.
//!
//! The marker is a labelled volume `warmpool-owner-<instance>` (see
//! [`Runtime::mark`]): the engine's "create if absent" decides between two
//! servers starting at once, and it works for servers that share nothing but the
//! engine (other data directories, other containers). Its labels say who owns
//! it: a token unique to the process, the pid, the process's start time, the
//! kernel's boot id and the pid namespace (so a dead owner on this machine is
//! recognised and taken over at once), the host name and the data directory (so
//! the refusal says where the other server is).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use warmpool_core::labels::unique_suffix;
use warmpool_runtime::{Marker, Runtime, RuntimeError};

/// The instance a marker is for.
pub const OWNER: &str = "warmpool.owner";
const TOKEN: &str = "warmpool.owner.token";
const PID: &str = "warmpool.owner.pid";
const PID_START: &str = "warmpool.owner.pid_start";
const BOOT_ID: &str = "warmpool.owner.boot_id";
const PID_NS: &str = "warmpool.owner.pid_ns";
const HOST: &str = "warmpool.owner.host";
const DATA_DIR: &str = "warmpool.owner.data_dir";

/// The marker's name for `instance` (a valid instance name is a valid volume name).
pub fn marker_name(instance: &str) -> String {
    format!("warmpool-owner-{instance}")
}

/// Who owns (or wants) an instance, as written on its marker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub instance: String,
    pub token: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`
    /// field 22): a pid reused by another process after the owner died has
    /// another start time.
    pub pid_start: String,
    pub boot_id: String,
    pub pid_ns: String,
    pub host: String,
    pub data_dir: String,
}

impl Owner {
    /// This process, wanting `instance` for the data directory `data_dir`.
    pub fn this_process(instance: &str, data_dir: &Path) -> Owner {
        let pid = std::process::id();
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let data_dir = std::fs::canonicalize(data_dir)
            .ok()
            .or_else(|| std::env::current_dir().ok().map(|d| d.join(data_dir)))
            .unwrap_or_else(|| data_dir.to_path_buf());
        Owner {
            instance: instance.to_string(),
            token: unique_suffix(),
            pid,
            pid_start: process_start(pid).unwrap_or_default(),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|l| l.display().to_string())
                .unwrap_or_default(),
            host: warmpool_core::config::host_name().unwrap_or_default(),
            data_dir: data_dir.display().to_string(),
        }
    }

    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (OWNER.to_string(), self.instance.clone()),
            (TOKEN.to_string(), self.token.clone()),
            (PID.to_string(), self.pid.to_string()),
            (PID_START.to_string(), self.pid_start.clone()),
            (BOOT_ID.to_string(), self.boot_id.clone()),
            (PID_NS.to_string(), self.pid_ns.clone()),
            (HOST.to_string(), self.host.clone()),
            (DATA_DIR.to_string(), self.data_dir.clone()),
        ])
    }

    pub fn from_labels(labels: &HashMap<String, String>) -> Owner {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        Owner {
            instance: get(OWNER),
            token: get(TOKEN),
            pid: get(PID).parse().unwrap_or(0),
            pid_start: get(PID_START),
            boot_id: get(BOOT_ID),
            pid_ns: get(PID_NS),
            host: get(HOST),
            data_dir: get(DATA_DIR),
        }
    }
}

/// The start time of process `pid` (`/proc/PID/stat` field 22), if it exists.
pub fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// What a marker's owner is, seen from the process that wants the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The marker is this process's.
    Ours,
    /// Its owner runs (in this pid namespace, with the start time it wrote).
    Alive,
    /// Its owner is gone, for the reason given: the marker is stale.
    Gone(String),
    /// Its owner is on another machine or in another pid namespace: warmpool
    /// cannot see it, so it counts as alive.
    Unknown,
}

/// Judge `theirs` (a marker's owner) from `ours`; `start_of(pid)` is the start
/// time of a process of our pid namespace, `None` when there is none. Pure.
pub fn judge(ours: &Owner, theirs: &Owner, start_of: impl Fn(u32) -> Option<String>) -> Verdict {
    if theirs.token == ours.token {
        return Verdict::Ours;
    }
    if theirs.boot_id.is_empty() || ours.boot_id.is_empty() {
        return Verdict::Unknown;
    }
    if theirs.boot_id != ours.boot_id {
        // The same machine booted since: nothing of that owner runs.
        if !theirs.host.is_empty() && theirs.host == ours.host && theirs.pid_ns == ours.pid_ns {
            return Verdict::Gone(format!(
                "host {} has rebooted since it started",
                theirs.host
            ));
        }
        return Verdict::Unknown;
    }
    if theirs.pid_ns.is_empty() || theirs.pid_ns != ours.pid_ns {
        return Verdict::Unknown;
    }
    match start_of(theirs.pid) {
        Some(start) if start == theirs.pid_start => Verdict::Alive,
        Some(_) => Verdict::Gone(format!("pid {} is now another process", theirs.pid)),
        None => Verdict::Gone(format!("pid {} has exited", theirs.pid)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("{0}")]
    InUse(String),
    #[error("taking the marker of instance \"{instance}\" failed: {source}")]
    Engine {
        instance: String,
        #[source]
        source: RuntimeError,
    },
}

/// The refusal: which instance, who holds it and where, and what to do.
pub fn in_use_message(theirs: &Owner, created: &str, verdict: &Verdict) -> String {
    let instance = &theirs.instance;
    let seen = match verdict {
        Verdict::Alive => "it is running".to_string(),
        _ => "warmpool cannot tell whether it still runs (another machine or pid namespace)"
            .to_string(),
    };
    format!(
        "instance \"{instance}\" is in use on this engine: warmpool pid {pid} on host {host} \
         (data_dir {dir}) has owned it since {created}, and {seen}. Starting would sweep its \
         containers, so this server refuses. Stop that server, or give this one its own \
         [server] instance (left unset, the default is unique per data_dir). If that server \
         is gone for good, remove its marker: docker volume rm {marker}",
        pid = theirs.pid,
        host = if theirs.host.is_empty() {
            "?"
        } else {
            &theirs.host
        },
        dir = if theirs.data_dir.is_empty() {
            "?"
        } else {
            &theirs.data_dir
        },
        marker = marker_name(instance),
    )
}

/// An instance this process owns; [`Ownership::release`] gives it back.
pub struct Ownership {
    runtime: Arc<dyn Runtime>,
    owner: Owner,
    /// The owner this one took the instance over from (its marker was stale).
    pub took_over: Option<(Owner, String)>,
}

impl Ownership {
    /// Take `instance`'s marker for this process, taking over a stale one (with a
    /// log line); refuse when a live (or unknown) owner holds it.
    pub async fn claim(
        runtime: Arc<dyn Runtime>,
        instance: &str,
        data_dir: &Path,
    ) -> Result<Ownership, OwnerError> {
        let ours = Owner::this_process(instance, data_dir);
        let name = marker_name(instance);
        let engine = |source| OwnerError::Engine {
            instance: instance.to_string(),
            source,
        };
        let mut took_over = None;
        // A second round only after removing a stale marker; a third means
        // another server took it in between, which the verdict then reports.
        for _ in 0..3 {
            let Marker { labels, created } =
                runtime.mark(&name, &ours.labels()).await.map_err(engine)?;
            let theirs = Owner::from_labels(&labels);
            match judge(&ours, &theirs, process_start) {
                Verdict::Ours => {
                    return Ok(Ownership {
                        runtime,
                        owner: ours,
                        took_over,
                    })
                }
                Verdict::Gone(why) => {
                    tracing::warn!(
                        instance,
                        pid = theirs.pid,
                        host = %theirs.host,
                        data_dir = %theirs.data_dir,
                        since = %created,
                        %why,
                        "taking over the instance from an owner that is gone"
                    );
                    runtime.unmark(&name).await.map_err(engine)?;
                    took_over = Some((theirs, why));
                }
                verdict => {
                    return Err(OwnerError::InUse(in_use_message(
                        &theirs, &created, &verdict,
                    )))
                }
            }
        }
        Err(OwnerError::InUse(format!(
            "instance \"{instance}\": its marker {name} changed hands while this server took it over; try again"
        )))
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Remove the marker if it is still this process's.
    pub async fn release(&self) {
        let name = marker_name(&self.owner.instance);
        match self.runtime.mark(&name, &self.owner.labels()).await {
            Ok(m) if Owner::from_labels(&m.labels).token == self.owner.token => {
                if let Err(e) = self.runtime.unmark(&name).await {
                    tracing::warn!(marker = %name, error = %e, "removing the instance's marker failed");
                }
            }
            Ok(_) => {
                tracing::warn!(marker = %name, "the instance's marker belongs to another server now; left in place")
            }
            Err(e) => {
                tracing::warn!(marker = %name, error = %e, "checking the instance's marker failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(token: &str) -> Owner {
        Owner {
            instance: "i".into(),
            token: token.into(),
            pid: 42,
            pid_start: "1000".into(),
            boot_id: "boot-a".into(),
            pid_ns: "pid:[1]".into(),
            host: "h".into(),
            data_dir: "/d".into(),
        }
    }

    #[test]
    fn verdicts() {
        let ours = owner("me");
        let alive = |_| Some("1000".to_string());
        let none = |_| None;
        assert_eq!(judge(&ours, &owner("me"), none), Verdict::Ours);
        assert_eq!(judge(&ours, &owner("x"), alive), Verdict::Alive);
        assert!(
            matches!(judge(&ours, &owner("x"), none), Verdict::Gone(w) if w.contains("exited"))
        );
        assert!(matches!(
            judge(&ours, &owner("x"), |_| Some("2000".into())),
            Verdict::Gone(w) if w.contains("another process")
        ));
        let other_ns = Owner {
            pid_ns: "pid:[2]".into(),
            ..owner("x")
        };
        assert_eq!(judge(&ours, &other_ns, none), Verdict::Unknown);
        let rebooted = Owner {
            boot_id: "boot-b".into(),
            ..owner("x")
        };
        assert!(
            matches!(judge(&ours, &rebooted, alive), Verdict::Gone(w) if w.contains("rebooted"))
        );
        let elsewhere = Owner {
            boot_id: "boot-b".into(),
            host: "g".into(),
            ..owner("x")
        };
        assert_eq!(judge(&ours, &elsewhere, alive), Verdict::Unknown);
        let unlabelled = Owner::from_labels(&HashMap::new());
        assert_eq!(judge(&ours, &unlabelled, alive), Verdict::Unknown);
    }

    #[test]
    fn labels_round_trip_and_this_process_is_alive() {
        let me = Owner::this_process("i", Path::new("."));
        assert_eq!(Owner::from_labels(&me.labels()), me);
        let other = Owner {
            token: "t".into(),
            ..me.clone()
        };
        assert_eq!(judge(&me, &other, process_start), Verdict::Alive);
        assert!(in_use_message(&other, "T", &Verdict::Alive)
            .contains("docker volume rm warmpool-owner-i"));
    }
}
