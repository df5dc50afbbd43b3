//! A job and its composition into the gate's spec, with `docker run` semantics.
//! Pure: the image's config comes in as a value, the spec goes out as a value.

use crate::config::{valid_env_name, Profile};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use warmpool_gate::protocol::JobSpec;
pub use warmpool_gate::protocol::MAX_SPEC_BODY;

/// What the image says about how to run it (from `docker image inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The image's ID (`sha256:...`); a retag to a new build changes it.
    pub id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    /// The image's labels (`LABEL` in a Dockerfile): `doctor` reads what the
    /// image says it is (e.g. `io.warmpool.agent`).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One job: what differs from one run of a profile to the next.
#[derive(Clone, Default)]
pub struct Job {
    /// Replace the image's CMD (as `docker run IMAGE ARGS...`); empty keeps CMD.
    pub args: Vec<String>,
    /// Applied last; may carry secrets, so it never goes into container config.
    pub env: Vec<(String, String)>,
    /// Variables to remove from the job's env, the image's and the profile's
    /// included (as `docker run -e NAME` does when NAME is not set).
    pub unset: Vec<String>,
    /// Bytes for the job's stdin; `None` gives it /dev/null (as `docker run` without -i).
    pub stdin: Option<Vec<u8>>,
    /// Overrides the profile's `job_timeout`.
    pub timeout: Option<Duration>,
}

// Env values may be secrets: show only their names.
impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("args", &self.args)
            .field(
                "env_keys",
                &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("stdin_len", &self.stdin.as_ref().map(|s| s.len()))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("\"{0}\" is not a valid environment variable name (letters, digits, _; not starting with a digit)")]
    BadEnvName(String),
    #[error("the value of {0} contains a NUL byte")]
    NulInEnv(String),
    #[error("argument {0} contains a NUL byte")]
    NulInArg(usize),
    #[error("nothing to run: the image has no ENTRYPOINT or CMD and the job gave no arguments")]
    NoCommand,
    #[error("the job is {0} bytes (args, env and stdin), over the limit of {1} bytes")]
    TooLarge(u64, u64),
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map(|(k, _)| k).unwrap_or(entry)
}

/// An env under construction: entries in order, and where each key is, so
/// replacing one in place is a lookup rather than a scan (linear in all).
#[derive(Default)]
struct EnvBuilder {
    entries: Vec<String>,
    at: HashMap<String, usize>,
}

impl EnvBuilder {
    /// Replace the entry with the same key in place, or append.
    fn replace_or_append(&mut self, entry: String) {
        let key = env_key(&entry);
        match self.at.get(key) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.at.insert(key.to_string(), self.entries.len());
                self.entries.push(entry);
            }
        }
    }
}

impl Job {
    /// Check what came from outside before anything is created for it.
    pub fn validate(&self) -> Result<(), JobError> {
        for (k, v) in &self.env {
            if !valid_env_name(k) {
                return Err(JobError::BadEnvName(k.clone()));
            }
            if v.contains('\0') {
                return Err(JobError::NulInEnv(k.clone()));
            }
        }
        if let Some(k) = self.unset.iter().find(|k| !valid_env_name(k)) {
            return Err(JobError::BadEnvName(k.clone()));
        }
        if let Some(i) = self.args.iter().position(|a| a.contains('\0')) {
            return Err(JobError::NulInArg(i));
        }
        Ok(())
    }
}

/// The gate's spec for `job` on `profile`'s `image`, as `docker run` would run it:
/// argv = ENTRYPOINT + (args, or else CMD); env = the daemon's merge of the
/// user's env (profile env, then job env) with the image's env; working directory
/// from the profile or else the image.
pub fn compose(image: &ImageConfig, profile: &Profile, job: &Job) -> Result<JobSpec, JobError> {
    job.validate()?;
    let mut argv: Vec<String> = image.entrypoint.clone();
    if job.args.is_empty() {
        argv.extend(image.cmd.iter().cloned());
    } else {
        argv.extend(job.args.iter().cloned());
    }
    if argv.is_empty() {
        return Err(JobError::NoCommand);
    }
    // `docker run -e` entries come first, then the image's entries they do not override
    // (the daemon's merge), and a later duplicate replaces an earlier one in place.
    let mut env = EnvBuilder::default();
    for (k, v) in profile.env.iter().chain(job.env.iter()) {
        env.replace_or_append(format!("{k}={v}"));
    }
    // A bare KEY tells the gate to remove KEY, as the daemon does for `-e KEY`.
    for k in &job.unset {
        env.replace_or_append(k.clone());
    }
    let user_keys: HashSet<String> = env.at.keys().cloned().collect();
    for entry in &image.env {
        if !user_keys.contains(env_key(entry)) {
            env.replace_or_append(entry.clone());
        }
    }
    let env = env.entries;
    let cwd = profile
        .workdir
        .clone()
        .unwrap_or_else(|| image.workdir.clone());
    let spec = JobSpec {
        argv: argv.into_iter().map(String::into_bytes).collect(),
        env: env.into_iter().map(String::into_bytes).collect(),
        cwd: cwd.into_bytes(),
        stdin: job.stdin.clone(),
    };
    let max = u64::from(warmpool_gate::protocol::MAX_SPEC_BODY);
    if spec.body_len() > max {
        return Err(JobError::TooLarge(spec.body_len(), max));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            id: "sha256:abc".into(),
            entrypoint: vec!["/bin/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "LANG=C".into()],
            workdir: "/srv".into(),
            user: "".into(),
            ..Default::default()
        }
    }

    fn strings(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect()
    }

    #[test]
    fn argv_is_entrypoint_plus_args_or_cmd() {
        let p = Profile::new("p", "img");
        let spec = compose(&image(), &p, &Job::default()).unwrap();
        assert_eq!(strings(&spec.argv), ["/bin/entry", "default"]);
        let job = Job {
            args: vec!["a".into(), "b".into()],
            ..Job::default()
        };
        let spec = compose(&image(), &p, &job).unwrap();
        assert_eq!(strings(&spec.argv), ["/bin/entry", "a", "b"]);
        let cmd_only = ImageConfig {
            entrypoint: vec![],
            ..image()
        };
        let spec = compose(&cmd_only, &p, &job).unwrap();
        assert_eq!(strings(&spec.argv), ["a", "b"]);
        let none = ImageConfig {
            entrypoint: vec![],
            cmd: vec![],
            ..image()
        };
        assert_eq!(
            compose(&none, &p, &Job::default()).unwrap_err(),
            JobError::NoCommand
        );
    }

    #[test]
    fn env_follows_the_daemons_merge() {
        let mut p = Profile::new("p", "img");
        p.env = vec![
            ("GREETING".into(), "hi".into()),
            ("LANG".into(), "en".into()),
        ];
        let job = Job {
            env: vec![
                ("GREETING".into(), "yo".into()),
                ("SECRET".into(), "s".into()),
            ],
            ..Job::default()
        };
        let spec = compose(&image(), &p, &job).unwrap();
        assert_eq!(
            strings(&spec.env),
            ["GREETING=yo", "LANG=en", "SECRET=s", "PATH=/bin"]
        );
    }

    #[test]
    fn unset_removes_from_every_layer() {
        let mut p = Profile::new("p", "img");
        p.env = vec![("GREETING".into(), "hi".into())];
        let job = Job {
            unset: vec!["GREETING".into(), "LANG".into()],
            ..Job::default()
        };
        let spec = compose(&image(), &p, &job).unwrap();
        assert_eq!(strings(&spec.env), ["GREETING", "LANG", "PATH=/bin"]);
    }

    #[test]
    fn oversized_jobs_are_refused_before_anything_runs() {
        let p = Profile::new("p", "img");
        let job = Job {
            stdin: Some(vec![0; warmpool_gate::protocol::MAX_SPEC_BODY as usize]),
            ..Job::default()
        };
        assert!(matches!(
            compose(&image(), &p, &job),
            Err(JobError::TooLarge(..))
        ));
    }

    #[test]
    fn composing_a_large_env_is_linear() {
        // 200k entries, a quarter of them duplicates: quadratic handling would take
        // minutes; linear takes well under a second even unoptimised.
        let n = 200_000;
        let job = Job {
            env: (0..n)
                .map(|i| (format!("K{}", i % (n * 3 / 4)), format!("v{i}")))
                .collect(),
            ..Job::default()
        };
        let started = std::time::Instant::now();
        let spec = compose(&image(), &Profile::new("p", "img"), &job).unwrap();
        assert_eq!(spec.env.len(), n * 3 / 4 + 2);
        // A later duplicate replaced the earlier one in place.
        assert_eq!(spec.env[0], format!("K0=v{}", n * 3 / 4).into_bytes());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn workdir_from_profile_or_image() {
        let mut p = Profile::new("p", "img");
        assert_eq!(compose(&image(), &p, &Job::default()).unwrap().cwd, b"/srv");
        p.workdir = Some("/work".into());
        assert_eq!(
            compose(&image(), &p, &Job::default()).unwrap().cwd,
            b"/work"
        );
    }

    #[test]
    fn bad_job_input_is_refused() {
        let p = Profile::new("p", "img");
        let job = Job {
            env: vec![("A-B".into(), "v".into())],
            ..Job::default()
        };
        assert_eq!(
            compose(&image(), &p, &job).unwrap_err(),
            JobError::BadEnvName("A-B".into())
        );
        let job = Job {
            env: vec![("A".into(), "v\0".into())],
            ..Job::default()
        };
        assert_eq!(
            compose(&image(), &p, &job).unwrap_err(),
            JobError::NulInEnv("A".into())
        );
        let job = Job {
            args: vec!["ok".into(), "\0".into()],
            ..Job::default()
        };
        assert_eq!(
            compose(&image(), &p, &job).unwrap_err(),
            JobError::NulInArg(1)
        );
    }

    #[test]
    fn debug_never_shows_env_values() {
        let job = Job {
            env: vec![("TOKEN".into(), "hunter2".into())],
            ..Job::default()
        };
        assert!(!format!("{job:?}").contains("hunter2"));
        let spec = compose(&image(), &Profile::new("p", "i"), &job).unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
