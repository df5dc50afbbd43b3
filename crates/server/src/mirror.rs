//! Warm repository mirrors for the GitHub bot: one bare mirror per repository
//! under `[github] mirror_dir`, made and updated by `git` in the background,
//! never while a job waits. Owns that directory; it never touches a job.
//!
//! Readers (the bot's containers, through a read-only mount, cloning with
//! `--reference-if-able`) must never see a half-made mirror, and objects a
//! running clone may borrow must never vanish:
//! - a new mirror is cloned into `mirror_dir/.warmpool-tmp/` and renamed into
//!   place (one `rename(2)` on one filesystem);
//! - an update is `git fetch --prune --atomic`: objects first, then every ref
//!   in one transaction; no `gc`, no repack, no prune of objects ever runs
//!   (`gc.auto = 0`, `maintenance.auto = false` in each mirror's config).
//!
//! The token reaches git only through the environment: a credential helper
//! given with `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` reads
//! it from `GITHUB_TOKEN` when git asks; never in a URL, an argv or a file.

use crate::lock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warmpool_github::RepoName;

/// A token for git to read a repository with.
#[async_trait::async_trait]
pub trait GitToken: Send + Sync {
    async fn token(&self, repo: &RepoName) -> Result<String, String>;
}

/// The bot's personal access token (`GITHUB_TOKEN` / `GITHUB_TOKEN_FILE`).
pub struct PersonalToken(pub String);

#[async_trait::async_trait]
impl GitToken for PersonalToken {
    async fn token(&self, _repo: &RepoName) -> Result<String, String> {
        Ok(self.0.clone())
    }
}

/// A git run longer than this is killed (a 100 MB mirror takes seconds).
const GIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Temporary clones, beside the mirrors (the same filesystem, so a rename is atomic).
const TMP_DIR: &str = ".warmpool-tmp";

/// One repository's update state: at most one git run at a time.
#[derive(Default)]
struct Slot {
    running: bool,
    /// Asked again while running: one more update after this one.
    again: bool,
    /// When the last update succeeded.
    fresh: Option<Instant>,
}

/// Counts, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MirrorStats {
    pub created: u64,
    pub updated: u64,
    pub failed: u64,
}

pub struct Mirrors {
    dir: PathBuf,
    git_url: String,
    refresh: Duration,
    token: Arc<dyn GitToken>,
    slots: Mutex<HashMap<RepoName, Slot>>,
    created: AtomicU64,
    updated: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("[github] mirror_dir {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("the token for {repo}: {message}")]
    Token { repo: String, message: String },
    #[error("git {what} of {repo}: {message}")]
    Git {
        what: &'static str,
        repo: String,
        message: String,
    },
}

impl Mirrors {
    /// The keeper of the mirrors under `dir` (made if missing), fetched from
    /// `<git_url>/<owner>/<repo>.git`; the mirrors already there are kept fresh.
    pub fn open(
        dir: &Path,
        git_url: &str,
        refresh: Duration,
        token: Arc<dyn GitToken>,
    ) -> Result<Arc<Mirrors>, MirrorError> {
        let io = |source| MirrorError::Dir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Leftovers of a run that died mid-clone: older than any live clone
        // can be (another process sharing the directory may be making one).
        if let Ok(entries) = std::fs::read_dir(dir.join(TMP_DIR)) {
            for e in entries.flatten() {
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a > GIT_TIMEOUT) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let mut slots = HashMap::new();
        for repo in existing(dir) {
            slots.insert(repo, Slot::default());
        }
        Ok(Arc::new(Mirrors {
            dir: dir.to_path_buf(),
            git_url: git_url.trim_end_matches('/').to_string(),
            refresh,
            token,
            slots: Mutex::new(slots),
            created: AtomicU64::new(0),
            updated: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    /// Where `repo`'s mirror is on the host.
    pub fn path(&self, repo: &RepoName) -> PathBuf {
        self.dir
            .join(repo.owner())
            .join(format!("{}.git", repo.name()))
    }

    /// Whether `repo` has a mirror (a complete one: only those are renamed into place).
    pub fn has(&self, repo: &RepoName) -> bool {
        self.path(repo).join("HEAD").is_file()
    }

    pub fn stats(&self) -> MirrorStats {
        MirrorStats {
            created: self.created.load(Ordering::Relaxed),
            updated: self.updated.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Make or update `repo`'s mirror in the background. While an update of it
    /// runs, requests coalesce into one more update after it.
    pub fn request(self: &Arc<Self>, repo: &RepoName) {
        {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(repo.clone()).or_default();
            if slot.running {
                slot.again = true;
                return;
            }
            slot.running = true;
        }
        let (me, repo) = (self.clone(), repo.clone());
        tokio::spawn(async move {
            loop {
                let ok = match me.update(&repo).await {
                    Ok(made) => {
                        let n = if made { &me.created } else { &me.updated };
                        n.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(repo = %repo, made, "mirror up to date");
                        true
                    }
                    Err(e) => {
                        me.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(repo = %repo, error = %e, "updating a mirror failed");
                        false
                    }
                };
                let mut slots = lock(&me.slots);
                let slot = slots.entry(repo.clone()).or_default();
                if ok {
                    slot.fresh = Some(Instant::now());
                }
                if std::mem::take(&mut slot.again) {
                    continue;
                }
                slot.running = false;
                return;
            }
        });
    }

    /// Keep every known mirror fresher than `[github] mirror_refresh` until
    /// `stop` is cancelled.
    pub fn keep_fresh(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let me = self.clone();
        let tick = (self.refresh / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                for repo in me.stale(Instant::now()) {
                    me.request(&repo);
                }
            }
        });
    }

    /// The repositories whose mirror was not updated within `refresh` of `now`.
    fn stale(&self, now: Instant) -> Vec<RepoName> {
        lock(&self.slots)
            .iter()
            .filter(|(_, s)| !s.running && s.fresh.is_none_or(|t| now - t >= self.refresh))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Make (true) or update (false) `repo`'s mirror.
    async fn update(&self, repo: &RepoName) -> Result<bool, MirrorError> {
        let token = self
            .token
            .token(repo)
            .await
            .map_err(|message| MirrorError::Token {
                repo: repo.to_string(),
                message,
            })?;
        let path = self.path(repo);
        if self.has(repo) {
            self.git(repo, "fetch", &token, &path, |c| {
                c.args(["fetch", "--quiet", "--prune", "--atomic", "origin"]);
            })
            .await?;
            return Ok(false);
        }
        let url = format!("{}/{}.git", self.git_url, repo);
        let io = |e: std::io::Error| MirrorError::Git {
            what: "clone",
            repo: repo.to_string(),
            message: e.to_string(),
        };
        let tmp_root = self.dir.join(TMP_DIR);
        std::fs::create_dir_all(&tmp_root).map_err(io)?;
        let tmp = tmp_root.join(format!(
            "{}+{}.{}",
            repo.owner(),
            repo.name(),
            warmpool_core::labels::unique_suffix()
        ));
        let made = async {
            self.git(repo, "clone", &token, &tmp_root, |c| {
                c.args(["clone", "--quiet", "--mirror", "--", &url])
                    .arg(&tmp);
            })
            .await?;
            for (k, v) in [("gc.auto", "0"), ("maintenance.auto", "false")] {
                self.git(repo, "config", &token, &tmp, |c| {
                    c.args(["config", k, v]);
                })
                .await?;
            }
            let owner = path.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(owner).map_err(io)?;
            match std::fs::rename(&tmp, &path) {
                Ok(()) => Ok(()),
                // Made meanwhile by another process sharing the directory:
                // that one stays (readers may be using it), this one goes.
                Err(_) if self.has(repo) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    Ok(())
                }
                Err(e) => Err(io(e)),
            }
        }
        .await;
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        made.map(|()| true)
    }

    /// Run git in `cwd` with the token for the credential helper only.
    async fn git(
        &self,
        repo: &RepoName,
        what: &'static str,
        token: &str,
        cwd: &Path,
        args: impl FnOnce(&mut tokio::process::Command),
    ) -> Result<(), MirrorError> {
        let err = |message: String| MirrorError::Git {
            what,
            repo: repo.to_string(),
            message,
        };
        let mut c = tokio::process::Command::new("git");
        c.current_dir(cwd)
            .env("GITHUB_TOKEN", token)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .envs(credential_helper_env(&self.git_url))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        args(&mut c);
        let out = match tokio::time::timeout(GIT_TIMEOUT, c.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(err(format!("cannot run git: {e} (is git installed?)"))),
            Err(_) => return Err(err(format!("took over {GIT_TIMEOUT:?}"))),
        };
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.replace(token, "[redacted]");
        Err(err(format!("{}: {}", out.status, stderr.trim())))
    }
}

/// The environment that gives git a credential helper for `git_url` reading
/// `GITHUB_TOKEN` (expanded by git's shell when it asks, so the value is in no
/// config, URL or argv); `credential.helper=` first drops any other helper.
pub fn credential_helper_env(git_url: &str) -> Vec<(String, String)> {
    vec![
        ("GIT_CONFIG_COUNT".into(), "2".into()),
        ("GIT_CONFIG_KEY_0".into(), "credential.helper".into()),
        ("GIT_CONFIG_VALUE_0".into(), String::new()),
        ("GIT_CONFIG_KEY_1".into(), format!("credential.{git_url}.helper")),
        (
            "GIT_CONFIG_VALUE_1".into(),
            r#"!f() { test "$1" = get || return 0; echo username=x-access-token; echo "password=${GITHUB_TOKEN}"; }; f"#
                .into(),
        ),
    ]
}

/// The mirrors already under `dir`: `<owner>/<name>.git` with a HEAD.
fn existing(dir: &Path) -> Vec<RepoName> {
    let mut found = Vec::new();
    let Ok(owners) = std::fs::read_dir(dir) else {
        return found;
    };
    for owner in owners.flatten() {
        let Ok(repos) = std::fs::read_dir(owner.path()) else {
            continue;
        };
        let owner = owner.file_name().to_string_lossy().into_owned();
        for r in repos.flatten() {
            let name = r.file_name().to_string_lossy().into_owned();
            let Some(name) = name.strip_suffix(".git") else {
                continue;
            };
            if !r.path().join("HEAD").is_file() {
                continue;
            }
            if let Ok(repo) = RepoName::parse(&format!("{owner}/{name}")) {
                found.push(repo);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors(refresh: Duration) -> (Arc<Mirrors>, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "warmpool-mirror-unit-{}",
            warmpool_core::labels::unique_suffix()
        ));
        let m = Mirrors::open(
            &dir,
            "http://127.0.0.1:1",
            refresh,
            Arc::new(PersonalToken("t".into())),
        )
        .expect("open");
        (m, dir)
    }

    #[test]
    fn layout_and_staleness() {
        let (m, dir) = mirrors(Duration::from_secs(600));
        let repo = RepoName::parse("octo/hello").expect("name");
        assert_eq!(m.path(&repo), dir.join("octo").join("hello.git"));
        assert!(!m.has(&repo));
        let now = Instant::now();
        lock(&m.slots).insert(repo.clone(), Slot::default());
        assert_eq!(m.stale(now), vec![repo.clone()], "never updated: stale");
        lock(&m.slots).insert(
            repo.clone(),
            Slot {
                fresh: Some(now),
                ..Slot::default()
            },
        );
        assert!(m.stale(now + Duration::from_secs(599)).is_empty());
        assert_eq!(m.stale(now + Duration::from_secs(600)), vec![repo.clone()]);
        lock(&m.slots).insert(
            repo.clone(),
            Slot {
                running: true,
                ..Slot::default()
            },
        );
        assert!(m.stale(now).is_empty(), "being updated: not asked again");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn existing_mirrors_are_found_and_fresh_temporaries_kept() {
        let dir = std::env::temp_dir().join(format!(
            "warmpool-mirror-unit-{}",
            warmpool_core::labels::unique_suffix()
        ));
        std::fs::create_dir_all(dir.join("octo/hello.git")).expect("mkdir");
        std::fs::write(dir.join("octo/hello.git/HEAD"), "ref: refs/heads/main\n").expect("HEAD");
        std::fs::create_dir_all(dir.join("octo/half.git")).expect("mkdir");
        // A fresh temporary clone may be another process's: it stays.
        std::fs::create_dir_all(dir.join(TMP_DIR).join("octo+x.1")).expect("mkdir");
        let m = Mirrors::open(
            &dir,
            "http://127.0.0.1:1",
            Duration::from_secs(60),
            Arc::new(PersonalToken("t".into())),
        )
        .expect("open");
        let known: Vec<_> = lock(&m.slots).keys().cloned().collect();
        assert_eq!(known, vec![RepoName::parse("octo/hello").expect("name")]);
        assert!(dir.join(TMP_DIR).join("octo+x.1").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_helper_names_the_variable_never_a_value() {
        let env = credential_helper_env("https://github.com");
        let text = format!("{env:?}");
        assert!(
            text.contains("credential.https://github.com.helper"),
            "{text}"
        );
        assert!(text.contains("${GITHUB_TOKEN}"), "{text}");
    }
}
