//! `warmpool bench`: time to first output and time to exit, in one run, for the
//! warm path, the cold path, `docker exec` into a kept-alive container (the old
//! approach) and `docker run` through the Engine API. Prints medians, p99s and
//! the ratios; `--json` for machines.

use anyhow::Context;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmpool_core::{labels, Job};
use warmpool_exec::{OutputSink, ResolvedProfile, RunControl, StreamKind};
use warmpool_pool::Pool;
use warmpool_runtime::baseline;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The config file (TOML) with the profile.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// The profile to measure.
    #[arg(long, short = 'p')]
    profile: String,
    /// Jobs per mode.
    #[arg(long, default_value_t = 20)]
    jobs: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also send this many jobs at once to a pool with the profile's own settings
    /// (min_idle, max_containers, ...) and report its hit rate and latencies.
    #[arg(long, default_value_t = 0)]
    burst: usize,
    /// Instead: time `POST /v1/jobs?wait=true` end to end on an in-process
    /// service, a pool keeping one container parked vs one keeping none, and the
    /// same warm job without the service (its overhead is the difference).
    #[arg(long)]
    http: bool,
    /// Instead: how fast nodes take jobs from the shared queue (the store's
    /// claim), one node vs `--nodes` at once; no engine needed. The store is
    /// `--store-url` (else WARMPOOL_STORE_URL / `[store] url`), else a fresh
    /// SQLite file.
    #[arg(long)]
    queue: bool,
    /// Instead: two nodes on the `--store-url` PostgreSQL; `--jobs` jobs (the
    /// job's arguments should keep it running, e.g. `-- sleep 600`) run on one,
    /// which is SIGKILLed; the time until the other shows them final, against
    /// `[cluster] node_timeout`.
    #[arg(long)]
    failover: bool,
    /// Instead: sustained jobs per second over the HTTP API for `--duration`
    /// at `--concurrency`, single use against containers reused up to
    /// `--reuse` jobs (both read-only with a tmpfs /tmp), in one run.
    #[arg(long)]
    throughput: bool,
    /// How long each `--throughput` mode runs.
    #[arg(long, default_value = "20s", value_parser = warmpool_core::config::parse_duration)]
    duration: std::time::Duration,
    /// Clients sending jobs back to back for `--throughput`.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Jobs per container of `--throughput`'s reuse mode.
    #[arg(long, default_value_t = 100)]
    reuse: usize,
    /// Nodes taking jobs at once for `--queue`.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// A PostgreSQL store for `--queue`, and for `--http` a second service on
    /// it beside the SQLite one (its warm p50 against SQLite's, in one run).
    #[arg(long)]
    store_url: Option<String>,
    /// Arguments of the job (replacing the image's CMD); default: the image's CMD.
    #[arg(last = true)]
    args: Vec<String>,
}

/// Drops output, noting when its first byte came.
struct TimingSink {
    t0: Instant,
    first: Option<Duration>,
}

impl TimingSink {
    fn new(t0: Instant) -> TimingSink {
        TimingSink { t0, first: None }
    }
}

impl OutputSink for TimingSink {
    async fn write(&mut self, _: StreamKind, data: &[u8]) -> std::io::Result<()> {
        if self.first.is_none() && !data.is_empty() {
            self.first = Some(self.t0.elapsed());
        }
        Ok(())
    }
}

#[derive(Serialize, Clone, Copy)]
struct Sample {
    first_output_ms: f64,
    exit_ms: f64,
}

#[derive(Serialize)]
struct ModeStats {
    mode: &'static str,
    what: &'static str,
    n: usize,
    first_output_p50_ms: f64,
    first_output_p99_ms: f64,
    exit_p50_ms: f64,
    exit_p99_ms: f64,
}

#[derive(Serialize)]
struct Report {
    profile: String,
    image: String,
    jobs: usize,
    modes: Vec<ModeStats>,
    park_p50_ms: f64,
    ratios: HashMap<&'static str, f64>,
    goals: Vec<(String, bool)>,
    burst: Option<BurstStats>,
}

/// What a burst did to a pool with the profile's settings.
#[derive(Serialize)]
struct BurstStats {
    jobs: usize,
    min_idle: usize,
    max_containers: usize,
    hits: u64,
    misses: u64,
    queued: u64,
    hit_rate: f64,
    /// From submitting a job to knowing its exit.
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    hit_latency_p50_ms: f64,
    miss_latency_p50_ms: f64,
    wall_ms: f64,
    jobs_per_s: f64,
}

async fn burst(
    executor: &warmpool_exec::Executor,
    resolved: &Arc<ResolvedProfile>,
    job: &Job,
    n: usize,
) -> anyhow::Result<BurstStats> {
    let instance = format!("bench-{}", warmpool_core::labels::unique_suffix());
    let p = &resolved.profile;
    let pool = Pool::start(executor.clone(), resolved.clone(), &instance);
    let filled = pool.wait_idle(p.min_idle, Duration::from_secs(120)).await;
    let result = async {
        anyhow::ensure!(filled, "the pool did not fill to min_idle ({})", p.min_idle);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (pool, job) = (pool.clone(), job.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let mut sink = TimingSink::new(t);
                let r = pool.run(job, &mut sink, RunControl::default()).await;
                (r.map(|r| r.hit), t.elapsed())
            }));
        }
        let (mut all, mut hit_lat, mut miss_lat) = (Vec::new(), Vec::new(), Vec::new());
        for t in tasks {
            let (hit, took) = t.await?;
            let hit = hit?;
            all.push(ms(took));
            if hit {
                hit_lat.push(ms(took))
            } else {
                miss_lat.push(ms(took))
            }
        }
        let wall = t0.elapsed();
        let c = pool.counters();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Ok(BurstStats {
            jobs: n,
            min_idle: p.min_idle,
            max_containers: p.max_containers,
            hits: get(&c.hits),
            misses: get(&c.misses),
            queued: get(&c.queued),
            hit_rate: get(&c.hits) as f64 / n as f64,
            latency_p50_ms: percentile(&all, 50.0),
            latency_p99_ms: percentile(&all, 99.0),
            hit_latency_p50_ms: percentile(&hit_lat, 50.0),
            miss_latency_p50_ms: percentile(&miss_lat, 50.0),
            wall_ms: ms(wall),
            jobs_per_s: n as f64 / wall.as_secs_f64(),
        })
    }
    .await;
    pool.shutdown(Duration::from_secs(30)).await;
    result
}

fn sample(t: &baseline::Timing) -> Sample {
    Sample {
        first_output_ms: t.first_output.map(ms).unwrap_or(f64::NAN),
        exit_ms: ms(t.exit),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of an unsorted slice.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn stats(mode: &'static str, what: &'static str, samples: &[Sample]) -> ModeStats {
    let first: Vec<f64> = samples.iter().map(|s| s.first_output_ms).collect();
    let exit: Vec<f64> = samples.iter().map(|s| s.exit_ms).collect();
    ModeStats {
        mode,
        what,
        n: samples.len(),
        first_output_p50_ms: percentile(&first, 50.0),
        first_output_p99_ms: percentile(&first, 99.0),
        exit_p50_ms: percentile(&exit, 50.0),
        exit_p99_ms: percentile(&exit, 99.0),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(args.jobs > 0, "--jobs must be at least 1");
    let config = super::load_config(&args.config)?;
    if args.queue {
        return queue(&args, &config).await;
    }
    if args.failover {
        return failover(&args, &config).await;
    }
    let profile = config.profile(&args.profile)?.clone();
    let (runtime, executor) = super::connect(&config)?;
    let result = if args.throughput {
        throughput(&args, &profile, &executor).await
    } else if args.http {
        http(&args, &profile, &executor).await
    } else {
        measure(&args, &profile, &runtime, &executor).await
    };
    // Every container the bench made is removed before we exit, on every path.
    executor.drain().await;
    result
}

async fn queue(args: &BenchArgs, config: &warmpool_core::Config) -> anyhow::Result<u8> {
    let url = match &args.store_url {
        Some(u) => Some(u.clone()),
        None => super::store::store_url(config)?,
    };
    let dir = std::env::temp_dir().join(format!(
        "warmpool-bench-queue-{}",
        warmpool_core::labels::unique_suffix()
    ));
    let f = match &url {
        Some(url) => {
            let url = url.clone();
            super::bench_queue::measure(
                "postgresql",
                move || {
                    let url = url.clone();
                    Box::pin(async move { super::store::open_postgres(&url).await })
                },
                false,
                args.nodes,
                args.jobs,
            )
            .await
        }
        None => {
            let dir = dir.clone();
            super::bench_queue::measure(
                "sqlite",
                move || {
                    let dir = dir.clone();
                    Box::pin(async move {
                        let s = warmpool_store::SqliteStore::open(
                            &dir,
                            Arc::new(warmpool_store::SystemClock),
                        )?;
                        anyhow::Ok(Arc::new(s) as Arc<dyn warmpool_store::JobStore>)
                    })
                },
                true,
                args.nodes,
                args.jobs,
            )
            .await
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let f = f?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(0);
    }
    println!(
        "warmpool bench --queue: {} store, {} jobs taken from the shared queue",
        f.backend, f.jobs
    );
    println!();
    println!("| nodes taking at once | claims/s |");
    println!("|---|---|");
    println!("| 1 | {:.0} |", f.one_node_claims_per_sec);
    println!("| {} | {:.0} |", f.nodes, f.many_nodes_claims_per_sec);
    println!();
    println!("ratio {} nodes / 1 node: {:.2}x", f.nodes, f.ratio);
    let goal = 2.5;
    println!(
        "goal {}: {} nodes >= {goal}x one node",
        if f.ratio >= goal { "met" } else { "MISSED" },
        f.nodes
    );
    Ok(0)
}

async fn failover(args: &BenchArgs, config: &warmpool_core::Config) -> anyhow::Result<u8> {
    let url = match &args.store_url {
        Some(u) => u.clone(),
        None => super::store::store_url(config)?
            .context("--failover needs a PostgreSQL store: --store-url or [store] url")?,
    };
    config.profile(&args.profile)?;
    if !args.json {
        eprintln!(
            "bench: two nodes, {} jobs on node B, SIGKILL B, until node A shows them final ...",
            args.jobs
        );
    }
    let f =
        super::bench_failover::measure(&args.config, &args.profile, &url, &args.args, args.jobs)
            .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(0);
    }
    println!(
        "warmpool bench --failover: {} jobs running on a node that is SIGKILLed; node_timeout {:.0} ms",
        f.jobs, f.node_timeout_ms
    );
    println!();
    println!("| from the kill to the job's final state, seen on the other node | p50 | max |");
    println!("|---|---|---|");
    println!(
        "| {} | {:.0} ms | {:.0} ms |",
        f.states.join(", "),
        f.final_p50_ms,
        f.final_max_ms
    );
    let bound = f.node_timeout_ms + 10_000.0;
    println!(
        "goal {}: every job final within node_timeout + 10 s ({bound:.0} ms)",
        if f.final_max_ms <= bound {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(0)
}

/// One line per goal: met or MISSED, and the figure that says so.
fn print_goals(goals: &[(String, bool)]) {
    for (goal, met) in goals {
        println!("goal {}: {goal}", if *met { "met" } else { "MISSED" });
    }
}

async fn throughput(
    args: &BenchArgs,
    profile: &warmpool_core::Profile,
    executor: &warmpool_exec::Executor,
) -> anyhow::Result<u8> {
    if !args.json {
        eprintln!(
            "bench: {} clients, POST /v1/jobs?wait=true back to back, {:?} single use then {:?} with reuse = {} ...",
            args.concurrency, args.duration, args.duration, args.reuse
        );
    }
    let f = super::bench_throughput::measure(
        profile,
        executor,
        &args.args,
        args.concurrency,
        args.duration,
        args.reuse,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(0);
    }
    let job = if args.args.is_empty() {
        "the image's CMD".to_string()
    } else {
        format!("{:?}", args.args.join(" "))
    };
    println!(
        "warmpool bench --throughput: profile {} (image {}), job {job}, {} clients on keep-alive connections, {:.0} s each",
        profile.name, profile.image, f.concurrency, f.duration_secs
    );
    println!();
    println!(
        "| mode | jobs | jobs/s | p50 | p99 | hits | misses | parked | reused | jobs/container |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for m in &f.modes {
        let per = if m.containers_parked == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", m.jobs as f64 / m.containers_parked as f64)
        };
        println!(
            "| reuse = {} | {} | {:.1} | {:.2} ms | {:.2} ms | {} | {} | {} | {} | {per} |",
            m.reuse,
            m.jobs,
            m.jobs_per_sec,
            m.p50_ms,
            m.p99_ms,
            m.hits,
            m.misses,
            m.containers_parked,
            m.reused
        );
    }
    println!();
    println!(
        "ratio jobs/s reuse / single use: {:.1}x",
        f.reuse_over_single
    );
    print_goals(&f.goals);
    Ok(0)
}

async fn http(
    args: &BenchArgs,
    profile: &warmpool_core::Profile,
    executor: &warmpool_exec::Executor,
) -> anyhow::Result<u8> {
    if !args.json {
        eprintln!(
            "bench: POST /v1/jobs?wait=true, warm and cold, and the warm job direct, x {} ...",
            args.jobs
        );
    }
    let f = super::bench_http::measure(
        profile,
        executor,
        &args.args,
        args.jobs,
        args.store_url.as_deref(),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(0);
    }
    println!(
        "warmpool bench --http: profile {} (image {}), {} jobs each, POST /v1/jobs?wait=true on one keep-alive connection",
        profile.name, profile.image, f.jobs
    );
    println!();
    println!("| pool | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| warm (min_idle = 1) | {:.2} ms | {:.2} ms |",
        f.warm_p50_ms, f.warm_p99_ms
    );
    println!(
        "| cold (min_idle = 0) | {:.2} ms | {:.2} ms |",
        f.cold_p50_ms, f.cold_p99_ms
    );
    println!(
        "| direct warm exit, no HTTP (min_idle = 1) | {:.2} ms | {:.2} ms |",
        f.direct_warm_exit_p50_ms, f.direct_warm_exit_p99_ms
    );
    if let (Some(p50), Some(p99)) = (f.postgres_warm_p50_ms, f.postgres_warm_p99_ms) {
        println!("| warm, store on PostgreSQL (min_idle = 1) | {p50:.2} ms | {p99:.2} ms |");
    }
    println!();
    println!("ratio cold p50 / warm p50: {:.1}x", f.cold_over_warm);
    println!(
        "service overhead p50: {:.2} ms (HTTP warm p50 {:.2} ms - direct warm exit p50 {:.2} ms)",
        f.service_overhead_p50_ms, f.warm_p50_ms, f.direct_warm_exit_p50_ms
    );
    print_goals(&f.goals);
    Ok(0)
}

async fn measure(
    args: &BenchArgs,
    profile: &warmpool_core::Profile,
    runtime: &warmpool_runtime::DockerRuntime,
    executor: &warmpool_exec::Executor,
) -> anyhow::Result<u8> {
    let resolved = executor.resolve(profile).await?;
    let job = Job {
        args: args.args.clone(),
        env: vec![("WARMPOOL_BENCH".into(), "1".into())],
        ..Job::default()
    };
    let spec = warmpool_core::job::compose(&resolved.image, profile, &job)?;
    let argv: Vec<String> = spec
        .argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let env: Vec<String> = spec
        .env
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let progress = |what: &str| {
        if !args.json {
            eprintln!("bench: {what} x {} ...", args.jobs);
        }
    };

    // Warm: park (not timed), then time from hand-over.
    // Warm: a pool that keeps one container parked; each job claims it (a hit) and
    // the pool parks the next one while we wait for it (not on the job's time).
    progress("warm");
    let warm_pool = Pool::start_one_off(executor.clone(), &resolved, 1, "bench");
    let mut warm = Vec::new();
    let mut parks = Vec::new();
    for _ in 0..args.jobs {
        warm_pool.wait_parked().await.map_err(anyhow::Error::msg)?;
        let t0 = Instant::now();
        let mut sink = TimingSink::new(t0);
        let r = warm_pool
            .run(job.clone(), &mut sink, RunControl::default())
            .await?;
        let exit = t0.elapsed();
        anyhow::ensure!(r.hit, "a warm run found nothing parked");
        anyhow::ensure!(
            r.outcome.lost.is_none(),
            "warm run lost: {:?}",
            r.outcome.lost
        );
        parks.push(ms(r.outcome.park.total));
        warm.push(Sample {
            first_output_ms: sink.first.map(ms).unwrap_or(f64::NAN),
            exit_ms: ms(exit),
        });
    }
    warm_pool.shutdown(Duration::ZERO).await;

    // Cold: a pool that keeps nothing parked: every claim parks its own container,
    // on the job's time. The same path otherwise.
    progress("cold");
    let cold_pool = Pool::start_one_off(executor.clone(), &resolved, 0, "bench");
    let mut cold = Vec::new();
    for _ in 0..args.jobs {
        let t0 = Instant::now();
        let mut sink = TimingSink::new(t0);
        let r = cold_pool
            .run(job.clone(), &mut sink, RunControl::default())
            .await?;
        let exit = t0.elapsed();
        anyhow::ensure!(!r.hit, "a cold run found a parked container");
        cold.push(Sample {
            first_output_ms: sink.first.map(ms).unwrap_or(f64::NAN),
            exit_ms: ms(exit),
        });
    }
    cold_pool.shutdown(Duration::ZERO).await;

    // docker exec into one kept-alive container (the old approach). The container
    // is a parked gate that never gets a job: it just stays alive, as `tail -f` did.
    progress("docker exec");
    let keeper = executor.park(resolved.clone()).await?;
    let keeper_id = keeper.id().to_string();
    let mut exec = Vec::new();
    for _ in 0..args.jobs {
        let t = baseline::docker_exec(runtime, &keeper_id, &argv, &env).await?;
        anyhow::ensure!(t.exit_code.is_some(), "docker exec: no exit code");
        exec.push(sample(&t));
    }
    drop(keeper);
    executor.drain().await;

    // docker run through the Engine API: create, attach, start, wait (then remove,
    // untimed, as `--rm` would do after the exit is known).
    progress("docker run");
    let mut bench_labels: HashMap<String, String> = profile.labels.clone().into_iter().collect();
    bench_labels.extend([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::PROFILE.to_string(), profile.name.clone()),
        (labels::ROLE.to_string(), "bench".to_string()),
    ]);
    let mut run = Vec::new();
    for i in 0..args.jobs {
        let one = baseline::OneShot {
            name: format!("warmpool-bench-run-{}-{i}", std::process::id()),
            image: profile.image.clone(),
            argv: argv.clone(),
            env: env.clone(),
            user: profile.user.clone(),
            workdir: profile.workdir.clone(),
            network: profile.network.clone(),
            labels: bench_labels.clone(),
        };
        run.push(sample(&baseline::docker_run(runtime, &one).await?));
    }

    let modes = vec![
        stats("warm", "hand-over to a parked gate", &warm),
        stats("cold", "create + attach + start + hand-over", &cold),
        stats("docker exec", "exec into a kept-alive container", &exec),
        stats("docker run", "Engine API create/attach/start/wait", &run),
    ];
    let w = &modes[0];
    let mut ratios = HashMap::new();
    ratios.insert(
        "cold_exit_over_warm_exit",
        modes[1].exit_p50_ms / w.exit_p50_ms,
    );
    ratios.insert(
        "exec_exit_over_warm_exit",
        modes[2].exit_p50_ms / w.exit_p50_ms,
    );
    ratios.insert(
        "run_exit_over_warm_exit",
        modes[3].exit_p50_ms / w.exit_p50_ms,
    );
    ratios.insert(
        "run_first_output_over_warm_first_output",
        modes[3].first_output_p50_ms / w.first_output_p50_ms,
    );
    let goals = vec![
        (
            format!(
                "warm first output p50 {:.2} ms <= 5 ms",
                w.first_output_p50_ms
            ),
            w.first_output_p50_ms <= 5.0,
        ),
        (
            format!(
                "warm first output p99 {:.2} ms <= 20 ms",
                w.first_output_p99_ms
            ),
            w.first_output_p99_ms <= 20.0,
        ),
        (
            format!(
                "warm exit p50 {:.2} ms <= docker run exit p50 / 30 ({:.2} ms)",
                w.exit_p50_ms,
                modes[3].exit_p50_ms / 30.0
            ),
            w.exit_p50_ms <= modes[3].exit_p50_ms / 30.0,
        ),
    ];
    let burst = if args.burst > 0 {
        progress("burst");
        Some(burst(executor, &resolved, &job, args.burst).await?)
    } else {
        None
    };
    let report = Report {
        burst,
        profile: profile.name.clone(),
        image: profile.image.clone(),
        jobs: args.jobs,
        modes,
        park_p50_ms: percentile(&parks, 50.0),
        ratios,
        goals,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, &args.args);
    }
    Ok(0)
}

fn print_table(r: &Report, job_args: &[String]) {
    let argv = if job_args.is_empty() {
        "job argv from the image".to_string()
    } else {
        format!("job args {job_args:?}")
    };
    println!(
        "warmpool bench: profile {} (image {}), {} jobs per mode, {argv}",
        r.profile, r.image, r.jobs
    );
    println!();
    println!(
        "| {:<12} | {:>16} | {:>16} | {:>10} | {:>10} | what",
        "mode", "first output p50", "first output p99", "exit p50", "exit p99"
    );
    println!(
        "|{:-<14}|{:->18}|{:->18}|{:->12}|{:->12}|------",
        "", "", "", "", ""
    );
    for m in &r.modes {
        println!(
            "| {:<12} | {:>13.2} ms | {:>13.2} ms | {:>7.2} ms | {:>7.2} ms | {}",
            m.mode,
            m.first_output_p50_ms,
            m.first_output_p99_ms,
            m.exit_p50_ms,
            m.exit_p99_ms,
            m.what
        );
    }
    println!();
    println!(
        "parking one container (not on the warm job's time): p50 {:.1} ms",
        r.park_p50_ms
    );
    let mut keys: Vec<_> = r.ratios.keys().collect();
    keys.sort();
    for k in keys {
        println!("ratio {k}: {:.1}x", r.ratios[k]);
    }
    print_goals(&r.goals);
    if let Some(b) = &r.burst {
        println!();
        println!(
            "burst: {} jobs at once on a pool with min_idle {} and max_containers {}: {} hits, {} misses ({} queued), hit rate {:.0}%",
            b.jobs, b.min_idle, b.max_containers, b.hits, b.misses, b.queued, b.hit_rate * 100.0
        );
        println!(
            "burst: submit to exit p50 {:.1} ms, p99 {:.1} ms (hits p50 {:.1} ms, misses p50 {:.1} ms); {:.1} jobs/s over {:.0} ms",
            b.latency_p50_ms, b.latency_p99_ms, b.hit_latency_p50_ms, b.miss_latency_p50_ms, b.jobs_per_s, b.wall_ms
        );
    }
}
