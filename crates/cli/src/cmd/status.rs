//! `warmpool status`: the server's pools as a table, once or (`--watch`) redrawn
//! every interval until Ctrl-C. Read-only.

use super::client::{Client, ServerArgs};
use super::jobs::{table, Align};
use anyhow::Context;
use std::io::{IsTerminal, Write};
use tokio::signal::unix::{signal, SignalKind};
use warmpool_core::config::parse_duration;
use warmpool_server::api::PoolView;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Redraw the table every --interval until Ctrl-C.
    #[arg(long, short = 'w')]
    watch: bool,
    /// Time between redraws with --watch ("2s", "500ms").
    #[arg(long, default_value = "2s", requires = "watch")]
    interval: String,
}

/// Home the cursor and clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let client = Client::from_args(&args.server)?;
    if !args.watch {
        let pools: Vec<PoolView> = client
            .get_json("/v1/pools")
            .await
            .context("reading the pools")?;
        print!("{}", pools_table(&pools));
        return Ok(0);
    }
    let interval = parse_duration(&args.interval)
        .map_err(anyhow::Error::msg)
        .context("--interval")?;
    anyhow::ensure!(!interval.is_zero(), "--interval: must be above 0");
    let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let terminal = std::io::stdout().is_terminal();
    loop {
        // A server that goes away (a restart) is shown, not fatal: watching goes on.
        let shown = match client.get_json::<Vec<PoolView>>("/v1/pools").await {
            Ok(pools) => pools_table(&pools),
            Err(e) => format!("warmpool: reading the pools: {e}\n"),
        };
        let frame = if terminal {
            format!(
                "{CLEAR}warmpool status of {} every {} (Ctrl-C to stop)\n\n{shown}",
                client.base(),
                args.interval
            )
        } else {
            format!("{shown}\n")
        };
        {
            let mut out = std::io::stdout().lock();
            out.write_all(frame.as_bytes())
                .and_then(|_| out.flush())
                .context("writing the table")?;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = int.recv() => return Ok(0),
        }
    }
}

fn pools_table(pools: &[PoolView]) -> String {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|p| {
            vec![
                p.node.clone(),
                p.profile.clone(),
                p.image.clone(),
                p.idle.to_string(),
                p.busy.to_string(),
                p.starting.to_string(),
                p.queued.to_string(),
                p.target_idle.to_string(),
                p.hits.to_string(),
                p.misses.to_string(),
                hit_rate(p.hits, p.misses),
                millis(p.claim_p50_ms),
                millis(p.claim_p99_ms),
            ]
        })
        .collect();
    let n = Align::Right;
    table(
        &[
            ("NODE", Align::Left),
            ("PROFILE", Align::Left),
            ("IMAGE", Align::Left),
            ("IDLE", n),
            ("BUSY", n),
            ("STARTING", n),
            ("QUEUED", n),
            ("TARGET", n),
            ("HITS", n),
            ("MISSES", n),
            ("HIT RATE", n),
            ("CLAIM P50", n),
            ("CLAIM P99", n),
        ],
        &rows,
    )
}

/// A claim time in milliseconds, `-` before the first claim.
fn millis(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_string(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}ms"),
        Some(ms) if ms < 10_000.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.1}s", ms / 1000.0),
    }
}

/// Hits as a share of all claims, `-` before the first.
fn hit_rate(hits: u64, misses: u64) -> String {
    let total = hits + misses;
    if total == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", hits as f64 * 100.0 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_rate_is_a_share_of_claims() {
        assert_eq!(hit_rate(0, 0), "-");
        assert_eq!(hit_rate(3, 1), "75.0%");
        assert_eq!(hit_rate(0, 5), "0.0%");
        assert_eq!(hit_rate(2, 1), "66.7%");
    }

    #[test]
    fn claim_times_read_at_a_glance() {
        assert_eq!(millis(None), "-");
        assert_eq!(millis(Some(0.4)), "0.40ms");
        assert_eq!(millis(Some(312.4)), "312ms");
        assert_eq!(millis(Some(61_000.0)), "61.0s");
    }

    #[test]
    fn a_pool_row_has_every_count() {
        let t = pools_table(&[PoolView {
            node: "n1".into(),
            profile: "bb".into(),
            image: "warmpool-test/busybox:latest".into(),
            idle: 1,
            busy: 2,
            starting: 3,
            queued: 4,
            target_idle: 5,
            hits: 6,
            misses: 2,
            reuse: 1,
            reused: 0,
            reset_failed: 0,
            jobs_per_container: 1.0,
            claim_p50_ms: Some(0.389),
            claim_p90_ms: Some(0.5),
            claim_p99_ms: Some(47.5),
        }]);
        let mut lines = t.lines();
        assert!(lines.next().unwrap().starts_with("NODE"));
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "n1",
                "bb",
                "warmpool-test/busybox:latest",
                "1",
                "2",
                "3",
                "4",
                "5",
                "6",
                "2",
                "75.0%",
                "0.39ms",
                "48ms"
            ]
        );
    }
}
