//! The idle target: how many containers a profile keeps parked or parking, as a pure
//! function of the demand seen so far. No clock, no I/O, no containers: the caller
//! passes `now` and its measurements in and acts on the number that comes out.
//!
//! # The rule
//!
//! A claim finds a parked container when fewer claims than there are idle containers
//! (parked or parking) arrived during the last *lead time*, the time it takes to park
//! a replacement. So the pool holds as many containers as claims can arrive within one
//! park time, at the confidence the miss budget asks for (default: 0.5 % of claims
//! may miss, half the 1 %, as real traffic clumps more than the model):
//!
//! 1. **The current rate.** The arrival rate is the larger of the rates over a short
//!    window (10 s, so a burst counts within seconds) and a long one (60 s, so a
//!    lull does not). Times the measured park time, that is the expected number of
//!    claims per lead time, `m`. If arrivals were Poisson, a pool of `s` misses with
//!    probability `P(N >= s)`, `N ~ Poisson(m)`; the rule takes the smallest `s` that
//!    keeps that within the budget.
//! 2. **What each claim needed.** At each claim the tracker records the larger of
//!    two sizes: the number of claims within one park time before it (itself
//!    included), which sees clumps no rate window does (the fixture's inter-arrival
//!    CVs are 1.3 to 15); and part 1's size for the 60-s rate. Not for the 10-s rate:
//!    its count is noisy (a steady 1.3 claims/s puts 13 ± 4 claims in 10 s), and
//!    holding its peaks cost 14 % more idle time on the fixture for 0.05 points of
//!    hit rate.
//! 3. **Held for `idle_ttl`.** The target is the larger of part 1 and the
//!    `1 - miss_budget` quantile of the records of the last `idle_ttl` (with fewer than
//!    `1 / miss_budget` records, their maximum), clamped to `[min_idle, max_idle]`. So
//!    it rises at the first claim that shows more demand and falls only once the
//!    demand that raised it is `idle_ttl` old: demand that came once tends to come
//!    back, and a container removed and parked again costs the engine a park.
//!
//! The target counts containers *parked or parking for the pool*: a reconcile loop
//! starts `target - (parked + parking)` parks when that is positive, and removes parked
//! containers when it is negative. Parks started on a job's path (cold starts) are the
//! job's, not the pool's, and do not count.

use std::collections::VecDeque;
use std::time::Duration;

/// Share of claims that may find no parked container, by default: one in 200.
pub const DEFAULT_MISS_BUDGET: f64 = 0.005;
/// Rate window that makes a burst count within seconds.
pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_secs(10);
/// Rate window that keeps a short lull from hiding steady demand.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Park time assumed until one is measured: the engine's rate at concurrency 1 on the
/// 2-core development machine (3.3 parks/s).
pub const DEFAULT_PARK_TIME: Duration = Duration::from_millis(300);
/// Weight of the newest measurement in the park-time average: a few parks are enough
/// to follow the engine when it slows under load, one outlier does not swing it.
const PARK_TIME_WEIGHT: f64 = 0.25;

/// A profile's sizing settings. `min_idle`, `max_idle` and `idle_ttl` are the profile
/// keys; the rest are tuning with defaults that need not be in any config file.
#[derive(Debug, Clone, PartialEq)]
pub struct SizingConfig {
    /// Containers kept parked even when nothing arrives.
    pub min_idle: usize,
    /// Never more than this many parked or parking for the pool.
    pub max_idle: usize,
    /// How long demand is remembered: the target shrinks only once the demand that
    /// raised it is this old.
    pub idle_ttl: Duration,
    /// Share of claims that may find no parked container; sets the confidence of
    /// both halves of the rule.
    pub miss_budget: f64,
    /// The short rate window.
    pub burst_window: Duration,
    /// The long rate window (also the longest park time the rule can account for).
    pub rate_window: Duration,
    /// Park time assumed until [`DemandTracker::on_park_time`] reports one.
    pub initial_park_time: Duration,
}

impl Default for SizingConfig {
    fn default() -> Self {
        Self {
            min_idle: 1,
            max_idle: 8,
            idle_ttl: Duration::from_secs(600),
            miss_budget: DEFAULT_MISS_BUDGET,
            burst_window: DEFAULT_BURST_WINDOW,
            rate_window: DEFAULT_RATE_WINDOW,
            initial_park_time: DEFAULT_PARK_TIME,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SizingError {
    #[error(
        "min_idle ({min_idle}) is above max_idle ({max_idle}); lower min_idle or raise max_idle"
    )]
    MinAboveMax { min_idle: usize, max_idle: usize },
    #[error("miss_budget must be above 0 and below 1, got {0}; 0.005 means one claim in 200 may find no parked container")]
    MissBudget(f64),
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("burst_window ({burst:?}) is longer than rate_window ({rate:?}); the short window must be the shorter one")]
    WindowsSwapped { burst: Duration, rate: Duration },
}

impl SizingConfig {
    /// The profile keys with the default tuning, checked.
    pub fn new(min_idle: usize, max_idle: usize, idle_ttl: Duration) -> Result<Self, SizingError> {
        let config = Self {
            min_idle,
            max_idle,
            idle_ttl,
            ..Self::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Says what is wrong with a hand-built config. [`DemandTracker`] never panics on
    /// one that fails this, but its target is then only clamped, not meaningful.
    pub fn validate(&self) -> Result<(), SizingError> {
        if self.min_idle > self.max_idle {
            return Err(SizingError::MinAboveMax {
                min_idle: self.min_idle,
                max_idle: self.max_idle,
            });
        }
        if !(self.miss_budget > 0.0 && self.miss_budget < 1.0) {
            return Err(SizingError::MissBudget(self.miss_budget));
        }
        for (name, value) in [
            ("idle_ttl", self.idle_ttl),
            ("burst_window", self.burst_window),
            ("rate_window", self.rate_window),
            ("initial_park_time", self.initial_park_time),
        ] {
            if value.is_zero() {
                return Err(SizingError::ZeroDuration(name));
            }
        }
        if self.burst_window > self.rate_window {
            return Err(SizingError::WindowsSwapped {
                burst: self.burst_window,
                rate: self.rate_window,
            });
        }
        Ok(())
    }

    /// `value` within `[min_idle, max_idle]`, without panicking when they are swapped
    /// (then `min_idle` wins: it is the promise made to the profile).
    fn clamp(&self, value: usize) -> usize {
        value.min(self.max_idle).max(self.min_idle)
    }
}

/// What the target is made of at one instant, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandEstimate {
    /// Claims per second: the larger of the two windows' rates.
    pub arrival_rate: f64,
    /// The park time the rule uses: the average of recent measurements, at most
    /// `rate_window`.
    pub park_time: Duration,
    /// Pool size the current rate calls for (part 1 of the rule), before clamping.
    pub from_rate: usize,
    /// Pool size the last `idle_ttl` of claims calls for (parts 2 and 3), before clamping.
    pub held: usize,
    /// The idle target: what the pool should hold now.
    pub target: usize,
}

/// The demand one profile has seen: claim times and park times, trimmed to the
/// windows the rule looks at. Feed it every claim (hit or miss) and every finished
/// park; ask it for the target whenever the pool reconciles.
#[derive(Debug, Clone)]
pub struct DemandTracker {
    config: SizingConfig,
    /// Claim times within `rate_window` of the latest, oldest first.
    arrivals: VecDeque<Duration>,
    /// Per claim within `idle_ttl` of the latest: its time and the pool size it called for.
    recent_needs: VecDeque<(Duration, usize)>,
    /// How many of `recent_needs` call for each size (index = size, capped at `max_idle`),
    /// so the quantile costs `max_idle` steps, not one per claim.
    need_counts: Vec<usize>,
    /// Average park time in seconds.
    park_time_secs: f64,
    /// Latest time seen: times that go backwards are taken as this one.
    latest: Duration,
}

impl DemandTracker {
    pub fn new(config: SizingConfig) -> Self {
        let park_time_secs = config.initial_park_time.as_secs_f64();
        let buckets = config.max_idle.max(config.min_idle) + 1;
        Self {
            config,
            arrivals: VecDeque::new(),
            recent_needs: VecDeque::new(),
            need_counts: vec![0; buckets],
            park_time_secs,
            latest: Duration::ZERO,
        }
    }

    pub fn config(&self) -> &SizingConfig {
        &self.config
    }

    /// A claim arrived at `now` (whether or not it found a parked container).
    pub fn on_arrival(&mut self, now: Duration) {
        let now = now.max(self.latest);
        self.latest = now;
        self.forget_before(now);
        self.arrivals.push_back(now);

        let lead_time = self.lead_time();
        let in_lead_time = count_since(&self.arrivals, now.saturating_sub(lead_time), now);
        let need = in_lead_time
            .max(self.pool_size_for(self.rate_over(self.config.rate_window, now)))
            .min(self.need_counts.len() - 1);
        self.recent_needs.push_back((now, need));
        self.need_counts[need] += 1;
    }

    /// A park (for the pool or on a job's path) took `took` from create to READY.
    pub fn on_park_time(&mut self, took: Duration) {
        self.park_time_secs += PARK_TIME_WEIGHT * (took.as_secs_f64() - self.park_time_secs);
    }

    /// The idle target at `now`: containers to keep parked or parking for the pool.
    pub fn target_idle(&self, now: Duration) -> usize {
        self.estimate(now).target
    }

    /// The target and what it is made of. Pure: `now` only selects which of the
    /// recorded claims still count.
    pub fn estimate(&self, now: Duration) -> DemandEstimate {
        let now = now.max(self.latest);
        let from_rate = self.pool_size_for(self.arrival_rate(now));
        let held = self.held_need(now);
        DemandEstimate {
            arrival_rate: self.arrival_rate(now),
            park_time: self.lead_time(),
            from_rate,
            held,
            target: self.config.clamp(from_rate.max(held)),
        }
    }

    /// Claims per second: the larger of the short and the long window's rate.
    pub fn arrival_rate(&self, now: Duration) -> f64 {
        self.rate_over(self.config.burst_window, now)
            .max(self.rate_over(self.config.rate_window, now))
    }

    /// Claims per second over the `window` before `now`.
    fn rate_over(&self, window: Duration, now: Duration) -> f64 {
        let count = count_since(&self.arrivals, now.saturating_sub(window), now);
        count as f64 / window.as_secs_f64()
    }

    /// The park time, bounded by the long window: the tracker keeps no older claims.
    fn lead_time(&self) -> Duration {
        Duration::try_from_secs_f64(self.park_time_secs)
            .unwrap_or(Duration::MAX)
            .min(self.config.rate_window)
    }

    /// The pool size a Poisson stream of `rate` claims per second needs.
    fn pool_size_for(&self, rate: f64) -> usize {
        let claims_per_lead_time = rate * self.lead_time().as_secs_f64();
        poisson_pool_size(
            claims_per_lead_time,
            self.config.miss_budget,
            self.need_counts.len() - 1,
        )
    }

    /// Parts 2 and 3: the `1 - miss_budget` quantile of the sizes called for within
    /// `idle_ttl` of `now`. Records `forget_before` has not dropped yet are skipped here,
    /// so the answer does not depend on when the tracker was last fed.
    fn held_need(&self, now: Duration) -> usize {
        let since = now.saturating_sub(self.config.idle_ttl);
        let mut counts = self.need_counts.clone();
        let mut live = self.recent_needs.len();
        for &(_, need) in self.recent_needs.iter().take_while(|(at, _)| *at <= since) {
            counts[need] -= 1;
            live -= 1;
        }
        // With fewer than 1 / miss_budget records this allows none above: the maximum.
        let allowed_above = (self.config.miss_budget * live as f64).floor() as usize;
        let mut above = 0;
        for (size, &count) in counts.iter().enumerate().rev() {
            above += count;
            if above > allowed_above {
                return size;
            }
        }
        0
    }

    /// Drops claims no window looks at any more.
    fn forget_before(&mut self, now: Duration) {
        let rate_since = now.saturating_sub(self.config.rate_window);
        while self.arrivals.front().is_some_and(|at| *at <= rate_since) {
            self.arrivals.pop_front();
        }
        let ttl_since = now.saturating_sub(self.config.idle_ttl);
        while let Some(&(at, need)) = self.recent_needs.front() {
            if at > ttl_since {
                break;
            }
            self.recent_needs.pop_front();
            self.need_counts[need] -= 1;
        }
    }
}

/// Claims in `(since, now]` of a time-ordered queue.
fn count_since(arrivals: &VecDeque<Duration>, since: Duration, now: Duration) -> usize {
    let first = arrivals.partition_point(|at| *at <= since);
    let end = arrivals.partition_point(|at| *at <= now);
    end.saturating_sub(first)
}

/// Smallest pool `s` (at most `cap`) such that `P(N >= s) <= miss_budget` for
/// `N ~ Poisson(mean)`: `N` is the number of claims that arrive in the lead time
/// before a given claim, and that claim misses when they have taken all `s`.
/// No demand at all (`mean == 0`) calls for no container.
pub fn poisson_pool_size(mean: f64, miss_budget: f64, cap: usize) -> usize {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    let mut term = (-mean).exp(); // P(N = 0)
    let mut below = 0.0; // P(N < s)
    for s in 0..cap {
        below += term;
        // P(N >= s + 1) = 1 - P(N < s + 1)
        if 1.0 - below <= miss_budget {
            return s + 1;
        }
        term *= mean / (s + 1) as f64;
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn tracker() -> DemandTracker {
        DemandTracker::new(SizingConfig::default())
    }

    #[test]
    fn poisson_pool_size_matches_hand_computed_tails() {
        // m = 0.4: P(N>=2) = 6.2 %, P(N>=3) = 0.79 %, P(N>=4) = 0.078 %.
        assert_eq!(poisson_pool_size(0.4, 0.01, 8), 3);
        assert_eq!(poisson_pool_size(0.4, 0.005, 8), 4);
        // m = 0.003: P(N>=1) = 0.3 %, within 0.5 %: one container is enough.
        assert_eq!(poisson_pool_size(0.003, 0.005, 8), 1);
        assert_eq!(poisson_pool_size(0.0, 0.005, 8), 0);
        assert_eq!(poisson_pool_size(f64::NAN, 0.005, 8), 0);
        assert_eq!(poisson_pool_size(1000.0, 0.005, 8), 8);
    }

    #[test]
    fn no_demand_keeps_min_idle() {
        let sizer = tracker();
        assert_eq!(sizer.target_idle(Duration::ZERO), 1);
        assert_eq!(sizer.target_idle(secs(3600)), 1);
        let zero_min = DemandTracker::new(SizingConfig {
            min_idle: 0,
            ..SizingConfig::default()
        });
        assert_eq!(zero_min.target_idle(secs(5)), 0);
    }

    #[test]
    fn steady_rate_sets_the_poisson_size() {
        // 2 claims/s for a minute, parks of 300 ms: m = 0.6, P(N>=3) = 2.3 %,
        // P(N>=4) = 0.34 %, so 4.
        let mut sizer = tracker();
        for i in 0..120 {
            sizer.on_arrival(ms(500 * i));
        }
        let estimate = sizer.estimate(ms(500 * 119));
        assert!((estimate.arrival_rate - 2.0).abs() < 0.11, "{estimate:?}");
        assert_eq!(estimate.from_rate, 4, "{estimate:?}");
        assert_eq!(estimate.target, 4);
    }

    #[test]
    fn slower_parks_call_for_more_containers() {
        let mut fast = tracker();
        let mut slow = tracker();
        for _ in 0..10 {
            slow.on_park_time(ms(1400));
        }
        for i in 0..120 {
            fast.on_arrival(ms(500 * i));
            slow.on_arrival(ms(500 * i));
        }
        let now = ms(500 * 119);
        assert!(slow.estimate(now).park_time > ms(1300));
        assert!(slow.target_idle(now) > fast.target_idle(now) + 2);
    }

    #[test]
    fn a_clump_raises_the_target_at_once() {
        // Quiet, then five claims within 100 ms: the fifth needed five containers.
        let mut sizer = tracker();
        sizer.on_arrival(secs(100));
        assert_eq!(
            sizer.target_idle(secs(100)),
            2,
            "one claim in 10 s: m = 0.03"
        );
        for i in 0..5 {
            sizer.on_arrival(secs(200) + ms(20 * i));
        }
        assert!(sizer.target_idle(secs(200) + ms(80)) >= 5);
    }

    #[test]
    fn the_target_shrinks_only_after_idle_ttl() {
        let mut sizer = tracker();
        for i in 0..5 {
            sizer.on_arrival(secs(10) + ms(20 * i));
        }
        let raised = sizer.target_idle(secs(11));
        assert!(raised >= 5);
        // Long after the rate windows forgot it, the clump still counts...
        assert_eq!(sizer.target_idle(secs(10 + 599)), raised);
        // ...until it is idle_ttl old.
        assert_eq!(sizer.target_idle(secs(10 + 601)), 1);
    }

    #[test]
    fn one_clump_among_many_claims_fits_the_budget() {
        // Claims every 2 s (m = 0.5/s x 0.3 s = 0.15: P(N>=2) = 1.0 %, P(N>=3) =
        // 0.05 %, so 3), then four within 30 ms: the fourth needed 4.
        let clump = |sizer: &mut DemandTracker, at: Duration| {
            for i in 0..4 {
                sizer.on_arrival(at + ms(10 * i));
            }
        };
        // After 600 claims, the window holds ~300 records: 0.5 % of them (1) may
        // be above the target, so the one record of 4 does not raise it.
        let mut busy = tracker();
        for i in 0..600 {
            busy.on_arrival(secs(2 * i));
        }
        clump(&mut busy, secs(1200));
        assert_eq!(busy.target_idle(secs(1200) + ms(30)), 3);
        // After 20 claims, one record is already more than 0.5 %: the maximum counts.
        let mut quiet = tracker();
        for i in 0..20 {
            quiet.on_arrival(secs(2 * i));
        }
        clump(&mut quiet, secs(40));
        assert_eq!(quiet.target_idle(secs(40) + ms(30)), 4);
    }

    #[test]
    fn the_minute_rate_is_held_the_ten_second_rate_is_not() {
        // Ten claims 0.5 s apart: 1/s over 10 s (m = 0.3: P(N>=2) = 3.7 %, P(N>=3) =
        // 0.36 %, so 3), 1/6 per second over a minute (m = 0.05, so 2), never two
        // within a park time.
        let mut sizer = tracker();
        for i in 0..10 {
            sizer.on_arrival(ms(500 * i));
        }
        assert_eq!(sizer.estimate(ms(4500)).from_rate, 3);
        assert_eq!(sizer.target_idle(ms(4500)), 3);
        // The burst window has passed: the minute's figure is what is remembered.
        assert_eq!(sizer.target_idle(secs(20)), 2);
        assert_eq!(sizer.target_idle(secs(500)), 2);
        assert_eq!(sizer.target_idle(secs(605)), 1);
    }

    #[test]
    fn the_target_stays_within_min_and_max_idle() {
        let config = SizingConfig {
            min_idle: 2,
            max_idle: 3,
            ..SizingConfig::default()
        };
        let mut sizer = DemandTracker::new(config);
        assert_eq!(sizer.target_idle(Duration::ZERO), 2);
        for i in 0..500 {
            sizer.on_arrival(ms(10 * i));
        }
        assert_eq!(sizer.target_idle(ms(5000)), 3);
    }

    #[test]
    fn a_swapped_config_is_reported_and_does_not_panic() {
        assert_eq!(
            SizingConfig::new(5, 2, secs(60)),
            Err(SizingError::MinAboveMax {
                min_idle: 5,
                max_idle: 2
            })
        );
        let swapped = SizingConfig {
            min_idle: 5,
            max_idle: 2,
            ..SizingConfig::default()
        };
        let mut sizer = DemandTracker::new(swapped);
        for i in 0..100 {
            sizer.on_arrival(ms(i));
        }
        assert_eq!(sizer.target_idle(ms(100)), 5);
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let bad_budget = SizingConfig {
            miss_budget: 0.0,
            ..SizingConfig::default()
        };
        assert_eq!(bad_budget.validate(), Err(SizingError::MissBudget(0.0)));
        assert_eq!(
            SizingConfig::new(1, 8, Duration::ZERO),
            Err(SizingError::ZeroDuration("idle_ttl"))
        );
        let swapped_windows = SizingConfig {
            burst_window: secs(120),
            ..SizingConfig::default()
        };
        assert!(matches!(
            swapped_windows.validate(),
            Err(SizingError::WindowsSwapped { .. })
        ));
        assert!(SizingConfig::new(1, 8, secs(600)).is_ok());
    }

    #[test]
    fn times_that_go_backwards_count_as_the_latest() {
        let mut sizer = tracker();
        sizer.on_arrival(secs(100));
        sizer.on_arrival(secs(50));
        assert_eq!(sizer.estimate(secs(100)).arrival_rate, 0.2);
        // Asking about the past answers for the latest time seen.
        assert_eq!(sizer.target_idle(secs(1)), sizer.target_idle(secs(100)));
    }

    #[test]
    fn old_claims_stop_counting_without_a_new_claim_to_trim_them() {
        let mut sizer = tracker();
        for i in 0..50 {
            sizer.on_arrival(ms(100 * i));
        }
        assert!(sizer.target_idle(secs(5)) > 1);
        // Nothing fed since: the queues still hold the claims, the answer ignores them.
        assert_eq!(sizer.target_idle(secs(4000)), 1);
        assert_eq!(sizer.estimate(secs(4000)).arrival_rate, 0.0);
    }
}
