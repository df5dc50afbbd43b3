//! `warmpool`: the binary. Thin on purpose: one file per subcommand under `cmd/`,
//! each turning its arguments into calls on `warmpool-exec`.

mod cmd;
#[cfg(test)]
mod help_test;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code for a failure of warmpool itself (as `docker run` uses 125).
pub const EXIT_WARMPOOL_FAILED: u8 = 125;

#[derive(Parser)]
#[command(
    name = "warmpool",
    version,
    about = "Warm Docker containers for one-shot jobs: `docker run` semantics, millisecond starts",
    after_help = "Each command's --help lists the environment variables it reads."
)]
struct Cli {
    /// Log lines as text (for people and most collectors) or JSON (for machines).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API over the pools, with a durable job store.
    #[command(after_help = cmd::env_help::SERVE)]
    Serve(cmd::serve::ServeArgs),
    /// Run one job in a fresh container of a profile, like `docker run --rm --init`.
    #[command(after_help = cmd::env_help::RUN)]
    Run(cmd::run::RunArgs),
    /// Check the engine, each profile's image, and that the gate starts in it.
    #[command(after_help = cmd::env_help::DOCTOR)]
    Doctor(cmd::doctor::DoctorArgs),
    /// Measure warm and cold starts against `docker exec` and `docker run`.
    #[command(after_help = cmd::env_help::BENCH)]
    Bench(cmd::bench::BenchArgs),
    /// Simulate pool-sizing policies on synthetic scenarios or an arrival trace.
    #[command(after_help = cmd::env_help::SIMULATE)]
    Simulate(cmd::simulate::SimulateArgs),
    /// Submit a job to `warmpool serve`; its output becomes ours, its exit code ours.
    #[command(after_help = cmd::env_help::SUBMIT)]
    Submit(cmd::submit::SubmitArgs),
    /// List the jobs of `warmpool serve`, newest first.
    #[command(after_help = cmd::env_help::CLIENT)]
    Jobs(cmd::jobs::JobsArgs),
    /// Print a job's output (--follow: as it is written, until the job ends).
    #[command(after_help = cmd::env_help::CLIENT)]
    Logs(cmd::logs::LogsArgs),
    /// Show the pools of `warmpool serve`: levels, hit rate, claim times (--watch: redraw until Ctrl-C).
    #[command(after_help = cmd::env_help::CLIENT)]
    Status(cmd::status::StatusArgs),
    /// Copy the embedded job store to a new file, online (the server may run).
    #[command(after_help = cmd::env_help::BACKUP)]
    Backup(cmd::backup::BackupArgs),
}

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that print a report end quietly when their reader goes (`| head`),
    // as Unix tools do. Those that carry a job's output handle a closed pipe
    // themselves, so the job is not cut short by it.
    if matches!(
        cli.command,
        Command::Doctor(_)
            | Command::Simulate(_)
            | Command::Bench(_)
            | Command::Jobs(_)
            | Command::Status(_)
    ) {
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: resetting a signal's disposition at start, before any thread exists.
        unsafe { signal(SIGPIPE, SIG_DFL) };
    }
    // Quiet by default: `warmpool run` stands in for `docker run` and prints only
    // the job's output. WARMPOOL_LOG=debug (an EnvFilter) shows what happens.
    // The service logs what it does (info); one-off commands stay quiet.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "off",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARMPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colors for a person at a terminal; plain lines (or JSON) for log collectors.
    use std::io::IsTerminal;
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warmpool: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_WARMPOOL_FAILED);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Run(args) => cmd::run::run(args).await,
            Command::Doctor(args) => cmd::doctor::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Simulate(args) => cmd::simulate::run(args).await,
            Command::Submit(args) => cmd::submit::run(args).await,
            Command::Jobs(args) => cmd::jobs::run(args).await,
            Command::Logs(args) => cmd::logs::run(args).await,
            Command::Status(args) => cmd::status::run(args).await,
            Command::Backup(args) => cmd::backup::run(args).await,
        }
    });
    // A write to our stdout that a reader never takes must not keep us alive once
    // the job is over: do not wait for blocked I/O threads.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("warmpool: error: {e:#}");
            ExitCode::from(EXIT_WARMPOOL_FAILED)
        }
    }
}
