//! The GitHub bot as a GitHub App, end to end: an RSA key pair made for the
//! test, the real server and engine, and the GitHub stand-in playing the App
//! endpoints: it verifies every JWT with the public key (RS256, `iss`, at most
//! ten minutes), issues installation tokens that expire within the hour,
//! records what each was asked for, and answers the bot's other calls only for a
//! live installation token.

mod common;

use common::github::*;
use common::server::*;
use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APP_ID: u64 = 98765;
const INSTALLATION: u64 = 4242;

/// An RSA key pair in a directory of the test's own, removed when dropped.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    /// `names` key pairs: `<name>.pem` (PKCS#1, as GitHub hands them out) and `<name>.pub`.
    fn new(names: &[&str]) -> Keys {
        let dir = std::env::temp_dir().join(unique("appkeys"));
        std::fs::create_dir_all(&dir).unwrap();
        for name in names {
            let key = dir.join(format!("{name}.pem"));
            openssl(&["genrsa", "-traditional", "-out", path(&key), "2048"]);
            let public = dir.join(format!("{name}.pub"));
            openssl(&["rsa", "-in", path(&key), "-pubout", "-out", path(&public)]);
        }
        Keys { dir }
    }

    fn private(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn public(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(format!("{name}.pub"))).unwrap()
    }

    /// A line from the middle of the private key: it must appear in no log.
    fn secret_line(&self, name: &str) -> String {
        let pem = std::fs::read_to_string(self.private(name)).unwrap();
        pem.lines().nth(5).unwrap().to_string()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl(args: &[&str]) {
    // Installed when missing (Debian, as root); else tests/need.sh says what to do.
    static NEED: std::sync::Once = std::sync::Once::new();
    NEED.call_once(|| {
        let _ = Command::new("bash")
            .arg(repo_root().join("tests/need.sh"))
            .arg("openssl")
            .status();
    });
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One installation token the stand-in issued.
#[derive(Debug, Clone)]
struct Minted {
    token: String,
    installation: u64,
    repositories: Value,
    permissions: Value,
}

/// What the App endpoints of the stand-in saw.
#[derive(Default)]
struct AppLog {
    minted: Vec<Minted>,
    /// Tokens revoked with `DELETE /installation/token`.
    revoked: Vec<String>,
    /// JWTs refused, with why.
    refused: Vec<String>,
}

/// The App endpoints on `github`, checking JWTs against `public_key`.
fn play_the_app(github: &FakeGitHub, public_key: &[u8]) -> Arc<Mutex<AppLog>> {
    let log = Arc::new(Mutex::new(AppLog::default()));
    let key = DecodingKey::from_rsa_pem(public_key).unwrap();
    let expires_at = in_59_minutes();
    let seen = log.clone();
    github.route(move |r| {
        let path = r.path.split('?').next().unwrap_or_default();
        let bearer = r
            .auth
            .strip_prefix("Bearer ")
            .unwrap_or_default()
            .to_string();
        let mut log = seen.lock().unwrap();
        if let Some(rest) = path.strip_prefix("/app/installations/") {
            let installation = rest.strip_suffix("/access_tokens")?.parse().ok()?;
            if r.method != "POST" {
                return None;
            }
            if let Err(why) = verify_jwt(&bearer, &key) {
                log.refused.push(why);
                return Some((
                    401,
                    r#"{"message": "A JSON web token could not be decoded"}"#.into(),
                ));
            }
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            let minted = Minted {
                token: format!("ghs_{}", unique("t").replace('-', "")),
                installation,
                repositories: body["repositories"].clone(),
                permissions: body["permissions"].clone(),
            };
            let answer = json!({
                "token": minted.token,
                "expires_at": expires_at,
                "permissions": minted.permissions,
                "repository_selection": "selected",
            });
            log.minted.push(minted);
            return Some((201, answer.to_string()));
        }
        let live = log
            .minted
            .iter()
            .any(|m| m.token == bearer && !log.revoked.contains(&bearer));
        if r.method == "DELETE" && path == "/installation/token" {
            if !live {
                return Some((401, r#"{"message": "Bad credentials"}"#.into()));
            }
            log.revoked.push(bearer);
            return Some((204, String::new()));
        }
        // Everything else takes a live installation token, nothing else.
        (!live).then(|| (401, r#"{"message": "Bad credentials"}"#.into()))
    });
    log
}

/// Why `jwt` is not this App's (RS256 with the App's key, `iss` the App's id,
/// `exp` after `iat` by at most ten minutes, not expired).
fn verify_jwt(jwt: &str, key: &DecodingKey) -> Result<(), String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .map_err(|e| e.to_string())?
        .claims;
    if claims["iss"] != json!(APP_ID.to_string()) && claims["iss"] != json!(APP_ID) {
        return Err(format!("iss is {}", claims["iss"]));
    }
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    match (iat, exp) {
        (Some(iat), Some(exp)) if exp > iat && exp - iat <= 600 => Ok(()),
        _ => Err(format!("iat {iat:?}, exp {exp:?}")),
    }
}

/// GitHub's `expires_at` for a token issued now: 59 minutes on, in UTC.
fn in_59_minutes() -> String {
    let out = Command::new("date")
        .args(["-u", "-d", "+59 minutes", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The stand-in agent's fingerprint of a token.
fn short_sha(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(16)
        .collect()
}

fn app_keys(key_file: &Path) -> String {
    format!(
        "app_id = {APP_ID}\nprivate_key_file = \"{}\"\n",
        path(key_file)
    )
}

/// A mention by Codertocat on issue 1 of Codertocat/Hello-World, through the App's installation.
fn app_mention(text: &str) -> Vec<u8> {
    let mut p = example("issue_comment", "created");
    p["comment"]["body"] = text.into();
    p["installation"] = json!({ "id": INSTALLATION, "node_id": "x" });
    serde_json::to_vec(&p).unwrap()
}

fn answers(bot: &Bot, n: usize) -> Vec<Recorded> {
    bot.github.wait_for("answer comments", n, |r| {
        r.method == "POST" && r.path == "/repos/Codertocat/Hello-World/issues/1/comments"
    })
}

fn permissions(pairs: &[(&str, &str)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn a_mention_runs_with_a_token_for_that_one_repository() {
    let keys = Keys::new(&["app"]);
    let github = FakeGitHub::start(vec![]);
    let app = play_the_app(&github, &keys.public("app"));
    let bot = start_bot_with(BotSetup {
        authorized: "Codertocat",
        github_keys: &app_keys(&keys.private("app")),
        no_token: true,
        github: Some(github),
        ..BotSetup::default()
    });

    let started = Instant::now();
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-app-1",
        &app_mention("@ClaudeBot fix it"),
        None,
    );
    assert_eq!(code, 202, "{resp}\n{}", bot.server.log());
    let first = answers(&bot, 1);
    println!("first mention answered in {:?}", started.elapsed());
    let started = Instant::now();
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-app-2",
        &app_mention("@ClaudeBot and this"),
        None,
    );
    assert_eq!(code, 202, "{resp}");
    let both = answers(&bot, 2);
    println!("second mention answered in {:?}", started.elapsed());
    bot.github
        .wait_for("two eyes reactions", 2, |r| r.path.contains("/reactions"));
    // The answer is posted after the revocation: both are in.
    let app = app.lock().unwrap();
    println!(
        "minted {} tokens, revoked {}",
        app.minted.len(),
        app.revoked.len()
    );
    assert!(app.refused.is_empty(), "{:?}", app.refused);

    let mention = permissions(&[
        ("contents", "write"),
        ("issues", "write"),
        ("pull_requests", "write"),
    ]);
    let (jobs, own): (Vec<&Minted>, Vec<&Minted>) =
        app.minted.iter().partition(|m| m.permissions == mention);
    // Every token: the delivery's installation, the one repository.
    for m in &app.minted {
        assert_eq!(m.installation, INSTALLATION, "{m:?}");
        assert_eq!(m.repositories, json!(["Hello-World"]), "{m:?}");
    }
    // Each job its own token, with exactly that token in its GITHUB_TOKEN.
    assert_eq!(jobs.len(), 2, "{:?}", app.minted);
    assert_ne!(jobs[0].token, jobs[1].token);
    for (answer, job) in [&first[0], &both[1]].into_iter().zip(&jobs) {
        let want = format!(
            "token-length: {} sha256: {}",
            job.token.len(),
            short_sha(&job.token)
        );
        assert!(answer.body.contains(&want), "{want} in {}", answer.body);
        assert!(
            !answer.body.contains(&job.token),
            "the token itself in the answer"
        );
    }
    // ...revoked when the job ended.
    let job_tokens: Vec<String> = jobs.iter().map(|m| m.token.clone()).collect();
    assert_eq!(app.revoked, job_tokens);

    // The bot's own calls: one token of its own, minted once for both
    // deliveries, with what the bot needs and no more.
    assert_eq!(own.len(), 1, "reused across deliveries: {:?}", app.minted);
    assert_eq!(
        own[0].permissions,
        permissions(&[
            ("contents", "read"),
            ("issues", "write"),
            ("pull_requests", "write"),
        ])
    );
    let own_auth = format!("Bearer {}", own[0].token);
    let calls: Vec<Recorded> = bot
        .github
        .requests()
        .into_iter()
        .filter(|r| !r.path.starts_with("/app/") && r.path != "/installation/token")
        .collect();
    assert!(calls.len() >= 4, "two reactions, two answers: {calls:?}");
    for r in &calls {
        assert_eq!(
            r.auth, own_auth,
            "the bot's own token, never the JWT or a PAT: {r:?}"
        );
    }
    // The App endpoints saw the JWT, nothing else.
    for r in bot.github.requests() {
        if r.path.starts_with("/app/") {
            assert!(r.auth.starts_with("Bearer eyJ"), "a JWT: {r:?}");
        }
        assert!(!r.auth.contains(&bot.token), "no personal token: {r:?}");
    }
    let log = bot.server.log();
    for m in &app.minted {
        assert!(!log.contains(&m.token), "a token in the log");
    }
    assert!(
        !log.contains(&keys.secret_line("app")),
        "the key in the log"
    );
}

#[test]
fn a_key_github_refuses_fails_the_job_and_shows_no_key() {
    // The environment's key file wins over the config's: the wrong one.
    let keys = Keys::new(&["app", "other"]);
    let github = FakeGitHub::start(vec![]);
    let app = play_the_app(&github, &keys.public("app"));
    let bot = start_bot_with(BotSetup {
        authorized: "Codertocat",
        github_keys: &app_keys(&keys.private("app")),
        env: vec![(
            "GITHUB_APP_PRIVATE_KEY_FILE",
            path(&keys.private("other")).to_string(),
        )],
        no_token: true,
        github: Some(github),
        ..BotSetup::default()
    });
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-wrong",
        &app_mention("@ClaudeBot fix it"),
        None,
    );
    assert_eq!(code, 202, "{resp}\n{}", bot.server.log());
    let job = json(&resp)["job"].as_str().unwrap().to_string();
    bot.server.wait_state(&job, "failed");
    let record = json(&bot.server.get(&format!("/v1/jobs/{job}")).1);
    let error = record["error"].as_str().unwrap_or_default();
    println!("the job's error: {error}");
    assert!(
        error.contains("installation token") && error.contains("401"),
        "{record}"
    );
    assert!(record["started_ms"].is_null(), "it never ran: {record}");

    let app = app.lock().unwrap();
    assert!(app.minted.is_empty(), "{:?}", app.minted);
    assert!(!app.refused.is_empty(), "the stand-in saw the JWT");
    println!("JWTs refused: {:?}", app.refused);
    // No call got past the App endpoints: nothing was posted.
    let others: Vec<Recorded> = bot
        .github
        .requests()
        .into_iter()
        .filter(|r| !r.path.starts_with("/app/"))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    // Still up, the failure logged, no key shown.
    assert_eq!(bot.server.get("/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bot.server.log().contains("posting the answer failed") {
        assert!(Instant::now() < deadline, "{}", bot.server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = bot.server.log();
    assert!(
        log.contains("minting a GitHub App installation token"),
        "{log}"
    );
    for name in ["app", "other"] {
        assert!(!log.contains(&keys.secret_line(name)), "the key in the log");
    }
}

#[test]
fn a_delivery_without_an_installation_starts_nothing() {
    let keys = Keys::new(&["app"]);
    let github = FakeGitHub::start(vec![]);
    let app = play_the_app(&github, &keys.public("app"));
    let bot = start_bot_with(BotSetup {
        authorized: "Codertocat",
        github_keys: &app_keys(&keys.private("app")),
        no_token: true,
        github: Some(github),
        ..BotSetup::default()
    });
    // GitHub's example comes from a repository's own webhook: no installation.
    let body = mention("issue_comment", "created", "@ClaudeBot fix it");
    let (code, resp) = bot.deliver("issue_comment", "d-noinst", &body, None);
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("installation"), "{resp}");
    assert!(bot.jobs().is_empty(), "{:?}", bot.jobs());
    // With one, the same comment runs (the deliveries are answered in order).
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-inst",
        &app_mention("@ClaudeBot fix it"),
        None,
    );
    assert_eq!(code, 202, "{resp}");
    answers(&bot, 1);
    assert_eq!(bot.jobs().len(), 1);
    assert!(app.lock().unwrap().refused.is_empty());
}
