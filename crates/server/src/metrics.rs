//! `/metrics`: the pools' gauges and counters and the jobs' outcomes, as
//! Prometheus text. Reads counters; changes nothing.

use crate::service::Service;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the histogram buckets: from a warm hand-over (ms)
/// to a long job (minutes).
const BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A Prometheus histogram of durations, lock-free.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The `q` quantile (0..=1), interpolated within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` before the first observation or past
    /// the last bucket's bound (then the bound is a floor, not an estimate).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, le) in BUCKETS.iter().enumerate() {
            let upto = self.buckets[i].load(Ordering::Relaxed);
            if upto as f64 >= rank && upto > below {
                let within = (rank - below as f64) / (upto - below) as f64;
                return Some(Duration::from_secs_f64(
                    lower + (le - lower) * within.max(0.0),
                ));
            }
            below = upto;
            lower = *le;
        }
        None
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

/// The service's histograms.
#[derive(Default)]
pub struct Histograms {
    pub claim: Histogram,
    pub first_output: Histogram,
    pub duration: Histogram,
    /// Time to claim, per profile (for `GET /v1/pools` and `warmpool status`).
    pub claim_by_profile: std::collections::BTreeMap<String, Histogram>,
}

impl Histograms {
    /// Histograms with one claim histogram per profile.
    pub fn for_profiles<'a>(profiles: impl IntoIterator<Item = &'a String>) -> Histograms {
        Histograms {
            claim_by_profile: profiles
                .into_iter()
                .map(|p| (p.clone(), Histogram::default()))
                .collect(),
            ..Histograms::default()
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(svc: &Service) -> String {
    let mut out = String::new();
    let gauges: [(&str, &str); 6] = [
        ("warmpool_pool_idle", "Parked containers ready for a job."),
        ("warmpool_pool_busy", "Containers running a job."),
        ("warmpool_pool_starting", "Containers being parked."),
        ("warmpool_pool_queued", "Jobs waiting for a container."),
        ("warmpool_pool_target_idle", "The adaptive idle target."),
        (
            "warmpool_pool_engine_down",
            "1 while the pool cannot reach its engine (jobs wait), else 0.",
        ),
    ];
    let stats: Vec<_> = svc
        .pools
        .iter()
        .map(|(_, p)| (p.stats(), p.clone()))
        .collect();
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (s, _) in &stats {
            let v = [
                s.idle,
                s.busy,
                s.starting,
                s.queued,
                s.target_idle,
                usize::from(s.engine_down),
            ][i];
            let _ = writeln!(out, "{name}{{profile=\"{}\"}} {v}", escape(&s.profile));
        }
    }
    let counters: [(&str, &str); 10] = [
        (
            "warmpool_pool_hits_total",
            "Claims that found a parked container.",
        ),
        (
            "warmpool_pool_misses_total",
            "Claims that started a container or queued.",
        ),
        ("warmpool_pool_queued_total", "Claims that queued."),
        (
            "warmpool_pool_containers_started_total",
            "Containers parked.",
        ),
        (
            "warmpool_pool_containers_failed_total",
            "Parks that failed.",
        ),
        (
            "warmpool_pool_containers_replaced_total",
            "Parked containers replaced (stale image or max_age).",
        ),
        (
            "warmpool_pool_containers_reaped_total",
            "Parked containers that died.",
        ),
        (
            "warmpool_pool_retried_total",
            "Jobs moved to another container before starting.",
        ),
        (
            "warmpool_pool_reused_total",
            "Containers reset by their gate after a job and parked again (reuse).",
        ),
        (
            "warmpool_pool_reset_failed_total",
            "Resets that failed; the container was removed.",
        ),
    ];
    for (i, (name, help)) in counters.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (s, p) in &stats {
            let c = p.counters();
            let v = [
                &c.hits,
                &c.misses,
                &c.queued,
                &c.started,
                &c.failed,
                &c.replaced,
                &c.reaped,
                &c.retried,
                &c.reused,
                &c.reset_failed,
            ][i]
                .load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{profile=\"{}\"}} {v}", escape(&s.profile));
        }
    }
    // Time to claim and to park, as running sums and counts (a summary without quantiles).
    let _ = writeln!(out, "# HELP warmpool_pool_claim_seconds Time from a claim to a container in hand.\n# TYPE warmpool_pool_claim_seconds summary");
    for (s, p) in &stats {
        let c = p.counters();
        let _ = writeln!(
            out,
            "warmpool_pool_claim_seconds_sum{{profile=\"{0}\"}} {1}\nwarmpool_pool_claim_seconds_count{{profile=\"{0}\"}} {2}",
            escape(&s.profile),
            c.claim_time_us.load(Ordering::Relaxed) as f64 / 1e6,
            c.claims.load(Ordering::Relaxed)
        );
    }
    let h = &svc.histograms;
    h.claim.render(
        &mut out,
        "warmpool_claim_seconds",
        "Time from a job's claim to a container in hand.",
    );
    h.first_output.render(
        &mut out,
        "warmpool_first_output_seconds",
        "Time from a job's hand-over to its first output.",
    );
    h.duration.render(
        &mut out,
        "warmpool_job_duration_seconds",
        "Time from a job's hand-over to its exit.",
    );
    let _ = writeln!(
        out,
        "# HELP warmpool_jobs_total Jobs that ended, by state.\n# TYPE warmpool_jobs_total counter"
    );
    let by_state = svc
        .outcomes
        .by_state
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut states: Vec<_> = by_state.into_iter().collect();
    states.sort();
    for (state, n) in states {
        let _ = writeln!(out, "warmpool_jobs_total{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP warmpool_jobs_accepted_total Jobs accepted.\n# TYPE warmpool_jobs_accepted_total counter\nwarmpool_jobs_accepted_total {}",
        svc.outcomes.accepted.load(Ordering::Relaxed)
    );
    cluster(svc, &mut out);
    out
}

/// This node in the cluster: its lease, the jobs it took from the shared
/// queue, the nodes it saw at its last heartbeat, the lost nodes it took over.
fn cluster(svc: &Service, out: &mut String) {
    let c = &svc.cluster_counters;
    let _ = writeln!(
        out,
        "# HELP warmpool_node_leased 1 while this node holds its lease (it takes jobs), 0 after it fenced itself.
# TYPE warmpool_node_leased gauge
warmpool_node_leased {}",
        u8::from(svc.leased.load(Ordering::Relaxed))
    );
    let _ = writeln!(
        out,
        "# HELP warmpool_jobs_taken_total Jobs this node took from the shared queue.
# TYPE warmpool_jobs_taken_total counter
warmpool_jobs_taken_total {}",
        c.taken.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP warmpool_nodes_taken_over_total Lost nodes whose jobs this node took over.
# TYPE warmpool_nodes_taken_over_total counter
warmpool_nodes_taken_over_total {}",
        c.taken_over.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP warmpool_heartbeat_failures_total Heartbeats that could not be stored.
# TYPE warmpool_heartbeat_failures_total counter
warmpool_heartbeat_failures_total {}",
        c.heartbeat_failures.load(Ordering::Relaxed)
    );
    let (nodes, lost) = {
        let view = crate::lock(&svc.cluster);
        (view.nodes, view.lost)
    };
    let _ = writeln!(
        out,
        "# HELP warmpool_cluster_nodes Nodes of the store as of this node's last heartbeat.
# TYPE warmpool_cluster_nodes gauge
warmpool_cluster_nodes{{lost=\"false\"}} {}
warmpool_cluster_nodes{{lost=\"true\"}} {lost}",
        nodes - lost
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Option<Duration>) -> Option<f64> {
        d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
    }

    #[test]
    fn quantiles_interpolate_within_buckets_as_prometheus_does() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 100 claims: 90 of 0.3 ms (bucket 0.25..0.5 ms), 10 of 40 ms (25..50 ms).
        for _ in 0..90 {
            h.observe(Duration::from_micros(300));
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(40));
        }
        // Rank 50 of the 90 in 0.25..0.5 ms: 0.25 + 0.25 * 50/90.
        assert_eq!(ms(h.quantile(0.5)), Some(0.389));
        assert_eq!(ms(h.quantile(0.9)), Some(0.5));
        // Rank 99: 9 of the 10 in 25..50 ms.
        assert_eq!(ms(h.quantile(0.99)), Some(47.5));
        assert_eq!(h.quantile(1.5), None);
        // Past the last bound: no estimate.
        let slow = Histogram::default();
        slow.observe(Duration::from_secs(600));
        assert_eq!(slow.quantile(0.5), None);
    }
}
