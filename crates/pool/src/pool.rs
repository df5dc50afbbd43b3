//! One pool per profile against the engine: parked containers kept ready by a
//! reconcile loop, handed out one per job, replaced in the background. It executes
//! the rules of `decide` (when to park, what to remove, whom a container serves)
//! and must not decide them itself; how a job runs is `warmpool-exec`'s alone (a
//! claim ends in the same `Parked::run` as a cold start).

use crate::decide::{
    self, Backoff, ClaimAction, Counts, IdleView, Limits, Placement, RemoveReason, RECONCILE_EVERY,
    REPLENISH_DELAY,
};
use crate::sizing::{DemandTracker, SizingConfig};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warmpool_core::{labels, Job, Profile};
use warmpool_exec::{
    AfterRun, ExecError, Executor, Outcome, OutputSink, Parked, Recycle, ResolvedProfile,
    RunControl,
};
use warmpool_runtime::{ContainerAction, EngineEvent, Runtime};

pub use crate::decide::MAX_PARALLEL_PARKS;
/// How often the pool re-reads its image without an image event.
const IMAGE_CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long the engine may take to answer a ping before it counts as gone.
const ENGINE_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A park failed because the engine is not there (not because of the profile
/// or the image): jobs wait for it rather than fail.
fn engine_unreachable(e: &ExecError) -> bool {
    matches!(
        e,
        ExecError::Runtime(warmpool_runtime::RuntimeError::Unreachable { .. })
    )
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pool \"{profile}\" is full: {queued} jobs already wait for a container (max_queue = {max_queue}); try again later")]
    Full {
        profile: String,
        queued: usize,
        max_queue: usize,
    },
    #[error("no container of pool \"{profile}\" became free within max_wait ({wait:?}); the pool is at max_containers")]
    WaitTimeout { profile: String, wait: Duration },
    #[error("pool \"{profile}\" is shutting down and takes no more jobs")]
    ShuttingDown { profile: String },
    #[error("pool \"{profile}\": {source}")]
    Exec {
        profile: String,
        #[source]
        source: ExecError,
    },
}

/// Counters of one pool, for logs and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Claims that had to queue (a subset of misses).
    pub queued: AtomicU64,
    pub wait_time_us: AtomicU64,
    pub claim_time_us: AtomicU64,
    pub claims: AtomicU64,
    pub park_time_us: AtomicU64,
    /// Containers parked (for the pool or for a cold start).
    pub started: AtomicU64,
    pub failed: AtomicU64,
    /// Parked containers removed for being stale (old image) or too old (max_age).
    pub replaced: AtomicU64,
    /// Parked containers that died or vanished and were dropped from the pool.
    pub reaped: AtomicU64,
    /// Parked containers removed because demand fell (above the idle target).
    pub shrunk: AtomicU64,
    /// Jobs moved to another container because theirs died before the job started.
    pub retried: AtomicU64,
    /// Containers reset by their gate after a job and parked again (reuse).
    pub reused: AtomicU64,
    /// Resets that failed (the container was removed instead).
    pub reset_failed: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// A moment's view of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub profile: String,
    pub image: String,
    pub image_id: String,
    pub idle: usize,
    pub busy: usize,
    /// Parks in flight: for the pool, and for claims that found none parked.
    pub starting: usize,
    pub queued: usize,
    pub target_idle: usize,
    pub hits: u64,
    pub misses: u64,
    pub replaced: u64,
    pub reaped: u64,
    pub retried: u64,
    pub failed: u64,
    /// Containers parked again after a job, reset by their gate (reuse).
    pub reused: u64,
    /// Resets that failed (the container was removed instead).
    pub reset_failed: u64,
    pub last_error: Option<String>,
    /// The pool saw its engine go away (a park could not reach it, its event
    /// stream broke and a ping failed) and has not seen it back yet.
    pub engine_down: bool,
}

struct Idle {
    parked: Parked,
    /// When it was parked, since the pool's epoch.
    parked_at: Duration,
}

/// A container handed to a queued claim, with its busy slot: if the claim is gone
/// before it reads this, dropping it frees the slot and removes the container.
struct Delivered {
    parked: Parked,
    slot: Slot,
}

struct Waiter {
    tx: oneshot::Sender<Result<Delivered, PoolError>>,
}

struct State {
    idle: VecDeque<Idle>,
    /// Parks in flight for the pool.
    parking: usize,
    /// Parks in flight for claims that found nothing parked.
    cold: usize,
    busy: usize,
    waiters: VecDeque<Waiter>,
    demand: DemandTracker,
    closed: bool,
    /// Park for the idle target (off: park only for claims, e.g. a one-off run).
    replenish: bool,
    backoff: Backoff,
    last_error: Option<String>,
    /// The engine cannot be reached: nothing is parked, claims wait rather
    /// than fail, and the pool takes no new work (capacity 0) until the
    /// engine answers again, which resets the back-off.
    engine_down: bool,
    /// Containers (counted busy) whose gate is resetting them after a job:
    /// each is parked again in a few milliseconds, so a claim waits for one
    /// rather than start a container of its own.
    resetting: usize,
    /// Containers (counted busy) that come back after their job (reuse, with
    /// jobs left): the pool keeps no more parked than the target beside them.
    returning: usize,
    /// The most `returning` has been within `idle_ttl`, and since when: what
    /// the rules see, so a closed loop of clients (whose jobs end and start
    /// again in turn) does not have its containers removed as surplus each
    /// time one is between jobs.
    returning_peak: (usize, Duration),
}

impl State {
    /// Keep `returning_peak` (see there) at `now`.
    fn note_returning(&mut self, now: Duration, idle_ttl: Duration) {
        let (peak, at) = self.returning_peak;
        if self.returning >= peak || now.saturating_sub(at) > idle_ttl {
            self.returning_peak = (self.returning, now);
        }
    }

    /// The counts the rules decide on; waiters whose caller went away are dropped
    /// first, so only live ones count.
    fn counts(&mut self) -> Counts {
        self.waiters.retain(|w| !w.tx.is_closed());
        Counts {
            parking: self.parking,
            cold: self.cold,
            busy: self.busy,
            waiters: self.waiters.len(),
            resetting: self.resetting,
            returning: self.returning.max(self.returning_peak.0),
        }
    }

    /// The parked containers as the rules see them, longest parked first.
    fn idle_views<'a>(&'a self, image_id: &'a str) -> impl Iterator<Item = IdleView> + 'a {
        self.idle.iter().map(move |i| IdleView {
            parked_at: i.parked_at,
            image_current: i.parked.profile().image.id == image_id,
        })
    }
}

struct Inner {
    name: String,
    instance: String,
    executor: Executor,
    limits: Limits,
    profile: Mutex<Arc<ResolvedProfile>>,
    state: Mutex<State>,
    wake: Notify,
    counters: Counters,
    epoch: Instant,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// The pool of one profile. Cheap to clone; every clone is the same pool. When
/// the last clone held by users goes, the pool closes (its own tasks hold
/// clones without the owner guard, so they do not keep it alive).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
    _owner: Option<Arc<OwnerGuard>>,
}

struct OwnerGuard {
    inner: Arc<Inner>,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        Pool::internal(&self.inner).close();
    }
}

/// A parked container handed to one job, and the job's slot in the pool.
pub struct Claimed {
    parked: Parked,
    /// It was parked before the claim came (a warm start).
    pub hit: bool,
    /// From the claim to the container being in hand.
    pub claim_time: Duration,
    _slot: Slot,
}

impl Claimed {
    pub fn id(&self) -> &str {
        self.parked.id()
    }

    /// Run the job on this container: `Parked::run`, the only path a job takes.
    pub async fn run<S: OutputSink>(
        self,
        job: impl std::borrow::Borrow<Job> + Send,
        sink: &mut S,
        control: RunControl,
    ) -> Result<Outcome, ExecError> {
        // The slot stays taken until the job is done with its container: for a
        // container that is reused, until its gate has reset it.
        let Claimed { parked, _slot, .. } = self;
        if parked.profile().profile.reuse <= 1 {
            return parked.run(job, sink, control).await;
        }
        let inner = _slot.inner.clone();
        let returning = Returning::new(_slot, parked.jobs() + 1 < parked.profile().profile.reuse);
        let phase = returning.phase.clone();
        let recycle: Recycle = Box::new(move |after| {
            let pool = Pool::internal(&returning.inner);
            pool.recycled(after, returning)
        });
        let outcome = parked.run_then(job, sink, control, Some(recycle)).await;
        // The recycle is still held (by the reset under way) or was called:
        // count the reset unless it is over already.
        if Arc::strong_count(&phase) > 1 {
            let mut st = lock(&inner.state);
            if phase
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                st.resetting += 1;
            }
        }
        outcome
    }
}

/// A job's slot on a container that may come back (reuse): counted in the
/// pool's `returning` while the job runs and its container is reset, so the
/// pool neither parks nor keeps containers for the target in its place. Its
/// drop (the reset done, failed, or the container not reused) gives all back.
struct Returning {
    inner: Arc<Inner>,
    slot: Option<Slot>,
    counted: bool,
    /// 0: the job runs; 1: its container is being reset (counted in
    /// `resetting`); 2: over. Changed under the state lock only.
    phase: Arc<std::sync::atomic::AtomicU8>,
}

impl Returning {
    fn new(slot: Slot, jobs_left: bool) -> Returning {
        let inner = slot.inner.clone();
        if jobs_left {
            let idle_ttl = lock(&inner.profile).profile.idle_ttl;
            let mut st = lock(&inner.state);
            st.returning += 1;
            st.note_returning(inner.epoch.elapsed(), idle_ttl);
        }
        Returning {
            inner,
            slot: Some(slot),
            counted: jobs_left,
            phase: Arc::new(std::sync::atomic::AtomicU8::new(0)),
        }
    }

    /// Its container is back or gone: it counts no more (under the lock the
    /// caller holds).
    fn settle(&mut self, st: &mut State) {
        if std::mem::take(&mut self.counted) {
            st.returning = st.returning.saturating_sub(1);
        }
        if self.phase.swap(2, Ordering::SeqCst) == 1 {
            st.resetting = st.resetting.saturating_sub(1);
        }
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        let inner = self.inner.clone();
        self.settle(&mut lock(&inner.state));
        // The slot last: its drop takes the lock, and may park for a waiter.
        drop(self.slot.take());
    }
}

/// A busy slot: the pool counts it until the job is done with its container.
struct Slot {
    inner: Arc<Inner>,
    /// Disarmed when the count was already given back under the state lock
    /// (dropping an armed slot takes that lock).
    armed: bool,
}

impl Slot {
    fn new(inner: &Arc<Inner>) -> Slot {
        Slot {
            inner: inner.clone(),
            armed: true,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = lock(&self.inner.state);
        st.busy = st.busy.saturating_sub(1);
        // A freed slot belongs to the oldest queued claim: park for it now, before
        // a newer claim can take the room as a cold start.
        let counts = st.counts();
        let serve_queue = !st.closed
            && decide::on_slot_freed(st.idle.len(), counts, &self.inner.limits)
            && tokio::runtime::Handle::try_current().is_ok();
        if serve_queue {
            st.parking += 1;
        }
        drop(st);
        if serve_queue {
            let pool = Pool::internal(&self.inner);
            let profile = pool.profile();
            self.inner
                .tasks
                .spawn(async move { pool.park_for_pool(profile).await });
        }
        self.inner.wake.notify_one();
    }
}

/// What a pool run produced.
#[derive(Debug)]
pub struct PoolRun {
    pub outcome: Outcome,
    /// The first container was parked before the claim (a warm start).
    pub hit: bool,
    /// The job was moved to a second container because the first died before the
    /// job started.
    pub retried: bool,
    pub claim_time: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pool's limits, from the profile's keys.
fn sizing_config(p: &Profile) -> SizingConfig {
    SizingConfig {
        min_idle: p.min_idle,
        max_idle: p.max_idle,
        idle_ttl: p.idle_ttl,
        ..SizingConfig::default()
    }
}

impl Pool {
    /// Start the pool of `profile` (resolved on the engine) for `instance`: its
    /// reconcile loop and its engine-event follower start now, and it begins to fill.
    pub fn start(executor: Executor, resolved: Arc<ResolvedProfile>, instance: &str) -> Pool {
        let mut resolved = (*resolved).clone();
        // Every container of this pool says whose it is.
        resolved
            .profile
            .labels
            .insert(labels::INSTANCE.to_string(), instance.to_string());
        let p = resolved.profile.clone();
        let inner = Arc::new(Inner {
            name: p.name.clone(),
            instance: instance.to_string(),
            executor,
            limits: Limits::of(&p),
            profile: Mutex::new(Arc::new(resolved)),
            state: Mutex::new(State {
                idle: VecDeque::new(),
                parking: 0,
                cold: 0,
                busy: 0,
                waiters: VecDeque::new(),
                demand: DemandTracker::new(sizing_config(&p)),
                closed: false,
                replenish: true,
                backoff: Backoff::default(),
                last_error: None,
                engine_down: false,
                resetting: 0,
                returning: 0,
                returning_peak: (0, Duration::ZERO),
            }),
            wake: Notify::new(),
            counters: Counters::default(),
            epoch: Instant::now(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let pool = Pool {
            inner: inner.clone(),
            _owner: Some(Arc::new(OwnerGuard { inner })),
        };
        let (a, b) = (Pool::internal(&pool.inner), Pool::internal(&pool.inner));
        pool.inner
            .tasks
            .spawn(async move { a.reconcile_loop().await });
        pool.inner
            .tasks
            .spawn(async move { b.follow_events().await });
        pool
    }

    /// A handle for the pool's own tasks: it does not keep the pool open.
    fn internal(inner: &Arc<Inner>) -> Pool {
        Pool {
            inner: inner.clone(),
            _owner: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The profile as currently resolved (its image id follows retags).
    pub fn profile(&self) -> Arc<ResolvedProfile> {
        lock(&self.inner.profile).clone()
    }

    fn now(&self) -> Duration {
        self.inner.epoch.elapsed()
    }

    fn err_profile(&self) -> String {
        self.inner.name.clone()
    }

    pub fn stats(&self) -> PoolStats {
        let profile = self.profile();
        let st = lock(&self.inner.state);
        let c = &self.inner.counters;
        PoolStats {
            profile: self.inner.name.clone(),
            image: profile.profile.image.clone(),
            image_id: profile.image.id.clone(),
            idle: st.idle.len(),
            busy: st.busy,
            starting: st.parking + st.cold,
            queued: st.waiters.iter().filter(|w| !w.tx.is_closed()).count(),
            target_idle: st.demand.target_idle(self.now()),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            replaced: c.replaced.load(Ordering::Relaxed),
            reaped: c.reaped.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            reused: c.reused.load(Ordering::Relaxed),
            reset_failed: c.reset_failed.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
            engine_down: st.engine_down,
        }
    }

    /// How many more jobs this pool can take now without queueing behind a
    /// full pool: its parked containers, the parks in flight, and the room
    /// `max_containers` leaves to start more (0 when claims already wait, the
    /// engine is down or the pool is closed). A peek: nothing is reserved.
    pub fn capacity(&self) -> usize {
        let mut st = lock(&self.inner.state);
        if st.closed || st.engine_down {
            return 0;
        }
        let idle = st.idle.len();
        let counts = st.counts();
        if counts.waiters > 0 {
            return 0;
        }
        let room = self
            .inner
            .limits
            .max_containers
            .saturating_sub(counts.total(idle));
        idle + counts.parking + st.resetting + room
    }

    /// Parked containers now.
    pub fn idle(&self) -> usize {
        lock(&self.inner.state).idle.len()
    }

    /// Ids of the parked containers, oldest first.
    pub fn idle_ids(&self) -> Vec<String> {
        lock(&self.inner.state)
            .idle
            .iter()
            .map(|i| i.parked.id().to_string())
            .collect()
    }

    /// A pool of its own for one job or one measurement (`warmpool run`, `bench`):
    /// `keep` containers parked (0: every claim starts its own), under a new
    /// instance `<prefix>-<unique>`, so it never touches another pool's containers.
    pub fn start_one_off(
        executor: Executor,
        resolved: &ResolvedProfile,
        keep: usize,
        prefix: &str,
    ) -> Pool {
        let mut r = resolved.clone();
        r.profile.min_idle = keep;
        r.profile.max_idle = keep;
        r.profile.max_containers = r.profile.max_containers.max(keep.max(1));
        let instance = format!("{prefix}-{}", labels::unique_suffix());
        Pool::start(executor, Arc::new(r), &instance)
    }

    /// Containers running a job now (cheap: no sizing computed).
    pub fn busy(&self) -> usize {
        lock(&self.inner.state).busy
    }

    /// Wait until a container is parked, or say why none will be (a failed park,
    /// or nothing within the park timeout).
    pub async fn wait_parked(&self) -> Result<(), String> {
        let deadline = Instant::now() + warmpool_exec::PARK_TIMEOUT;
        loop {
            let (idle, error) = {
                let st = lock(&self.inner.state);
                (st.idle.len(), st.last_error.clone())
            };
            if idle > 0 {
                return Ok(());
            }
            if let Some(e) = error {
                return Err(format!("parking a container failed: {e}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no container was parked within {:?}",
                    warmpool_exec::PARK_TIMEOUT
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Wait until at least `n` containers are parked (bounded by `within`).
    pub async fn wait_idle(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if lock(&self.inner.state).idle.len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lock(&self.inner.state).idle.len() >= n
    }

    /// A parked container at once (a hit), or `None` with nothing done (no
    /// arrival counted, nothing queued or parked): the caller then claims as
    /// usual. Lets the service store a job as already running when it can start
    /// at once (one commit instead of two before the hand-over).
    pub fn try_claim(&self) -> Option<Claimed> {
        let started = Instant::now();
        let profile = self.profile();
        let parked = {
            let mut st = lock(&self.inner.state);
            if st.closed {
                return None;
            }
            let (now, action) = self.plan_claim(&mut st, &profile);
            if action != ClaimAction::Hit {
                return None;
            }
            st.demand.on_arrival(now);
            self.take_parked(&mut st)
        };
        self.inner.wake.notify_one();
        add(&self.inner.counters.hits, 1);
        Some(self.claimed(parked, Slot::new(&self.inner), true, started))
    }

    /// The claim rule, now: its action, after dropping the parked containers it
    /// says are stale or too old (dropping a parked container removes it).
    fn plan_claim(&self, st: &mut State, profile: &ResolvedProfile) -> (Duration, ClaimAction) {
        let now = self.now();
        let counts = st.counts();
        let decided = decide::claim(
            now,
            st.idle_views(&profile.image.id),
            counts,
            &self.inner.limits,
        );
        st.idle.drain(..decided.remove);
        add(&self.inner.counters.replaced, decided.remove as u64);
        (now, decided.action)
    }

    /// The front parked container, now busy (the claim rule said Hit).
    fn take_parked(&self, st: &mut State) -> Parked {
        match st.idle.pop_front() {
            Some(idle) => {
                st.busy += 1;
                idle.parked
            }
            // decide::claim says Hit only for a parked container.
            None => unreachable!("a hit without a parked container"),
        }
    }

    /// A claim served: counted, timed, handed over with its slot.
    fn claimed(&self, parked: Parked, slot: Slot, hit: bool, started: Instant) -> Claimed {
        let c = &self.inner.counters;
        let claim_time = started.elapsed();
        add(&c.claims, 1);
        add(&c.claim_time_us, micros(claim_time));
        Claimed {
            parked,
            hit,
            claim_time,
            _slot: slot,
        }
    }

    /// A container for one job: parked already (a hit), else parked now for this
    /// claim if `max_containers` allows (a miss, a cold start), else the next one
    /// that frees up, in arrival order (bounded by `max_queue` and `max_wait`).
    pub async fn claim(&self) -> Result<Claimed, PoolError> {
        let started = Instant::now();
        enum Plan {
            Hit(Box<Parked>),
            /// A cold start: the container this claim began comes here.
            Cold(oneshot::Receiver<Result<Delivered, PoolError>>),
            /// A place in the queue: the next container that frees comes here.
            Wait(oneshot::Receiver<Result<Delivered, PoolError>>),
        }
        let profile = self.profile();
        let plan = {
            let mut st = lock(&self.inner.state);
            if st.closed {
                return Err(PoolError::ShuttingDown {
                    profile: self.err_profile(),
                });
            }
            let (now, action) = self.plan_claim(&mut st, &profile);
            st.demand.on_arrival(now);
            // With the engine away a cold start would only fail: the claim
            // waits (up to max_wait) for the first container parked once the
            // engine is back. It was admitted already, so max_queue is not
            // asked again.
            let action = match action {
                ClaimAction::Cold if st.engine_down => ClaimAction::Queue,
                other => other,
            };
            match action {
                ClaimAction::Hit => Plan::Hit(Box::new(self.take_parked(&mut st))),
                ClaimAction::Cold => {
                    st.cold += 1;
                    let (tx, rx) = oneshot::channel();
                    // Never wait on another container's replenishment: park our own,
                    // in a task of the pool's, so a claim dropped half way leaves
                    // the container to the pool rather than wasted or leaked.
                    let pool = Pool::internal(&self.inner);
                    let profile = profile.clone();
                    self.inner
                        .tasks
                        .spawn(async move { pool.cold_start(profile, tx).await });
                    Plan::Cold(rx)
                }
                ClaimAction::Queue => {
                    let (tx, rx) = oneshot::channel();
                    st.waiters.push_back(Waiter { tx });
                    Plan::Wait(rx)
                }
                ClaimAction::Full { queued } => {
                    return Err(PoolError::Full {
                        profile: self.err_profile(),
                        queued,
                        max_queue: self.inner.limits.max_queue,
                    });
                }
            }
        };
        // Whatever happened, the pool may want to park more now.
        self.inner.wake.notify_one();
        let c = &self.inner.counters;
        let (parked, slot, hit) = match plan {
            Plan::Hit(parked) => {
                add(&c.hits, 1);
                (*parked, Slot::new(&self.inner), true)
            }
            Plan::Cold(rx) => {
                add(&c.misses, 1);
                // Bounded by the park's own timeout; an error is the park's. A
                // park that found the engine gone makes this claim a waiter
                // (its sender joins the queue): bounded by max_wait on top.
                let (parked, slot) = self
                    .await_delivery(rx, warmpool_exec::PARK_TIMEOUT + self.inner.limits.max_wait)
                    .await?;
                (parked, slot, false)
            }
            Plan::Wait(rx) => {
                add(&c.misses, 1);
                add(&c.queued, 1);
                let waited = Instant::now();
                let got = self.await_delivery(rx, self.inner.limits.max_wait).await;
                add(&c.wait_time_us, micros(waited.elapsed()));
                let (parked, slot) = got?;
                (parked, slot, false)
            }
        };
        Ok(self.claimed(parked, slot, hit, started))
    }

    /// The container a claim was promised, within `limit`.
    async fn await_delivery(
        &self,
        mut rx: oneshot::Receiver<Result<Delivered, PoolError>>,
        limit: Duration,
    ) -> Result<(Parked, Slot), PoolError> {
        let got = match tokio::time::timeout(limit, &mut rx).await {
            Ok(got) => got,
            Err(_) => {
                // Closing first means nothing can arrive after the check; a
                // container that came at the deadline is used, not dropped.
                rx.close();
                match rx.try_recv() {
                    Ok(got) => Ok(got),
                    Err(_) => {
                        return Err(PoolError::WaitTimeout {
                            profile: self.err_profile(),
                            wait: self.inner.limits.max_wait,
                        })
                    }
                }
            }
        };
        match got {
            Ok(Ok(Delivered { parked, slot })) => Ok((parked, slot)),
            Ok(Err(e)) => Err(e),
            // The pool closed meanwhile: the container serves nobody.
            Err(_) => Err(PoolError::ShuttingDown {
                profile: self.err_profile(),
            }),
        }
    }

    /// Claim a container and run `job` on it. If the container turns out dead
    /// before the job started (the gate never said STARTED), the job moves to
    /// another container, once, transparently.
    pub async fn run<S: OutputSink>(
        &self,
        job: Job,
        sink: &mut S,
        control: RunControl,
    ) -> Result<PoolRun, PoolError> {
        let claimed = self.claim().await?;
        self.run_claimed(claimed, job, sink, control).await
    }

    /// [`Pool::run`] for a container already claimed.
    pub async fn run_claimed<S: OutputSink>(
        &self,
        claimed: Claimed,
        job: Job,
        sink: &mut S,
        control: RunControl,
    ) -> Result<PoolRun, PoolError> {
        let (hit, claim_time) = (claimed.hit, claimed.claim_time);
        let exec = |source| PoolError::Exec {
            profile: self.err_profile(),
            source,
        };
        let first = claimed.run(&job, sink, control.clone()).await;
        let never_started = match &first {
            Ok(o) => o.lost.is_some() && !o.started,
            Err(ExecError::StreamLost { .. }) => true,
            Err(_) => false,
        };
        // A cancelled job stays cancelled: its container's death is the cancel.
        let never_started = never_started && !control.is_cancelled();
        if !never_started {
            let outcome = first.map_err(exec)?;
            return Ok(PoolRun {
                outcome,
                hit,
                retried: false,
                claim_time,
            });
        }
        // A pool fault must not fail a job that can still run.
        add(&self.inner.counters.retried, 1);
        tracing::info!(profile = %self.inner.name, "a claimed container died before its job started; running the job on another");
        let again = self.claim().await?;
        if control.is_cancelled() {
            // Cancelled while the second container was claimed: the job must not
            // start there. The first run's end is the job's (its container died
            // under it, which the cancel now explains); `again` is removed.
            drop(again);
            return Ok(PoolRun {
                outcome: first.map_err(exec)?,
                hit,
                retried: false,
                claim_time,
            });
        }
        let outcome = again.run(job, sink, control).await.map_err(exec)?;
        Ok(PoolRun {
            outcome,
            hit,
            retried: true,
            claim_time,
        })
    }

    /// A container's gate reset it after a job: it serves the next (a waiter,
    /// or parked) unless the pool closed or it is past `max_age`. Then its
    /// job's slot is given back.
    fn recycled(&self, after: AfterRun, mut returning: Returning) {
        let c = &self.inner.counters;
        match after {
            AfterRun::Reset(parked) => {
                let mut st = lock(&self.inner.state);
                returning.settle(&mut st);
                if st.closed || parked.age() >= self.inner.limits.max_age {
                    // Dropping it removes it.
                    drop(parked);
                } else {
                    add(&c.reused, 1);
                    self.deliver(&mut st, *parked);
                }
            }
            AfterRun::ResetFailed(why) => {
                returning.settle(&mut lock(&self.inner.state));
                add(&c.reset_failed, 1);
                tracing::warn!(profile = %self.inner.name, reason = %why, "a container could not be reset after its job; removed it");
            }
        }
        drop(returning);
        self.inner.wake.notify_one();
    }

    /// A parked container is ready and nobody claimed it in particular: the
    /// oldest live waiter gets it, else the pool (`decide::place_parked`).
    fn deliver(&self, st: &mut State, mut parked: Parked) {
        while let Placement::Waiter = decide::place_parked(false, st.counts()) {
            let Some(w) = st.waiters.pop_front() else {
                break;
            };
            match self.hand_over(st, w.tx, parked) {
                None => return,
                // Gone since the count: try the next one.
                Some(returned) => parked = returned,
            }
        }
        // A reused container's age runs from its first park (max_age).
        // The queue stays ordered longest parked first, as the rules expect.
        let parked_at = self.now().saturating_sub(parked.age());
        let at = st.idle.partition_point(|i| i.parked_at <= parked_at);
        st.idle.insert(at, Idle { parked, parked_at });
    }

    /// Hand `parked` with a busy slot to one claim; if that claim is gone, the
    /// container comes back (and the count is given back here, under the lock we
    /// hold: an armed slot would take it again).
    fn hand_over(
        &self,
        st: &mut State,
        tx: oneshot::Sender<Result<Delivered, PoolError>>,
        parked: Parked,
    ) -> Option<Parked> {
        st.busy += 1;
        let slot = Slot::new(&self.inner);
        match tx.send(Ok(Delivered { parked, slot })) {
            Ok(()) => None,
            Err(returned) => {
                st.busy -= 1;
                match returned {
                    Ok(Delivered { parked, mut slot }) => {
                        slot.armed = false;
                        Some(parked)
                    }
                    // We sent Ok: nothing else comes back.
                    Err(_) => None,
                }
            }
        }
    }

    /// A cold start: park for one claim, then give it the container. If the claim
    /// was dropped meanwhile (a job cancelled during its cold start), the container
    /// goes to the pool, as `decide::place_parked` says: a waiter, or parked.
    async fn cold_start(
        &self,
        profile: Arc<ResolvedProfile>,
        tx: oneshot::Sender<Result<Delivered, PoolError>>,
    ) {
        let result = self.inner.executor.park(profile).await;
        let c = &self.inner.counters;
        let mut st = lock(&self.inner.state);
        st.cold = st.cold.saturating_sub(1);
        match result {
            // Closed while we parked: this container serves nobody (dropping it
            // removes it; the claim, if still there, hears "shutting down").
            Ok(parked) if st.closed => drop(parked),
            Ok(parked) => {
                st.engine_down = false;
                let took = parked.park_timings().total;
                st.demand.on_park_time(took);
                add(&c.started, 1);
                add(&c.park_time_us, micros(took));
                let counts = st.counts();
                match decide::place_parked(!tx.is_closed(), counts) {
                    Placement::Claimant => {
                        if let Some(parked) = self.hand_over(&mut st, tx, parked) {
                            self.deliver(&mut st, parked);
                        }
                    }
                    Placement::Waiter | Placement::Idle => self.deliver(&mut st, parked),
                }
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                add(&c.failed, 1);
                if engine_unreachable(&e) && !st.closed {
                    // Not the job's fault: it waits, first in line, for the
                    // engine to come back.
                    self.engine_lost(&mut st, &e);
                    if !tx.is_closed() {
                        st.waiters.push_front(Waiter { tx });
                    }
                } else {
                    let _ = tx.send(Err(PoolError::Exec {
                        profile: self.err_profile(),
                        source: e,
                    }));
                }
            }
        }
        drop(st);
        self.inner.wake.notify_one();
    }

    /// The engine cannot be reached: say so once, and hold parks until it is
    /// back (see [`engine_back`](Self::engine_back)).
    fn engine_lost(&self, st: &mut State, why: &(dyn std::fmt::Display + Sync)) {
        if !st.engine_down {
            st.engine_down = true;
            tracing::warn!(profile = %self.inner.name, error = %why, "the engine cannot be reached; jobs wait until it is back");
        }
    }

    /// The engine answers again: the back-off of the outage is forgotten and
    /// the pool refills at once.
    fn engine_back(&self) {
        let mut st = lock(&self.inner.state);
        let was_down = std::mem::replace(&mut st.engine_down, false);
        if was_down {
            st.backoff.succeeded();
            st.last_error = None;
            tracing::info!(profile = %self.inner.name, "the engine is back; refilling the pool");
        }
        drop(st);
        if was_down {
            self.inner.wake.notify_one();
        }
    }

    async fn reconcile_loop(&self) {
        let mut last_image_check = Instant::now();
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                _ = self.inner.wake.notified() => {
                    // Let the hand-over that woke us go first: a park started in the
                    // same instant competes with it for the engine and the CPU. It
                    // also batches the wakes of a burst into one reconcile.
                    tokio::time::sleep(REPLENISH_DELAY).await;
                }
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
            if last_image_check.elapsed() >= IMAGE_CHECK_EVERY {
                last_image_check = Instant::now();
                self.refresh_image().await;
            }
            self.reconcile();
        }
    }

    /// Compare what is parked with what should be, and act as `decide::reconcile`
    /// says: drop stale, aged and surplus containers; start parks up to the target
    /// (and for queued claims).
    fn reconcile(&self) {
        let profile = self.profile();
        let starts = {
            let mut st = lock(&self.inner.state);
            if st.closed {
                return;
            }
            let now = self.now();
            st.note_returning(now, profile.profile.idle_ttl);
            let target = if st.replenish {
                st.demand.target_idle(now)
            } else {
                0
            };
            let counts = st.counts();
            let plan = decide::reconcile(
                now,
                st.idle_views(&profile.image.id),
                counts,
                target,
                st.backoff.holds(now) || st.engine_down,
                &self.inner.limits,
            );
            // Highest index first, so the others stay where they are.
            for removal in plan.remove.iter().rev() {
                // Dropping a parked container removes it.
                if st.idle.remove(removal.index).is_some() {
                    let counter = match removal.reason {
                        RemoveReason::StaleImage | RemoveReason::TooOld => {
                            &self.inner.counters.replaced
                        }
                        RemoveReason::Surplus => &self.inner.counters.shrunk,
                    };
                    add(counter, 1);
                }
            }
            st.parking += plan.park;
            plan.park
        };
        for _ in 0..starts {
            let pool = Pool::internal(&self.inner);
            let profile = profile.clone();
            self.inner
                .tasks
                .spawn(async move { pool.park_for_pool(profile).await });
        }
    }

    async fn park_for_pool(&self, profile: Arc<ResolvedProfile>) {
        let result = self.inner.executor.park(profile).await;
        let c = &self.inner.counters;
        let mut st = lock(&self.inner.state);
        st.parking = st.parking.saturating_sub(1);
        match result {
            Ok(parked) => {
                st.backoff.succeeded();
                st.engine_down = false;
                let took = parked.park_timings().total;
                st.demand.on_park_time(took);
                add(&c.started, 1);
                add(&c.park_time_us, micros(took));
                if st.closed {
                    drop(parked);
                } else {
                    self.deliver(&mut st, parked);
                }
            }
            Err(e) => {
                add(&c.failed, 1);
                let now = self.now();
                let counts = st.counts();
                let failed = st.backoff.failed(now, counts);
                let message = e.to_string();
                tracing::warn!(profile = %self.inner.name, error = %message, retry_in = ?failed.retry_at.saturating_sub(now), "parking a container failed");
                st.last_error = Some(message);
                let unreachable = engine_unreachable(&e);
                if unreachable {
                    self.engine_lost(&mut st, &e);
                }
                // Waiters wait out an outage (up to max_wait); a park that fails
                // for the profile's own reasons fails the oldest of them.
                if failed.fail_oldest_waiter && !unreachable {
                    if let Some(w) = st.waiters.pop_front() {
                        let _ = w.tx.send(Err(PoolError::Exec {
                            profile: self.err_profile(),
                            source: e,
                        }));
                    }
                }
            }
        }
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Re-read the profile's image; a retag to a new image makes the parked
    /// containers of the old one stale (the reconciler replaces them; running jobs
    /// are untouched).
    async fn refresh_image(&self) {
        let current = self.profile();
        match self
            .inner
            .executor
            .runtime()
            .image(&current.profile.image)
            .await
        {
            Ok(Some(image)) if image.id != current.image.id => {
                tracing::info!(profile = %self.inner.name, old = %current.image.id, new = %image.id, "the profile's image changed; replacing parked containers");
                let updated = ResolvedProfile {
                    profile: current.profile.clone(),
                    image,
                };
                *lock(&self.inner.profile) = Arc::new(updated);
                self.inner.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(profile = %self.inner.name, error = %e, "re-reading the image failed")
            }
        }
    }

    /// Follow the engine's events: a parked container that dies or vanishes leaves
    /// the pool at once; an image event re-reads the profile's image.
    async fn follow_events(&self) {
        let runtime: Arc<dyn Runtime> = self.inner.executor.runtime().clone();
        loop {
            let filters = [
                (labels::MANAGED, "true"),
                (labels::INSTANCE, self.inner.instance.as_str()),
                (labels::PROFILE, self.inner.name.as_str()),
            ];
            let subscribed = tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                s = runtime.events(&filters) => s,
            };
            match subscribed {
                Ok(mut events) => {
                    // What died while we were not subscribed (or before the first
                    // subscription) is found by asking the engine which are running.
                    // The answer also says the engine is there (a subscription
                    // may only fail at its first item).
                    let up = match self.drop_idle_not_running(&runtime, &filters).await {
                        Ok(()) => true,
                        Err(e) => self.engine_unanswered(&runtime, &e).await,
                    };
                    if up {
                        self.engine_back();
                    }
                    self.inner.wake.notify_one();
                    loop {
                        let next = tokio::select! {
                            _ = self.inner.stop.cancelled() => return,
                            e = futures_util::StreamExt::next(&mut events) => e,
                        };
                        match next {
                            Some(Ok(EngineEvent::Container { id, action })) => {
                                if matches!(
                                    action,
                                    ContainerAction::Die { .. }
                                        | ContainerAction::Destroy
                                        | ContainerAction::Oom
                                        | ContainerAction::Stop
                                ) {
                                    self.drop_idle(&id);
                                }
                            }
                            Some(Ok(EngineEvent::Image { action, .. })) => {
                                if action.may_move_a_reference() {
                                    self.refresh_image().await;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "engine events broke; resubscribing");
                                let _ = self.engine_unanswered(&runtime, &e).await;
                                break;
                            }
                            None => {
                                let _ = self
                                    .engine_unanswered(&runtime, &"the event stream ended")
                                    .await;
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot follow engine events; retrying");
                    let _ = self.engine_unanswered(&runtime, &e).await;
                }
            }
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Something failed that the engine's absence would explain: ask it (an
    /// event stream may also end for reasons of its own, e.g. a proxy's idle
    /// timeout, and the pool must not stop taking work for that).
    /// Whether the engine answered.
    async fn engine_unanswered(
        &self,
        runtime: &Arc<dyn Runtime>,
        why: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        let answered = warmpool_runtime::ping(runtime.as_ref(), ENGINE_PING_TIMEOUT)
            .await
            .is_ok();
        if !answered {
            let mut st = lock(&self.inner.state);
            if !st.closed {
                self.engine_lost(&mut st, why);
            }
        }
        answered
    }

    async fn drop_idle_not_running(
        &self,
        runtime: &Arc<dyn Runtime>,
        filters: &[(&str, &str)],
    ) -> Result<(), warmpool_runtime::RuntimeError> {
        match runtime.list(filters).await {
            Ok(list) => {
                let running: std::collections::HashSet<String> = list
                    .into_iter()
                    .filter(|c| c.state.is_running())
                    .map(|c| c.id)
                    .collect();
                for id in self.idle_ids() {
                    if !running.contains(&id) {
                        self.drop_idle(&id);
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "listing the pool's containers failed");
                Err(e)
            }
        }
    }

    /// A parked container died: it leaves the pool (and a replacement is parked).
    fn drop_idle(&self, id: &str) {
        let mut st = lock(&self.inner.state);
        let before = st.idle.len();
        st.idle.retain(|i| i.parked.id() != id);
        let gone = before - st.idle.len();
        drop(st);
        if gone > 0 {
            add(&self.inner.counters.reaped, gone as u64);
            tracing::info!(profile = %self.inner.name, container = %id, "a parked container died; replacing it");
            self.inner.wake.notify_one();
        }
    }

    /// Stop parking for the idle target: claims still work (a claim that finds
    /// nothing parked starts its own container). For a pool that serves one job.
    pub fn stop_replenishing(&self) {
        lock(&self.inner.state).replenish = false;
    }

    /// Stop taking jobs and parking: queued claims fail, parked containers are
    /// removed. Running jobs go on.
    pub fn close(&self) {
        let waiters = {
            let mut st = lock(&self.inner.state);
            st.closed = true;
            st.idle.clear();
            std::mem::take(&mut st.waiters)
        };
        for w in waiters {
            let _ = w.tx.send(Err(PoolError::ShuttingDown {
                profile: self.err_profile(),
            }));
        }
        self.inner.stop.cancel();
    }

    /// Close, let running jobs finish within `grace`, then kill what is left, and
    /// remove every container of this pool: none is left behind.
    pub async fn shutdown(&self, grace: Duration) {
        self.close();
        let deadline = Instant::now() + grace;
        let in_use = |st: &State| st.busy + st.cold;
        while in_use(&lock(&self.inner.state)) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Whatever still runs is killed now: its run ends as lost.
        self.remove_all_logged().await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        // Cold starts in flight end soon (a closed pool drops what they park).
        let settle = Instant::now() + warmpool_exec::PARK_TIMEOUT;
        while lock(&self.inner.state).cold > 0 && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.inner.executor.drain().await;
        // Parks that finished during shutdown were dropped (removed); sweep once more.
        self.remove_all_logged().await;
    }

    async fn remove_all_logged(&self) {
        if let Err(e) = self.remove_all().await {
            tracing::warn!(profile = %self.inner.name, error = %e, "removing the pool's containers failed");
        }
    }

    async fn remove_all(&self) -> Result<usize, warmpool_runtime::RuntimeError> {
        let runtime = self.inner.executor.runtime();
        let list = runtime
            .list(&[
                (labels::MANAGED, "true"),
                (labels::INSTANCE, self.inner.instance.as_str()),
                (labels::PROFILE, self.inner.name.as_str()),
            ])
            .await?;
        for c in &list {
            let _ = runtime.remove(&c.id).await;
        }
        Ok(list.len())
    }
}

/// Remove every container of `instance` (any state, any profile): what a previous
/// run of the same instance left behind. Never touches another instance's.
pub async fn sweep(
    runtime: &Arc<dyn Runtime>,
    instance: &str,
) -> Result<usize, warmpool_runtime::RuntimeError> {
    let list = runtime
        .list(&[(labels::MANAGED, "true"), (labels::INSTANCE, instance)])
        .await?;
    // Remove all we can, then report the first failure.
    let mut first_error = None;
    for c in &list {
        if let Err(e) = runtime.remove(&c.id).await {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(list.len()),
    }
}
