//! How often an unauthorized user is told they may not trigger the bot: at
//! most once per user and issue per [`RefusalLimit::WINDOW`], so that a
//! repeated mention (or a redelivered one) does not fill the thread with
//! refusals. Kept in memory, bounded; the time is passed in, so the rule is
//! tested without waiting.

use crate::repo::RepoName;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When a refusal was last posted, per repository, issue and user.
#[derive(Debug)]
pub struct RefusalLimit {
    window: Duration,
    capacity: usize,
    /// (repository, issue, user), names lowercased: GitHub's are case-insensitive.
    last: HashMap<(String, u64, String), Instant>,
}

impl Default for RefusalLimit {
    fn default() -> Self {
        RefusalLimit::new(RefusalLimit::WINDOW, RefusalLimit::CAPACITY)
    }
}

impl RefusalLimit {
    /// One refusal per user and issue in this long.
    pub const WINDOW: Duration = Duration::from_secs(60 * 60);
    /// At most this many (repository, issue, user) remembered.
    pub const CAPACITY: usize = 10_000;

    /// A limit of one refusal per `window`, remembering at most `capacity`
    /// (at least one) users and issues.
    pub fn new(window: Duration, capacity: usize) -> RefusalLimit {
        RefusalLimit {
            window,
            capacity: capacity.max(1),
            last: HashMap::new(),
        }
    }

    /// Whether a refusal to `user` on `repo`'s issue `issue` may be posted
    /// `now`: none was in the window before. If so, it is counted as posted.
    ///
    /// When the map is full, entries older than the window go first; if all
    /// are recent, the oldest goes (its user may then be told again early).
    pub fn allow(&mut self, repo: &RepoName, issue: u64, user: &str, now: Instant) -> bool {
        let key = (
            repo.as_str().to_ascii_lowercase(),
            issue,
            user.to_ascii_lowercase(),
        );
        if let Some(&then) = self.last.get(&key) {
            if now.saturating_duration_since(then) < self.window {
                return false;
            }
        } else if self.last.len() >= self.capacity {
            self.evict(now);
        }
        self.last.insert(key, now);
        true
    }

    /// How many users and issues are remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        let window = self.window;
        self.last
            .retain(|_, then| now.saturating_duration_since(*then) < window);
        while self.last.len() >= self.capacity {
            let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, then)| **then)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            self.last.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    #[test]
    fn one_refusal_per_user_and_issue_per_hour() {
        let mut limit = RefusalLimit::default();
        let t0 = Instant::now();
        let r = repo("o/r");
        let minute = Duration::from_secs(60);

        // Two mentions on one issue within the hour: one refusal.
        assert!(limit.allow(&r, 7, "mallory", t0));
        assert!(!limit.allow(&r, 7, "mallory", t0));
        assert!(!limit.allow(&r, 7, "MALLORY", t0 + 59 * minute));
        assert!(!limit.allow(&repo("O/R"), 7, "mallory", t0 + 59 * minute));
        // Another issue, another repository, another user: another refusal.
        assert!(limit.allow(&r, 8, "mallory", t0 + minute));
        assert!(limit.allow(&repo("o/other"), 7, "mallory", t0 + minute));
        assert!(limit.allow(&r, 7, "eve", t0 + minute));
        // After the hour (from the refusal posted, not the mentions denied): again.
        assert!(limit.allow(&r, 7, "mallory", t0 + 60 * minute));
        assert!(!limit.allow(&r, 7, "mallory", t0 + 61 * minute));
        assert!(!limit.allow(&r, 7, "mallory", t0 + 119 * minute));
        assert!(limit.allow(&r, 7, "mallory", t0 + 120 * minute));
        assert_eq!(limit.len(), 4);
    }

    #[test]
    fn the_map_is_bounded_old_entries_go_first() {
        let t0 = Instant::now();
        let hour = RefusalLimit::WINDOW;
        let second = Duration::from_secs(1);
        let r = repo("o/r");
        let mut limit = RefusalLimit::new(hour, 3);
        assert!(limit.allow(&r, 1, "a", t0));
        assert!(limit.allow(&r, 2, "a", t0 + hour / 2));
        assert!(limit.allow(&r, 3, "a", t0 + hour / 2 + second));
        assert_eq!(limit.len(), 3);

        // Full: the expired entry (issue 1) goes; the recent ones stay.
        assert!(limit.allow(&r, 4, "a", t0 + hour + second));
        assert_eq!(limit.len(), 3);
        assert!(!limit.allow(&r, 2, "a", t0 + hour + second));
        assert!(!limit.allow(&r, 3, "a", t0 + hour + second));

        // Full of recent entries: the oldest (issue 2) goes.
        assert!(limit.allow(&r, 5, "a", t0 + hour + 2 * second));
        assert_eq!(limit.len(), 3);
        assert!(!limit.allow(&r, 3, "a", t0 + hour + 2 * second));
        assert!(!limit.allow(&r, 4, "a", t0 + hour + 2 * second));
        assert!(!limit.allow(&r, 5, "a", t0 + hour + 2 * second));

        // Many users at once never grow it past its capacity.
        for n in 0..100 {
            limit.allow(&r, 9, &format!("user{n}"), t0 + hour + 3 * second);
        }
        assert_eq!(limit.len(), 3);
    }
}
