//! The shared backend: one PostgreSQL database behind [`JobStore`], shared by
//! several nodes (warmpool processes, each its own `[server] instance`). It
//! stores what `warmpool_core::lifecycle` allows and decides nothing about a
//! job's life.
//!
//! - `pool`: connections, the retry rule for lost connections, errors, and
//!   [`redacted_url`]; `schema`: the tables and their migration at connect.
//! - `jobs`: one job's statements; `output`: output by byte offset;
//!   `cluster`: the shared queue, nodes, take-over; `fence`: which writes of a
//!   node are refused; `listen`: events over `LISTEN/NOTIFY`; `rows`: reading
//!   rows back, checked.
//!
//! Every operation is one transaction on a pooled connection, retried for a
//! bounded time when the connection fails and retrying is safe (see `pool`).
//! Events are `NOTIFY`s sent by the transaction that made the change.

mod cluster;
mod fence;
mod jobs;
mod listen;
mod output;
mod pool;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch, RwLock};
use tokio::task::JoinHandle;
use tokio_postgres::Config;

use crate::clock::Clock;
use crate::{
    Beat, CancelOutcome, Delivery, Finish, JobRecord, JobStore, ListQuery, NewJob, NodeBeat,
    NodeRecord, QueuedJob, Recovered, StoreError, StoreEvent, StreamName, TakenOver,
};
use fence::Joined;
use jobs::NewRow;
pub use pool::redacted_url;
use pool::{connect, Failure, Next, Pool, Retry, Tries, ATTEMPT_TIMEOUT};

/// Runs `$body` in one transaction, attempt after attempt as `Tries` says.
/// `$body` is an expression of type `Result<T, Failure>` using `$client`, a
/// `&Tx` (the connection, collecting the transaction's events, which go to
/// this store's receivers after `COMMIT`), and `$retried`, whether an earlier
/// attempt may have committed. `$tx`: `false` for a single read statement (no
/// `BEGIN`). A connection is given back to the pool only outside a
/// transaction; any other way out of an attempt closes it.
macro_rules! attempt {
    ($store:expr, $action:expr, $retry:expr, $tx:expr, |$client:ident, $retried:ident| $body:expr) => {{
        let mut tries = Tries::new($action, $retry);
        loop {
            #[allow(unused_variables)]
            let $retried: bool = tries.retried;
            let one = async {
                let conn = $store.pool.get().await?;
                let tx = listen::Tx::new(conn.client()?, &$store.token);
                let $client = &tx;
                if $tx {
                    $client.batch_execute("BEGIN").await?;
                }
                let value = match async { $body }.await {
                    Ok(value) => value,
                    Err(Failure::Store(e)) => {
                        // A store-level answer: the connection is sound.
                        let rolled_back = !$tx || $client.batch_execute("ROLLBACK").await.is_ok();
                        drop(tx);
                        if rolled_back {
                            conn.release();
                        }
                        return Err(Failure::Store(e));
                    }
                    Err(other) => return Err(other),
                };
                if $tx {
                    $client
                        .batch_execute("COMMIT")
                        .await
                        .map_err(|error| Failure::Db {
                            error,
                            at_commit: true,
                        })?;
                }
                for event in tx.take_sent() {
                    // No receiver is not an error: nobody waits on anything.
                    let _ = $store.events.send(event);
                }
                drop(tx);
                conn.release();
                Ok(value)
            };
            let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, one).await {
                Ok(result) => result,
                Err(_) => Err(Failure::TimedOut),
            };
            match tries.next(result).await {
                Next::Done(result) => break result,
                Next::Again => continue,
            }
        }
    }};
}

/// The PostgreSQL job store. One per process (node); share it as
/// `Arc<dyn JobStore>`. Dropping it stops its event listener; pooled
/// connections close with it.
pub struct PgStore {
    pool: Pool,
    clock: Arc<dyn Clock>,
    /// The URL without its password, for messages.
    shown_url: String,
    /// The node and generation of this store's last `join`. `join` holds it
    /// (write) through its transaction, and the calls that make a job running
    /// (read) through theirs: a job is made running either before a join (and
    /// ended by it if it carries an earlier generation) or after it (carrying
    /// its generation), never between.
    joined: RwLock<Option<Joined>>,
    events: broadcast::Sender<StoreEvent>,
    /// Starts this store's notifications: its listener skips them.
    token: String,
    listening: watch::Receiver<bool>,
    listener: JoinHandle<()>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown_url)
            .finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host/db`
    /// or `host=... dbname=...`), creating or migrating its tables, and starts
    /// the event listener, returning once it listens (so every change
    /// committed after the return reaches [`JobStore::events`]). Without a
    /// password in the URL, `PGPASSWORD` is used. Fails (`Open`) if the
    /// database cannot be reached within 10 s of retries.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<PgStore, StoreError> {
        let shown_url = redacted_url(url);
        let mut config: Config = url.parse().map_err(|e| {
            StoreError::Open(format!(
                "the database URL {shown_url} is not valid: {e}; write it as \
                 postgres://user:password@host:5432/database"
            ))
        })?;
        fill_password(&mut config, std::env::var_os("PGPASSWORD"));
        config
            .connect_timeout(pool::CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("warmpool");
        let client = connect_with_retries(&config, &shown_url).await?;
        schema::migrate(&client, clock.now_ms(), &shown_url).await?;
        drop(client);
        let (events, _) = broadcast::channel(listen::CAPACITY);
        let (listening_tx, listening) = watch::channel(false);
        let token = listen::new_token();
        let listener = tokio::spawn(listen::listen(
            config.clone(),
            token.clone(),
            events.clone(),
            listening_tx,
        ));
        let store = PgStore {
            pool: Pool::new(config),
            clock,
            shown_url,
            joined: RwLock::new(None),
            events,
            token,
            listening,
            listener,
        };
        // From the return on, every committed change reaches `events()`
        // (unless the listener loses the database later: then a `Resync`).
        if !store.until_listening(pool::CONNECT_TIMEOUT).await {
            tracing::warn!(
                url = %store.shown_url,
                "the job store's event listener is not listening yet; it keeps trying"
            );
        }
        Ok(store)
    }

    /// The database URL, without its password.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Waits until the event listener listens (at most `limit`): events
    /// committed from then on reach [`JobStore::events`]. `false` if it did
    /// not within `limit` (the database is unreachable; it keeps trying).
    pub async fn until_listening(&self, limit: Duration) -> bool {
        let mut listening = self.listening.clone();
        tokio::time::timeout(limit, listening.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The generation a job made running on `node` carries now: this
    /// store's join's, if `node` is the joined node.
    fn generation_of(joined: &Option<Joined>, node: &str) -> Option<i64> {
        joined
            .as_ref()
            .filter(|j| j.node == node)
            .map(|j| j.generation)
    }
}

/// tokio-postgres does not read `PGPASSWORD`: a URL without a password takes it.
fn fill_password(config: &mut Config, from_env: Option<std::ffi::OsString>) {
    if config.get_password().is_none() {
        if let Some(password) = from_env {
            config.password(password.as_encoded_bytes());
        }
    }
}

/// The first connection, retried like any operation; `Open` if it fails.
async fn connect_with_retries(
    config: &Config,
    shown_url: &str,
) -> Result<tokio_postgres::Client, StoreError> {
    let mut tries = Tries::new("connect to PostgreSQL", Retry::Always);
    loop {
        let result = connect(config).await.map_err(Failure::from);
        match tries.next(result).await {
            Next::Done(Ok(client)) => return Ok(client),
            Next::Done(Err(StoreError::Backend { message, .. })) => {
                return Err(StoreError::Open(format!(
                    "could not connect to the job store's database {shown_url}: {message}"
                )))
            }
            Next::Done(Err(e)) => return Err(e),
            Next::Again => continue,
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobStore for PgStore {
    async fn insert(&self, job: &NewJob) -> Result<String, StoreError> {
        let row = NewRow::encode(job, true, self.now())?;
        let event = StoreEvent::Queued {
            profile: job.profile.clone(),
        };
        attempt!(
            self,
            "store a new job",
            Retry::Always,
            true,
            |c, retried| {
                let id = row.insert(c, None, retried).await?;
                listen::notify(c, &event).await?;
                Ok(id)
            }
        )
    }

    async fn insert_for_delivery(
        &self,
        delivery: &str,
        meta: &str,
        job: &NewJob,
    ) -> Result<Option<String>, StoreError> {
        let row = NewRow::encode(job, true, self.now())?;
        attempt!(
            self,
            "store a delivery's job",
            Retry::Always,
            true,
            |c, retried| jobs::insert_for_delivery(c, &row, delivery, meta, retried).await
        )
    }

    async fn insert_started(
        &self,
        job: &NewJob,
        node: &str,
        warm: bool,
    ) -> Result<String, StoreError> {
        // Its input is never stored: not encoded (nor stdin copied) either.
        let row = NewRow::encode(job, false, self.now())?;
        let joined = self.joined.read().await;
        let gen = Self::generation_of(&joined, node);
        attempt!(
            self,
            "store a started job",
            Retry::Always,
            true,
            |c, retried| row.insert(c, Some((node, gen, warm)), retried).await
        )
    }

    async fn queued(&self, id: &str) -> Result<Option<QueuedJob>, StoreError> {
        attempt!(self, "read a queued job", Retry::Always, false, |c, _r| {
            jobs::queued(c, id).await
        })
    }

    async fn start(&self, id: &str, node: &str, warm: bool) -> Result<bool, StoreError> {
        let now = self.now();
        let joined = self.joined.read().await;
        let gen = Self::generation_of(&joined, node);
        attempt!(
            self,
            "mark a job running",
            Retry::BeforeCommit,
            true,
            |c, _r| jobs::start(c, id, (node, gen, warm), now).await
        )
    }

    async fn append_output(
        &self,
        id: &str,
        stream: StreamName,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let joined = self.joined.read().await.clone();
        // A repeated append stores nothing: safe to retry whatever happened.
        attempt!(self, "store job output", Retry::Always, true, |c, _r| {
            output::append(c, id, stream, offset, data, joined.as_ref()).await
        })
    }

    async fn finish(&self, id: &str, finish: &Finish) -> Result<Option<JobRecord>, StoreError> {
        if !finish.state.is_final() {
            return Err(StoreError::NotFinal(finish.state));
        }
        let now = self.now();
        let joined = self.joined.read().await.clone();
        attempt!(
            self,
            "record a job's end",
            Retry::BeforeCommit,
            true,
            |c, _r| jobs::finish(c, id, finish, now, joined.as_ref()).await
        )
    }

    async fn request_cancel(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let now = self.now();
        attempt!(self, "cancel a job", Retry::BeforeCommit, true, |c, _r| {
            jobs::request_cancel(c, id, now).await
        })
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        attempt!(self, "read a job", Retry::Always, false, |c, _r| {
            jobs::get(c, id).await
        })
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        attempt!(self, "list jobs", Retry::Always, false, |c, _r| {
            jobs::list(c, query).await
        })
    }

    async fn read_output(
        &self,
        id: &str,
        stream: StreamName,
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // One snapshot for the existence check and the chunks.
        attempt!(self, "read job output", Retry::Always, true, |c, _r| {
            output::read_range(c, id, stream, offset, max).await
        })
    }

    async fn recover(&self, node: &str, error: &str) -> Result<Recovered, StoreError> {
        let now = self.now();
        let action = "recover jobs after a restart";
        attempt!(self, action, Retry::BeforeCommit, true, |c, _r| {
            jobs::recover(c, node, error, now).await
        })
    }

    async fn prune(&self, older_than: Duration) -> Result<usize, StoreError> {
        let cutoff = self.now().saturating_sub(millis(older_than));
        attempt!(
            self,
            "prune old jobs",
            Retry::BeforeCommit,
            true,
            |c, _r| jobs::prune(c, cutoff).await
        )
    }

    async fn unanswered_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        attempt!(self, "read deliveries", Retry::Always, false, |c, _r| {
            jobs::unanswered_deliveries(c).await
        })
    }

    async fn mark_answered(&self, delivery: &str) -> Result<(), StoreError> {
        attempt!(
            self,
            "mark a delivery answered",
            Retry::Always,
            true,
            |c, _r| jobs::mark_answered(c, delivery).await
        )
    }

    /// Nothing to do: wiped input is deleted by its transaction, and
    /// PostgreSQL reclaims dead rows at (auto)VACUUM; their bytes stay in the
    /// data files until then (see docs/store.md).
    async fn scrub(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn events(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    async fn claim_next(
        &self,
        profile: &str,
        node: &str,
        warm: bool,
        keep_input: bool,
    ) -> Result<Option<QueuedJob>, StoreError> {
        let now = self.now();
        let joined = self.joined.read().await;
        let gen = Self::generation_of(&joined, node);
        attempt!(
            self,
            "claim a queued job",
            Retry::BeforeCommit,
            true,
            |c, _r| cluster::claim_next(c, profile, node, gen, warm, keep_input, now).await
        )
    }

    async fn queued_count(&self, profile: &str) -> Result<usize, StoreError> {
        attempt!(self, "count queued jobs", Retry::Always, false, |c, _r| {
            cluster::queued_count(c, profile).await
        })
    }

    async fn expire_queued(
        &self,
        profile: &str,
        max_wait: Duration,
        error: &str,
    ) -> Result<Vec<String>, StoreError> {
        let now = self.now();
        let cutoff = now.saturating_sub(millis(max_wait));
        let action = "expire queued jobs";
        attempt!(self, action, Retry::BeforeCommit, true, |c, _r| {
            cluster::expire_queued(c, profile, cutoff, error, now).await
        })
    }

    async fn join(&self, beat: &NodeBeat) -> Result<(), StoreError> {
        let now = self.now();
        let mut joined = self.joined.write().await;
        // A repeat only bumps the generation once more; the last one is kept.
        let generation = attempt!(self, "join the cluster", Retry::Always, true, |c, _r| {
            cluster::join(c, beat, now).await
        })?;
        *joined = Some(Joined {
            node: beat.node.clone(),
            generation,
        });
        Ok(())
    }

    /// `Fenced` also before any join, or for a name this store's last join
    /// was not as: it holds no lease for it.
    async fn heartbeat(&self, beat: &NodeBeat) -> Result<Beat, StoreError> {
        let Some(gen) = Self::generation_of(&*self.joined.read().await, &beat.node) else {
            return Ok(Beat::Fenced);
        };
        let now = self.now();
        attempt!(
            self,
            "renew this node's lease",
            Retry::Always,
            true,
            |c, _r| cluster::heartbeat(c, beat, gen, now).await
        )
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        attempt!(self, "read the nodes", Retry::Always, false, |c, _r| {
            cluster::nodes(c).await
        })
    }

    async fn take_over(
        &self,
        by: &str,
        timeout: Duration,
        requeue: &[String],
    ) -> Result<Vec<TakenOver>, StoreError> {
        let now = self.now();
        let cutoff = now.saturating_sub(millis(timeout));
        let action = "take over a lost node's jobs";
        attempt!(self, action, Retry::BeforeCommit, true, |c, _r| {
            cluster::take_over(c, by, cutoff, timeout, requeue, now).await
        })
    }

    async fn cancels_requested(&self, node: &str) -> Result<Vec<String>, StoreError> {
        attempt!(
            self,
            "read requested cancels",
            Retry::Always,
            false,
            |c, _r| cluster::cancels_requested(c, node).await
        )
    }
}
