//! `warmpool serve`: the pools, the HTTP API and the job store in one process,
//! until SIGTERM or SIGINT; then running jobs get `[server] shutdown_grace` to
//! finish and every container of this instance is removed.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use warmpool_pool::Pools;
use warmpool_server::github::GithubBot;
use warmpool_server::Service;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The config file (TOML): [server], [store], [cluster], [github], profiles.
    #[arg(long, short = 'c')]
    config: PathBuf,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    let mut config = super::load_config(&args.config)?;
    // The store in effect (the environment overrides the file), so the service
    // knows whether other nodes share it.
    config.store.url = super::store::store_url(&config)?;
    let config = Arc::new(config);
    let addr: SocketAddr = config
        .server
        .listen
        .parse()
        .with_context(|| format!("[server] listen = \"{}\"", config.server.listen))?;
    // WARMPOOL_API_TOKEN, or the file WARMPOOL_API_TOKEN_FILE names (a
    // container's or systemd's secret file).
    let token = match std::env::var("WARMPOOL_API_TOKEN_FILE") {
        Ok(path) if std::env::var_os("WARMPOOL_API_TOKEN").is_none() => {
            let t = std::fs::read_to_string(&path)
                .with_context(|| format!("reading WARMPOOL_API_TOKEN_FILE ({path})"))?;
            let t = t.trim_end_matches(['\n', '\r']).to_string();
            anyhow::ensure!(!t.is_empty(), "WARMPOOL_API_TOKEN_FILE ({path}) is empty");
            Some(t)
        }
        _ => std::env::var("WARMPOOL_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    if token.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {addr} without WARMPOOL_API_TOKEN: anyone who can reach it could run jobs. \
             Set WARMPOOL_API_TOKEN or WARMPOOL_API_TOKEN_FILE (clients send it as a Bearer token), or listen on 127.0.0.1"
        );
    }
    // Signals first (a SIGTERM during start-up is a clean stop too), then the
    // port (a taken port fails before anything is started or recovered).
    let mut term = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let (_runtime, executor) = super::connect(&config)?;
    let store = super::store::open(&config).await?;
    // The mirrors' directory is mounted in the bot's containers: it must exist
    // before the first one is made.
    if let Some(dir) = config.github.as_ref().and_then(|g| g.mirror_dir.as_ref()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("[github] mirror_dir: cannot make {dir}"))?;
    }
    let pools = Arc::new(Pools::start(&config, executor.clone()).await?);
    tracing::info!(instance = %pools.instance(), swept = pools.swept, "pools started");
    let svc = Service::new(config.clone(), store, pools.clone());
    // The GitHub bot, when configured: its hooks go in before jobs are recovered.
    let bot = match &config.github {
        Some(g) => match GithubBot::from_env(g.clone(), &svc) {
            Ok(bot) => {
                svc.set_hooks(bot.clone());
                Some(bot)
            }
            Err(e) => {
                svc.shutdown(config.server.shutdown_grace).await;
                anyhow::bail!("[github]: {e}");
            }
        },
        None => None,
    };
    let recovered = svc.begin().await;
    let (queued, interrupted) = match recovered {
        Ok(r) => r,
        Err(e) => {
            // Leave nothing behind on the way out.
            svc.shutdown(config.server.shutdown_grace).await;
            return Err(e).context("recovering stored jobs");
        }
    };
    svc.start_retention();
    svc.start_checkpoints();
    if let Some(bot) = &bot {
        bot.recover().await;
        tracing::info!("the GitHub bot answers on POST /webhooks/github");
    }
    if queued + interrupted > 0 {
        tracing::info!(queued, interrupted, "recovered jobs from the store");
    }
    tracing::info!(%addr, auth = token.is_some(), "serving");
    // A person at a terminal sees the pools fill; logs say the same for machines.
    let progress = {
        let pools = pools.clone();
        tokio::spawn(async move { show_filling(&pools).await })
    };
    let http_stop = stop.clone();
    let server = tokio::spawn(warmpool_server::serve(
        listener,
        svc.clone(),
        token,
        bot,
        async move { http_stop.cancelled().await },
    ));
    stop.cancelled().await;
    tracing::info!("stopping: no new jobs; running jobs get the shutdown grace");
    progress.abort();
    // The service stops while HTTP drains: long requests (wait, follow) end with it.
    svc.shutdown(config.server.shutdown_grace).await;
    executor.drain().await;
    let served = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    tracing::info!("stopped; every container of this instance is removed");
    match served {
        Ok(Ok(r)) => r.context("serving HTTP")?,
        Ok(Err(e)) => anyhow::bail!("the HTTP server task failed: {e}"),
        Err(_) => tracing::warn!("some HTTP connections were still open after the shutdown"),
    }
    Ok(0)
}

/// Until every pool is at `min_idle`: a line a second on a terminal ("shell 1/2,
/// noshell 1/1"), then one log line when ready.
async fn show_filling(pools: &Pools) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    loop {
        let status: Vec<String> = pools
            .iter()
            .map(|(name, p)| format!("{name} {}/{}", p.stats().idle, p.profile().profile.min_idle))
            .collect();
        if pools.ready() {
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                pools = %status.join(", "),
                "every pool is at min_idle"
            );
            return;
        }
        if tty {
            eprintln!("warmpool: filling pools: {}", status.join(", "));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
