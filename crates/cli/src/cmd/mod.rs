//! One module per subcommand, plus what they share: loading the config and
//! connecting to the engine it names.

pub mod backup;
pub mod bench;
pub mod bench_failover;
pub mod bench_http;
pub mod bench_queue;
pub mod bench_throughput;
pub mod client;
pub mod doctor;
pub mod doctor_host;
pub mod env_help;
pub mod jobs;
pub mod logs;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod store;
pub mod submit;

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use warmpool_core::Config;
use warmpool_exec::Executor;
use warmpool_runtime::DockerRuntime;

pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading {}", path.display()))
}

pub fn connect(config: &Config) -> anyhow::Result<(Arc<DockerRuntime>, Executor)> {
    let runtime = Arc::new(DockerRuntime::connect(config.engine.host.as_deref())?);
    let executor = Executor::new(runtime.clone());
    Ok((runtime, executor))
}
