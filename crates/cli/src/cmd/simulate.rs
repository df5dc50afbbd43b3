//! `warmpool simulate`: the pool-sizing simulation (docs/pool-sizing.md) on the
//! synthetic scenarios, or on an arrival trace (CSV: arrival_s,function,runtime_ms).

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// An arrival trace to replay (each function is one profile); without it, the
    /// synthetic scenarios (bursty, diurnal, cold morning) run.
    #[arg(long)]
    trace: Option<PathBuf>,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<u8> {
    let report = match &args.trace {
        Some(path) => warmpool_pool::sim::run_trace_file(path)
            .with_context(|| format!("simulating {}", path.display()))?,
        None => warmpool_pool::sim::run_synthetic(),
    };
    println!("{report}");
    Ok(0)
}
