//! `mention`: [`find_command`] (crates/github/src/event.rs), the mention
//! parser over a comment's Markdown (pulldown-cmark), fed any text.
//!
//! Properties:
//! - a command found is a trimmed piece of the body itself, after a mention
//!   of the bot (`@name`, any case);
//! - no `@` in the body, no command;
//! - the body quoted line by line (`> ` before every line) holds no command: a
//!   quoted request never runs again.

use crate::webhook::BOT;
use warmpool_github::event::find_command;
use warmpool_github::BotName;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let bot = BotName::new(BOT).expect("a valid login");
    let mention = format!("@{BOT}");
    if let Some(command) = find_command(text, &bot) {
        let start = command.as_ptr() as usize - text.as_ptr() as usize;
        assert!(
            start <= text.len() && start + command.len() <= text.len(),
            "the command is not a piece of the body"
        );
        assert_eq!(command, command.trim());
        assert!(
            text[..start].to_ascii_lowercase().contains(&mention),
            "a command with no mention before it"
        );
    }
    if !text.contains('@') {
        assert_eq!(find_command(text, &bot), None);
    }
    // Every line ending Markdown knows (CRLF, CR, LF) starts a quoted line.
    let quoted: String = text
        .split("\r\n")
        .flat_map(|l| l.split(['\r', '\n']))
        .map(|l| format!("> {l}\n"))
        .collect();
    assert_eq!(
        find_command(&quoted, &bot),
        None,
        "a mention counts in a quote: {quoted:?}"
    );
}
