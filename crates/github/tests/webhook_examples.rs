//! GitHub's own example deliveries (tests/fixtures/github-webhooks) through the
//! signature check and the event decision, with the bot mentioned in their text.

use serde_json::{json, Value};
use std::sync::OnceLock;
use warmpool_github::{
    sign, verify, BotName, Event, EventError, ReactionTarget, RepoName, Trigger,
};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/github-webhooks/api.github.com.json"
);
const MENTION: &str = "@ClaudeBot please fix the test";

fn all_examples() -> &'static Value {
    static EXAMPLES: OnceLock<Value> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let text = std::fs::read_to_string(FIXTURES).unwrap_or_else(|e| {
            panic!(
                "cannot read GitHub's webhook examples at {FIXTURES}: {e}; \
                 they come with the shared/ folder beside the repository"
            )
        });
        serde_json::from_str(&text).expect("the webhook examples file is JSON")
    })
}

/// The first example of `event` with `action` ("" for events without actions).
fn example(event: &str, action: &str) -> Value {
    let events = all_examples().as_array().expect("a JSON array of events");
    let entry = events
        .iter()
        .find(|e| e["name"] == event)
        .unwrap_or_else(|| panic!("no {event} in the examples"));
    entry["examples"]
        .as_array()
        .expect("examples is an array")
        .iter()
        .find(|p| action.is_empty() || p["action"] == action)
        .unwrap_or_else(|| panic!("no {event}.{action} example"))
        .clone()
}

fn bot() -> BotName {
    BotName::new("ClaudeBot").unwrap()
}

fn decide(event: &str, payload: &Value) -> Result<Event, EventError> {
    Event::from_webhook(event, payload, &bot())
}

fn trigger(event: &str, payload: &Value) -> Trigger {
    match decide(event, payload) {
        Ok(Event::Trigger(trigger)) => trigger,
        other => panic!("{event}: expected a trigger, got {other:?}"),
    }
}

fn repo() -> RepoName {
    RepoName::parse("Codertocat/Hello-World").unwrap()
}

#[test]
fn a_comment_on_an_issue_triggers() {
    let mut payload = example("issue_comment", "created");
    payload["comment"]["body"] = json!(format!("Thanks! {MENTION}\n"));
    let trigger = trigger("issue_comment", &payload);
    assert_eq!(
        trigger,
        Trigger {
            repo_full_name: repo(),
            issue_number: 1,
            is_pull_request: false,
            branch: None,
            command: "please fix the test".to_string(),
            author: "Codertocat".to_string(),
            reaction_target: ReactionTarget::IssueComment(492700400),
            installation: None,
        }
    );
}

#[test]
fn a_comment_on_a_pull_requests_conversation_triggers_without_a_branch() {
    let mut payload = example("issue_comment", "created");
    payload["comment"]["body"] = json!(MENTION);
    payload["issue"]["pull_request"] = json!({
        "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1",
        "html_url": "https://github.com/Codertocat/Hello-World/pull/1",
    });
    let trigger = trigger("issue_comment", &payload);
    assert!(trigger.is_pull_request);
    assert_eq!(trigger.branch, None, "looked up through the API");
    assert_eq!(trigger.issue_number, 1);
    assert_eq!(
        trigger.reaction_target,
        ReactionTarget::IssueComment(492700400)
    );
}

#[test]
fn a_review_comment_triggers_with_the_head_branch() {
    let mut payload = example("pull_request_review_comment", "created");
    payload["comment"]["body"] = json!(MENTION);
    let trigger = trigger("pull_request_review_comment", &payload);
    assert_eq!(
        trigger,
        Trigger {
            repo_full_name: repo(),
            issue_number: 2,
            is_pull_request: true,
            branch: Some("changes".to_string()),
            command: "please fix the test".to_string(),
            author: "Codertocat".to_string(),
            reaction_target: ReactionTarget::ReviewComment(284312630),
            installation: None,
        }
    );
}

#[test]
fn an_opened_issue_that_mentions_the_bot_triggers_on_the_issue() {
    let mut payload = example("issues", "opened");
    payload["issue"]["body"] = json!(format!("Steps:\n\n{MENTION}"));
    let trigger = trigger("issues", &payload);
    assert_eq!(trigger.command, "please fix the test");
    assert_eq!(trigger.issue_number, 1);
    assert!(!trigger.is_pull_request);
    assert_eq!(trigger.reaction_target, ReactionTarget::Issue(1));
    assert_eq!(trigger.author, "Codertocat");
}

#[test]
fn the_examples_as_they_are_mention_nobody() {
    for (event, action) in [
        ("issue_comment", "created"),
        ("pull_request_review_comment", "created"),
        ("issues", "opened"),
    ] {
        let decision = decide(event, &example(event, action));
        assert!(
            matches!(decision, Ok(Event::Ignored(_))),
            "{event}: {decision:?}"
        );
    }
}

#[test]
fn the_bots_own_comments_are_ignored() {
    for login in ["ClaudeBot", "claudebot", "ClaudeBot[bot]"] {
        let mut payload = example("issue_comment", "created");
        payload["comment"]["body"] = json!(MENTION);
        payload["comment"]["user"]["login"] = json!(login);
        let Ok(Event::Ignored(reason)) = decide("issue_comment", &payload) else {
            panic!("{login}: the bot's own comment must not trigger it");
        };
        assert!(reason.contains("bot itself"), "{reason}");
    }
    let mut payload = example("issues", "opened");
    payload["issue"]["body"] = json!(MENTION);
    payload["issue"]["user"]["login"] = json!("claudebot[bot]");
    assert!(matches!(decide("issues", &payload), Ok(Event::Ignored(_))));
}

#[test]
fn a_mention_with_nothing_after_it_is_ignored_with_a_reason() {
    let mut payload = example("issue_comment", "created");
    payload["comment"]["body"] = json!("cc @ClaudeBot");
    let Ok(Event::Ignored(reason)) = decide("issue_comment", &payload) else {
        panic!("an empty command is no trigger");
    };
    assert!(reason.contains("no command"), "{reason}");
}

#[test]
fn ping_and_other_events_and_actions() {
    assert_eq!(decide("ping", &example("ping", "")), Ok(Event::Ping));
    let mut push = example("push", "");
    push["head_commit"]["message"] = json!(MENTION);
    assert!(matches!(decide("push", &push), Ok(Event::Ignored(_))));
    let mut edited = example("issue_comment", "edited");
    edited["comment"]["body"] = json!(MENTION);
    assert!(matches!(
        decide("issue_comment", &edited),
        Ok(Event::Ignored(_))
    ));
    let mut labeled = example("issues", "labeled");
    labeled["issue"]["body"] = json!(MENTION);
    assert!(matches!(decide("issues", &labeled), Ok(Event::Ignored(_))));
}

#[test]
fn malformed_examples_are_errors_not_panics() {
    let mut payload = example("pull_request_review_comment", "created");
    payload["comment"]["body"] = json!(MENTION);

    let mut no_head = payload.clone();
    no_head["pull_request"]
        .as_object_mut()
        .unwrap()
        .remove("head");
    assert_eq!(
        decide("pull_request_review_comment", &no_head),
        Err(EventError::Missing("/pull_request/head/ref"))
    );

    let mut number_as_text = payload.clone();
    number_as_text["pull_request"]["number"] = json!("2");
    assert!(matches!(
        decide("pull_request_review_comment", &number_as_text),
        Err(EventError::WrongType {
            field: "/pull_request/number",
            ..
        })
    ));

    let mut no_comment = payload.clone();
    no_comment.as_object_mut().unwrap().remove("comment");
    assert!(decide("pull_request_review_comment", &no_comment).is_err());

    let mut bad_repo = payload.clone();
    bad_repo["repository"]["full_name"] = json!("Codertocat/Hello World");
    assert!(matches!(
        decide("pull_request_review_comment", &bad_repo),
        Err(EventError::Repo(_))
    ));

    for junk in [json!(null), json!(1), json!("issue_comment"), json!([])] {
        assert!(decide("issue_comment", &junk).is_err());
        assert!(decide("issues", &junk).is_err());
    }
    // Every example of every event, untouched: a decision or an error, never a panic.
    for entry in all_examples().as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        for payload in entry["examples"].as_array().unwrap() {
            let _ = decide(name, payload);
        }
    }
}

#[test]
fn a_signed_example_delivery_verifies_as_sent() {
    let mut payload = example("issue_comment", "created");
    payload["comment"]["body"] = json!(MENTION);
    let body = serde_json::to_vec(&payload).unwrap();
    let header = sign(b"test secret", &body);
    assert_eq!(verify(b"test secret", &body, Some(&header)), Ok(()));
    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(verify(b"test secret", &tampered, Some(&header)).is_err());
}

#[test]
fn every_completed_check_suite_example_passes_or_is_ignored() {
    let sha = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    let suites = all_examples()
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "check_suite")
        .expect("check_suite examples");
    let mut passed = 0;
    for payload in suites["examples"].as_array().unwrap() {
        match decide("check_suite", payload) {
            Ok(Event::ChecksPassed(c)) => {
                passed += 1;
                assert_eq!(c.repo_full_name, repo());
                assert_eq!(c.head_sha, sha);
                // The example whose suite lists no pull request (a fork's).
                let listed = payload["check_suite"]["pull_requests"].as_array().unwrap();
                let want: Vec<u64> = if listed.is_empty() { vec![] } else { vec![2] };
                assert_eq!(c.pull_numbers, want);
            }
            Ok(Event::Ignored(why)) => assert_ne!(payload["action"], "completed", "{why}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(passed, 4, "the four completed examples pass");
}

#[test]
fn an_opened_issue_example_is_one_to_label() {
    let payload = example("issues", "opened");
    let issue = warmpool_github::opened_issue("issues", &payload, &bot())
        .unwrap()
        .expect("an issue to label");
    assert_eq!(issue.repo_full_name, repo());
    assert_eq!(issue.number, 1);
    assert_eq!(issue.title, "Spelling error in the README file");
    assert_eq!(issue.author, "Codertocat");
    let edited = example("issues", "edited");
    assert_eq!(
        warmpool_github::opened_issue("issues", &edited, &bot()),
        Ok(None)
    );
}
