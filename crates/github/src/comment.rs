//! The comments the bot posts: a job's answer, a short failure notice, a polite
//! refusal. Pure text in, text out; they never carry a job's stderr, a secret or
//! a stack trace, and never @mention the bot (its own comments must not trigger it).

use crate::repo::BotName;

/// GitHub refuses comment bodies longer than this many characters.
pub const MAX_COMMENT_CHARS: usize = 65_536;

/// Zero-width space put between `@` and the bot's name. It keeps the output as
/// the job printed it to the eye, inside and outside code blocks alike, while
/// GitHub (and [`crate::event::find_command`]) no longer sees a mention.
/// Backticks would show up literally inside a code block and change the text.
const DEFANG: char = '\u{200B}';

/// How a job ended when it did not succeed. Only these fixed words reach the
/// thread, never the job's own error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The job ran and exited non-zero (or was killed by a signal: no code).
    Failed {
        exit_code: Option<i32>,
    },
    TimedOut,
    Cancelled,
    /// The service stopped while the job ran.
    Interrupted,
    /// It never started (refused, queue full, no container).
    NotStarted,
}

/// The answer to a command: the job's stdout with mentions of the bot defanged,
/// cut to GitHub's limit with a note that names the job.
pub fn answer_comment(stdout: &str, job_id: &str, bot: &BotName) -> String {
    let job = job_ref(job_id);
    let text = defang_mentions(stdout, bot);
    if text.trim().is_empty() {
        return format!("The job finished and printed nothing (job {job}).");
    }
    let total = text.chars().count();
    if total <= MAX_COMMENT_CHARS {
        return text;
    }
    // The note's length depends on the count it states; size it for the largest.
    let note =
        |kept: usize| format!("\n\n… output cut at {kept} characters; full output: job {job}");
    const FENCE_CLOSE: &str = "```";
    let reserve = note(MAX_COMMENT_CHARS).chars().count() + 1 + FENCE_CLOSE.len();
    let kept = MAX_COMMENT_CHARS.saturating_sub(reserve);
    let cut = text
        .char_indices()
        .nth(kept)
        .map_or(text.len(), |(at, _)| at);
    let mut out = text[..cut].to_string();
    if open_code_fence(&out) {
        // Otherwise the note would render inside the code block.
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(FENCE_CLOSE);
    }
    out.push_str(&note(kept));
    out
}

/// The notice for a job that did not succeed: its id and how it ended.
pub fn failure_comment(job_id: &str, failure: Failure) -> String {
    let job = job_ref(job_id);
    let how = match failure {
        Failure::Failed {
            exit_code: Some(code),
        } => format!("failed with exit code {code}"),
        Failure::Failed { exit_code: None } => "failed (killed by a signal)".to_string(),
        Failure::TimedOut => "timed out and was stopped".to_string(),
        Failure::Cancelled => "was cancelled".to_string(),
        Failure::Interrupted => "was interrupted when the service stopped".to_string(),
        Failure::NotStarted => "could not be started".to_string(),
    };
    format!("Sorry, that did not work: job {job} {how}. A maintainer can look it up by its id.")
}

/// The answer to someone who may not give the bot commands.
pub fn unauthorized_comment(author: &str) -> String {
    let who = if plain_login(author) {
        format!("@{author}")
    } else {
        "there".to_string()
    };
    format!(
        "Thanks {who}, but I only take commands from the people this repository's \
         maintainers have allowed. Ask one of them to add you, or to run it for you."
    )
}

/// `@name` in any case, wherever it appears, becomes `@` + zero-width space + `name`.
fn defang_mentions(text: &str, bot: &BotName) -> String {
    let name = bot.as_str().as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(offset) = text[from..].find('@') {
        let at = from + offset;
        from = at + 1;
        if text
            .as_bytes()
            .get(at + 1..at + 1 + name.len())
            .is_some_and(|candidate| candidate.eq_ignore_ascii_case(name))
        {
            out.push_str(&text[copied..=at]);
            out.push(DEFANG);
            copied = at + 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn open_code_fence(text: &str) -> bool {
    text.lines()
        .filter(|line| line.trim_start().starts_with("```"))
        .count()
        % 2
        == 1
}

/// The job id as shown: in backticks, only the characters ids are made of.
fn job_ref(job_id: &str) -> String {
    let id: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        .take(64)
        .collect();
    if id.is_empty() {
        "(no id)".to_string()
    } else {
        format!("`{id}`")
    }
}

fn plain_login(login: &str) -> bool {
    let name = login.strip_suffix("[bot]").unwrap_or(login);
    !name.is_empty()
        && name.len() <= 39
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::find_command;

    fn bot() -> BotName {
        BotName::new("ClaudeBot").unwrap()
    }

    #[test]
    fn short_output_is_posted_as_is() {
        let out = "All tests pass.\n```\ncargo test\n```\n";
        assert_eq!(answer_comment(out, "j1", &bot()), out);
    }

    #[test]
    fn mentions_of_the_bot_are_defanged() {
        let out = answer_comment(
            "ask @ClaudeBot or @claudebot[bot], not @ClaudeBot2; @other stays\n```\n@CLAUDEBOT\n```",
            "j1",
            &bot(),
        );
        assert_eq!(
            out,
            "ask @\u{200B}ClaudeBot or @\u{200B}claudebot[bot], not @\u{200B}ClaudeBot2; \
             @other stays\n```\n@\u{200B}CLAUDEBOT\n```"
        );
        assert_eq!(find_command(&out, &bot()), None);
    }

    #[test]
    fn empty_output_says_so() {
        let out = answer_comment(" \n", "j1", &bot());
        assert!(out.contains("printed nothing"), "{out}");
        assert!(out.contains("`j1`"), "{out}");
    }

    #[test]
    fn output_at_the_limit_is_not_cut() {
        let out = "é".repeat(MAX_COMMENT_CHARS);
        assert_eq!(answer_comment(&out, "j1", &bot()), out);
    }

    #[test]
    fn long_output_is_cut_by_chars_with_a_note() {
        // Multi-byte chars: a byte count would cut too early or split one.
        let out = "日本".repeat(MAX_COMMENT_CHARS);
        let comment = answer_comment(&out, "job-42", &bot());
        let chars = comment.chars().count();
        assert!(chars <= MAX_COMMENT_CHARS, "{chars}");
        assert!(chars > MAX_COMMENT_CHARS - 200, "{chars}");
        let (kept, note) = comment.split_once("\n\n… ").unwrap();
        assert!(out.starts_with(kept));
        assert_eq!(
            note,
            format!(
                "output cut at {} characters; full output: job `job-42`",
                kept.chars().count()
            )
        );
    }

    #[test]
    fn defanging_counts_towards_the_limit() {
        let out = "@ClaudeBot ".repeat(MAX_COMMENT_CHARS / 11);
        assert!(out.chars().count() <= MAX_COMMENT_CHARS);
        let comment = answer_comment(&out, "j", &bot());
        assert!(comment.chars().count() <= MAX_COMMENT_CHARS);
        assert!(comment.contains("output cut at"));
        assert_eq!(find_command(&comment, &bot()), None);
    }

    #[test]
    fn a_cut_inside_a_code_block_closes_it_before_the_note() {
        let out = format!("```\n{}", "x\n".repeat(MAX_COMMENT_CHARS));
        let comment = answer_comment(&out, "j", &bot());
        assert!(comment.chars().count() <= MAX_COMMENT_CHARS);
        let tail: String = comment.chars().skip(MAX_COMMENT_CHARS - 100).collect();
        assert!(comment.contains("x\n```\n\n… output cut at"), "{tail}");
        assert!(!open_code_fence(&comment));
    }

    #[test]
    fn failures_name_the_job_and_how_it_ended_only() {
        let cases = [
            (
                Failure::Failed { exit_code: Some(3) },
                "failed with exit code 3",
            ),
            (Failure::Failed { exit_code: None }, "killed by a signal"),
            (Failure::TimedOut, "timed out"),
            (Failure::Cancelled, "cancelled"),
            (Failure::Interrupted, "interrupted"),
            (Failure::NotStarted, "could not be started"),
        ];
        for (failure, words) in cases {
            let comment = failure_comment("0190-abc", failure);
            assert!(comment.contains(words), "{comment}");
            assert!(comment.contains("`0190-abc`"), "{comment}");
            assert!(comment.len() < 200, "{comment}");
        }
        // An id is shown only with the characters ids are made of.
        let comment = failure_comment("x`<script>@ClaudeBot\n", Failure::TimedOut);
        assert!(comment.contains("`xscriptClaudeBot`"), "{comment}");
    }

    #[test]
    fn unauthorized_users_are_answered_politely() {
        let comment = unauthorized_comment("octocat");
        assert!(comment.starts_with("Thanks @octocat,"), "{comment}");
        let comment = unauthorized_comment("[evil](http://x)");
        assert!(comment.starts_with("Thanks there,"), "{comment}");
        assert!(!comment.contains("evil"));
    }
}
