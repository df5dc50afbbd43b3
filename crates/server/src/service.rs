//! The service: what the HTTP layer and the bot ask of jobs (submit, cancel,
//! wait, view, list, follow), over the pools and a [`JobStore`]. Each accepted
//! job gets one run task (`run`) that owns its life; this file admits jobs,
//! finds them, and hands requests to them. It never decides a job's state.

use crate::admission::{Admission, Ticket};
use crate::follow::Follower;
use crate::live::LiveJob;
use crate::lock;
use crate::run::JobRun;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warmpool_core::lifecycle::INTERRUPTED_ERROR;
use warmpool_core::{Config, Finish, JobState};
use warmpool_pool::Pools;
use warmpool_store::{
    CancelOutcome, JobRecord, JobStore, ListQuery, NewJob, QueuedJob, StoreError, StreamName,
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
    async fn before_start(
        &self,
        job_id: &str,
        env: &mut Vec<(String, String)>,
    ) -> Result<(), String>;
    /// After the job's end is stored.
    async fn after_end(&self, job_id: &str);
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
    /// The jobs this node runs, from acceptance to their stored end.
    live: Mutex<HashMap<String, Arc<LiveJob>>>,
    admission: Arc<Admission>,
    pub outcomes: Outcomes,
    pub histograms: crate::metrics::Histograms,
    hooks: Mutex<Option<Arc<dyn JobHooks>>>,
    /// A job's input was wiped from the store since the last scrub.
    wiped: AtomicBool,
    tasks: TaskTracker,
    stopping: CancellationToken,
}

impl Service {
    /// A service over running pools; then [`Service::recover`] picks up stored work.
    pub fn new(config: Arc<Config>, store: Arc<dyn JobStore>, pools: Arc<Pools>) -> Arc<Service> {
        let node = pools.instance().to_string();
        Arc::new(Service {
            config,
            store,
            pools,
            node,
            live: Mutex::new(HashMap::new()),
            admission: Arc::new(Admission::default()),
            outcomes: Outcomes::default(),
            histograms: Default::default(),
            hooks: Mutex::new(None),
            wiped: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
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

    /// After a start: this node's running jobs become interrupted (their
    /// containers were swept when the pools started), queued jobs run. Returns
    /// (queued, interrupted).
    pub async fn recover(self: &Arc<Self>) -> Result<(usize, usize), ServiceError> {
        let recovered = self.store.recover(&self.node, INTERRUPTED_ERROR).await?;
        for id in &recovered.queued {
            match self.store.queued(id).await {
                Ok(Some(q)) => {
                    let ticket = self.admission.force(&q.job.profile);
                    self.spawn_run(q, ticket);
                }
                Ok(None) => {}
                // One unreadable job must not keep the service from starting.
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "a queued job cannot be read; failing it");
                    let f = Finish::without_exit(
                        JobState::Failed,
                        format!("the stored job could not be read: {e}"),
                    );
                    let _ = self.store.finish(id, &f).await;
                }
            }
        }
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
    fn validate(&self, job: &NewJob) -> Result<(), ServiceError> {
        if let Some(pool) = self.pools.get(&job.profile) {
            let resolved = pool.profile();
            let probe = warmpool_core::Job {
                args: job.args.clone(),
                env: job.env.clone(),
                unset: Vec::new(),
                stdin: job.stdin.clone(),
                timeout: None,
            };
            warmpool_core::job::compose(&resolved.image, &resolved.profile, &probe)
                .map_err(|e| ServiceError::Invalid(e.to_string()))?;
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
        // Jobs not yet holding a container may fill what the pool can start now
        // plus its queue (`max_queue`); beyond that the answer is 429.
        let room = match (
            self.config.profiles.get(&job.profile),
            self.pools.get(&job.profile),
        ) {
            (Some(p), Some(pool)) => p.max_containers.saturating_sub(pool.busy()) + p.max_queue,
            _ => 0,
        };
        let ticket =
            self.admission
                .admit(&job.profile, room)
                .map_err(|queued| ServiceError::QueueFull {
                    profile: job.profile.clone(),
                    queued,
                })?;
        let svc = self.clone();
        // Detached from the caller: a client that goes away mid-request must not
        // leave a stored job that never runs.
        tokio::spawn(async move {
            let id = svc.store.insert(&job).await?;
            svc.accepted(
                QueuedJob {
                    id: id.clone(),
                    job,
                },
                ticket,
            );
            Ok(id)
        })
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    /// The fast path: a container is parked right now and no front end has to
    /// be asked first, so the job is stored as running (one durable commit,
    /// its env never stored) and handed over at once. `None`: take the queue.
    async fn start_now(self: &Arc<Self>, job: &NewJob) -> Result<Option<String>, ServiceError> {
        if self.hooks().is_some() {
            return Ok(None);
        }
        let Some(pool) = self.pools.get(&job.profile) else {
            return Ok(None);
        };
        // Before the claim: a job that cannot run (a missing secret) fails on the
        // ordinary path, where it is stored, and must not cost a parked container
        // (a claimed one is removed when dropped, not given back).
        let Ok(prepared) = crate::run::prepared(self, job.clone(), Vec::new()) else {
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
        let ticket = self.admission.force(&job.profile);
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
            svc.accepted(
                QueuedJob {
                    id: id.clone(),
                    job,
                },
                ticket,
            );
            Ok(Some(id))
        })
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    fn accepted(self: &Arc<Self>, q: QueuedJob, ticket: Ticket) {
        self.outcomes.accepted.fetch_add(1, Ordering::Relaxed);
        self.spawn_run(q, ticket);
    }

    fn spawn_run(self: &Arc<Self>, q: QueuedJob, ticket: Ticket) {
        let live = Arc::new(LiveJob::new());
        lock(&self.live).insert(q.id.clone(), live.clone());
        let run = JobRun::new(self.clone(), q.id.clone(), live, ticket);
        self.tasks.spawn(run.drive(q));
    }

    /// A job's end is stored: followers and waiters finish, front ends answer.
    pub(crate) async fn ended(
        &self,
        id: &str,
        state: JobState,
        record: Option<JobRecord>,
        live: &LiveJob,
    ) {
        live.end(state, record);
        lock(&self.live).remove(id);
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
        if let Some(live) = lock(&self.live).get(id) {
            live.cancel.cancel();
        }
        Ok(reply)
    }

    /// Wait until a job's end is stored (at once for an ended or unknown job; a
    /// shutdown ends every wait).
    pub async fn wait(&self, id: &str) {
        let live = lock(&self.live).get(id).cloned();
        let Some(live) = live else { return };
        let mut rx = live.subscribe();
        drop(live);
        tokio::select! {
            _ = rx.wait_for(|p| p.ended.is_some()) => {}
            _ = self.stopping.cancelled() => {}
        }
    }

    /// Wait until a job's end is stored, then the job with its output (what
    /// `?wait=true` answers): from memory when the job ended on this node and
    /// memory holds all of its output, else from the store. A shutdown ends
    /// the wait (the job is then shown as it is).
    pub async fn wait_view(
        &self,
        id: &str,
    ) -> Result<Option<(JobRecord, [Vec<u8>; 2])>, ServiceError> {
        let live = lock(&self.live).get(id).cloned();
        if let Some(live) = live {
            let mut rx = live.subscribe();
            tokio::select! {
                _ = rx.wait_for(|p| p.ended.is_some()) => {}
                _ = self.stopping.cancelled() => {}
            }
            if let Some(view) = live.ended_view() {
                return Ok(Some(view));
            }
        }
        self.view(id, true).await
    }

    /// A job, with its stored output when `with_output`; `None` if unknown.
    pub async fn view(
        &self,
        id: &str,
        with_output: bool,
    ) -> Result<Option<(JobRecord, [Vec<u8>; 2])>, ServiceError> {
        let Some(record) = self.store.get(id).await? else {
            return Ok(None);
        };
        let mut output = [Vec::new(), Vec::new()];
        if with_output {
            for s in StreamName::BOTH {
                let len = usize::try_from(record.output_len[s.index()]).unwrap_or(usize::MAX);
                // Nothing stored: no read (the `?wait=true` answer is on the hot
                // path, and most jobs write one stream or none).
                if len == 0 {
                    continue;
                }
                output[s.index()] = self
                    .store
                    .read_output(id, s, 0, len)
                    .await?
                    .unwrap_or_default();
            }
        }
        Ok(Some((record, output)))
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
