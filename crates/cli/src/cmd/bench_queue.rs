//! `warmpool bench --queue`: how fast nodes take jobs from the shared queue.
//! `--jobs` jobs are queued, then taken (`claim_next`) as fast as possible by
//! one node, and again by `--nodes` nodes at once, each node with a store of
//! its own (PostgreSQL: its own connections; SQLite: one store, as one host
//! has), in one run. The jobs are queued under a profile of the bench's own
//! and ended `cancelled` afterwards, so a production store is left with
//! nothing open.

use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use warmpool_core::{Finish, JobState};
use warmpool_store::{JobStore, NewJob};

#[derive(Serialize)]
pub struct QueueFigures {
    pub backend: String,
    pub jobs: usize,
    pub nodes: usize,
    pub one_node_claims_per_sec: f64,
    pub many_nodes_claims_per_sec: f64,
    pub ratio: f64,
}

/// Queue `jobs` jobs, then take them all with one claimer per store; claims/s.
async fn round(stores: &[Arc<dyn JobStore>], jobs: usize, tag: &str) -> anyhow::Result<f64> {
    let profile = format!(
        "bench-queue-{tag}-{}",
        warmpool_core::labels::unique_suffix()
    );
    let new = NewJob {
        profile: profile.clone(),
        args: vec!["true".into()],
        ..NewJob::default()
    };
    for _ in 0..jobs {
        stores[0].insert(&new).await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let (store, profile) = (store.clone(), profile.clone());
        tasks.push(tokio::spawn(async move {
            let node = format!("bench-queue-node{i}");
            let mut taken = Vec::new();
            while let Some(q) = store.claim_next(&profile, &node, true, false).await? {
                taken.push(q.id);
            }
            anyhow::Ok(taken)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let took = started.elapsed();
    anyhow::ensure!(all.len() == jobs, "{} of {jobs} jobs were taken", all.len());
    let mut seen = std::collections::HashSet::new();
    anyhow::ensure!(
        all.iter().all(|id| seen.insert(id.clone())),
        "a job was taken twice"
    );
    let end = Finish::without_exit(JobState::Cancelled, "a job of warmpool bench --queue");
    for id in &all {
        stores[0].finish(id, &end).await?;
    }
    Ok(jobs as f64 / took.as_secs_f64())
}

/// One node, then `nodes` nodes; `open` gives each node its store.
pub async fn measure(
    backend: &str,
    open: impl Fn() -> futures_util::future::BoxFuture<'static, anyhow::Result<Arc<dyn JobStore>>>,
    share_one: bool,
    nodes: usize,
    jobs: usize,
) -> anyhow::Result<QueueFigures> {
    anyhow::ensure!(nodes >= 2, "--nodes must be at least 2");
    let first = open().await?;
    let mut stores = vec![first.clone()];
    for _ in 1..nodes {
        stores.push(if share_one {
            first.clone()
        } else {
            open().await?
        });
    }
    // A warm-up round, not counted (connections, caches, statements).
    round(&stores[..1], jobs.min(100), "warmup").await?;
    let one = round(&stores[..1], jobs, "one").await?;
    let many = round(&stores, jobs, "many").await?;
    Ok(QueueFigures {
        backend: backend.to_string(),
        jobs,
        nodes,
        one_node_claims_per_sec: one,
        many_nodes_claims_per_sec: many,
        ratio: many / one,
    })
}
