//! The GitHub REST client: the three calls the bot makes (react, comment, read a
//! pull request's head), with retries on 5xx and connection errors and waits on
//! rate limits. It owns the token and never logs it; it makes no decisions.

use crate::event::ReactionTarget;
use crate::repo::{shorten, RepoName};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER,
    USER_AGENT,
};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const DEFAULT_BASE_URL: &str = "https://api.github.com";
const API_VERSION: &str = "2022-11-28";
/// GitHub's answers to these calls are a few KiB; more is not GitHub.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

const X_GITHUB_API_VERSION: HeaderName = HeaderName::from_static("x-github-api-version");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// How hard to try before giving up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each next one.
    pub first_backoff: Duration,
    /// The longest rate-limit wait accepted; a longer one fails at once.
    pub max_rate_limit_wait: Duration,
    /// One attempt with no answer by then counts as a connection error.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(500),
            max_rate_limit_wait: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// The reactions GitHub offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    PlusOne,
    MinusOne,
    Laugh,
    Confused,
    Heart,
    Hooray,
    Rocket,
    Eyes,
}

impl Reaction {
    pub fn as_str(self) -> &'static str {
        match self {
            Reaction::PlusOne => "+1",
            Reaction::MinusOne => "-1",
            Reaction::Laugh => "laugh",
            Reaction::Confused => "confused",
            Reaction::Heart => "heart",
            Reaction::Hooray => "hooray",
            Reaction::Rocket => "rocket",
            Reaction::Eyes => "eyes",
        }
    }
}

/// Where a pull request's changes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestHead {
    pub branch: String,
    pub sha: String,
    /// The repository the branch is in: another one for a pull request from a
    /// fork, `None` if that fork has been deleted.
    pub repo: Option<RepoName>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the GitHub API URL {url:?} is not usable: {problem}")]
    BaseUrl { url: String, problem: &'static str },
    #[error("the GitHub token cannot go in a header: it has characters no token has (spaces, newlines?)")]
    BadToken,
    #[error("could not set up TLS for the GitHub API: {0}")]
    Tls(String),
    #[error("{request}: GitHub answered {status}{message}; {hint}")]
    Status {
        request: String,
        status: u16,
        /// GitHub's own `message`, if it gave one, quoted and shortened.
        message: String,
        hint: &'static str,
    },
    #[error("{request}: GitHub's rate limit would have us wait {} s, more than the {} s allowed; try again later", wait.as_secs(), max.as_secs())]
    RateLimited {
        request: String,
        wait: Duration,
        max: Duration,
    },
    #[error("{request}: gave up after {attempts} attempts; the last one: {last}")]
    Unavailable {
        request: String,
        attempts: u32,
        last: String,
    },
    #[error("{request}: GitHub's answer lacks {what}")]
    BadResponse { request: String, what: &'static str },
}

impl ApiError {
    /// The HTTP status GitHub answered, for errors that carry one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A GitHub REST API client with one token. Cheap to clone.
#[derive(Clone)]
pub struct GitHubClient {
    /// Scheme, host and path prefix (`/api/v3` on Enterprise), no trailing `/`.
    base: String,
    authorization: HeaderValue,
    http: HttpClient,
    retry: RetryPolicy,
}

// Shows no token.
impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("base", &self.base)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl GitHubClient {
    /// A client for api.github.com.
    pub fn new(token: &str) -> Result<GitHubClient, ApiError> {
        GitHubClient::with_base_url(DEFAULT_BASE_URL, token)
    }

    /// A client for another API root: GitHub Enterprise Server's
    /// `https://HOST/api/v3`, or a test server. `http://` is accepted too.
    pub fn with_base_url(base_url: &str, token: &str) -> Result<GitHubClient, ApiError> {
        let base = base_url.trim_end_matches('/').to_string();
        let bad = |problem| ApiError::BaseUrl {
            url: base_url.to_string(),
            problem,
        };
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) {
            return Err(bad("it must start with https:// (or http://)"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if uri.query().is_some() || base.contains('#') {
            return Err(bad("it must not have a query or fragment"));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError::BadToken)?;
        authorization.set_sensitive(true);

        let provider = rustls::crypto::ring::default_provider();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| ApiError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(GitHubClient {
            base,
            authorization,
            http,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> GitHubClient {
        self.retry = retry;
        self
    }

    /// React to the comment or issue that carried a command (`Eyes`: "seen").
    pub async fn add_reaction(
        &self,
        repo: &RepoName,
        target: ReactionTarget,
        reaction: Reaction,
    ) -> Result<(), ApiError> {
        let path = match target {
            ReactionTarget::IssueComment(id) => {
                format!("/repos/{repo}/issues/comments/{id}/reactions")
            }
            ReactionTarget::ReviewComment(id) => {
                format!("/repos/{repo}/pulls/comments/{id}/reactions")
            }
            ReactionTarget::Issue(number) => format!("/repos/{repo}/issues/{number}/reactions"),
        };
        self.send(
            Method::POST,
            &path,
            Some(json!({ "content": reaction.as_str() })),
        )
        .await
        .map(drop)
    }

    /// Post `body` as a comment on issue or pull request `issue_number`.
    pub async fn post_comment(
        &self,
        repo: &RepoName,
        issue_number: u64,
        body: &str,
    ) -> Result<(), ApiError> {
        let path = format!("/repos/{repo}/issues/{issue_number}/comments");
        self.send(Method::POST, &path, Some(json!({ "body": body })))
            .await
            .map(drop)
    }

    /// The head branch (and its repository) of pull request `number`.
    pub async fn pull_request_head(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<PullRequestHead, ApiError> {
        let path = format!("/repos/{repo}/pulls/{number}");
        let answer = self.send(Method::GET, &path, None).await?;
        let bad = |what| ApiError::BadResponse {
            request: format!("GET {path}"),
            what,
        };
        let pull: Value = serde_json::from_slice(&answer).map_err(|_| bad("a JSON body"))?;
        let text = |at| pull.pointer(at).and_then(Value::as_str);
        let branch = text("/head/ref").ok_or_else(|| bad("head.ref"))?;
        let sha = text("/head/sha").ok_or_else(|| bad("head.sha"))?;
        let head_repo = match pull.pointer("/head/repo/full_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                Some(RepoName::parse(name).map_err(|_| bad("a valid head.repo.full_name"))?)
            }
            Some(_) => return Err(bad("a valid head.repo.full_name")),
        };
        Ok(PullRequestHead {
            branch: branch.to_string(),
            sha: sha.to_string(),
            repo: head_repo,
        })
    }

    /// One call, retried as [`RetryPolicy`] says; the body of a 2xx answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Bytes, ApiError> {
        let request_name = format!("{method} {path}");
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|_| ApiError::BaseUrl {
                url: self.base.clone(),
                problem: "it does not make a URL with the request's path",
            })?;
        // `Value`'s Display is its JSON and cannot fail.
        let body = body.map(|value| Bytes::from(value.to_string()));
        let attempts = self.retry.attempts.max(1);
        let mut backoff = self.retry.first_backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let request = self.request(&method, &uri, body.clone());
            let answer =
                tokio::time::timeout(self.retry.attempt_timeout, self.exchange(request)).await;
            let wait = match answer {
                Err(_) => {
                    last = format!(
                        "no answer within {} s",
                        self.retry.attempt_timeout.as_secs_f32()
                    );
                    next_backoff(&mut backoff)
                }
                Ok(Err(transport)) => {
                    last = transport;
                    next_backoff(&mut backoff)
                }
                Ok(Ok((status, _, body))) if status.is_success() => return Ok(body),
                Ok(Ok((status, _, body))) if status.is_server_error() => {
                    last = format!("GitHub answered {status}{}", github_message(&body));
                    next_backoff(&mut backoff)
                }
                Ok(Ok((status, headers, body)))
                    if status == StatusCode::FORBIDDEN
                        || status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    last = format!("GitHub answered {status}{}", github_message(&body));
                    match rate_limit_wait(&headers, SystemTime::now()) {
                        Some(wait) if wait > self.retry.max_rate_limit_wait => {
                            return Err(ApiError::RateLimited {
                                request: request_name,
                                wait,
                                max: self.retry.max_rate_limit_wait,
                            });
                        }
                        Some(wait) => wait,
                        // A 429 without a time to wait: back off as for a 5xx.
                        None if status == StatusCode::TOO_MANY_REQUESTS => {
                            next_backoff(&mut backoff)
                        }
                        // A plain 403 is a permission problem; waiting will not fix it.
                        None => return Err(status_error(request_name, status, &body)),
                    }
                }
                Ok(Ok((status, _, body))) => return Err(status_error(request_name, status, &body)),
            };
            if attempt < attempts {
                tracing::warn!(
                    request = %request_name,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    reason = %last,
                    "GitHub API call failed; trying again"
                );
                tokio::time::sleep(wait).await;
            }
        }
        Err(ApiError::Unavailable {
            request: request_name,
            attempts,
            last,
        })
    }

    fn request(&self, method: &Method, uri: &Uri, body: Option<Bytes>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body.clone().unwrap_or_default()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(USER_AGENT, HeaderValue::from_static("warmpool"));
        headers.insert(X_GITHUB_API_VERSION, HeaderValue::from_static(API_VERSION));
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request
    }

    /// Send one request and read the whole answer; a transport error is described.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let response = self.http.request(request).await.map_err(|e| describe(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

fn next_backoff(backoff: &mut Duration) -> Duration {
    let wait = *backoff;
    *backoff = backoff.saturating_mul(2);
    wait
}

/// How long GitHub asks us to wait: `Retry-After` seconds, or until
/// `X-RateLimit-Reset` when `X-RateLimit-Remaining` is 0. `None` if neither.
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let number = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = number(RETRY_AFTER) {
        return Some(Duration::from_secs(seconds));
    }
    if number(X_RATELIMIT_REMAINING) == Some(0) {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let reset = number(X_RATELIMIT_RESET)?;
        // At least a second: the reset time is rounded down to whole seconds.
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    None
}

fn status_error(request: String, status: StatusCode, body: &[u8]) -> ApiError {
    let hint = match status.as_u16() {
        401 => "check the token: it is wrong, expired or revoked",
        403 => "the token lacks a permission (the bot needs issues and pull requests: write)",
        404 => {
            "not found: check the repository and number, and that the token can see the repository"
        }
        410 => "gone: issues may be disabled on this repository",
        422 => "GitHub refused the request's content",
        _ => "see GitHub's message",
    };
    ApiError::Status {
        request,
        status: status.as_u16(),
        message: github_message(body),
        hint,
    }
}

/// `: "<GitHub's message>"` from an error answer's JSON, or nothing.
fn github_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(Value::as_str)
                .map(|m| shorten(m, 200))
        })
        .map_or_else(String::new, |m| format!(": {m:?}"))
}

/// The error and its causes on one line ("client error (Connect): tcp connect error: ...").
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn rate_limit_waits_come_from_the_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(
                &headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1030")
                ]),
                now
            ),
            Some(Duration::from_secs(30))
        );
        // A reset already past still waits a moment.
        assert_eq!(
            rate_limit_wait(
                &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "900")]),
                now
            ),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            rate_limit_wait(
                &headers(&[
                    ("x-ratelimit-remaining", "12"),
                    ("x-ratelimit-reset", "1030")
                ]),
                now
            ),
            None
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "soon")]), now),
            None
        );
        assert_eq!(rate_limit_wait(&HeaderMap::new(), now), None);
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(GitHubClient::with_base_url("https://ghe.example.com/api/v3/", "t").is_ok());
        assert!(GitHubClient::with_base_url("http://127.0.0.1:8080", "t").is_ok());
        for bad in [
            "",
            "api.github.com",
            "ftp://x",
            "https://x/?q=1",
            "https:///path",
        ] {
            assert!(
                matches!(
                    GitHubClient::with_base_url(bad, "t"),
                    Err(ApiError::BaseUrl { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            GitHubClient::new("tok\nen"),
            Err(ApiError::BadToken)
        ));
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let client = GitHubClient::new("ghp_secret123").unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("ghp_secret123"), "{shown}");
        assert!(shown.contains("api.github.com"), "{shown}");
    }

    #[test]
    fn github_messages_are_quoted_and_short() {
        assert_eq!(
            github_message(br#"{"message":"Not Found"}"#),
            r#": "Not Found""#
        );
        assert_eq!(github_message(b"<html>"), "");
        assert!(
            github_message(format!(r#"{{"message":"{}"}}"#, "x".repeat(1000)).as_bytes()).len()
                < 220
        );
    }
}
