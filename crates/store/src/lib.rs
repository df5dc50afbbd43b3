//! The job store: everything the service and the bot keep about jobs, behind one
//! async interface, [`JobStore`], with one conformance suite that every backend
//! passes. It stores and enforces the stored part of a job's life (the rules are
//! `warmpool_core::lifecycle`'s); it runs nothing and never touches containers.
//!
//! - [`JobStore`]: the interface, and its value types (this file).
//! - [`sqlite`]: the embedded backend (one file under `[server] data_dir`): one
//!   writer thread committing in groups, reader connections beside it.
//! - [`postgres`]: the shared backend (one PostgreSQL database for several
//!   nodes): a small connection pool, `LISTEN/NOTIFY` events, fencing.
//! - [`clock`]: time, injected (tests move it by hand, no back-dated rows).
//! - [`ids`]: job ids and RFC 3339 timestamps.
//! - [`conformance`]: the suite, generic over the trait, that every backend runs.
//!
//! ```no_run
//! use std::sync::Arc;
//! use warmpool_store::{JobStore, NewJob, SqliteStore, SystemClock};
//!
//! # async fn serve(data_dir: &std::path::Path) -> Result<(), warmpool_store::StoreError> {
//! // Blocking, once at start-up; a second server on the same directory is refused.
//! let store: Arc<dyn JobStore> = Arc::new(SqliteStore::open(data_dir, Arc::new(SystemClock))?);
//! let recovered = store.recover("node-a", "warmpool restarted").await?;
//! let id = store.insert(&NewJob { profile: "py".into(), ..NewJob::default() }).await?;
//! if store.start(&id, "node-a", true).await? {
//!     // Only now hand the job to a container.
//! }
//! # let _ = recovered;
//! # Ok(())
//! # }
//! ```

use async_trait::async_trait;
use std::fmt;
use std::time::Duration;

mod chunks;
pub mod clock;
pub mod conformance;
pub mod ids;
pub mod postgres;
pub mod sqlite;

pub use clock::{Clock, ManualClock, SystemClock};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use warmpool_core::lifecycle::{Finish, JobState};

/// One of a job's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    Stdout,
    Stderr,
}

impl StreamName {
    pub const BOTH: [StreamName; 2] = [StreamName::Stdout, StreamName::Stderr];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        }
    }

    /// 0 for stdout, 1 for stderr (for per-stream arrays).
    pub fn index(self) -> usize {
        match self {
            StreamName::Stdout => 0,
            StreamName::Stderr => 1,
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as accepted by the API. `env` holds the job's own values only: the
/// profile's `secret_env` values are never handed to the store.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NewJob {
    pub profile: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub timeout_ms: Option<u64>,
}

/// Env *names* and the stdin length only: values may be secrets.
impl fmt::Debug for NewJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("NewJob")
            .field("profile", &self.profile)
            .field("args", &self.args)
            .field("env", &env)
            .field("stdin_len", &self.stdin.as_ref().map(Vec::len))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// A queued job with everything needed to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: String,
    pub job: NewJob,
}

/// A job as stored. Env and stdin are never part of it; output is read apart
/// ([`JobStore::read_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    pub profile: String,
    pub state: JobState,
    pub args: Vec<String>,
    pub timeout_ms: Option<u64>,
    /// Whether it ran on a container parked earlier; `None` until it starts.
    pub warm: Option<bool>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Either stream was cut at the profile's cap.
    pub truncated: bool,
    pub error: Option<String>,
    /// The node (`[server] instance`) that runs or ran it; `None` until it starts.
    pub node: Option<String>,
    /// A cancel was asked for while it ran (the node running it acts on it).
    pub cancel_requested: bool,
    /// Bytes stored of stdout and stderr.
    pub output_len: [u64; 2],
    /// Milliseconds since the Unix epoch (format with [`ids::rfc3339`]).
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

/// What [`JobStore::request_cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued: it is now `cancelled` and never runs.
    Cancelled,
    /// It runs: the cancel is recorded; the node running it kills it and stores
    /// how it ended (its own exit, if that came first).
    Requested,
    /// It had ended already, in this state.
    AlreadyEnded(JobState),
    NotFound,
}

/// Which jobs [`JobStore::list`] returns: newest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub state: Option<JobState>,
    pub profile: Option<String>,
    pub limit: usize,
}

/// What [`JobStore::recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs to run, oldest first.
    pub queued: Vec<String>,
    /// This node's jobs that were running and are now `interrupted`.
    pub interrupted: Vec<String>,
}

/// A webhook delivery that started a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub job_id: String,
    /// The front end's own JSON (where to answer).
    pub meta: String,
}

/// Something that changed in the store that a node acts on, from this process
/// or (PostgreSQL: `LISTEN/NOTIFY`) from another node. Events are hints, sent
/// after their commit: a receiver re-reads the store, and after a `Resync`
/// (events may have been missed: a reconnect, a lagging receiver) re-checks
/// everything it waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A job of this profile was queued (or queued again): a node claims it.
    Queued { profile: String },
    /// A cancel was recorded for a job running on `node`.
    CancelRequested { id: String, node: String },
    /// A job's end is stored.
    Ended { id: String },
    /// Events may have been missed: re-check what you wait on.
    Resync,
}

/// What a node says of itself at [`JobStore::join`] and every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeBeat {
    /// `[server] instance`.
    pub node: String,
    /// Where its API is reached (`[cluster] address`, else `[server] listen`).
    pub address: String,
    /// Its pools now, as JSON (the service's own format; the store keeps it whole).
    pub pools: String,
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: String,
    pub address: String,
    pub pools: String,
    /// Bumped by every `join`: a job started by a node carries its generation.
    pub generation: i64,
    /// Milliseconds since the Unix epoch (the store's clock).
    pub joined_ms: i64,
    pub last_seen_ms: i64,
    /// Its heartbeat lapsed and another node took its jobs over; it must join again.
    pub lost: bool,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// This node's lease is renewed.
    Alive,
    /// Another node declared this one lost (or a newer `join` of the same name
    /// happened): its running jobs are no longer its own. Kill their containers
    /// (every write for them is refused) and `join` again.
    Fenced,
}

/// The jobs of one lost node, as [`JobStore::take_over`] left them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakenOver {
    pub node: String,
    /// Running jobs now `interrupted`, their error naming the lost node.
    pub interrupted: Vec<String>,
    /// Running jobs of a `retry_interrupted` profile, queued again.
    pub requeued: Vec<String>,
}

/// What can go wrong in a store. Each message says what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not do `action` (I/O, the database, a lost connection).
    #[error("the job store could not {action}: {message}")]
    Backend {
        action: &'static str,
        message: String,
    },
    /// The store cannot be opened (with what to do about it).
    #[error("{0}")]
    Open(String),
    #[error(
        "job {id} is damaged in the job store ({detail}); delete that job's rows \
         or restore the store from a backup"
    )]
    Corrupt { id: String, detail: String },
    #[error("no job {0} in the job store; check the id (finished jobs are pruned after a while)")]
    NoSuchJob(String),
    #[error(
        "a job cannot finish in state {0}; finish it as succeeded, failed, timed_out, \
         cancelled or interrupted"
    )]
    NotFinal(JobState),
    #[error("the job store has stopped (warmpool is shutting down)")]
    Closed,
    /// A write for a job this node no longer owns: its lease was taken (the node
    /// was declared lost) or the node joined again since it started the job.
    #[error(
        "job {id} is no longer this node's (its lease was taken over by another node); \
         nothing was written"
    )]
    Fenced { id: String },
}

/// The job store. Every call is async and cheap to issue from any task: no
/// caller ever blocks a runtime worker on disk I/O.
///
/// Durability contract (every backend):
/// - `insert*`, `start`, `finish` and `request_cancel` are durable when they
///   return (a job is on disk before it is acknowledged; its end before a
///   `?wait=true` answers);
/// - `append_output` survives a crash of warmpool when it returns, and is
///   durable at the latest when the job's `finish` is;
/// - a job whose `start` returned `true` is never returned by `recover` as queued
///   again (so a crash never runs a job twice);
/// - `claim_next`, `expire_queued`, `join` and `take_over` are durable when they
///   return, as `start` and `finish` are (a claimed job is never claimed again
///   after a crash; only `take_over` queues a job again); a `heartbeat` may be
///   lost in a crash of the machine (the node then looks older).
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new queued job; returns its new id.
    async fn insert(&self, job: &NewJob) -> Result<String, StoreError>;

    /// Stores a job started by a webhook delivery, in one transaction with the
    /// delivery id: `None` (and nothing stored) if that delivery was seen before.
    async fn insert_for_delivery(
        &self,
        delivery: &str,
        meta: &str,
        job: &NewJob,
    ) -> Result<Option<String>, StoreError>;

    /// Stores a new job that already holds a container, as running on `node`
    /// (one commit instead of `insert` + `start`; its env and stdin are never
    /// stored). Durable when it returns, before the hand-over.
    async fn insert_started(
        &self,
        job: &NewJob,
        node: &str,
        warm: bool,
    ) -> Result<String, StoreError>;

    /// The job with its input (env, stdin) if it is queued; `None` otherwise.
    async fn queued(&self, id: &str) -> Result<Option<QueuedJob>, StoreError>;

    /// Queued → running on `node`, its env and stdin wiped, in one commit.
    /// `false` if it is not queued (cancelled meanwhile): then do not run it.
    async fn start(&self, id: &str, node: &str, warm: bool) -> Result<bool, StoreError>;

    /// Appends `data` to a stream at byte `offset` (the stream's length so far,
    /// as the caller counts it). Appending at an offset that is already stored
    /// stores nothing (a retried append is harmless); of an append that reaches
    /// past the stored length only the new part is stored. An offset past the
    /// stored length (a gap: an append was lost) is refused (`Backend`);
    /// `NoSuchJob` for an unknown job. Output may be appended after the job's
    /// end, but a follower is only sure to see what was stored before it.
    /// `Fenced` (nothing stored) as [`JobStore::join`] says.
    async fn append_output(
        &self,
        id: &str,
        stream: StreamName,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError>;

    /// Ends a queued or running job; its input is wiped. The job as it ended, or
    /// `None` if it had ended already (a final job never changes) or is unknown.
    /// `NotFinal` for a non-final state; `Fenced` (nothing written) as
    /// [`JobStore::join`] says, checked before whether the job had ended.
    async fn finish(&self, id: &str, finish: &Finish) -> Result<Option<JobRecord>, StoreError>;

    /// A cancel, as `JobState::on_cancel` says: a queued job ends `cancelled`
    /// (input wiped), a running one is marked `cancel_requested`.
    async fn request_cancel(&self, id: &str) -> Result<CancelOutcome, StoreError>;

    /// A job without its output; `None` if unknown.
    async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Jobs, newest first (by creation order), without output.
    async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError>;

    /// Up to `max` bytes of a stream from byte `offset` (fewer at its end: an
    /// empty result at or past the end); `None` if the job is unknown.
    async fn read_output(
        &self,
        id: &str,
        stream: StreamName,
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// At a node's start: *its* running jobs become `interrupted` with `error`
    /// (their containers went with the previous process); the queued jobs of
    /// every node are returned, oldest first, to run. Jobs running on other
    /// nodes are not touched.
    async fn recover(&self, node: &str, error: &str) -> Result<Recovered, StoreError>;

    /// Deletes jobs that ended more than `older_than` ago, with their output and
    /// deliveries; returns how many jobs.
    async fn prune(&self, older_than: Duration) -> Result<usize, StoreError>;

    /// Deliveries whose job has not been answered yet, oldest first.
    async fn unanswered_deliveries(&self) -> Result<Vec<Delivery>, StoreError>;

    /// The delivery's job has been answered.
    async fn mark_answered(&self, delivery: &str) -> Result<(), StoreError>;

    /// Makes wiped input (env values, stdin) unrecoverable from the store's
    /// files too (SQLite: a WAL checkpoint). Called off every job's path.
    async fn scrub(&self) -> Result<(), StoreError>;

    // ---- The shared queue and the nodes (several nodes on one store). ----

    /// Events from this store (every node's, where the backend shares them),
    /// from the moment of the call. `Queued` for `insert`, a new
    /// `insert_for_delivery` and each job `take_over` queues again;
    /// `CancelRequested` when `request_cancel` marks a running job; `Ended` for
    /// every job that becomes final (`finish`, the cancel of a queued job,
    /// `expire_queued`, the jobs `recover` and `take_over` interrupt). Nothing
    /// else sends one (a claim, a start, output, a seen delivery, an end that
    /// changed nothing). A lagging receiver gets `RecvError::Lagged`: treat it
    /// as a `Resync`.
    fn events(&self) -> tokio::sync::broadcast::Receiver<StoreEvent>;

    /// The oldest queued job of `profile` (creation order) becomes running on
    /// `node`, as `start` makes it (and carrying the generation of this store's
    /// `join` if `node` is the joined node), in one commit, and is returned with
    /// its input; `None` if none is queued. Two nodes claiming at once never get
    /// the same job. The input is wiped in the same commit unless `keep_input`
    /// (a `retry_interrupted` profile: it may be queued again by
    /// [`JobStore::take_over`]; wiped at its end, and `queued` still returns
    /// `None` for it while it runs).
    async fn claim_next(
        &self,
        profile: &str,
        node: &str,
        warm: bool,
        keep_input: bool,
    ) -> Result<Option<QueuedJob>, StoreError>;

    /// How many jobs of `profile` are queued (on every node).
    async fn queued_count(&self, profile: &str) -> Result<usize, StoreError>;

    /// Queued jobs of `profile` created `max_wait` ago or longer (the store's
    /// clock; exactly `max_wait` counts, as with `prune`) end `failed` with
    /// `error`, no exit code (input wiped); returns their ids, oldest first.
    async fn expire_queued(
        &self,
        profile: &str,
        max_wait: Duration,
        error: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// This node starts (or starts again after `Beat::Fenced`): its row is
    /// written (not lost, joined and seen now, address and pools from `beat`)
    /// with a new generation (1 for a new node, else the last one + 1). The
    /// store remembers the node and generation of its last `join` (one node per
    /// store object). From now on the jobs this store makes running on
    /// `beat.node` (`start`, `claim_next`, `insert_started`) carry that
    /// generation; jobs made running on any other node name, or before any
    /// join, carry none.
    ///
    /// Fencing: after a `join`, `append_output` and `finish` of this store
    /// return `StoreError::Fenced` and write nothing when
    /// - the job carries a generation that is not this join's (this node's
    ///   earlier or later join, another node's job, or a job `take_over`
    ///   interrupted or queued again: no node writes a job queued again until
    ///   it is claimed or started again), whatever the job's state; or
    /// - this store's lease is gone: its node was declared lost, or joined
    ///   again (by another store) since; then every such write is refused.
    ///
    /// A job carrying no generation is otherwise not fenced. Before any `join`
    /// nothing is fenced.
    ///
    /// The join also ends `interrupted` the node's running jobs that carry an
    /// earlier generation (fenced for good: e.g. claimed by this node after it
    /// was declared lost, before its heartbeat told it), with an error naming
    /// the node (an `Ended` event each); it touches no other job.
    async fn join(&self, beat: &NodeBeat) -> Result<(), StoreError>;

    /// Renews this node's lease (last seen now, its address and pools);
    /// `Fenced` (nothing written) if it was declared lost or joined again
    /// elsewhere since, or if this store's last `join` was not as `beat.node`
    /// (no join, or another name).
    async fn heartbeat(&self, beat: &NodeBeat) -> Result<Beat, StoreError>;

    /// Every node that ever joined (lost ones too), by name.
    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// Nodes other than `by` not seen for `timeout` (last seen `timeout` ago or
    /// longer, the store's clock) and not lost yet become lost, once (two
    /// nodes taking over at once do it once; a node becomes eligible again only
    /// after a new `join`); `by` need not have joined. Their running jobs end
    /// `interrupted` with an error naming the lost node, or, for a profile in
    /// `requeue` whose input was kept (`claim_next` with `keep_input`) and with
    /// no cancel requested, are queued again (node, warm, start, cancel and
    /// output cleared, lengths 0: the next run starts from nothing; its input
    /// is `queued`'s again). Both kinds are fenced (see [`JobStore::join`]).
    /// A node lost before (not joined again since) that shows running jobs
    /// (claims or starts that committed after it was declared lost: its lease
    /// was gone) has those taken over the same way.
    /// Returns one `TakenOver` per node made lost (with empty lists if it ran
    /// nothing) and per lost node whose late jobs were taken, by node name,
    /// each list oldest first; empty if none.
    async fn take_over(
        &self,
        by: &str,
        timeout: Duration,
        requeue: &[String],
    ) -> Result<Vec<TakenOver>, StoreError>;

    /// Jobs running on `node` with a cancel recorded, oldest first (a node that
    /// missed the event finds them here).
    async fn cancels_requested(&self, node: &str) -> Result<Vec<String>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_new_job_hides_env_values_and_stdin() {
        let new = NewJob {
            profile: "py".into(),
            env: vec![("TOKEN".into(), "hunter2".into())],
            stdin: Some(b"private".to_vec()),
            ..NewJob::default()
        };
        let shown = format!("{new:?}");
        assert!(
            shown.contains("TOKEN") && shown.contains("stdin_len: Some(7)"),
            "{shown}"
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("private"),
            "{shown}"
        );
    }

    #[test]
    fn streams_have_names_and_indexes() {
        assert_eq!(StreamName::BOTH.map(StreamName::index), [0, 1]);
        assert_eq!(StreamName::Stderr.to_string(), "stderr");
    }
}
