//! A deterministic, trace-driven simulation of one profile's pool under a sizing
//! policy, on simulated time. It is a second driver of the shipped rules
//! ([`crate::decide`]: claim, reconcile, freed slot, finished park, `max_queue`,
//! `max_wait`, `max_age`) and adds only what the engine would do: the park latency
//! under concurrent parks, jobs' runtimes, and the clock. It reads a trace file at
//! most; it must not touch the engine or a clock, nor re-decide any pool rule.
//!
//! The model (what [`simulate`] assumes, in full in `docs/pool-sizing.md`):
//!
//! - **Engine.** Parks share the engine as processor sharing: with `k` parks in
//!   flight the engine completes [`EngineModel::parks_per_sec`]`(k)` parks a second,
//!   each park progressing at `1/k` of that. The measured rates make one park take
//!   0.30 s alone and 0.44, 0.70, 1.43 s with 2, 4, 8 in flight. Each profile has the
//!   engine to itself; removing a container and running a job cost it nothing.
//! - **Pool.** Whatever wakes the real pool (a claim, a finished job, a finished
//!   park) schedules a reconcile [`decide::REPLENISH_DELAY`] later, and it
//!   reconciles at least every [`decide::RECONCILE_EVERY`], with the target of the
//!   policy under test. Every decision is the real pool's, from [`crate::decide`].
//! - **Jobs.** A job keeps its container for its runtime; then the container is gone,
//!   unless the profile reuses containers (`reuse` N above 1) and this one has served
//!   fewer than N jobs: then its gate resets it for [`EngineModel::reset`] (the slot
//!   stays taken, so it counts against `max_containers`), and it goes to the oldest
//!   waiter or is parked again, its age counted from its first park; one past
//!   `max_age` by then is removed instead, as `Pool::recycled` does. The reset costs
//!   the engine nothing (the gate does it inside the container) and always succeeds.

use crate::decide::{self, ClaimAction, Counts, IdleView, Placement, RemoveReason};
use crate::sizing::{DemandTracker, SizingConfig, SizingError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A park whose remaining work is below this (in parks) is done: float rounding of
/// event times leaves crumbs of about 1e-9.
const PARK_DONE_EPSILON: f64 = 1e-6;
/// Hit rate goal of the issue.
pub const GOAL_HIT_RATE: f64 = 0.99;
/// Idle goal of the issue: at most this many times the clairvoyant pool's idle.
pub const GOAL_IDLE_RATIO: f64 = 1.5;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read trace {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trace {source_name}, line {line}: {reason}")]
    Parse {
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error("trace {source_name} has no arrivals; expected a header `arrival_s,function,runtime_ms` and one line per arrival")]
    Empty { source_name: String },
    #[error("the sizing settings to simulate are invalid")]
    Sizing(#[from] SizingError),
    #[error("reuse must be at least 1 (1: a container serves one job), got {0}")]
    Reuse(usize),
}

/// Sizing settings to vary from the profile defaults, for the sensitivity runs
/// (`warmpool simulate --idle-ttl 2m --miss-budget 0.01 --max-idle 12`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tuning {
    /// The profile's `max_idle`, for every policy (fixed sizes above it are held
    /// to it, OpenWhisk's maximum is it).
    pub max_idle: Option<usize>,
    pub idle_ttl: Option<Duration>,
    pub miss_budget: Option<f64>,
    /// How long a gate's reset holds a reused container (instead of
    /// [`EngineModel::measured`]'s).
    pub reset_time: Option<Duration>,
}

/// One claim of a trace: when it arrives and how long its job keeps the container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub at: Duration,
    pub runtime: Duration,
}

/// One profile's claims over `[0, horizon]`, sorted by time (a claim later than
/// `horizon` moves the end of the run to it).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub arrivals: Vec<Arrival>,
    /// End of the simulated span; idle time is counted up to here.
    pub horizon: Duration,
}

impl Workload {
    /// Where a run of it ends: the horizon, or the last claim if that is later.
    pub fn end(&self) -> Duration {
        self.arrivals
            .last()
            .map_or(self.horizon, |last| last.at.max(self.horizon))
    }
}

/// The engine's park throughput as a function of parks in flight, interpolated
/// linearly between measured points and flat past the last.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineModel {
    /// `(parks in flight, parks completed per second)`, by increasing concurrency.
    pub throughput: Vec<(usize, f64)>,
    /// From a job's end (its EXIT frame) to its container's return (the READY after
    /// the gate's RESET), for a container that is reused.
    pub reset: Duration,
}

impl EngineModel {
    /// Measured on the 2-core development machine (Docker 20.10.24): 3.3, 4.5, 5.7
    /// and 5.6 parks/s at 1, 2, 4 and 8 concurrent parks. A reset takes 10 ms: the
    /// gate's EXIT to READY measured on the same machine (`reset_time` in
    /// `crates/gate/tests/gate_engine.rs`) was under 2 ms after a job that left
    /// nothing and 5 ms (median; 11 ms at most) after one that left a file in a
    /// tmpfs and a process to kill.
    pub fn measured() -> Self {
        Self {
            throughput: vec![(1, 3.3), (2, 4.5), (4, 5.7), (8, 5.6)],
            reset: Duration::from_millis(10),
        }
    }

    /// Parks completed per second with `in_flight` parks sharing the engine.
    pub fn parks_per_sec(&self, in_flight: usize) -> f64 {
        let Some(&(first_k, first_rate)) = self.throughput.first() else {
            return 0.0;
        };
        if in_flight <= first_k {
            return first_rate;
        }
        for pair in self.throughput.windows(2) {
            let ((k0, r0), (k1, r1)) = (pair[0], pair[1]);
            if in_flight <= k1 {
                // Reached only with k0 < in_flight <= k1; saturating all the same, so an
                // unsorted table gives a wrong rate, not a panic.
                let share =
                    in_flight.saturating_sub(k0) as f64 / k1.saturating_sub(k0).max(1) as f64;
                return r0 + share * (r1 - r0);
            }
        }
        self.throughput.last().map_or(0.0, |&(_, rate)| rate)
    }

    /// The engine's best rate, at whatever concurrency.
    pub fn max_parks_per_sec(&self) -> f64 {
        self.throughput
            .iter()
            .map(|&(_, rate)| rate)
            .fold(0.0, f64::max)
    }

    /// How long one park takes when `in_flight` parks run side by side throughout.
    pub fn park_latency(&self, in_flight: usize) -> Duration {
        let in_flight = in_flight.max(1);
        let rate = self.parks_per_sec(in_flight);
        if rate > 0.0 {
            Duration::from_secs_f64(in_flight as f64 / rate)
        } else {
            Duration::MAX
        }
    }
}

/// The profile's keys the simulated pool runs with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolLimits {
    pub min_idle: usize,
    pub max_idle: usize,
    /// Parked + parking + cold starts + busy, for this profile.
    pub max_containers: usize,
    pub max_queue: usize,
    pub max_wait: Duration,
    pub max_age: Duration,
    /// Jobs a container serves (1: single use).
    pub reuse: usize,
}

impl PoolLimits {
    /// The limits as the shipped rules take them (with the pool's own
    /// [`decide::MAX_PARALLEL_PARKS`]).
    pub fn rules(&self) -> decide::Limits {
        decide::Limits {
            max_containers: self.max_containers,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            max_age: self.max_age,
            max_parallel_parks: decide::MAX_PARALLEL_PARKS,
        }
    }
}

impl Default for PoolLimits {
    /// The profile defaults of `warmpool-core`, with `min_idle` 1 and `max_idle` 8.
    fn default() -> Self {
        Self {
            min_idle: 1,
            max_idle: 8,
            max_containers: warmpool_core::config::DEFAULT_MAX_CONTAINERS,
            max_queue: warmpool_core::config::DEFAULT_MAX_QUEUE,
            max_wait: warmpool_core::config::DEFAULT_MAX_WAIT,
            max_age: warmpool_core::config::DEFAULT_MAX_AGE,
            reuse: 1,
        }
    }
}

/// OpenWhisk's reactive prewarm rule (`ContainerPool.getReactiveCold` and
/// `adjustPrewarmedContainer`): a claimed prewarm is replaced at once; every
/// `period`, prewarms older than `ttl` are removed and the pool is backfilled to
/// `clamp(cold starts in the period / threshold * increment, min, max)`, or to `min`
/// when there were none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenWhiskRule {
    pub period: Duration,
    pub threshold: usize,
    pub increment: usize,
    pub min: usize,
    pub max: usize,
    pub ttl: Duration,
}

impl OpenWhiskRule {
    /// OpenWhisk's shipped settings (`runtimes.json`: threshold 1, increment 1, ttl
    /// 2 minutes; `prewarm-expiration-check-interval` 1 minute) with the profile's
    /// bounds in place of its `minCount` 1 / `maxCount` 4, so both rules get the
    /// same room.
    pub fn shipped(limits: &PoolLimits) -> Self {
        Self {
            period: Duration::from_secs(60),
            threshold: 1,
            increment: 1,
            min: limits.min_idle,
            max: limits.max_idle,
            ttl: Duration::from_secs(120),
        }
    }
}

/// A sizing policy to compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Ours: [`crate::sizing`].
    Adaptive(SizingConfig),
    /// Always this many idle.
    Fixed(usize),
    OpenWhisk(OpenWhiskRule),
}

impl Policy {
    pub fn label(&self) -> String {
        match self {
            Policy::Adaptive(_) => "adaptive".to_string(),
            Policy::Fixed(size) => format!("fixed {size}"),
            Policy::OpenWhisk(_) => "OpenWhisk".to_string(),
        }
    }
}

/// What one simulated run counted.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOutcome {
    pub arrivals: usize,
    /// Claims that found a parked container.
    pub hits: usize,
    /// Claims that parked their own container on their time.
    pub cold_starts: usize,
    /// Claims that waited for room under `max_containers` (including those that
    /// waited out `max_wait`).
    pub queued: usize,
    /// Claims refused at once: `max_queue` claims waited already.
    pub refused: usize,
    /// Queued claims that failed after `max_wait` without a container.
    pub timed_out: usize,
    /// Parked containers removed for their age (`max_age`).
    pub replaced: usize,
    /// Parked containers removed above the target.
    pub shrunk: usize,
    /// Time containers existed without a job: parking for the pool, parked, or
    /// being reset between two jobs.
    pub idle_container_secs: f64,
    /// Containers parked, for the pool and on jobs' paths.
    pub parks: usize,
    /// Containers reset after a job and parked again or handed to a waiter (reuse).
    pub reused: usize,
    /// Median time from a claim to its container (0 for a hit).
    pub p50_claim_wait: Duration,
    /// 99th percentile of the time from a claim to its container (0 for a hit).
    pub p99_claim_wait: Duration,
    /// Longest time from a claim to its container.
    pub max_claim_wait: Duration,
}

impl SimOutcome {
    pub fn hit_rate(&self) -> f64 {
        if self.arrivals == 0 {
            1.0
        } else {
            self.hits as f64 / self.arrivals as f64
        }
    }
}

/// Idle container-seconds of the clairvoyant pool: it keeps `min_idle` parked
/// throughout and serves each claim with a container whose park started exactly one
/// uncontended park time before the claim, so each claim adds that park time and
/// nothing more. It hits every claim. It is a lower bound, not a pool the engine
/// could always run: where claims come faster than the engine parks, just in time
/// is too late.
pub fn clairvoyant_idle_secs(workload: &Workload, min_idle: usize, engine: &EngineModel) -> f64 {
    min_idle as f64 * workload.end().as_secs_f64()
        + workload.arrivals.len() as f64 * engine.park_latency(1).as_secs_f64()
}

/// A park in flight: when it is done, and whose it is.
#[derive(Debug)]
struct Park {
    /// The engine's work counter (see [`PoolState::work_done`]) at which it is parked.
    done_at_work: f64,
    started: Duration,
    /// `None` for the pool's own parks; the claim's arrival and runtime for a cold start.
    for_claim: Option<Arrival>,
}

/// A container of the simulated pool: parked, or (in [`Busy`]) running a job or
/// being reset.
#[derive(Debug, Clone, Copy)]
struct SimParked {
    /// When its park started (OpenWhisk's ttl counts from here).
    park_started: Duration,
    /// When it was first parked (`max_age` counts from here, also when reused).
    parked_at: Duration,
    /// Jobs it has run.
    jobs: usize,
}

impl SimParked {
    fn fresh(park_started: Duration, parked_at: Duration) -> Self {
        Self {
            park_started,
            parked_at,
            jobs: 0,
        }
    }
}

/// A container holding a slot: running a job, or being reset after one.
#[derive(Debug, Clone, Copy)]
struct Busy {
    /// When the job or the reset ends.
    until: Duration,
    /// Order of entry, so that equal ends are taken in a fixed order.
    seq: u64,
    container: SimParked,
    resetting: bool,
}

impl PartialEq for Busy {
    fn eq(&self, other: &Self) -> bool {
        (self.until, self.seq) == (other.until, other.seq)
    }
}

impl Eq for Busy {}

impl PartialOrd for Busy {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Busy {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.until, self.seq).cmp(&(other.until, other.seq))
    }
}

/// What decides the target, with its state.
enum Controller {
    Adaptive(DemandTracker),
    Fixed(usize),
    OpenWhisk {
        rule: OpenWhiskRule,
        target: usize,
        cold_starts: usize,
        next_check: Duration,
    },
}

impl Controller {
    fn new(policy: &Policy) -> Self {
        match policy {
            Policy::Adaptive(config) => Controller::Adaptive(DemandTracker::new(config.clone())),
            Policy::Fixed(size) => Controller::Fixed(*size),
            Policy::OpenWhisk(rule) => Controller::OpenWhisk {
                rule: *rule,
                target: rule.min,
                cold_starts: 0,
                next_check: rule.period,
            },
        }
    }

    /// The idle target; the adaptive rule clamps its own, the others are held to
    /// `max_idle` here.
    fn target(&self, now: Duration, max_idle: usize) -> usize {
        match self {
            Controller::Adaptive(tracker) => tracker.target_idle(now),
            Controller::Fixed(size) => (*size).min(max_idle),
            Controller::OpenWhisk { target, .. } => (*target).min(max_idle),
        }
    }
}

/// One run's mutable state: what the engine holds, and the counters.
struct PoolState<'a> {
    rules: decide::Limits,
    engine: &'a EngineModel,
    now: Duration,
    /// Parked containers, longest-parked first.
    parked: VecDeque<SimParked>,
    /// Parks in flight, in start order, which is also their finishing order: every
    /// park needs the same work and they all progress at the same speed.
    parks: VecDeque<Park>,
    /// How many of `parks` are the pool's own.
    pool_parks: usize,
    /// Work each park in flight has received since the start, in parks: processor
    /// sharing's virtual time. A park started at `w` is done at `w + 1`.
    work_done: f64,
    /// Containers running a job or being reset, soonest end first.
    busy: BinaryHeap<Reverse<Busy>>,
    /// Entries made in `busy` so far.
    busy_seq: u64,
    /// How many of `busy` are being reset.
    resetting: usize,
    /// Jobs a container serves.
    reuse: usize,
    /// The most containers coming back after their job (reuse) within
    /// `returning_ttl`, and since when, as the pool keeps it.
    returning_peak: (usize, Duration),
    /// The profile's `idle_ttl`.
    returning_ttl: Duration,
    /// Claims waiting for a container, in arrival order.
    queue: VecDeque<Arrival>,
    /// When the pool reconciles next: at most a second after the last, and
    /// `REPLENISH_DELAY` after whatever woke it.
    next_reconcile: Duration,
    idle_container_secs: f64,
    hits: usize,
    cold_starts: usize,
    queued: usize,
    refused: usize,
    timed_out: usize,
    replaced: usize,
    shrunk: usize,
    parks_done: usize,
    reused: usize,
    /// Time from claim to container, one per claim served.
    waits: Vec<Duration>,
}

impl PoolState<'_> {
    /// The counts the rules decide on; claims that waited out `max_wait` leave the
    /// queue first (they are first in it: it is in arrival order).
    fn counts(&mut self) -> Counts {
        while self
            .queue
            .front()
            .is_some_and(|claim| decide::wait_expired(claim.at, self.now, &self.rules))
        {
            self.queue.pop_front();
            self.timed_out += 1;
        }
        // As the pool counts them: busy containers with jobs left after the
        // one they run, and those being reset; the rules see their peak.
        let reuse = self.reuse;
        let returning = self
            .busy
            .iter()
            .filter(|Reverse(b)| b.resetting || b.container.jobs + 1 < reuse)
            .count();
        let (peak, at) = self.returning_peak;
        if returning >= peak || self.now.saturating_sub(at) > self.returning_ttl {
            self.returning_peak = (returning, self.now);
        }
        Counts {
            resetting: self.resetting,
            returning: returning.max(self.returning_peak.0),
            parking: self.pool_parks,
            cold: self.parks.len() - self.pool_parks,
            busy: self.busy.len(),
            waiters: self.queue.len(),
        }
    }

    fn idle_views(&self) -> impl Iterator<Item = IdleView> + '_ {
        // The simulated image never changes: only age makes a container stale.
        self.parked.iter().map(|p| IdleView {
            parked_at: p.parked_at,
            image_current: true,
        })
    }

    /// Something happened that wakes the real pool's reconcile loop.
    fn wake(&mut self) {
        self.next_reconcile = self.next_reconcile.min(self.now + decide::REPLENISH_DELAY);
    }

    /// Work each park in flight does per second now.
    fn park_progress_per_sec(&self) -> f64 {
        let in_flight = self.parks.len();
        if in_flight == 0 {
            0.0
        } else {
            self.engine.parks_per_sec(in_flight) / in_flight as f64
        }
    }

    fn next_park_done(&self) -> Option<Duration> {
        let progress = self.park_progress_per_sec();
        if progress <= 0.0 {
            return None;
        }
        let left = self.parks.front()?.done_at_work - self.work_done;
        // Rounded up so the park is done (not a crumb short) when the event fires.
        let nanos = (left.max(0.0) / progress * 1e9).ceil();
        Some(self.now + Duration::from_nanos(nanos as u64))
    }

    /// Moves time to `to`: idle containers accrue, parks progress. Idle: the parked
    /// containers and the pool's parks beyond those a waiter will take.
    fn advance(&mut self, to: Duration) {
        let elapsed = to.saturating_sub(self.now).as_secs_f64();
        let idle =
            self.parked.len() + self.pool_parks.saturating_sub(self.queue.len()) + self.resetting;
        self.idle_container_secs += idle as f64 * elapsed;
        self.work_done += self.park_progress_per_sec() * elapsed;
        self.now = to;
    }

    fn start_job(&mut self, claim: Arrival, container: SimParked) {
        self.waits.push(self.now.saturating_sub(claim.at));
        self.hold(self.now + claim.runtime, container, false);
    }

    /// `container` takes a slot until `until`, for a job or a reset.
    fn hold(&mut self, until: Duration, container: SimParked, resetting: bool) {
        self.busy_seq += 1;
        self.resetting += usize::from(resetting);
        self.busy.push(Reverse(Busy {
            until,
            seq: self.busy_seq,
            container,
            resetting,
        }));
    }

    fn start_park(&mut self, for_claim: Option<Arrival>) {
        if for_claim.is_none() {
            self.pool_parks += 1;
        }
        self.parks.push_back(Park {
            done_at_work: self.work_done + 1.0,
            started: self.now,
            for_claim,
        });
    }

    /// Parks done by now, placed as `decide::place_parked` says; returns how long
    /// each took, for the policy.
    fn finish_parks(&mut self) -> Vec<Duration> {
        let mut took = Vec::new();
        while self
            .parks
            .front()
            .is_some_and(|park| park.done_at_work - self.work_done <= PARK_DONE_EPSILON)
        {
            let Some(park) = self.parks.pop_front() else {
                break;
            };
            took.push(self.now.saturating_sub(park.started));
            self.parks_done += 1;
            if park.for_claim.is_none() {
                self.pool_parks -= 1;
            }
            // A simulated claim is never dropped: a cold start's claim still waits.
            let counts = self.counts();
            let placement = decide::place_parked(park.for_claim.is_some(), counts);
            let container = SimParked::fresh(park.started, self.now);
            match (placement, park.for_claim, self.queue.front().copied()) {
                (Placement::Claimant, Some(claim), _) => self.start_job(claim, container),
                (Placement::Waiter, _, Some(claim)) => {
                    self.queue.pop_front();
                    self.start_job(claim, container);
                }
                _ => self.parked.push_back(container),
            }
            self.wake();
        }
        took
    }

    /// Jobs and resets ended by now. A job's container with jobs left is reset
    /// (keeping its slot); any other frees its slot, which may park for a waiter. A
    /// reset container serves the oldest waiter or is parked again, as
    /// `Pool::recycled` does, unless it is past `max_age` (removed).
    fn finish_jobs(&mut self) {
        while let Some(Reverse(ended)) = self.busy.peek().copied() {
            if ended.until > self.now {
                break;
            }
            self.busy.pop();
            let mut container = ended.container;
            if ended.resetting {
                self.resetting -= 1;
                if self.now.saturating_sub(container.parked_at) < self.rules.max_age {
                    self.reused += 1;
                    self.deliver(container);
                }
            } else {
                container.jobs += 1;
                if container.jobs < self.reuse {
                    // No wake: the pool hears of it when the reset is done.
                    self.hold(self.now + self.engine.reset, container, true);
                    continue;
                }
            }
            let counts = self.counts();
            if decide::on_slot_freed(self.parked.len(), counts, &self.rules) {
                self.start_park(None);
            }
            self.wake();
        }
    }

    /// A reset container is ready: the oldest waiter takes it, else it is parked,
    /// in first-park order (the order `Pool::deliver` keeps).
    fn deliver(&mut self, container: SimParked) {
        // A simulated waiter never leaves but by `max_wait`, which `counts` applies.
        let counts = self.counts();
        if let (Placement::Waiter, Some(claim)) = (
            decide::place_parked(false, counts),
            self.queue.front().copied(),
        ) {
            self.queue.pop_front();
            self.start_job(claim, container);
            return;
        }
        let at = self
            .parked
            .partition_point(|p| p.parked_at <= container.parked_at);
        self.parked.insert(at, container);
    }

    /// A claim arrives, and does what `decide::claim` says. Returns whether it was a
    /// cold start.
    fn claim(&mut self, claim: Arrival) -> bool {
        let counts = self.counts();
        let plan = decide::claim(self.now, self.idle_views(), counts, &self.rules);
        self.parked.drain(..plan.remove);
        self.replaced += plan.remove;
        self.wake();
        match plan.action {
            ClaimAction::Hit => {
                if let Some(container) = self.parked.pop_front() {
                    self.hits += 1;
                    self.start_job(claim, container);
                }
                false
            }
            ClaimAction::Cold => {
                self.cold_starts += 1;
                self.start_park(Some(claim));
                true
            }
            ClaimAction::Queue => {
                self.queued += 1;
                self.queue.push_back(claim);
                false
            }
            ClaimAction::Full { .. } => {
                self.refused += 1;
                false
            }
        }
    }

    /// The reconcile `decide::reconcile` describes, toward `target`.
    fn reconcile(&mut self, target: usize) {
        let counts = self.counts();
        // Simulated parks never fail: no back-off.
        let plan = decide::reconcile(
            self.now,
            self.idle_views(),
            counts,
            target,
            false,
            &self.rules,
        );
        for removal in plan.remove.iter().rev() {
            self.parked.remove(removal.index);
            match removal.reason {
                RemoveReason::Surplus => self.shrunk += 1,
                RemoveReason::StaleImage | RemoveReason::TooOld => self.replaced += 1,
            }
        }
        for _ in 0..plan.park {
            self.start_park(None);
        }
        self.next_reconcile = self.now + decide::RECONCILE_EVERY;
    }
}

/// Runs one workload under one policy. Deterministic: the same inputs give the same
/// outcome, bit for bit.
pub fn simulate(
    workload: &Workload,
    limits: &PoolLimits,
    engine: &EngineModel,
    policy: &Policy,
) -> SimOutcome {
    let mut controller = Controller::new(policy);
    let mut pool = PoolState {
        rules: limits.rules(),
        engine,
        now: Duration::ZERO,
        parked: VecDeque::new(),
        parks: VecDeque::new(),
        pool_parks: 0,
        work_done: 0.0,
        busy: BinaryHeap::new(),
        busy_seq: 0,
        resetting: 0,
        reuse: limits.reuse.max(1),
        returning_peak: (0, Duration::ZERO),
        returning_ttl: match policy {
            Policy::Adaptive(sizing) => sizing.idle_ttl,
            _ => SizingConfig::default().idle_ttl,
        },
        queue: VecDeque::new(),
        next_reconcile: decide::RECONCILE_EVERY,
        idle_container_secs: 0.0,
        hits: 0,
        cold_starts: 0,
        queued: 0,
        refused: 0,
        timed_out: 0,
        replaced: 0,
        shrunk: 0,
        parks_done: 0,
        reused: 0,
        waits: Vec::with_capacity(workload.arrivals.len()),
    };
    // The pool was started before the trace: its first target is parked at 0.
    let initial = controller.target(Duration::ZERO, limits.max_idle);
    for _ in 0..initial.min(limits.max_containers) {
        pool.parked
            .push_back(SimParked::fresh(Duration::ZERO, Duration::ZERO));
    }

    let horizon = workload.end();
    let mut next_arrival = 0;
    loop {
        let mut next = pool.next_reconcile.min(horizon);
        if let Some(arrival) = workload.arrivals.get(next_arrival) {
            next = next.min(arrival.at);
        }
        if let Some(done) = pool.next_park_done() {
            next = next.min(done);
        }
        if let Some(Reverse(busy)) = pool.busy.peek() {
            next = next.min(busy.until);
        }
        if let Controller::OpenWhisk { next_check, .. } = &controller {
            next = next.min(*next_check);
        }
        pool.advance(next);

        for took in pool.finish_parks() {
            if let Controller::Adaptive(tracker) = &mut controller {
                tracker.on_park_time(took);
            }
        }
        pool.finish_jobs();
        while let Some(&arrival) = workload
            .arrivals
            .get(next_arrival)
            .filter(|a| a.at <= pool.now)
        {
            next_arrival += 1;
            if let Controller::Adaptive(tracker) = &mut controller {
                tracker.on_arrival(pool.now);
            }
            let cold = pool.claim(arrival);
            if let (true, Controller::OpenWhisk { cold_starts, .. }) = (cold, &mut controller) {
                *cold_starts += 1;
            }
        }
        if let Controller::OpenWhisk {
            rule,
            target,
            cold_starts,
            next_check,
        } = &mut controller
        {
            if pool.now >= *next_check {
                *next_check += rule.period;
                openwhisk_check(&mut pool, rule, target, cold_starts);
                pool.wake();
            }
        }
        if pool.now >= pool.next_reconcile {
            pool.reconcile(controller.target(pool.now, limits.max_idle));
        }

        if pool.now >= horizon {
            break;
        }
    }

    let mut waits = pool.waits;
    waits.sort_unstable();
    let p99_claim_wait = percentile(&waits, 0.99);
    let p50_claim_wait = percentile(&waits, 0.5);
    SimOutcome {
        arrivals: workload.arrivals.len(),
        hits: pool.hits,
        cold_starts: pool.cold_starts,
        queued: pool.queued,
        refused: pool.refused,
        timed_out: pool.timed_out,
        replaced: pool.replaced,
        shrunk: pool.shrunk,
        idle_container_secs: pool.idle_container_secs,
        parks: pool.parks_done,
        reused: pool.reused,
        p50_claim_wait,
        p99_claim_wait,
        max_claim_wait: waits.last().copied().unwrap_or_default(),
    }
}

/// OpenWhisk's periodic step: drop expired prewarms, then set the backfill level.
fn openwhisk_check(
    pool: &mut PoolState<'_>,
    rule: &OpenWhiskRule,
    target: &mut usize,
    cold_starts: &mut usize,
) {
    let now = pool.now;
    pool.parked
        .retain(|parked| parked.park_started + rule.ttl > now);
    let desired = if *cold_starts == 0 {
        rule.min
    } else {
        (*cold_starts / rule.threshold.max(1) * rule.increment)
            .clamp(rule.min, rule.max.max(rule.min))
    };
    // Prewarms that survived stay (OpenWhisk removes only expired ones); a claimed
    // one is replaced, so the level holds until the next check.
    *target = (pool.parked.len() + pool.pool_parks).max(desired);
    *cold_starts = 0;
}

/// The `share` quantile of sorted values (nearest rank).
fn percentile(sorted: &[Duration], share: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (share * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Everything a comparison runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    pub limits: PoolLimits,
    pub engine: EngineModel,
    pub sizing: SizingConfig,
    pub openwhisk: OpenWhiskRule,
    pub fixed_sizes: Vec<usize>,
}

impl SimSettings {
    /// The profile defaults (min_idle 1, max_idle 8, idle_ttl 10m) with `max_containers`.
    pub fn with_max_containers(max_containers: usize) -> Self {
        let limits = PoolLimits {
            max_containers,
            ..PoolLimits::default()
        };
        let sizing = SizingConfig {
            min_idle: limits.min_idle,
            max_idle: limits.max_idle,
            ..SizingConfig::default()
        };
        Self {
            openwhisk: OpenWhiskRule::shipped(&limits),
            limits,
            engine: EngineModel::measured(),
            sizing,
            fixed_sizes: vec![1, 2, 4, 8],
        }
    }

    /// These settings with the adaptive rule's `tuning` applied, checked.
    pub fn tuned(mut self, tuning: &Tuning) -> Result<Self, SimError> {
        if let Some(max_idle) = tuning.max_idle {
            self.limits.max_idle = max_idle;
            self.sizing.max_idle = max_idle;
            self.openwhisk.max = max_idle;
        }
        if let Some(idle_ttl) = tuning.idle_ttl {
            self.sizing.idle_ttl = idle_ttl;
        }
        if let Some(miss_budget) = tuning.miss_budget {
            self.sizing.miss_budget = miss_budget;
        }
        if let Some(reset) = tuning.reset_time {
            self.engine.reset = reset;
        }
        self.sizing.validate()?;
        Ok(self)
    }

    /// The policies compared, ours first.
    pub fn policies(&self) -> Vec<Policy> {
        let mut policies = vec![Policy::Adaptive(self.sizing.clone())];
        policies.extend(self.fixed_sizes.iter().map(|&size| Policy::Fixed(size)));
        policies.push(Policy::OpenWhisk(self.openwhisk));
        policies
    }
}

/// One workload under every policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub workload: String,
    pub arrivals: usize,
    pub horizon: Duration,
    /// Most claims per second in any minute of the workload.
    pub peak_rate: f64,
    /// Whether the engine can park as fast as claims come in the workload's busiest
    /// minute; if not, no pool bounded by `max_idle` can hit most of that minute.
    pub within_engine_reach: bool,
    pub clairvoyant_idle_secs: f64,
    /// In the order of [`SimSettings::policies`].
    pub runs: Vec<(Policy, SimOutcome)>,
    /// The smallest fixed pool (up to `max_idle`) that reaches the hit-rate goal, found
    /// with hindsight: the best a hand-tuned fixed size could have done.
    pub cheapest_fixed: Option<(usize, SimOutcome)>,
}

impl Comparison {
    pub fn idle_ratio(&self, outcome: &SimOutcome) -> f64 {
        if self.clairvoyant_idle_secs > 0.0 {
            outcome.idle_container_secs / self.clairvoyant_idle_secs
        } else {
            f64::INFINITY
        }
    }

    pub fn meets_goal(&self, outcome: &SimOutcome) -> bool {
        outcome.hit_rate() >= GOAL_HIT_RATE && self.idle_ratio(outcome) <= GOAL_IDLE_RATIO
    }

    /// The outcome of the first run whose policy `matches`.
    pub fn outcome(&self, matches: impl Fn(&Policy) -> bool) -> Option<&SimOutcome> {
        self.runs
            .iter()
            .find(|(policy, _)| matches(policy))
            .map(|(_, outcome)| outcome)
    }

    /// The adaptive policy's outcome.
    pub fn adaptive(&self) -> Option<&SimOutcome> {
        self.outcome(|policy| matches!(policy, Policy::Adaptive(_)))
    }
}

/// Most claims in any `window`, per second.
pub fn peak_rate(workload: &Workload, window: Duration) -> f64 {
    let mut most = 0;
    let mut first = 0;
    for (last, arrival) in workload.arrivals.iter().enumerate() {
        while workload.arrivals[first].at + window <= arrival.at {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    most as f64 / window.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Runs every policy of `settings` on every workload, and the fixed sizes up to
/// `max_idle` until one reaches the hit-rate goal.
pub fn compare(workloads: &[Workload], settings: &SimSettings) -> Vec<Comparison> {
    let policies = settings.policies();
    let run = |workload: &Workload, policy: &Policy| {
        simulate(workload, &settings.limits, &settings.engine, policy)
    };
    workloads
        .iter()
        .map(|workload| {
            let runs: Vec<(Policy, SimOutcome)> = policies
                .iter()
                .map(|policy| (policy.clone(), run(workload, policy)))
                .collect();
            let cheapest_fixed = (1..=settings.limits.max_idle).find_map(|size| {
                let outcome = runs
                    .iter()
                    .find(|(policy, _)| *policy == Policy::Fixed(size))
                    .map(|(_, outcome)| outcome.clone())
                    .unwrap_or_else(|| run(workload, &Policy::Fixed(size)));
                (outcome.hit_rate() >= GOAL_HIT_RATE).then_some((size, outcome))
            });
            let peak_rate = peak_rate(workload, Duration::from_secs(60));
            Comparison {
                workload: workload.name.clone(),
                arrivals: workload.arrivals.len(),
                horizon: workload.end(),
                peak_rate,
                within_engine_reach: peak_rate <= settings.engine.max_parks_per_sec(),
                clairvoyant_idle_secs: clairvoyant_idle_secs(
                    workload,
                    settings.limits.min_idle,
                    &settings.engine,
                ),
                runs,
                cheapest_fixed,
            }
        })
        .collect()
}

/// The comparison as Markdown: a summary table (hit rate and idle / clairvoyant per
/// policy, one row per workload, then totals) and the adaptive policy's details.
pub fn report(title: &str, settings: &SimSettings, comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    let limits = &settings.limits;
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "min_idle {}, max_idle {}, max_containers {}, max_queue {}, max_wait {}, max_age {}, \
         idle_ttl {}, at most {} pool parks in flight, engine at most {:.1} parks/s. Each \
         cell: hit rate · idle container-seconds ÷ the clairvoyant pool's. Peak: most claims \
         per second in any minute.\n",
        limits.min_idle,
        limits.max_idle,
        limits.max_containers,
        limits.max_queue,
        format_duration(limits.max_wait),
        format_duration(limits.max_age),
        format_duration(settings.sizing.idle_ttl),
        decide::MAX_PARALLEL_PARKS,
        settings.engine.max_parks_per_sec(),
    );
    let labels: Vec<String> = settings.policies().iter().map(Policy::label).collect();
    let _ = write!(out, "| profile | claims | peak /s | clairvoyant idle (s) |");
    for label in &labels {
        let _ = write!(out, " {label} |");
    }
    let _ = write!(out, " cheapest fixed ≥ 99 % |\n|---|---:|---:|---:|");
    for _ in &labels {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out, "---|");
    for comparison in comparisons {
        let _ = write!(
            out,
            "| {} | {} | {:.1} | {:.0} |",
            comparison.workload,
            comparison.arrivals,
            comparison.peak_rate,
            comparison.clairvoyant_idle_secs
        );
        for (_, outcome) in &comparison.runs {
            let _ = write!(
                out,
                " {} |",
                cell(outcome.hit_rate(), comparison.idle_ratio(outcome))
            );
        }
        match &comparison.cheapest_fixed {
            Some((size, outcome)) => {
                let ratio = comparison.idle_ratio(outcome);
                let _ = writeln!(out, " {size}: {} |", cell(outcome.hit_rate(), ratio));
            }
            None => {
                let _ = writeln!(out, " none up to {} |", limits.max_idle);
            }
        }
    }
    let reachable: Vec<Comparison> = comparisons
        .iter()
        .filter(|c| c.within_engine_reach)
        .cloned()
        .collect();
    let mut total_rows = vec![("all", Totals::of(comparisons, labels.len()))];
    if reachable.len() < comparisons.len() {
        total_rows.push((
            "all within the engine's reach",
            Totals::of(&reachable, labels.len()),
        ));
    }
    for (name, totals) in total_rows {
        let _ = write!(
            out,
            "| **{name}** | {} | | {:.0} |",
            totals.arrivals, totals.clairvoyant
        );
        for policy in &totals.per_policy {
            let ratio = policy.idle / totals.clairvoyant;
            let _ = write!(out, " **{}** |", cell(policy.hit_rate(), ratio));
        }
        let _ = writeln!(out, " |");
    }
    let _ = write!(out, "| goal met (≥ 99 % and ≤ 1.5×) | | | |");
    for index in 0..labels.len() {
        let met = comparisons
            .iter()
            .filter(|c| c.runs.get(index).is_some_and(|(_, o)| c.meets_goal(o)))
            .count();
        let _ = write!(out, " {met} of {} |", comparisons.len());
    }
    let met = comparisons
        .iter()
        .filter(|c| {
            c.cheapest_fixed
                .as_ref()
                .is_some_and(|(_, o)| c.meets_goal(o))
        })
        .count();
    let _ = writeln!(out, " {met} of {} |", comparisons.len());

    let _ = writeln!(out, "\nThe adaptive policy in detail:\n");
    let _ = writeln!(
        out,
        "| profile | hit rate | cold starts | queued | timed out | refused | idle (s) | mean idle | × clairvoyant | parks | p99 wait | max wait | goal |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for comparison in comparisons {
        let Some(outcome) = comparison.adaptive() else {
            continue;
        };
        let ratio = comparison.idle_ratio(outcome);
        let goal = match (
            outcome.hit_rate() >= GOAL_HIT_RATE,
            ratio <= GOAL_IDLE_RATIO,
        ) {
            (true, true) => "met",
            (true, false) => "idle over",
            (false, true) => "hits under",
            (false, false) => "both missed",
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} % | {} | {} | {} | {} | {:.0} | {:.2} | {:.2}× | {} | {} | {} | {} |",
            comparison.workload,
            outcome.hit_rate() * 100.0,
            outcome.cold_starts,
            outcome.queued,
            outcome.timed_out,
            outcome.refused,
            outcome.idle_container_secs,
            outcome.idle_container_secs / comparison.horizon.as_secs_f64().max(f64::MIN_POSITIVE),
            ratio,
            outcome.parks,
            format_millis(outcome.p99_claim_wait),
            format_millis(outcome.max_claim_wait),
            goal,
        );
    }
    out
}

fn cell(hit_rate: f64, ratio: f64) -> String {
    format!("{:.2} % · {:.2}×", hit_rate * 100.0, ratio)
}

fn format_millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Sums over workloads, at one `reuse` value.
#[derive(Default)]
struct ReuseTotal {
    arrivals: usize,
    hits: usize,
    cold: usize,
    queued: usize,
    refused: usize,
    parks: usize,
    reused: usize,
    shrunk: usize,
    idle: f64,
}

/// Sums over workloads, per policy.
struct Totals {
    arrivals: usize,
    clairvoyant: f64,
    per_policy: Vec<PolicyTotal>,
}

#[derive(Default, Clone)]
struct PolicyTotal {
    arrivals: usize,
    hits: usize,
    idle: f64,
}

impl PolicyTotal {
    fn hit_rate(&self) -> f64 {
        if self.arrivals == 0 {
            1.0
        } else {
            self.hits as f64 / self.arrivals as f64
        }
    }
}

impl Totals {
    fn of(comparisons: &[Comparison], policies: usize) -> Self {
        let mut per_policy = vec![PolicyTotal::default(); policies];
        for comparison in comparisons {
            for (total, (_, outcome)) in per_policy.iter_mut().zip(&comparison.runs) {
                total.arrivals += outcome.arrivals;
                total.hits += outcome.hits;
                total.idle += outcome.idle_container_secs;
            }
        }
        Self {
            arrivals: comparisons.iter().map(|c| c.arrivals).sum(),
            clairvoyant: comparisons.iter().map(|c| c.clairvoyant_idle_secs).sum(),
            per_policy,
        }
    }
}

/// A parsed trace file.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// One per function, by name.
    pub workloads: Vec<Workload>,
    /// Runtimes below zero, taken as zero.
    pub negative_runtimes: usize,
}

/// Parses a trace (`arrival_s,function,runtime_ms`, columns in any order, a header
/// line first) into one workload per function. The horizon, shared by all, is the
/// last arrival rounded up to a whole second.
pub fn parse_trace(text: &str, source_name: &str) -> Result<Trace, SimError> {
    let parse_error = |line: usize, reason: String| SimError::Parse {
        source_name: source_name.to_string(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(SimError::Empty {
            source_name: source_name.to_string(),
        });
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let column = |name: &str| {
        columns.iter().position(|c| *c == name).ok_or_else(|| {
            parse_error(
                1,
                format!("the header has no column `{name}` (it is `{header}`)"),
            )
        })
    };
    let (at_column, function_column, runtime_column) = (
        column("arrival_s")?,
        column("function")?,
        column("runtime_ms")?,
    );

    let mut by_function: BTreeMap<String, Vec<Arrival>> = BTreeMap::new();
    let mut last = Duration::ZERO;
    let mut negative_runtimes = 0;
    for (index, line) in lines {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |column: usize, name: &str| {
            fields
                .get(column)
                .copied()
                .ok_or_else(|| parse_error(line_number, format!("no `{name}` field in `{line}`")))
        };
        let seconds = |column: usize, name: &str, scale: f64| -> Result<Duration, SimError> {
            let text = field(column, name)?;
            let value: f64 = text.parse().map_err(|_| {
                parse_error(line_number, format!("`{name}` is not a number: `{text}`"))
            })?;
            Duration::try_from_secs_f64(value * scale).map_err(|_| {
                parse_error(
                    line_number,
                    format!("`{name}` must be a finite number of at least 0, got `{text}`"),
                )
            })
        };
        let at = seconds(at_column, "arrival_s", 1.0)?;
        let runtime_text = field(runtime_column, "runtime_ms")?;
        let runtime = match runtime_text.parse::<f64>() {
            // OrcBench draws runtimes from fitted normal distributions, and a few
            // come out below zero; the job then takes no time.
            Ok(millis) if millis < 0.0 => {
                negative_runtimes += 1;
                Duration::ZERO
            }
            _ => seconds(runtime_column, "runtime_ms", 1e-3)?,
        };
        let function = field(function_column, "function")?;
        if function.is_empty() {
            return Err(parse_error(line_number, "empty `function`".to_string()));
        }
        last = last.max(at);
        by_function
            .entry(function.to_string())
            .or_default()
            .push(Arrival { at, runtime });
    }
    if by_function.is_empty() {
        return Err(SimError::Empty {
            source_name: source_name.to_string(),
        });
    }
    let horizon = Duration::from_secs(last.as_secs() + u64::from(last.subsec_nanos() > 0));
    let workloads = by_function
        .into_iter()
        .map(|(name, mut arrivals)| {
            arrivals.sort_by_key(|a| a.at);
            Workload {
                name,
                arrivals,
                horizon,
            }
        })
        .collect();
    Ok(Trace {
        workloads,
        negative_runtimes,
    })
}

/// Settings for trace files: the profile defaults with `max_containers` 64. The
/// fixture's runtimes are Azure functions'; its busiest long-running function (fn09,
/// 1.8 claims/s of ~10 s) keeps ~19 containers busy, more than the default 16, and
/// a cap that queues every claim would hide what sizing does.
pub fn trace_settings() -> SimSettings {
    SimSettings::with_max_containers(64)
}

/// Reads a trace file, runs every policy on each of its functions, and returns the
/// Markdown report.
pub fn run_trace_file(path: &Path) -> Result<String, SimError> {
    run_trace_file_tuned(path, &Tuning::default())
}

/// [`run_trace_file`] with the adaptive rule tuned.
pub fn run_trace_file_tuned(path: &Path, tuning: &Tuning) -> Result<String, SimError> {
    run_trace_file_with(path, tuning, &[])
}

/// [`run_trace_file_tuned`], and with `reuse` values besides 1 the adaptive policy
/// at each of them and at 1, side by side ([`reuse_report`]).
pub fn run_trace_file_with(
    path: &Path,
    tuning: &Tuning,
    reuse: &[usize],
) -> Result<String, SimError> {
    let settings = trace_settings().tuned(tuning)?;
    let reuse = reuse_values(reuse)?;
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let trace = parse_trace(&text, &path.display().to_string())?;
    let comparisons = compare(&trace.workloads, &settings);
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut out = report(&format!("Trace `{name}`"), &settings, &comparisons);
    if trace.negative_runtimes > 0 {
        let _ = writeln!(
            out,
            "\nRuntimes below zero in the trace, run as zero: {}.",
            trace.negative_runtimes
        );
    }
    if reuse.len() > 1 {
        let policy = Policy::Adaptive(settings.sizing.clone());
        let runs = compare_reuse(&trace.workloads, &settings, &policy, &reuse);
        let _ = write!(
            out,
            "\n{}",
            reuse_report(&format!("Trace `{name}`"), &settings, &policy, &runs)
        );
    }
    Ok(out)
}

/// Settings for the synthetic scenarios: the profile defaults, `max_containers` 16.
pub fn synthetic_settings() -> SimSettings {
    SimSettings::with_max_containers(16)
}

/// Runs every policy on the synthetic scenarios and returns the Markdown report.
pub fn run_synthetic() -> String {
    let settings = synthetic_settings();
    let comparisons = compare(&synthetic_workloads(), &settings);
    report("Synthetic scenarios", &settings, &comparisons)
}

/// [`run_synthetic`] with the adaptive rule tuned.
pub fn run_synthetic_tuned(tuning: &Tuning) -> Result<String, SimError> {
    run_synthetic_with(tuning, &[])
}

/// [`run_synthetic_tuned`], and with `reuse` values besides 1 the adaptive policy
/// at each of them and at 1, side by side ([`reuse_report`]).
pub fn run_synthetic_with(tuning: &Tuning, reuse: &[usize]) -> Result<String, SimError> {
    let settings = synthetic_settings().tuned(tuning)?;
    let reuse = reuse_values(reuse)?;
    let workloads = synthetic_workloads();
    let comparisons = compare(&workloads, &settings);
    let mut out = report("Synthetic scenarios", &settings, &comparisons);
    if reuse.len() > 1 {
        let policy = Policy::Adaptive(settings.sizing.clone());
        let runs = compare_reuse(&workloads, &settings, &policy, &reuse);
        let _ = write!(
            out,
            "\n{}",
            reuse_report("Synthetic scenarios", &settings, &policy, &runs)
        );
    }
    Ok(out)
}

/// The `reuse` values to compare: those asked, and 1 (single use, the baseline),
/// each once, in increasing order. A 0 is an error.
pub fn reuse_values(asked: &[usize]) -> Result<Vec<usize>, SimError> {
    if let Some(&zero) = asked.iter().find(|&&n| n == 0) {
        return Err(SimError::Reuse(zero));
    }
    let mut values: Vec<usize> = asked.iter().copied().chain([1]).collect();
    values.sort_unstable();
    values.dedup();
    Ok(values)
}

/// One workload under one policy at several `reuse` values.
#[derive(Debug, Clone, PartialEq)]
pub struct ReuseComparison {
    pub workload: String,
    pub arrivals: usize,
    /// Most claims per second in any minute of the workload.
    pub peak_rate: f64,
    /// `(reuse, outcome)`, in the order asked.
    pub runs: Vec<(usize, SimOutcome)>,
}

impl ReuseComparison {
    /// The outcome at `reuse`, if it was run.
    pub fn at(&self, reuse: usize) -> Option<&SimOutcome> {
        self.runs
            .iter()
            .find(|(n, _)| *n == reuse)
            .map(|(_, outcome)| outcome)
    }
}

/// Runs `policy` on every workload with the profile's `reuse` at each of `reuse`
/// (everything else as in `settings`).
pub fn compare_reuse(
    workloads: &[Workload],
    settings: &SimSettings,
    policy: &Policy,
    reuse: &[usize],
) -> Vec<ReuseComparison> {
    workloads
        .iter()
        .map(|workload| ReuseComparison {
            workload: workload.name.clone(),
            arrivals: workload.arrivals.len(),
            peak_rate: peak_rate(workload, Duration::from_secs(60)),
            runs: reuse
                .iter()
                .map(|&n| {
                    let limits = PoolLimits {
                        reuse: n,
                        ..settings.limits
                    };
                    (n, simulate(workload, &limits, &settings.engine, policy))
                })
                .collect(),
        })
        .collect()
}

/// The reuse comparison as Markdown: per workload, one row per `reuse` value (hits,
/// cold starts, queueing, parks, idle), then the totals per value.
pub fn reuse_report(
    title: &str,
    settings: &SimSettings,
    policy: &Policy,
    comparisons: &[ReuseComparison],
) -> String {
    let mut out = String::new();
    let limits = &settings.limits;
    let _ = writeln!(
        out,
        "### {title}: reuse, {} policy
",
        policy.label()
    );
    let _ = writeln!(
        out,
        "The same limits; a container serves up to `reuse` jobs, each reset taking {} ms \
         and holding its slot, and is removed after its last job or past max_age {}. \
         Queued: claims that waited for room under max_containers {}. Waits are from \
         claim to container (0 for a hit). Reused: containers parked again (or handed \
         to a waiter) after a reset; shrunk: parked containers removed above the \
         target, the longest parked first (by first park: reused ones go first). Idle: \
         container-seconds without a job (parking for the pool, parked, resetting); \
         × reuse 1: that idle over the same workload's at reuse 1.\n",
        settings.engine.reset.as_millis(),
        format_duration(limits.max_age),
        limits.max_containers,
    );
    let _ = writeln!(
        out,
        "| profile | claims | peak /s | reuse | hit rate | cold starts | queued | refused | p50 wait | p99 wait | parks | reused | shrunk | idle (s) | idle × reuse 1 |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for comparison in comparisons {
        let single = comparison.at(1).map(|o| o.idle_container_secs);
        for (reuse, outcome) in &comparison.runs {
            let ratio = match single {
                Some(base) if base > 0.0 => {
                    format!("{:.2}×", outcome.idle_container_secs / base)
                }
                _ => "–".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {:.2} % | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
                comparison.workload,
                comparison.arrivals,
                comparison.peak_rate,
                reuse,
                outcome.hit_rate() * 100.0,
                outcome.cold_starts,
                outcome.queued,
                outcome.refused,
                format_millis(outcome.p50_claim_wait),
                format_millis(outcome.p99_claim_wait),
                outcome.parks,
                outcome.reused,
                outcome.shrunk,
                outcome.idle_container_secs,
                ratio,
            );
        }
    }
    let values: Vec<usize> = comparisons
        .first()
        .map(|c| c.runs.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    let total = |reuse: usize| {
        let outcomes = comparisons.iter().filter_map(|c| c.at(reuse));
        outcomes.fold(ReuseTotal::default(), |t, o| ReuseTotal {
            arrivals: t.arrivals + o.arrivals,
            hits: t.hits + o.hits,
            cold: t.cold + o.cold_starts,
            queued: t.queued + o.queued,
            refused: t.refused + o.refused,
            parks: t.parks + o.parks,
            reused: t.reused + o.reused,
            shrunk: t.shrunk + o.shrunk,
            idle: t.idle + o.idle_container_secs,
        })
    };
    let single_idle = total(1).idle;
    for reuse in values {
        let ReuseTotal {
            arrivals,
            hits,
            cold,
            queued,
            refused,
            parks,
            reused,
            shrunk,
            idle,
        } = total(reuse);
        let rate = if arrivals == 0 {
            1.0
        } else {
            hits as f64 / arrivals as f64
        };
        let ratio = if single_idle > 0.0 {
            format!("{:.2}×", idle / single_idle)
        } else {
            "–".to_string()
        };
        let _ = writeln!(
            out,
            "| **all** | {arrivals} | | **{reuse}** | **{:.2} %** | {cold} | {queued} | {refused} | | | {parks} | {reused} | {shrunk} | {idle:.0} | {ratio} |",
            rate * 100.0,
        );
    }
    out
}

/// The three named scenarios, generated from a fixed seed (same claims every run).
pub fn synthetic_workloads() -> Vec<Workload> {
    vec![bursty(), diurnal(), cold_morning()]
}

/// An hour of a trickle (3 claims a minute) with bursts: on average one every 5
/// minutes, 10 to 40 s long, at 1 to 4 claims a second. Jobs run 0.5 to 3 s.
fn bursty() -> Workload {
    let horizon = 3600.0;
    let mut random = SplitMix64::new(0x5eed_0001);
    let mut bursts = Vec::new();
    let mut start = random.exponential(1.0 / 300.0);
    while start < horizon {
        let length = random.between(10.0, 40.0);
        let rate = random.between(1.0, 4.0);
        bursts.push((start, start + length, rate));
        start += length + random.exponential(1.0 / 300.0);
    }
    let rate = |t: f64| {
        0.05 + bursts
            .iter()
            .filter(|(from, to, _)| *from <= t && t < *to)
            .map(|(_, _, rate)| rate)
            .sum::<f64>()
    };
    let peak = 0.05 + bursts.iter().map(|b| b.2).fold(0.0, f64::max);
    Workload {
        name: "bursty".to_string(),
        arrivals: poisson_arrivals(&mut random, horizon, peak, rate, (0.5, 3.0)),
        horizon: Duration::from_secs_f64(horizon),
    }
}

/// A day compressed into 4 hours: the rate follows `0.01 + 1.5 sin²(πt/T)` claims a
/// second, from a near-empty night to a midday peak and back. Jobs run 1 to 4 s.
fn diurnal() -> Workload {
    let horizon = 4.0 * 3600.0;
    let mut random = SplitMix64::new(0x5eed_0002);
    let rate = |t: f64| 0.01 + 1.5 * (std::f64::consts::PI * t / horizon).sin().powi(2);
    Workload {
        name: "diurnal".to_string(),
        arrivals: poisson_arrivals(&mut random, horizon, 1.51, rate, (1.0, 4.0)),
        horizon: Duration::from_secs_f64(horizon),
    }
}

/// Two quiet night hours (one claim every 20 minutes on average), then the morning:
/// within a minute the rate climbs to 3 claims a second for 5 minutes, then settles
/// at 1.5 a second for the rest of the hour. Jobs run 1 to 3 s.
fn cold_morning() -> Workload {
    let horizon = 3.0 * 3600.0;
    let morning = 2.0 * 3600.0;
    let mut random = SplitMix64::new(0x5eed_0003);
    let rate = move |t: f64| {
        if t < morning {
            1.0 / 1200.0
        } else if t < morning + 60.0 {
            3.0 * (t - morning) / 60.0
        } else if t < morning + 360.0 {
            3.0
        } else {
            1.5
        }
    };
    Workload {
        name: "cold morning".to_string(),
        arrivals: poisson_arrivals(&mut random, horizon, 3.0, rate, (1.0, 3.0)),
        horizon: Duration::from_secs_f64(horizon),
    }
}

/// Claims of a Poisson process with rate `rate(t)` (at most `peak`) over
/// `[0, horizon)`, by thinning; runtimes uniform in `runtime_secs`.
fn poisson_arrivals(
    random: &mut SplitMix64,
    horizon: f64,
    peak: f64,
    rate: impl Fn(f64) -> f64,
    runtime_secs: (f64, f64),
) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    let mut t = 0.0;
    loop {
        t += random.exponential(peak);
        if t >= horizon {
            return arrivals;
        }
        if random.unit() * peak < rate(t) {
            arrivals.push(Arrival {
                at: Duration::from_secs_f64(t),
                runtime: Duration::from_secs_f64(random.between(runtime_secs.0, runtime_secs.1)),
            });
        }
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): small, fast, and the same numbers on every
/// platform, which is all a reproducible scenario needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Exponentially distributed with this rate (mean `1 / rate`).
    fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.unit()).ln() / rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn workload(arrivals: &[(u64, u64)], horizon_secs: u64) -> Workload {
        Workload {
            name: "test".to_string(),
            arrivals: arrivals
                .iter()
                .map(|&(at, runtime)| Arrival {
                    at: ms(at),
                    runtime: ms(runtime),
                })
                .collect(),
            horizon: Duration::from_secs(horizon_secs),
        }
    }

    #[test]
    fn engine_latency_follows_the_measured_rates() {
        let engine = EngineModel::measured();
        let latency = |k| engine.park_latency(k).as_secs_f64();
        assert!((latency(1) - 0.303).abs() < 0.001);
        assert!((latency(2) - 0.444).abs() < 0.001);
        assert!((latency(4) - 0.702).abs() < 0.001);
        assert!((latency(8) - 1.429).abs() < 0.001);
        assert!((engine.parks_per_sec(3) - 5.1).abs() < 1e-9);
        assert_eq!(engine.parks_per_sec(20), 5.6);
    }

    #[test]
    fn a_lone_claim_on_a_parked_container_is_a_hit_and_is_replaced() {
        let outcome = simulate(
            &workload(&[(10_000, 500)], 20),
            &PoolLimits::default(),
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!(
            (outcome.hits, outcome.cold_starts, outcome.queued),
            (1, 0, 0)
        );
        assert_eq!(outcome.parks, 1, "the replacement");
        // One container idle throughout: the parked one until the claim, then its
        // replacement, whose parking counts as idle too. 20 s, up to float rounding.
        assert!((outcome.idle_container_secs - 20.0).abs() < 1e-6);
        assert_eq!(outcome.p99_claim_wait, Duration::ZERO);
    }

    #[test]
    fn a_second_claim_within_a_park_time_is_a_cold_start() {
        let outcome = simulate(
            &workload(&[(10_000, 500), (10_100, 500)], 20),
            &PoolLimits::default(),
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!((outcome.hits, outcome.cold_starts), (1, 1));
        // The cold park shares the engine with the replacement: 2 in flight, 0.44 s
        // for both would be the steady figure; it started 0.1 s later, so between.
        let wait = outcome.max_claim_wait.as_secs_f64();
        assert!(wait > 0.303 && wait < 0.444, "{wait}");
    }

    #[test]
    fn max_containers_queues_claims() {
        let limits = PoolLimits {
            max_containers: 2,
            ..PoolLimits::default()
        };
        // Three long jobs at once with room for two containers: one hit, one cold
        // start, one waits for a slot.
        let outcome = simulate(
            &workload(&[(1_000, 5_000), (1_000, 5_000), (1_000, 5_000)], 20),
            &limits,
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!(
            (outcome.hits, outcome.cold_starts, outcome.queued),
            (1, 1, 1)
        );
        assert!(outcome.max_claim_wait > Duration::from_secs(5));
    }

    #[test]
    fn the_shipped_queue_rules_hold_max_queue_and_max_wait() {
        // One container at most, a queue of one, 2 s of patience: the first claim
        // takes the parked container for 10 s, the second queues and times out, the
        // third finds the queue full.
        let limits = PoolLimits {
            max_containers: 1,
            max_queue: 1,
            max_wait: Duration::from_secs(2),
            ..PoolLimits::default()
        };
        let outcome = simulate(
            &workload(&[(1_000, 10_000), (1_100, 100), (1_200, 100)], 20),
            &limits,
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!(
            (
                outcome.hits,
                outcome.cold_starts,
                outcome.queued,
                outcome.timed_out,
                outcome.refused
            ),
            (1, 0, 1, 1, 1)
        );
    }

    #[test]
    fn parked_containers_past_max_age_are_replaced() {
        // Parked at 0; older than 10 s at the reconcile of 11 s, replaced (parked at
        // 11.303 s), and that one again at the first reconcile past 21.303 s.
        let limits = PoolLimits {
            max_age: Duration::from_secs(10),
            ..PoolLimits::default()
        };
        let outcome = simulate(
            &workload(&[], 30),
            &limits,
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!((outcome.replaced, outcome.parks), (2, 2));
    }

    #[test]
    fn openwhisk_grows_after_cold_starts_and_expires_after_ttl() {
        let limits = PoolLimits::default();
        let rule = OpenWhiskRule::shipped(&limits);
        // Four claims at once at 10 s: one hit, three cold starts. At the 60 s check
        // the target grows to 3 and the pool parks two more one replenish delay
        // (15 ms) later; nothing more comes, so they expire at the first check past
        // their ttl: created at 60.015 s, past it at 180.015 s, removed at 240 s.
        // The hit's replacement (10.015 s) goes at the check of 180 s.
        let claims = [(10_000, 100), (10_000, 100), (10_000, 100), (10_000, 100)];
        let outcome = simulate(
            &workload(&claims, 300),
            &limits,
            &EngineModel::measured(),
            &Policy::OpenWhisk(rule),
        );
        assert_eq!((outcome.hits, outcome.cold_starts), (1, 3));
        // 1 container for 300 s, plus 2 more from 60 s to 180 s and 1 more to 240 s.
        let extra = outcome.idle_container_secs - 300.0;
        assert!((extra - 300.0).abs() < 3.0, "{extra}");
    }

    #[test]
    fn the_adaptive_policy_grows_during_a_burst() {
        // Trickle, then 4 claims/s for 30 s: a fixed pool of 1 misses most of the
        // burst, the adaptive one most of it hits.
        let mut claims: Vec<(u64, u64)> = (0..10).map(|i| (i * 6_000, 200)).collect();
        claims.extend((0..120).map(|i| (60_000 + i * 250, 200)));
        let trace = workload(&claims, 120);
        let engine = EngineModel::measured();
        let limits = PoolLimits::default();
        let fixed = simulate(&trace, &limits, &engine, &Policy::Fixed(1));
        let adaptive = simulate(
            &trace,
            &limits,
            &engine,
            &Policy::Adaptive(SizingConfig::default()),
        );
        assert!(adaptive.hit_rate() > 0.95, "{adaptive:?}");
        assert!(fixed.hit_rate() < 0.7, "{fixed:?}");
    }

    #[test]
    fn a_reset_container_serves_the_oldest_waiter() {
        // Room for one container. A takes the parked one at 1 s for 1 s; B (1.1 s)
        // queues. Reused: A's container is reset (10 ms) and goes to B at 2.010 s,
        // and is removed after B, its second job; the one park is the replacement
        // after that. Single use: A's slot frees at 2 s and B waits for a park of
        // its own (0.303 s alone), then that one is replaced too.
        let limits = PoolLimits {
            max_containers: 1,
            ..PoolLimits::default()
        };
        let trace = workload(&[(1_000, 1_000), (1_100, 100)], 20);
        let engine = EngineModel::measured();
        let run = |reuse| {
            let limits = PoolLimits { reuse, ..limits };
            simulate(&trace, &limits, &engine, &Policy::Fixed(1))
        };
        let (single, reused) = (run(1), run(2));
        assert_eq!(
            (reused.hits, reused.queued, reused.reused, reused.parks),
            (1, 1, 1, 1)
        );
        assert_eq!(reused.max_claim_wait, ms(2_010) - ms(1_100));
        assert_eq!(
            (single.hits, single.queued, single.reused, single.parks),
            (1, 1, 0, 2)
        );
        let wait = single.max_claim_wait.as_secs_f64();
        assert!((wait - (0.9 + engine.park_latency(1).as_secs_f64())).abs() < 1e-6);
    }

    #[test]
    fn a_reset_container_is_kept_beside_the_target_within_idle_ttl() {
        // The pool's own rules: the hit's replacement is parked (10.318 s) before
        // the reset container is back (10.51 s); then two are parked for a target
        // of 1, and neither goes: the pool saw one container coming back within
        // idle_ttl (10 min), and keeps a place for it beside the target.
        let limits = PoolLimits {
            reuse: 2,
            ..PoolLimits::default()
        };
        let outcome = simulate(
            &workload(&[(10_000, 500)], 20),
            &limits,
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!(
            (outcome.hits, outcome.reused, outcome.shrunk, outcome.parks),
            (1, 1, 0, 1)
        );
    }

    #[test]
    fn a_container_serves_at_most_reuse_jobs() {
        // One container at a time, five claims at once, three jobs per container:
        // the parked one serves three (a hit, then two waiters after resets), is
        // removed, and a park serves the last two and is parked again.
        let limits = PoolLimits {
            max_containers: 1,
            reuse: 3,
            ..PoolLimits::default()
        };
        let claims: Vec<(u64, u64)> = (0..5).map(|i| (1_000 + i, 100)).collect();
        let outcome = simulate(
            &workload(&claims, 20),
            &limits,
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!(
            (outcome.hits, outcome.queued, outcome.parks, outcome.reused),
            (1, 4, 1, 4)
        );
    }

    #[test]
    fn a_reset_container_past_max_age_is_removed() {
        // Parked at 0, claimed at 9.9 s, back from its reset at 10.41 s: older than
        // max_age (10 s), so it is removed, not parked again.
        let limits = PoolLimits {
            reuse: 5,
            max_age: Duration::from_secs(10),
            ..PoolLimits::default()
        };
        let outcome = simulate(
            &workload(&[(9_900, 500)], 20),
            &limits,
            &EngineModel::measured(),
            &Policy::Fixed(1),
        );
        assert_eq!((outcome.hits, outcome.reused, outcome.shrunk), (1, 0, 0));
    }

    #[test]
    fn reuse_values_add_single_use_and_refuse_zero() {
        assert_eq!(reuse_values(&[]).ok(), Some(vec![1]));
        assert_eq!(reuse_values(&[100, 10, 10]).ok(), Some(vec![1, 10, 100]));
        assert!(matches!(reuse_values(&[10, 0]), Err(SimError::Reuse(0))));
    }

    #[test]
    fn parse_trace_groups_by_function_and_rounds_the_horizon_up() {
        let text = "arrival_s,function,runtime_ms\n0.5,b,10\n0.25,a,20\n\n7.1,a,30\n";
        let text = text.replace("7.1,a,30", "7.1,a,30\n3,b,-5");
        let trace = parse_trace(&text, "inline").expect("valid trace");
        assert_eq!(trace.negative_runtimes, 1);
        let workloads = trace.workloads;
        let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(workloads[0].arrivals.len(), 2);
        assert_eq!(workloads[0].arrivals[1].runtime, ms(30));
        assert_eq!(workloads[1].arrivals[1].runtime, Duration::ZERO);
        assert!(workloads
            .iter()
            .all(|w| w.horizon == Duration::from_secs(8)));
    }

    #[test]
    fn parse_trace_names_the_bad_line() {
        let missing = parse_trace("arrival_s,runtime_ms\n1,2\n", "t.csv");
        assert!(matches!(missing, Err(SimError::Parse { line: 1, .. })));
        let negative = parse_trace("arrival_s,function,runtime_ms\n1,a,2\n-1,a,2\n", "t.csv");
        match negative {
            Err(error @ SimError::Parse { line: 3, .. }) => {
                assert!(error.to_string().contains("t.csv, line 3"), "{error}");
            }
            other => panic!("expected a parse error on line 3, got {other:?}"),
        }
        let short = parse_trace("arrival_s,function,runtime_ms\n1,a\n", "t.csv");
        assert!(matches!(short, Err(SimError::Parse { line: 2, .. })));
        let empty = parse_trace("arrival_s,function,runtime_ms\n", "t.csv");
        assert!(matches!(empty, Err(SimError::Empty { .. })));
    }

    #[test]
    fn synthetic_scenarios_are_the_same_every_time() {
        let first = synthetic_workloads();
        assert_eq!(first, synthetic_workloads());
        let counts: Vec<usize> = first.iter().map(|w| w.arrivals.len()).collect();
        assert!(counts.iter().all(|&n| n > 500), "{counts:?}");
        for workload in &first {
            assert!(workload.arrivals.windows(2).all(|w| w[0].at <= w[1].at));
        }
    }
}
