//! This node's part in the cluster (one node alone is a cluster of one): the
//! shared queue read into this node's containers (the dispatcher), and the
//! node's lease (heartbeats, taking over lost nodes' jobs, fencing itself when
//! its lease may have been taken). It decides which jobs this node takes; a
//! taken job's life is `run`'s.
//!
//! Placement, warm first: a node takes a queued job at once when it has a
//! parked container of its profile; a node that would have to start one (a
//! cold start) leaves the job [`COLD_DELAY`] to a node that has one parked,
//! when its last view of the cluster shows such a node.

use crate::api::PoolView;
use crate::lock;
use crate::service::Service;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use warmpool_store::{Beat, NodeBeat, NodeRecord, StoreEvent};

/// How long a node without a parked container leaves a queued job to the nodes
/// that have one.
pub const COLD_DELAY: Duration = Duration::from_millis(250);
/// The shared queue is looked at this often even without an event (events can
/// be lost with a connection).
const POLL: Duration = Duration::from_secs(1);
/// Every this many heartbeats, this node looks for jobs stored as running on
/// it that it does not run (see `sweep_orphans`).
const ORPHAN_SWEEP_EVERY: u64 = 6;

/// What the dispatcher keeps between rounds.
#[derive(Default)]
pub(crate) struct DispatchState {
    /// Jobs taken per profile that do not hold a container yet.
    pub(crate) taking: HashMap<String, usize>,
    /// Profiles whose queue may hold jobs (an event, a freed slot, a poll).
    dirty: HashSet<String>,
    /// Since when a profile waits for a warm node to take its jobs.
    deferred: HashMap<String, Instant>,
}

/// What this node knows of the others, as of its last heartbeat round.
#[derive(Default, Clone)]
pub(crate) struct ClusterView {
    /// Nodes of the store, lost ones included, and how many are lost.
    pub(crate) nodes: usize,
    pub(crate) lost: usize,
    /// Profiles another live node had a parked container of.
    warm_elsewhere: HashSet<String>,
}

impl ClusterView {
    /// The view `me` takes of the store's `nodes` (their pools read once here,
    /// not at every dispatch).
    fn of(me: &str, nodes: &[NodeRecord]) -> ClusterView {
        let warm_elsewhere = nodes
            .iter()
            .filter(|n| n.node != me && !n.lost)
            .filter_map(|n| serde_json::from_str::<Vec<PoolView>>(&n.pools).ok())
            .flatten()
            .filter(|p| p.idle > 0)
            .map(|p| p.profile)
            .collect();
        ClusterView {
            nodes: nodes.len(),
            lost: nodes.iter().filter(|n| n.lost).count(),
            warm_elsewhere,
        }
    }
}

impl Service {
    /// Start the node's loops: the dispatcher and the lease (from `begin`).
    pub(crate) fn start_node(self: &Arc<Self>) {
        let svc = self.clone();
        self.tasks.spawn(async move { svc.dispatch_loop().await });
        let svc = self.clone();
        self.tasks.spawn(async move { svc.lease_loop().await });
        let svc = self.clone();
        // Only a shared store has other nodes that could take this node's jobs
        // over: one host on its SQLite file never fences itself (a slow disk
        // must not kill its jobs).
        if self.config.store.url.is_some() {
            self.tasks.spawn(async move { svc.fence_watch().await });
        }
    }

    /// What this node says of itself.
    pub(crate) fn beat(&self) -> NodeBeat {
        let pools: Vec<PoolView> = self.local_pools();
        NodeBeat {
            node: self.node().to_string(),
            address: self.address(),
            pools: serde_json::to_string(&pools).unwrap_or_else(|_| "[]".into()),
        }
    }

    fn address(&self) -> String {
        match &self.config.cluster.address {
            Some(a) => a.clone(),
            None => format!("http://{}", self.config.server.listen),
        }
    }

    /// Join the store's nodes (a new generation; see `JobStore::join`).
    pub(crate) async fn join(&self) -> Result<(), warmpool_store::StoreError> {
        // The store dates the row before the call returns: so does the lease.
        let asked = Instant::now();
        self.store().join(&self.beat()).await?;
        *lock(&self.lease_ok) = Some(asked);
        self.leased.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Jobs of `profile` this node took that do not hold a container yet.
    pub(crate) fn taking(&self, profile: &str) -> usize {
        lock(&self.dispatch)
            .taking
            .get(profile)
            .copied()
            .unwrap_or(0)
    }

    /// Front ends answer for jobs whose end this node stored outside their
    /// runs (a lost node's, orphans, those killed while the lease was gone).
    async fn answer(&self, ids: &[String]) {
        if let Some(h) = self.hooks() {
            for id in ids {
                h.after_end(id).await;
            }
        }
    }

    /// Something may be queued for `profile` (`None`: for any): look now.
    pub(crate) fn queue_changed(&self, profile: Option<&str>) {
        {
            let mut st = lock(&self.dispatch);
            match profile {
                Some(p) => {
                    st.dirty.insert(p.to_string());
                }
                None => st.dirty.extend(self.pools.iter().map(|(n, _)| n.clone())),
            }
        }
        self.dispatch_wake.notify_one();
    }

    async fn dispatch_loop(self: Arc<Self>) {
        let mut events = self.store().events();
        self.queue_changed(None);
        let mut next_poll = Instant::now() + POLL;
        let stopping = self.stopping();
        loop {
            let again = self.dispatch_round().await;
            let wait = if again {
                COLD_DELAY.min(next_poll.saturating_duration_since(Instant::now()))
            } else {
                next_poll.saturating_duration_since(Instant::now())
            };
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = self.dispatch_wake.notified() => {}
                ev = events.recv() => match ev {
                    Ok(StoreEvent::Queued { profile }) => self.queue_changed(Some(&profile)),
                    Ok(StoreEvent::CancelRequested { id, node }) => {
                        if node == self.node() {
                            self.cancel_local(&id);
                        }
                    }
                    Ok(StoreEvent::Ended { .. }) => {}
                    Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => self.queue_changed(None),
                    Err(RecvError::Closed) => {
                        // The store stopped: keep polling until the service stops.
                        events = self.store().events();
                        tokio::time::sleep(POLL).await;
                    }
                },
                _ = tokio::time::sleep(wait) => {}
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + POLL;
                self.queue_changed(None);
                self.expire_queued().await;
            }
        }
    }

    /// One pass over the profiles whose queue may hold jobs: take as many as
    /// this node can start now. `true`: some profile was left for a warm node
    /// and must be looked at again after [`COLD_DELAY`].
    async fn dispatch_round(self: &Arc<Self>) -> bool {
        if !self.leased.load(Ordering::SeqCst) || self.stopping().is_cancelled() {
            return false;
        }
        let dirty: Vec<String> = lock(&self.dispatch).dirty.drain().collect();
        let mut again = false;
        for profile in dirty {
            match self.dispatch_profile(&profile).await {
                Ok(Round::Done) => {}
                Ok(Round::Deferred) => {
                    again = true;
                    lock(&self.dispatch).dirty.insert(profile);
                }
                Err(e) => {
                    tracing::warn!(profile = %profile, error = %e, "taking jobs from the queue failed; retrying");
                    lock(&self.dispatch).dirty.insert(profile);
                }
            }
        }
        again
    }

    async fn dispatch_profile(
        self: &Arc<Self>,
        profile: &str,
    ) -> Result<Round, warmpool_store::StoreError> {
        let Some(pool) = self.pools.get(profile).cloned() else {
            return Ok(Round::Done);
        };
        let keep_input = self
            .config
            .profiles
            .get(profile)
            .is_some_and(|p| p.retry_interrupted);
        let mut queued = self.store().queued_count(profile).await?;
        while queued > 0 && self.leased.load(Ordering::SeqCst) && !self.stopping().is_cancelled() {
            let taking = self.taking(profile);
            if pool.capacity() <= taking {
                // Full: a freed slot or a parked container looks again.
                return Ok(Round::Done);
            }
            let warm = pool.idle() > taking;
            if !warm && lock(&self.cluster).warm_elsewhere.contains(profile) {
                let since = *lock(&self.dispatch)
                    .deferred
                    .entry(profile.to_string())
                    .or_insert_with(Instant::now);
                if since.elapsed() < COLD_DELAY {
                    return Ok(Round::Deferred);
                }
            }
            let Some(q) = self
                .store()
                .claim_next(profile, self.node(), warm, keep_input)
                .await?
            else {
                break;
            };
            queued -= 1;
            lock(&self.dispatch).deferred.remove(profile);
            self.take(q);
        }
        lock(&self.dispatch).deferred.remove(profile);
        Ok(Round::Done)
    }

    /// Queued jobs past their profile's `max_wait` fail (any node may do it).
    async fn expire_queued(&self) {
        for (name, profile) in &self.config.profiles {
            // A read first: most of the time nothing waits at all.
            if !matches!(self.store().queued_count(name).await, Ok(n) if n > 0) {
                continue;
            }
            let error = format!(
                "no container was free for the profile \"{name}\" within max_wait ({:?})",
                profile.max_wait
            );
            match self
                .store()
                .expire_queued(name, profile.max_wait, &error)
                .await
            {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(profile = %name, jobs = ids.len(), "queued jobs waited past max_wait and failed");
                    self.input_wiped();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring queued jobs failed"),
            }
        }
    }

    /// The lease: a heartbeat every `[cluster] heartbeat`; lost nodes' jobs
    /// taken over; cancels recorded elsewhere acted on; and, when this node's
    /// own lease may have been taken (no heartbeat stored for longer than the
    /// timeout allows), its running jobs killed before another node takes them.
    async fn lease_loop(self: Arc<Self>) {
        let cluster = self.config.cluster.clone();
        let requeue: Vec<String> = self
            .config
            .profiles
            .iter()
            .filter(|(_, p)| p.retry_interrupted)
            .map(|(n, _)| n.clone())
            .collect();
        let stopping = self.stopping();
        let mut rounds: u64 = 0;
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = tokio::time::sleep(cluster.heartbeat) => {}
            }
            // The stored beat is dated when it was asked for, not when the
            // answer came (a slow database must not stretch the lease).
            let asked = Instant::now();
            match self.store().heartbeat(&self.beat()).await {
                Ok(Beat::Alive) => {
                    *lock(&self.lease_ok) = Some(asked);
                    if !self.leased.load(Ordering::SeqCst) {
                        self.regain().await;
                    }
                }
                Ok(Beat::Fenced) => {
                    tracing::error!(
                        node = %self.node(),
                        "this node was declared lost by another node: killing its jobs and joining again"
                    );
                    // Nothing new until the join: a job taken or started
                    // now would carry the lost generation (its writes
                    // refused, ended by the join) yet run on, unkilled.
                    self.leased.store(false, Ordering::SeqCst);
                    self.fence_jobs("its node was declared lost by another node");
                    match self.join().await {
                        Ok(()) => self.queue_changed(None),
                        Err(e) => tracing::warn!(error = %e, "joining the cluster again failed"),
                    }
                }
                Err(e) => {
                    self.cluster_counters
                        .heartbeat_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "storing this node's heartbeat failed");
                }
            }
            match self
                .store()
                .take_over(self.node(), cluster.node_timeout, &requeue)
                .await
            {
                Ok(taken) => {
                    for t in taken {
                        self.cluster_counters
                            .taken_over
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            lost = %t.node,
                            interrupted = t.interrupted.len(),
                            requeued = t.requeued.len(),
                            "took over the jobs of a lost node"
                        );
                        if !t.requeued.is_empty() {
                            self.queue_changed(None);
                        }
                        // Front ends answer for the lost node (the bot's comment).
                        self.answer(&t.interrupted).await;
                        self.sweep_lost(&t.node).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "looking for lost nodes failed"),
            }
            rounds += 1;
            if rounds.is_multiple_of(ORPHAN_SWEEP_EVERY) {
                self.sweep_orphans().await;
            }
            match self.store().cancels_requested(self.node()).await {
                Ok(ids) => ids.iter().for_each(|id| self.cancel_local(id)),
                Err(e) => tracing::warn!(error = %e, "reading cancels failed"),
            }
            match self.store().nodes().await {
                Ok(nodes) => *lock(&self.cluster) = ClusterView::of(self.node(), &nodes),
                Err(e) => tracing::warn!(error = %e, "reading the nodes failed"),
            }
        }
    }
}

impl Service {
    /// Killed before the others may take them: a lease is good for
    /// node_timeout after the last stored beat; stop one beat early. Its own
    /// task, looking often: the lease loop's store calls may each hang for
    /// as long as the store retries (a database that stopped answering), far
    /// past the lease.
    async fn fence_watch(self: Arc<Self>) {
        let cluster = self.config.cluster.clone();
        let every =
            (cluster.heartbeat / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let stopping = self.stopping();
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let last = *lock(&self.lease_ok);
            let lapsed =
                last.is_none_or(|t| t.elapsed() + cluster.heartbeat >= cluster.node_timeout);
            if lapsed && self.leased.swap(false, Ordering::SeqCst) {
                tracing::error!(
                    node = %self.node(),
                    "no heartbeat stored within node_timeout: this node's lease may be taken; killing its jobs"
                );
                self.fence_jobs("its node lost its lease (the job store was unreachable)");
            }
        }
    }

    /// Jobs stored as running on this node, of its current lease, that it does
    /// not run: a take whose commit answered with an error although it was
    /// stored (a database restarting at that moment), or a run whose end could
    /// not be stored. Nothing else would ever end them: they end `interrupted`.
    /// The containers a lost node left on this node's engine (nodes sharing
    /// one engine, or a node's engine outliving it): the gates of its parked
    /// and running containers exit when it is gone, but a container it was
    /// creating when it died was never started and would stay. The lost node
    /// fenced itself before it was declared lost, so nothing of it is in use.
    async fn sweep_lost(&self, instance: &str) {
        if instance == self.node() {
            return;
        }
        match warmpool_pool::sweep(self.pools.runtime(), instance).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(lost = %instance, containers = n, "removed a lost node's containers from this engine")
            }
            Err(e) => {
                tracing::warn!(lost = %instance, error = %e, "removing a lost node's containers failed")
            }
        }
    }

    async fn sweep_orphans(self: &Arc<Self>) {
        if !self.leased.load(Ordering::SeqCst) {
            return;
        }
        let query = warmpool_store::ListQuery {
            state: Some(warmpool_core::JobState::Running),
            profile: None,
            limit: 10_000,
        };
        let running = match self.store().list(&query).await {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "looking for orphaned jobs failed"),
        };
        let now = warmpool_store::Clock::now_ms(&warmpool_store::SystemClock);
        // Stored as running here for a node_timeout (the fast path registers
        // its run within ms of storing it).
        let age = i64::try_from(self.config.cluster.node_timeout.as_millis()).unwrap_or(i64::MAX);
        for r in running {
            let mine = r.node.as_deref() == Some(self.node());
            let old = r.started_ms.is_some_and(|t| now.saturating_sub(t) >= age);
            if !mine || !old || lock(&self.live).contains_key(&r.id) {
                continue;
            }
            let f = warmpool_core::Finish::without_exit(
                warmpool_core::JobState::Interrupted,
                "its node lost track of it (the job store answered with an error when it was taken or ended)",
            );
            match self.store().finish(&r.id, &f).await {
                Ok(Some(_)) => {
                    tracing::warn!(job = %r.id, "a job stored as running here that this node does not run is interrupted");
                    self.input_wiped();
                    self.answer(std::slice::from_ref(&r.id)).await;
                }
                Ok(None) => {}
                // Another generation's (fenced): the join ends those.
                Err(e) => tracing::debug!(job = %r.id, error = %e, "an orphaned job was not ended"),
            }
        }
    }

    /// The lease is back after this node fenced itself (nobody took it over):
    /// the jobs it killed meanwhile (their ends could not be stored) end
    /// `interrupted`, then a new generation; then it takes jobs again. In that
    /// order: `recover` ends every running job of this node, so after the
    /// join (which lets the dispatcher and the fast path start jobs again) it
    /// would end new ones, still running, too.
    async fn regain(self: &Arc<Self>) {
        let error = "its node lost its lease (the job store was unreachable) and killed it";
        let interrupted = match self.store().recover(self.node(), error).await {
            Ok(r) => r.interrupted,
            Err(e) => {
                tracing::warn!(error = %e, "storing the ends of killed jobs failed");
                return;
            }
        };
        if !interrupted.is_empty() {
            tracing::warn!(
                jobs = interrupted.len(),
                "jobs killed while the lease was lost are interrupted"
            );
        }
        if let Err(e) = self.join().await {
            tracing::warn!(error = %e, "joining the cluster again failed");
            self.leased.store(false, Ordering::SeqCst);
            return;
        }
        // Their runs could not store an end, so no front end answered them.
        self.answer(&interrupted).await;
        tracing::info!(node = %self.node(), "lease regained; taking jobs again");
        self.queue_changed(None);
    }

    /// Kill every job this node runs (its lease is gone): their writes would
    /// be refused, and another node ends or re-queues them.
    fn fence_jobs(&self, why: &str) {
        let live: Vec<_> = lock(&self.live)
            .iter()
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect();
        for (id, job) in live {
            tracing::warn!(job = %id, reason = %why, "killing a job this node no longer owns");
            *lock(&job.fenced) = Some(why.to_string());
            job.cancel.cancel();
        }
    }
}

enum Round {
    Done,
    Deferred,
}
