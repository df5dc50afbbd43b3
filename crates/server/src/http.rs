//! The HTTP layer: routes, auth, and the translation of requests into calls on
//! the [`Service`] (parsed and validated in `api` first). It owns no job logic.

use crate::api::{self, BadRequest, JobView, NodeView, PoolView, SubmitRequest};
use crate::follow::Piece;
use crate::service::{CancelReply, Service, ServiceError};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use warmpool_core::Config;
use warmpool_store::{NewJob, StreamName};

/// An error as the API answers it: `{"error": "..."}` with a fitting status.
#[derive(Debug)]
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

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error` text it is answered with.
    pub fn message(&self) -> &str {
        &self.message
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
            ServiceError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            ServiceError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            // The store is unreachable (a database restarting): try again soon.
            ServiceError::Store(warmpool_store::StoreError::Backend { .. }) => {
                tracing::warn!(error = %e, "request failed: the job store is unreachable");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: e.to_string(),
                    retry_after: Some(1),
                }
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
    // Built once: the config does not change while the server runs.
    let openapi = (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(crate::openapi::document(&svc.config, token.is_some()).to_string()),
    );
    let v1 = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/output", get(output))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/pools", get(pools))
        .route("/v1/nodes", get(nodes))
        .route("/v1/openapi.json", get(move || async move { openapi }))
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
                // The handler reads the body itself (hashed as it arrives,
                // bounded by `[github] max_body`).
                post(crate::github::webhook).layer(DefaultBodyLimit::disable()),
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

/// A job id from the path: one that is not UTF-8 once percent-decoded is a 400
/// in the API's own shape.
fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::new(e.status(), format!("invalid path: {}", e.body_text())))
}

/// A query string that does not parse (a parameter given twice included) is a
/// 400 in the API's own shape. (What axum's `Query` extractor does, with the
/// API's error.)
fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::try_from_uri(uri).map(|Query(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {}", e.body_text()),
        )
    })
}

/// `POST /v1/jobs?wait=`: whether to wait for the job's end.
pub fn submit_query(uri: &Uri) -> Result<bool, ApiError> {
    Ok(query::<SubmitQuery>(uri)?.wait)
}

/// `POST /v1/jobs`'s body: JSON to a job the store can take, checked against
/// the config (its profiles and `[server]` limits), or a 400 saying why not.
pub fn decode_submit(body: &[u8], config: &Config) -> Result<NewJob, ApiError> {
    let req: SubmitRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid job: {e}")))?;
    Ok(api::parse_submit(req, config)?)
}

async fn submit(
    State(svc): State<Arc<Service>>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = submit_query(&uri)?;
    // Over `max_body` (413) or a body that breaks off: in the API's own shape.
    let body =
        body.map_err(|e| ApiError::new(e.status(), format!("invalid job: {}", e.body_text())))?;
    // Up to `max_body` of JSON, and the limits checked on every entry: off the
    // async workers, which /healthz and every other request share.
    let config = svc.config.clone();
    let job = tokio::task::spawn_blocking(move || decode_submit(&body, &config))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let began = std::time::Instant::now();
    let id = svc.submit(job).await?;
    if wait {
        let stored = began.elapsed();
        let inline = inline(&svc);
        let (record, output) = svc
            .wait_view(&id, inline)
            .await?
            .ok_or_else(|| no_job(&id))?;
        tracing::debug!(job = %id, ?stored, ended = ?began.elapsed(), "submit and wait");
        return Ok((StatusCode::OK, Json(JobView::new(record, output, inline))).into_response());
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "state": "queued" })),
    )
        .into_response())
}

/// `[server] inline_output`: the head of each stream a job's JSON shows.
fn inline(svc: &Service) -> usize {
    usize::try_from(svc.config.server.inline_output).unwrap_or(usize::MAX)
}

async fn load(svc: &Service, id: &str, with_output: bool) -> Result<JobView, ApiError> {
    let inline = if with_output { inline(svc) } else { 0 };
    svc.view(id, inline)
        .await?
        .map(|(record, output)| JobView::new(record, output, inline))
        .ok_or_else(|| no_job(id))
}

fn no_job(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no job \"{id}\""))
}

async fn job(
    State(svc): State<Arc<Service>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let id = path_id(id)?;
    Ok(Json(load(&svc, &id, true).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    profile: Option<String>,
    limit: Option<u64>,
}

/// `GET /v1/jobs?state=&profile=&limit=`: what to list.
pub fn list_query(uri: &Uri) -> Result<warmpool_store::ListQuery, ApiError> {
    let q: ListQuery = query(uri)?;
    Ok(warmpool_store::ListQuery {
        state: api::parse_state(q.state.as_deref())?,
        profile: q.profile,
        limit: api::parse_limit(q.limit)?,
    })
}

async fn list(State(svc): State<Arc<Service>>, uri: Uri) -> Result<Json<Vec<JobView>>, ApiError> {
    let query = list_query(&uri)?;
    let jobs = svc.list(&query).await?;
    Ok(Json(
        jobs.into_iter()
            .map(|r| JobView::new(r, [Vec::new(), Vec::new()], 0))
            .collect(),
    ))
}

#[derive(Deserialize)]
struct OutputQuery {
    stream: Option<String>,
    #[serde(default)]
    follow: bool,
}

/// `GET /v1/jobs/{id}/output?stream=&follow=`: the stream asked for (stdout
/// unless said; SSE ignores it) and whether to follow it.
pub fn output_query(uri: &Uri) -> Result<(Result<StreamName, ApiError>, bool), ApiError> {
    let q: OutputQuery = query(uri)?;
    let stream = api::parse_stream(q.stream.as_deref()).map_err(ApiError::from);
    Ok((stream, q.follow))
}

/// `GET /v1/jobs/{id}/output`: one stream's raw bytes (what is stored, or with
/// `follow=true` everything until the job ends), or with `Accept:
/// text/event-stream` both streams as SSE and an `end` event. One follower
/// serves all three.
async fn output(
    State(svc): State<Arc<Service>>,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let (stream, follow) = output_query(&uri)?;
    // Checked whichever form is asked for (SSE carries both streams).
    let stream = stream?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        let follower = svc
            .follow(&id, [true, true], true)
            .await?
            .ok_or_else(|| no_job(&id))?;
        let body = Body::from_stream(futures_util::stream::unfold(
            Some(follower),
            |f| async move {
                let mut f = f?;
                match f.next().await {
                    Ok(Some(Piece::Output { stream, data, .. })) => {
                        Some((Ok(sse_event(stream.as_str(), &data)), Some(f)))
                    }
                    Ok(Some(Piece::End(r))) => {
                        let end = serde_json::json!({
                            "id": r.id, "state": r.state.as_str(),
                            "exit_code": r.exit_code, "signal": r.signal,
                        });
                        Some((Ok(sse_event("end", end.to_string().as_bytes())), None))
                    }
                    Ok(None) => None,
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
                }
            },
        ));
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response());
    }
    let mut wanted = [false, false];
    wanted[stream.index()] = true;
    let follower = svc
        .follow(&id, wanted, follow)
        .await?
        .ok_or_else(|| no_job(&id))?;
    // A client that goes away only drops this stream; the job is not disturbed.
    let body = Body::from_stream(futures_util::stream::unfold(follower, |mut f| async move {
        loop {
            return match f.next().await {
                Ok(Some(Piece::Output { data, .. })) => {
                    Some((Ok::<Bytes, std::io::Error>(data), f))
                }
                Ok(Some(Piece::End(_))) => continue,
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), f)),
            };
        }
    }));
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
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

async fn cancel(
    State(svc): State<Arc<Service>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    match svc.cancel(&id).await? {
        CancelReply::Accepted => {
            svc.wait(&id).await?;
            Ok((StatusCode::OK, Json(load(&svc, &id, false).await?)).into_response())
        }
        CancelReply::AlreadyEnded(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job \"{id}\" has already ended"),
        )),
        CancelReply::NotFound => Err(no_job(&id)),
    }
}

async fn pools(State(svc): State<Arc<Service>>) -> Result<Json<Vec<PoolView>>, ApiError> {
    Ok(Json(svc.cluster_pools().await?))
}

async fn nodes(State(svc): State<Arc<Service>>) -> Result<Json<Vec<NodeView>>, ApiError> {
    let timeout = svc.config.cluster.node_timeout;
    let now = warmpool_store::Clock::now_ms(&warmpool_store::SystemClock);
    let nodes = svc.store().nodes().await.map_err(ServiceError::from)?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| NodeView::new(n, now, timeout))
            .collect(),
    ))
}

async fn readyz(State(svc): State<Arc<Service>>) -> Response {
    let r = crate::ready::readiness(&svc).await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    let text = crate::metrics::render(&svc);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(q: &str) -> Uri {
        format!("/v1/jobs?{q}").parse().unwrap()
    }

    #[test]
    fn queries_decode_or_are_a_400() {
        assert!(submit_query(&uri("wait=true")).unwrap());
        assert!(!submit_query(&uri("")).unwrap());
        let e = submit_query(&uri("wait=maybe")).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().starts_with("invalid query"), "{}", e.message());

        let q = list_query(&uri("state=running&profile=bb&limit=1000")).unwrap();
        assert_eq!(q.state, Some(warmpool_store::JobState::Running));
        assert_eq!((q.profile.as_deref(), q.limit), (Some("bb"), 1000));
        assert_eq!(list_query(&uri("")).unwrap().limit, 100);
        for bad in [
            "state=bogus",
            "state=",
            "limit=-1",
            "limit=x",
            "limit=0",
            "limit=5000",
            "limit=1&limit=2",
        ] {
            let e = list_query(&uri(bad)).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }

        let (stream, follow) = output_query(&uri("stream=stderr&follow=true")).unwrap();
        assert_eq!((stream.unwrap(), follow), (StreamName::Stderr, true));
        // A bad stream is the handler's 400 (for SSE too).
        let (stream, _) = output_query(&uri("stream=both")).unwrap();
        assert_eq!(stream.unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert!(output_query(&uri("follow=2")).is_err());
    }

    #[test]
    fn a_submitted_body_decodes_or_is_a_400() {
        let config = Config::parse("[profiles.bb]\nimage = \"x\"\n").unwrap();
        let job = decode_submit(br#"{"profile":"bb","args":["a"]}"#, &config).unwrap();
        assert_eq!((job.profile.as_str(), job.args.len()), ("bb", 1));
        for bad in [
            &b"not json"[..],
            br#"{"profile":"nope"}"#,
            br#"{"profile":"bb","extra":1}"#,
            br#"{"profile":"bb","env":{"1X":"v"}}"#,
        ] {
            let e = decode_submit(bad, &config).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(!e.message().is_empty());
        }
    }
}
