//! warmpool's core: the decisions that need no I/O, tested in microseconds.
//!
//! - [`config`]: the TOML file, its profiles, durations and sizes, validated at load.
//! - [`job`]: what a job asks for and how it becomes the gate's [`JobSpec`] with
//!   `docker run` semantics (ENTRYPOINT + args or CMD; image env, profile env, job env).
//! - [`labels`]: the labels every warmpool container carries.
//! - [`lifecycle`]: a job's states, the events that move it, the transition
//!   function and the mapping from how a run ended to its final state.
//! - [`redact`]: a job's secrets hidden from its output over the whole stream (a
//!   secret split across writes or cut by the cap never shows).
//!
//! Nothing here talks to the engine; that is `warmpool-runtime`'s job.

pub mod config;
pub mod job;
pub mod labels;
pub mod lifecycle;
pub mod redact;

pub use config::{Config, ConfigError, Profile};
pub use job::{ImageConfig, Job, JobError};
pub use lifecycle::{Finish, JobState};
pub use redact::{redact_all, Redactor};
pub use warmpool_gate::protocol::{ExitStatus, JobSpec};
