//! Auto-labelling and review decisions: which labels a job chose (read from its
//! output), which of them the repository has, the keyword rules used when the
//! job fails, whether a commit's check suites allow a review, and the review's
//! key and text. Pure: the API calls that feed them live in `api_triage`.

use crate::comment::{answer_comment, MAX_COMMENT_CHARS};
use crate::repo::{BotName, RepoName};
use serde_json::Value;

/// What a bot job is for: its `OPERATION_TYPE`, and what its end is answered
/// with (a comment, labels, a review). Stored with the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// A command from a mention: answered with a comment.
    #[default]
    Default,
    /// A pull request's review at one commit: answered with a review.
    PrReview,
    /// Labels for a new issue; the job gets no GitHub token.
    AutoTag,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Default => "default",
            Operation::PrReview => "pr-review",
            Operation::AutoTag => "auto-tag",
        }
    }

    pub fn parse(name: &str) -> Option<Operation> {
        [Operation::Default, Operation::PrReview, Operation::AutoTag]
            .into_iter()
            .find(|op| op.as_str() == name)
    }
}

/// The most labels applied to one issue (GitHub allows 100; more is a runaway job).
pub const MAX_LABELS: usize = 10;
/// The longest label name GitHub accepts.
const MAX_LABEL_CHARS: usize = 50;

/// The labels a job chose: the last JSON array of strings in its stdout (an
/// agent may talk around it). `None` when there is none; names that are not
/// labels (empty, too long) are dropped, at most [`MAX_LABELS`] kept.
pub fn chosen_labels(stdout: &str) -> Option<Vec<String>> {
    let mut end = stdout.len();
    // From the last `[` backwards: the first that starts an array of strings wins.
    while let Some(start) = stdout[..end].rfind('[') {
        let mut stream = serde_json::Deserializer::from_str(&stdout[start..]).into_iter::<Value>();
        if let Some(Ok(Value::Array(items))) = stream.next() {
            if items.iter().all(Value::is_string) {
                let mut labels: Vec<String> = Vec::new();
                for name in items.iter().filter_map(Value::as_str).map(str::trim) {
                    let fits = !name.is_empty() && name.chars().count() <= MAX_LABEL_CHARS;
                    if fits && !labels.iter().any(|l| l.eq_ignore_ascii_case(name)) {
                        labels.push(name.to_string());
                    }
                }
                labels.truncate(MAX_LABELS);
                return Some(labels);
            }
        }
        end = start;
    }
    None
}

/// The chosen labels the repository has, spelled as the repository spells
/// them (GitHub label names are case-insensitive); the rest are dropped.
pub fn existing_only(chosen: &[String], existing: &[String]) -> Vec<String> {
    let mut applied: Vec<String> = Vec::new();
    for name in chosen {
        if let Some(found) = existing.iter().find(|e| e.eq_ignore_ascii_case(name)) {
            if !applied.contains(found) {
                applied.push(found.clone());
            }
        }
    }
    applied.truncate(MAX_LABELS);
    applied
}

/// Keyword rules: label → words; a label applies when one of its words is a
/// word of the title or body (case-insensitive). In the rules' order.
pub fn keyword_labels(title: &str, body: &str, rules: &[(String, Vec<String>)]) -> Vec<String> {
    let words: Vec<String> = format!("{title}\n{body}")
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    rules
        .iter()
        .filter(|(_, keys)| {
            keys.iter()
                .any(|k| words.iter().any(|w| w.eq_ignore_ascii_case(k)))
        })
        .map(|(label, _)| label.clone())
        .take(MAX_LABELS)
        .collect()
}

/// The documented default keyword rules (`[github.label_rules]` replaces them).
pub fn default_label_rules() -> Vec<(String, Vec<String>)> {
    let rule = |label: &str, words: &[&str]| {
        (
            label.to_string(),
            words.iter().map(|w| w.to_string()).collect(),
        )
    };
    vec![
        rule(
            "bug",
            &[
                "bug",
                "error",
                "crash",
                "crashes",
                "broken",
                "fails",
                "failure",
                "panic",
                "exception",
                "regression",
            ],
        ),
        rule(
            "enhancement",
            &[
                "feature",
                "enhancement",
                "add",
                "support",
                "improve",
                "request",
            ],
        ),
        rule(
            "documentation",
            &[
                "docs",
                "documentation",
                "readme",
                "typo",
                "spelling",
                "guide",
            ],
        ),
        rule("question", &["question", "how", "why", "help"]),
    ]
}

/// What an auto-tag job reads on stdin: the issue and the labels it may choose from.
pub fn auto_tag_input(title: &str, body: &str, labels: &[String]) -> String {
    /// An issue body is at most 65536 characters on GitHub; more is not an issue.
    const MAX_BODY_CHARS: usize = 65_536;
    let body: String = body.chars().take(MAX_BODY_CHARS).collect();
    serde_json::json!({ "title": title, "body": body, "labels": labels }).to_string()
}

/// One check suite of a commit, as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// `queued`, `in_progress`, `completed`, ...
    pub status: String,
    /// Set once completed: `success`, `failure`, `neutral`, `skipped`, ...
    pub conclusion: Option<String>,
    /// `latest_check_runs_count`, when GitHub gives it. GitHub makes a queued
    /// suite for every installed app that has checks permission, and one that
    /// never creates a run stays queued forever: such a suite is not waited for.
    pub runs: Option<u64>,
}

/// Whether a commit's check suites allow a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksVerdict {
    /// Every suite completed with success (neutral and skipped ones do not count).
    Green,
    /// Some suite is still running: wait for its own completion event.
    Running,
    /// Some suite did not pass (the conclusion, for the log).
    Failed(String),
}

pub fn checks_verdict(suites: &[Suite]) -> ChecksVerdict {
    let mut running = false;
    for suite in suites {
        if suite.status != "completed" {
            running |= suite.runs != Some(0);
            continue;
        }
        match suite.conclusion.as_deref() {
            Some("success" | "neutral" | "skipped") => {}
            other => return ChecksVerdict::Failed(other.unwrap_or("none").to_string()),
        }
    }
    if running {
        ChecksVerdict::Running
    } else {
        ChecksVerdict::Green
    }
}

/// The store's key of the one review of `pull` at `sha`: redeliveries, several
/// suites, `@bot review` and restarts all come to the same key.
pub fn review_key(repo: &RepoName, pull: u64, sha: &str) -> String {
    format!("review:{repo}#{pull}@{}", sha.to_ascii_lowercase())
}

/// The store's key of the one auto-labelling of an issue.
pub fn auto_tag_key(repo: &RepoName, issue: u64) -> String {
    format!("auto-tag:{repo}#{issue}")
}

/// A review's body: the job's answer (mentions defanged, cut to fit) and the
/// commit it looked at on the last line.
pub fn review_body(stdout: &str, job_id: &str, bot: &BotName, sha: &str) -> String {
    let footer = format!("\n\nReviewed at commit {sha}");
    let answer = answer_comment(stdout, job_id, bot);
    let room = MAX_COMMENT_CHARS.saturating_sub(footer.chars().count());
    let mut body: String = answer.chars().take(room).collect();
    body.push_str(&footer);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_last_array_of_strings_is_the_choice() {
        assert_eq!(chosen_labels(r#"["bug"]"#), Some(names(&["bug"])));
        assert_eq!(
            chosen_labels("I think [this] fits:\n[\"bug\", \"docs\"]\nthanks [1]"),
            Some(names(&["bug", "docs"]))
        );
        assert_eq!(
            chosen_labels(r#"first ["a"] then ["b", "B", " ", "c"]"#),
            Some(names(&["b", "c"]))
        );
        assert_eq!(chosen_labels("[]"), Some(vec![]));
        assert_eq!(chosen_labels("no labels"), None);
        assert_eq!(chosen_labels("[1, 2]"), None);
        assert_eq!(chosen_labels("[\"unterminated"), None);
        let many: Vec<String> = (0..50).map(|i| format!("l{i}")).collect();
        let text = serde_json::to_string(&many).unwrap();
        assert_eq!(chosen_labels(&text).unwrap().len(), MAX_LABELS);
        assert_eq!(
            chosen_labels(&format!("[\"{}\"]", "x".repeat(51))),
            Some(vec![])
        );
    }

    #[test]
    fn only_existing_labels_in_the_repositorys_spelling() {
        let existing = names(&["bug", "Documentation", "good first issue"]);
        assert_eq!(
            existing_only(
                &names(&["BUG", "wontfix", "documentation", "bug"]),
                &existing
            ),
            names(&["bug", "Documentation"])
        );
        assert!(existing_only(&names(&["x"]), &[]).is_empty());
    }

    #[test]
    fn keyword_rules_match_whole_words() {
        let rules = default_label_rules();
        assert_eq!(
            keyword_labels("App crashes on start", "", &rules),
            names(&["bug"])
        );
        assert_eq!(
            keyword_labels("Spelling error in the README file", "", &rules),
            names(&["bug", "documentation"])
        );
        assert_eq!(
            keyword_labels("How do I add a feature?", "", &rules),
            names(&["enhancement", "question"])
        );
        // "debugging" is not "bug".
        assert!(keyword_labels("debugging notes", "", &rules).is_empty());
    }

    fn suite(status: &str, conclusion: Option<&str>) -> Suite {
        Suite {
            status: status.into(),
            conclusion: conclusion.map(Into::into),
            runs: None,
        }
    }

    #[test]
    fn checks_are_green_running_or_failed() {
        use ChecksVerdict::*;
        let ok = suite("completed", Some("success"));
        assert_eq!(checks_verdict(std::slice::from_ref(&ok)), Green);
        assert_eq!(
            checks_verdict(&[
                ok.clone(),
                suite("completed", Some("neutral")),
                suite("completed", Some("skipped"))
            ]),
            Green
        );
        assert_eq!(
            checks_verdict(&[ok.clone(), suite("in_progress", None)]),
            Running
        );
        assert_eq!(checks_verdict(&[suite("queued", None)]), Running);
        assert_eq!(
            checks_verdict(&[
                suite("in_progress", None),
                suite("completed", Some("failure"))
            ]),
            Failed("failure".into())
        );
        assert_eq!(
            checks_verdict(&[suite("completed", Some("cancelled"))]),
            Failed("cancelled".into())
        );
        assert_eq!(
            checks_verdict(&[suite("completed", None)]),
            Failed("none".into())
        );
        assert_eq!(checks_verdict(&[]), Green);
        // An app's suite that never got a run is not waited for; one with runs is.
        let idle = |runs| Suite {
            runs: Some(runs),
            ..suite("queued", None)
        };
        assert_eq!(checks_verdict(&[ok.clone(), idle(0)]), Green);
        assert_eq!(checks_verdict(&[ok, idle(2)]), Running);
    }

    #[test]
    fn operations_by_name() {
        for op in [Operation::Default, Operation::PrReview, Operation::AutoTag] {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
        assert_eq!(Operation::parse("review"), None);
    }

    #[test]
    fn keys_and_review_bodies() {
        let repo = RepoName::parse("o/r").unwrap();
        assert_eq!(review_key(&repo, 2, "ABC1234"), "review:o/r#2@abc1234");
        assert_eq!(auto_tag_key(&repo, 5), "auto-tag:o/r#5");
        let bot = BotName::new("ClaudeBot").unwrap();
        let body = review_body("Looks good, @ClaudeBot", "job-1", &bot, "abc1234");
        assert!(body.ends_with("\n\nReviewed at commit abc1234"), "{body}");
        assert!(!body.contains("@ClaudeBot"), "{body}");
        let long = review_body(&"x".repeat(100_000), "job-1", &bot, "abc1234");
        assert!(long.chars().count() <= MAX_COMMENT_CHARS);
        assert!(long.ends_with("Reviewed at commit abc1234"));
    }

    #[test]
    fn the_auto_tag_input_is_bounded_json() {
        let input = auto_tag_input("t", &"b".repeat(100_000), &names(&["bug"]));
        let v: Value = serde_json::from_str(&input).unwrap();
        assert_eq!(v["title"], "t");
        assert_eq!(v["labels"][0], "bug");
        assert_eq!(v["body"].as_str().unwrap().len(), 65_536);
    }
}
