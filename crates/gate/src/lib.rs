//! The gate as seen from the host: its wire protocol and its binary.
//!
//! `protocol` is shared source with the gate itself (src/gate/main.rs), so both sides
//! frame bytes the same way; so is `cgroup` (how the gate reads the OOM-kill
//! counter), so its parsing is tested here; so is `reset` (the pure part of the
//! reset between jobs in reuse mode). `GATE_BINARY` is the static gate built by
//! build.rs.

pub mod cgroup;
pub mod protocol;
pub mod reset;

/// The static gate binary, ready to be copied into a container.
pub static GATE_BINARY: &[u8] = include_bytes!(env!("WARMPOOL_GATE_PATH"));

/// A short digest of `GATE_BINARY`: containers and the gate volume are labelled
/// with it, so a new build never runs with an old gate.
pub const GATE_DIGEST: &str = env!("WARMPOOL_GATE_DIGEST");

/// What the gate says in its READY frame.
pub const GATE_VERSION: &str = concat!("warmpool-gate/", env!("CARGO_PKG_VERSION"));

/// Where the gate lives inside every warmpool container.
pub const GATE_DIR: &str = "/.warmpool";
pub const GATE_PATH: &str = "/.warmpool/gate";
