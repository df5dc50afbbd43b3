//! The pool: parked containers per profile, kept ready, never leaked.
//!
//! - [`decide`]: the claim and reconcile rules as pure code, run by both drivers.
//! - [`owner`]: one instance, one owner: the marker taken before sweeping.
//! - [`pool`]: the pool of one profile against the engine: claim, reconcile,
//!   health, shutdown.
//! - [`set`]: the pools of one config and instance: sweep, start, shut down.
//! - [`sizing`]: the idle target as a pure function of observed demand.
//! - [`sim`]: a deterministic, trace-driven simulation that runs [`decide`] on
//!   simulated time.

pub mod decide;
pub mod owner;
pub mod pool;
pub mod set;
pub mod sim;
pub mod sizing;

pub use pool::{sweep, Claimed, Pool, PoolError, PoolRun, PoolStats};
pub use set::{Pools, PoolsError};
