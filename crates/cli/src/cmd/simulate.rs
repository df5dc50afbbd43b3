//! `warmpool simulate`: the pool-sizing simulation (docs/pool-sizing.md) on the
//! synthetic scenarios, or on an arrival trace (CSV: arrival_s,function,runtime_ms);
//! with `--reuse`, also what reusing containers does (docs/reuse.md).

use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use warmpool_pool::sim::Tuning;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// An arrival trace to replay (each function is one profile); without it, the
    /// synthetic scenarios (bursty, diurnal, cold morning) run.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The profile's max_idle instead of 8 (every policy is held to it).
    #[arg(long)]
    max_idle: Option<usize>,
    /// The adaptive rule's idle_ttl instead of the default 10m (e.g. `2m`, `30s`).
    #[arg(long, value_parser = warmpool_core::config::parse_duration)]
    idle_ttl: Option<Duration>,
    /// The adaptive rule's miss budget instead of the default 0.005.
    #[arg(long)]
    miss_budget: Option<f64>,
    /// Also run the adaptive policy with containers reused for up to N jobs each
    /// (a list compares several: `--reuse 10,100`; reuse 1 is always shown beside).
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    reuse: Vec<usize>,
    /// How long a reset between two jobs holds a reused container, instead of the
    /// measured 10ms (e.g. `50ms`).
    #[arg(long, value_parser = warmpool_core::config::parse_duration)]
    reset_time: Option<Duration>,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<u8> {
    let tuning = Tuning {
        max_idle: args.max_idle,
        idle_ttl: args.idle_ttl,
        miss_budget: args.miss_budget,
        reset_time: args.reset_time,
    };
    let report = match &args.trace {
        Some(path) => warmpool_pool::sim::run_trace_file_with(path, &tuning, &args.reuse)
            .with_context(|| format!("simulating {}", path.display()))?,
        None => {
            warmpool_pool::sim::run_synthetic_with(&tuning, &args.reuse).context("simulating")?
        }
    };
    println!("{report}");
    Ok(0)
}
