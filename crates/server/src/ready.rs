//! `/readyz`: whether this node can take work now. That is the engine
//! answering and the store taking writes (this node's heartbeat, a write,
//! stored lately), and the node not shutting down. Pool levels are in the
//! body for people, but never decide: a pool dipping below `min_idle` under
//! load is the pool working, and a load balancer dropping the node for it
//! would make things worse.

use crate::service::Service;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long one engine answer stands for every probe.
const PROBE_FRESH: Duration = Duration::from_secs(1);
/// How long the engine may take to answer before it counts as unreachable: a
/// busy engine answers a version query well within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct EngineProbe {
    at: Instant,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, in a sentence (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub node: String,
    pub engine: EngineView,
    pub store: StoreView,
    pub pools: Vec<PoolLevel>,
}

#[derive(Debug, Serialize)]
pub struct EngineView {
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StoreView {
    /// A write (the heartbeat) was stored within three heartbeat intervals.
    pub writable: bool,
    /// This node holds its lease (it takes jobs).
    pub leased: bool,
    /// Seconds since the last stored heartbeat (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_write_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct PoolLevel {
    pub profile: String,
    pub idle: usize,
    pub min_idle: usize,
    pub target_idle: usize,
    pub busy: usize,
    pub starting: usize,
    pub queued: usize,
    /// The pool saw the engine go and waits for it.
    pub engine_down: bool,
}

/// The engine's answer, asked at most once per [`PROBE_FRESH`].
async fn engine(svc: &Service) -> Option<String> {
    let mut last = svc.engine_probe.lock().await;
    if let Some(p) = last.as_ref().filter(|p| p.at.elapsed() < PROBE_FRESH) {
        return p.error.clone();
    }
    let runtime = svc.pools.runtime().clone();
    let error = warmpool_runtime::ping(runtime.as_ref(), PROBE_TIMEOUT)
        .await
        .err();
    *last = Some(EngineProbe {
        at: Instant::now(),
        error: error.clone(),
    });
    error
}

pub async fn readiness(svc: &Service) -> Readiness {
    let engine_error = engine(svc).await;
    let leased = svc.leased.load(Ordering::SeqCst);
    let last_write = *crate::lock(&svc.lease_ok);
    let since = last_write.map(|t| t.elapsed());
    // One missed beat is a slow store, not a broken one.
    let writable = leased && since.is_some_and(|s| s <= svc.config.cluster.heartbeat * 3);
    let stopping = svc.stopping().is_cancelled();
    let reason = if stopping {
        Some("this node is shutting down".to_string())
    } else if let Some(e) = &engine_error {
        Some(format!("the engine is not reachable: {e}"))
    } else if !leased {
        Some(
            "this node does not hold its lease in the job store (starting, or it lost the store)"
                .to_string(),
        )
    } else if !writable {
        Some("the job store has taken no write from this node lately".to_string())
    } else {
        None
    };
    let pools = svc
        .pools
        .iter()
        .map(|(name, pool)| {
            let s = pool.stats();
            PoolLevel {
                profile: name.clone(),
                idle: s.idle,
                min_idle: pool.profile().profile.min_idle,
                target_idle: s.target_idle,
                busy: s.busy,
                starting: s.starting,
                queued: s.queued,
                engine_down: s.engine_down,
            }
        })
        .collect();
    Readiness {
        ready: reason.is_none(),
        reason,
        node: svc.node().to_string(),
        engine: EngineView {
            reachable: engine_error.is_none(),
            error: engine_error,
        },
        store: StoreView {
            writable,
            leased,
            last_write_seconds: since.map(|s| (s.as_secs_f64() * 1000.0).round() / 1000.0),
        },
        pools,
    }
}
