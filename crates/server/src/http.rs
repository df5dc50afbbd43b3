//! The HTTP layer: routes, auth, and the translation of requests into calls on
//! the [`Service`] (parsed and validated in `api` first). It owns no job logic.

use crate::api::{self, BadRequest, JobView, PoolView, SubmitRequest};
use crate::service::{Service, ServiceError};
use crate::store::StreamName;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

/// An error as the API answers it: `{"error": "..."}` with a fitting status.
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<BadRequest> for ApiError {
    fn from(b: BadRequest) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, b.0)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::QueueFull { .. } => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: e.to_string(),
                retry_after: Some(1),
            },
            ServiceError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

/// Largest request body accepted by default.
pub const DEFAULT_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// The router: `/v1` behind the bearer token (when one is set), health and
/// metrics open.
pub fn router(
    svc: Arc<Service>,
    token: Option<String>,
    bot: Option<Arc<crate::github::GithubBot>>,
) -> Router {
    let v1 = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/output", get(output))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/pools", get(pools))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .layer(middleware::from_fn_with_state(Arc::new(token), auth));
    let api = Router::new()
        .merge(v1)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(
            usize::try_from(svc.config.server.max_body).unwrap_or(DEFAULT_BODY_LIMIT),
        ))
        .with_state(svc.clone());
    match bot {
        // Authenticated by its signature, not the bearer token; GitHub's own size limit.
        Some(bot) => Router::new()
            .route(
                "/webhooks/github",
                post(crate::github::webhook)
                    .layer(DefaultBodyLimit::max(crate::github::MAX_WEBHOOK_BODY)),
            )
            .with_state((svc, bot))
            .merge(api),
        None => api,
    }
}

/// Bearer-token check, in constant time.
async fn auth(
    State(token): State<Arc<Option<String>>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = token.as_ref() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer <WARMPOOL_API_TOKEN>",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Equal without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

#[derive(Deserialize)]
struct SubmitQuery {
    #[serde(default)]
    wait: bool,
}

/// A query string that does not parse is a 400 in the API's own shape.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", e.body_text()),
        )
    })
}

async fn submit(
    State(svc): State<Arc<Service>>,
    q: Result<Query<SubmitQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let req: SubmitRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid job: {e}")))?;
    let job = api::parse_submit(req, &svc.config)?;
    // Refuse now what could never run (no command, too large), before it is stored.
    if let Some(pool) = svc.pools.get(&job.profile) {
        let resolved = pool.profile();
        let probe = warmpool_core::Job {
            args: job.args.clone(),
            env: job.env.clone(),
            unset: Vec::new(),
            stdin: job.stdin.clone(),
            timeout: None,
        };
        warmpool_core::job::compose(&resolved.image, &resolved.profile, &probe)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid job: {e}")))?;
    }
    let id = svc.submit(job).await?;
    if q.wait {
        svc.wait(&id).await;
        let view = load(&svc, &id, true).await?;
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "state": "queued" })),
    )
        .into_response())
}

async fn load(svc: &Arc<Service>, id: &str, with_output: bool) -> Result<JobView, ApiError> {
    let store = svc.store.clone();
    let id2 = id.to_string();
    let found = tokio::task::spawn_blocking(move || store.get(&id2, with_output))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::from(ServiceError::Store(e)))?;
    found
        .map(JobView::from)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job \"{id}\"")))
}

async fn job(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(load(&svc, &id, true).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    profile: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(svc): State<Arc<Service>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let q = query(q)?;
    let state = api::parse_state(q.state.as_deref())?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let store = svc.store.clone();
    let jobs = tokio::task::spawn_blocking(move || store.list(state, q.profile.as_deref(), limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::from(ServiceError::Store(e)))?;
    Ok(Json(jobs.into_iter().map(JobView::from).collect()))
}

#[derive(Deserialize)]
struct OutputQuery {
    stream: Option<String>,
    #[serde(default)]
    follow: bool,
}

async fn output(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
    q: Result<Query<OutputQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        return sse_output(svc, id).await;
    }
    let stream = api::parse_stream(q.stream.as_deref())?;
    // Subscribe before reading what is stored, so nothing falls between the two.
    let live = if q.follow { svc.follow(&id) } else { None };
    let store = svc.store.clone();
    let id2 = id.clone();
    let stored = tokio::task::spawn_blocking(move || store.output(&id2, stream))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::from(ServiceError::Store(e)))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job \"{id}\"")))?;
    let content_type = [(header::CONTENT_TYPE, "application/octet-stream")];
    let Some((mut rx, mut done)) = live else {
        return Ok((content_type, stored).into_response());
    };
    // Live: what is stored, then each new chunk of this stream, until the job ends.
    // A client that goes away only drops this stream; the job is not disturbed.
    let have = stored.len() as u64;
    let stopping = svc.stopping();
    let body = async_stream(stored, have, stream, move |tx| async move {
        loop {
            tokio::select! {
                // Chunks first: the job's end must not overtake its last output.
                biased;
                chunk = rx.recv() => match chunk {
                    Ok(c) if c.stream == stream => {
                        if tx.send(c).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    // A slow follower missed chunks: end its stream rather than lie.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(_) => return,
                },
                                _ = stopping.cancelled() => return,
                changed = done.changed() => {
                    if changed.is_err() || *done.borrow() {
                        // Everything the job wrote was sent before it ended: take
                        // what is still buffered, then end.
                        while let Ok(c) = rx.try_recv() {
                            if c.stream == stream && tx.send(c).await.is_err() { return; }
                        }
                        return;
                    }
                }
            }
        }
    });
    Ok((content_type, body).into_response())
}

/// A streaming body: the stored bytes, then the chunks `produce` sends that start
/// at or after `have` (earlier ones were in the stored part).
fn async_stream<F, Fut>(stored: Vec<u8>, have: u64, _stream: StreamName, produce: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<crate::service::Chunk>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    let first =
        futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(stored)) });
    let rest = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            let c = rx.recv().await?;
            let end = c.offset + c.data.len() as u64;
            if end <= have {
                continue;
            }
            let skip = have.saturating_sub(c.offset) as usize;
            return Some((Ok(c.data.slice(skip..)), rx));
        }
    });
    Body::from_stream(futures_util::StreamExt::chain(first, rest))
}

/// One Server-Sent Event: each line of `data` a `data:` field (the client joins
/// them with newlines, so the text arrives exactly; invalid UTF-8 is replaced).
fn sse_event(event: &str, data: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(data);
    let mut out = format!("event: {event}\n");
    // Every line ending SSE knows (CRLF, CR, LF) starts a new data line, so job
    // output cannot forge fields and `\r` progress lines are kept.
    for line in text.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The event for a live chunk, minus what the stored part already had.
fn sse_chunk(c: &crate::service::Chunk, have: &[u64; 2]) -> Option<Bytes> {
    let i = usize::from(c.stream == StreamName::Stderr);
    let end = c.offset + c.data.len() as u64;
    if end <= have[i] {
        return None;
    }
    let skip = have[i].saturating_sub(c.offset) as usize;
    let name = if i == 0 { "stdout" } else { "stderr" };
    Some(sse_event(name, &c.data[skip..]))
}

/// `output` for `Accept: text/event-stream`: both streams as `stdout` / `stderr`
/// events (stored first, then live), and an `end` event with the job's state.
async fn sse_output(svc: Arc<Service>, id: String) -> Result<Response, ApiError> {
    let live = svc.follow(&id);
    let mut stored = Vec::new();
    for name in [StreamName::Stdout, StreamName::Stderr] {
        let store = svc.store.clone();
        let id2 = id.clone();
        let bytes = tokio::task::spawn_blocking(move || store.output(&id2, name))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::from(ServiceError::Store(e)))?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job \"{id}\"")))?;
        stored.push(bytes);
    }
    let have = [stored[0].len() as u64, stored[1].len() as u64];
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for (i, name) in ["stdout", "stderr"].iter().enumerate() {
            if !stored[i].is_empty() && tx.send(sse_event(name, &stored[i])).await.is_err() {
                return;
            }
        }
        let stopping = svc.stopping();
        if let Some((mut chunks, mut done)) = live {
            loop {
                tokio::select! {
                    biased;
                    _ = stopping.cancelled() => break,
                    chunk = chunks.recv() => match chunk {Ok(c) => {
                            if let Some(event) = sse_chunk(&c, &have) {
                                if tx.send(event).await.is_err() { return; }
                            }
                        }
                        Err(_) => break,
                    },
                    changed = done.changed() => {
                        if changed.is_err() || *done.borrow() {while let Ok(c) = chunks.try_recv() {
                                if let Some(event) = sse_chunk(&c, &have) {
                                    if tx.send(event).await.is_err() { return; }
                                }
                            }
                            break;
                        }
                    }
                }
            }
        }
        let end = match load(&svc, &id, false).await {
            Ok(v) => {
                serde_json::json!({"id": v.id, "state": v.state, "exit_code": v.exit_code, "signal": v.signal})
            }
            Err(_) => serde_json::json!({"id": id}),
        };
        let _ = tx.send(sse_event("end", end.to_string().as_bytes())).await;
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::io::Error>(b), rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

async fn cancel(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Unknown ids are a 404, ended jobs a 409.
    load(&svc, &id, false).await?;
    if svc.cancel(&id).await? {
        svc.wait(&id).await;
        let view = load(&svc, &id, false).await?;
        Ok((StatusCode::OK, Json(view)).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job \"{id}\" has already ended"),
        ))
    }
}

async fn pools(State(svc): State<Arc<Service>>) -> Json<Vec<PoolView>> {
    Json(
        svc.pools
            .iter()
            .map(|(_, p)| {
                let s = p.stats();
                PoolView {
                    profile: s.profile,
                    image: s.image,
                    idle: s.idle,
                    busy: s.busy,
                    starting: s.starting,
                    queued: s.queued,
                    target_idle: s.target_idle,
                    hits: s.hits,
                    misses: s.misses,
                }
            })
            .collect(),
    )
}

async fn readyz(State(svc): State<Arc<Service>>) -> Response {
    let engine = svc.pools.iter().next().map(|(_, p)| p.clone());
    let engine_ok = match engine {
        Some(p) => p.engine_reachable().await,
        None => true,
    };
    if engine_ok && svc.pools.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if !engine_ok {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine is not reachable\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "pools are filling to min_idle\n",
        )
            .into_response()
    }
}

async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    let text = crate::metrics::render(&svc);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
