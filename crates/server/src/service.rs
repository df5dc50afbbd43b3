//! The service: what the HTTP layer and the bot ask of jobs (submit, cancel,
//! wait, view, list, follow), over the pools and a [`JobStore`]. Each accepted
//! job gets one run task (`run`) that owns its life; this file admits jobs,
//! finds them, and hands requests to them. It never decides a job's state.

use crate::follow::Follower;
use crate::live::LiveJob;
use crate::lock;
use crate::run::JobRun;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warmpool_core::lifecycle::INTERRUPTED_ERROR;
use warmpool_core::{Config, JobState};
use warmpool_pool::Pools;
use warmpool_store::{
    CancelOutcome, JobRecord, JobStore, ListQuery, NewJob, QueuedJob, StoreError, StoreEvent,
    StreamName,
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("the pool of profile \"{profile}\" already has {queued} jobs waiting (max_queue); retry later")]
    QueueFull { profile: String, queued: usize },
    #[error("warmpool is shutting down and takes no new jobs")]
    ShuttingDown,
    #[error("a background task failed: {0}")]
    Task(String),
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReply {
    /// The job will not run on (it may still end with its own exit, if that
    /// came first).
    Accepted,
    AlreadyEnded(JobState),
    NotFound,
}

/// What a front end (the GitHub bot) adds around its jobs: env it can only
/// compute when the job starts, and an answer once the job has ended. Called for
/// every job; a front end acts only on its own.
#[async_trait::async_trait]
pub trait JobHooks: Send + Sync + 'static {
    /// Just before the job claims a container; `Err` fails the job with that reason.
    async fn before_start(&self, job_id: &str, front: &mut Front) -> Result<(), String>;
    /// After the job's end is stored.
    async fn after_end(&self, job_id: &str);
}

/// What a front end (the GitHub bot) adds to a job as it starts; none of it is
/// stored.
#[derive(Debug, Default)]
pub struct Front {
    /// Variables after the job's own (overriding them).
    pub env: Vec<(String, String)>,
    /// Secrets made for this job (a short-lived token): passed last, like the
    /// profile's `secret_env`, and redacted from its errors. A name here is
    /// not read from the server's environment.
    pub secrets: Vec<(String, String)>,
    /// Names of the profile's `secret_env` this job must not get (least
    /// privilege: a job that needs no GitHub token gets none).
    pub withhold: Vec<String>,
}

/// This node's part in the cluster, counted for /metrics.
#[derive(Default)]
pub struct ClusterCounters {
    pub taken: AtomicU64,
    pub taken_over: AtomicU64,
    pub heartbeat_failures: AtomicU64,
}

/// Job counts by outcome, for /metrics.
#[derive(Default)]
pub struct Outcomes {
    pub by_state: Mutex<HashMap<&'static str, u64>>,
    pub accepted: AtomicU64,
}

pub struct Service {
    pub config: Arc<Config>,
    store: Arc<dyn JobStore>,
    pub pools: Arc<Pools>,
    /// This node's name (`[server] instance`): whose running jobs are whose.
    node: String,
    /// The jobs this node runs, from taking them to their stored end.
    pub(crate) live: Mutex<HashMap<String, Arc<LiveJob>>>,
    pub outcomes: Outcomes,
    pub histograms: crate::metrics::Histograms,
    hooks: Mutex<Option<Arc<dyn JobHooks>>>,
    /// A job's input was wiped from the store since the last scrub.
    wiped: AtomicBool,
    pub(crate) tasks: TaskTracker,
    stopping: CancellationToken,
    /// This node holds its lease: it may take jobs (false before `join`, and
    /// after it fenced itself).
    pub(crate) leased: AtomicBool,
    /// When a heartbeat (or the join) was last stored.
    pub(crate) lease_ok: Mutex<Option<Instant>>,
    pub(crate) dispatch: Mutex<crate::node::DispatchState>,
    pub(crate) dispatch_wake: Notify,
    pub(crate) cluster: Mutex<crate::node::ClusterView>,
    pub cluster_counters: ClusterCounters,
    /// One admission at a time on this node (the count read, then the place
    /// taken), and the jobs admitted whose insert has not returned yet, by
    /// profile: the queue count cannot see them.
    admitting: tokio::sync::Mutex<()>,
    admitted: Mutex<HashMap<String, usize>>,
    /// The last answer of the engine to `/readyz`'s ping (one ping at a time,
    /// at most one a second, whatever the probe rate).
    pub(crate) engine_probe: tokio::sync::Mutex<Option<crate::ready::EngineProbe>>,
}

impl Service {
    /// A service over running pools; then [`Service::recover`] picks up stored work.
    pub fn new(config: Arc<Config>, store: Arc<dyn JobStore>, pools: Arc<Pools>) -> Arc<Service> {
        let node = pools.instance().to_string();
        let histograms = crate::metrics::Histograms::for_profiles(config.profiles.keys());
        Arc::new(Service {
            config,
            store,
            pools,
            node,
            live: Mutex::new(HashMap::new()),
            outcomes: Outcomes::default(),
            histograms,
            hooks: Mutex::new(None),
            wiped: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            leased: AtomicBool::new(false),
            lease_ok: Mutex::new(None),
            dispatch: Mutex::default(),
            dispatch_wake: Notify::new(),
            cluster: Mutex::default(),
            cluster_counters: ClusterCounters::default(),
            admitting: tokio::sync::Mutex::new(()),
            admitted: Mutex::default(),
            engine_probe: tokio::sync::Mutex::new(None),
        })
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Install the front end's hooks (before `recover`, so recovered jobs get them).
    pub fn set_hooks(&self, hooks: Arc<dyn JobHooks>) {
        *lock(&self.hooks) = Some(hooks);
    }

    pub(crate) fn hooks(&self) -> Option<Arc<dyn JobHooks>> {
        lock(&self.hooks).clone()
    }

    /// Cancelled when the service begins to stop (long requests end on it).
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    pub(crate) fn input_wiped(&self) {
        self.wiped.store(true, Ordering::SeqCst);
    }

    /// Start taking jobs: this node joins the store's nodes (a new
    /// generation: writes of its previous run are refused), its running jobs of
    /// before become interrupted (their containers were swept when the pools
    /// started), and its loops start (the dispatcher takes queued jobs, of any
    /// node, from now on). Returns (queued, interrupted).
    pub async fn begin(self: &Arc<Self>) -> Result<(usize, usize), ServiceError> {
        // Before the join, which would end them as runs of an old generation:
        // they ended because this node restarted, and their error says so.
        let recovered = self.store.recover(&self.node, INTERRUPTED_ERROR).await?;
        self.join().await?;
        self.start_node();
        Ok((recovered.queued.len(), recovered.interrupted.len()))
    }

    /// Prune ended jobs older than `[server] retention`, now and every hour, until
    /// the service stops.
    pub fn start_retention(self: &Arc<Self>) {
        let svc = self.clone();
        self.tasks.spawn(async move {
            loop {
                match svc.store.prune(svc.config.server.retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "pruned jobs past their retention"),
                    Err(e) => tracing::warn!(error = %e, "pruning old jobs failed"),
                }
                tokio::select! {
                    _ = svc.stopping.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                }
            }
        });
    }

    /// Within a second of a job's input being wiped from the store, scrub it from
    /// the store's files too; off every job's path.
    pub fn start_checkpoints(self: &Arc<Self>) {
        let svc = self.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = svc.stopping.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if svc.wiped.swap(false, Ordering::SeqCst) {
                    if let Err(e) = svc.store.scrub().await {
                        tracing::warn!(error = %e, "scrubbing the job store failed");
                    }
                }
                if svc.stopping.is_cancelled() {
                    return;
                }
            }
        });
    }

    /// Refuse now what could never run (no command, too large) before it is stored.
    /// Linear in the job's size (bounded by `[server]`'s limits at the API), and
    /// its stdin is only measured, never copied.
    fn validate(&self, job: &NewJob) -> Result<(), ServiceError> {
        if let Some(pool) = self.pools.get(&job.profile) {
            let resolved = pool.profile();
            let probe = warmpool_core::Job {
                args: job.args.clone(),
                env: job.env.clone(),
                unset: Vec::new(),
                stdin: None,
                timeout: None,
            };
            let spec = warmpool_core::job::compose(&resolved.image, &resolved.profile, &probe)
                .map_err(|e| ServiceError::Invalid(e.to_string()))?;
            let len = spec.body_len() + job.stdin.as_ref().map_or(0, |s| s.len() as u64);
            let max = u64::from(warmpool_core::job::MAX_SPEC_BODY);
            if len > max {
                return Err(ServiceError::Invalid(
                    warmpool_core::JobError::TooLarge(len, max).to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Accept a job: stored durably before this returns; it runs in the background.
    pub async fn submit(self: &Arc<Self>, job: NewJob) -> Result<String, ServiceError> {
        if self.stopping.is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        self.validate(&job)?;
        if let Some(id) = self.start_now(&job).await? {
            return Ok(id);
        }
        self.admit(&job.profile).await?;
        let svc = self.clone();
        // Detached from the caller: a client that goes away mid-request must not
        // leave a stored job that never runs.
        tokio::spawn(async move {
            let inserted = svc.store.insert(&job).await;
            // Stored (or not): the queue count shows it from now on.
            if let Some(n) = lock(&svc.admitted).get_mut(&job.profile) {
                *n = n.saturating_sub(1);
            }
            let id = inserted?;
            svc.outcomes.accepted.fetch_add(1, Ordering::Relaxed);
            svc.queue_changed(Some(&job.profile));
            Ok(id)
        })
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    /// Jobs waiting in the shared queue (every node's) may fill what this node's
    /// pool can start now plus the profile's `max_queue`; beyond that, 429.
    /// On `Ok` a place is held in `admitted` until the job's insert returns.
    async fn admit(&self, profile: &str) -> Result<(), ServiceError> {
        // Concurrent submits must not all pass one count: the count and the
        // place are taken together; a job admitted but not yet stored is
        // counted from `admitted` (read before the store, so one stored
        // meanwhile is counted twice at worst, never missed).
        let _one = self.admitting.lock().await;
        let admitted = lock(&self.admitted).get(profile).copied().unwrap_or(0);
        let room = match (self.config.profiles.get(profile), self.pools.get(profile)) {
            (Some(p), Some(pool)) => {
                pool.capacity().saturating_sub(self.taking(profile)) + p.max_queue
            }
            _ => 0,
        };
        let queued = self.store.queued_count(profile).await? + admitted;
        if queued >= room {
            return Err(ServiceError::QueueFull {
                profile: profile.to_string(),
                queued,
            });
        }
        *lock(&self.admitted).entry(profile.to_string()).or_default() += 1;
        Ok(())
    }

    /// The fast path: a container is parked right now and no front end has to
    /// be asked first, so the job is stored as running (one durable commit,
    /// its env never stored) and handed over at once. `None`: take the queue.
    async fn start_now(self: &Arc<Self>, job: &NewJob) -> Result<Option<String>, ServiceError> {
        // A front end asks first; a retry_interrupted job keeps its input
        // stored while it runs; a node without its lease takes nothing.
        if self.hooks().is_some()
            || !self.leased.load(Ordering::SeqCst)
            || self
                .config
                .profiles
                .get(&job.profile)
                .is_some_and(|p| p.retry_interrupted)
        {
            return Ok(None);
        }
        let Some(pool) = self.pools.get(&job.profile) else {
            return Ok(None);
        };
        // Before the claim: a job that cannot run (a missing secret) fails on the
        // ordinary path, where it is stored, and must not cost a parked container
        // (a claimed one is removed when dropped, not given back).
        let Ok(prepared) = crate::run::prepared(self, job.clone(), Front::default()) else {
            return Ok(None);
        };
        let Some(claimed) = pool.try_claim() else {
            return Ok(None);
        };
        let svc = self.clone();
        let job = job.clone();
        // Detached from the caller, like `submit`.
        tokio::spawn(async move {
            // On an error `claimed` is dropped: its container is removed.
            let id = svc.store.insert_started(&job, &svc.node, true).await?;
            svc.outcomes.accepted.fetch_add(1, Ordering::Relaxed);
            let live = Arc::new(LiveJob::new());
            lock(&svc.live).insert(id.clone(), live.clone());
            let run = JobRun::started(svc.clone(), id.clone(), live, claimed);
            svc.tasks.spawn(run.drive_started(prepared));
            Ok(Some(id))
        })
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    /// Accept a job started by a webhook delivery: stored with the delivery's id
    /// in one transaction; `Ok(None)` (and nothing started) for a redelivery.
    /// `on_stored` runs with the new id before the job can start.
    pub async fn submit_for_delivery(
        self: &Arc<Self>,
        delivery: &str,
        meta: &str,
        job: NewJob,
        on_stored: impl FnOnce(&str) + Send + 'static,
    ) -> Result<Option<String>, ServiceError> {
        if self.stopping.is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        let svc = self.clone();
        let (delivery, meta) = (delivery.to_string(), meta.to_string());
        tokio::spawn(async move {
            let Some(id) = svc
                .store
                .insert_for_delivery(&delivery, &meta, &job)
                .await?
            else {
                return Ok(None);
            };
            on_stored(&id);
            svc.outcomes.accepted.fetch_add(1, Ordering::Relaxed);
            svc.queue_changed(Some(&job.profile));
            Ok(Some(id))
        })
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    /// Run a job this node took from the queue (stored as running here).
    pub(crate) fn take(self: &Arc<Self>, q: QueuedJob) {
        self.cluster_counters.taken.fetch_add(1, Ordering::Relaxed);
        let live = Arc::new(LiveJob::new());
        lock(&self.live).insert(q.id.clone(), live.clone());
        let profile = q.job.profile.clone();
        *lock(&self.dispatch)
            .taking
            .entry(profile.clone())
            .or_default() += 1;
        let run = JobRun::taken(self.clone(), q.id.clone(), live);
        let svc = self.clone();
        let got_container = move || {
            if let Some(n) = lock(&svc.dispatch).taking.get_mut(&profile) {
                *n = n.saturating_sub(1);
            }
        };
        self.tasks.spawn(run.drive(q, got_container));
    }

    /// A cancel stored for a job this node runs: act on it.
    pub(crate) fn cancel_local(&self, id: &str) {
        if let Some(live) = lock(&self.live).get(id) {
            live.cancel.cancel();
        }
    }

    /// A job's end is stored: followers and waiters finish, front ends answer.
    pub(crate) async fn ended(
        &self,
        id: &str,
        state: JobState,
        record: Option<JobRecord>,
        live: &LiveJob,
    ) {
        // Its slot is free: the queue of its profile may have work for it
        // (of any profile when its end could not be stored).
        let profile = record.as_ref().map(|r| r.profile.clone());
        live.end(state, record);
        lock(&self.live).remove(id);
        self.queue_changed(profile.as_deref());
        *lock(&self.outcomes.by_state)
            .entry(state.as_str())
            .or_default() += 1;
        if let Some(h) = self.hooks() {
            h.after_end(id).await;
        }
    }

    /// Cancel a job: a queued one never runs; a running one is killed, unless
    /// its own exit came first.
    pub async fn cancel(&self, id: &str) -> Result<CancelReply, ServiceError> {
        let reply = match self.store.request_cancel(id).await? {
            CancelOutcome::Cancelled => {
                // Its input left the store with it.
                self.input_wiped();
                CancelReply::Accepted
            }
            CancelOutcome::Requested => CancelReply::Accepted,
            CancelOutcome::AlreadyEnded(s) => return Ok(CancelReply::AlreadyEnded(s)),
            CancelOutcome::NotFound => return Ok(CancelReply::NotFound),
        };
        // Here at once; on another node through the store's event.
        self.cancel_local(id);
        Ok(reply)
    }

    /// Wait until a job's end is stored, whichever node runs it (at once for an
    /// ended or unknown job; a shutdown ends every wait).
    pub async fn wait(&self, id: &str) -> Result<(), ServiceError> {
        let live = lock(&self.live).get(id).cloned();
        match live {
            Some(live) => {
                self.wait_live(&live).await;
                Ok(())
            }
            None => self.wait_stored(id).await,
        }
    }

    /// Wait until a job this node runs has its end stored (or the service stops).
    async fn wait_live(&self, live: &LiveJob) {
        let mut rx = live.subscribe();
        tokio::select! {
            _ = rx.wait_for(|p| p.ended.is_some()) => {}
            _ = self.stopping.cancelled() => {}
        }
    }

    /// Wait for a job's end in the store: its `Ended` event, else a look every
    /// second (events can be lost with a connection).
    async fn wait_stored(&self, id: &str) -> Result<(), ServiceError> {
        // Subscribed before the first look, so an end between the two is seen.
        let mut events = self.store.events();
        loop {
            match self.store.get(id).await? {
                Some(r) if !r.state.is_final() => {}
                _ => return Ok(()),
            }
            let deadline = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = self.stopping.cancelled() => return Ok(()),
                    _ = &mut deadline => break,
                    ev = events.recv() => match ev {
                        Ok(StoreEvent::Ended { id: ended }) if ended == id => break,
                        Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => break,
                        // No more events: the look every second goes on.
                        Err(RecvError::Closed) => (&mut deadline).await,
                        Ok(_) => {}
                    },
                }
            }
        }
    }

    /// Wait until a job's end is stored, then the job with the first `max`
    /// bytes of each stream (what `?wait=true` answers): from memory when the
    /// job ended on this node and memory holds that head, else from the store.
    /// A shutdown ends the wait (the job is then shown as it is).
    pub async fn wait_view(
        &self,
        id: &str,
        max: usize,
    ) -> Result<Option<(JobRecord, [Vec<u8>; 2])>, ServiceError> {
        let live = lock(&self.live).get(id).cloned();
        if let Some(live) = live {
            self.wait_live(&live).await;
            if let Some(view) = live.ended_view(max) {
                return Ok(Some(view));
            }
        } else {
            self.wait_stored(id).await?;
        }
        self.view(id, max).await
    }

    /// A job with the first `max` bytes of each stream it stored (none when
    /// `max` is 0: only the head is read, never the whole stream, so a job's
    /// view costs at most `2 * max` bytes however much it wrote); `None` if
    /// unknown.
    pub async fn view(
        &self,
        id: &str,
        max: usize,
    ) -> Result<Option<(JobRecord, [Vec<u8>; 2])>, ServiceError> {
        let Some(record) = self.store.get(id).await? else {
            return Ok(None);
        };
        let mut output = [Vec::new(), Vec::new()];
        for s in StreamName::BOTH {
            let len = usize::try_from(record.output_len[s.index()])
                .unwrap_or(usize::MAX)
                .min(max);
            // Nothing stored (or asked for): no read (the `?wait=true` answer
            // is on the hot path, and most jobs write one stream or none).
            if len == 0 {
                continue;
            }
            output[s.index()] = self
                .store
                .read_output(id, s, 0, len)
                .await?
                .unwrap_or_default();
        }
        Ok(Some((record, output)))
    }

    /// This node's pools now.
    pub fn local_pools(&self) -> Vec<crate::api::PoolView> {
        self.pools
            .iter()
            .map(|(_, p)| {
                let s = p.stats();
                let per = self.histograms.claim_by_profile.get(&s.profile);
                // Milliseconds to the microsecond.
                let claim_ms = |q: f64| {
                    per.and_then(|h| h.quantile(q))
                        .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
                };
                crate::api::PoolView {
                    node: self.node.clone(),
                    profile: s.profile,
                    image: s.image,
                    idle: s.idle,
                    busy: s.busy,
                    starting: s.starting,
                    queued: s.queued,
                    target_idle: s.target_idle,
                    hits: s.hits,
                    misses: s.misses,
                    reuse: p.profile().profile.reuse,
                    reused: s.reused,
                    reset_failed: s.reset_failed,
                    jobs_per_container: {
                        let started = p.counters().started.load(Ordering::Relaxed);
                        let claims = p.counters().claims.load(Ordering::Relaxed);
                        if started == 0 {
                            0.0
                        } else {
                            (claims as f64 / started as f64 * 100.0).round() / 100.0
                        }
                    },
                    claim_p50_ms: claim_ms(0.5),
                    claim_p90_ms: claim_ms(0.9),
                    claim_p99_ms: claim_ms(0.99),
                }
            })
            .collect()
    }

    /// Every node's pools: this node's now, the others' as of their last
    /// heartbeat (live nodes only).
    pub async fn cluster_pools(&self) -> Result<Vec<crate::api::PoolView>, ServiceError> {
        let mut pools = self.local_pools();
        for n in self.store.nodes().await? {
            if n.node == self.node || n.lost {
                continue;
            }
            match serde_json::from_str::<Vec<crate::api::PoolView>>(&n.pools) {
                Ok(theirs) => pools.extend(theirs),
                Err(e) => {
                    tracing::warn!(node = %n.node, error = %e, "a node's pools cannot be read")
                }
            }
        }
        Ok(pools)
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, ServiceError> {
        Ok(self.store.list(query).await?)
    }

    /// Follow a job's `wanted` streams (stdout, stderr) from byte 0 to its end;
    /// `None` if unknown. With `live == false`, only what is stored now.
    pub async fn follow(
        &self,
        id: &str,
        wanted: [bool; 2],
        live: bool,
    ) -> Result<Option<Follower>, ServiceError> {
        let running = lock(&self.live).get(id).cloned();
        let Some(record) = self.store.get(id).await? else {
            return Ok(None);
        };
        let f = Follower::new(
            self.store.clone(),
            id.to_string(),
            if live { running } else { None },
            wanted,
            self.stopping.clone(),
        );
        Ok(Some(if live { f } else { f.once(record.output_len) }))
    }

    /// Stop taking jobs, let running ones finish within the grace, kill the rest,
    /// remove every container (the pools do), and wait for the job tasks to store
    /// their ends.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        // Jobs taken from the queue get their containers first (the dispatcher
        // has stopped taking more): they are running, and run within the grace
        // like the others.
        let deadline = Instant::now() + grace.min(warmpool_exec::PARK_TIMEOUT);
        while lock(&self.dispatch).taking.values().any(|n| *n > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.pools.shutdown(grace).await;
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
    }
}

/// A secret from the server's environment: `NAME`, or the file `NAME_FILE` names.
pub(crate) fn read_secret(name: &str) -> Result<String, String> {
    if let Ok(v) = std::env::var(name) {
        return Ok(v);
    }
    if let Ok(path) = std::env::var(format!("{name}_FILE")) {
        return std::fs::read_to_string(&path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("secret {name}: cannot read {name}_FILE ({path}): {e}"));
    }
    Err(format!(
        "secret {name} is not set: set {name} or {name}_FILE in warmpool's environment"
    ))
}
