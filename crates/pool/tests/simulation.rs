//! The whole simulation over the OrcBench fixture trace and the synthetic scenarios:
//! it is deterministic, and the adaptive policy does what `docs/pool-sizing.md` says.
//! Pure computation on simulated time; the fixture is the only file it reads.

use std::path::PathBuf;
use std::sync::OnceLock;
use warmpool_pool::sim::{
    compare, compare_reuse, parse_trace, report, reuse_report, run_trace_file, simulate,
    synthetic_settings, synthetic_workloads, trace_settings, Comparison, Policy, ReuseComparison,
    SimOutcome, SimSettings, Workload, GOAL_HIT_RATE,
};

/// The fixture trace, in the repository (`tests/fixtures/traces`, copied from the
/// team's `shared/fixtures/traces` with its README: source and licence). A missing
/// fixture fails the tests: a skipped check would read as a passed one.
fn fixture_path() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/traces/orcbench-seed7-15fn.csv");
    assert!(path.is_file(), "fixture trace missing: {}", path.display());
    path
}

fn fixture_workloads() -> &'static [Workload] {
    static WORKLOADS: OnceLock<Vec<Workload>> = OnceLock::new();
    WORKLOADS.get_or_init(|| {
        let path = fixture_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        let trace = parse_trace(&text, &path.display().to_string())
            .unwrap_or_else(|error| panic!("{error}"));
        trace.workloads
    })
}

/// Every policy on every function of the fixture, computed once for all tests.
fn fixture_comparisons() -> &'static [Comparison] {
    static COMPARISONS: OnceLock<Vec<Comparison>> = OnceLock::new();
    COMPARISONS.get_or_init(|| compare(fixture_workloads(), &trace_settings()))
}

fn synthetic_comparisons() -> &'static [Comparison] {
    static COMPARISONS: OnceLock<Vec<Comparison>> = OnceLock::new();
    COMPARISONS.get_or_init(|| compare(&synthetic_workloads(), &synthetic_settings()))
}

fn adaptive(comparison: &Comparison) -> &SimOutcome {
    comparison
        .adaptive()
        .unwrap_or_else(|| panic!("{}: no adaptive run", comparison.workload))
}

#[test]
fn the_fixture_has_its_twelve_functions() {
    let names: Vec<&str> = fixture_workloads()
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    let expected: Vec<String> = (0..12).map(|i| format!("fn{i:02}")).collect();
    assert_eq!(names, expected);
    let claims: usize = fixture_workloads().iter().map(|w| w.arrivals.len()).sum();
    assert_eq!(claims, 51_208);
}

#[test]
fn every_claim_is_a_hit_a_cold_start_queued_or_refused() {
    for comparison in fixture_comparisons().iter().chain(synthetic_comparisons()) {
        for (policy, outcome) in &comparison.runs {
            assert!(outcome.timed_out <= outcome.queued);
            assert_eq!(
                outcome.hits + outcome.cold_starts + outcome.queued + outcome.refused,
                comparison.arrivals,
                "{} under {}",
                comparison.workload,
                policy.label()
            );
        }
    }
}

#[test]
fn runs_are_deterministic() {
    let settings = trace_settings();
    let again: Vec<Workload> = fixture_workloads()
        .iter()
        .filter(|w| w.name == "fn06" || w.name == "fn11")
        .cloned()
        .collect();
    for comparison in compare(&again, &settings) {
        let first = fixture_comparisons()
            .iter()
            .find(|c| c.workload == comparison.workload)
            .expect("same function in the first run");
        assert_eq!(&comparison, first, "bit for bit");
    }
    let bursty = &synthetic_workloads()[0];
    let limits = synthetic_settings().limits;
    let engine = synthetic_settings().engine;
    let policy = Policy::Adaptive(synthetic_settings().sizing);
    assert_eq!(
        simulate(bursty, &limits, &engine, &policy),
        simulate(bursty, &limits, &engine, &policy)
    );
}

#[test]
fn adaptive_reaches_the_hit_goal_wherever_a_fixed_pool_can() {
    // On the fixture: every function for which some fixed size up to max_idle hits
    // 99 % (found with hindsight), the adaptive policy hits 99 % without being told.
    for comparison in fixture_comparisons() {
        if comparison.cheapest_fixed.is_none() {
            continue;
        }
        let rate = adaptive(comparison).hit_rate();
        assert!(
            rate >= GOAL_HIT_RATE,
            "{}: adaptive hit {:.2} %",
            comparison.workload,
            rate * 100.0
        );
    }
    // The two synthetic scenarios whose demand moves slowly, too.
    for comparison in synthetic_comparisons()
        .iter()
        .filter(|c| c.workload != "bursty")
    {
        assert!(
            adaptive(comparison).hit_rate() >= GOAL_HIT_RATE,
            "{}",
            comparison.workload
        );
    }
}

#[test]
fn no_fixed_pool_as_cheap_as_adaptive_hits_more() {
    for comparison in fixture_comparisons()
        .iter()
        .chain(synthetic_comparisons())
        .filter(|c| c.within_engine_reach)
    {
        let ours = adaptive(comparison);
        let fixed_runs = comparison
            .runs
            .iter()
            .filter(|(policy, _)| matches!(policy, Policy::Fixed(_)))
            .map(|(_, outcome)| outcome)
            .chain(
                comparison
                    .cheapest_fixed
                    .as_ref()
                    .map(|(_, outcome)| outcome),
            );
        for fixed in fixed_runs {
            if fixed.idle_container_secs <= ours.idle_container_secs {
                assert!(
                    ours.hit_rate() >= fixed.hit_rate(),
                    "{}: a fixed pool with {:.0} idle container-s hit {:.2} %, adaptive with \
                     {:.0} hit {:.2} %",
                    comparison.workload,
                    fixed.idle_container_secs,
                    fixed.hit_rate() * 100.0,
                    ours.idle_container_secs,
                    ours.hit_rate() * 100.0
                );
            }
        }
    }
}

#[test]
fn adaptive_beats_openwhisk_on_both_counts_where_the_engine_keeps_up() {
    let (mut ours, mut theirs) = ((0, 0.0), (0, 0.0));
    for comparison in fixture_comparisons()
        .iter()
        .filter(|c| c.within_engine_reach)
    {
        let adaptive = adaptive(comparison);
        let openwhisk = comparison
            .outcome(|policy| matches!(policy, Policy::OpenWhisk(_)))
            .expect("an OpenWhisk run");
        ours = (
            ours.0 + adaptive.hits,
            ours.1 + adaptive.idle_container_secs,
        );
        theirs = (
            theirs.0 + openwhisk.hits,
            theirs.1 + openwhisk.idle_container_secs,
        );
    }
    assert!(ours.0 > theirs.0, "hits {} vs {}", ours.0, theirs.0);
    assert!(ours.1 < theirs.1, "idle {:.0} vs {:.0}", ours.1, theirs.1);
}

#[test]
fn beyond_the_engines_reach_no_policy_helps() {
    // fn10 peaks near 20 claims/s, the engine parks at most 5.7/s: every policy
    // misses nearly everything, and says so.
    let fn10 = fixture_comparisons()
        .iter()
        .find(|c| c.workload == "fn10")
        .expect("fn10 in the fixture");
    assert!(!fn10.within_engine_reach);
    for (policy, outcome) in &fn10.runs {
        assert!(outcome.hit_rate() < 0.05, "{}", policy.label());
    }
    let reachable = fixture_comparisons()
        .iter()
        .filter(|c| c.within_engine_reach)
        .count();
    assert_eq!(reachable, 11);
}

#[test]
fn the_report_has_a_row_per_function_and_the_totals() {
    let report = report("fixture", &trace_settings(), fixture_comparisons());
    for row in [
        "| fn00 |",
        "| fn11 |",
        "| **all** |",
        "| **all within the engine's reach** |",
    ] {
        assert!(report.contains(row), "no `{row}` in:\n{report}");
    }
    assert!(report.contains("The adaptive policy in detail"));
}

#[test]
fn run_trace_file_reads_a_file_and_reports_odd_runtimes() {
    let path = std::env::temp_dir().join(format!("warmpool-sim-{}.csv", std::process::id()));
    let trace = "function,arrival_s,runtime_ms\na,0.5,100\na,1.0,-3\nb,2.0,50\n";
    std::fs::write(&path, trace).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let report = run_trace_file(&path);
    let _ = std::fs::remove_file(&path);
    let report = report.unwrap_or_else(|error| panic!("{error}"));
    assert!(report.contains("| a | 2 |"), "{report}");
    assert!(report.contains("| b | 1 |"), "{report}");
    assert!(
        report.contains("Runtimes below zero in the trace, run as zero: 1."),
        "{report}"
    );
}

#[test]
fn a_missing_trace_file_names_the_path() {
    let missing = PathBuf::from("/nonexistent/trace.csv");
    let error = run_trace_file(&missing).expect_err("no such file");
    assert!(
        error.to_string().contains("/nonexistent/trace.csv"),
        "{error}"
    );
}

#[test]
fn beyond_the_engines_reach_the_shipped_queue_limits_hold() {
    // The simulation runs the pool's own rules: fn10's bursts fill the queue to
    // max_queue and the rest is refused at once, as the real pool answers "full";
    // no claim waits longer than max_wait.
    let limits = trace_settings().limits;
    let fn10 = fixture_comparisons()
        .iter()
        .find(|c| c.workload == "fn10")
        .expect("fn10 in the fixture");
    for (policy, outcome) in &fn10.runs {
        assert!(outcome.refused > 0, "{}: {outcome:?}", policy.label());
        assert!(
            outcome.max_claim_wait <= limits.max_wait,
            "{}: {outcome:?}",
            policy.label()
        );
    }
    // Where the engine keeps up, nothing is refused and nothing times out.
    for comparison in fixture_comparisons()
        .iter()
        .chain(synthetic_comparisons())
        .filter(|c| c.within_engine_reach)
    {
        let ours = adaptive(comparison);
        assert_eq!(
            (ours.refused, ours.timed_out),
            (0, 0),
            "{}",
            comparison.workload
        );
    }
}

/// Every count of every run, one line per (workload, policy), idle to the bit.
fn outcome_lines(comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    for comparison in comparisons {
        for (policy, o) in &comparison.runs {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{:016x},{},{}\n",
                comparison.workload,
                policy.label(),
                o.arrivals,
                o.hits,
                o.cold_starts,
                o.queued,
                o.refused,
                o.timed_out,
                o.replaced,
                o.shrunk,
                o.parks,
                o.idle_container_secs.to_bits(),
                o.p99_claim_wait.as_nanos(),
                o.max_claim_wait.as_nanos(),
            ));
        }
        if let Some((size, o)) = &comparison.cheapest_fixed {
            out.push_str(&format!(
                "{},cheapest {size},{}\n",
                comparison.workload, o.hits
            ));
        }
    }
    out
}

#[test]
fn single_use_runs_are_those_of_before_reuse() {
    // Regression: with reuse 1 (the default) every run of the fixture and the
    // synthetic scenarios counts exactly what the simulator counted before reuse
    // was modelled (tests/golden/single-use-runs.csv, written by the simulator of
    // commit 519d5d4; WARMPOOL_BLESS=1 writes it again).
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/single-use-runs.csv");
    let now = outcome_lines(fixture_comparisons()) + &outcome_lines(synthetic_comparisons());
    if std::env::var_os("WARMPOOL_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().expect("a parent"))
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(&golden, &now).unwrap_or_else(|error| panic!("{error}"));
    }
    let before = std::fs::read_to_string(&golden)
        .unwrap_or_else(|error| panic!("{}: {error}", golden.display()));
    for (line, (was, is)) in before.lines().zip(now.lines()).enumerate() {
        assert_eq!(was, is, "line {}", line + 1);
    }
    assert_eq!(before.lines().count(), now.lines().count());
}

/// Reuse 1 and 10 under every policy of `settings`, on every workload.
fn reuse_runs(
    workloads: &[Workload],
    settings: &SimSettings,
) -> Vec<(Policy, Vec<ReuseComparison>)> {
    settings
        .policies()
        .into_iter()
        .map(|policy| {
            let runs = compare_reuse(workloads, settings, &policy, &[1, 10]);
            (policy, runs)
        })
        .collect()
}

fn fixture_reuse_runs() -> &'static [(Policy, Vec<ReuseComparison>)] {
    static RUNS: OnceLock<Vec<(Policy, Vec<ReuseComparison>)>> = OnceLock::new();
    RUNS.get_or_init(|| reuse_runs(fixture_workloads(), &trace_settings()))
}

fn synthetic_reuse_runs() -> &'static [(Policy, Vec<ReuseComparison>)] {
    static RUNS: OnceLock<Vec<(Policy, Vec<ReuseComparison>)>> = OnceLock::new();
    RUNS.get_or_init(|| reuse_runs(&synthetic_workloads(), &synthetic_settings()))
}

fn at(comparison: &ReuseComparison, reuse: usize) -> &SimOutcome {
    comparison
        .at(reuse)
        .unwrap_or_else(|| panic!("{}: no run at reuse {reuse}", comparison.workload))
}

#[test]
fn reuse_1_is_single_use() {
    // compare_reuse at 1 runs exactly what compare runs.
    for (runs, comparisons) in [
        (fixture_reuse_runs(), fixture_comparisons()),
        (synthetic_reuse_runs(), synthetic_comparisons()),
    ] {
        for (policy, by_workload) in runs {
            for (reuse, single) in by_workload.iter().zip(comparisons) {
                let expected = single
                    .outcome(|p| p == policy)
                    .expect("the policy in the comparison");
                assert_eq!(
                    at(reuse, 1),
                    expected,
                    "{} {}",
                    reuse.workload,
                    policy.label()
                );
                assert_eq!(expected.reused, 0);
            }
        }
    }
}

#[test]
fn reuse_never_lowers_hits() {
    for (policy, by_workload) in fixture_reuse_runs().iter().chain(synthetic_reuse_runs()) {
        for comparison in by_workload {
            let (single, reused) = (at(comparison, 1), at(comparison, 10));
            assert!(
                reused.hits >= single.hits,
                "{} under {}: {} hits at reuse 10, {} at reuse 1",
                comparison.workload,
                policy.label(),
                reused.hits,
                single.hits
            );
        }
    }
}

#[test]
fn a_container_serves_at_most_reuse_jobs_on_the_fixture() {
    // Each container is parked once (a park, or parked before the trace: at most
    // max_idle) and serves at most `reuse` jobs, returning after each but its last.
    let settings = trace_settings();
    for (policy, by_workload) in fixture_reuse_runs() {
        for comparison in by_workload {
            for (reuse, o) in &comparison.runs {
                let containers = o.parks + settings.limits.max_idle;
                let served = o.hits + o.cold_starts + o.queued - o.timed_out;
                let what = format!(
                    "{} under {} at reuse {reuse}",
                    comparison.workload,
                    policy.label()
                );
                assert!(served <= reuse * containers, "{what}: {o:?}");
                assert!(o.reused <= (reuse - 1) * containers, "{what}: {o:?}");
                assert!(o.reused <= served, "{what}: {o:?}");
            }
        }
    }
}

#[test]
fn reuse_raises_hits_markedly_on_the_busiest_function() {
    // The busiest function of the fixture (most claims) comes faster than the
    // engine parks in its bursts. Single use: every hit takes a container some park
    // made (or one parked before the trace), so hits <= parks + max_idle, and
    // the engine's rate bounds the parks. Reused ten times, a container serves up
    // to ten claims per park: hits go past what any single-use pool could get
    // from as many parks as this one made.
    let settings = trace_settings();
    let (_, adaptive) = fixture_reuse_runs()
        .iter()
        .find(|(policy, _)| matches!(policy, Policy::Adaptive(_)))
        .expect("an adaptive run");
    let busiest = adaptive
        .iter()
        .max_by_key(|c| c.arrivals)
        .expect("a function");
    let (single, reused) = (at(busiest, 1), at(busiest, 10));
    assert!(
        single.hits <= single.parks + settings.limits.max_idle,
        "{single:?}"
    );
    assert!(
        reused.hits > single.parks + settings.limits.max_idle,
        "{}: {} hits at reuse 10 with {} parks; at reuse 1 {} hits with {} parks",
        busiest.workload,
        reused.hits,
        reused.parks,
        single.hits,
        single.parks
    );
    // And misses at least halve.
    let misses = |o: &SimOutcome| o.arrivals - o.hits;
    assert!(
        2 * misses(reused) <= misses(single),
        "{single:?} vs {reused:?}"
    );
}

#[test]
fn the_reuse_report_puts_each_reuse_beside_single_use() {
    let settings = trace_settings();
    let policy = Policy::Adaptive(settings.sizing.clone());
    let (_, adaptive) = fixture_reuse_runs()
        .iter()
        .find(|(p, _)| *p == policy)
        .expect("an adaptive run");
    let report = reuse_report("fixture", &settings, &policy, adaptive);
    for row in ["| fn00 | 164 |", "| fn11 |", "| **all** |"] {
        assert!(report.contains(row), "no `{row}` in:\n{report}");
    }
    assert_eq!(report.matches("| **all** |").count(), 2, "{report}");
    let fn00_rows = report.lines().filter(|l| l.starts_with("| fn00 |")).count();
    assert_eq!(fn00_rows, 2, "{report}");
}
