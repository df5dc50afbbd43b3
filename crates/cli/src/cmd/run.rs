//! `warmpool run`: one job, its output on ours, its exit code as ours.

use anyhow::{bail, Context};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use warmpool_core::config::{parse_duration, valid_env_name};
use warmpool_core::Job;
use warmpool_exec::{Outcome, OutputSink, RunControl, Signal, StreamKind};
use warmpool_pool::Pool;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The config file (TOML) with the profile.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// The profile to run.
    #[arg(long, short = 'p')]
    profile: String,
    /// Job env: KEY=VALUE, or KEY to take its value from this environment. Sent to
    /// the container's gate only; never part of the container's config.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Create the container now, on the job's time (the default).
    #[arg(long, conflicts_with = "warm")]
    cold: bool,
    /// Park a container first; hand the job over once it is parked.
    #[arg(long)]
    warm: bool,
    /// Print phase timings (and why a job timed out or was lost) on stderr after the job.
    #[arg(long)]
    timing: bool,
    /// Pass this process's stdin to the job (read to its end first), as `docker run -i`.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Override the profile's job_timeout ("30s", "2m").
    #[arg(long)]
    timeout: Option<String>,
    /// Arguments replacing the image's CMD.
    #[arg(last = true)]
    args: Vec<String>,
}

/// Writes the job's streams to ours as they come.
struct StdSink {
    out: tokio::io::Stdout,
    err: tokio::io::Stderr,
}

impl OutputSink for StdSink {
    async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
        match stream {
            StreamKind::Stdout => {
                self.out.write_all(data).await?;
                self.out.flush().await
            }
            StreamKind::Stderr => {
                self.err.write_all(data).await?;
                self.err.flush().await
            }
        }
    }
}

/// `-e KEY=VALUE` sets; `-e KEY` takes KEY's value from our environment, or, when
/// KEY is not set here, removes KEY from the job's env (as `docker run -e KEY`).
/// Variables to set, and variables to remove.
type EnvArgs = (Vec<(String, String)>, Vec<String>);

pub fn parse_env(entries: &[String]) -> anyhow::Result<EnvArgs> {
    let mut env = Vec::new();
    let mut unset = Vec::new();
    for e in entries {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (e.clone(), std::env::var(e).ok()),
        };
        if !valid_env_name(&k) {
            bail!(
                "-e {k}: not a valid variable name (letters, digits, _; not starting with a digit)"
            );
        }
        match v {
            Some(v) => env.push((k, v)),
            None => unset.push(k),
        }
    }
    Ok((env, unset))
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let config = super::load_config(&args.config)?;
    let profile = config.profile(&args.profile)?.clone();
    let timeout = match &args.timeout {
        Some(t) => Some(
            parse_duration(t)
                .map_err(anyhow::Error::msg)
                .context("--timeout")?,
        ),
        None => None,
    };
    let stdin = if args.interactive {
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut buf)
            .await
            .context("reading stdin for the job")?;
        Some(buf)
    } else {
        None
    };
    let (env, unset) = parse_env(&args.env)?;
    let limit = match timeout {
        Some(_) => format!("--timeout {}", args.timeout.as_deref().unwrap_or_default()),
        None => format!(
            "[profiles.{}] job_timeout, {:?}",
            profile.name, profile.job_timeout
        ),
    };
    let job = Job {
        args: args.args,
        env,
        unset,
        stdin,
        timeout,
    };
    job.validate()?;
    let (_runtime, executor) = super::connect(&config)?;
    let resolved = executor.resolve(&profile).await?;

    // Our signals go to the job, as `docker run` proxies them.
    let (tx, rx) = mpsc::unbounded_channel();
    let mut forwarders = Vec::new();
    for (kind, forwarded) in [
        (SignalKind::interrupt(), Signal::Int),
        (SignalKind::terminate(), Signal::Term),
        (SignalKind::hangup(), Signal::Hup),
        (SignalKind::quit(), Signal::Quit),
        (SignalKind::user_defined1(), Signal::Usr1),
        (SignalKind::user_defined2(), Signal::Usr2),
    ] {
        let mut s = signal(kind).context("installing signal handlers")?;
        let tx = tx.clone();
        forwarders.push(tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(forwarded).is_err() {
                    break;
                }
            }
        }));
    }
    let control = RunControl::with_signals(rx);
    let mut sink = StdSink {
        out: tokio::io::stdout(),
        err: tokio::io::stderr(),
    };
    // A one-off run has a pool of its own, under an instance name of its own (so
    // it never touches another warmpool's containers): for --cold a pool that
    // keeps nothing parked, for --warm one that parks a container first. Either
    // way the job takes the one path, `Pool::run`.
    let pool = Pool::start_one_off(executor.clone(), &resolved, usize::from(args.warm), "run");
    let result = async {
        if args.warm {
            pool.wait_parked().await.map_err(anyhow::Error::msg)?;
        }
        // Nothing more to park for a one-off job (but a retry may still claim).
        pool.stop_replenishing();
        anyhow::Ok(pool.run(job, &mut sink, control).await?)
    }
    .await;
    pool.shutdown(std::time::Duration::ZERO).await;
    for f in forwarders {
        f.abort();
    }
    // Removing the used container is off the job's path, but must finish before we
    // exit, on every path (an error after the container was created included).
    executor.drain().await;
    let run = result?;
    let outcome = run.outcome;
    // Quiet by default, as `docker run`: the exit code tells. --timing says more.
    if args.timing {
        print_timing(&outcome, args.warm);
        if run.retried {
            eprintln!("warmpool: the first container died before the job started; the job ran on a second");
        }
        if let Some(lost) = &outcome.lost {
            eprintln!("warmpool: {lost}");
        }
    }
    // Never silent: an exit of 143 (or 137) alone does not say who stopped the job.
    if outcome.timed_out {
        eprintln!("warmpool: the job ran past its timeout ({limit}) and was stopped");
    }
    Ok(outcome.exit_code().clamp(0, 255) as u8)
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn print_timing(o: &Outcome, warm: bool) {
    let p = o.park;
    eprintln!(
        "warmpool: {} park {} (create {}, attach {}, start {}, gate ready {})",
        if warm { "warm:" } else { "cold:" },
        ms(p.total),
        ms(p.create),
        ms(p.attach),
        ms(p.start),
        ms(p.ready)
    );
    eprintln!(
        "warmpool: job handed over -> first output {}, exit {}{}",
        o.run
            .first_output
            .map(ms)
            .unwrap_or_else(|| "(none)".into()),
        ms(o.run.exit),
        if warm {
            String::new()
        } else {
            format!("; request -> exit {}", ms(p.total + o.run.exit))
        }
    );
}
