//! `/metrics`: the pools' gauges and counters and the jobs' outcomes, as
//! Prometheus text. Reads counters; changes nothing.

use crate::service::Service;
use std::fmt::Write;
use std::sync::atomic::Ordering;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(svc: &Service) -> String {
    let mut out = String::new();
    let gauges: [(&str, &str); 5] = [
        ("warmpool_pool_idle", "Parked containers ready for a job."),
        ("warmpool_pool_busy", "Containers running a job."),
        ("warmpool_pool_starting", "Containers being parked."),
        ("warmpool_pool_queued", "Jobs waiting for a container."),
        ("warmpool_pool_target_idle", "The adaptive idle target."),
    ];
    let stats: Vec<_> = svc
        .pools
        .iter()
        .map(|(_, p)| (p.stats(), p.clone()))
        .collect();
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (s, _) in &stats {
            let v = [s.idle, s.busy, s.starting, s.queued, s.target_idle][i];
            let _ = writeln!(out, "{name}{{profile=\"{}\"}} {v}", escape(&s.profile));
        }
    }
    let counters: [(&str, &str); 8] = [
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
    out
}
