//! The GitHub API stand-in and the bot's test harness, shared by the bot's
//! suites: a local HTTP server records every request and answers from routes a
//! test adds (first match wins), then from defaults (comments, reactions, a pull
//! request's head); a server runs the bot with the stand-in agent image.

use super::server::*;
use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-webhook-secret";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The `Authorization` header, as sent.
    pub auth: String,
    pub body: String,
}

/// A test's answer to a request: `None` leaves it to the next route.
pub type Route = Box<dyn Fn(&Recorded) -> Option<(u16, String)> + Send + Sync>;

/// The GitHub API stand-in: records requests; comment posts get `comment_statuses`
/// in turn (then 201); routes added with [`FakeGitHub::route`] answer first.
pub struct FakeGitHub {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    routes: Arc<Mutex<Vec<Route>>>,
}

impl FakeGitHub {
    pub fn start(comment_statuses: Vec<u16>) -> FakeGitHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes: Arc<Mutex<Vec<Route>>> = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(comment_statuses));
        let (recorded, answers) = (requests.clone(), routes.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (recorded, statuses, answers) =
                    (recorded.clone(), statuses.clone(), answers.clone());
                std::thread::spawn(move || serve_conn(conn, recorded, statuses, answers));
            }
        });
        FakeGitHub {
            url,
            requests,
            routes,
        }
    }

    /// Answer requests `f` takes (before earlier routes and the defaults).
    pub fn route(&self, f: impl Fn(&Recorded) -> Option<(u16, String)> + Send + Sync + 'static) {
        self.routes.lock().unwrap().insert(0, Box::new(f));
    }

    /// Answer `method` requests whose path (query stripped) is `path` with `status` and `body`.
    pub fn respond(&self, method: &str, path: &str, status: u16, body: &str) {
        let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
        self.route(move |r| {
            let p = r.path.split('?').next().unwrap_or_default();
            (r.method == method && p == path).then(|| (status, body.clone()))
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn wait_for(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found: Vec<_> = self.requests().into_iter().filter(|r| pred(r)).collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what}: {:?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve_conn(
    conn: std::net::TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
    routes: Arc<Mutex<Vec<Route>>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let (mut length, mut auth) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "authorization" => auth = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let request = Recorded {
            method: method.clone(),
            path: path.clone(),
            auth,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        recorded.lock().unwrap().push(request.clone());
        let routed = routes.lock().unwrap().iter().find_map(|f| f(&request));
        let (status, reply) = if let Some(answer) = routed {
            answer
        } else if path.contains("/comments") && method == "POST" && !path.contains("/reactions") {
            let s = {
                let mut q = statuses.lock().unwrap();
                if q.is_empty() {
                    201
                } else {
                    q.remove(0)
                }
            };
            (s, r#"{"id": 1}"#.to_string())
        } else if path.contains("/reactions") {
            (201, r#"{"id": 2, "content": "eyes"}"#.to_string())
        } else if method == "GET" && path.contains("/pulls/") {
            (200, r#"{"head": {"ref": "feature-x", "sha": "abc123", "repo": {"full_name": "Codertocat/Hello-World"}}}"#.to_string())
        } else {
            (404, r#"{"message": "Not Found"}"#.to_string())
        };
        let reason = match status {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            404 => "Not Found",
            502 => "Bad Gateway",
            _ => "Other",
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// An example payload of `event` with `action` from GitHub's documented examples.
pub fn example(event: &str, action: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/github-webhooks/api.github.com.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the webhook fixtures are missing at {}: {e}",
            path.display()
        )
    });
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == event)
        .flat_map(|e| e["examples"].as_array().unwrap().clone())
        .find(|ex| action.is_empty() || ex["action"] == action)
        .unwrap_or_else(|| panic!("no {event}.{action} example"))
}

pub struct Bot {
    pub server: Server,
    pub github: FakeGitHub,
    pub token: String,
}

/// The bot with `authorized` as its one authorized user, its comment posts
/// answered `comment_statuses` in turn.
pub fn start_bot(authorized: &str, comment_statuses: Vec<u16>) -> Bot {
    start_bot_with(BotSetup {
        authorized,
        comment_statuses,
        ..BotSetup::default()
    })
}

/// What a bot test may change; `..BotSetup::default()` for the rest.
#[derive(Default)]
pub struct BotSetup<'a> {
    pub authorized: &'a str,
    pub comment_statuses: Vec<u16>,
    /// More keys of `[github]`, TOML lines.
    pub github_keys: &'a str,
    /// More keys of `[profiles.agent]`, TOML lines.
    pub profile_keys: &'a str,
    /// The agent profile's `secret_env` (default GITHUB_TOKEN and ANTHROPIC_API_KEY).
    pub secret_env: Option<&'a [&'a str]>,
    /// More environment of the server (besides the webhook secret, GITHUB_TOKEN
    /// and ANTHROPIC_API_KEY).
    pub env: Vec<(&'a str, String)>,
    /// Leave GITHUB_TOKEN out of the server's environment (GitHub App auth).
    pub no_token: bool,
    /// Routes the stand-in has before the server starts.
    pub github: Option<FakeGitHub>,
}

pub fn start_bot_with(setup: BotSetup) -> Bot {
    let github = setup
        .github
        .unwrap_or_else(|| FakeGitHub::start(setup.comment_statuses));
    let token = unique("ghtoken");
    let secret_env = setup
        .secret_env
        .unwrap_or(&["GITHUB_TOKEN", "ANTHROPIC_API_KEY"])
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut env: Vec<(&str, &str)> = vec![
        ("GITHUB_WEBHOOK_SECRET", SECRET),
        ("ANTHROPIC_API_KEY", "anthropic-test-key"),
    ];
    if !setup.no_token {
        env.push(("GITHUB_TOKEN", &token));
    }
    for (k, v) in &setup.env {
        env.push((k, v.as_str()));
    }
    let server = Server::start(
        &format!(
            r#"
[profiles.agent]
image = "warmpool-test/agent:latest"
network = "none"
secret_env = [{secret_env}]
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}
{}

[github]
bot_username = "ClaudeBot"
authorized_users = ["{}"]
profile = "agent"
api_url = "{}"
{}
"#,
            setup.profile_keys, setup.authorized, github.url, setup.github_keys
        ),
        &env,
    );
    Bot {
        server,
        github,
        token,
    }
}

impl Bot {
    /// Deliver `payload` as `event` with `delivery`; `signature` overrides the real one.
    pub fn deliver(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> (u16, String) {
        let path = self.server.dir.join(unique("payload"));
        std::fs::write(&path, body).unwrap();
        let sig = match signature {
            Some(s) => s.to_string(),
            None => warmpool_github::sign(SECRET.as_bytes(), body),
        };
        let mut args = vec![
            "-X".to_string(),
            "POST".into(),
            "-H".into(),
            "Content-Type: application/json".into(),
            "-H".into(),
            format!("X-GitHub-Event: {event}"),
            "-H".into(),
            format!("X-GitHub-Delivery: {delivery}"),
            "--data-binary".into(),
            format!("@{}", path.display()),
        ];
        if !sig.is_empty() {
            args.push("-H".into());
            args.push(format!("X-Hub-Signature-256: {sig}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.server.curl(&args, "/webhooks/github");
        let _ = std::fs::remove_file(&path);
        out
    }

    pub fn jobs(&self) -> Vec<serde_json::Value> {
        json(&self.server.get("/v1/jobs?profile=agent").1)
            .as_array()
            .unwrap()
            .clone()
    }
}

/// A comment (or issue body) mentioning whatever `body` says, in GitHub's example
/// payload of `event` and `action`.
pub fn mention(event: &str, action: &str, body: &str) -> Vec<u8> {
    let mut p = example(event, action);
    if p.get("comment").is_some() {
        p["comment"]["body"] = body.into();
    } else {
        p["issue"]["body"] = body.into();
    }
    serde_json::to_vec(&p).unwrap()
}
