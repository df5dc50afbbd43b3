//! Webhook deliveries turned into decisions: a ping, a delivery to ignore (and
//! why), or a [`Trigger`] naming the repository, the thread and the command.
//! Pure: the payload is untrusted JSON read by path, never indexed or unwrapped.

use crate::repo::{shorten, BotName, NameError, RepoName};
use serde_json::Value;

/// What a delivery asks of the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// GitHub's hello when the webhook is created.
    Ping,
    /// Nothing to do; the reason is for the log and the delivery's response.
    Ignored(String),
    Trigger(Trigger),
}

/// Someone asked the bot to do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub repo_full_name: RepoName,
    /// The issue's or pull request's number: where the answer is posted.
    pub issue_number: u64,
    pub is_pull_request: bool,
    /// The pull request's head branch when the payload says it (review comments).
    /// `None` for a comment on a pull request's conversation: look it up with
    /// [`crate::api::GitHubClient::pull_request_head`]. Always `None` for issues.
    pub branch: Option<String>,
    /// The text after the mention, trimmed; never empty.
    pub command: String,
    /// Login of whoever wrote the comment or issue.
    pub author: String,
    /// What to react to, to say the command was seen.
    pub reaction_target: ReactionTarget,
}

/// The thing that carries the mention; each has its own reactions endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionTarget {
    /// A comment on an issue's or pull request's conversation, by comment id.
    IssueComment(u64),
    /// A comment on a pull request's diff, by comment id.
    ReviewComment(u64),
    /// An issue itself, by number.
    Issue(u64),
}

/// A delivery of an event the bot handles whose payload lacks what it needs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the webhook payload is not a JSON object")]
    NotAnObject,
    #[error("the webhook payload has no {0}")]
    Missing(&'static str),
    #[error("the webhook payload's {field} is not {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("the webhook payload's repository: {0}")]
    Repo(#[from] NameError),
}

/// Which kind of delivery carries a mention, with the payload paths to read.
enum Source {
    IssueComment,
    ReviewComment,
    OpenedIssue,
}

impl Event {
    /// Decide what the delivery `event_name` (the `X-GitHub-Event` header) with
    /// `payload` asks of `bot`. Errors only for handled deliveries that lack a
    /// field the bot needs; anything unexpected otherwise is [`Event::Ignored`].
    pub fn from_webhook(
        event_name: &str,
        payload: &Value,
        bot: &BotName,
    ) -> Result<Event, EventError> {
        let (source, wanted_action) = match event_name {
            "ping" => return Ok(Event::Ping),
            "issue_comment" => (Source::IssueComment, "created"),
            "pull_request_review_comment" => (Source::ReviewComment, "created"),
            "issues" => (Source::OpenedIssue, "opened"),
            other => {
                return Ok(ignored(format!(
                    "event {:?} is not handled",
                    shorten(other, 60)
                )))
            }
        };
        if !payload.is_object() {
            return Err(EventError::NotAnObject);
        }
        let action = string(payload, "/action")?;
        if action != wanted_action {
            return Ok(ignored(format!(
                "{event_name} action {:?} is not handled",
                shorten(action, 60)
            )));
        }

        let (author_at, body_at) = match source {
            Source::IssueComment | Source::ReviewComment => {
                ("/comment/user/login", "/comment/body")
            }
            Source::OpenedIssue => ("/issue/user/login", "/issue/body"),
        };
        let author = string(payload, author_at)?;
        if bot.is_self(author) {
            return Ok(ignored(format!(
                "written by the bot itself ({})",
                shorten(author, 60)
            )));
        }
        let body = optional_string(payload, body_at)?.unwrap_or("");
        let command = match find_command(body, bot) {
            None => return Ok(ignored(format!("no mention of @{bot}"))),
            Some("") => {
                return Ok(ignored(format!(
                    "@{bot} is mentioned with no command after it"
                )))
            }
            Some(command) => command.to_string(),
        };

        let repo_full_name = RepoName::parse(string(payload, "/repository/full_name")?)?;
        let trigger = match source {
            Source::IssueComment => Trigger {
                issue_number: number(payload, "/issue/number")?,
                // A pull request is an issue with a `pull_request` object.
                is_pull_request: matches!(
                    payload.pointer("/issue/pull_request"),
                    Some(Value::Object(_))
                ),
                branch: None,
                reaction_target: ReactionTarget::IssueComment(number(payload, "/comment/id")?),
                repo_full_name,
                command,
                author: author.to_string(),
            },
            Source::ReviewComment => Trigger {
                issue_number: number(payload, "/pull_request/number")?,
                is_pull_request: true,
                branch: Some(string(payload, "/pull_request/head/ref")?.to_string()),
                reaction_target: ReactionTarget::ReviewComment(number(payload, "/comment/id")?),
                repo_full_name,
                command,
                author: author.to_string(),
            },
            Source::OpenedIssue => {
                let issue_number = number(payload, "/issue/number")?;
                Trigger {
                    issue_number,
                    is_pull_request: false,
                    branch: None,
                    reaction_target: ReactionTarget::Issue(issue_number),
                    repo_full_name,
                    command,
                    author: author.to_string(),
                }
            }
        };
        Ok(Event::Trigger(trigger))
    }
}

/// Whether `author` is on the allow list (GitHub logins are case-insensitive).
pub fn authorized<S: AsRef<str>>(author: &str, allowed: &[S]) -> bool {
    allowed
        .iter()
        .any(|login| login.as_ref().eq_ignore_ascii_case(author))
}

/// The text after the first mention of the bot, trimmed (and without a `:` or
/// `,` right after the name); `None` if the bot is not mentioned.
///
/// A mention is `@name` in any case, not inside a word, an email address, a
/// team or an inline code span, and not on a quoted (`>`) line, so that quoting
/// an earlier request in a reply does not run it again.
pub fn find_command<'a>(body: &'a str, bot: &BotName) -> Option<&'a str> {
    let name = bot.as_str().as_bytes();
    let bytes = body.as_bytes();
    let mut from = 0;
    while let Some(offset) = body[from..].find('@') {
        let at = from + offset;
        from = at + 1;
        let end = at + 1 + name.len();
        let Some(candidate) = bytes.get(at + 1..end) else {
            break;
        };
        if !candidate.eq_ignore_ascii_case(name) {
            continue;
        }
        // Names are ASCII, so `at` and `end` are char boundaries.
        let before = body[..at].chars().next_back();
        let after = body[end..].chars().next();
        if before.is_some_and(joins_before) || after.is_some_and(joins_after) {
            continue;
        }
        if on_quoted_line(body, at) {
            continue;
        }
        let rest = body[end..].trim_start_matches([':', ',']);
        return Some(rest.trim());
    }
    None
}

// A mention right after one of these is part of something else: a word, an
// email address, a path, an inline code span.
fn joins_before(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@' | '`')
}

// A longer login (`@ClaudeBot2`, `@ClaudeBot-dev`) or a team (`@org/team`).
fn joins_after(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/' | '[')
}

fn on_quoted_line(body: &str, at: usize) -> bool {
    let line_start = body[..at].rfind('\n').map_or(0, |n| n + 1);
    body[line_start..at].trim_start().starts_with('>')
}

fn ignored(reason: String) -> Event {
    Event::Ignored(reason)
}

fn string<'a>(payload: &'a Value, at: &'static str) -> Result<&'a str, EventError> {
    match payload.pointer(at) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(EventError::Missing(at)),
        Some(_) => Err(EventError::WrongType {
            field: at,
            expected: "a string",
        }),
    }
}

fn optional_string<'a>(
    payload: &'a Value,
    at: &'static str,
) -> Result<Option<&'a str>, EventError> {
    match payload.pointer(at) {
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(EventError::WrongType {
            field: at,
            expected: "a string",
        }),
    }
}

fn number(payload: &Value, at: &'static str) -> Result<u64, EventError> {
    match payload.pointer(at) {
        None | Some(Value::Null) => Err(EventError::Missing(at)),
        Some(value) => value.as_u64().ok_or(EventError::WrongType {
            field: at,
            expected: "a whole number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bot() -> BotName {
        BotName::new("ClaudeBot").unwrap()
    }

    #[test]
    fn the_command_is_the_text_after_the_mention() {
        let cases = [
            (
                "@ClaudeBot please fix the test",
                Some("please fix the test"),
            ),
            ("@claudebot   run it  \n", Some("run it")),
            ("Hey @CLAUDEBOT: fix it", Some("fix it")),
            ("(@ClaudeBot, fix it)", Some("fix it)")),
            (
                "first line\n@ClaudeBot fix\nthe test",
                Some("fix\nthe test"),
            ),
            ("thanks @ClaudeBot", Some("")),
            ("@ClaudeBot", Some("")),
            ("nothing here", None),
            ("", None),
            ("@", None),
            ("@Claude", None),
            ("mail me at me@ClaudeBot.com", None),
            ("@ClaudeBot2 do it", None),
            ("@ClaudeBot-dev do it", None),
            ("@ClaudeBot/team do it", None),
            ("@ClaudeBot[bot] do it", None),
            ("`@ClaudeBot do it`", None),
            ("@\u{200B}ClaudeBot do it", None),
            ("> @ClaudeBot do it\n\nthat was last week", None),
            ("> @ClaudeBot old\n@ClaudeBot new one", Some("new one")),
            ("é@ClaudeBot x", None),
            ("é @ClaudeBot x é", Some("x é")),
        ];
        for (body, want) in cases {
            assert_eq!(find_command(body, &bot()), want, "{body:?}");
        }
    }

    #[test]
    fn authorized_ignores_case() {
        let allowed = ["Octocat".to_string(), "hubot".to_string()];
        assert!(authorized("octocat", &allowed));
        assert!(authorized("HUBOT", &allowed));
        assert!(!authorized("octocat2", &allowed));
        assert!(!authorized("", &allowed));
        assert!(!authorized("octocat", &[] as &[&str]));
    }

    fn comment(body: Value, login: Value) -> Value {
        json!({
            "action": "created",
            "issue": {"number": 7, "user": {"login": "someone"}},
            "comment": {"id": 99, "body": body, "user": {"login": login}},
            "repository": {"full_name": "o/r"},
        })
    }

    #[test]
    fn a_minimal_comment_triggers() {
        let event = Event::from_webhook(
            "issue_comment",
            &comment(json!("@ClaudeBot go"), json!("me")),
            &bot(),
        );
        let Ok(Event::Trigger(trigger)) = event else {
            panic!("{event:?}");
        };
        assert_eq!(trigger.command, "go");
        assert_eq!(trigger.issue_number, 7);
        assert!(!trigger.is_pull_request);
        assert_eq!(trigger.reaction_target, ReactionTarget::IssueComment(99));
    }

    #[test]
    fn odd_payloads_are_errors_or_ignored_never_panics() {
        let b = bot();
        let parse = |event: &str, payload: Value| Event::from_webhook(event, &payload, &b);
        assert_eq!(
            parse("issue_comment", json!([1, 2])),
            Err(EventError::NotAnObject)
        );
        assert_eq!(
            parse("issue_comment", json!("x")),
            Err(EventError::NotAnObject)
        );
        assert_eq!(
            parse("issue_comment", json!({})),
            Err(EventError::Missing("/action"))
        );
        assert!(matches!(
            parse("issue_comment", json!({"action": 3})),
            Err(EventError::WrongType {
                field: "/action",
                ..
            })
        ));
        assert!(matches!(
            parse("issue_comment", json!({"action": "deleted"})),
            Ok(Event::Ignored(_))
        ));
        assert_eq!(
            parse("issue_comment", json!({"action": "created"})),
            Err(EventError::Missing("/comment/user/login"))
        );
        assert!(matches!(
            parse(
                "issue_comment",
                comment(json!(["@ClaudeBot go"]), json!("me"))
            ),
            Err(EventError::WrongType {
                field: "/comment/body",
                ..
            })
        ));
        assert!(matches!(
            parse("issue_comment", comment(json!("@ClaudeBot go"), json!(5))),
            Err(EventError::WrongType {
                field: "/comment/user/login",
                ..
            })
        ));
        // No body at all is no mention, not an error.
        assert!(matches!(
            parse("issue_comment", comment(Value::Null, json!("me"))),
            Ok(Event::Ignored(_))
        ));

        let mut payload = comment(json!("@ClaudeBot go"), json!("me"));
        payload["comment"]["id"] = json!(-1);
        assert!(matches!(
            parse("issue_comment", payload.clone()),
            Err(EventError::WrongType {
                field: "/comment/id",
                ..
            })
        ));
        payload["comment"]["id"] = json!(1.5);
        assert!(parse("issue_comment", payload.clone()).is_err());
        payload["comment"]["id"] = json!("99");
        assert!(parse("issue_comment", payload.clone()).is_err());
        payload["comment"]["id"] = json!(99);
        payload["repository"]["full_name"] = json!("o/../../admin");
        assert!(matches!(
            parse("issue_comment", payload.clone()),
            Err(EventError::Repo(_))
        ));
        payload["repository"] = json!(null);
        assert_eq!(
            parse("issue_comment", payload),
            Err(EventError::Missing("/repository/full_name"))
        );

        let long_event = "x".repeat(10_000);
        let Ok(Event::Ignored(reason)) = parse(&long_event, json!(null)) else {
            panic!("an unknown event is ignored");
        };
        assert!(reason.len() < 200, "{reason}");
    }
}
