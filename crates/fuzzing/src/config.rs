//! `config`: the config file (crates/core/src/config.rs), as [`Config::load`]
//! reads it: UTF-8 text to [`Config::parse_with_hostname`]; and the duration
//! and size syntax it shares with the API (`timeout`).
//!
//! Properties:
//! - the text parses to a config that keeps every rule the loader checks
//!   (at least one profile; pool counts in order; durations and limits above
//!   zero; `[server]` values in range, its limits together within what a job
//!   spec can carry; the bot's profile exists; every duration at most 10^9 s,
//!   as a string is), or to an error with a message;
//! - a duration or size that parses is in range.

use warmpool_core::config::{parse_duration, parse_size, valid_instance_name};
use warmpool_core::Config;
use warmpool_gate::protocol::MAX_SPEC_BODY;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // `Config::load` refuses it (read_to_string) before any parsing.
        return;
    };
    match Config::parse_with_hostname(text, Some("fuzz-host")) {
        Ok(config) => check(&config),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if text.len() <= 64 {
        if let Ok(d) = parse_duration(text) {
            assert!(d.as_secs_f64() <= 1e9, "{text:?} is {d:?}");
        }
        if let Ok(n) = parse_size(text) {
            assert!(n <= u64::MAX / 2, "{text:?} is {n}");
        }
    }
}

fn check(c: &Config) {
    assert!(!c.profiles.is_empty());
    for (name, p) in &c.profiles {
        assert_eq!(name, &p.name);
        assert!(!p.image.trim().is_empty());
        assert!(p.min_idle <= p.max_idle, "{name}: min_idle over max_idle");
        assert!(p.max_containers >= 1 && p.max_containers >= p.min_idle);
        assert!(!p.job_timeout.is_zero() && p.output_limit > 0);
        assert!(!p.max_wait.is_zero() && !p.max_age.is_zero() && !p.idle_ttl.is_zero());
        for d in [
            p.job_timeout,
            p.kill_grace,
            p.max_wait,
            p.max_age,
            p.idle_ttl,
        ] {
            assert!(in_range(d), "{name}: a duration of {d:?}");
        }
        assert!(p.memory.is_none_or(|m| m >= 6 * 1024 * 1024));
        assert!(p.cpus.is_none_or(|c| c > 0.0 && c.is_finite()));
        assert!(p.pids_limit.is_none_or(|n| n > 0));
        assert!(p.tmpfs.iter().all(|t| t.path.starts_with('/')));
        // Read-only bind mounts only (the type has no writable form), of plain absolute paths.
        assert!(p.mounts.iter().all(|m| {
            [&m.source, &m.target]
                .iter()
                .all(|x| x.starts_with('/') && !x.split('/').any(|c| c == "..") && !x.contains(':'))
        }));
        assert!(p.workdir.as_ref().is_none_or(|w| w.starts_with('/')));
        assert!(p
            .env
            .iter()
            .all(|(k, v)| { warmpool_core::config::valid_env_name(k) && !v.contains('\0') }));
    }
    let s = &c.server;
    assert!(valid_instance_name(&s.instance), "{:?}", s.instance);
    assert!(!s.retention.is_zero());
    assert!(s.max_body >= 1024);
    assert!(s.listen.parse::<std::net::SocketAddr>().is_ok());
    assert!(!s.data_dir.as_os_str().is_empty());
    let l = &s.limits;
    let total =
        u128::from(l.max_env_bytes) + u128::from(l.max_args_bytes) + u128::from(l.max_stdin);
    assert!(
        total <= u128::from(MAX_SPEC_BODY / 2),
        "job input limits of {total} bytes together"
    );
    if let Some(g) = &c.github {
        assert!(c.profiles.contains_key(&g.profile));
        assert!(g.api_url.starts_with("https://") || g.api_url.starts_with("http://"));
        assert!((1024..=25 * 1024 * 1024).contains(&g.max_body));
    }
    assert!(!c.cluster.node_timeout.is_zero());
    for d in [
        s.shutdown_grace,
        s.retention,
        c.cluster.node_timeout,
        c.cluster.heartbeat,
    ] {
        assert!(in_range(d), "a duration of {d:?}");
    }
}

/// Durations are at most 10^9 seconds (about 31 years) however written: later
/// arithmetic on them (deadlines, `heartbeat * 2`) cannot overflow.
fn in_range(d: std::time::Duration) -> bool {
    d.as_secs() <= 1_000_000_000
}
