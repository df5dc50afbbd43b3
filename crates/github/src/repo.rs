//! Names that end up in GitHub API URLs: a repository's `owner/name` and the
//! bot's own login, each checked once when it enters so that the client can
//! put it in a path without escaping. No I/O.

use std::fmt;

/// Longest owner or repository name accepted (GitHub's own limit is 100 for names, 39 for users).
const MAX_PART: usize = 100;
/// GitHub usernames are at most 39 characters.
const MAX_LOGIN: usize = 39;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{0:?} is not a repository name; expected \"owner/name\" of letters, digits, '-', '_' and '.'")]
    BadRepo(String),
    #[error("{0:?} is not a GitHub login; expected up to 39 letters, digits and '-', with an optional \"[bot]\" suffix")]
    BadLogin(String),
}

/// A repository's `owner/name`, safe to put in a URL path as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    full: String,
    slash: usize,
}

impl RepoName {
    pub fn parse(full_name: &str) -> Result<RepoName, NameError> {
        let bad = || NameError::BadRepo(shorten(full_name, 120));
        let (owner, name) = full_name.split_once('/').ok_or_else(bad)?;
        if !valid_part(owner) || !valid_part(name) {
            return Err(bad());
        }
        Ok(RepoName {
            full: full_name.to_string(),
            slash: owner.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn owner(&self) -> &str {
        &self.full[..self.slash]
    }

    pub fn name(&self) -> &str {
        &self.full[self.slash + 1..]
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

// "." and ".." would walk up the URL path; a second '/' is refused by the charset.
fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_PART
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The bot's GitHub login, as people @mention it. A GitHub App's login is
/// `name[bot]`; its mention and its comments' author are matched without the suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotName {
    name: String,
}

impl BotName {
    pub fn new(login: &str) -> Result<BotName, NameError> {
        let name = login.strip_suffix("[bot]").unwrap_or(login);
        let valid = !name.is_empty()
            && name.len() <= MAX_LOGIN
            && !name.starts_with('-')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(NameError::BadLogin(shorten(login, 60)));
        }
        Ok(BotName {
            name: name.to_string(),
        })
    }

    /// The name as mentioned, without `@` or `[bot]`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Whether `login` is the bot itself (`name` or `name[bot]`, any case).
    pub fn is_self(&self, login: &str) -> bool {
        let base = match login.len().checked_sub("[bot]".len()) {
            Some(cut)
                if login.is_char_boundary(cut) && login[cut..].eq_ignore_ascii_case("[bot]") =>
            {
                &login[..cut]
            }
            _ => login,
        };
        base.eq_ignore_ascii_case(&self.name)
    }
}

impl fmt::Display for BotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// At most `max` chars of `s`, for messages that quote outside input.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_are_owner_slash_name() {
        let repo = RepoName::parse("Codertocat/Hello-World").unwrap();
        assert_eq!(repo.owner(), "Codertocat");
        assert_eq!(repo.name(), "Hello-World");
        assert_eq!(repo.to_string(), "Codertocat/Hello-World");
        assert!(RepoName::parse("my_org/repo.rs").is_ok());
        for bad in [
            "",
            "owner",
            "/name",
            "owner/",
            "a/b/c",
            "owner/..",
            "../name",
            "owner/na me",
            "owner/name?x=1",
            "owner/name#x",
            "owner/%2e%2e",
            "ówner/name",
            "owner/name\n",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RepoName::parse(&format!("o/{}", "n".repeat(101))).is_err());
    }

    #[test]
    fn bot_names_match_their_app_login_in_any_case() {
        let bot = BotName::new("ClaudeBot").unwrap();
        assert!(bot.is_self("claudebot"));
        assert!(bot.is_self("ClaudeBot[bot]"));
        assert!(bot.is_self("CLAUDEBOT[BOT]"));
        assert!(!bot.is_self("ClaudeBot2"));
        assert!(!bot.is_self("other[bot]"));
        assert!(!bot.is_self("[bot]"));
        assert!(!bot.is_self("é"));
        let app = BotName::new("claudebot[bot]").unwrap();
        assert_eq!(app.as_str(), "claudebot");
        assert!(app.is_self("ClaudeBot"));
        for bad in ["", "[bot]", "-x", "has space", "a_b", &"x".repeat(40)] {
            assert!(BotName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shorten_counts_chars() {
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("hé", 2), "hé");
    }
}
