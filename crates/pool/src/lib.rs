//! The pool: parked containers per profile, kept ready, never leaked.
//!
//! - [`pool`]: the pool of one profile: claim, reconcile, health, shutdown.
//! - [`set`]: the pools of one config and instance: sweep, start, shut down.
//! - [`sizing`]: the idle target as a pure function of observed demand.
//! - [`sim`]: a deterministic, trace-driven simulation of sizing policies.

pub mod pool;
pub mod set;
pub mod sim;
pub mod sizing;

pub use pool::{sweep, Claimed, Pool, PoolError, PoolRun, PoolStats};
pub use set::{Pools, PoolsError};
