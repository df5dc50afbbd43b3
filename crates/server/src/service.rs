//! The service's job lifecycle: accept (stored first), run through the pools,
//! store the output and the outcome, follow live, cancel, recover after a
//! restart. The HTTP layer only translates requests into calls on [`Service`].

use crate::store::{Finish, JobState, NewJob, QueuedJob, Store, StoreError, StreamName};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warmpool_core::{Config, Job};
use warmpool_exec::{OutputSink, RunControl, StreamKind};
use warmpool_pool::{PoolError, Pools};

/// A chunk of live output, with its offset in its stream (so a follower that read
/// the stored output first can skip what it already has).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: StreamName,
    pub offset: u64,
    pub data: Bytes,
}

struct Live {
    output: broadcast::Sender<Chunk>,
    cancel: mpsc::UnboundedSender<warmpool_exec::Signal>,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
    done: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the pool of profile \"{profile}\" already has {queued} jobs waiting (max_queue); retry later")]
    QueueFull { profile: String, queued: usize },
    #[error("warmpool is shutting down and takes no new jobs")]
    ShuttingDown,
    #[error("a background task failed: {0}")]
    Task(String),
}

/// What a front end (the GitHub bot) adds around its jobs: env it can only
/// compute when the job starts, and an answer once the job has ended. Called for
/// every job; a front end acts only on its own.
#[async_trait::async_trait]
pub trait JobHooks: Send + Sync + 'static {
    /// Just before the job runs; `Err` fails the job with that reason.
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
    pub store: Store,
    pub pools: Arc<Pools>,
    live: Mutex<HashMap<String, Live>>,
    /// Jobs accepted and not yet running, per profile (admission control).
    pending: Mutex<HashMap<String, usize>>,
    pub outcomes: Outcomes,
    pub histograms: crate::metrics::Histograms,
    hooks: Mutex<Option<Arc<dyn JobHooks>>>,
    /// A job's env was wiped since the last checkpoint.
    wiped: std::sync::atomic::AtomicBool,
    tasks: TaskTracker,
    stopping: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
        .map_err(ServiceError::Store)
}

impl Service {
    /// A service over running pools; then [`Service::recover`] picks up stored work.
    pub fn new(config: Arc<Config>, store: Store, pools: Arc<Pools>) -> Arc<Service> {
        Arc::new(Service {
            config,
            store,
            pools,
            live: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            outcomes: Outcomes::default(),
            histograms: Default::default(),
            hooks: Mutex::new(None),
            wiped: std::sync::atomic::AtomicBool::new(false),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })
    }

    /// Install the front end's hooks (before `recover`, so recovered jobs get them).
    pub fn set_hooks(&self, hooks: Arc<dyn JobHooks>) {
        *lock(&self.hooks) = Some(hooks);
    }

    fn hooks(&self) -> Option<Arc<dyn JobHooks>> {
        lock(&self.hooks).clone()
    }

    /// After a restart: running jobs become interrupted (their containers were
    /// swept when the pools started), queued jobs run. Returns (queued, interrupted).
    pub async fn recover(self: &Arc<Self>) -> Result<(usize, usize), ServiceError> {
        let store = self.store.clone();
        let recovered = blocking(move || store.recover()).await?;
        for id in &recovered.queued {
            let store = self.store.clone();
            let id2 = id.clone();
            match blocking(move || store.queued(&id2)).await {
                Ok(Some(q)) => {
                    *lock(&self.pending)
                        .entry(q.job.profile.clone())
                        .or_default() += 1;
                    self.spawn_run(q);
                }
                Ok(None) => {}
                // One unreadable job must not keep the service from starting.
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "a queued job cannot be read; failing it");
                    let store = self.store.clone();
                    let id2 = id.clone();
                    let f = Finish {
                        state: JobState::Failed,
                        exit_code: None,
                        signal: None,
                        error: Some(format!("the stored job could not be read: {e}")),
                    };
                    let _ = blocking(move || store.finish(&id2, &f)).await;
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
                let store = svc.store.clone();
                let keep = svc.config.server.retention;
                match blocking(move || store.prune(keep)).await {
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

    /// Within a second of a job's env being wiped from the store, checkpoint the
    /// WAL so no old copy of it stays on disk either; off every job's path (a
    /// checkpoint per job start would put a disk flush on it).
    pub fn start_checkpoints(self: &Arc<Self>) {
        let svc = self.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = svc.stopping.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if svc.wiped.swap(false, Ordering::SeqCst) {
                    let store = svc.store.clone();
                    if let Err(e) = blocking(move || store.checkpoint()).await {
                        tracing::warn!(error = %e, "checkpointing the job store failed");
                    }
                }
                if svc.stopping.is_cancelled() {
                    return;
                }
            }
        });
    }

    /// Accept a job: stored durably before this returns; it runs in the background.
    pub async fn submit(self: &Arc<Self>, job: NewJob) -> Result<String, ServiceError> {
        if self.stopping.is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        // Admission: jobs not yet holding a container may fill what the pool can
        // start now plus its queue (`max_queue`); beyond that the answer is 429.
        let room = match (
            self.config.profiles.get(&job.profile),
            self.pools.get(&job.profile),
        ) {
            (Some(p), Some(pool)) => {
                // Every container not running a job is, or will be, one a job can have.
                let free = p.max_containers.saturating_sub(pool.busy());
                free + p.max_queue
            }
            _ => 0,
        };
        {
            let mut pending = lock(&self.pending);
            let n = pending.entry(job.profile.clone()).or_default();
            if *n >= room {
                return Err(ServiceError::QueueFull {
                    profile: job.profile.clone(),
                    queued: *n,
                });
            }
            *n += 1;
        }
        self.store_and_start(job, |store, job| store.insert(job).map(Some), |_| {})
            .await?
            .ok_or_else(|| ServiceError::Task("a new job was stored without an id".into()))
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
        *lock(&self.pending).entry(job.profile.clone()).or_default() += 1;
        let (d, m) = (delivery.to_string(), meta.to_string());
        self.store_and_start(
            job,
            move |store, job| store.insert_for_delivery(&d, &m, job),
            on_stored,
        )
        .await
    }

    /// Store a job admitted (counted in `pending`) and start it, detached from
    /// the caller: a client that goes away mid-request must not leave a stored
    /// job that never runs, or an admission count that is never given back.
    /// `insert` answers `None` when it stored nothing (a redelivery).
    async fn store_and_start(
        self: &Arc<Self>,
        job: NewJob,
        insert: impl FnOnce(&Store, &NewJob) -> Result<Option<String>, StoreError> + Send + 'static,
        on_stored: impl FnOnce(&str) + Send + 'static,
    ) -> Result<Option<String>, ServiceError> {
        let svc = self.clone();
        tokio::spawn(async move {
            let store = svc.store.clone();
            let stored = job_clone(&job);
            match blocking(move || insert(&store, &stored)).await {
                Ok(Some(id)) => {
                    on_stored(&id);
                    svc.outcomes.accepted.fetch_add(1, Ordering::Relaxed);
                    svc.spawn_run(QueuedJob {
                        id: id.clone(),
                        job,
                    });
                    Ok(Some(id))
                }
                Ok(None) => {
                    svc.unpend(&job.profile);
                    Ok(None)
                }
                Err(e) => {
                    svc.unpend(&job.profile);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    fn unpend(&self, profile: &str) {
        if let Some(n) = lock(&self.pending).get_mut(profile) {
            *n = n.saturating_sub(1);
        }
    }

    fn spawn_run(self: &Arc<Self>, q: QueuedJob) {
        let (output, _) = broadcast::channel(256);
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        lock(&self.live).insert(
            q.id.clone(),
            Live {
                output: output.clone(),
                cancel: cancel_tx,
                cancelled: cancelled.clone(),
                done: done_rx,
            },
        );
        let svc = self.clone();
        self.tasks.spawn(async move {
            let id = q.id.clone();
            let profile = q.job.profile.clone();
            let state = svc.run(q, output, cancel_rx, cancelled.clone()).await;
            lock(&svc.live).remove(&id);
            let state = state.or_else(|| {
                cancelled
                    .load(Ordering::SeqCst)
                    .then_some(JobState::Cancelled)
            });
            if let Some(state) = state {
                *lock(&svc.outcomes.by_state)
                    .entry(state.as_str())
                    .or_default() += 1;
            }
            let _ = done_tx.send(true);
            if let Some(h) = svc.hooks() {
                h.after_end(&id).await;
            }
            let _ = profile;
        });
    }

    /// Run one stored job to its end; the state it ended in.
    async fn run(
        self: &Arc<Self>,
        q: QueuedJob,
        output: broadcast::Sender<Chunk>,
        cancel_rx: mpsc::UnboundedReceiver<warmpool_exec::Signal>,
        cancelled: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<JobState> {
        let id = q.id.clone();
        let profile_name = q.job.profile.clone();
        let finish = |state: JobState, error: Option<String>| {
            let store = self.store.clone();
            let id = id.clone();
            async move {
                let f = Finish {
                    state,
                    exit_code: None,
                    signal: None,
                    error,
                };
                if let Err(e) = blocking(move || store.finish(&id, &f)).await {
                    tracing::error!(error = %e, "storing a job's end failed");
                }
                Some(state)
            }
        };
        let Some(pool) = self.pools.get(&profile_name).cloned() else {
            self.unpend(&profile_name);
            return finish(
                JobState::Failed,
                Some(format!("no pool for profile \"{profile_name}\"")),
            )
            .await;
        };
        let profile = pool.profile().profile.clone();
        // Secrets come from the server's environment, now; they are never stored.
        let mut secrets = Vec::new();
        for name in &profile.secret_env {
            match read_secret(name) {
                Ok(v) => secrets.push((name.clone(), v)),
                Err(msg) => {
                    self.unpend(&profile_name);
                    return finish(JobState::Failed, Some(msg)).await;
                }
            }
        }
        let mut env = q.job.env.clone();
        if let Some(h) = self.hooks() {
            if let Err(msg) = h.before_start(&id, &mut env).await {
                self.unpend(&profile_name);
                return finish(JobState::Failed, Some(msg)).await;
            }
        }
        let claimed = tokio::select! {
            c = pool.claim() => c,
            _ = wait_cancelled(&cancelled) => {
                self.unpend(&profile_name);
                return None; // cancel() stored the state already
            }
        };
        self.unpend(&profile_name);
        let claimed = match claimed {
            Ok(c) => c,
            // Not started: it stays queued in the store and runs after the restart.
            Err(PoolError::ShuttingDown { .. }) => return None,
            Err(e) => return finish(JobState::Failed, Some(e.to_string())).await,
        };
        let store = self.store.clone();
        let id2 = id.clone();
        let hit = claimed.hit;
        match blocking(move || store.mark_running(&id2, hit)).await {
            Ok(true) => {
                // The job's env and stdin were wiped from the store; the checkpoint
                // task soon clears the old copies from the WAL file too.
                self.wiped.store(true, Ordering::SeqCst);
            }
            // Cancelled while it waited for a container.
            Ok(false) => return None,
            Err(e) => return finish(JobState::Failed, Some(e.to_string())).await,
        }
        env.extend(secrets.iter().cloned());
        let job = Job {
            args: q.job.args.clone(),
            env,
            unset: Vec::new(),
            stdin: q.job.stdin.clone(),
            timeout: q.job.timeout_ms.map(Duration::from_millis),
        };
        let mut sink = StoreSink {
            store: self.store.clone(),
            id: id.clone(),
            live: output,
            offsets: [0, 0],
            // Longest first: a secret that contains another is replaced whole.
            redact: {
                let mut r: Vec<String> = secrets
                    .iter()
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
                    .collect();
                r.sort_by_key(|v| std::cmp::Reverse(v.len()));
                r
            },
        };
        let control = RunControl::with_signals(cancel_rx).with_cancel_flag(cancelled.clone());
        let ran = pool.run_claimed(claimed, job, &mut sink, control).await;
        let was_cancelled = cancelled.load(Ordering::SeqCst);
        let (state, f) = match ran {
            Ok(run) => {
                self.histograms.claim.observe(run.claim_time);
                if let Some(f) = run.outcome.run.first_output {
                    self.histograms.first_output.observe(f);
                }
                self.histograms.duration.observe(run.outcome.run.exit);
                let o = run.outcome;
                let state = if was_cancelled {
                    JobState::Cancelled
                } else if self.stopping.is_cancelled() && o.lost.is_some() {
                    // Killed at the end of the shutdown grace.
                    JobState::Interrupted
                } else if o.timed_out {
                    JobState::TimedOut
                } else if o.exit_code() == 0 && o.lost.is_none() {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                };
                let (exit_code, signal) = match o.exit {
                    warmpool_core::ExitStatus::Code(c) => (Some(c), None),
                    warmpool_core::ExitStatus::Signal(s) => (None, Some(s)),
                };
                let error = o
                    .lost
                    .clone()
                    .or(o.start_error.clone())
                    .map(|e| redact_text(&e, &sink.redact));
                if o.stdout_truncated || o.stderr_truncated {
                    let store = self.store.clone();
                    let id2 = id.clone();
                    let _ = blocking(move || store.set_truncated(&id2)).await;
                }
                (
                    state,
                    Finish {
                        state,
                        exit_code,
                        signal,
                        error,
                    },
                )
            }
            Err(e) => {
                let state = if was_cancelled {
                    JobState::Cancelled
                } else if self.stopping.is_cancelled() {
                    JobState::Interrupted
                } else {
                    JobState::Failed
                };
                (
                    state,
                    Finish {
                        state,
                        exit_code: None,
                        signal: None,
                        error: Some(redact_text(&e.to_string(), &sink.redact)),
                    },
                )
            }
        };
        let store = self.store.clone();
        if let Err(e) = blocking(move || store.finish(&id, &f)).await {
            tracing::error!(error = %e, "storing a job's end failed");
        }
        Some(state)
    }

    /// Cancel a job: a queued one never runs; a running one is killed.
    /// `Ok(false)`: it had ended already.
    pub async fn cancel(&self, id: &str) -> Result<bool, ServiceError> {
        let store = self.store.clone();
        let id2 = id.to_string();
        if blocking(move || store.cancel_queued(&id2)).await? {
            // Its env left the store with it: checkpoint that out of the WAL soon.
            self.wiped.store(true, Ordering::SeqCst);
            if let Some(live) = lock(&self.live).get(id) {
                live.cancelled.store(true, Ordering::SeqCst);
            }
            return Ok(true);
        }
        let live = lock(&self.live)
            .get(id)
            .map(|l| (l.cancel.clone(), l.cancelled.clone()));
        match live {
            Some((tx, flag)) => {
                flag.store(true, Ordering::SeqCst);
                // The container goes, and with it the job (its run ends as lost).
                let _ = tx.send(warmpool_exec::Signal::Kill);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Wait until a job has ended (returns at once for an ended or unknown job).
    pub async fn wait(&self, id: &str) {
        let done = lock(&self.live).get(id).map(|l| l.done.clone());
        if let Some(mut done) = done {
            while !*done.borrow() {
                tokio::select! {
                    changed = done.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    // A shutdown ends every wait: the job's end comes after the grace.
                    _ = self.stopping.cancelled() => break,
                }
            }
        }
    }

    /// Live output of a running job (None once it has ended).
    pub fn follow(&self, id: &str) -> Option<(broadcast::Receiver<Chunk>, watch::Receiver<bool>)> {
        lock(&self.live)
            .get(id)
            .map(|l| (l.output.subscribe(), l.done.clone()))
    }

    /// Cancelled when the service begins to stop (long requests end on it).
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
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

async fn wait_cancelled(flag: &std::sync::atomic::AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn job_clone(j: &NewJob) -> NewJob {
    NewJob {
        profile: j.profile.clone(),
        args: j.args.clone(),
        env: j.env.clone(),
        stdin: j.stdin.clone(),
        timeout_ms: j.timeout_ms,
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

/// Stores a job's output as it comes, passes it to live followers, and redacts
/// the job's secrets from both.
struct StoreSink {
    store: Store,
    id: String,
    live: broadcast::Sender<Chunk>,
    offsets: [u64; 2],
    redact: Vec<String>,
}

fn redact_text(text: &str, secrets: &[String]) -> String {
    String::from_utf8_lossy(&redact(text.as_bytes(), secrets)).into_owned()
}

/// Replace every occurrence of each secret with `[redacted]`. (A secret split
/// across two chunks is not caught; chunks are up to 64 KiB, written whole.)
pub fn redact(data: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = data.to_vec();
    for s in secrets {
        let needle = s.as_bytes();
        if needle.is_empty() || out.len() < needle.len() {
            continue;
        }
        let mut result = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                result.extend_from_slice(b"[redacted]");
                i += needle.len();
            } else {
                result.push(out[i]);
                i += 1;
            }
        }
        out = result;
    }
    out
}

impl OutputSink for StoreSink {
    async fn write(&mut self, stream: StreamKind, data: &[u8]) -> std::io::Result<()> {
        let data = if self.redact.is_empty() {
            data.to_vec()
        } else {
            redact(data, &self.redact)
        };
        let (name, slot) = match stream {
            StreamKind::Stdout => (StreamName::Stdout, 0),
            StreamKind::Stderr => (StreamName::Stderr, 1),
        };
        let offset = self.offsets[slot];
        self.offsets[slot] += data.len() as u64;
        let bytes = Bytes::from(data);
        let store = self.store.clone();
        let id = self.id.clone();
        let stored = bytes.clone();
        tokio::task::spawn_blocking(move || store.append_output(&id, name, &stored))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        // Nobody following is fine.
        let _ = self.live.send(Chunk {
            stream: name,
            offset,
            data: bytes,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_are_redacted() {
        let out = redact(b"token=hunter2 and hunter2!", &["hunter2".into()]);
        assert_eq!(out, b"token=[redacted] and [redacted]!");
        assert_eq!(redact(b"nothing", &["hunter2".into()]), b"nothing");
    }
}
