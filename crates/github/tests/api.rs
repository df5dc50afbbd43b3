//! The REST client against a fake GitHub on 127.0.0.1: what it sends (path,
//! headers, token, body) and how it rides out 5xx, rate limits and dead ports.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use warmpool_github::{ApiError, GitHubClient, Reaction, ReactionTarget, RepoName, RetryPolicy};

const TOKEN: &str = "ghs_test_token_123";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    accept: Option<String>,
    user_agent: Option<String>,
    api_version: Option<String>,
    body: Value,
    at: Instant,
}

/// One scripted answer.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body,
    }
}

fn answer_with(status: u16, headers: &[(&'static str, &str)], body: Value) -> Answer {
    Answer {
        status,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body,
    }
}

/// A fake GitHub that answers from a script (then 500s) and records every request.
struct FakeGitHub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeGitHub {
    async fn start(script: Vec<Answer>) -> FakeGitHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorder = recorder.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let recorder = recorder.clone();
                        let script = script.clone();
                        async move {
                            record(&recorder, request).await;
                            let next = script.lock().unwrap().pop_front();
                            let next = next.unwrap_or_else(|| {
                                answer(500, json!({"message": "script ran out"}))
                            });
                            let mut response =
                                Response::new(Full::new(Bytes::from(next.body.to_string())));
                            *response.status_mut() = next.status.try_into().unwrap();
                            for (name, value) in next.headers {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeGitHub { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client(&self) -> GitHubClient {
        GitHubClient::with_base_url(&self.url(), TOKEN)
            .unwrap()
            .with_retry(quick_retries())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(recorder: &Mutex<Vec<Seen>>, request: Request<Incoming>) {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let mut seen = Seen {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        authorization: header("authorization"),
        accept: header("accept"),
        user_agent: header("user-agent"),
        api_version: header("x-github-api-version"),
        body: Value::Null,
        at: Instant::now(),
    };
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    if !bytes.is_empty() {
        seen.body = serde_json::from_slice(&bytes).unwrap();
    }
    recorder.lock().unwrap().push(seen);
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        first_backoff: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

fn repo() -> RepoName {
    RepoName::parse("octo-org/hello.world").unwrap()
}

fn assert_sent_as_github_wants(seen: &Seen) {
    assert_eq!(
        seen.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(seen.accept.as_deref(), Some("application/vnd.github+json"));
    assert_eq!(seen.user_agent.as_deref(), Some("warmpool"));
    assert_eq!(seen.api_version.as_deref(), Some("2022-11-28"));
}

#[tokio::test]
async fn a_comment_is_posted_through_two_bad_gateways() {
    let github = FakeGitHub::start(vec![
        answer(502, json!({"message": "Bad Gateway"})),
        answer(502, json!({"message": "Bad Gateway"})),
        answer(201, json!({"id": 1})),
    ])
    .await;
    github
        .client()
        .post_comment(&repo(), 7, "Done: the test passes.")
        .await
        .unwrap();
    let seen = github.seen();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_sent_as_github_wants(request);
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            "/repos/octo-org/hello.world/issues/7/comments"
        );
        assert_eq!(request.body, json!({"body": "Done: the test passes."}));
    }
}

#[tokio::test]
async fn retry_after_on_a_403_is_waited_for() {
    let github = FakeGitHub::start(vec![
        answer_with(
            403,
            &[("retry-after", "1")],
            json!({"message": "You have exceeded a secondary rate limit"}),
        ),
        answer(201, json!({"id": 1})),
    ])
    .await;
    github
        .client()
        .post_comment(&repo(), 7, "hi")
        .await
        .unwrap();
    let seen = github.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
}

#[tokio::test]
async fn an_exhausted_rate_limit_waits_until_its_reset() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = (now + 1).to_string();
    let github = FakeGitHub::start(vec![
        answer_with(
            429,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            json!({"message": "API rate limit exceeded"}),
        ),
        answer(201, json!({})),
    ])
    .await;
    let started = Instant::now();
    github
        .client()
        .add_reaction(&repo(), ReactionTarget::Issue(3), Reaction::Eyes)
        .await
        .unwrap();
    assert_eq!(github.seen().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_rate_limit_reset_too_far_away_fails_at_once() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = (now + 3600).to_string();
    let github = FakeGitHub::start(vec![answer_with(
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
        json!({"message": "API rate limit exceeded"}),
    )])
    .await;
    let error = github
        .client()
        .post_comment(&repo(), 7, "hi")
        .await
        .unwrap_err();
    assert!(matches!(error, ApiError::RateLimited { .. }), "{error}");
    assert!(
        error.to_string().contains("more than the 60 s allowed"),
        "{error}"
    );
    assert_eq!(github.seen().len(), 1);
}

#[tokio::test]
async fn reactions_go_to_each_targets_endpoint() {
    let github = FakeGitHub::start(vec![
        answer(201, json!({"id": 1, "content": "eyes"})),
        // 200: the reaction was already there; that is success too.
        answer(200, json!({"id": 1, "content": "eyes"})),
        answer(201, json!({"id": 2, "content": "eyes"})),
    ])
    .await;
    let client = github.client();
    for target in [
        ReactionTarget::IssueComment(492700400),
        ReactionTarget::ReviewComment(284312630),
        ReactionTarget::Issue(12),
    ] {
        client
            .add_reaction(&repo(), target, Reaction::Eyes)
            .await
            .unwrap();
    }
    let seen = github.seen();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/repos/octo-org/hello.world/issues/comments/492700400/reactions",
            "/repos/octo-org/hello.world/pulls/comments/284312630/reactions",
            "/repos/octo-org/hello.world/issues/12/reactions",
        ]
    );
    for request in &seen {
        assert_sent_as_github_wants(request);
        assert_eq!(request.method, "POST");
        assert_eq!(request.body, json!({"content": "eyes"}));
    }
}

#[tokio::test]
async fn a_404_is_a_clear_error_and_is_not_retried() {
    let github = FakeGitHub::start(vec![answer(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )])
    .await;
    let error = github
        .client()
        .post_comment(&repo(), 999, "hi")
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    let text = error.to_string();
    assert!(
        text.contains("POST /repos/octo-org/hello.world/issues/999/comments"),
        "{text}"
    );
    assert!(
        text.contains("404") && text.contains("\"Not Found\""),
        "{text}"
    );
    assert!(text.contains("check the repository"), "{text}");
    assert!(!text.contains(TOKEN));
    assert_eq!(github.seen().len(), 1);
}

#[tokio::test]
async fn a_plain_403_is_a_permission_error_and_is_not_retried() {
    let github = FakeGitHub::start(vec![answer(
        403,
        json!({"message": "Resource not accessible by integration"}),
    )])
    .await;
    let error = github
        .client()
        .post_comment(&repo(), 1, "hi")
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(403));
    assert!(error.to_string().contains("permission"), "{error}");
    assert_eq!(github.seen().len(), 1);
}

#[tokio::test]
async fn a_github_that_keeps_failing_is_given_up_after_four_attempts() {
    let github = FakeGitHub::start(Vec::new()).await;
    let error = github
        .client()
        .post_comment(&repo(), 1, "hi")
        .await
        .unwrap_err();
    let ApiError::Unavailable { attempts, last, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*attempts, 4);
    assert!(last.contains("500"), "{last}");
    let seen = github.seen();
    assert_eq!(seen.len(), 4);
    // Backoff doubles: 10, 20, 40 ms.
    assert!(seen[3].at - seen[0].at >= Duration::from_millis(70));
}

#[tokio::test]
async fn a_dead_port_is_retried_then_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = GitHubClient::with_base_url(&format!("http://{addr}"), TOKEN)
        .unwrap()
        .with_retry(quick_retries());
    let error = client.post_comment(&repo(), 1, "hi").await.unwrap_err();
    let ApiError::Unavailable { attempts, last, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*attempts, 4);
    assert!(last.to_lowercase().contains("connect"), "{last}");
    assert!(!error.to_string().contains(TOKEN));
}

#[tokio::test]
async fn the_pull_request_head_is_read_under_an_enterprise_prefix() {
    let github = FakeGitHub::start(vec![
        answer(
            200,
            json!({
                "number": 5,
                "head": {"ref": "fix-tests", "sha": "abc123", "repo": {"full_name": "someone/hello.world"}},
                "base": {"ref": "main"},
            }),
        ),
        answer(200, json!({"head": {"ref": "gone", "sha": "def456", "repo": null}})),
        answer(200, json!({"head": {"sha": "def456"}})),
    ])
    .await;
    let client = GitHubClient::with_base_url(&format!("{}/api/v3/", github.url()), TOKEN)
        .unwrap()
        .with_retry(quick_retries());
    let head = client.pull_request_head(&repo(), 5).await.unwrap();
    assert_eq!(head.branch, "fix-tests");
    assert_eq!(head.sha, "abc123");
    assert_eq!(
        head.repo,
        Some(RepoName::parse("someone/hello.world").unwrap())
    );
    let deleted_fork = client.pull_request_head(&repo(), 6).await.unwrap();
    assert_eq!(deleted_fork.repo, None);
    let error = client.pull_request_head(&repo(), 7).await.unwrap_err();
    assert!(
        matches!(
            error,
            ApiError::BadResponse {
                what: "head.ref",
                ..
            }
        ),
        "{error}"
    );

    let seen = github.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/api/v3/repos/octo-org/hello.world/pulls/5");
    assert_eq!(seen[0].body, Value::Null);
    assert_sent_as_github_wants(&seen[0]);
}

#[tokio::test]
async fn https_urls_speak_tls() {
    // A plain-HTTP server behind an https:// URL: the client must try a TLS
    // handshake (and fail it), never fall back to plain text with the token.
    let github = FakeGitHub::start(vec![answer(201, json!({}))]).await;
    let client = GitHubClient::with_base_url(&format!("https://{}", github.addr), TOKEN)
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 1,
            ..quick_retries()
        });
    let error = client.post_comment(&repo(), 1, "hi").await.unwrap_err();
    let ApiError::Unavailable { last, .. } = &error else {
        panic!("{error}");
    };
    assert!(last.contains("Connect"), "{last}");
    assert!(
        github.seen().is_empty(),
        "no HTTP request reached the server"
    );
}
