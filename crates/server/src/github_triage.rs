//! The bot's jobs that no mention asks for: labels for a newly opened issue
//! (`auto-tag`) and a pull request's review once its head commit's checks pass
//! (`pr-review`, or `@bot review` by hand), each answered in its own way. One
//! delivery key per issue, and per pull request and head SHA, keeps each to one
//! job across redeliveries, several suites and restarts. Decisions live in
//! `warmpool_github::triage`; this module only wires them.

use super::{failure_of, note, GithubBot, Meta};
use crate::lock;
use crate::service::Service;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use warmpool_github::triage::{
    auto_tag_input, auto_tag_key, checks_verdict, chosen_labels, default_label_rules,
    existing_only, keyword_labels, review_body, review_key, ChecksVerdict,
};
use warmpool_github::{
    failure_comment, valid_sha, ChecksPassed, GitHubClient, OpenedIssue, Operation, RepoName,
    Trigger,
};
use warmpool_store::{JobRecord, JobState, NewJob};

impl GithubBot {
    /// An issue was opened: label it in the background (the labels to choose
    /// from are read first, so the job's stdin has them). Anyone who can open
    /// an issue starts one such job per issue (the job has no token; its cost
    /// is bounded by the profile's timeout and queue).
    pub(super) fn label_later(self: &Arc<Self>, svc: &Arc<Service>, issue: OpenedIssue) {
        let (bot, svc) = (self.clone(), svc.clone());
        tokio::spawn(async move {
            let repo = issue.repo_full_name.clone();
            let api = match bot.api(issue.installation, &repo).await {
                Ok(api) => api,
                Err(e) => {
                    return tracing::warn!(repo = %repo, error = %e, "no GitHub client for auto-labelling")
                }
            };
            let existing = match api.list_labels(&repo).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(repo = %repo, error = %e, "listing labels failed; the job chooses blind");
                    Vec::new()
                }
            };
            let meta = Meta {
                repo: repo.to_string(),
                issue_number: issue.number,
                is_pull_request: false,
                branch: None,
                installation: issue.installation,
                operation: Operation::AutoTag.as_str().to_string(),
                sha: None,
                issue_text: Some(keyword_text(&issue.title, &issue.body)),
            };
            let stdin = auto_tag_input(&issue.title, &issue.body, &existing);
            let job = bot.job(&meta, "auto-tag", Some(stdin.into_bytes()));
            let key = auto_tag_key(&repo, issue.number);
            match bot.submit(&svc, &key, meta, job).await {
                Ok(Some(id)) => tracing::info!(%key, job = %id, "auto-labelling an issue"),
                Ok(None) => tracing::info!(%key, "the issue is being labelled or was already"),
                Err(e) => tracing::warn!(%key, error = %e, "starting the auto-labelling failed"),
            }
        });
    }

    /// A check suite passed on a commit: after the settle delay, review each
    /// pull request at that commit if every suite of it passed. Answered at
    /// once; the rest runs in the background.
    ///
    /// Not durable: a restart during the settle wait forgets the check; the
    /// commit's next suite event (or `@bot review`) starts it again.
    pub(super) fn checks_passed(self: &Arc<Self>, svc: &Arc<Service>, c: ChecksPassed) -> Response {
        if !self.config.triage.review_on_checks {
            return note(StatusCode::OK, "ignored: review_on_checks is off");
        }
        if let Some(refused) = self.needs_installation(c.installation, &c.repo_full_name) {
            return refused;
        }
        let settle = self.config.triage.review_settle;
        let answer = format!(
            "checking the suites of {} in {} ms",
            c.head_sha,
            settle.as_millis()
        );
        let (bot, svc) = (self.clone(), svc.clone());
        tokio::spawn(async move {
            tokio::time::sleep(settle).await;
            let (repo, sha) = (&c.repo_full_name, c.head_sha.as_str());
            let api = match bot.api(c.installation, repo).await {
                Ok(api) => api,
                Err(e) => {
                    return tracing::warn!(repo = %repo, sha, error = %e, "no GitHub client for the review check")
                }
            };
            let pulls = if c.pull_numbers.is_empty() {
                // A fork's pull request is not in the payload: look it up.
                match api.open_pulls_at(repo, sha).await {
                    Ok(p) => p,
                    Err(e) => {
                        return tracing::warn!(repo = %repo, sha, error = %e, "finding the pull requests at a commit failed")
                    }
                }
            } else {
                c.pull_numbers.clone()
            };
            if pulls.is_empty() {
                return tracing::info!(repo = %repo, sha, "no open pull request at this commit: no review");
            }
            let suites = match api.check_suites(repo, sha).await {
                Ok(s) => s,
                Err(e) => {
                    return tracing::warn!(repo = %repo, sha, error = %e, "reading the check suites failed")
                }
            };
            match checks_verdict(&suites) {
                ChecksVerdict::Green => {
                    for pull in pulls {
                        bot.start_review(&svc, repo, pull, sha, c.installation)
                            .await;
                    }
                }
                ChecksVerdict::Running => tracing::info!(
                    repo = %repo, sha,
                    "checks still running: no review yet (the last suite's completion starts it)"
                ),
                ChecksVerdict::Failed(conclusion) => tracing::info!(
                    repo = %repo, sha, %conclusion,
                    "a check suite did not pass: no review"
                ),
            }
        });
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "note": answer })),
        )
            .into_response()
    }

    /// `@bot review` on a pull request by an authorized user: a review at its
    /// current head commit, unless that commit has one already.
    pub(super) async fn review_by_hand(
        self: &Arc<Self>,
        svc: &Arc<Service>,
        t: Trigger,
    ) -> Response {
        let repo = &t.repo_full_name;
        let api = match self.api(t.installation, repo).await {
            Ok(api) => api,
            Err(e) => return note(StatusCode::BAD_GATEWAY, &e),
        };
        let head = match api.pull_request_head(repo, t.issue_number).await {
            Ok(h) if valid_sha(&h.sha) => h,
            Ok(_) => {
                return note(
                    StatusCode::BAD_GATEWAY,
                    "GitHub gave the pull request an odd head SHA",
                )
            }
            Err(e) => {
                return note(
                    StatusCode::BAD_GATEWAY,
                    &format!("reading the pull request: {e}"),
                )
            }
        };
        match self
            .start_review(svc, repo, t.issue_number, &head.sha, t.installation)
            .await
        {
            Some(id) => {
                self.react_later(t.installation, repo.clone(), t.reaction_target);
                (
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({ "job": id, "state": "queued", "sha": head.sha })),
                )
                    .into_response()
            }
            None => note(
                StatusCode::OK,
                &format!(
                    "duplicate: commit {} is reviewed already (or being reviewed)",
                    head.sha
                ),
            ),
        }
    }

    /// One review job for `pull` at `sha`, unless its key is stored already.
    /// The job's id if new.
    async fn start_review(
        self: &Arc<Self>,
        svc: &Arc<Service>,
        repo: &RepoName,
        pull: u64,
        sha: &str,
        installation: Option<u64>,
    ) -> Option<String> {
        let key = review_key(repo, pull, sha);
        let meta = Meta {
            repo: repo.to_string(),
            issue_number: pull,
            is_pull_request: true,
            branch: None,
            installation,
            operation: Operation::PrReview.as_str().to_string(),
            sha: Some(sha.to_string()),
            issue_text: None,
        };
        let mut job = self.job(&meta, "review", None);
        job.env.push(("HEAD_SHA".to_string(), sha.to_string()));
        match self.submit(svc, &key, meta, job).await {
            Ok(Some(id)) => {
                tracing::info!(%key, job = %id, "reviewing a pull request");
                Some(id)
            }
            Ok(None) => {
                tracing::info!(%key, "this commit is reviewed already: no second review");
                None
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "starting the review failed");
                None
            }
        }
    }

    /// A review job is starting: the in-progress label goes on (here, not when
    /// queued, so that it is on before the job's end takes it off).
    pub(super) async fn review_starts(&self, job_id: &str, meta: &Meta) {
        let Ok(repo) = RepoName::parse(&meta.repo) else {
            return;
        };
        let label = [self.config.triage.review_label_in_progress.clone()];
        let added = async {
            self.api(meta.installation, &repo)
                .await?
                .add_labels(&repo, meta.issue_number, &label)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = added {
            tracing::warn!(job = %job_id, error = %e, "adding the in-progress label failed");
        }
    }

    /// The job of `meta`'s operation: the same variables as a mention's.
    fn job(&self, meta: &Meta, command: &str, stdin: Option<Vec<u8>>) -> NewJob {
        let env = vec![
            ("REPO_FULL_NAME".to_string(), meta.repo.clone()),
            ("ISSUE_NUMBER".to_string(), meta.issue_number.to_string()),
            (
                "IS_PULL_REQUEST".to_string(),
                meta.is_pull_request.to_string(),
            ),
            ("COMMAND".to_string(), command.to_string()),
            ("OPERATION_TYPE".to_string(), meta.operation.clone()),
            ("BOT_USERNAME".to_string(), self.config.bot_username.clone()),
        ];
        NewJob {
            profile: self.config.profile.clone(),
            args: Vec::new(),
            env,
            stdin,
            timeout_ms: None,
        }
    }

    /// Store `job` under `key` with `meta` (registered before it can start).
    async fn submit(
        self: &Arc<Self>,
        svc: &Arc<Service>,
        key: &str,
        meta: Meta,
        job: NewJob,
    ) -> Result<Option<String>, String> {
        let meta_json = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
        let (bot, k) = (self.clone(), key.to_string());
        svc.submit_for_delivery(key, &meta_json, job, move |id| {
            lock(&bot.jobs).insert(id.to_string(), (k, meta));
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Answer an ended auto-tag or pr-review job; `Err` leaves it unanswered
    /// (tried again after a restart).
    pub(super) async fn answer_triage(
        &self,
        job_id: &str,
        op: Operation,
        meta: &Meta,
        record: &JobRecord,
        stdout: &str,
    ) -> Result<(), String> {
        let repo = RepoName::parse(&meta.repo).map_err(|e| e.to_string())?;
        let api = self.api(meta.installation, &repo).await?;
        match op {
            Operation::AutoTag => {
                self.apply_labels(&api, job_id, &repo, meta, record, stdout)
                    .await
            }
            Operation::PrReview => {
                self.post_review(&api, job_id, &repo, meta, record, stdout)
                    .await
            }
            Operation::Default => Err("not a triage job".to_string()),
        }
    }

    async fn apply_labels(
        &self,
        api: &GitHubClient,
        job_id: &str,
        repo: &RepoName,
        meta: &Meta,
        record: &JobRecord,
        stdout: &str,
    ) -> Result<(), String> {
        let chosen = match record.state {
            JobState::Succeeded => chosen_labels(stdout),
            _ => None,
        };
        let (source, chosen) = match chosen {
            Some(c) => ("the job", c),
            None => {
                // The job's stdin is wiped once it starts: the text is in the record.
                let text = meta.issue_text.as_deref().unwrap_or("");
                let rules = self
                    .config
                    .triage
                    .label_rules
                    .clone()
                    .unwrap_or_else(default_label_rules);
                ("the keyword rules", keyword_labels(text, "", &rules))
            }
        };
        let existing = api
            .list_labels(repo)
            .await
            .map_err(|e| format!("listing labels: {e}"))?;
        let applied = existing_only(&chosen, &existing);
        tracing::info!(
            job = %job_id, repo = %repo, issue = meta.issue_number, from = source,
            ?chosen, ?applied, "auto-labelling"
        );
        if applied.is_empty() {
            return Ok(());
        }
        api.add_labels(repo, meta.issue_number, &applied)
            .await
            .map_err(|e| format!("adding labels: {e}"))
    }

    async fn post_review(
        &self,
        api: &GitHubClient,
        job_id: &str,
        repo: &RepoName,
        meta: &Meta,
        record: &JobRecord,
        stdout: &str,
    ) -> Result<(), String> {
        let sha = meta
            .sha
            .as_deref()
            .filter(|s| valid_sha(s))
            .ok_or("a review record without its commit")?;
        let pull = meta.issue_number;
        let reviewed = match failure_of(record) {
            None => {
                let body = review_body(stdout, job_id, &self.bot, sha);
                api.post_review(repo, pull, sha, &body)
                    .await
                    .map_err(|e| format!("posting the review: {e}"))?;
                true
            }
            Some(failure) => {
                api.post_comment(repo, pull, &failure_comment(job_id, failure))
                    .await
                    .map_err(|e| format!("posting the failure: {e}"))?;
                false
            }
        };
        // Labels are a courtesy: the review is posted, so no error here.
        let triage = &self.config.triage;
        if let Err(e) = api
            .remove_label(repo, pull, &triage.review_label_in_progress)
            .await
        {
            tracing::warn!(job = %job_id, error = %e, "removing the in-progress label failed");
        }
        if reviewed {
            let done = [triage.review_label_complete.clone()];
            if let Err(e) = api.add_labels(repo, pull, &done).await {
                tracing::warn!(job = %job_id, error = %e, "adding the complete label failed");
            }
        }
        Ok(())
    }
}

/// What the keyword rules read if the auto-tag job fails: the title and the
/// body's start (kept with the delivery, so bounded).
fn keyword_text(title: &str, body: &str) -> String {
    const MAX_CHARS: usize = 8192;
    format!("{title}\n{body}").chars().take(MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stored_before_operations_read_as_mentions() {
        let old = r#"{"repo":"o/r","issue_number":3,"is_pull_request":true,"branch":null}"#;
        let meta: Meta = serde_json::from_str(old).unwrap();
        assert_eq!(meta.operation(), Operation::Default);
        assert_eq!((meta.sha, meta.issue_text), (None, None));
        let unknown = r#"{"repo":"o/r","issue_number":3,"is_pull_request":true,"branch":null,"operation":"later"}"#;
        let meta: Meta = serde_json::from_str(unknown).unwrap();
        assert_eq!(meta.operation(), Operation::Default);
    }

    #[test]
    fn a_review_record_keeps_its_commit() {
        let meta = Meta {
            repo: "o/r".into(),
            issue_number: 2,
            is_pull_request: true,
            branch: None,
            installation: None,
            operation: Operation::PrReview.as_str().into(),
            sha: Some("abc1234".into()),
            issue_text: None,
        };
        let back: Meta = serde_json::from_str(&serde_json::to_string(&meta).unwrap()).unwrap();
        assert_eq!(back.operation(), Operation::PrReview);
        assert_eq!(back.sha.as_deref(), Some("abc1234"));
    }

    #[test]
    fn the_keyword_text_is_bounded() {
        let text = keyword_text("title", &"x".repeat(100_000));
        assert!(text.starts_with("title\nx"));
        assert_eq!(text.chars().count(), 8192);
    }
}
