//! Labels on everything warmpool creates: how it finds its own containers and
//! never touches anyone else's.

/// Present (`true`) on every container and volume warmpool creates.
pub const MANAGED: &str = "warmpool.managed";
/// The profile a container belongs to.
pub const PROFILE: &str = "warmpool.profile";
/// The pool instance (a `warmpool serve` or a one-off `warmpool run`) that owns a
/// container: it removes its own leftovers at start and never touches others'.
pub const INSTANCE: &str = "warmpool.instance";
/// The digest of the gate inside a container or volume.
pub const GATE: &str = "warmpool.gate";
/// What a container is for: `job` (parked or running a job) or `gate-fill`.
pub const ROLE: &str = "warmpool.role";

/// A suffix for container names that no other container of this engine has:
/// pid, time and a counter (no extra crate, no randomness needed).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}-{:x}-{n}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}
