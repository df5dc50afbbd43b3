//! The configuration file: parsing and validation, no I/O beyond the string it is
//! given ([`Config::load`] alone reads the file and the hostname). Every error names
//! the profile or section and the key, so a typo is found at load time, not when the
//! first job arrives.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default cap on each of a job's output streams.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 10 * 1024 * 1024;
/// Default time a job may run.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time between SIGTERM and the kill when a job times out (as `docker stop`).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// Default number of parked containers a profile keeps ready even with no demand.
pub const DEFAULT_MIN_IDLE: usize = 1;
/// Default ceiling of the adaptive idle target.
pub const DEFAULT_MAX_IDLE: usize = 8;
/// Default cap on a profile's containers: parked, busy and starting together.
pub const DEFAULT_MAX_CONTAINERS: usize = 16;
/// Default cap on jobs waiting for a container.
pub const DEFAULT_MAX_QUEUE: usize = 1000;
/// Default time a job may wait in the queue before it fails.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5 * 60);
/// Default age at which a parked container is replaced.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// Default time parked containers above `min_idle` are kept once demand has gone.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(10 * 60);

/// Instance name when `[server] instance` is unset and the hostname is unknown.
pub const FALLBACK_INSTANCE: &str = "warmpool";
/// Default time running jobs get to finish when the server shuts down.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default time ended jobs (and their output) are kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default largest request body of the API.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
/// `[server] inline_output` unset: the head of each stream a job's JSON carries.
pub const DEFAULT_INLINE_OUTPUT: u64 = 1024 * 1024;
/// The largest `[server] inline_output` (a job's JSON is built in memory).
pub const MAX_INLINE_OUTPUT: u64 = 64 * 1024 * 1024;
/// Default limits on one job's input, checked at the API (see [`JobLimits`]).
pub const DEFAULT_MAX_ENV: usize = 4096;
pub const DEFAULT_MAX_ENV_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_ARGS: usize = 4096;
pub const DEFAULT_MAX_ARGS_BYTES: u64 = 512 * 1024;
pub const DEFAULT_MAX_STDIN: u64 = 10 * 1024 * 1024;
/// Default address of the HTTP service.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default directory of the service's state.
pub const DEFAULT_DATA_DIR: &str = ".warmpool";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid TOML: {0}")]
    Toml(String),
    #[error("config: {0}")]
    Top(String),
    #[error("profile \"{profile}\": {message}")]
    Profile { profile: String, message: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub profiles: BTreeMap<String, Profile>,
    /// The GitHub @mention bot, when configured.
    pub github: Option<GithubConfig>,
    /// Where jobs are stored: SQLite under `data_dir`, or a shared PostgreSQL.
    pub store: StoreConfig,
    /// How the nodes sharing one store watch each other.
    pub cluster: ClusterConfig,
}

/// `[store]`: the job store. Unset `url`: the embedded SQLite file under
/// `[server] data_dir` (one node). A `postgres://` URL: a database shared by
/// every node of a cluster. `WARMPOOL_STORE_URL` (or the file named by
/// `WARMPOOL_STORE_URL_FILE`) overrides it at start (see the CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    pub url: Option<String>,
}

/// Default time without a heartbeat after which a node is declared lost.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// `[cluster]`: liveness of the nodes sharing a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// A node not seen for this long is lost: another node ends or re-queues its
    /// running jobs, and its late writes are refused.
    pub node_timeout: Duration,
    /// How often a node renews its lease (default: a sixth of `node_timeout`).
    pub heartbeat: Duration,
    /// Where other nodes and `GET /v1/nodes` say this node's API is (default:
    /// `http://<[server] listen>`).
    pub address: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_timeout: DEFAULT_NODE_TIMEOUT,
            heartbeat: DEFAULT_NODE_TIMEOUT / 6,
            address: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

impl RawStore {
    fn validate(self) -> Result<StoreConfig, String> {
        if let Some(url) = &self.url {
            check_store_url(url)?;
        }
        Ok(StoreConfig { url: self.url })
    }
}

/// A store URL is `postgres://` or `postgresql://` (SQLite needs none).
pub fn check_store_url(url: &str) -> Result<(), String> {
    let scheme = url.split("://").next().unwrap_or_default();
    if url.contains("://") && matches!(scheme, "postgres" | "postgresql") {
        return Ok(());
    }
    Err(format!(
        "key `url`: \"{scheme}\" is not a store this build knows; give a postgres://user@host/db URL \
         (or leave `url` unset for SQLite under [server] data_dir)"
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node_timeout: Option<toml::Value>,
    heartbeat: Option<toml::Value>,
    address: Option<toml::Value>,
}

impl RawCluster {
    fn validate(self) -> Result<ClusterConfig, String> {
        let node_timeout = typed::<ConfigDuration>("node_timeout", self.node_timeout)?
            .map_or(DEFAULT_NODE_TIMEOUT, |d| d.0);
        if node_timeout < Duration::from_secs(1) {
            return Err("key `node_timeout`: must be at least 1s".into());
        }
        let heartbeat =
            typed::<ConfigDuration>("heartbeat", self.heartbeat)?.map_or(node_timeout / 6, |d| d.0);
        if heartbeat.is_zero() || heartbeat * 2 > node_timeout {
            return Err(format!(
                "key `heartbeat`: {heartbeat:?} must be above 0 and at most half of node_timeout ({node_timeout:?}), \
                 or one late beat declares the node lost"
            ));
        }
        let address = typed::<String>("address", self.address)?;
        Ok(ClusterConfig {
            node_timeout,
            heartbeat,
            address,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Docker endpoint (`unix:///var/run/docker.sock`, `tcp://host:2375`); unset means
    /// DOCKER_HOST or the local default socket.
    pub host: Option<String>,
}

/// The `[server]` section: this pool instance and, for the HTTP service, where it
/// listens and keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// This pool's name, labelled on every container it creates, so two pools on one
    /// engine tell their containers apart. Default: the hostname (see [`Config::load`]).
    pub instance: String,
    /// Time running jobs get to finish when the server shuts down.
    pub shutdown_grace: Duration,
    /// Ended jobs older than this are pruned from the store, output included.
    pub retention: Duration,
    /// Largest request body the API accepts (a larger one is a 413).
    pub max_body: u64,
    /// At most this many bytes of each stream's text go inline in a job's JSON
    /// (`GET /v1/jobs/{id}`, `?wait=true`); the rest is at `/v1/jobs/{id}/output`.
    /// 0 shows no output inline.
    pub inline_output: u64,
    /// Limits on one job's env, args and stdin (a job over one is a 400).
    pub limits: JobLimits,
    /// Address of the HTTP service; checked to parse as a [`SocketAddr`].
    pub listen: String,
    /// Directory of the service's state.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            instance: FALLBACK_INSTANCE.to_string(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            retention: DEFAULT_RETENTION,
            max_body: DEFAULT_MAX_BODY,
            inline_output: DEFAULT_INLINE_OUTPUT,
            limits: JobLimits::default(),
            listen: DEFAULT_LISTEN.to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

impl ServerConfig {
    /// The instance name when `[server] instance` is unset: `hostname` (trimmed) when
    /// there is one, else [`FALLBACK_INSTANCE`]. Pure; [`host_name`] does the lookup.
    pub fn instance_or_default(hostname: Option<&str>) -> String {
        match hostname.map(str::trim) {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => FALLBACK_INSTANCE.to_string(),
        }
    }
}

/// Limits on one job's input, enforced where the API parses a submit (before
/// anything is stored or composed). Linux itself caps a process's args and env
/// together, strings and pointers, at a quarter of the stack limit (2 MiB under
/// the usual 8 MiB), so the defaults (4096 env entries in 1 MiB, 4096 arguments
/// in 512 KiB: about 1.6 MiB with their pointers) leave a job at every limit
/// room for the profile's and the image's env and still able to exec; stdin
/// defaults to `max_body`'s default (10 MiB). Bytes count as the kernel counts
/// them: `KEY=VALUE` and each argument with its terminating NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// `[server] max_env`: env entries.
    pub max_env: usize,
    /// `[server] max_env_bytes`: all env entries together.
    pub max_env_bytes: u64,
    /// `[server] max_args`: arguments.
    pub max_args: usize,
    /// `[server] max_args_bytes`: all arguments together.
    pub max_args_bytes: u64,
    /// `[server] max_stdin`: stdin bytes.
    pub max_stdin: u64,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            max_env: DEFAULT_MAX_ENV,
            max_env_bytes: DEFAULT_MAX_ENV_BYTES,
            max_args: DEFAULT_MAX_ARGS,
            max_args_bytes: DEFAULT_MAX_ARGS_BYTES,
            max_stdin: DEFAULT_MAX_STDIN,
        }
    }
}

/// A job over one of its [`JobLimits`]; the message names the limit and its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {got} {unit}, over the limit of {limit} ([server] {key})")]
pub struct OverLimit {
    pub what: &'static str,
    pub got: u64,
    pub unit: &'static str,
    pub limit: u64,
    pub key: &'static str,
}

impl JobLimits {
    /// Check a job's input against the limits: linear in its size, the counts
    /// first (a count over its limit is refused before any entry is looked at).
    pub fn check<'a>(
        &self,
        env: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
        args: &[String],
        stdin_len: Option<usize>,
    ) -> Result<(), OverLimit> {
        let over = |what, got: u64, unit, limit: u64, key| {
            if got > limit {
                Err(OverLimit {
                    what,
                    got,
                    unit,
                    limit,
                    key,
                })
            } else {
                Ok(())
            }
        };
        over(
            "env",
            env.len() as u64,
            "entries",
            self.max_env as u64,
            "max_env",
        )?;
        over(
            "args",
            args.len() as u64,
            "arguments",
            self.max_args as u64,
            "max_args",
        )?;
        let env_bytes: u64 = env.map(|(k, v)| k.len() as u64 + v.len() as u64 + 2).sum();
        over(
            "env",
            env_bytes,
            "bytes",
            self.max_env_bytes,
            "max_env_bytes",
        )?;
        let args_bytes: u64 = args.iter().map(|a| a.len() as u64 + 1).sum();
        over(
            "args",
            args_bytes,
            "bytes",
            self.max_args_bytes,
            "max_args_bytes",
        )?;
        over(
            "stdin",
            stdin_len.unwrap_or(0) as u64,
            "bytes",
            self.max_stdin,
            "max_stdin",
        )
    }
}

/// Is `name` a valid instance name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`? It goes into
/// labels and container names.
pub fn valid_instance_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The default instance name: `base` (the hostname) and a short stable hash of
/// the data directory's absolute path, `-` between; `base` is cut so the name
/// stays a valid instance name (at most 63 characters).
pub fn default_instance(base: &str, data_dir: &std::path::Path) -> String {
    // FNV-1a: stable across builds and Rust versions (unlike `DefaultHasher`).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let base: String = base.chars().take(63 - 9).collect();
    format!("{base}-{:08x}", hash as u32)
}

/// The machine's hostname: `/etc/hostname`, else `HOSTNAME`, trimmed; `None` when
/// neither has one. The only I/O here besides reading the config file.
pub fn host_name() -> Option<String> {
    let from_file = std::fs::read_to_string("/etc/hostname").ok();
    [from_file, std::env::var("HOSTNAME").ok()]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
}

/// `[github]`: the @mention bot on `POST /webhooks/github`. Its secrets (the
/// webhook secret, the API token) come from the environment, never from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubConfig {
    /// Mentions are `@<bot_username>`; its own comments are ignored.
    pub bot_username: String,
    /// Who may trigger jobs (GitHub logins, compared case-insensitively).
    pub authorized_users: Vec<String>,
    /// The profile the jobs run in.
    pub profile: String,
    /// The REST API's base URL (GitHub Enterprise, or a test server).
    pub api_url: String,
    /// Largest webhook body taken (GitHub sends at most 25 MB); apart from the
    /// API's `[server] max_body`.
    pub max_body: u64,
    /// GitHub App auth: the App's id and its private key's file (which
    /// `GITHUB_APP_PRIVATE_KEY_FILE` overrides); see [`GithubConfig::app_auth`].
    pub app_id: Option<u64>,
    pub private_key_file: Option<String>,
    /// Reviews and auto-labelling (`auto_label`, `label_rules`, `review_*`).
    pub triage: TriageConfig,
    /// Warm repository mirrors: the host directory holding one bare mirror per
    /// repository, mounted read-only in the bot's profile at [`MIRROR_MOUNT`]
    /// (`None`: no mirrors).
    pub mirror_dir: Option<String>,
    /// A mirror not updated for this long is updated in the background.
    pub mirror_refresh: Duration,
    /// The git host's base URL (`https://github.com`): mirrors fetch
    /// `<git_url>/<owner>/<repo>.git`.
    pub git_url: String,
}

impl GithubConfig {
    /// The GitHub App (id, private key file) the bot authenticates as, or `None`
    /// for a personal token; `env_key_file` is `GITHUB_APP_PRIVATE_KEY_FILE`,
    /// which wins over `private_key_file`. One without the other is an error.
    pub fn app_auth(&self, env_key_file: Option<&str>) -> Result<Option<(u64, String)>, String> {
        let key_file = env_key_file
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .or_else(|| self.private_key_file.clone());
        match (self.app_id, key_file) {
            (Some(id), Some(file)) => Ok(Some((id, file))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("[github] key `app_id` is set but the App's private key is not: set `private_key_file` (or GITHUB_APP_PRIVATE_KEY_FILE in the environment), or remove `app_id` to use GITHUB_TOKEN".to_string()),
            (None, Some(_)) => Err("[github] a GitHub App private key is given (`private_key_file` or GITHUB_APP_PRIVATE_KEY_FILE) but key `app_id` is not: set `app_id` to the App's id".to_string()),
        }
    }
}

/// Auto-labelling of new issues and reviews of pull requests whose checks pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageConfig {
    /// Label each opened issue with a job (`OPERATION_TYPE=auto-tag`, no token).
    pub auto_label: bool,
    /// `[github.label_rules]`: label → keywords, used when the job fails;
    /// `None`: the documented defaults (bug, enhancement, documentation, question).
    pub label_rules: Option<Vec<(String, Vec<String>)>>,
    /// Review a pull request when every check suite of its head commit passed.
    pub review_on_checks: bool,
    /// How long after a suite's success the suites are read (others may start).
    pub review_settle: Duration,
    pub review_label_in_progress: String,
    pub review_label_complete: String,
}

pub const DEFAULT_REVIEW_SETTLE: Duration = Duration::from_secs(30);

impl Default for TriageConfig {
    fn default() -> Self {
        TriageConfig {
            auto_label: false,
            label_rules: None,
            review_on_checks: false,
            review_settle: DEFAULT_REVIEW_SETTLE,
            review_label_in_progress: "claude-review-in-progress".to_string(),
            review_label_complete: "claude-review-complete".to_string(),
        }
    }
}

/// Where the bot's profile sees `[github] mirror_dir` (read-only).
pub const MIRROR_MOUNT: &str = "/warmpool/mirrors";

/// `[github] mirror_refresh` when unset.
pub const DEFAULT_MIRROR_REFRESH: Duration = Duration::from_secs(600);

/// The git host behind a REST API URL: `https://api.github.com` is served by
/// `https://github.com`, GitHub Enterprise's `https://HOST/api/v3` by `https://HOST`.
pub fn git_url_for(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if let Some(rest) = api.strip_prefix("https://api.") {
        return format!("https://{rest}");
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_string()
}

/// GitHub's own cap on a webhook payload.
pub const GITHUB_MAX_BODY: u64 = 25 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGithub {
    bot_username: String,
    #[serde(default)]
    authorized_users: Vec<String>,
    profile: String,
    api_url: Option<String>,
    max_body: Option<ConfigSize>,
    /// Read as any TOML value, so that a wrong type is an error naming the key.
    app_id: Option<toml::Value>,
    private_key_file: Option<String>,
    #[serde(default)]
    auto_label: bool,
    label_rules: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    review_on_checks: bool,
    review_settle: Option<toml::Value>,
    review_label_in_progress: Option<String>,
    review_label_complete: Option<String>,
    mirror_dir: Option<String>,
    mirror_refresh: Option<ConfigDuration>,
    git_url: Option<String>,
}

/// A label name GitHub takes: 1 to 50 characters, not only spaces.
fn valid_label(s: &str) -> bool {
    !s.trim().is_empty() && s.chars().count() <= 50 && !s.chars().any(char::is_control)
}

/// A GitHub login: letters, digits and single hyphens, at most 39 characters.
fn valid_login(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl RawGithub {
    fn validate(self) -> Result<GithubConfig, String> {
        if !valid_login(&self.bot_username) {
            return Err(format!(
                "key `bot_username`: \"{}\" is not a GitHub login (letters, digits, '-')",
                self.bot_username
            ));
        }
        for u in &self.authorized_users {
            if !valid_login(u) {
                return Err(format!(
                    "key `authorized_users`: \"{u}\" is not a GitHub login"
                ));
            }
        }
        let api_url = self
            .api_url
            .unwrap_or_else(|| "https://api.github.com".to_string())
            .trim_end_matches('/')
            .to_string();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(format!(
                "key `api_url`: \"{api_url}\" must start with https:// (or http:// for a local stand-in)"
            ));
        }
        let max_body = self.max_body.map_or(GITHUB_MAX_BODY, |s| s.0);
        if !(1024..=GITHUB_MAX_BODY).contains(&max_body) {
            return Err(format!(
                "key `max_body`: {max_body} bytes; give 1k to 25m (GitHub sends at most 25 MB)"
            ));
        }
        let app_id = match self.app_id {
            None => None,
            Some(id) => Some(
                id.as_integer()
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        format!("key `app_id`: {id} is not a GitHub App id (a positive integer)")
                    })?,
            ),
        };
        if self.private_key_file.as_deref() == Some("") {
            return Err(
                "key `private_key_file` is empty: give the path of the App's private key (PEM)"
                    .to_string(),
            );
        }
        let defaults = TriageConfig::default();
        let label = |key: &str, given: Option<String>, default: String| match given {
            None => Ok(default),
            Some(l) if valid_label(&l) => Ok(l),
            Some(l) => Err(format!(
                "key `{key}`: {l:?} is not a label name (1 to 50 characters)"
            )),
        };
        let mut label_rules = None;
        if let Some(rules) = self.label_rules {
            let mut kept = Vec::new();
            for (name, words) in rules {
                if !valid_label(&name) {
                    return Err(format!(
                        "key `label_rules`: {name:?} is not a label name (1 to 50 characters)"
                    ));
                }
                if words.iter().any(|w| w.trim().is_empty()) {
                    return Err(format!(
                        "key `label_rules.{name}`: an empty keyword would match nothing"
                    ));
                }
                kept.push((name, words));
            }
            label_rules = Some(kept);
        }
        let triage = TriageConfig {
            auto_label: self.auto_label,
            label_rules,
            review_on_checks: self.review_on_checks,
            review_settle: typed::<ConfigDuration>("review_settle", self.review_settle)?
                .map_or(defaults.review_settle, |d| d.0),
            review_label_in_progress: label(
                "review_label_in_progress",
                self.review_label_in_progress,
                defaults.review_label_in_progress,
            )?,
            review_label_complete: label(
                "review_label_complete",
                self.review_label_complete,
                defaults.review_label_complete,
            )?,
        };
        if let Some(dir) = &self.mirror_dir {
            plain_absolute(dir).map_err(|why| format!("key `mirror_dir`: \"{dir}\" {why}"))?;
        }
        let mirror_refresh = self.mirror_refresh.map_or(DEFAULT_MIRROR_REFRESH, |d| d.0);
        if mirror_refresh < Duration::from_secs(1) {
            return Err("key `mirror_refresh`: give at least 1s, like \"10m\"".into());
        }
        let git_url = match self.git_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => git_url_for(&api_url),
        };
        if !(git_url.starts_with("https://") || git_url.starts_with("http://")) {
            return Err(format!(
                "key `git_url`: \"{git_url}\" must start with https:// (or http:// for a local stand-in)"
            ));
        }
        Ok(GithubConfig {
            bot_username: self.bot_username,
            authorized_users: self.authorized_users,
            profile: self.profile,
            api_url,
            max_body,
            app_id,
            private_key_file: self.private_key_file,
            triage,
            mirror_dir: self.mirror_dir,
            mirror_refresh,
            git_url,
        })
    }
}

/// A read-only bind mount of a host path (`mounts = ["/host:/in/container:ro"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: String,
    pub target: String,
}

/// Why `path` is not a plain absolute path (absolute, no `..`, no `:` or `,`), if it is not.
fn plain_absolute(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if path.split('/').any(|c| c == "..") {
        return Err("must not contain `..`".into());
    }
    if path.contains([':', ',', '\0']) {
        return Err("must not contain ':', ',' or NUL".into());
    }
    Ok(())
}

/// Why mounting `path` would hand a job a socket (the Docker engine's above
/// all): read-only does not stop a process from connecting to a socket, and
/// the engine's socket is root on the host. A socket itself, or a directory
/// holding the engine's socket (`/run`, `/var/run`), is refused.
fn exposes_a_socket(path: &std::path::Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_socket() {
        return Some(
            "is a socket: a read-only mount does not stop a job from connecting to it \
             (the Docker socket is root on the host)"
                .to_string(),
        );
    }
    let real = std::fs::canonicalize(path).ok()?;
    for engine in ["/var/run/docker.sock", "/run/docker.sock"] {
        let engine = std::fs::canonicalize(engine).ok();
        if engine.is_some_and(|e| e.starts_with(&real)) {
            return Some(
                "holds the Docker engine's socket: a job could drive the engine (root on the host)"
                    .to_string(),
            );
        }
    }
    None
}

/// `"/host:/in/container:ro"` as a read-only bind mount; anything writable is refused.
fn parse_mount(m: &str) -> Result<BindMount, String> {
    let parts: Vec<&str> = m.split(':').collect();
    let (source, target) = match parts[..] {
        [source, target, "ro"] => (source, target),
        [_, _] | [_, _, "rw"] => {
            return Err(format!(
                "key `mounts`: \"{m}\" is writable; only read-only mounts are taken \
                 (\"/host/path:/in/container:ro\"): what one job writes there would reach the \
                 next job of a reused container and the host, secrets included"
            ))
        }
        _ => {
            return Err(format!(
                "key `mounts`: \"{m}\" is not \"/host/path:/in/container:ro\""
            ))
        }
    };
    plain_absolute(source).map_err(|why| format!("key `mounts`: host path \"{source}\" {why}"))?;
    plain_absolute(target)
        .map_err(|why| format!("key `mounts`: container path \"{target}\" {why}"))?;
    if target == "/" {
        return Err(format!(
            "key `mounts`: \"{m}\" cannot cover the container's root"
        ));
    }
    Ok(BindMount {
        source: source.to_string(),
        target: target.to_string(),
    })
}

/// A tmpfs mount: target path and mount options (`size=64m,mode=1777`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub path: String,
    pub options: String,
}

/// One kind of job: an image plus how its containers are created.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub image: String,
    /// Fixed, non-secret env, applied after the image's env and before the job's.
    pub env: Vec<(String, String)>,
    pub job_timeout: Duration,
    pub kill_grace: Duration,
    /// Cap per output stream, in bytes.
    pub output_limit: u64,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub network: Option<String>,
    pub read_only: bool,
    pub tmpfs: Vec<Tmpfs>,
    /// Read-only bind mounts of host paths.
    pub mounts: Vec<BindMount>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub runtime: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Variables the server reads from its own environment (or `NAME_FILE`)
    /// when a job starts and hands to the job; never stored, redacted from output.
    pub secret_env: Vec<String>,
    /// Parked containers kept ready even when no jobs arrive (0: none while idle).
    pub min_idle: usize,
    /// The adaptive idle target never goes above this.
    pub max_idle: usize,
    /// Containers parked, busy and starting together, at most.
    pub max_containers: usize,
    /// Jobs waiting for a container, at most.
    pub max_queue: usize,
    /// A queued job fails after waiting this long.
    pub max_wait: Duration,
    /// Parked containers older than this are replaced.
    pub max_age: Duration,
    /// Parked containers above `min_idle` are removed once the demand that asked for
    /// them is this old.
    pub idle_ttl: Duration,
    /// A job running on a node that is lost is queued again rather than ended
    /// `interrupted` (for idempotent jobs only: it may have done part of its work;
    /// its input is kept in the store while it runs). Default false.
    pub retry_interrupted: bool,
    /// Jobs a container may serve, reset and checked by its gate between them
    /// (1: single use, the default). Above 1 only for a profile whose every
    /// writable place the gate can empty: `read_only` with `tmpfs` mounts.
    pub reuse: usize,
}

impl Profile {
    /// A profile with every knob at its default, for `image`.
    pub fn new(name: &str, image: &str) -> Profile {
        Profile {
            name: name.to_string(),
            image: image.to_string(),
            env: Vec::new(),
            job_timeout: DEFAULT_JOB_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            memory: None,
            cpus: None,
            pids_limit: None,
            network: None,
            read_only: false,
            tmpfs: Vec::new(),
            mounts: Vec::new(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security_opt: Vec::new(),
            user: None,
            workdir: None,
            runtime: None,
            labels: BTreeMap::new(),
            secret_env: Vec::new(),
            min_idle: DEFAULT_MIN_IDLE,
            max_idle: DEFAULT_MAX_IDLE,
            max_containers: DEFAULT_MAX_CONTAINERS,
            max_queue: DEFAULT_MAX_QUEUE,
            max_wait: DEFAULT_MAX_WAIT,
            max_age: DEFAULT_MAX_AGE,
            idle_ttl: DEFAULT_IDLE_TTL,
            retry_interrupted: false,
            reuse: 1,
        }
    }
}

/// A duration: an integer is seconds; a string is a number with `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: seconds as an integer, or a string like \"500ms\", \"30s\", \"2m\", \"1h\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v < 0 {
                    return Err(E::custom(format!("duration {v} is negative")));
                }
                // The bound a string has (see `parse_duration`): a deadline this
                // far ahead (`now + kill_grace`) would overflow.
                if v as f64 > MAX_DURATION_SECS {
                    return Err(E::custom(format!("duration {v} is out of range")));
                }
                Ok(ConfigDuration(Duration::from_secs(v as u64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes: an integer is bytes; a string takes `b`, `k`, `m`, `g` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a size: bytes as an integer, or a string like \"512k\", \"256m\", \"2g\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v < 0 {
                    return Err(E::custom(format!("size {v} is negative")));
                }
                Ok(ConfigSize(v as u64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(ConfigSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A count: a whole number, 0 or more (a negative or fractional number is an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigCount(pub usize);

impl<'de> Deserialize<'de> for ConfigCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ConfigCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number, 0 or more")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "{v} is negative; use a whole number, 0 or more"
                    )));
                }
                self.visit_u64(v as u64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                usize::try_from(v)
                    .map(ConfigCount)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number; use a whole number, 0 or more"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// One key's value as `T`, the key named in the error: serde's own type errors do not
/// say which key they are about.
fn typed<T: de::DeserializeOwned>(
    key: &str,
    value: Option<toml::Value>,
) -> Result<Option<T>, String> {
    value
        .map(|v| {
            v.try_into::<T>()
                .map_err(|e| format!("key `{key}`: {}", e.message()))
        })
        .transpose()
}

/// A profile duration that must be above zero, or `default` when unset.
fn positive_duration(
    key: &str,
    value: Option<toml::Value>,
    default: Duration,
) -> Result<Duration, String> {
    let d = typed::<ConfigDuration>(key, value)?.map_or(default, |d| d.0);
    if d.is_zero() {
        return Err(format!("key `{key}`: must be above 0"));
    }
    Ok(d)
}

/// Longest duration taken, in seconds (about 31 years), written either way.
const MAX_DURATION_SECS: f64 = 1e9;

/// `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("\"{s}\" is not a duration (try \"500ms\", \"30s\", \"2m\", \"1h\")")
    })?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "\"{s}\": unknown duration unit \"{other}\" (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs > MAX_DURATION_SECS {
        return Err(format!("\"{s}\" is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `"512k"`, `"256m"`, `"2g"`, `"100b"`, or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a size (try \"512k\", \"256m\", \"2g\")"))?;
    let mult: f64 = match unit.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "\"{s}\": unknown size unit \"{unit}\" (use b, k, m, g or t)"
            ))
        }
    };
    let bytes = value * mult;
    // 2^63 itself is out: `u64::MAX / 2` rounds up to it as an f64.
    if !bytes.is_finite() || bytes >= u64::MAX as f64 / 2.0 {
        return Err(format!("\"{s}\" is out of range"));
    }
    Ok(bytes as u64)
}

/// A profile as written in TOML, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    image: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    // Durations and sizes stay raw TOML too: a bad one is reported with its key.
    job_timeout: Option<toml::Value>,
    kill_grace: Option<toml::Value>,
    output_limit: Option<toml::Value>,
    memory: Option<toml::Value>,
    cpus: Option<f64>,
    pids_limit: Option<i64>,
    network: Option<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    tmpfs: Vec<String>,
    #[serde(default)]
    mounts: Vec<String>,
    #[serde(default)]
    cap_add: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    security_opt: Vec<String>,
    user: Option<String>,
    workdir: Option<String>,
    runtime: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    secret_env: Vec<String>,
    // Pool keys stay raw TOML here so that a wrong type is reported with the key.
    min_idle: Option<toml::Value>,
    max_idle: Option<toml::Value>,
    max_containers: Option<toml::Value>,
    max_queue: Option<toml::Value>,
    max_wait: Option<toml::Value>,
    max_age: Option<toml::Value>,
    idle_ttl: Option<toml::Value>,
    #[serde(default)]
    retry_interrupted: bool,
    reuse: Option<toml::Value>,
}

/// Is `name` a valid environment variable name (POSIX: letters, digits, `_`, not
/// starting with a digit)?
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Labels under this prefix are warmpool's own; a profile cannot set them.
pub const LABEL_PREFIX: &str = "warmpool.";

impl RawProfile {
    fn validate(self, name: &str) -> Result<Profile, String> {
        if self.image.trim().is_empty() {
            return Err("key `image`: must name an image, like \"myorg/job:latest\"".into());
        }
        let mut env = Vec::new();
        for (k, v) in self.env {
            if !valid_env_name(&k) {
                return Err(format!(
                    "key `env`: \"{k}\" is not a valid variable name (letters, digits, _; not starting with a digit)"
                ));
            }
            if v.contains('\0') {
                return Err(format!("key `env`: the value of {k} contains a NUL byte"));
            }
            env.push((k, v));
        }
        if let Some(c) = self.cpus {
            if !(c > 0.0 && c.is_finite()) {
                return Err(format!(
                    "key `cpus`: {c} must be a positive number like 0.5 or 2"
                ));
            }
        }
        if let Some(p) = self.pids_limit {
            if p <= 0 {
                return Err(format!("key `pids_limit`: {p} must be positive"));
            }
        }
        let memory = typed::<ConfigSize>("memory", self.memory)?.map(|m| m.0);
        if let Some(m) = memory {
            // The engine refuses anything under 6 MiB; say so now rather than at create.
            if m < 6 * 1024 * 1024 {
                return Err(format!(
                    "key `memory`: {m} bytes is below the engine's minimum of 6m"
                ));
            }
        }
        let output_limit = typed::<ConfigSize>("output_limit", self.output_limit)?
            .map_or(DEFAULT_OUTPUT_LIMIT, |s| s.0);
        if output_limit == 0 {
            return Err("key `output_limit`: must be above 0".into());
        }
        let job_timeout = typed::<ConfigDuration>("job_timeout", self.job_timeout)?
            .map_or(DEFAULT_JOB_TIMEOUT, |d| d.0);
        let kill_grace = typed::<ConfigDuration>("kill_grace", self.kill_grace)?
            .map_or(DEFAULT_KILL_GRACE, |d| d.0);
        if job_timeout.is_zero() {
            return Err("key `job_timeout`: must be above 0".into());
        }
        let mut tmpfs = Vec::new();
        for t in self.tmpfs {
            let (path, options) = t.split_once(':').unwrap_or((t.as_str(), ""));
            if !path.starts_with('/') {
                return Err(format!(
                    "key `tmpfs`: \"{t}\" must be an absolute path, optionally with options (\"/tmp:size=64m\")"
                ));
            }
            tmpfs.push(Tmpfs {
                path: path.to_string(),
                options: options.to_string(),
            });
        }
        let mut mounts = Vec::new();
        for m in &self.mounts {
            mounts.push(parse_mount(m)?);
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(format!("key `workdir`: \"{w}\" must be an absolute path"));
            }
        }
        if let Some(u) = &self.user {
            if u.is_empty() || u.contains(char::is_whitespace) {
                return Err(format!(
                    "key `user`: \"{u}\" is not a user (name, uid, or uid:gid)"
                ));
            }
        }
        let count = |key: &str, value: Option<toml::Value>, default: usize| {
            typed::<ConfigCount>(key, value).map(|c| c.map_or(default, |c| c.0))
        };
        let min_idle = count("min_idle", self.min_idle, DEFAULT_MIN_IDLE)?;
        let max_idle = count("max_idle", self.max_idle, DEFAULT_MAX_IDLE)?;
        let max_containers = count(
            "max_containers",
            self.max_containers,
            DEFAULT_MAX_CONTAINERS,
        )?;
        let max_queue = count("max_queue", self.max_queue, DEFAULT_MAX_QUEUE)?;
        if max_idle < min_idle {
            return Err(format!(
                "key `max_idle`: {max_idle} is below min_idle ({min_idle}); raise max_idle or lower min_idle"
            ));
        }
        if max_containers == 0 {
            return Err("key `max_containers`: must be at least 1".into());
        }
        if max_containers < min_idle {
            return Err(format!(
                "key `max_containers`: {max_containers} cannot hold min_idle ({min_idle}) parked containers; raise max_containers or lower min_idle"
            ));
        }
        let reuse = count("reuse", self.reuse, 1)?;
        if reuse == 0 {
            return Err("key `reuse`: must be at least 1 (1: a container serves one job)".into());
        }
        if reuse > 1 {
            reusable(self.read_only, &self.cap_add, &self.security_opt).map_err(|why| {
                format!("key `reuse`: {reuse} jobs per container {why}; or set reuse = 1")
            })?;
        }
        let max_wait = positive_duration("max_wait", self.max_wait, DEFAULT_MAX_WAIT)?;
        let max_age = positive_duration("max_age", self.max_age, DEFAULT_MAX_AGE)?;
        let idle_ttl = positive_duration("idle_ttl", self.idle_ttl, DEFAULT_IDLE_TTL)?;
        for k in &self.secret_env {
            if !valid_env_name(k) {
                return Err(format!(
                    "key `secret_env`: \"{k}\" is not a valid variable name (letters, digits, _; not starting with a digit)"
                ));
            }
        }
        for k in self.labels.keys() {
            if k.starts_with(LABEL_PREFIX) {
                return Err(format!(
                    "key `labels`: \"{k}\" is reserved; labels starting with \"{LABEL_PREFIX}\" are set by warmpool"
                ));
            }
        }
        Ok(Profile {
            name: name.to_string(),
            image: self.image,
            env,
            job_timeout,
            kill_grace,
            output_limit,
            memory,
            cpus: self.cpus,
            pids_limit: self.pids_limit,
            network: self.network,
            read_only: self.read_only,
            tmpfs,
            mounts,
            cap_add: self.cap_add,
            cap_drop: self.cap_drop,
            security_opt: self.security_opt,
            user: self.user,
            workdir: self.workdir,
            runtime: self.runtime,
            labels: self.labels,
            secret_env: self.secret_env,
            min_idle,
            max_idle,
            max_containers,
            max_queue,
            max_wait,
            max_age,
            idle_ttl,
            retry_interrupted: self.retry_interrupted,
            reuse,
        })
    }
}

/// Whether a container of these settings can be reset between jobs: every
/// place a job can write must be one the gate empties (its tmpfs mounts,
/// /dev, /dev/shm, /dev/mqueue), and a job must not be able to reach past
/// them (mount, or read the gate's memory).
fn reusable(read_only: bool, cap_add: &[String], security_opt: &[String]) -> Result<(), String> {
    if !read_only {
        return Err("needs read_only = true: with a writable root filesystem a job's files \
                    would be there for the next job, and no reset can prove otherwise \
                    (give jobs scratch space with tmpfs = [\"/tmp\"], which is emptied between jobs)"
            .into());
    }
    for cap in cap_add {
        let c = cap.trim().to_ascii_uppercase();
        let c = c.strip_prefix("CAP_").unwrap_or(&c);
        if matches!(c, "ALL" | "SYS_ADMIN" | "SYS_PTRACE" | "NET_ADMIN") {
            return Err(format!(
                "cannot add the capability {cap}: with it a job could mount over what is reset, \
                 read the gate's memory, or change the network namespace the next job gets"
            ));
        }
    }
    for opt in security_opt {
        let o = opt.replace(' ', "");
        if o.contains("seccomp=unconfined") || o.contains("seccomp:unconfined") {
            return Err(format!(
                "cannot run with security_opt \"{opt}\": Docker's default seccomp profile keeps \
                 jobs from kernel state the reset cannot see (keyrings, mounts)"
            ));
        }
    }
    Ok(())
}

/// The `[server]` section as written in TOML, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    instance: Option<toml::Value>,
    shutdown_grace: Option<toml::Value>,
    retention: Option<toml::Value>,
    max_body: Option<toml::Value>,
    inline_output: Option<toml::Value>,
    max_env: Option<toml::Value>,
    max_env_bytes: Option<toml::Value>,
    max_args: Option<toml::Value>,
    max_args_bytes: Option<toml::Value>,
    max_stdin: Option<toml::Value>,
    listen: Option<toml::Value>,
    data_dir: Option<toml::Value>,
}

impl RawServer {
    /// `hostname` stands in for an unset `instance`.
    fn validate(self, hostname: Option<&str>) -> Result<ServerConfig, String> {
        let instance = match typed::<String>("instance", self.instance)? {
            Some(name) if !valid_instance_name(&name) => {
                return Err(format!(
                    "key `instance`: \"{name}\" is not an instance name (a letter or digit, then up to 62 letters, digits, '_', '.' or '-')"
                ))
            }
            Some(name) => name,
            None => {
                let name = ServerConfig::instance_or_default(hostname);
                if !valid_instance_name(&name) {
                    return Err(format!(
                        "key `instance`: not set, and the hostname \"{name}\" is not an instance name (a letter or digit, then up to 62 letters, digits, '_', '.' or '-'); set `instance` in [server]"
                    ));
                }
                name
            }
        };
        let shutdown_grace = typed::<ConfigDuration>("shutdown_grace", self.shutdown_grace)?
            .map_or(DEFAULT_SHUTDOWN_GRACE, |d| d.0);
        let retention = typed::<ConfigDuration>("retention", self.retention)?
            .map_or(DEFAULT_RETENTION, |d| d.0);
        if retention.is_zero() {
            return Err("key `retention`: must be above 0 (\"168h\" keeps a week)".into());
        }
        let max_body =
            typed::<ConfigSize>("max_body", self.max_body)?.map_or(DEFAULT_MAX_BODY, |s| s.0);
        if max_body < 1024 {
            return Err(format!(
                "key `max_body`: {max_body} bytes is too small (at least 1k)"
            ));
        }
        let inline_output = typed::<ConfigSize>("inline_output", self.inline_output)?
            .map_or(DEFAULT_INLINE_OUTPUT, |s| s.0);
        if inline_output > MAX_INLINE_OUTPUT {
            return Err(format!(
                "key `inline_output`: {inline_output} bytes is too large (at most 64m; the rest of the output is at /v1/jobs/{{id}}/output)"
            ));
        }
        let count = |key: &str, v: Option<toml::Value>, default: usize| -> Result<usize, String> {
            match typed::<i64>(key, v)? {
                None => Ok(default),
                Some(n) if (0..=MAX_JOB_COUNT).contains(&n) => Ok(n as usize),
                Some(n) => Err(format!(
                    "key `{key}`: {n} is out of range (0 to {MAX_JOB_COUNT})"
                )),
            }
        };
        let size = |key: &str, v: Option<toml::Value>, default: u64| -> Result<u64, String> {
            Ok(typed::<ConfigSize>(key, v)?.map_or(default, |s| s.0))
        };
        let limits = JobLimits {
            max_env: count("max_env", self.max_env, DEFAULT_MAX_ENV)?,
            max_env_bytes: size("max_env_bytes", self.max_env_bytes, DEFAULT_MAX_ENV_BYTES)?,
            max_args: count("max_args", self.max_args, DEFAULT_MAX_ARGS)?,
            max_args_bytes: size(
                "max_args_bytes",
                self.max_args_bytes,
                DEFAULT_MAX_ARGS_BYTES,
            )?,
            max_stdin: size("max_stdin", self.max_stdin, DEFAULT_MAX_STDIN)?,
        };
        // What the API accepts must fit the gate's spec, with room for the
        // profile's and the image's own env.
        // Each may be up to 2^63 bytes: summed without overflow.
        let total = [
            limits.max_env_bytes,
            limits.max_args_bytes,
            limits.max_stdin,
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add);
        if total > MAX_JOB_INPUT {
            return Err(format!(
                "keys `max_env_bytes`, `max_args_bytes` and `max_stdin`: {total} bytes together, over the {MAX_JOB_INPUT} bytes a job spec can carry"
            ));
        }
        let listen =
            typed::<String>("listen", self.listen)?.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        if listen.parse::<SocketAddr>().is_err() {
            return Err(format!(
                "key `listen`: \"{listen}\" is not an IP address and port, like \"127.0.0.1:7070\" or \"[::1]:7070\""
            ));
        }
        let data_dir =
            typed::<PathBuf>("data_dir", self.data_dir)?.unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        if data_dir.as_os_str().is_empty() {
            return Err("key `data_dir`: must name a directory".into());
        }
        Ok(ServerConfig {
            instance,
            shutdown_grace,
            retention,
            max_body,
            inline_output,
            limits,
            listen,
            data_dir,
        })
    }
}

/// Largest `max_env` / `max_args`.
const MAX_JOB_COUNT: i64 = 1 << 20;
/// Largest sum of `max_env_bytes`, `max_args_bytes` and `max_stdin`: half the
/// gate's spec limit, the rest left to the profile's and the image's env.
const MAX_JOB_INPUT: u64 = warmpool_gate::protocol::MAX_SPEC_BODY as u64 / 2;

/// Profile names become container names and labels: keep them plain.
fn valid_profile_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl Config {
    /// Parse and validate a whole config file's text. An unset `[server] instance`
    /// becomes [`FALLBACK_INSTANCE`]; [`Config::load`] uses the hostname instead.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_hostname(text, None)
    }

    /// Parse and validate a whole config file's text; an unset `[server] instance`
    /// becomes `hostname` (see [`ServerConfig::instance_or_default`]).
    pub fn parse_with_hostname(text: &str, hostname: Option<&str>) -> Result<Config, ConfigError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
        let mut config = Config::default();
        // `[server]` may be absent; its defaults (the hostname among them) still apply.
        let mut server = toml::Value::Table(toml::Table::new());
        for (key, value) in doc {
            match key.as_str() {
                "engine" => {
                    config.engine = value.try_into().map_err(|e: toml::de::Error| {
                        ConfigError::Top(format!("[engine]: {}", e.message()))
                    })?;
                }
                "github" => {
                    let raw: RawGithub = value.try_into().map_err(|e: toml::de::Error| {
                        ConfigError::Top(format!("[github]: {}", e.message()))
                    })?;
                    config.github = Some(
                        raw.validate()
                            .map_err(|m| ConfigError::Top(format!("[github] {m}")))?,
                    );
                }
                "server" => {
                    if !value.is_table() {
                        return Err(ConfigError::Top(
                            "`server` must be a table, like [server]".into(),
                        ));
                    }
                    server = value;
                }
                "profiles" => {
                    let toml::Value::Table(profiles) = value else {
                        return Err(ConfigError::Top(
                            "`profiles` must be a table of profiles, like [profiles.echo]".into(),
                        ));
                    };
                    for (name, raw) in profiles {
                        let err = |message: String| ConfigError::Profile {
                            profile: name.clone(),
                            message,
                        };
                        if !valid_profile_name(&name) {
                            return Err(err(
                                "the name may hold only letters, digits, '-', '_' and '.' (at most 64)"
                                    .into(),
                            ));
                        }
                        let raw: RawProfile = raw
                            .try_into()
                            .map_err(|e: toml::de::Error| err(e.message().to_string()))?;
                        let profile = raw.validate(&name).map_err(err)?;
                        config.profiles.insert(name, profile);
                    }
                }
                "store" => {
                    let raw: RawStore = value.try_into().map_err(|e: toml::de::Error| {
                        ConfigError::Top(format!("[store]: {}", e.message()))
                    })?;
                    config.store = raw
                        .validate()
                        .map_err(|m| ConfigError::Top(format!("[store] {m}")))?;
                }
                "cluster" => {
                    let raw: RawCluster = value.try_into().map_err(|e: toml::de::Error| {
                        ConfigError::Top(format!("[cluster]: {}", e.message()))
                    })?;
                    config.cluster = raw
                        .validate()
                        .map_err(|m| ConfigError::Top(format!("[cluster] {m}")))?;
                }
                other => {
                    let expected = "`engine`, `server`, `store`, `cluster`, `profiles` or `github`";
                    return Err(ConfigError::Top(format!(
                        "unknown top-level key `{other}` (expected {expected})"
                    )));
                }
            }
        }
        let server_err = |message: String| ConfigError::Top(format!("[server] {message}"));
        let server: RawServer = server
            .try_into()
            .map_err(|e: toml::de::Error| server_err(e.message().to_string()))?;
        config.server = server.validate(hostname).map_err(server_err)?;
        if config.profiles.is_empty() {
            return Err(ConfigError::Top(
                "no profiles: add at least one [profiles.NAME] with an `image`".into(),
            ));
        }
        if let Some(g) = &config.github {
            if !config.profiles.contains_key(&g.profile) {
                return Err(ConfigError::Top(format!(
                    "[github] key `profile`: no profile \"{}\" (the config has: {})",
                    g.profile,
                    config.profile_names()
                )));
            }
            if let (Some(dir), Some(p)) = (&g.mirror_dir, config.profiles.get_mut(&g.profile)) {
                if p.mounts.iter().any(|m| m.target == MIRROR_MOUNT) {
                    return Err(ConfigError::Top(format!(
                        "[github] key `mirror_dir`: the profile \"{}\" mounts something at {MIRROR_MOUNT} already, where the mirrors go",
                        g.profile
                    )));
                }
                p.mounts.push(BindMount {
                    source: dir.clone(),
                    target: MIRROR_MOUNT.to_string(),
                });
            }
        }
        Ok(config)
    }

    /// Read and parse a config file; an unset `[server] instance` becomes the
    /// machine's hostname ([`host_name`]).
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let hostname = host_name();
        let mut config = Config::parse_with_hostname(&text, hostname.as_deref())?;
        // An unset instance is unique per data directory on this host, so two
        // servers with their own data_dir never take each other's containers.
        let instance_set = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|doc| doc.get("server")?.get("instance").cloned())
            .is_some();
        if !instance_set {
            let data_dir = std::fs::canonicalize(&config.server.data_dir)
                .ok()
                .or_else(|| {
                    std::env::current_dir()
                        .ok()
                        .map(|d| d.join(&config.server.data_dir))
                })
                .unwrap_or_else(|| config.server.data_dir.clone());
            config.server.instance = default_instance(&config.server.instance, &data_dir);
        }
        config.check_mount_sources()?;
        Ok(config)
    }

    /// Every profile's `mounts` must name a host path that exists (the
    /// engine would refuse the container later, at every create). The
    /// mirrors' directory is left out: `warmpool serve` makes it.
    pub fn check_mount_sources(&self) -> Result<(), ConfigError> {
        let mirrors = self.github.as_ref().and_then(|g| g.mirror_dir.as_deref());
        for p in self.profiles.values() {
            for m in &p.mounts {
                if Some(m.source.as_str()) == mirrors && m.target == MIRROR_MOUNT {
                    continue;
                }
                let refuse = |why: String| ConfigError::Profile {
                    profile: p.name.clone(),
                    message: format!("key `mounts`: the host path {} {why}", m.source),
                };
                let meta = std::fs::metadata(&m.source)
                    .map_err(|e| refuse(format!("cannot be mounted: {e}")))?;
                if let Some(why) = exposes_a_socket(std::path::Path::new(&m.source), &meta) {
                    return Err(refuse(why));
                }
            }
        }
        Ok(())
    }

    /// The profiles' names, for messages: "a, b, c".
    pub fn profile_names(&self) -> String {
        self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The profile called `name`, or an error listing the ones there are.
    pub fn profile(&self, name: &str) -> Result<&Profile, ConfigError> {
        self.profiles.get(name).ok_or_else(|| {
            ConfigError::Top(format!(
                "no profile \"{name}\" (the config has: {})",
                self.profile_names()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(
            r#"
            [profiles.echo]
            image = "warmpool-test/echo:latest"
            env = { GREETING = "hi" }
            job_timeout = "60s"
            memory = "256m"
            cpus = 1.0
            pids_limit = 256
            network = "none"
            min_idle = 2
            max_containers = 16
            "#,
        )
        .unwrap();
        let p = c.profile("echo").unwrap();
        assert_eq!(p.image, "warmpool-test/echo:latest");
        assert_eq!(p.env, vec![("GREETING".into(), "hi".into())]);
        assert_eq!(p.job_timeout, Duration::from_secs(60));
        assert_eq!(p.memory, Some(256 * 1024 * 1024));
        assert_eq!(p.cpus, Some(1.0));
        assert_eq!(p.pids_limit, Some(256));
        assert_eq!(p.network.as_deref(), Some("none"));
        assert_eq!(p.output_limit, DEFAULT_OUTPUT_LIMIT);
        assert_eq!((p.min_idle, p.max_containers), (2, 16));
    }

    #[test]
    fn the_github_triage_keys() {
        let base = "[profiles.claude]\nimage = \"x\"\n[github]\nbot_username = \"B\"\nprofile = \"claude\"\n";
        let g = Config::parse(base).unwrap().github.unwrap();
        assert_eq!(g.triage, TriageConfig::default());
        let c = Config::parse(&format!(
            "{base}auto_label = true\nreview_on_checks = true\nreview_settle = \"200ms\"\nreview_label_complete = \"reviewed\"\n[github.label_rules]\nbug = [\"crash\"]\n"
        ))
        .unwrap();
        let t = c.github.unwrap().triage;
        assert!(t.auto_label && t.review_on_checks);
        assert_eq!(t.review_settle, Duration::from_millis(200));
        assert_eq!(t.review_label_complete, "reviewed");
        assert_eq!(t.review_label_in_progress, "claude-review-in-progress");
        assert_eq!(
            t.label_rules,
            Some(vec![("bug".to_string(), vec!["crash".to_string()])])
        );
        let e = Config::parse(&format!("{base}review_label_in_progress = \"\"\n")).unwrap_err();
        assert!(e.to_string().contains("review_label_in_progress"), "{e}");
        let e = Config::parse(&format!("{base}[github.label_rules]\nbug = [\" \"]\n")).unwrap_err();
        assert!(e.to_string().contains("label_rules.bug"), "{e}");
        let e = Config::parse(&format!("{base}review_settle = \"soon\"\n")).unwrap_err();
        assert!(e.to_string().contains("review_settle"), "{e}");
    }

    #[test]
    fn the_github_section() {
        let base = "[profiles.claude]\nimage = \"x\"\n";
        let c = Config::parse(&format!(
            "{base}[github]\nbot_username = \"ClaudeBot\"\nauthorized_users = [\"alice\", \"bob\"]\nprofile = \"claude\"\n"
        ))
        .unwrap();
        let g = c.github.unwrap();
        assert_eq!(g.bot_username, "ClaudeBot");
        assert_eq!(g.authorized_users, vec!["alice", "bob"]);
        assert_eq!(g.api_url, "https://api.github.com");
        let e = Config::parse(&format!(
            "{base}[github]\nbot_username = \"B\"\nprofile = \"nope\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("no profile \"nope\""), "{e}");
        let e = Config::parse(&format!(
            "{base}[github]\nbot_username = \"bad name\"\nprofile = \"claude\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("bot_username"), "{e}");
        let e = Config::parse(&format!(
            "{base}[github]\nbot_username = \"B\"\nprofile = \"claude\"\napi_url = \"ftp://x\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("api_url"), "{e}");
        let e = Config::parse(&format!(
            "{base}[github]\nbot_username = \"B\"\nprofile = \"claude\"\nsecret = \"no\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("secret"), "{e}");
    }

    #[test]
    fn github_app_keys() {
        let base = "[profiles.claude]\nimage = \"x\"\n[github]\nbot_username = \"B\"\nprofile = \"claude\"\n";
        let g = |extra: &str| Config::parse(&format!("{base}{extra}")).map(|c| c.github.unwrap());
        let pat = g("").unwrap();
        assert_eq!(pat.app_auth(None), Ok(None));
        let app = g("app_id = 123\nprivate_key_file = \"/k.pem\"\n").unwrap();
        assert_eq!(app.app_auth(None), Ok(Some((123, "/k.pem".to_string()))));
        // The environment's file wins; an empty one is not one.
        assert_eq!(
            app.app_auth(Some("/env.pem")),
            Ok(Some((123, "/env.pem".to_string())))
        );
        assert_eq!(
            app.app_auth(Some("")),
            Ok(Some((123, "/k.pem".to_string())))
        );
        let id_only = g("app_id = 123\n").unwrap();
        let e = id_only.app_auth(None).unwrap_err();
        assert!(
            e.contains("app_id") && e.contains("private_key_file"),
            "{e}"
        );
        assert_eq!(
            id_only.app_auth(Some("/env.pem")),
            Ok(Some((123, "/env.pem".to_string())))
        );
        let e = g("private_key_file = \"/k.pem\"\n")
            .unwrap()
            .app_auth(None)
            .unwrap_err();
        assert!(
            e.contains("app_id") && e.contains("private_key_file"),
            "{e}"
        );
        let e = pat.app_auth(Some("/env.pem")).unwrap_err();
        assert!(
            e.contains("app_id") && e.contains("GITHUB_APP_PRIVATE_KEY_FILE"),
            "{e}"
        );
        for bad in ["0", "-5", "\"123\"", "1.5"] {
            let e = g(&format!("app_id = {bad}\n")).unwrap_err().to_string();
            assert!(e.contains("app_id"), "{bad}: {e}");
        }
        let e = g("app_id = 1\nprivate_key_file = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("private_key_file"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("12 furlongs").is_err());
        let c = Config::parse("[profiles.a]\nimage = \"x\"\njob_timeout = 90\n").unwrap();
        assert_eq!(c.profiles["a"].job_timeout, Duration::from_secs(90));
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_profile_and_key() {
        let e = err("[profiles.echo]\nimage = \"x\"\nmemroy = \"1g\"\n");
        assert!(
            e.contains("profile \"echo\"") && e.contains("memroy"),
            "{e}"
        );
        let e = err("[profiles.echo]\nimage = \"x\"\njob_timeout = \"soon\"\n");
        assert!(e.contains("profile \"echo\"") && e.contains("soon"), "{e}");
        let e = err("[profiles.echo]\nimage = \"x\"\nmemory = \"lots\"\n");
        assert!(e.contains("profile \"echo\"") && e.contains("lots"), "{e}");
        let e = err("[profiles.echo]\nenv = {}\n");
        assert!(e.contains("profile \"echo\"") && e.contains("image"), "{e}");
        let e = err("[profiles.echo]\nimage = \"x\"\nenv = { \"1BAD\" = \"v\" }\n");
        assert!(e.contains("1BAD"), "{e}");
        let e = err("[profiles.echo]\nimage = \"x\"\nlabels = { \"warmpool.managed\" = \"no\" }\n");
        assert!(e.contains("reserved"), "{e}");
        let e = err("[profiles.echo]\nimage = \"x\"\ntmpfs = [\"tmp\"]\n");
        assert!(e.contains("tmpfs"), "{e}");
        let e = err("[profiles.echo]\nimage = \"x\"\ncpus = -1.0\n");
        assert!(e.contains("cpus"), "{e}");
        let e = err("[profilez.echo]\nimage = \"x\"\n");
        assert!(e.contains("profilez"), "{e}");
        let e = err("");
        assert!(e.contains("no profiles"), "{e}");
        let e = err("[profiles.echo\nimage = ");
        assert!(e.contains("TOML"), "{e}");
    }

    fn profile_with(keys: &str) -> Result<Profile, String> {
        Config::parse(&format!("[profiles.echo]\nimage = \"x\"\n{keys}\n"))
            .map(|c| c.profiles["echo"].clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn pool_keys_default() {
        let p = profile_with("").unwrap();
        assert_eq!(p.min_idle, 1);
        assert_eq!(p.max_idle, 8);
        assert_eq!(p.max_containers, 16);
        assert_eq!(p.max_queue, 1000);
        assert_eq!(p.max_wait, Duration::from_secs(300));
        assert_eq!(p.max_age, Duration::from_secs(3600));
        assert_eq!(p.idle_ttl, Duration::from_secs(600));
        // A parsed profile and a built one agree on every default.
        assert_eq!(p, Profile::new("echo", "x"));
    }

    #[test]
    fn pool_keys_parse() {
        let p = profile_with(
            r#"
            min_idle = 2
            max_idle = 4
            max_containers = 5
            max_queue = 0
            max_wait = "90s"
            max_age = 7200
            idle_ttl = "1.5m"
            "#,
        )
        .unwrap();
        assert_eq!(
            (p.min_idle, p.max_idle, p.max_containers, p.max_queue),
            (2, 4, 5, 0)
        );
        assert_eq!(p.max_wait, Duration::from_secs(90));
        assert_eq!(p.max_age, Duration::from_secs(7200));
        assert_eq!(p.idle_ttl, Duration::from_secs(90));
        // min_idle 0 (no container kept while idle) is allowed, so is min == max.
        let p = profile_with("min_idle = 0\nmax_idle = 0").unwrap();
        assert_eq!((p.min_idle, p.max_idle), (0, 0));
        let p = profile_with("min_idle = 3\nmax_idle = 3\nmax_containers = 3").unwrap();
        assert_eq!((p.min_idle, p.max_idle, p.max_containers), (3, 3, 3));
    }

    /// The error for `keys` in profile "echo", checked to name the profile and `key`.
    fn pool_err(keys: &str, key: &str) -> String {
        let e = profile_with(keys).unwrap_err();
        assert!(
            e.contains("profile \"echo\"") && e.contains(&format!("key `{key}`")),
            "{keys:?}: {e}"
        );
        e
    }

    #[test]
    fn pool_counts_are_whole_numbers() {
        for key in ["min_idle", "max_idle", "max_containers", "max_queue"] {
            let e = pool_err(&format!("{key} = -1"), key);
            assert!(e.contains("-1 is negative"), "{e}");
            let e = pool_err(&format!("{key} = 1.5"), key);
            assert!(e.contains("1.5 is not a whole number"), "{e}");
            let e = pool_err(&format!("{key} = \"2\""), key);
            assert!(e.contains("whole number"), "{e}");
        }
    }

    #[test]
    fn pool_limits_must_fit_together() {
        let e = pool_err("min_idle = 3\nmax_idle = 2", "max_idle");
        assert!(e.contains("below min_idle (3)"), "{e}");
        // The default max_idle (8) is below a min_idle of 9 too.
        pool_err("min_idle = 9", "max_idle");
        let e = pool_err("max_containers = 0", "max_containers");
        assert!(e.contains("at least 1"), "{e}");
        let e = pool_err(
            "min_idle = 4\nmax_idle = 8\nmax_containers = 3",
            "max_containers",
        );
        assert!(e.contains("cannot hold min_idle (4)"), "{e}");
    }

    #[test]
    fn pool_durations_must_be_positive_and_valid() {
        for key in ["max_wait", "max_age", "idle_ttl"] {
            let e = pool_err(&format!("{key} = 0"), key);
            assert!(e.contains("must be above 0"), "{e}");
            let e = pool_err(&format!("{key} = \"0ms\""), key);
            assert!(e.contains("must be above 0"), "{e}");
            let e = pool_err(&format!("{key} = \"soon\""), key);
            assert!(e.contains("\"soon\" is not a duration"), "{e}");
            let e = pool_err(&format!("{key} = -5"), key);
            assert!(e.contains("negative"), "{e}");
            let e = pool_err(&format!("{key} = true"), key);
            assert!(e.contains("a duration"), "{e}");
        }
    }

    const ONE_PROFILE: &str = "[profiles.echo]\nimage = \"x\"\n";

    fn server_with(keys: &str, hostname: Option<&str>) -> Result<ServerConfig, String> {
        Config::parse_with_hostname(&format!("[server]\n{keys}\n{ONE_PROFILE}"), hostname)
            .map(|c| c.server)
            .map_err(|e| e.to_string())
    }

    /// The error for `keys` in `[server]`, checked to name the section and `key`.
    fn server_err(keys: &str, key: &str) -> String {
        let e = server_with(keys, Some("host")).unwrap_err();
        assert!(
            e.contains("[server]") && e.contains(&format!("key `{key}`")),
            "{keys:?}: {e}"
        );
        e
    }

    #[test]
    fn server_defaults() {
        // No [server] at all: the defaults, with the hostname given as the instance.
        let c = Config::parse_with_hostname(ONE_PROFILE, Some("  build-07.example\n")).unwrap();
        assert_eq!(
            c.server,
            ServerConfig {
                instance: "build-07.example".into(),
                shutdown_grace: Duration::from_secs(30),
                retention: DEFAULT_RETENTION,
                max_body: DEFAULT_MAX_BODY,
                inline_output: DEFAULT_INLINE_OUTPUT,
                limits: JobLimits {
                    max_env: 4096,
                    max_env_bytes: 1 << 20,
                    max_args: 4096,
                    max_args_bytes: 512 << 10,
                    max_stdin: 10 << 20,
                },
                listen: "127.0.0.1:7070".into(),
                data_dir: PathBuf::from(".warmpool"),
            }
        );
        // An empty [server] is the same; no hostname (or a blank one) falls back.
        assert_eq!(server_with("", Some("h")).unwrap().instance, "h");
        assert_eq!(server_with("", None).unwrap().instance, FALLBACK_INSTANCE);
        assert_eq!(server_with("", Some(" \n")).unwrap().instance, "warmpool");
        // The pure `parse` never looks the hostname up.
        assert_eq!(
            Config::parse(ONE_PROFILE).unwrap().server,
            ServerConfig::default()
        );
    }

    #[test]
    fn server_keys_parse() {
        let s = server_with(
            r#"
            instance = "pool-A_1.b"
            shutdown_grace = "2m"
            listen = "[::1]:8080"
            data_dir = "/var/lib/warmpool"
            "#,
            Some("ignored-when-set"),
        )
        .unwrap();
        assert_eq!(s.instance, "pool-A_1.b");
        assert_eq!(s.shutdown_grace, Duration::from_secs(120));
        assert_eq!(s.listen, "[::1]:8080");
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/warmpool"));
        let s = server_with("shutdown_grace = 0\nlisten = \"0.0.0.0:0\"", None).unwrap();
        assert_eq!(s.shutdown_grace, Duration::ZERO);
        assert_eq!(s.listen, "0.0.0.0:0");
        // 63 characters is the longest instance name.
        let longest = "a".repeat(63);
        let s = server_with(&format!("instance = \"{longest}\""), None).unwrap();
        assert_eq!(s.instance, longest);
    }

    #[test]
    fn inline_output_is_a_bounded_size() {
        assert_eq!(
            server_with("", None).unwrap().inline_output,
            DEFAULT_INLINE_OUTPUT
        );
        assert_eq!(DEFAULT_INLINE_OUTPUT, 1 << 20);
        for (v, bytes) in [
            ("\"1m\"", 1 << 20),
            ("\"64k\"", 64 << 10),
            ("4096", 4096),
            ("0", 0),
            ("\"64m\"", MAX_INLINE_OUTPUT),
        ] {
            let s = server_with(&format!("inline_output = {v}"), None).unwrap();
            assert_eq!(s.inline_output, bytes, "{v}");
        }
        let e = server_err("inline_output = \"65m\"", "inline_output");
        assert!(e.contains("too large") && e.contains("/output"), "{e}");
        let e = server_err("inline_output = -1", "inline_output");
        assert!(e.contains("negative"), "{e}");
        let e = server_err("inline_output = \"lots\"", "inline_output");
        assert!(e.contains("lots"), "{e}");
    }

    #[test]
    fn job_limits_parse_and_are_validated() {
        let s = server_with(
            "max_env = 10\nmax_env_bytes = \"64k\"\nmax_args = 0\nmax_args_bytes = 100\nmax_stdin = \"1M\"",
            None,
        )
        .unwrap();
        assert_eq!(
            s.limits,
            JobLimits {
                max_env: 10,
                max_env_bytes: 64 << 10,
                max_args: 0,
                max_args_bytes: 100,
                max_stdin: 1 << 20,
            }
        );
        let e = server_err("max_env = -1", "max_env");
        assert!(e.contains("out of range"), "{e}");
        let e = server_err("max_args = 2000000", "max_args");
        assert!(e.contains("out of range"), "{e}");
        server_err("max_env = \"many\"", "max_env");
        server_err("max_stdin = \"12 furlongs\"", "max_stdin");
        let e = server_with("max_stdin = \"200M\"", None).unwrap_err();
        assert!(e.contains("max_stdin") && e.contains("spec"), "{e}");
    }

    // Found by the fuzz target `config` (its property: a size that parses is at
    // most 2^63 - 1): "09223372036854775807" rounds up to 2^63 as an f64, and
    // the range check let exactly 2^63 through (a `memory` that would wrap
    // negative as Docker's i64).
    #[test]
    fn sizes_stop_below_2_pow_63() {
        assert!(parse_size("09223372036854775807").is_err());
        assert!(parse_size("8t").is_ok());
        assert!(parse_size("8388608t").is_err());
        assert_eq!(parse_size("8388607t").unwrap(), 8388607 << 40);
    }

    // Found while writing the fuzz target `config` (its property: the limits
    // together fit a job spec), confirmed by running it on this input: three
    // limits near 2^63 bytes overflowed their sum (a panic in the loader, with
    // overflow checks; a wrapped sum that passed, without) instead of being refused.
    #[test]
    fn job_limits_at_their_largest_are_refused_not_summed_past_u64() {
        let e = server_with(
            "max_env_bytes = 9223372036854775807\nmax_args_bytes = 9223372036854775807\nmax_stdin = 9223372036854775807",
            None,
        )
        .unwrap_err();
        assert!(e.contains("max_stdin") && e.contains("spec"), "{e}");
        let e = server_with(
            "max_stdin = \"8000000t\"\nmax_args_bytes = \"8000000t\"\nmax_env_bytes = \"8000000t\"",
            None,
        )
        .unwrap_err();
        assert!(e.contains("spec"), "{e}");
    }

    // Found while writing the fuzz target `config`'s properties: a duration
    // given as an integer had no upper bound (a string has 10^9 s), so
    // `kill_grace = 9223372036854775807` loaded, and `now + kill_grace` would
    // panic when a job timed out.
    #[test]
    fn integer_durations_have_the_bound_strings_have() {
        let e = err("[profiles.a]\nimage = \"x\"\nkill_grace = 9223372036854775807\n");
        assert!(
            e.contains("profile \"a\"") && e.contains("out of range"),
            "{e}"
        );
        let e = err("[profiles.a]\nimage = \"x\"\n[server]\nshutdown_grace = 1000000001\n");
        assert!(
            e.contains("shutdown_grace") && e.contains("out of range"),
            "{e}"
        );
        let c = Config::parse("[profiles.a]\nimage = \"x\"\njob_timeout = 1000000000\n").unwrap();
        assert_eq!(
            c.profiles["a"].job_timeout,
            Duration::from_secs(1_000_000_000)
        );
    }

    #[test]
    fn job_limits_check_names_the_limit() {
        let l = JobLimits {
            max_env: 2,
            max_env_bytes: 10,
            max_args: 2,
            max_args_bytes: 6,
            max_stdin: 4,
        };
        let env = |pairs: &'static [(&'static str, &'static str)]| pairs.iter().copied();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // At the limits: "A=1234\0" + "B=\0" is 10 bytes; "ab\0" + "cd\0" is 6.
        l.check(
            env(&[("A", "1234"), ("B", "")]),
            &args(&["ab", "cd"]),
            Some(4),
        )
        .unwrap();
        l.check(env(&[]), &[], None).unwrap();
        let e = l
            .check(env(&[("A", ""), ("B", ""), ("C", "")]), &[], None)
            .unwrap_err();
        assert_eq!(e.key, "max_env");
        assert_eq!(
            e.to_string(),
            "env: 3 entries, over the limit of 2 ([server] max_env)"
        );
        let e = l.check(env(&[("A", "12345678")]), &[], None).unwrap_err();
        assert_eq!((e.key, e.got), ("max_env_bytes", 11));
        let e = l
            .check(env(&[]), &args(&["a", "b", "c"]), None)
            .unwrap_err();
        assert_eq!(e.key, "max_args");
        let e = l.check(env(&[]), &args(&["abcdefg"]), None).unwrap_err();
        assert_eq!((e.key, e.got), ("max_args_bytes", 8));
        let e = l.check(env(&[]), &[], Some(5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "stdin: 5 bytes, over the limit of 4 ([server] max_stdin)"
        );
    }

    #[test]
    fn server_errors_name_the_key() {
        let too_long = "a".repeat(64);
        for bad in [
            "",
            "-lead",
            ".dot",
            "has space",
            "slash/y",
            "ü",
            too_long.as_str(),
        ] {
            let e = server_err(&format!("instance = \"{bad}\""), "instance");
            assert!(e.contains("not an instance name"), "{e}");
        }
        let e = server_err("instance = 7", "instance");
        assert!(e.contains("string"), "{e}");
        // An unusable hostname is reported too, with what to do about it.
        let e = server_with("", Some("bad host")).unwrap_err();
        assert!(
            e.contains("[server] key `instance`")
                && e.contains("bad host")
                && e.contains("set `instance` in [server]"),
            "{e}"
        );
        let e = server_err("shutdown_grace = \"later\"", "shutdown_grace");
        assert!(e.contains("later"), "{e}");
        let e = server_err("shutdown_grace = -1", "shutdown_grace");
        assert!(e.contains("negative"), "{e}");
        for bad in ["localhost:7070", "127.0.0.1", ":7070", "127.0.0.1:99999"] {
            let e = server_err(&format!("listen = \"{bad}\""), "listen");
            assert!(e.contains(bad) && e.contains("127.0.0.1:7070"), "{e}");
        }
        let e = server_err("listen = 7070", "listen");
        assert!(e.contains("string"), "{e}");
        server_err("data_dir = \"\"", "data_dir");
        server_err("data_dir = 1", "data_dir");
        let e = server_with("lisen = \"127.0.0.1:1\"", None).unwrap_err();
        assert!(e.contains("[server]") && e.contains("lisen"), "{e}");
        let e = err(&format!("server = 1\n{ONE_PROFILE}"));
        assert!(e.contains("`server` must be a table"), "{e}");
        let e = err(&format!("[sever]\n{ONE_PROFILE}"));
        assert!(
            e.contains("`sever`")
                && e.contains("`engine`, `server`, `store`, `cluster`, `profiles` or `github`"),
            "{e}"
        );
    }

    #[test]
    fn instance_names() {
        assert!(valid_instance_name("a"));
        assert!(valid_instance_name("9-x_y.z"));
        assert!(!valid_instance_name(""));
        assert!(!valid_instance_name("_x"));
        assert!(!valid_instance_name(&"a".repeat(64)));
        assert_eq!(ServerConfig::instance_or_default(Some(" h ")), "h");
        assert_eq!(ServerConfig::instance_or_default(None), "warmpool");
    }

    #[test]
    fn hardening_knobs() {
        let c = Config::parse(
            r#"
            [profiles.locked]
            image = "x"
            read_only = true
            tmpfs = ["/tmp:size=64m", "/run"]
            cap_drop = ["ALL"]
            cap_add = ["CHOWN"]
            security_opt = ["no-new-privileges"]
            user = "1000:1000"
            workdir = "/work"
            runtime = "runsc"
            labels = { team = "infra" }
            output_limit = "1m"
            kill_grace = "2s"
            "#,
        )
        .unwrap();
        let p = &c.profiles["locked"];
        assert!(p.read_only);
        assert_eq!(
            p.tmpfs,
            vec![
                Tmpfs {
                    path: "/tmp".into(),
                    options: "size=64m".into()
                },
                Tmpfs {
                    path: "/run".into(),
                    options: "".into()
                }
            ]
        );
        assert_eq!(p.cap_drop, vec!["ALL"]);
        assert_eq!(p.user.as_deref(), Some("1000:1000"));
        assert_eq!(p.runtime.as_deref(), Some("runsc"));
        assert_eq!(p.output_limit, 1 << 20);
        assert_eq!(p.kill_grace, Duration::from_secs(2));
    }

    #[test]
    fn store_and_cluster_sections() {
        let c = Config::parse(ONE_PROFILE).unwrap();
        assert_eq!(c.store.url, None);
        assert_eq!(c.cluster, ClusterConfig::default());
        assert_eq!(c.cluster.heartbeat, Duration::from_secs(5));
        let c = Config::parse(&format!(
            "[store]\nurl = \"postgres://wp@db/wp\"\n[cluster]\nnode_timeout = \"10s\"\naddress = \"http://n1:7070\"\n{ONE_PROFILE}"
        ))
        .unwrap();
        assert_eq!(c.store.url.as_deref(), Some("postgres://wp@db/wp"));
        assert_eq!(c.cluster.node_timeout, Duration::from_secs(10));
        assert_eq!(c.cluster.heartbeat, Duration::from_secs(10) / 6);
        assert_eq!(c.cluster.address.as_deref(), Some("http://n1:7070"));
        for (text, want) in [
            ("[store]\nurl = \"mysql://x/y\"", "[store] key `url`"),
            ("[store]\nuri = \"postgres://x\"", "[store]"),
            ("[cluster]\nnode_timeout = \"0s\"", "key `node_timeout`"),
            (
                "[cluster]\nnode_timeout = \"10s\"\nheartbeat = \"6s\"",
                "key `heartbeat`",
            ),
            ("[cluster]\naddress = 5", "key `address`"),
        ] {
            let e = Config::parse(&format!("{text}\n{ONE_PROFILE}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn reuse_is_single_use_unless_asked_and_only_where_a_reset_holds() {
        let c = Config::parse(ONE_PROFILE).unwrap();
        assert!(c.profiles.values().all(|p| p.reuse == 1));
        let ok = Config::parse(&format!(
            "{ONE_PROFILE}\nread_only = true\ntmpfs = [\"/tmp\"]\nreuse = 50"
        ))
        .unwrap();
        assert!(ok.profiles.values().all(|p| p.reuse == 50));
        for (extra, says) in [
            ("reuse = 2", "needs read_only = true"),
            ("reuse = 0", "at least 1"),
            ("reuse = -1", "reuse"),
            ("reuse = \"many\"", "reuse"),
            (
                "read_only = true\nreuse = 2\ncap_add = [\"SYS_ADMIN\"]",
                "SYS_ADMIN",
            ),
            (
                "read_only = true\nreuse = 2\ncap_add = [\"cap_sys_ptrace\"]",
                "cap_sys_ptrace",
            ),
            (
                "read_only = true\nreuse = 2\nsecurity_opt = [\"seccomp=unconfined\"]",
                "seccomp",
            ),
            (
                "read_only = true\nreuse = 2\ncap_add = [\"NET_ADMIN\"]",
                "NET_ADMIN",
            ),
        ] {
            let err = Config::parse(&format!("{ONE_PROFILE}\n{extra}")).unwrap_err();
            assert!(err.to_string().contains(says), "{extra}: {err}");
            assert!(err.to_string().contains("reuse"), "{extra}: {err}");
        }
    }

    #[test]
    fn retry_interrupted_is_off_unless_asked() {
        let c = Config::parse(ONE_PROFILE).unwrap();
        assert!(c.profiles.values().all(|p| !p.retry_interrupted));
        let c = Config::parse(&format!("{ONE_PROFILE}\nretry_interrupted = true")).unwrap();
        assert!(c.profiles.values().all(|p| p.retry_interrupted));
    }

    #[test]
    fn default_instance_is_unique_per_data_dir_and_valid() {
        let a = default_instance("build-07", std::path::Path::new("/srv/a/.warmpool"));
        let b = default_instance("build-07", std::path::Path::new("/srv/b/.warmpool"));
        assert_ne!(a, b);
        assert!(a.starts_with("build-07-"), "{a}");
        assert_eq!(
            a,
            default_instance("build-07", std::path::Path::new("/srv/a/.warmpool"))
        );
        let long = default_instance(&"h".repeat(63), std::path::Path::new("/d"));
        assert!(
            valid_instance_name(&long) && valid_instance_name(&a),
            "{long}"
        );
    }

    #[test]
    fn mounts_are_read_only_absolute_and_plain() {
        let c =
            Config::parse(&format!("{ONE_PROFILE}\nmounts = [\"/srv/data:/data:ro\"]")).unwrap();
        assert_eq!(
            c.profiles["echo"].mounts,
            vec![BindMount {
                source: "/srv/data".into(),
                target: "/data".into()
            }]
        );
        for (m, why) in [
            ("/srv:/data", "writable"),
            ("/srv:/data:rw", "writable"),
            ("srv:/data:ro", "absolute"),
            ("/srv:data:ro", "absolute"),
            ("/srv/../etc:/data:ro", ".."),
            ("/srv:/data/../x:ro", ".."),
            ("/srv:/:ro", "root"),
            ("/srv:/data:ro:x", "is not"),
            ("/srv", "is not"),
        ] {
            let e = err(&format!("{ONE_PROFILE}\nmounts = [\"{m}\"]"));
            assert!(e.contains("mounts") && e.contains(why), "{m}: {e}");
        }
        // A writable mount is refused for its reason: reuse and secrets.
        let e = err(&format!("{ONE_PROFILE}\nmounts = [\"/srv:/data\"]"));
        assert!(e.contains("next job") && e.contains("secrets"), "{e}");
    }

    #[test]
    fn mirror_dir_mounts_read_only_in_the_bots_profile() {
        let bot = "[github]\nbot_username = \"ClaudeBot\"\nprofile = \"echo\"\n";
        let c = Config::parse(&format!("{ONE_PROFILE}{bot}")).unwrap();
        let g = c.github.as_ref().unwrap();
        assert_eq!(g.mirror_dir, None);
        assert!(c.profiles["echo"].mounts.is_empty());
        assert_eq!(g.git_url, "https://github.com");
        assert_eq!(g.mirror_refresh, DEFAULT_MIRROR_REFRESH);
        let c = Config::parse(&format!(
            "{ONE_PROFILE}{bot}mirror_dir = \"/var/lib/warmpool/mirrors\"\nmirror_refresh = \"2m\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.profiles["echo"].mounts,
            vec![BindMount {
                source: "/var/lib/warmpool/mirrors".into(),
                target: MIRROR_MOUNT.into()
            }]
        );
        assert_eq!(c.github.unwrap().mirror_refresh, Duration::from_secs(120));
        for (extra, key) in [
            ("mirror_dir = \"mirrors\"", "mirror_dir"),
            ("mirror_dir = \"/a/../b\"", "mirror_dir"),
            ("mirror_refresh = \"0s\"", "mirror_refresh"),
            ("git_url = \"git@github.com\"", "git_url"),
        ] {
            let e = err(&format!("{ONE_PROFILE}{bot}{extra}\n"));
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = err(&format!(
            "{ONE_PROFILE}mounts = [\"/x:{MIRROR_MOUNT}:ro\"]\n{bot}mirror_dir = \"/m\"\n"
        ));
        assert!(e.contains("mirror_dir"), "{e}");
    }

    #[test]
    fn git_url_is_the_api_urls_host() {
        assert_eq!(git_url_for("https://api.github.com"), "https://github.com");
        assert_eq!(git_url_for("https://api.github.com/"), "https://github.com");
        assert_eq!(
            git_url_for("https://ghe.example.com/api/v3"),
            "https://ghe.example.com"
        );
        assert_eq!(
            git_url_for("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn every_duration_and_size_error_names_its_key() {
        for (key, value) in [
            ("job_timeout", "\"5 parsecs\""),
            ("kill_grace", "\"-1s\""),
            ("max_wait", "\"soon\""),
            ("max_age", "true"),
            ("idle_ttl", "\"1y\""),
            ("output_limit", "\"lots\""),
            ("memory", "\"2q\""),
        ] {
            let text = format!("[profiles.x]\nimage = \"i\"\n{key} = {value}\n");
            let e = Config::parse(&text).unwrap_err().to_string();
            assert!(
                e.starts_with("profile \"x\": key `{key}`: ")
                    || e.contains(&format!("key `{key}`")),
                "{key}: {e}"
            );
            assert!(e.contains(&format!("key `{key}`")), "{key}: {e}");
        }
        for (section, key) in [
            ("server", "shutdown_grace"),
            ("server", "retention"),
            ("cluster", "node_timeout"),
            ("cluster", "heartbeat"),
        ] {
            let text = format!("[{section}]\n{key} = \"5 parsecs\"\n[profiles.x]\nimage = \"i\"\n");
            let e = Config::parse(&text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("[{section}] key `{key}`")),
                "{key}: {e}"
            );
        }
    }

    #[test]
    fn a_mounts_host_path_must_exist_but_the_mirrors_need_not_yet() {
        let c = Config::parse(&format!(
            "{ONE_PROFILE}mounts = [\"/nonexistent-warmpool-path:/data:ro\"]\n"
        ))
        .unwrap();
        let e = c.check_mount_sources().unwrap_err().to_string();
        assert!(
            e.contains("mounts") && e.contains("/nonexistent-warmpool-path") && e.contains("echo"),
            "{e}"
        );
        let dir = std::env::temp_dir().display().to_string();
        let ok = Config::parse(&format!(
            "{ONE_PROFILE}mounts = [\"{dir}:/data:ro\"]\n[github]\nbot_username = \"b\"\nprofile = \"echo\"\nmirror_dir = \"/nonexistent-warmpool-mirrors\"\n"
        ))
        .unwrap();
        ok.check_mount_sources().unwrap();
        // The engine's socket, or a directory holding it, is never mounted.
        if std::path::Path::new("/var/run/docker.sock").exists() {
            for source in ["/var/run/docker.sock", "/var/run", "/run"] {
                let c = Config::parse(&format!("{ONE_PROFILE}mounts = [\"{source}:/data:ro\"]\n"))
                    .unwrap();
                let e = c.check_mount_sources().unwrap_err().to_string();
                assert!(e.contains("socket"), "{source}: {e}");
            }
        }
    }
}
