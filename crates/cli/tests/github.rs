//! The GitHub bot end to end: GitHub's documented example payloads, signed with a
//! test secret, to the real server and engine; a local HTTP server stands in for
//! the GitHub API (it records every request and checks the token); the stand-in
//! agent image runs the job.

mod common;

use common::github::*;
use common::server::*;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn a_mention_reacts_runs_the_agent_and_answers() {
    let bot = start_bot("Codertocat", vec![502, 502]);
    let body = mention(
        "issue_comment",
        "created",
        "@ClaudeBot please fix the broken test",
    );
    let (code, resp) = bot.deliver("issue_comment", "d-1", &body, None);
    assert_eq!(code, 202, "{resp}\n{}", bot.server.log());
    let job = json(&resp)["job"].as_str().unwrap().to_string();
    // The eyes reaction on the comment.
    let reactions = bot
        .github
        .wait_for("eyes reaction", 1, |r| r.path.contains("/reactions"));
    assert!(
        reactions[0]
            .path
            .starts_with("/repos/Codertocat/Hello-World/issues/comments/"),
        "{:?}",
        reactions[0]
    );
    assert!(reactions[0].body.contains("eyes"));
    // GitHub answers 502 twice, then 201: three posts, the answer in each.
    let posts = bot.github.wait_for("answer comment", 3, |r| {
        r.method == "POST" && r.path.ends_with("/comments") && !r.path.contains("/issues/comments")
    });
    assert_eq!(posts.len(), 3, "{posts:?}");
    let answer = &posts[2].body;
    assert!(answer.contains("Answer for Codertocat/Hello-World#1 (pr=false, branch=, op=default): please fix the broken test"), "{answer}");
    assert!(
        answer.contains(&format!("token-length: {}", bot.token.len())),
        "{answer}"
    );
    for r in bot.github.requests() {
        assert_eq!(
            r.auth,
            format!("Bearer {}", bot.token),
            "the token on every call: {r:?}"
        );
        assert!(!r.body.contains(&bot.token), "the token in a request body");
    }
    // One job, with the right env (the agent wrote it back), succeeded.
    let jobs = bot.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], job.as_str());
    let j = json(&bot.server.get(&format!("/v1/jobs/{job}")).1);
    assert_eq!(j["state"], "succeeded", "{j}");
}

#[test]
fn redeliveries_start_nothing_even_after_a_restart() {
    let mut bot = start_bot("Codertocat", vec![]);
    let body = mention("issue_comment", "created", "@ClaudeBot summarize");
    assert_eq!(bot.deliver("issue_comment", "d-dup", &body, None).0, 202);
    let (code, resp) = bot.deliver("issue_comment", "d-dup", &body, None);
    assert_eq!(code, 200);
    assert!(resp.contains("duplicate"), "{resp}");
    bot.server.signal(15);
    bot.server.spawn();
    let (code, resp) = bot.deliver("issue_comment", "d-dup", &body, None);
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("duplicate"), "{resp}");
    assert_eq!(bot.jobs().len(), 1, "one job for one delivery");
}

#[test]
fn signatures_authors_and_bad_bodies() {
    let bot = start_bot("someone-else", vec![]);
    let body = mention("issue_comment", "created", "@ClaudeBot do it");
    // Missing and wrong signatures: 401, nothing else.
    let (code, _) = bot.deliver("issue_comment", "d-s1", &body, Some(""));
    assert_eq!(code, 401);
    let (code, _) = bot.deliver("issue_comment", "d-s2", &body, Some("sha256=0000"));
    assert_eq!(code, 401);
    // An unauthorized author gets a polite comment and no job.
    let (code, resp) = bot.deliver("issue_comment", "d-u", &body, None);
    assert_eq!(code, 200, "{resp}");
    let polite = bot.github.wait_for("polite comment", 1, |r| {
        r.method == "POST" && r.path.ends_with("/issues/1/comments")
    });
    assert!(polite[0].body.contains("Codertocat"), "{:?}", polite[0]);
    // Told once an hour per issue: neither a redelivery nor another mention
    // on the same issue posts a second refusal (counted at the end)...
    for delivery in ["d-u", "d-u2"] {
        let (code, resp) = bot.deliver("issue_comment", delivery, &body, None);
        assert_eq!(code, 200, "{resp}");
        assert!(resp.contains("already"), "{resp}");
    }
    // ...but a mention on another issue does.
    let mut elsewhere = example("issue_comment", "created");
    elsewhere["comment"]["body"] = "@ClaudeBot do it".into();
    elsewhere["issue"]["number"] = 2.into();
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-u3",
        &serde_json::to_vec(&elsewhere).unwrap(),
        None,
    );
    assert_eq!(code, 200, "{resp}");
    bot.github.wait_for("refusal on another issue", 1, |r| {
        r.method == "POST" && r.path.ends_with("/issues/2/comments")
    });
    // The bot's own comment is ignored.
    let mut own = example("issue_comment", "created");
    own["comment"]["body"] = "@ClaudeBot loop forever".into();
    own["comment"]["user"]["login"] = "ClaudeBot".into();
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-own",
        &serde_json::to_vec(&own).unwrap(),
        None,
    );
    assert_eq!(code, 200);
    assert!(resp.contains("ignored"), "{resp}");
    // A mention by the authorized author only in code or a quote: ignored.
    let mut shown = example("issue_comment", "created");
    shown["comment"]["body"] =
        "Type this:\n\n```\n@ClaudeBot do it\n```\n\n> @ClaudeBot do it too\n".into();
    shown["comment"]["user"]["login"] = "someone-else".into();
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-code",
        &serde_json::to_vec(&shown).unwrap(),
        None,
    );
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("ignored"), "{resp}");
    // Malformed JSON, signed: 400.
    let (code, _) = bot.deliver("issue_comment", "d-bad", b"{not json", None);
    assert_eq!(code, 400);
    // Ping.
    let (code, resp) = bot.deliver(
        "ping",
        "d-ping",
        br#"{"zen": "Keep it logically awesome."}"#,
        None,
    );
    assert_eq!(code, 200);
    assert!(resp.contains("pong"), "{resp}");
    // A 30 MB body: 413.
    let big = vec![b' '; 30 * 1024 * 1024];
    let (code, _) = bot.deliver("issue_comment", "d-big", &big, None);
    assert_eq!(code, 413);
    // Then one the bot must act on, from the authorized author: once its job has
    // run and been answered, the bot has handled every delivery before it, and
    // its job is the only one.
    let mut allowed = example("issue_comment", "created");
    allowed["comment"]["body"] = "@ClaudeBot the one that counts".into();
    allowed["comment"]["user"]["login"] = "someone-else".into();
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-ok",
        &serde_json::to_vec(&allowed).unwrap(),
        None,
    );
    assert_eq!(code, 202, "{resp}");
    let job = json(&resp)["job"].as_str().unwrap().to_string();
    bot.github
        .wait_for("answer to the authorized mention", 1, |r| {
            r.method == "POST" && r.body.contains("the one that counts")
        });
    let jobs: Vec<_> = bot.jobs().iter().map(|j| j["id"].clone()).collect();
    assert_eq!(jobs, [job.as_str()], "no job from any of the others");
    let refusals: Vec<_> = bot
        .github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.body.contains("only take commands"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        refusals,
        [
            "/repos/Codertocat/Hello-World/issues/1/comments",
            "/repos/Codertocat/Hello-World/issues/2/comments"
        ],
        "one refusal per issue"
    );
}

#[test]
fn a_pull_request_comment_runs_on_its_head_branch() {
    let bot = start_bot("Codertocat", vec![]);
    let mut p = example("issue_comment", "created");
    p["comment"]["body"] = "@ClaudeBot review this".into();
    p["issue"]["pull_request"] =
        serde_json::json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1"});
    let (code, resp) = bot.deliver(
        "issue_comment",
        "d-pr",
        &serde_json::to_vec(&p).unwrap(),
        None,
    );
    assert_eq!(code, 202, "{resp}");
    let posts = bot.github.wait_for("answer", 1, |r| {
        r.method == "POST" && r.path.ends_with("/issues/1/comments")
    });
    assert!(
        posts[0]
            .body
            .contains("(pr=true, branch=feature-x, op=default): review this"),
        "{:?}",
        posts[0]
    );
    assert!(bot
        .github
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with("/pulls/1")));
}

/// Two bot nodes on one PostgreSQL: the node running a bot job freezes past
/// its lease; the other takes the job over and answers; the frozen node,
/// thawed, kills its run, and must not answer a second time.
#[test]
fn a_job_taken_over_from_a_frozen_node_is_answered_once() {
    let pg = warmpool_testkit::postgres::PgCluster::start();
    let url = pg.create_database("botcluster");
    let github = FakeGitHub::start(vec![]);
    let token = unique("ghtoken");
    let config = format!(
        r#"
[profiles.agent]
image = "warmpool-test/agent:latest"
network = "none"
secret_env = ["GITHUB_TOKEN", "ANTHROPIC_API_KEY"]
labels = {{ "{TEST_LABEL}" = "@LABEL@" }}

[github]
bot_username = "ClaudeBot"
authorized_users = ["Codertocat"]
profile = "agent"
api_url = "{}"

[store]
url = "{url}"

[cluster]
node_timeout = "3s"
"#,
        github.url
    );
    let env = [
        ("GITHUB_WEBHOOK_SECRET", SECRET),
        ("GITHUB_TOKEN", token.as_str()),
        ("ANTHROPIC_API_KEY", "anthropic-test-key"),
    ];
    let a = Bot {
        server: Server::start(&config, &env),
        github,
        token: token.clone(),
    };
    let b = Server::start(&config, &env);
    let body = mention("issue_comment", "created", "@ClaudeBot sleep then answer");
    let (code, resp) = a.deliver("issue_comment", "d-frozen", &body, None);
    assert_eq!(code, 202, "{resp}");
    let job = json(&resp)["job"].as_str().unwrap().to_string();
    a.server.wait_state(&job, "running");
    let j = json(&a.server.get(&format!("/v1/jobs/{job}")).1);
    let (runner, other) = if j["node"] == a.server.instance.as_str() {
        (&a.server, &b)
    } else {
        (&b, &a.server)
    };
    let pid = runner.child.as_ref().unwrap().id().to_string();
    let stop = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
    };
    stop("-STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = json(&other.get(&format!("/v1/jobs/{job}")).1);
        if j["state"] == "interrupted" {
            break;
        }
        assert!(Instant::now() < deadline, "never taken over: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let is_answer = |r: &Recorded| {
        r.method == "POST" && r.path.ends_with("/comments") && !r.path.contains("/issues/comments")
    };
    a.github.wait_for("the answer", 1, is_answer);
    stop("-CONT");
    // The thawed node fences itself, kills its run and joins again.
    std::thread::sleep(Duration::from_secs(8));
    let answers: Vec<_> = a
        .github
        .requests()
        .into_iter()
        .filter(|r| is_answer(r))
        .collect();
    assert_eq!(answers.len(), 1, "answered more than once: {answers:?}");
}

/// Send the head of a POST to the webhook declaring `length` bytes of body,
/// then `send` of them; the status line of the answer, if one came within 10 s.
fn post_head(base: &str, signature: Option<&str>, length: usize, send: usize) -> Option<String> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sig = signature
        .map(|s| format!("X-Hub-Signature-256: {s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nX-GitHub-Event: issue_comment\r\nX-GitHub-Delivery: flood\r\n{sig}Content-Length: {length}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < send {
        let n = chunk.len().min(send - sent);
        if conn.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().map(str::to_string)
}

#[test]
fn unauthenticated_bytes_are_cheap_and_signed_deliveries_get_through() {
    let bot = start_bot("Codertocat", vec![]);
    let base = bot.server.base.clone();
    // No signature: refused before a byte of the (declared 24 MiB) body is read.
    let line = post_head(&base, None, 24 << 20, 0).expect("an answer without the body");
    assert!(line.contains(" 401"), "{line}");
    // Declared larger than GitHub ever sends: refused at once too.
    let bad = format!("sha256={}", "0".repeat(64));
    let line = post_head(&base, Some(&bad), 30 << 20, 0).expect("an answer without the body");
    assert!(line.contains(" 413"), "{line}");
    // A flood of wrongly signed 8 MiB bodies: each hashed and refused; a
    // signed delivery sent meanwhile is taken.
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let (base, bad) = (base.clone(), bad.clone());
            std::thread::spawn(move || post_head(&base, Some(&bad), 8 << 20, 8 << 20))
        })
        .collect();
    let body = mention("issue_comment", "created", "@ClaudeBot during a flood");
    let (code, resp) = bot.deliver("issue_comment", "d-flood", &body, None);
    assert_eq!(code, 202, "{resp}");
    for f in flood {
        let line = f.join().unwrap().expect("an answer to each flood post");
        assert!(line.contains(" 401"), "{line}");
    }
}
