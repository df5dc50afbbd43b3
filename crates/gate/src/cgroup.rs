//! The container's OOM-kill counter, as the gate reads it: which cgroup files hold
//! it and how to parse them. Pure and std only (shared source with the gate, like
//! protocol.rs); the gate does the reading, this file never touches the filesystem.
//!
//! Inside a container `/sys/fs/cgroup` shows the container's own cgroup. cgroup v2
//! counts OOM kills in `memory.events`, cgroup v1 (kernel 4.13 and later) in
//! `memory/memory.oom_control`; both as a line `oom_kill N`. No file, or no such
//! line, means the gate cannot tell, and then it claims nothing.

/// Where the counter may be, in the order the gate tries them (v2 first).
pub const OOM_COUNTER_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory.events",
    "/sys/fs/cgroup/memory/memory.oom_control",
];

/// The `oom_kill N` count in the text of `memory.events` or `memory.oom_control`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("oom_kill"), Some(n), None) => n.parse().ok(),
            _ => None,
        }
    })
}

/// How many OOM kills happened between two readings; `None` when either reading
/// is missing (no claim either way). A counter that went down (a different file
/// was read, or it was reset) is no evidence of a kill.
pub fn oom_kills_between(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    }
}
