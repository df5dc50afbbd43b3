//! The GitHub @mention bot on `POST /webhooks/github`: a delivery is verified,
//! de-duplicated by its id, stored with its job and answered 202 at once; the
//! job runs through the service like any other; its end is answered with a
//! comment. The decisions live in `warmpool-github`; this module only wires them.

use crate::lock;
use crate::mirror::{GitToken, Mirrors, PersonalToken};
use crate::service::{read_secret, Front, JobHooks, Service};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use warmpool_core::config::{GithubConfig, MIRROR_MOUNT};
use warmpool_github::signature::Verifier;
use warmpool_github::{
    answer_comment, authorized, failure_comment, is_review_command, job_permissions, opened_issue,
    unauthorized_comment, App, AppError, BotName, Credentials, Event, Failure, GitHubClient,
    InstallationToken, Operation, Reaction, RefusalLimit, RepoName, Trigger,
};
use warmpool_store::{JobRecord, JobState, NewJob};

/// Where a delivery's job is answered; stored with the delivery (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    repo: String,
    issue_number: u64,
    is_pull_request: bool,
    /// Known from the payload (review comments); else looked up when the job starts.
    branch: Option<String>,
    /// The GitHub App installation the delivery came through (App auth).
    #[serde(default)]
    installation: Option<u64>,
    /// The job's `OPERATION_TYPE` (`default`, `pr-review`, `auto-tag`); records
    /// stored before it existed are `default`.
    #[serde(default = "default_operation")]
    operation: String,
    /// The commit a `pr-review` job reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha: Option<String>,
    /// An `auto-tag` job's issue text, for the keyword rules if the job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issue_text: Option<String>,
}

fn default_operation() -> String {
    Operation::Default.as_str().to_string()
}

impl Meta {
    /// The operation; an unknown name (a newer version's) is answered as a mention.
    fn operation(&self) -> Operation {
        Operation::parse(&self.operation).unwrap_or_default()
    }
}

#[path = "github_triage.rs"]
mod triage;

pub struct GithubBot {
    config: GithubConfig,
    bot: BotName,
    secret: Vec<u8>,
    /// A personal token, or the GitHub App minting tokens per repository.
    creds: Credentials,
    /// App tokens minted for running jobs, by job id: revoked at the job's end.
    job_tokens: Mutex<HashMap<String, InstallationToken>>,
    svc: Weak<Service>,
    /// Jobs of this bot not answered yet, by job id: (delivery id, meta).
    jobs: Mutex<HashMap<String, (String, Meta)>>,
    /// Webhook bodies being read (hashed as they arrive, bounded).
    bodies: crate::webhook_body::Bodies,
    /// Refusals posted to unauthorized users, at most one per user and issue
    /// per hour; this node's own (in a cluster, each node keeps its own).
    refusals: Mutex<RefusalLimit>,
    /// Warm repository mirrors (`[github] mirror_dir`); their refresh loop
    /// stops with the bot.
    mirrors: Option<(Arc<Mirrors>, tokio_util::sync::DropGuard)>,
    /// The App installation each repository was last served through: the
    /// mirrors fetch with the bot's own token for it.
    installations: Arc<Mutex<HashMap<RepoName, u64>>>,
}

/// The token git fetches a mirror with under App auth: the bot's own
/// installation token for the repository (read-only contents among its
/// permissions), for the installation the repository was last served through.
struct AppGitToken {
    app: Arc<App>,
    installations: Arc<Mutex<HashMap<RepoName, u64>>>,
}

#[async_trait::async_trait]
impl GitToken for AppGitToken {
    async fn token(&self, repo: &RepoName) -> Result<String, String> {
        let installation = lock(&self.installations)
            .get(repo)
            .copied()
            .ok_or_else(|| format!("no App installation is known for {repo} yet"))?;
        self.app
            .own_token(installation, repo)
            .await
            .map(|t| t.secret().to_string())
            .map_err(|e| e.to_string())
    }
}

impl GithubBot {
    /// The bot for `[github]`, its secrets from the environment.
    pub fn from_env(config: GithubConfig, svc: &Arc<Service>) -> Result<Arc<GithubBot>, String> {
        let secret = read_secret("GITHUB_WEBHOOK_SECRET")?;
        if secret.is_empty() {
            return Err("GITHUB_WEBHOOK_SECRET is empty: anyone could sign deliveries".into());
        }
        let bot = BotName::new(&config.bot_username).map_err(|e| e.to_string())?;
        let installations: Arc<Mutex<HashMap<RepoName, u64>>> = Default::default();
        let key_file = std::env::var("GITHUB_APP_PRIVATE_KEY_FILE").ok();
        let creds = match config.app_auth(key_file.as_deref())? {
            // The App: no GITHUB_TOKEN needed; the key is read and tried now.
            Some((app_id, file)) => {
                let api = GitHubClient::with_base_url(&config.api_url, "unused")
                    .map_err(|e| e.to_string())?;
                let mut app = App::from_key_file(app_id, std::path::Path::new(&file), api)
                    .map_err(|e| e.to_string())?;
                if config.triage.review_on_checks {
                    // Reviews read the head commit's check suites.
                    app =
                        app.with_own_permissions(warmpool_github::app::BOT_PERMISSIONS_WITH_CHECKS);
                }
                tracing::info!(app_id, "the GitHub bot authenticates as a GitHub App");
                Credentials::App(Arc::new(app))
            }
            None => {
                let token = read_secret("GITHUB_TOKEN")?;
                Credentials::Token(Box::new(
                    GitHubClient::with_base_url(&config.api_url, &token)
                        .map_err(|e| e.to_string())?,
                ))
            }
        };
        // Mirrors fetch with the bot's own token: the personal one, or the
        // App's installation token for the repository.
        let mirrors = match &config.mirror_dir {
            Some(dir) => {
                let token: Arc<dyn GitToken> = match &creds {
                    Credentials::App(app) => Arc::new(AppGitToken {
                        app: app.clone(),
                        installations: installations.clone(),
                    }),
                    Credentials::Token(_) => Arc::new(PersonalToken(read_secret("GITHUB_TOKEN")?)),
                };
                let m = Mirrors::open(
                    std::path::Path::new(dir),
                    &config.git_url,
                    config.mirror_refresh,
                    token,
                )
                .map_err(|e| e.to_string())?;
                let stop = tokio_util::sync::CancellationToken::new();
                m.keep_fresh(stop.clone());
                Some((m, stop.drop_guard()))
            }
            None => None,
        };
        Ok(Arc::new(GithubBot {
            config,
            bot,
            secret: secret.into_bytes(),
            creds,
            job_tokens: Mutex::new(HashMap::new()),
            svc: Arc::downgrade(svc),
            jobs: Mutex::new(HashMap::new()),
            bodies: Default::default(),
            refusals: Mutex::new(RefusalLimit::default()),
            mirrors,
            installations,
        }))
    }

    /// After a restart: pick up the deliveries not answered yet; answer those
    /// whose job has already ended.
    pub async fn recover(self: &Arc<Self>) {
        let Some(svc) = self.svc.upgrade() else {
            return;
        };
        let pending = match svc.store().unanswered_deliveries().await {
            Ok(p) => p,
            Err(e) => return tracing::warn!(error = %e, "reading unanswered deliveries failed"),
        };
        for d in pending {
            let (delivery, job, meta) = (d.id, d.job_id, d.meta);
            match serde_json::from_str::<Meta>(&meta) {
                Ok(m) => {
                    lock(&self.jobs).insert(job.clone(), (delivery, m));
                }
                Err(e) => tracing::warn!(%delivery, error = %e, "an unreadable delivery record"),
            }
            let bot = self.clone();
            tokio::spawn(async move {
                if bot.job_ended(&job).await {
                    bot.after_end(&job).await;
                }
            });
        }
    }

    /// The delivery and answer address of a job of the bot's, if it is one:
    /// from memory when this node accepted it, else from the store (in a
    /// cluster, another node may have accepted the webhook). Only the bot
    /// profile's jobs are looked up.
    async fn delivery_of(&self, job_id: &str) -> Option<(String, Meta)> {
        if let Some(found) = lock(&self.jobs).get(job_id).cloned() {
            return Some(found);
        }
        let svc = self.svc.upgrade()?;
        let store = svc.store();
        match store.get(job_id).await {
            Ok(Some(r)) if r.profile == self.config.profile => {}
            _ => return None,
        }
        let pending = store.unanswered_deliveries().await.ok()?;
        let d = pending.into_iter().find(|d| d.job_id == job_id)?;
        let meta: Meta = serde_json::from_str(&d.meta).ok()?;
        lock(&self.jobs).insert(job_id.to_string(), (d.id.clone(), meta.clone()));
        Some((d.id, meta))
    }

    async fn job_ended(&self, job: &str) -> bool {
        let Some(svc) = self.svc.upgrade() else {
            return false;
        };
        matches!(svc.store().get(job).await, Ok(Some(r)) if r.state.is_final())
    }

    /// A client for the bot's own calls on `repo` (an installation token with an App).
    async fn api(
        &self,
        installation: Option<u64>,
        repo: &RepoName,
    ) -> Result<GitHubClient, String> {
        self.creds
            .client(installation, repo)
            .await
            .map_err(|e| e.to_string())
    }

    /// With App auth, a delivery must name the installation it came through:
    /// the bot acts only where the App is installed. The refusal, if any.
    fn needs_installation(&self, installation: Option<u64>, repo: &RepoName) -> Option<Response> {
        if self.creds.app().is_none() || installation.is_some() {
            return None;
        }
        tracing::info!(repo = %repo, "a delivery with no App installation");
        Some(note(
            StatusCode::OK,
            "ignored: the delivery names no GitHub App installation (installation.id): the bot authenticates as a GitHub App and acts only where the App is installed; deliver through the App's webhook",
        ))
    }

    /// Post a comment in the background (errors are logged: the job is not at stake).
    fn comment_later(
        self: &Arc<Self>,
        installation: Option<u64>,
        repo: RepoName,
        issue: u64,
        body: String,
    ) {
        let bot = self.clone();
        tokio::spawn(async move {
            let api = bot.api(installation, &repo).await;
            if let Err(e) = async {
                api?.post_comment(&repo, issue, &body)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await
            {
                tracing::warn!(repo = %repo, issue, error = %e, "posting a comment failed");
            }
        });
    }

    /// React with eyes in the background: the request was seen (errors are logged).
    fn react_later(
        self: &Arc<Self>,
        installation: Option<u64>,
        repo: RepoName,
        target: warmpool_github::ReactionTarget,
    ) {
        let bot = self.clone();
        tokio::spawn(async move {
            let api = bot.api(installation, &repo).await;
            let reacted = async {
                api?.add_reaction(&repo, target, Reaction::Eyes)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = reacted.await {
                tracing::warn!(repo = %repo, error = %e, "adding the eyes reaction failed");
            }
        });
    }

    async fn accept(self: &Arc<Self>, svc: &Arc<Service>, delivery: &str, t: Trigger) -> Response {
        if let Some(refused) = self.needs_installation(t.installation, &t.repo_full_name) {
            return refused;
        }
        if !authorized(&t.author, &self.config.authorized_users) {
            tracing::info!(author = %t.author, repo = %t.repo_full_name, "a mention by an unauthorized user");
            let tell = lock(&self.refusals).allow(
                &t.repo_full_name,
                t.issue_number,
                &t.author,
                Instant::now(),
            );
            if !tell {
                return note(
                    StatusCode::OK,
                    "the author may not trigger jobs; told them so within the hour already",
                );
            }
            self.comment_later(
                t.installation,
                t.repo_full_name.clone(),
                t.issue_number,
                unauthorized_comment(&t.author),
            );
            return note(
                StatusCode::OK,
                "the author may not trigger jobs; told them so",
            );
        }
        if t.is_pull_request && is_review_command(&t.command) {
            return self.review_by_hand(svc, t).await;
        }
        let meta = Meta {
            repo: t.repo_full_name.to_string(),
            issue_number: t.issue_number,
            is_pull_request: t.is_pull_request,
            branch: t.branch.clone(),
            installation: t.installation,
            operation: default_operation(),
            sha: None,
            issue_text: None,
        };
        let env = vec![
            ("REPO_FULL_NAME".to_string(), meta.repo.clone()),
            ("ISSUE_NUMBER".to_string(), t.issue_number.to_string()),
            ("IS_PULL_REQUEST".to_string(), t.is_pull_request.to_string()),
            ("COMMAND".to_string(), t.command.clone()),
            ("OPERATION_TYPE".to_string(), "default".to_string()),
            ("BOT_USERNAME".to_string(), self.config.bot_username.clone()),
        ];
        let job = NewJob {
            profile: self.config.profile.clone(),
            args: Vec::new(),
            env,
            stdin: None,
            timeout_ms: None,
        };
        let meta_json = match serde_json::to_string(&meta) {
            Ok(j) => j,
            Err(e) => return note(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        // The job is registered before it can start, so its hooks find it.
        let (bot, d) = (self.clone(), delivery.to_string());
        let stored = svc.submit_for_delivery(delivery, &meta_json, job, move |id| {
            lock(&bot.jobs).insert(id.to_string(), (d, meta));
        });
        match stored.await {
            Ok(Some(id)) => {
                self.react_later(t.installation, t.repo_full_name.clone(), t.reaction_target);
                (
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({ "job": id, "state": "queued" })),
                )
                    .into_response()
            }
            Ok(None) => note(
                StatusCode::OK,
                "duplicate: this delivery was handled already",
            ),
            Err(e) => {
                tracing::error!(error = %e, "storing a delivery failed");
                note(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
            }
        }
    }
}

/// How a final job failed, if it did; `None` for success.
fn failure_of(record: &JobRecord) -> Option<Failure> {
    Some(match record.state {
        JobState::Succeeded => return None,
        JobState::TimedOut => Failure::TimedOut,
        JobState::Cancelled => Failure::Cancelled,
        JobState::Interrupted => Failure::Interrupted,
        _ if record.started_ms.is_none() => Failure::NotStarted,
        _ => Failure::Failed {
            exit_code: record.exit_code,
        },
    })
}

fn note(status: StatusCode, text: &str) -> Response {
    let key = if status.is_success() { "note" } else { "error" };
    (status, Json(serde_json::json!({ key: text }))).into_response()
}

#[async_trait::async_trait]
impl JobHooks for GithubBot {
    async fn before_start(&self, job_id: &str, front: &mut Front) -> Result<(), String> {
        let Some((_, meta)) = self.delivery_of(job_id).await else {
            return Ok(());
        };
        // With the App, the job's GITHUB_TOKEN is its own: minted now for this
        // repository and what the operation needs (or none), revoked at its end.
        if let Some(app) = self.creds.app() {
            match job_permissions(meta.operation().as_str()) {
                None => front.withhold.push("GITHUB_TOKEN".to_string()),
                Some(permissions) => {
                    let repo = RepoName::parse(&meta.repo).map_err(|e| e.to_string())?;
                    let installation = meta
                        .installation
                        .ok_or_else(|| AppError::NoInstallation.to_string())?;
                    let token = app
                        .mint(installation, &repo, permissions)
                        .await
                        .map_err(|e| e.to_string())?;
                    front
                        .secrets
                        .push(("GITHUB_TOKEN".to_string(), token.secret().to_string()));
                    lock(&self.job_tokens).insert(job_id.to_string(), token);
                }
            }
        }
        if meta.operation() == Operation::AutoTag {
            // Least privilege: labels are applied by the bot, not the job.
            front.withhold.push("GITHUB_TOKEN".to_string());
            front.env.push(("BRANCH_NAME".to_string(), String::new()));
            return Ok(());
        }
        if meta.operation() == Operation::PrReview {
            self.review_starts(job_id, &meta).await;
        }
        let branch = match (&meta.branch, meta.is_pull_request) {
            (Some(b), _) => b.clone(),
            (None, true) => {
                let repo = RepoName::parse(&meta.repo).map_err(|e| e.to_string())?;
                self.api(meta.installation, &repo)
                    .await?
                    .pull_request_head(&repo, meta.issue_number)
                    .await
                    .map(|h| h.branch)
                    .map_err(|e| format!("looking up the pull request's branch failed: {e}"))?
            }
            (None, false) => String::new(),
        };
        front.env.push(("BRANCH_NAME".to_string(), branch));
        if let (Some((mirrors, _)), Ok(repo)) = (&self.mirrors, RepoName::parse(&meta.repo)) {
            if mirrors.has(&repo) {
                front.env.push((
                    "REPO_MIRROR".to_string(),
                    format!("{MIRROR_MOUNT}/{}/{}.git", repo.owner(), repo.name()),
                ));
            }
        }
        Ok(())
    }

    async fn after_end(&self, job_id: &str) {
        let Some((delivery, meta)) = self.delivery_of(job_id).await else {
            return;
        };
        let minted = lock(&self.job_tokens).remove(job_id);
        if let (Some(token), Some(app)) = (minted, self.creds.app()) {
            // Dead now rather than within the hour; if this fails, it expires.
            match app.revoke(&token).await {
                Ok(()) => tracing::debug!(job = %job_id, "the job's App token is revoked"),
                Err(e) => {
                    tracing::warn!(job = %job_id, error = %e, "revoking the job's App token failed")
                }
            }
        }
        if let (Some((mirrors, _)), Ok(repo)) = (&self.mirrors, RepoName::parse(&meta.repo)) {
            if let Some(installation) = meta.installation {
                lock(&self.installations).insert(repo.clone(), installation);
            }
            // In the background: the answer does not wait for it.
            mirrors.request(&repo);
        }
        let Some(svc) = self.svc.upgrade() else {
            return;
        };
        // Enough bytes for the longest comment: every character takes 4 bytes
        // or fewer, and one more than fits makes it cut.
        let head = 4 * (warmpool_github::MAX_COMMENT_CHARS + 1);
        let (record, [stdout, _]) = match svc.view(job_id, head).await {
            Ok(Some(found)) => found,
            _ => return tracing::warn!(job = %job_id, "the job to answer is not in the store"),
        };
        if !record.state.is_final() {
            // Stopped mid-job (shutdown): answered after the restart.
            return;
        }
        // Another node may have answered it already: the node that took a
        // lost node's jobs over answers for them, and the lost node's own
        // run (this node's memory still holding the delivery) ends after.
        match svc.store().unanswered_deliveries().await {
            Ok(pending) if pending.iter().any(|d| d.id == delivery) => {}
            Ok(_) => {
                lock(&self.jobs).remove(job_id);
                return;
            }
            Err(e) => {
                // Left unanswered in the store: tried again after a restart.
                return tracing::warn!(job = %job_id, error = %e, "reading deliveries failed");
            }
        }
        let stdout = String::from_utf8_lossy(&stdout);
        let answered = match meta.operation() {
            Operation::Default => {
                let Ok(repo) = RepoName::parse(&meta.repo) else {
                    return;
                };
                let body = match failure_of(&record) {
                    None => answer_comment(&stdout, job_id, &self.bot),
                    Some(failure) => failure_comment(job_id, failure),
                };
                async {
                    self.api(meta.installation, &repo)
                        .await?
                        .post_comment(&repo, meta.issue_number, &body)
                        .await
                        .map_err(|e| e.to_string())
                }
                .await
            }
            op => {
                self.answer_triage(job_id, op, &meta, &record, &stdout)
                    .await
            }
        };
        match answered {
            Ok(()) => {
                lock(&self.jobs).remove(job_id);
                if let Err(e) = svc.store().mark_answered(&delivery).await {
                    tracing::warn!(job = %job_id, error = %e, "recording the answer failed");
                }
            }
            // Left unanswered in the store: tried again after a restart.
            Err(e) => tracing::warn!(job = %job_id, error = %e, "posting the answer failed"),
        }
    }
}

/// `POST /webhooks/github`.
pub async fn webhook(
    State((svc, bot)): State<(Arc<Service>, Arc<GithubBot>)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    use crate::webhook_body::BodyError;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Nothing is parsed before the signature holds; without a well-formed
    // signature header, no byte of the body is read.
    let mut verifier = match Verifier::new(&bot.secret, header("x-hub-signature-256")) {
        Ok(v) => v,
        Err(e) => return note(StatusCode::UNAUTHORIZED, &format!("signature: {e}")),
    };
    let max = bot.config.max_body;
    let declared = header("content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return note(
            StatusCode::PAYLOAD_TOO_LARGE,
            &BodyError::TooLarge(max).to_string(),
        );
    }
    let spooled = match bot.bodies.read(body, &mut verifier, max).await {
        Ok(s) => s,
        Err(e @ BodyError::TooLarge(_)) => {
            return note(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
        }
        Err(e @ BodyError::TooSlow(_)) => return note(StatusCode::REQUEST_TIMEOUT, &e.to_string()),
        Err(e @ BodyError::Read(_)) => return note(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e @ BodyError::Spool(_)) => {
            tracing::error!(error = %e, "a webhook body could not be kept");
            return note(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    if let Err(e) = verifier.finish() {
        return note(StatusCode::UNAUTHORIZED, &format!("signature: {e}"));
    }
    let body = match spooled.into_bytes().await {
        Ok(b) => b,
        Err(e) => return note(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let Some(event) = header("x-github-event") else {
        return note(StatusCode::BAD_REQUEST, "missing X-GitHub-Event");
    };
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return note(
                StatusCode::BAD_REQUEST,
                &format!("the payload is not JSON: {e}"),
            )
        }
    };
    // An opened issue is labelled whether or not it also mentions the bot.
    let labelling = bot.config.triage.auto_label
        && match opened_issue(event, &payload, &bot.bot) {
            Ok(Some(issue)) => {
                bot.label_later(&svc, issue);
                true
            }
            _ => false,
        };
    match Event::from_webhook(event, &payload, &bot.bot) {
        Ok(Event::Ping) => note(StatusCode::OK, "pong"),
        Ok(Event::Ignored(_)) if labelling => note(StatusCode::ACCEPTED, "labelling the issue"),
        Ok(Event::Ignored(why)) => note(StatusCode::OK, &format!("ignored: {why}")),
        Ok(Event::ChecksPassed(c)) => bot.checks_passed(&svc, c),
        Ok(Event::Trigger(t)) => {
            let Some(delivery) = header("x-github-delivery").filter(|d| !d.is_empty()) else {
                return note(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery");
            };
            let delivery = delivery.to_string();
            bot.accept(&svc, &delivery, t).await
        }
        Err(e) => note(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
