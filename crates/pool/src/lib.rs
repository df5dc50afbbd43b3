//! The pool: parked containers per profile, kept ready, never leaked.
//!
//! - [`sizing`]: the idle target as a pure function of observed demand.
//! - [`sim`]: a deterministic, trace-driven simulation of sizing policies.

pub mod sim;
pub mod sizing;
