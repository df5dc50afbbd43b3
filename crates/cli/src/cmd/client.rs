//! The HTTP client of `warmpool serve`'s API, shared by `submit`, `jobs`, `logs`
//! and `status`: JSON requests, streamed output, and errors that say what failed.
//! It knows the API's paths and shapes, nothing of how a command presents them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Where the server is, for every client command.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// The base URL of `warmpool serve`. The API token, when the server has one,
    /// comes from WARMPOOL_API_TOKEN.
    #[arg(
        long,
        env = "WARMPOOL_SERVER",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL"
    )]
    pub server: String,
}

/// A connection that does not open within this is reported, not waited on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this much of an error body is quoted.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("\"{url}\" is not a server URL ({why}); for example http://127.0.0.1:7070")]
    BadUrl { url: String, why: String },
    #[error("cannot connect to {url}: {reason}; is `warmpool serve` running at {url}?")]
    Connect { url: String, reason: String },
    /// The server answered with an error status; `message` is its `"error"` text.
    #[error("{what}: the server answered {status}: {message}{hint}", hint = api_hint(*.status, *.retry_after, *.has_token))]
    Api {
        what: String,
        status: StatusCode,
        message: String,
        retry_after: Option<u64>,
        has_token: bool,
    },
    #[error("{what}: {reason}")]
    Transport { what: String, reason: String },
    #[error("{what}: the server's answer is not what warmpool expected ({reason})")]
    Decode { what: String, reason: String },
}

impl ClientError {
    /// The HTTP status of an API error, if that is what this is.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What to add to an API error so the reader knows what to do.
fn api_hint(status: StatusCode, retry_after: Option<u64>, has_token: bool) -> String {
    match (status, retry_after) {
        (StatusCode::UNAUTHORIZED, _) if !has_token => {
            " (WARMPOOL_API_TOKEN is not set here)".to_string()
        }
        (_, Some(s)) => format!(" (retry after {s} s)"),
        _ => String::new(),
    }
}

/// A client of one server, with the token it sends (if any).
pub struct Client {
    /// Scheme and authority, plus any path prefix; no trailing slash.
    base: String,
    token: Option<String>,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client of the server the arguments name, with WARMPOOL_API_TOKEN's token.
    pub fn from_args(args: &ServerArgs) -> Result<Client, ClientError> {
        let token = std::env::var("WARMPOOL_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Client::new(&args.server, token)
    }

    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let base = normalize_base(base)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Ok(Client { base, token, http })
    }

    /// The server's base URL, as requests use it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, its JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        read_json(self.what(&Method::GET, path), resp).await
    }

    /// `POST path` with a JSON body (or none), its JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::Decode {
                what: self.what(&Method::POST, path),
                reason: format!("cannot encode the request: {e}"),
            })?),
            None => None,
        };
        let resp = self.send(Method::POST, path, body).await?;
        read_json(self.what(&Method::POST, path), resp).await
    }

    /// `GET path` whose body is read as it arrives (the output endpoints).
    pub async fn get_stream(&self, path: &str) -> Result<Stream, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        Ok(Stream {
            what: self.what(&Method::GET, path),
            body: resp.into_body(),
        })
    }

    fn what(&self, method: &Method, path: &str) -> String {
        format!("{method} {}{path}", self.base)
    }

    /// Send one request; a success status, or the server's error as a [`ClientError`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let what = self.what(&method, path);
        let url = format!("{}{path}", self.base);
        let uri: Uri = url.parse().map_err(|e| ClientError::BadUrl {
            url: url.clone(),
            why: format!("{e}"),
        })?;
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Transport {
                what: what.clone(),
                reason: format!("cannot build the request: {e}"),
            })?;
        let resp = self.http.request(req).await.map_err(|e| {
            if e.is_connect() {
                ClientError::Connect {
                    url: self.base.clone(),
                    reason: causes(&e),
                }
            } else {
                ClientError::Transport {
                    what: what.clone(),
                    reason: causes(&e),
                }
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = read_limited(resp.into_body(), ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        Err(ClientError::Api {
            what,
            status,
            message: error_text(&body),
            retry_after,
            has_token: self.token.is_some(),
        })
    }
}

/// A response's JSON body; `what` names the request in errors.
async fn read_json<T: DeserializeOwned>(
    what: String,
    resp: Response<Incoming>,
) -> Result<T, ClientError> {
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport {
            what: what.clone(),
            reason: format!("reading the answer: {}", causes(&e)),
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// A response body read chunk by chunk.
pub struct Stream {
    what: String,
    body: Incoming,
}

impl Stream {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(ClientError::Transport {
                        what: self.what.clone(),
                        reason: format!("reading the output: {}", causes(&e)),
                    })
                }
            }
        }
    }
}

/// Reads at most `limit` bytes of a body (an error's; never a job's output).
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data[..data.len().min(limit - out.len())]);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The server's `{"error": "..."}` text, or the body as it is when it is not that.
pub fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
        return e.error;
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        "(no error text)".to_string()
    } else {
        text
    }
}

/// An error and its causes in one line, without repeats (hyper's own messages are
/// terse, "client error (Connect)"; the useful part is often the io error under it).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return "connection refused".to_string();
            }
        }
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// `http://host:port[/prefix]` without a trailing slash; a bare `host:port` means
/// http. Only plain HTTP: the server speaks nothing else.
pub fn normalize_base(url: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let full = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = full.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(bad(&format!(
                "{other}:// is not supported; warmpool serve speaks plain http://"
            )))
        }
        None => return Err(bad("no scheme")),
    }
    if uri.authority().is_none() {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("a query has no place in it"));
    }
    Ok(full)
}

/// `s` as one URL path segment or query value: unreserved bytes as they are,
/// everything else percent-encoded.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?k=v&...` of the pairs whose value is set; empty when none is.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized_or_refused() {
        let ok = |u: &str| normalize_base(u).unwrap();
        assert_eq!(ok("http://127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(ok("http://127.0.0.1:7070/"), "http://127.0.0.1:7070");
        assert_eq!(ok("localhost:7070"), "http://localhost:7070");
        assert_eq!(ok("http://h/prefix/"), "http://h/prefix");
        let err = |u: &str| normalize_base(u).unwrap_err().to_string();
        assert!(
            err("https://h").contains("plain http"),
            "{}",
            err("https://h")
        );
        assert!(err("").contains("empty"));
        assert!(err("http://h?x=1").contains("query"));
        assert!(err("http://exa mple").contains("for example http://"));
    }

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(encode("j-1_a.b~"), "j-1_a.b~");
        assert_eq!(encode("a/b c&d=é"), "a%2Fb%20c%26d%3D%C3%A9");
        assert_eq!(query(&[("a", None), ("b", None)]), "");
        assert_eq!(
            query(&[
                ("state", Some("failed".into())),
                ("profile", None),
                ("limit", Some("5".into()))
            ]),
            "?state=failed&limit=5"
        );
    }

    #[test]
    fn the_servers_error_text_is_quoted() {
        assert_eq!(error_text(br#"{"error":"no job \"x\""}"#), "no job \"x\"");
        assert_eq!(error_text(b"ready?\n"), "ready?");
        assert_eq!(error_text(b""), "(no error text)");
    }

    #[test]
    fn api_errors_say_what_to_do() {
        let e = |status, retry_after, has_token| {
            ClientError::Api {
                what: "POST http://h/v1/jobs".into(),
                status,
                message: "nope".into(),
                retry_after,
                has_token,
            }
            .to_string()
        };
        assert_eq!(
            e(StatusCode::BAD_REQUEST, None, false),
            "POST http://h/v1/jobs: the server answered 400 Bad Request: nope"
        );
        assert!(e(StatusCode::UNAUTHORIZED, None, false)
            .ends_with("(WARMPOOL_API_TOKEN is not set here)"));
        assert!(e(StatusCode::UNAUTHORIZED, None, true).ends_with("nope"));
        assert!(e(StatusCode::TOO_MANY_REQUESTS, Some(1), true).ends_with("(retry after 1 s)"));
    }

    #[tokio::test]
    async fn a_refused_connection_asks_whether_the_server_runs() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let e = c
            .get_json::<serde_json::Value>("/v1/pools")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "cannot connect to http://127.0.0.1:{port}: connection refused; \
                 is `warmpool serve` running at http://127.0.0.1:{port}?"
            )
        );
    }
}
