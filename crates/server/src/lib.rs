//! The service: an HTTP API over the pools, and a durable job store.
//!
//! - [`api`]: requests parsed into typed commands; the JSON views.
//! - [`service`]: what callers ask of jobs (submit, cancel, wait, view, follow,
//!   recover), over the pools and a `warmpool_store::JobStore`.
//! - `run`: one job's run, as steps driven by the core's transition function.
//! - `node`: this node in the cluster: the dispatcher (the shared queue read
//!   into this node's containers, warm first) and the lease (heartbeats,
//!   take-over of lost nodes, fencing).
//! - `live`, `sink`, [`follow`]: what a running job holds in memory, where its
//!   output goes (redacted, then stored), and the one way to read output as it
//!   grows.
//! - [`http`]: the routes (axum), auth, errors as `{"error": ...}`.
//! - [`metrics`]: Prometheus text.
//! - [`github`]: the @mention bot's webhook, on top of the same service; its
//!   `github_triage.rs` labels opened issues and reviews pull requests whose checks pass.
//! - [`mirror`]: the bot's warm repository mirrors, kept in the background.
//! - [`openapi`]: the API described, served at `/v1/openapi.json`.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests start the
//! real server on `127.0.0.1:0`.

pub mod api;
pub mod follow;
pub mod github;
pub mod http;
mod live;
pub mod metrics;
pub mod mirror;
mod node;
pub mod openapi;
pub mod ready;
mod run;
pub mod service;
mod sink;
mod webhook_body;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

pub use service::Service;

/// A lock that a panic elsewhere did not make unusable: what it guards here
/// (maps, counters, buffers) stays sound across a panicking holder.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serve the API on `listener` until `shutdown` resolves; then stop taking
/// requests (in-flight ones finish). The caller shuts the service down after.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Arc<Service>,
    token: Option<String>,
    bot: Option<Arc<github::GithubBot>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, http::router(svc, token, bot))
        .with_graceful_shutdown(shutdown)
        .await
}
