//! The engine seam: everything warmpool asks of a container engine, as one trait,
//! and its Docker implementation on the Engine API (through bollard, never the CLI).
//!
//! The trait speaks warmpool's terms (a container whose entrypoint is the gate; its
//! attach stream; kill; remove; list by labels) and owns no policy: what to create
//! and when is decided above it, in `warmpool-exec` and the pool.

pub mod baseline;
mod docker;
mod vocab;

pub use docker::DockerRuntime;
pub use vocab::{ContainerAction, ContainerState, ImageAction, Signal, UnknownSignal, SIGNALS};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::pin::Pin;
use tokio::io::AsyncWrite;
pub use warmpool_core::ImageConfig;

/// Everything needed to create one container for a profile. Holds no job data: a
/// job's env and args travel to the gate over the attach stream, never through here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Non-secret env (the profile's); visible in `docker inspect`.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub labels: HashMap<String, String>,
    pub memory: Option<u64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub network: Option<String>,
    pub read_only: bool,
    pub tmpfs: HashMap<String, String>,
    /// Read-only bind mounts: (host path, container path).
    pub ro_binds: Vec<(String, String)>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub runtime: Option<String>,
    /// Arguments of the gate (`--reuse`: it resets the container after each
    /// job and takes another).
    pub gate_args: Vec<String>,
}

/// A chunk of what a container wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A live connection to a container's stdin, stdout and stderr.
pub struct Attachment {
    pub output: BoxStream<'static, Result<Output, RuntimeError>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// What the engine says about itself.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
    pub os: String,
    /// The engine's CPU architecture as Rust names it (`x86_64`, `aarch64`, ...),
    /// to compare with `std::env::consts::ARCH`.
    pub arch: String,
    /// Why this engine is older than warmpool is tested with, if it is.
    pub too_old: Option<String>,
}

/// One container as listed by the engine.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub state: ContainerState,
    pub labels: HashMap<String, String>,
}

/// Something the engine reports happening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// Something happened to a container (one carrying the subscribed labels).
    Container { id: String, action: ContainerAction },
    /// Something happened to an image. `name` is the reference the event names (a
    /// tag for a tag, the image id for a delete).
    Image { name: String, action: ImageAction },
}

pub type EventStream = BoxStream<'static, Result<EngineEvent, RuntimeError>>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker engine ({endpoint}): {message}. Is dockerd running, and does DOCKER_HOST (or [engine] host) point at it?")]
    Unreachable { endpoint: String, message: String },
    #[error("{action}: not found: {message}")]
    NotFound { action: String, message: String },
    #[error("{action}: {message}")]
    Engine { action: String, message: String },
}

impl RuntimeError {
    /// The container (or whatever the call was about) does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }
}

/// Whether the engine answers within `within` (any answer: it is there), or
/// why not: the one ping the pool, the executor and `/readyz` ask.
pub async fn ping(runtime: &dyn Runtime, within: std::time::Duration) -> Result<(), String> {
    match tokio::time::timeout(within, runtime.info()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the engine did not answer within {within:?}")),
    }
}

/// A container engine, as warmpool needs it.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Who the engine is; fails if it cannot be reached.
    async fn info(&self) -> Result<EngineInfo, RuntimeError>;
    /// The image's run config, or `None` if no such image exists locally.
    async fn image(&self, reference: &str) -> Result<Option<ImageConfig>, RuntimeError>;
    /// Create (not start) a container whose entrypoint is the gate at
    /// `warmpool_gate::GATE_PATH`, with stdin open for the one job spec.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    /// Attach to stdin, stdout and stderr; call before `start` to miss nothing.
    async fn attach(&self, id: &str) -> Result<Attachment, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Send a signal to the container's PID 1 (the gate).
    async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError>;
    /// Wait until the container is not running; its exit code.
    async fn wait(&self, id: &str) -> Result<i64, RuntimeError>;
    /// Remove the container, killing it if it runs. Removing a missing one is not an error.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Containers (any state) carrying all of these `key=value` labels.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// Events of containers carrying all of these labels, and of every image, from
    /// the moment of the call on (none is lost between the call and the first poll;
    /// one from just before the call may come too, and an event may come twice).
    /// The stream ends or errors when the connection does; callers resubscribe.
    async fn events(&self, labels: &[(&str, &str)]) -> Result<EventStream, RuntimeError>;
    /// Put a marker named `name` carrying `labels` on the engine, unless one of
    /// that name exists: either way, the marker now under that name (an atomic
    /// "create if absent": the engine decides which of two callers got there
    /// first). A marker holds no data and runs nothing (a labelled volume).
    async fn mark(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<Marker, RuntimeError>;
    /// Remove the marker `name`; a missing one is not an error.
    async fn unmark(&self, name: &str) -> Result<(), RuntimeError>;
}

/// A marker on the engine (see [`Runtime::mark`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub labels: HashMap<String, String>,
    /// When the engine made it, as the engine writes it (RFC 3339).
    pub created: String,
}
