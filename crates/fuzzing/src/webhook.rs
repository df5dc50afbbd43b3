//! `webhook`: a GitHub delivery as `POST /webhooks/github` takes it
//! (crates/server/src/github.rs): the `X-Hub-Signature-256` header checked
//! over the body ([`Verifier`]), then the body as JSON
//! (`serde_json::from_slice`, as the handler does) and [`Event::from_webhook`].
//!
//! The input: one byte choosing the `X-GitHub-Event` name, then the body. The
//! seeds are GitHub's documented example payloads.
//!
//! Properties:
//! - the signature header (the body's first bytes, as text): accepted as
//!   well-formed exactly when it is `sha256=` and 64 hex digits; a well-formed
//!   one matches exactly when it is the body's signature; the body hashed in
//!   pieces gives the same verdict as whole; `sign` always verifies;
//! - the event: `ping` is a ping; a trigger's command is not empty, trimmed,
//!   is what [`find_command`] finds in the body the payload carries, and its
//!   author is not the bot; a reason to ignore is short whatever the payload
//!   holds; errors only for events the bot handles.

use crate::Mix;
use warmpool_github::event::find_command;
use warmpool_github::signature::{sign, Verifier};
use warmpool_github::{BotName, Event, RepoName};

/// The events the bot handles, and one it does not.
pub const EVENTS: [&str; 5] = [
    "ping",
    "issue_comment",
    "pull_request_review_comment",
    "issues",
    "push",
];

pub const BOT: &str = "warmpool-bot";

const SECRET: &[u8] = b"It's a Secret to Everybody";

pub fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    signature(body);
    event(EVENTS[usize::from(which) % EVENTS.len()], body);
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn signature(body: &[u8]) {
    let head = &body[..body.len().min(80)];
    let header = String::from_utf8_lossy(head);
    let well_formed = header.strip_prefix("sha256=").is_some_and(is_hex64);
    let expected = sign(SECRET, body);
    match Verifier::new(SECRET, Some(&header)) {
        Ok(mut v) => {
            assert!(well_formed, "{header:?} was taken as a signature");
            let matches = header[7..].eq_ignore_ascii_case(&expected[7..]);
            let mut mix = Mix::new(body);
            let mut rest = body;
            while !rest.is_empty() {
                let (piece, r) = rest.split_at(mix.size(64).min(rest.len()));
                v.update(piece);
                rest = r;
            }
            assert_eq!(v.finish().is_ok(), matches);
        }
        Err(e) => {
            assert!(!well_formed, "{header:?} was refused: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
    let mut v = Verifier::new(SECRET, Some(&expected)).expect("sign gives a well-formed header");
    v.update(body);
    assert!(v.finish().is_ok(), "a body's own signature does not verify");
}

fn event(name: &str, body: &[u8]) {
    // What the handler does with a signed body.
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let bot = BotName::new(BOT).expect("a valid login");
    let handled = name != "push";
    match Event::from_webhook(name, &payload, &bot) {
        Ok(Event::Ping) => assert_eq!(name, "ping"),
        Ok(Event::Ignored(why)) => {
            assert_ne!(name, "ping");
            assert!(!why.is_empty());
            assert!(
                why.chars().count() <= 1000,
                "a reason to ignore of {} characters",
                why.chars().count()
            );
        }
        Ok(Event::Trigger(t)) => {
            assert!(handled && name != "ping");
            assert!(!t.command.is_empty());
            assert_eq!(t.command, t.command.trim());
            assert!(!bot.is_self(&t.author));
            let body_at = if name == "issues" {
                "/issue/body"
            } else {
                "/comment/body"
            };
            let text = payload
                .pointer(body_at)
                .and_then(|v| v.as_str())
                .unwrap_or("");
            assert_eq!(find_command(text, &bot), Some(t.command.as_str()));
            let repo = RepoName::parse(t.repo_full_name.as_str()).expect("parsed once already");
            assert_eq!(repo, t.repo_full_name);
        }
        Ok(Event::ChecksPassed(c)) => {
            assert_eq!(name, "check_suite");
            assert!(warmpool_github::valid_sha(&c.head_sha));
        }
        Err(e) => {
            assert!(handled && name != "ping", "{name}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
}
