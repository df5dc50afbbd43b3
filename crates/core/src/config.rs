//! The configuration file: parsing and validation, no I/O beyond the string it is
//! given. Every error names the profile and the key, so a typo is found at load time,
//! not when the first job arrives.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Default cap on each of a job's output streams.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 10 * 1024 * 1024;
/// Default time a job may run.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time between SIGTERM and the kill when a job times out (as `docker stop`).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

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
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Docker endpoint (`unix:///var/run/docker.sock`, `tcp://host:2375`); unset means
    /// DOCKER_HOST or the local default socket.
    pub host: Option<String>,
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
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub runtime: Option<String>,
    pub labels: BTreeMap<String, String>,
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
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security_opt: Vec::new(),
            user: None,
            workdir: None,
            runtime: None,
            labels: BTreeMap::new(),
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
    if !secs.is_finite() || secs > 1e9 {
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
    if !bytes.is_finite() || bytes > u64::MAX as f64 / 2.0 {
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
    job_timeout: Option<ConfigDuration>,
    kill_grace: Option<ConfigDuration>,
    output_limit: Option<ConfigSize>,
    memory: Option<ConfigSize>,
    cpus: Option<f64>,
    pids_limit: Option<i64>,
    network: Option<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    tmpfs: Vec<String>,
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
        if let Some(m) = &self.memory {
            // The engine refuses anything under 6 MiB; say so now rather than at create.
            if m.0 < 6 * 1024 * 1024 {
                return Err(format!(
                    "key `memory`: {} bytes is below the engine's minimum of 6m",
                    m.0
                ));
            }
        }
        let output_limit = self
            .output_limit
            .map(|s| s.0)
            .unwrap_or(DEFAULT_OUTPUT_LIMIT);
        if output_limit == 0 {
            return Err("key `output_limit`: must be above 0".into());
        }
        let job_timeout = self.job_timeout.map(|d| d.0).unwrap_or(DEFAULT_JOB_TIMEOUT);
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
            kill_grace: self.kill_grace.map(|d| d.0).unwrap_or(DEFAULT_KILL_GRACE),
            output_limit,
            memory: self.memory.map(|m| m.0),
            cpus: self.cpus,
            pids_limit: self.pids_limit,
            network: self.network,
            read_only: self.read_only,
            tmpfs,
            cap_add: self.cap_add,
            cap_drop: self.cap_drop,
            security_opt: self.security_opt,
            user: self.user,
            workdir: self.workdir,
            runtime: self.runtime,
            labels: self.labels,
        })
    }
}

/// Profile names become container names and labels: keep them plain.
fn valid_profile_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl Config {
    /// Parse and validate a whole config file's text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
        let mut config = Config::default();
        for (key, value) in doc {
            match key.as_str() {
                "engine" => {
                    config.engine = value.try_into().map_err(|e: toml::de::Error| {
                        ConfigError::Top(format!("[engine]: {}", e.message()))
                    })?;
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
                other => {
                    return Err(ConfigError::Top(format!(
                        "unknown top-level key `{other}` (expected `engine` or `profiles`)"
                    )))
                }
            }
        }
        if config.profiles.is_empty() {
            return Err(ConfigError::Top(
                "no profiles: add at least one [profiles.NAME] with an `image`".into(),
            ));
        }
        Ok(config)
    }

    /// Read and parse a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// The profile called `name`, or an error listing the ones there are.
    pub fn profile(&self, name: &str) -> Result<&Profile, ConfigError> {
        self.profiles.get(name).ok_or_else(|| {
            ConfigError::Top(format!(
                "no profile \"{name}\" (the config has: {})",
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
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
}
