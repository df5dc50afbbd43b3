//! Webhook deliveries turned into decisions: a ping, a delivery to ignore (and
//! why), or a [`Trigger`] naming the repository, the thread and the command.
//! Pure: the payload is untrusted JSON read by path, never indexed or unwrapped.

use crate::repo::{shorten, BotName, NameError, RepoName};
use pulldown_cmark::{Event as Md, Options, Parser, Tag, TagEnd};
use serde_json::Value;
use std::ops::Range;

/// What a delivery asks of the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// GitHub's hello when the webhook is created.
    Ping,
    /// Nothing to do; the reason is for the log and the delivery's response.
    Ignored(String),
    Trigger(Trigger),
    /// A check suite of a commit completed successfully: maybe time to review
    /// the pull requests whose head it is.
    ChecksPassed(ChecksPassed),
}

/// `check_suite.completed` with conclusion `success`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksPassed {
    pub repo_full_name: RepoName,
    /// The commit the suite ran on (hex, checked: it goes into API paths).
    pub head_sha: String,
    /// The pull requests the payload lists with this head; none for a pull
    /// request from a fork (GitHub lists only the repository's own branches):
    /// then they are looked up by the SHA.
    pub pull_numbers: Vec<u64>,
    /// The GitHub App installation the delivery came through (`installation.id`).
    pub installation: Option<u64>,
}

/// A newly opened issue, for auto-labelling (whether or not it mentions the bot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedIssue {
    pub repo_full_name: RepoName,
    pub number: u64,
    pub title: String,
    /// Empty when the issue has none.
    pub body: String,
    pub author: String,
    /// The GitHub App installation the delivery came through (`installation.id`).
    pub installation: Option<u64>,
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
    /// The GitHub App installation the delivery came through (`installation.id`);
    /// `None` for a repository's own webhook.
    pub installation: Option<u64>,
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
            "check_suite" => return checks_passed(payload),
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
        let installation = installation(payload)?;
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
                installation,
            },
            Source::ReviewComment => Trigger {
                issue_number: number(payload, "/pull_request/number")?,
                is_pull_request: true,
                branch: Some(string(payload, "/pull_request/head/ref")?.to_string()),
                reaction_target: ReactionTarget::ReviewComment(number(payload, "/comment/id")?),
                repo_full_name,
                command,
                author: author.to_string(),
                installation,
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
                    installation,
                }
            }
        };
        Ok(Event::Trigger(trigger))
    }
}

/// The issue an `issues.opened` delivery opens, unless the bot opened it;
/// `None` for any other delivery. Pure, like [`Event::from_webhook`].
pub fn opened_issue(
    event_name: &str,
    payload: &Value,
    bot: &BotName,
) -> Result<Option<OpenedIssue>, EventError> {
    if event_name != "issues" {
        return Ok(None);
    }
    if !payload.is_object() {
        return Err(EventError::NotAnObject);
    }
    if string(payload, "/action")? != "opened" {
        return Ok(None);
    }
    let author = string(payload, "/issue/user/login")?;
    if bot.is_self(author) {
        return Ok(None);
    }
    Ok(Some(OpenedIssue {
        repo_full_name: RepoName::parse(string(payload, "/repository/full_name")?)?,
        number: number(payload, "/issue/number")?,
        title: string(payload, "/issue/title")?.to_string(),
        body: optional_string(payload, "/issue/body")?
            .unwrap_or("")
            .to_string(),
        author: author.to_string(),
        installation: installation(payload)?,
    }))
}

/// The GitHub App installation a delivery came through (`installation.id`),
/// `None` for a repository's own webhook.
fn installation(payload: &Value) -> Result<Option<u64>, EventError> {
    match payload.pointer("/installation/id") {
        None | Some(Value::Null) => Ok(None),
        Some(_) => Ok(Some(number(payload, "/installation/id")?)),
    }
}

/// Whether a command asks for a review by hand (`@bot review`): the word
/// `review`, in any case, with nothing after it but punctuation.
pub fn is_review_command(command: &str) -> bool {
    let word = command.trim().trim_end_matches(['.', '!', '?']).trim_end();
    word.eq_ignore_ascii_case("review")
}

/// A commit SHA as it may go into an API path: 7 to 64 hex digits.
pub fn valid_sha(sha: &str) -> bool {
    (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

fn checks_passed(payload: &Value) -> Result<Event, EventError> {
    if !payload.is_object() {
        return Err(EventError::NotAnObject);
    }
    let action = string(payload, "/action")?;
    if action != "completed" {
        return Ok(ignored(format!(
            "check_suite action {:?} is not handled",
            shorten(action, 60)
        )));
    }
    let conclusion = optional_string(payload, "/check_suite/conclusion")?.unwrap_or("none");
    if conclusion != "success" {
        return Ok(ignored(format!(
            "the check suite concluded {:?}: no review",
            shorten(conclusion, 60)
        )));
    }
    let head_sha = string(payload, "/check_suite/head_sha")?;
    if !valid_sha(head_sha) {
        return Err(EventError::WrongType {
            field: "/check_suite/head_sha",
            expected: "a commit SHA (hex)",
        });
    }
    let mut pull_numbers = Vec::new();
    match payload.pointer("/check_suite/pull_requests") {
        None | Some(Value::Null) => {}
        Some(Value::Array(pulls)) => {
            for pull in pulls {
                // Only those whose head is this very commit.
                if pull.pointer("/head/sha").and_then(Value::as_str) != Some(head_sha) {
                    continue;
                }
                let n =
                    pull.get("number")
                        .and_then(Value::as_u64)
                        .ok_or(EventError::WrongType {
                            field: "/check_suite/pull_requests/*/number",
                            expected: "a whole number",
                        })?;
                if !pull_numbers.contains(&n) {
                    pull_numbers.push(n);
                }
            }
        }
        Some(_) => {
            return Err(EventError::WrongType {
                field: "/check_suite/pull_requests",
                expected: "an array",
            })
        }
    }
    Ok(Event::ChecksPassed(ChecksPassed {
        repo_full_name: RepoName::parse(string(payload, "/repository/full_name")?)?,
        head_sha: head_sha.to_string(),
        pull_numbers,
        installation: installation(payload)?,
    }))
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
/// The body is read as GitHub-flavoured Markdown: a mention counts in text as
/// GitHub shows it (paragraphs, lists, headings, emphasis, tables, links, the
/// text of HTML blocks), not in code (fenced, indented, inline, or HTML `<pre>`
/// and `<code>`), a quote (`>` or HTML `<blockquote>`), or an HTML comment,
/// so that quoting, showing or hiding an earlier request does not run it
/// again. A mention is `@name` in any case, not inside a word, an email
/// address or a team. The command is the body's own text after the mention,
/// as written, whatever Markdown follows it.
pub fn find_command<'a>(body: &'a str, bot: &BotName) -> Option<&'a str> {
    let name = bot.as_str().as_bytes();
    let bytes = body.as_bytes();
    for span in readable_text(body) {
        let mut from = span.start;
        while let Some(offset) = body[from..span.end].find('@') {
            let at = from + offset;
            from = at + 1;
            let end = at + 1 + name.len();
            if end > span.end {
                break;
            }
            if !bytes[at + 1..end].eq_ignore_ascii_case(name) {
                continue;
            }
            // Names are ASCII, so `at` and `end` are char boundaries.
            let before = body[..at].chars().next_back();
            let after = body[end..].chars().next();
            if before.is_some_and(joins_before) || after.is_some_and(joins_after) {
                continue;
            }
            let rest = body[end..].trim_start_matches([':', ',']);
            return Some(rest.trim());
        }
    }
    None
}

// A mention right after one of these is part of something else: a word, an
// email address, a path.
fn joins_before(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@' | '`')
}

// A longer login (`@ClaudeBot2`, `@ClaudeBot-dev`) or a team (`@org/team`).
fn joins_after(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/' | '[')
}

/// HTML elements whose content is not read: quotes and code.
const UNREAD_ELEMENTS: [&str; 3] = ["blockquote", "pre", "code"];

/// The byte ranges of `body`, in order, whose text is read for a mention:
/// Markdown text outside code blocks, block quotes and unread HTML elements,
/// and the text between the tags of HTML blocks.
fn readable_text(body: &str) -> Vec<Range<usize>> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_GFM;
    let mut spans = Vec::new();
    // Open Markdown code blocks and block quotes around the current event.
    let mut unread_blocks = 0usize;
    // Open HTML elements of UNREAD_ELEMENTS: from HTML blocks, till closed;
    // from inline HTML, till closed or the paragraph ends (as a browser
    // closes a `<code>` left open at the paragraph's `</p>`).
    let (mut html, mut inline_html) = (HtmlDepth::default(), HtmlDepth::default());
    let mut in_html_block = false;
    for (event, range) in Parser::new_ext(body, options).into_offset_iter() {
        match event {
            Md::Start(Tag::CodeBlock(_) | Tag::BlockQuote(_)) => unread_blocks += 1,
            Md::End(TagEnd::CodeBlock | TagEnd::BlockQuote(_)) => {
                unread_blocks = unread_blocks.saturating_sub(1)
            }
            Md::End(TagEnd::Paragraph | TagEnd::Heading(_) | TagEnd::TableCell) => {
                inline_html.depth = 0
            }
            // The whole block at once: a comment in it may span its lines.
            Md::Start(Tag::HtmlBlock) => {
                in_html_block = true;
                let text = html.scan(body, range, unread_blocks == 0);
                spans.extend(text);
            }
            Md::End(TagEnd::HtmlBlock) => in_html_block = false,
            // One tag or comment: no text of its own.
            Md::InlineHtml(_) => {
                inline_html.scan(body, range, false);
            }
            Md::Text(_)
                if !in_html_block
                    && unread_blocks == 0
                    && html.depth == 0
                    && inline_html.depth == 0 =>
            {
                spans.push(range)
            }
            _ => {}
        }
    }
    spans
}

/// How deep in [`UNREAD_ELEMENTS`] the HTML read so far is.
#[derive(Default)]
struct HtmlDepth {
    depth: usize,
}

impl HtmlDepth {
    /// Follow the tags of the HTML in `body[range]`; return the ranges of the
    /// text between them that is outside comments and unread elements
    /// (none unless `read_text`). A tag or comment left open runs to the end.
    fn scan(&mut self, body: &str, range: Range<usize>, read_text: bool) -> Vec<Range<usize>> {
        let mut spans = Vec::new();
        let Some(html) = body.get(range.clone()) else {
            return spans;
        };
        let base = range.start;
        let (mut text_from, mut from) = (0, 0);
        while let Some(offset) = html[from..].find('<') {
            let lt = from + offset;
            let rest = &html[lt..];
            let close_at = |pattern: &str, skip: usize| {
                rest[skip..]
                    .find(pattern)
                    .map_or(html.len(), |n| lt + skip + n + pattern.len())
            };
            let after = rest[1..].chars().next();
            let (end, element) = if rest.starts_with("<!--") {
                (close_at("-->", 4), None)
            } else if matches!(after, Some('!' | '?')) {
                (close_at(">", 1), None)
            } else if after.is_some_and(|c| c == '/' || c.is_ascii_alphabetic()) {
                let end = close_at(">", 1);
                (end, Some(&html[lt..end]))
            } else {
                // A `<` that starts no tag is text.
                from = lt + 1;
                continue;
            };
            if read_text && self.depth == 0 && text_from < lt {
                spans.push(base + text_from..base + lt);
            }
            if let Some(tag) = element {
                self.follow(tag);
            }
            (text_from, from) = (end, end);
        }
        if read_text && self.depth == 0 && text_from < html.len() {
            spans.push(base + text_from..base + html.len());
        }
        spans
    }

    /// Count `tag` (`<name ...>`, `</name>`) if it opens or closes an unread element.
    fn follow(&mut self, tag: &str) {
        let inner = tag.trim_start_matches('<');
        let (closing, inner) = match inner.strip_prefix('/') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let name_len = inner
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(inner.len());
        let name = &inner[..name_len];
        if !UNREAD_ELEMENTS.iter().any(|e| e.eq_ignore_ascii_case(name)) {
            return;
        }
        if closing {
            self.depth = self.depth.saturating_sub(1);
        } else if !tag.trim_end_matches('>').ends_with('/') {
            self.depth += 1;
        }
    }
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
            ("> @ClaudeBot old\n\n@ClaudeBot new one", Some("new one")),
            ("é@ClaudeBot x", None),
            ("é @ClaudeBot x é", Some("x é")),
        ];
        for (body, want) in cases {
            assert_eq!(find_command(body, &bot()), want, "{body:?}");
        }
    }

    fn ignored(bodies: &[&str]) {
        for body in bodies {
            assert_eq!(find_command(body, &bot()), None, "{body:?}");
        }
    }

    #[test]
    fn a_mention_in_a_fenced_code_block_is_ignored() {
        ignored(&[
            "```\n@ClaudeBot do it\n```",
            "Logs:\n```sh\n$ run\n@ClaudeBot do it\n```\nthat's all",
            "~~~\n@ClaudeBot do it\n~~~",
            "~~~text\nsee @ClaudeBot do it\n~~~\n",
            // Unclosed: the block runs to the end.
            "```\n@ClaudeBot do it",
            "- item\n\n  ```\n  @ClaudeBot do it\n  ```",
        ]);
    }

    #[test]
    fn a_mention_in_indented_code_is_ignored() {
        ignored(&[
            "Run this:\n\n    @ClaudeBot do it\n",
            "    $ echo hi\n    @ClaudeBot do it",
            "\t@ClaudeBot do it",
        ]);
    }

    #[test]
    fn a_mention_in_inline_code_is_ignored() {
        ignored(&[
            "type `please @ClaudeBot do it` in a comment",
            "``a ` @ClaudeBot do it``",
            "- `x @ClaudeBot y`",
        ]);
    }

    #[test]
    fn a_mention_in_a_quote_is_ignored() {
        ignored(&[
            "> @ClaudeBot do it",
            "> earlier:\n> @ClaudeBot do it\n\nthat was last week",
            // A lazy continuation line still belongs to the quote.
            "> earlier\n@ClaudeBot do it",
            "- > @ClaudeBot do it",
            "> > @ClaudeBot do it",
            "> ```\n> @ClaudeBot do it\n> ```",
        ]);
    }

    #[test]
    fn a_mention_in_an_html_blockquote_is_ignored() {
        ignored(&[
            "<blockquote>\n@ClaudeBot do it\n</blockquote>",
            "<blockquote>\n\n@ClaudeBot do it\n\n</blockquote>\n",
            "<BLOCKQUOTE cite=\"x\">\n\n- @ClaudeBot do it\n\n</BLOCKQUOTE>",
            "<blockquote><p>@ClaudeBot do it</p></blockquote>",
            "<div>\n<blockquote>\n\n@ClaudeBot do it\n\n</blockquote>\n</div>",
        ]);
    }

    #[test]
    fn a_mention_in_html_code_is_ignored() {
        ignored(&[
            "see <code>@ClaudeBot do it</code>",
            "<pre>\n@ClaudeBot do it\n</pre>",
            "<pre>\n\n@ClaudeBot do it\n\n</pre>",
            "<div><code>\n@ClaudeBot do it\n</code></div>",
        ]);
    }

    #[test]
    fn odd_markdown_never_panics() {
        let bodies = [
            "<",
            "<!",
            "<!--",
            "<!-- @ClaudeBot",
            "</",
            "</blockquote",
            "<blockquote",
            "é<é>@ClaudeBot",
            "```",
            "> ",
            "<pre><pre></pre>@ClaudeBot x",
            "\\@ClaudeBot x",
            "[@ClaudeBot](",
            "*@ClaudeBot",
            "|@ClaudeBot|\n|-|",
            "&#64;ClaudeBot x",
            "<a href=\"@ClaudeBot x\">y</a>",
            "\u{0}@ClaudeBot x",
            "日本語 @ClaudeBot 直して",
        ];
        for body in bodies {
            let _ = find_command(body, &bot());
        }
        assert_eq!(
            find_command("日本語 @ClaudeBot 直して", &bot()),
            Some("直して")
        );
        // Inside a tag's attribute is not text.
        assert_eq!(find_command("<a href=\"@ClaudeBot x\">y</a>", &bot()), None);
    }

    #[test]
    fn a_mention_in_an_html_comment_is_ignored() {
        ignored(&[
            // Inline, in a paragraph.
            "thanks <!-- @ClaudeBot do it --> all",
            "thanks <!-- later\n@ClaudeBot do it --> all",
            // As a block, blank lines and all.
            "<!-- @ClaudeBot do it -->",
            "<!--\n@ClaudeBot do it\n-->",
            "<!--\n\n@ClaudeBot do it\n\n-->\nthanks",
        ]);
    }

    #[test]
    fn a_mention_in_plain_text_still_counts() {
        let cases = [
            ("@ClaudeBot fix it", "fix it"),
            ("Hi!\n\n@ClaudeBot fix it", "fix it"),
            ("- @ClaudeBot fix it", "fix it"),
            ("1. first\n2. @ClaudeBot fix it", "fix it"),
            ("- [ ] @ClaudeBot fix it", "fix it"),
            ("## @ClaudeBot fix it", "fix it"),
            ("*@ClaudeBot fix it*", "fix it*"),
            ("**@ClaudeBot** fix it", "** fix it"),
            ("_please_ @ClaudeBot fix it", "fix it"),
            ("~~no~~ @ClaudeBot fix it", "fix it"),
            ("| a |\n|---|\n| @ClaudeBot fix it |", "fix it |"),
            (
                "see [@ClaudeBot fix it](https://example.com)",
                "fix it](https://example.com)",
            ),
            (
                "<details>\n\n@ClaudeBot fix it\n\n</details>",
                "fix it\n\n</details>",
            ),
            ("> quoted\n\n@ClaudeBot fix it", "fix it"),
            ("`code` @ClaudeBot fix it", "fix it"),
            ("<!-- note --> @ClaudeBot fix it", "fix it"),
            ("```\nlog\n```\n@ClaudeBot fix it", "fix it"),
            (
                "<blockquote>\n\nold\n\n</blockquote>\n\n@ClaudeBot fix it",
                "fix it",
            ),
            ("<div>\n@ClaudeBot fix it\n</div>", "fix it\n</div>"),
            (
                "<details><summary>more</summary>\n@ClaudeBot fix it\n</details>",
                "fix it\n</details>",
            ),
            ("line<br>@ClaudeBot fix it", "fix it"),
            ("<code>x</code> @ClaudeBot fix it", "fix it"),
            ("<br/><code/>@ClaudeBot fix it", "fix it"),
            ("1 < 2 @ClaudeBot fix it", "fix it"),
            ("the <code> tag is odd\n\n@ClaudeBot fix it", "fix it"),
            ("<code>x</code>\n\n@ClaudeBot fix it", "fix it"),
        ];
        for (body, want) in cases {
            assert_eq!(find_command(body, &bot()), Some(want), "{body:?}");
        }
    }

    #[test]
    fn the_first_mention_outside_code_and_quotes_counts() {
        let cases = [
            ("```\n@ClaudeBot old\n```\n@ClaudeBot new", "new"),
            ("> @ClaudeBot old\n\n@ClaudeBot new", "new"),
            ("`@ClaudeBot old` @ClaudeBot new", "new"),
            ("<!-- @ClaudeBot old -->\n@ClaudeBot new", "new"),
            ("    @ClaudeBot old\n\n@ClaudeBot new", "new"),
        ];
        for (body, want) in cases {
            assert_eq!(find_command(body, &bot()), Some(want), "{body:?}");
        }
    }

    #[test]
    fn the_command_is_the_raw_text_after_the_mention() {
        // Everything after the mention, code blocks and all, as written.
        let body = "@ClaudeBot fix this test:\n\n```rust\nassert_eq!(1, 2); // @ClaudeBot\n```\n\n> the error\n\nthanks";
        assert_eq!(
            find_command(body, &bot()),
            Some("fix this test:\n\n```rust\nassert_eq!(1, 2); // @ClaudeBot\n```\n\n> the error\n\nthanks")
        );
        assert_eq!(
            find_command("Hey @claudebot,  *please* fix `x`  \n", &bot()),
            Some("*please* fix `x`")
        );
        assert_eq!(
            find_command("a\r\n\r\n@ClaudeBot fix\r\nit\r\n", &bot()),
            Some("fix\r\nit")
        );
    }

    #[test]
    fn a_mention_only_in_code_is_an_ignored_delivery() {
        let event = Event::from_webhook(
            "issue_comment",
            &comment(json!("Try:\n```\n@ClaudeBot go\n```"), json!("me")),
            &bot(),
        );
        assert!(matches!(event, Ok(Event::Ignored(_))), "{event:?}");
    }

    #[test]
    fn review_commands_and_shas() {
        for yes in ["review", "Review", " REVIEW. ", "review!"] {
            assert!(is_review_command(yes), "{yes:?}");
        }
        for no in ["review this file", "please review", "", "reviews"] {
            assert!(!is_review_command(no), "{no:?}");
        }
        assert!(valid_sha("ec26c3e57ca3a959ca5aad62de7213c562f8c821"));
        for bad in [
            "",
            "abc",
            "../../x",
            "ec26c3e57ca3a959ca5aad62de7213c562f8c82z",
        ] {
            assert!(!valid_sha(bad), "{bad:?}");
        }
    }

    #[test]
    fn check_suites_pass_or_are_ignored() {
        let sha = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
        let suite = |conclusion: Value, pulls: Value| {
            json!({
                "action": "completed",
                "check_suite": {"head_sha": sha, "conclusion": conclusion, "pull_requests": pulls},
                "repository": {"full_name": "o/r"},
            })
        };
        let parse = |p: Value| Event::from_webhook("check_suite", &p, &bot());
        let pulls = json!([
            {"number": 2, "head": {"sha": sha}},
            {"number": 3, "head": {"sha": "0000000"}},
            {"number": 2, "head": {"sha": sha}},
        ]);
        let Ok(Event::ChecksPassed(passed)) = parse(suite(json!("success"), pulls)) else {
            panic!("a green suite passes");
        };
        assert_eq!(passed.pull_numbers, vec![2], "only PRs at this head, once");
        assert_eq!(passed.head_sha, sha);
        for other in [json!("failure"), json!("neutral"), json!(null)] {
            assert!(matches!(
                parse(suite(other, json!([]))),
                Ok(Event::Ignored(_))
            ));
        }
        let mut bad = suite(json!("success"), json!([]));
        bad["check_suite"]["head_sha"] = json!("../x");
        assert!(parse(bad).is_err());
        let mut bad = suite(
            json!("success"),
            json!([{"number": "2", "head": {"sha": sha}}]),
        );
        assert!(parse(bad.clone()).is_err());
        bad["action"] = json!("requested");
        assert!(matches!(parse(bad), Ok(Event::Ignored(_))));
    }

    #[test]
    fn opened_issues_for_labelling() {
        let payload = json!({
            "action": "opened",
            "issue": {"number": 4, "title": "Crash", "body": null, "user": {"login": "me"}},
            "repository": {"full_name": "o/r"},
        });
        let issue = opened_issue("issues", &payload, &bot()).unwrap().unwrap();
        assert_eq!(
            (issue.number, issue.title.as_str(), issue.body.as_str()),
            (4, "Crash", "")
        );
        assert_eq!(opened_issue("issue_comment", &payload, &bot()), Ok(None));
        let mut own = payload.clone();
        own["issue"]["user"]["login"] = json!("ClaudeBot");
        assert_eq!(opened_issue("issues", &own, &bot()), Ok(None));
        let mut edited = payload;
        edited["action"] = json!("edited");
        assert_eq!(opened_issue("issues", &edited, &bot()), Ok(None));
        assert_eq!(
            opened_issue("issues", &json!(1), &bot()),
            Err(EventError::NotAnObject)
        );
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
        assert_eq!(trigger.installation, None, "a repository's own webhook");
    }

    #[test]
    fn the_app_installation_comes_from_the_delivery() {
        let mut payload = comment(json!("@ClaudeBot go"), json!("me"));
        payload["installation"] = json!({"id": 4242, "node_id": "x"});
        let Ok(Event::Trigger(t)) = Event::from_webhook("issue_comment", &payload, &bot()) else {
            panic!("a trigger");
        };
        assert_eq!(t.installation, Some(4242));
        for bad in [json!("4242"), json!(-1), json!(1.5)] {
            payload["installation"]["id"] = bad;
            assert!(matches!(
                Event::from_webhook("issue_comment", &payload, &bot()),
                Err(EventError::WrongType {
                    field: "/installation/id",
                    ..
                })
            ));
        }
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
