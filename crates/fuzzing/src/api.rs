//! `api`: what the API decodes from a request (crates/server/src/http.rs): the
//! query strings of `POST /v1/jobs` (`wait`), `GET /v1/jobs` (`state`,
//! `profile`, `limit`) and `GET /v1/jobs/{id}/output` (`stream`, `follow`),
//! and the job submitted ([`decode_submit`]: JSON, then the profile, env, args,
//! stdin and timeout checked against a config with small `[server]` limits).
//!
//! The input: the query string up to the first newline, then the body.
//!
//! Properties:
//! - every refusal is a 400 with a message;
//! - a list query's limit is at most 1000;
//! - a job accepted keeps the rules: a profile the config has, within every
//!   `[server]` limit, env names valid and not secret, no NUL in values or
//!   arguments, a timeout of at least 1ms;
//! - a job accepted composes (as the service checks before storing it) to a
//!   spec, or an error; a spec composed is read back by the gate unchanged.

use std::sync::OnceLock;
use warmpool_core::config::valid_env_name;
use warmpool_core::job::compose;
use warmpool_core::{Config, ImageConfig, Job};
use warmpool_gate::protocol::JobSpec;
use warmpool_server::http::{decode_submit, list_query, output_query, submit_query, ApiError};

/// The config the requests are checked against: two profiles, one with a
/// secret, and limits small enough for a fuzzer to reach.
pub const CONFIG: &str = r#"
[server]
max_env = 4
max_env_bytes = 200
max_args = 6
max_args_bytes = 120
max_stdin = 300

[profiles.shell]
image = "warmpool-test/busybox:latest"
env = { GREETING = "hi" }
secret_env = ["API_TOKEN"]

[profiles.noshell]
image = "warmpool-test/noshell:latest"
"#;

fn config() -> &'static Config {
    static CONFIG_PARSED: OnceLock<Config> = OnceLock::new();
    CONFIG_PARSED.get_or_init(|| Config::parse(CONFIG).expect("the fuzz config is valid"))
}

fn image() -> ImageConfig {
    ImageConfig {
        id: "sha256:fuzz".into(),
        entrypoint: Vec::new(),
        cmd: vec!["sh".into()],
        env: vec!["PATH=/bin".into(), "HOME=/root".into()],
        workdir: "/".into(),
        user: String::new(),
        ..Default::default()
    }
}

fn refused(e: &ApiError) {
    assert_eq!(e.status().as_u16(), 400, "{}", e.message());
    assert!(!e.message().is_empty());
}

pub fn run(data: &[u8]) {
    let (query, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    queries(query);
    submit(body);
}

fn queries(query: &[u8]) {
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    // What reaches a handler is a URI hyper parsed: others are refused before.
    let Ok(uri) = format!("/v1/jobs?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    if let Err(e) = submit_query(&uri) {
        refused(&e);
    }
    match list_query(&uri) {
        Ok(q) => assert!(q.limit <= 1000),
        Err(e) => refused(&e),
    }
    match output_query(&uri) {
        Ok((Err(e), _)) | Err(e) => refused(&e),
        Ok((Ok(_), _)) => {}
    }
}

fn submit(body: &[u8]) {
    let config = config();
    let job = match decode_submit(body, config) {
        Ok(job) => job,
        Err(e) => return refused(&e),
    };
    let Some(profile) = config.profiles.get(&job.profile) else {
        panic!(
            "a job for profile {:?}, which is not configured",
            job.profile
        );
    };
    config
        .server
        .limits
        .check(
            job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &job.args,
            job.stdin.as_ref().map(Vec::len),
        )
        .expect("an accepted job is within the limits");
    for (k, v) in &job.env {
        assert!(valid_env_name(k) && !v.contains('\0'), "env {k:?}");
        assert!(!profile.secret_env.contains(k), "secret env {k} taken");
    }
    assert!(job.args.iter().all(|a| !a.contains('\0')));
    assert!(job.timeout_ms.is_none_or(|t| t >= 1));

    let probe = Job {
        args: job.args.clone(),
        env: job.env.clone(),
        unset: Vec::new(),
        stdin: job.stdin.clone(),
        timeout: None,
    };
    if let Ok(spec) = compose(&image(), profile, &probe) {
        let encoded = spec.encode();
        let back = JobSpec::read_from(&mut &encoded[..]);
        assert!(
            back.as_ref() == Ok(&spec),
            "the gate reads {back:?} for {spec:?}"
        );
    }
}
