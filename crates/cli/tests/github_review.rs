//! The bot's own jobs end to end: auto-labelling opened issues and reviewing
//! pull requests whose checks pass (or on `@bot review`), with GitHub's example
//! payloads, the real server and engine, the stand-in agent, and the local
//! GitHub stand-in answering labels, pull requests, check suites and reviews.

mod common;

use common::github::*;
use common::server::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const REPO: &str = "/repos/Codertocat/Hello-World";
/// The head commit of every check_suite example.
const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

/// The stand-in with the repository's labels, label and review posts, and
/// pull request #2 (branch `changes`) at [`SHA`].
fn triage_github() -> FakeGitHub {
    let gh = FakeGitHub::start(vec![]);
    gh.route(|r| (r.method == "POST" && r.path.ends_with("/labels")).then(|| (200, "[]".into())));
    gh.route(|r| (r.method == "DELETE" && r.path.contains("/labels/")).then(|| (200, "[]".into())));
    gh.route(|r| {
        (r.method == "POST" && r.path.ends_with("/reviews")).then(|| (200, r#"{"id": 80}"#.into()))
    });
    gh.respond(
        "GET",
        &format!("{REPO}/labels"),
        200,
        r#"[{"name": "bug"}, {"name": "Documentation"}, {"name": "enhancement"}, {"name": "question"}]"#,
    );
    gh.respond(
        "GET",
        &format!("{REPO}/pulls/2"),
        200,
        &json!({"head": {"ref": "changes", "sha": SHA, "repo": {"full_name": "Codertocat/Hello-World"}}})
            .to_string(),
    );
    gh
}

/// Every check suite of [`SHA`], as (status, conclusion).
fn suites(gh: &FakeGitHub, suites: &[(&str, Option<&str>)]) {
    let list: Vec<Value> = suites
        .iter()
        .map(|(status, conclusion)| json!({"status": status, "conclusion": conclusion}))
        .collect();
    let body = json!({"total_count": list.len(), "check_suites": list}).to_string();
    gh.respond(
        "GET",
        &format!("{REPO}/commits/{SHA}/check-suites"),
        200,
        &body,
    );
}

fn bot_with(keys: &str, github: FakeGitHub) -> Bot {
    start_bot_with(BotSetup {
        authorized: "Codertocat",
        github_keys: keys,
        github: Some(github),
        ..BotSetup::default()
    })
}

fn reviews(bot: &Bot) -> Vec<Recorded> {
    bot.github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/reviews"))
        .collect()
}

/// Wait until the server's log has `needle` `n` times (it logs what it decided).
fn wait_log(bot: &Bot, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while bot.server.log().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "the log never said {needle:?} {n} times:\n{}",
            bot.server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn label_posts(bot: &Bot, issue: u64) -> Vec<Value> {
    bot.github
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == format!("{REPO}/issues/{issue}/labels"))
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

fn deliver(bot: &Bot, event: &str, delivery: &str, payload: &Value) -> (u16, String) {
    bot.deliver(event, delivery, &serde_json::to_vec(payload).unwrap(), None)
}

#[test]
fn an_opened_issue_gets_the_jobs_labels_that_the_repository_has() {
    let bot = bot_with("auto_label = true\n", triage_github());
    // "Spelling error in the README file": the stand-in picks bug and
    // documentation, and a label no repository has.
    let (code, resp) = deliver(&bot, "issues", "d-open", &example("issues", "opened"));
    assert_eq!(code, 202, "{resp}\n{}", bot.server.log());
    let started = Instant::now();
    bot.github.wait_for("labels applied", 1, |r| {
        r.method == "POST" && r.path == format!("{REPO}/issues/1/labels")
    });
    println!("labelled in {} ms", started.elapsed().as_millis());
    assert_eq!(
        label_posts(&bot, 1),
        vec![json!({"labels": ["bug", "Documentation"]})],
        "only labels the repository has, in its spelling"
    );
    // The stand-in exits 3 if it gets a GITHUB_TOKEN: it succeeded, so it had none.
    let jobs = bot.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0]["id"].as_str().unwrap();
    bot.server.wait_state(id, "succeeded");
    assert!(bot.server.log().contains("the job"), "{}", bot.server.log());
    // A redelivery labels nothing twice.
    let (code, _) = deliver(&bot, "issues", "d-open-2", &example("issues", "opened"));
    assert_eq!(code, 202);
    wait_log(&bot, "the issue is being labelled or was already", 1);
    assert_eq!(bot.jobs().len(), 1);
    assert_eq!(label_posts(&bot, 1).len(), 1);
}

#[test]
fn a_failing_auto_tag_job_falls_back_to_the_keyword_rules() {
    let bot = bot_with(
        "auto_label = true\n[github.label_rules]\nbug = [\"crashes\"]\nquestion = [\"why\"]\nnot-there = [\"start\"]\n",
        triage_github(),
    );
    let mut issue = example("issues", "opened");
    issue["issue"]["title"] = "Please fail: the app crashes on start".into();
    let (code, resp) = deliver(&bot, "issues", "d-fail", &issue);
    assert_eq!(code, 202, "{resp}");
    bot.github.wait_for("labels applied", 1, |r| {
        r.method == "POST" && r.path == format!("{REPO}/issues/1/labels")
    });
    assert_eq!(label_posts(&bot, 1), vec![json!({"labels": ["bug"]})]);
    let jobs = bot.jobs();
    assert_eq!(jobs[0]["state"], "failed", "{jobs:?}");
    assert!(bot.server.log().contains("the keyword rules"));
}

#[test]
fn green_checks_get_one_review_per_commit_across_suites_and_restarts() {
    let gh = triage_github();
    suites(
        &gh,
        &[
            ("completed", Some("success")),
            ("completed", Some("skipped")),
        ],
    );
    let mut bot = bot_with("review_on_checks = true\nreview_settle = \"100ms\"\n", gh);
    let suite = example("check_suite", "completed");
    assert_eq!(suite["check_suite"]["pull_requests"][0]["number"], 2);
    let (code, resp) = deliver(&bot, "check_suite", "d-cs-1", &suite);
    assert_eq!(code, 202, "{resp}\n{}", bot.server.log());
    let started = Instant::now();
    let posted = bot.github.wait_for("a review", 1, |r| {
        r.method == "POST" && r.path == format!("{REPO}/pulls/2/reviews")
    });
    println!(
        "reviewed {} ms after the delivery's answer (settle 100 ms)",
        started.elapsed().as_millis()
    );
    let review: Value = serde_json::from_str(&posted[0].body).unwrap();
    assert_eq!(review["commit_id"], SHA);
    assert_eq!(review["event"], "COMMENT");
    let text = review["body"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "Review of Codertocat/Hello-World#2 at {SHA} (branch=changes): looks fine"
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("\n\nReviewed at commit {SHA}")),
        "{text}"
    );
    // Labels: in progress on, then off, then complete on.
    bot.github.wait_for("the complete label", 1, |r| {
        r.body.contains("claude-review-complete")
    });
    let labels: Vec<String> = bot
        .github
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&format!("{REPO}/issues/2/labels")))
        .map(|r| format!("{} {} {}", r.method, r.path, r.body))
        .collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(
        labels[0].starts_with("POST") && labels[0].contains("claude-review-in-progress"),
        "{labels:?}"
    );
    assert!(
        labels[1].starts_with("DELETE")
            && labels[1].ends_with("/labels/claude-review-in-progress "),
        "{labels:?}"
    );
    assert!(
        labels[2].starts_with("POST") && labels[2].contains("claude-review-complete"),
        "{labels:?}"
    );

    // Another suite of the same commit completes: no second review.
    let (code, _) = deliver(&bot, "check_suite", "d-cs-2", &suite);
    assert_eq!(code, 202);
    wait_log(&bot, "this commit is reviewed already", 1);
    // A redelivery after a restart: none either.
    bot.server.signal(15);
    bot.server.spawn();
    let (code, resp) = deliver(&bot, "check_suite", "d-cs-1", &suite);
    assert_eq!(code, 202, "{resp}");
    wait_log(&bot, "this commit is reviewed already", 2);
    assert_eq!(reviews(&bot).len(), 1, "one review per commit");
    assert_eq!(bot.jobs().len(), 1);
}

#[test]
fn a_pull_request_from_a_fork_is_found_by_its_head_sha() {
    let gh = triage_github();
    suites(&gh, &[("completed", Some("success"))]);
    gh.respond(
        "GET",
        &format!("{REPO}/pulls"),
        200,
        &json!([
            {"number": 8, "head": {"sha": "0123456789012345678901234567890123456789"}},
            {"number": 7, "head": {"sha": SHA, "repo": {"full_name": "forker/Hello-World"}}},
        ])
        .to_string(),
    );
    gh.respond(
        "GET",
        &format!("{REPO}/pulls/7"),
        200,
        &json!({"head": {"ref": "fork-fix", "sha": SHA, "repo": {"full_name": "forker/Hello-World"}}})
            .to_string(),
    );
    let bot = bot_with("review_on_checks = true\nreview_settle = \"50ms\"\n", gh);
    let mut suite = example("check_suite", "completed");
    suite["check_suite"]["pull_requests"] = json!([]);
    // Two suites of the commit complete together: both checks run, one review.
    let (code, resp) = deliver(&bot, "check_suite", "d-fork", &suite);
    assert_eq!(code, 202, "{resp}");
    let (code, resp) = deliver(&bot, "check_suite", "d-fork-2", &suite);
    assert_eq!(code, 202, "{resp}");
    let posted = bot.github.wait_for("the fork's review", 1, |r| {
        r.method == "POST" && r.path.ends_with("/reviews")
    });
    wait_log(&bot, "this commit is reviewed already", 1);
    assert_eq!(reviews(&bot).len(), 1, "one review for two suites");
    assert_eq!(posted[0].path, format!("{REPO}/pulls/7/reviews"));
    assert!(
        posted[0].body.contains("branch=fork-fix"),
        "{}",
        posted[0].body
    );
    let listed = bot
        .github
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path.starts_with(&format!("{REPO}/pulls?")))
        .expect("the open pulls were listed");
    assert!(
        listed.path.contains("state=open") && listed.path.contains("per_page=100"),
        "{listed:?}"
    );
}

#[test]
fn failed_or_running_suites_hold_the_review_until_all_pass() {
    let gh = triage_github();
    suites(
        &gh,
        &[
            ("completed", Some("success")),
            ("completed", Some("failure")),
        ],
    );
    let bot = bot_with("review_on_checks = true\nreview_settle = \"50ms\"\n", gh);
    let suite = example("check_suite", "completed");
    assert_eq!(deliver(&bot, "check_suite", "d-red", &suite).0, 202);
    wait_log(&bot, "a check suite did not pass: no review", 1);
    assert!(bot.jobs().is_empty());

    suites(
        &bot.github,
        &[("completed", Some("success")), ("in_progress", None)],
    );
    assert_eq!(deliver(&bot, "check_suite", "d-running", &suite).0, 202);
    wait_log(&bot, "checks still running", 1);
    assert!(bot.jobs().is_empty());

    // The last suite completes green: now the review (an app's suite that
    // never got a check run stays queued and is not waited for).
    bot.github.respond(
        "GET",
        &format!("{REPO}/commits/{SHA}/check-suites"),
        200,
        &json!({"total_count": 3, "check_suites": [
            {"status": "completed", "conclusion": "success", "latest_check_runs_count": 2},
            {"status": "completed", "conclusion": "neutral", "latest_check_runs_count": 1},
            {"status": "queued", "conclusion": null, "latest_check_runs_count": 0},
        ]})
        .to_string(),
    );
    assert_eq!(deliver(&bot, "check_suite", "d-green", &suite).0, 202);
    bot.github.wait_for("the review", 1, |r| {
        r.method == "POST" && r.path == format!("{REPO}/pulls/2/reviews")
    });
    assert_eq!(bot.jobs().len(), 1);
    // A failed suite event itself is ignored at once.
    let mut red = suite.clone();
    red["check_suite"]["conclusion"] = "failure".into();
    let (code, resp) = deliver(&bot, "check_suite", "d-red-2", &red);
    assert_eq!(code, 200);
    assert!(resp.contains("ignored"), "{resp}");
}

#[test]
fn review_by_hand_once_per_head_commit() {
    let gh = triage_github();
    let bot = bot_with("", gh);
    let mut comment = example("issue_comment", "created");
    comment["comment"]["body"] = "@ClaudeBot review".into();
    comment["issue"]["number"] = 2.into();
    comment["issue"]["pull_request"] =
        json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2"});
    let (code, resp) = deliver(&bot, "issue_comment", "d-hand-1", &comment);
    assert_eq!(code, 202, "{resp}\n{}", bot.server.log());
    assert_eq!(json(&resp)["sha"], SHA);
    let posted = bot.github.wait_for("the review", 1, |r| {
        r.method == "POST" && r.path == format!("{REPO}/pulls/2/reviews")
    });
    assert!(posted[0]
        .body
        .contains(&format!("Reviewed at commit {SHA}")));
    // Asked again, same head: none (the answer says so at once).
    let (code, resp) = deliver(&bot, "issue_comment", "d-hand-2", &comment);
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("duplicate"), "{resp}");
    assert_eq!(bot.jobs().len(), 1);
    // An unauthorized user is refused as for any command.
    comment["comment"]["user"]["login"] = "stranger".into();
    let (code, resp) = deliver(&bot, "issue_comment", "d-hand-3", &comment);
    assert_eq!(code, 200, "{resp}");
    assert_eq!(bot.jobs().len(), 1);
    assert_eq!(reviews(&bot).len(), 1);
}
