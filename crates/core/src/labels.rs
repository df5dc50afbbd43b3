//! Labels on everything warmpool creates: how it finds its own containers and
//! never touches anyone else's.

/// Present (`true`) on every container and volume warmpool creates.
pub const MANAGED: &str = "warmpool.managed";
/// The profile a container belongs to.
pub const PROFILE: &str = "warmpool.profile";
/// The digest of the gate inside a container or volume.
pub const GATE: &str = "warmpool.gate";
/// What a container is for: `job` (parked or running a job) or `gate-fill`.
pub const ROLE: &str = "warmpool.role";
