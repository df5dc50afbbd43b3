//! GitHub App authentication: the App's JWT (RS256), installation tokens minted
//! for one repository and the permissions an operation needs, the bot's own
//! tokens kept until shortly before they expire, and [`Credentials`] (a personal
//! token or the App) giving the bot a client per (installation, repository).
//! The decisions (claims, reuse, permissions) are pure; no key or token is logged.

use crate::api::{ApiError, GitHubClient};
use crate::repo::RepoName;
use hyper::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A token's permissions: (permission, `read` or `write`) pairs, as GitHub names them.
pub type Permissions = &'static [(&'static str, &'static str)];

/// A mention's job (`OPERATION_TYPE=default`): it pushes a branch, comments and
/// opens or updates a pull request.
pub const MENTION_PERMISSIONS: Permissions = &[
    ("contents", "write"),
    ("issues", "write"),
    ("pull_requests", "write"),
];

/// A pull request review's job (`OPERATION_TYPE=pr-review`): it reads the code
/// and writes the review and comments, but pushes nothing.
pub const PR_REVIEW_PERMISSIONS: Permissions = &[
    ("contents", "read"),
    ("issues", "write"),
    ("pull_requests", "write"),
];

/// The bot's own calls: reactions, comments, labels, reviews, pull request
/// lookups, and reading the repository (a mirror's fetch).
pub const BOT_PERMISSIONS: Permissions = &[
    ("contents", "read"),
    ("issues", "write"),
    ("pull_requests", "write"),
];

/// [`BOT_PERMISSIONS`] and reading check suites, for reviews when checks pass
/// (`[github] review_on_checks`): asked only then, so an App without the
/// Checks permission still serves mentions.
pub const BOT_PERMISSIONS_WITH_CHECKS: Permissions = &[
    ("checks", "read"),
    ("contents", "read"),
    ("issues", "write"),
    ("pull_requests", "write"),
];

/// The permissions the job of an operation (its `OPERATION_TYPE`) gets in its
/// `GITHUB_TOKEN`; `None`: no token at all. `auto-tag` needs none (the bot
/// applies the labels itself), and an operation this does not know gets none
/// either: least privilege.
pub fn job_permissions(operation: &str) -> Option<Permissions> {
    match operation {
        "default" => Some(MENTION_PERMISSIONS),
        "pr-review" => Some(PR_REVIEW_PERMISSIONS),
        _ => None,
    }
}

/// GitHub takes an App JWT whose `exp` is at most 10 minutes after `iat`.
const JWT_LIFETIME_S: u64 = 9 * 60;
/// `iat` this far in the past, for clocks a little ahead of GitHub's.
const JWT_BACKDATE_S: u64 = 60;
/// A cached token is not used in its last 5 minutes: a call made with it must
/// not outlive it.
pub const REUSE_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The App JWT's claims at `now` (Unix seconds): issued a minute ago, expiring
/// nine minutes from now (ten minutes in all, GitHub's limit).
pub fn jwt_claims(app_id: u64, now: u64) -> Value {
    json!({
        "iat": now.saturating_sub(JWT_BACKDATE_S),
        "exp": now + JWT_LIFETIME_S,
        "iss": app_id.to_string(),
    })
}

/// Whether a cached token expiring at `expires_at` may still be used at `now`.
pub fn reusable(expires_at: SystemTime, now: SystemTime) -> bool {
    now + REUSE_MARGIN < expires_at
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the GitHub App private key {file} (`[github] private_key_file` or GITHUB_APP_PRIVATE_KEY_FILE): {problem}")]
    Key { file: String, problem: String },
    #[error("signing the GitHub App JWT failed: {0}")]
    Jwt(String),
    #[error("the delivery names no GitHub App installation (`installation.id`); with `[github] app_id` the bot acts only through an installation of the App on the repository")]
    NoInstallation,
    #[error("minting a GitHub App installation token for {repo} (installation {installation}; check `[github] app_id`, the private key, and that the App is installed on the repository): {source}")]
    Mint {
        repo: String,
        installation: u64,
        source: ApiError,
    },
    #[error("revoking a job's installation token: {0}")]
    Revoke(ApiError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// An installation token and when it expires. Shows no token.
#[derive(Clone)]
pub struct InstallationToken {
    token: String,
    pub expires_at: SystemTime,
}

impl InstallationToken {
    /// The token itself, for a request header or a job's `GITHUB_TOKEN`.
    pub fn secret(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A GitHub App: its id and key, and the bot's own installation tokens.
pub struct App {
    app_id: u64,
    key: EncodingKey,
    /// The API root (no token of its own: each call gets the JWT or a token).
    api: GitHubClient,
    /// The bot's own tokens by (installation, repository). An async lock held
    /// while minting, so two calls at once mint one token, not two.
    own: tokio::sync::Mutex<HashMap<(u64, RepoName), InstallationToken>>,
    /// What the bot's own tokens may do ([`BOT_PERMISSIONS`] unless set).
    own_permissions: Permissions,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("app_id", &self.app_id)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The App `app_id` with the PEM private key in `file`, on the API at `api`
    /// (a client whose own token is never used).
    pub fn from_key_file(app_id: u64, file: &Path, api: GitHubClient) -> Result<App, AppError> {
        let bad = |problem: String| AppError::Key {
            file: file.display().to_string(),
            problem,
        };
        let pem = std::fs::read(file).map_err(|e| bad(format!("cannot be read: {e}")))?;
        App::from_pem(app_id, &pem, api).map_err(|e| match e {
            AppError::Key { problem, .. } => bad(problem),
            other => other,
        })
    }

    /// The App with the PEM private key `pem` (PKCS#1 as GitHub hands it out, or PKCS#8).
    pub fn from_pem(app_id: u64, pem: &[u8], api: GitHubClient) -> Result<App, AppError> {
        // The parser's message never quotes the key.
        let key = EncodingKey::from_rsa_pem(pem).map_err(|e| AppError::Key {
            file: "given".to_string(),
            problem: format!("is not an RSA private key in PEM form ({e})"),
        })?;
        let app = App {
            app_id,
            key,
            api,
            own: Default::default(),
            own_permissions: BOT_PERMISSIONS,
        };
        // A key ring cannot sign with (too short, say) fails now, not at the first delivery.
        app.jwt(SystemTime::now()).map_err(|e| AppError::Key {
            file: "given".to_string(),
            problem: format!("cannot sign: {e}"),
        })?;
        Ok(app)
    }

    /// The permissions of the bot's own tokens (e.g. [`BOT_PERMISSIONS_WITH_CHECKS`]).
    pub fn with_own_permissions(mut self, permissions: Permissions) -> App {
        self.own_permissions = permissions;
        self
    }

    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    /// The App's JWT at `now`, for the `/app/...` endpoints.
    pub fn jwt(&self, now: SystemTime) -> Result<String, AppError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &jwt_claims(self.app_id, now),
            &self.key,
        )
        .map_err(|e| AppError::Jwt(e.to_string()))
    }

    /// A new installation token for `repo` alone with `permissions`. GitHub
    /// makes it expire within the hour.
    pub async fn mint(
        &self,
        installation: u64,
        repo: &RepoName,
        permissions: Permissions,
    ) -> Result<InstallationToken, AppError> {
        let failed = |source| AppError::Mint {
            repo: repo.to_string(),
            installation,
            source,
        };
        let jwt = self.jwt(SystemTime::now())?;
        let client = self.api.with_token(&jwt).map_err(failed)?;
        let permissions: Map<String, Value> = permissions
            .iter()
            .map(|(name, access)| (name.to_string(), Value::from(*access)))
            .collect();
        let path = format!("/app/installations/{installation}/access_tokens");
        let body = json!({ "repositories": [repo.name()], "permissions": permissions });
        let answer = client
            .send(Method::POST, &path, Some(body))
            .await
            .map_err(failed)?;
        parse_token(&answer).map_err(|what| {
            failed(ApiError::BadResponse {
                request: format!("POST {path}"),
                what,
            })
        })
    }

    /// A client for the bot's own calls on `repo`: a token of its own, minted
    /// once and used until [`REUSE_MARGIN`] before it expires.
    pub async fn own_client(
        &self,
        installation: u64,
        repo: &RepoName,
    ) -> Result<GitHubClient, AppError> {
        let token = self.own_token(installation, repo).await?;
        Ok(self.api.with_token(token.secret())?)
    }

    /// The bot's own token for `repo` (what [`App::own_client`] calls with;
    /// also what git fetches the repository's mirror with).
    pub async fn own_token(
        &self,
        installation: u64,
        repo: &RepoName,
    ) -> Result<InstallationToken, AppError> {
        let mut own = self.own.lock().await;
        let key = (installation, repo.clone());
        let now = SystemTime::now();
        let token = match own.get(&key) {
            Some(t) if reusable(t.expires_at, now) => t.clone(),
            _ => {
                let t = self.mint(installation, repo, self.own_permissions).await?;
                // Expired ones go as new ones come: the map stays as small as the
                // set of repositories in use.
                own.retain(|_, t| reusable(t.expires_at, now));
                own.insert(key, t.clone());
                t
            }
        };
        Ok(token)
    }

    /// Revoke `token` (a job's, at its end), so that it is dead before it expires.
    pub async fn revoke(&self, token: &InstallationToken) -> Result<(), AppError> {
        let client = self
            .api
            .with_token(token.secret())
            .map_err(AppError::Revoke)?;
        client
            .send(Method::DELETE, "/installation/token", None)
            .await
            .map(drop)
            .map_err(AppError::Revoke)
    }
}

/// `token` and `expires_at` from GitHub's answer; what is missing if not.
fn parse_token(answer: &[u8]) -> Result<InstallationToken, &'static str> {
    let v: Value = serde_json::from_slice(answer).map_err(|_| "a JSON body")?;
    let token = v
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("token")?;
    let expires_at = v
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(parse_utc)
        .ok_or("a valid expires_at")?;
    Ok(InstallationToken {
        token: token.to_string(),
        expires_at,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (GitHub's timestamps, in UTC) as a time.
fn parse_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// How the bot authenticates: a personal token (one client for everything,
/// jobs get the profile's `GITHUB_TOKEN`), or a GitHub App (per repository).
#[derive(Debug, Clone)]
pub enum Credentials {
    Token(Box<GitHubClient>),
    App(Arc<App>),
}

impl Credentials {
    /// A client for the bot's own calls on `repo`, reached through
    /// `installation` (needed with an App, ignored with a personal token).
    pub async fn client(
        &self,
        installation: Option<u64>,
        repo: &RepoName,
    ) -> Result<GitHubClient, AppError> {
        match self {
            Credentials::Token(client) => Ok(GitHubClient::clone(client)),
            Credentials::App(app) => {
                let installation = installation.ok_or(AppError::NoInstallation)?;
                app.own_client(installation, repo).await
            }
        }
    }

    pub fn app(&self) -> Option<&Arc<App>> {
        match self {
            Credentials::App(app) => Some(app),
            Credentials::Token(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_add_only_reading_checks_to_the_bots_permissions() {
        let extra: Vec<_> = BOT_PERMISSIONS_WITH_CHECKS
            .iter()
            .filter(|p| !BOT_PERMISSIONS.contains(p))
            .collect();
        assert_eq!(extra, [&("checks", "read")]);
        assert!(BOT_PERMISSIONS
            .iter()
            .all(|p| BOT_PERMISSIONS_WITH_CHECKS.contains(p)));
    }

    #[test]
    fn the_jwt_claims_fit_githubs_limits() {
        let claims = jwt_claims(12345, 1_700_000_000);
        assert_eq!(claims["iss"], "12345");
        let iat = claims["iat"].as_u64().unwrap();
        let exp = claims["exp"].as_u64().unwrap();
        assert_eq!(iat, 1_700_000_000 - 60);
        assert!(exp > 1_700_000_000, "not expired at once");
        assert!(exp - iat <= 600, "GitHub takes at most 10 minutes");
        assert!(exp <= 1_700_000_000 + 600);
    }

    #[test]
    fn a_token_is_reused_until_five_minutes_before_it_expires() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let m = |s| Duration::from_secs(s);
        assert!(reusable(now + m(3600), now));
        assert!(reusable(now + m(301), now));
        assert!(!reusable(now + m(300), now));
        assert!(!reusable(now + m(10), now));
        assert!(!reusable(now, now));
        assert!(!reusable(now - m(10), now));
    }

    #[test]
    fn each_operation_gets_its_permissions() {
        assert_eq!(job_permissions("default"), Some(MENTION_PERMISSIONS));
        assert_eq!(job_permissions("pr-review"), Some(PR_REVIEW_PERMISSIONS));
        assert_eq!(job_permissions("auto-tag"), None);
        assert_eq!(job_permissions("anything else"), None);
        assert_eq!(job_permissions(""), None);
        let access = |p: Permissions, name: &str| {
            p.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, a)| *a)
                .unwrap_or("none")
        };
        // A review reads the code and pushes nothing.
        assert_eq!(access(PR_REVIEW_PERMISSIONS, "contents"), "read");
        assert_eq!(access(MENTION_PERMISSIONS, "contents"), "write");
        for p in [MENTION_PERMISSIONS, PR_REVIEW_PERMISSIONS] {
            assert_eq!(access(p, "issues"), "write");
            assert_eq!(access(p, "pull_requests"), "write");
            assert_eq!(access(p, "administration"), "none");
            assert_eq!(access(p, "workflows"), "none");
        }
    }

    #[test]
    fn githubs_timestamps_are_read() {
        let t = |s| parse_utc(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2016-07-11T22:14:10Z"), Some(1_468_275_250));
        assert_eq!(t("2000-02-29T12:00:00Z"), Some(951_825_600));
        assert_eq!(t("2026-11-30T03:34:14Z"), Some(1_796_009_654));
        for bad in [
            "",
            "2016-07-11 22:14:10Z",
            "2016-07-11T22:14:10",
            "2016-07-11T22:14:10+02:00",
            "2016-13-11T22:14:10Z",
            "2016-07-11T25:14:10Z",
            "2016-07-1xT22:14:10Z",
            "+016-07-11T22:14:10Z",
            "1969-12-31T23:59:59Z",
            "2016-07-11T22:14:1éZ",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_token_answer_is_read_and_never_shown() {
        let token = parse_token(
            br#"{"token": "ghs_abc", "expires_at": "2016-07-11T22:14:10Z", "permissions": {}}"#,
        )
        .unwrap();
        assert_eq!(token.secret(), "ghs_abc");
        assert!(!format!("{token:?}").contains("ghs_abc"));
        assert_eq!(parse_token(b"nope").unwrap_err(), "a JSON body");
        assert_eq!(
            parse_token(br#"{"expires_at": "2016-07-11T22:14:10Z"}"#).unwrap_err(),
            "token"
        );
        assert_eq!(
            parse_token(br#"{"token": "", "expires_at": "2016-07-11T22:14:10Z"}"#).unwrap_err(),
            "token"
        );
        assert_eq!(
            parse_token(br#"{"token": "x", "expires_at": 5}"#).unwrap_err(),
            "a valid expires_at"
        );
    }

    #[test]
    fn a_bad_key_is_a_clear_error_that_quotes_no_key() {
        let api = GitHubClient::with_base_url("http://127.0.0.1:9", "unused").unwrap();
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END RSA PRIVATE KEY-----\n";
        let e = App::from_pem(1, pem, api.clone()).unwrap_err().to_string();
        assert!(e.contains("private_key_file"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let e = App::from_key_file(1, Path::new("/nonexistent/key.pem"), api)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/key.pem") && e.contains("GITHUB_APP_PRIVATE_KEY_FILE"),
            "{e}"
        );
    }
}
