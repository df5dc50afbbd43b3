//! The GitHub @mention bot's building blocks: everything it decides, and the
//! REST client it acts through. The webhook endpoint and the job runs live elsewhere.
//!
//! - [`signature`]: `X-Hub-Signature-256` over the raw body, checked before anything is parsed.
//! - [`event`]: a delivery becomes [`Event::Ping`], [`Event::Ignored`] (with why) or a
//!   [`Trigger`]: repository, issue or pull request, command, author, what to react to.
//! - [`repo`]: the names that go into API URLs ([`RepoName`], [`BotName`]), checked on entry.
//! - [`comment`]: the answer, failure and refusal comments (bot mentions defanged,
//!   GitHub's length limit kept).
//! - [`refusal`]: [`RefusalLimit`], at most one refusal per user and issue per hour.
//! - [`api`]: [`GitHubClient`], the three calls with retries and rate-limit waits;
//!   `api_triage` adds labels, pull requests by commit, check suites and reviews.
//! - [`app`]: GitHub App auth: the JWT, installation tokens per repository and
//!   operation ([`job_permissions`]), the bot's own tokens cached; [`Credentials`].
//! - [`triage`]: auto-labelling and review decisions (chosen labels, keyword rules,
//!   whether checks allow a review, the review's key and text).
//!
//! Only [`api`] and [`app`] do I/O; the rest is pure and tested in microseconds.

pub mod api;
mod api_triage;
pub mod app;
pub mod comment;
pub mod event;
pub mod refusal;
pub mod repo;
pub mod signature;
pub mod triage;

pub use api::{ApiError, GitHubClient, PullRequestHead, Reaction, RetryPolicy};
pub use app::{job_permissions, App, AppError, Credentials, InstallationToken, Permissions};
pub use comment::{
    answer_comment, failure_comment, unauthorized_comment, Failure, MAX_COMMENT_CHARS,
};
pub use event::{
    authorized, is_review_command, opened_issue, valid_sha, ChecksPassed, Event, EventError,
    OpenedIssue, ReactionTarget, Trigger,
};
pub use refusal::RefusalLimit;
pub use repo::{BotName, NameError, RepoName};
pub use signature::{sign, verify, SignatureError};
pub use triage::Operation;
