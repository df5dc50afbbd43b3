//! `warmpool bench --throughput`: sustained jobs per second. An in-process
//! service on 127.0.0.1 serves two copies of the profile, read-only with a
//! tmpfs `/tmp` (what reuse needs), one single use (`reuse = 1`) and one whose
//! containers serve up to `--reuse` jobs each; `--concurrency` clients, each on
//! a keep-alive connection, send `POST /v1/jobs?wait=true` back to back for
//! `--duration`, first to one, then to the other, in one run. Reported: jobs
//! per second, p50 and p99 latency, and what the pool did (containers parked,
//! reused, jobs per container).

use super::bench_http::{Conn, Served};
use anyhow::{bail, Context};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmpool_core::config::Tmpfs;
use warmpool_core::{Config, Profile};
use warmpool_exec::Executor;
use warmpool_store::{SqliteStore, SystemClock};

#[derive(Serialize)]
pub struct ModeFigures {
    pub mode: String,
    pub reuse: usize,
    pub jobs: usize,
    pub failed: usize,
    pub seconds: f64,
    pub jobs_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub hits: u64,
    pub misses: u64,
    pub containers_parked: u64,
    pub reused: u64,
    pub reset_failed: u64,
}

#[derive(Serialize)]
pub struct ThroughputFigures {
    pub concurrency: usize,
    pub duration_secs: f64,
    pub modes: Vec<ModeFigures>,
    /// Jobs per second with reuse over single use.
    pub reuse_over_single: f64,
    pub goals: Vec<(String, bool)>,
}

/// The profile as both modes run it: read-only with a tmpfs `/tmp` (kept if
/// the profile has its own), `concurrency` containers parked, room for as
/// many more.
fn variant(p: &Profile, name: &str, reuse: usize, concurrency: usize) -> Profile {
    let mut v = p.clone();
    v.name = name.to_string();
    v.read_only = true;
    if !v.tmpfs.iter().any(|t| t.path == "/tmp") {
        v.tmpfs.push(Tmpfs {
            path: "/tmp".into(),
            options: String::new(),
        });
    }
    v.reuse = reuse;
    v.min_idle = concurrency;
    v.max_idle = concurrency;
    v.max_containers = concurrency * 2;
    v.max_queue = v.max_queue.max(concurrency * 2);
    v
}

/// `concurrency` clients sending jobs to `profile` back to back until
/// `duration` has passed.
async fn drive(
    served: &Served,
    profile: &str,
    args: &[String],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<ModeFigures> {
    let pool = served.pools.get(profile).context("bench pool")?.clone();
    let before = pool.stats();
    let parked_before = pool
        .counters()
        .started
        .load(std::sync::atomic::Ordering::Relaxed);
    let body = serde_json::json!({"profile": profile, "args": args}).to_string();
    let began = Instant::now();
    let until = began + duration;
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let mut conn = Conn::connect(served.addr).await?;
        let body = body.clone();
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            let mut first_error = None;
            while Instant::now() < until {
                let t0 = Instant::now();
                let (status, resp) = conn.post("/v1/jobs?wait=true", &body).await?;
                let took = t0.elapsed();
                if status == 200 && resp.contains("\"state\":\"succeeded\"") {
                    latencies.push(took.as_secs_f64() * 1000.0);
                } else {
                    failed += 1;
                    first_error.get_or_insert(format!("HTTP {status}: {resp}"));
                }
            }
            anyhow::Ok((latencies, failed, first_error))
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for c in clients {
        let (l, f, e) = c.await.context("a bench client")??;
        latencies.extend(l);
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        eprintln!("bench: {failed} {profile} jobs did not succeed; the first: {e}");
    }
    let after = pool.stats();
    let p = |q: f64| super::bench::percentile(&latencies, q);
    Ok(ModeFigures {
        mode: profile.to_string(),
        reuse: pool.profile().profile.reuse,
        jobs: latencies.len(),
        failed,
        seconds,
        jobs_per_sec: latencies.len() as f64 / seconds,
        p50_ms: p(50.0),
        p99_ms: p(99.0),
        hits: after.hits - before.hits,
        misses: after.misses - before.misses,
        containers_parked: pool
            .counters()
            .started
            .load(std::sync::atomic::Ordering::Relaxed)
            - parked_before,
        reused: after.reused - before.reused,
        reset_failed: after.reset_failed - before.reset_failed,
    })
}

pub async fn measure(
    profile: &Profile,
    executor: &Executor,
    args: &[String],
    concurrency: usize,
    duration: Duration,
    reuse: usize,
) -> anyhow::Result<ThroughputFigures> {
    if concurrency == 0 || reuse < 2 {
        bail!("--concurrency must be at least 1 and --reuse at least 2");
    }
    let dir = std::env::temp_dir().join(format!(
        "warmpool-bench-throughput-{}",
        warmpool_core::labels::unique_suffix()
    ));
    let mut config = Config::default();
    config.server.instance = format!(
        "bench-throughput-{}",
        warmpool_core::labels::unique_suffix()
    );
    config.server.data_dir = dir.clone();
    for (name, r) in [("single", 1), ("reuse", reuse)] {
        config
            .profiles
            .insert(name.to_string(), variant(profile, name, r, concurrency));
    }
    let store = SqliteStore::open(&dir, Arc::new(SystemClock))
        .context("opening a job store for the bench")?;
    let served = Served::start(Arc::new(config), Arc::new(store), executor).await?;
    let result = async {
        let mut modes = Vec::new();
        for name in ["single", "reuse"] {
            // Each mode starts from a full pool and a quiet engine.
            let pool = served.pools.get(name).context("bench pool")?;
            if !pool.wait_idle(concurrency, Duration::from_secs(120)).await {
                bail!(
                    "the {name} pool did not park {concurrency} containers: {:?}",
                    pool.stats().last_error
                );
            }
            executor.drain().await;
            modes.push(drive(&served, name, args, concurrency, duration).await?);
        }
        let (single, reused) = (&modes[0], &modes[1]);
        let ratio = reused.jobs_per_sec / single.jobs_per_sec;
        let goals = vec![
            (
                format!("reuse {:.0} jobs/s >= 150", reused.jobs_per_sec),
                reused.jobs_per_sec >= 150.0,
            ),
            (
                format!("reuse p99 {:.1} ms <= 50 ms", reused.p99_ms),
                reused.p99_ms <= 50.0,
            ),
            (
                format!("no job failed ({} + {})", single.failed, reused.failed),
                single.failed + reused.failed == 0,
            ),
        ];
        Ok(ThroughputFigures {
            concurrency,
            duration_secs: duration.as_secs_f64(),
            reuse_over_single: ratio,
            modes,
            goals,
        })
    }
    .await;
    served.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
