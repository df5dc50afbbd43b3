//! The embedded backend: one SQLite file (`jobs.sqlite3` under `[server]
//! data_dir`) behind [`JobStore`]. It stores what `warmpool_core::lifecycle`
//! allows (its conditional updates are built from those rules) and decides
//! nothing about a job's life.
//!
//! - `schema`: the file's versions, migrations and connection set-up.
//! - `writer`: one thread owning the write connection, committing in groups.
//! - `output`: output by byte offset; `rows`: reading rows back, checked.
//!
//! Writes go to the writer as closures; of what is waiting, output appends
//! commit first with `synchronous=NORMAL` (no fsync), the rest in one commit
//! with `FULL` (one fsync).
//! Reads run on reader connections in `spawn_blocking` (WAL: they never wait for
//! the writer). One server owns the directory: an OS lock on `jobs.lock`.

mod output;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension};
use tokio::sync::{broadcast, oneshot, Semaphore};
use warmpool_core::lifecycle::{StoredCancel, CANCELLED_QUEUED_ERROR};

use crate::chunks::states_where;
use crate::clock::Clock;
use crate::ids::new_id;
use crate::{
    Beat, CancelOutcome, Delivery, Finish, JobRecord, JobState, JobStore, ListQuery, NewJob,
    NodeBeat, NodeRecord, QueuedJob, Recovered, StoreError, StoreEvent, StreamName, TakenOver,
};
use output::{append, read_range};
use rows::{node_from_row, read_queued, record_from_row, text, NODE_COLUMNS, RECORD_COLUMNS};
use schema::{configure_reader, configure_writer, migrate, BUSY_TIMEOUT};
pub use writer::WriterStats;
use writer::{run_writer, write_op_then, Counters, Durability, Op};

/// The store's file inside the data directory.
pub const FILE_NAME: &str = "jobs.sqlite3";

/// The file whose OS lock says which process owns the data directory.
pub const LOCK_FILE_NAME: &str = "jobs.lock";

/// How long `open` waits for another process (an old warmpool) to let go of
/// the file before it says the store is in use.
const OPEN_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Reader connections (get, list, read_output, queued, deliveries).
const READERS: usize = 3;

/// Events kept for a receiver that lags (it then sees `Lagged`: a resync).
const EVENT_CAPACITY: usize = 1024;

static START_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = '{}', node = ?2, warm = ?3, started_at = ?4, node_gen = ?5,
                         keep_input = ?6
         WHERE id = ?1 AND state IN ({})",
        JobState::Running.as_str(),
        states_where(JobState::can_start)
    )
});

static FINISH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = ?2, exit_code = ?3, signal = ?4, error = ?5,
                         truncated = max(truncated, ?6), finished_at = ?7
         WHERE id = ?1 AND state IN ({})",
        states_where(JobState::can_finish)
    )
});

static CANCEL_NOW_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4
         WHERE id = ?1 AND state IN ({})",
        states_where(|s| s.on_cancel() == StoredCancel::EndNow)
    )
});

static CANCEL_ASK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state IN ({})",
        states_where(|s| s.on_cancel() == StoredCancel::AskRunner)
    )
});

/// Final states: the only ones pruned.
static FINAL_STATES: LazyLock<String> = LazyLock::new(|| states_where(JobState::is_final));

/// Adds what the store was doing to a SQLite error.
trait Context<T> {
    fn ctx(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| backend(action, &source))
    }
}

fn backend(action: &'static str, e: &dyn fmt::Display) -> StoreError {
    StoreError::Backend {
        action,
        message: format!("{e}; check free space and permissions in [server] data_dir"),
    }
}

/// The `(node, generation)` of the store's last `join`, read and written on the
/// writer thread only (so in the order of the writes).
#[derive(Debug, Default)]
struct Joined(Mutex<Option<(String, i64)>>);

impl Joined {
    fn get(&self) -> Option<(String, i64)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, node: &str, generation: i64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((node.to_owned(), generation));
    }

    /// The generation a job made running on `node` carries now.
    fn generation_of(&self, node: &str) -> Option<i64> {
        self.get().filter(|(n, _)| n == node).map(|(_, g)| g)
    }

    /// `Fenced` if this store joined and may not write job `id` any more: the
    /// job carries another node's or generation's lease (or was taken over),
    /// or this store's own lease is gone (lost, or a newer join of its node).
    fn check(&self, db: &Connection, id: &str, action: &'static str) -> Result<(), StoreError> {
        let Some((node, generation)) = self.get() else {
            return Ok(());
        };
        let fenced = || StoreError::Fenced { id: id.to_owned() };
        let job = db
            .prepare_cached("SELECT node, node_gen FROM jobs WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![id], |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                    ))
                })
            })
            .optional()
            .ctx(action)?;
        if let Some((job_node, Some(job_gen))) = job {
            if job_node.as_deref() != Some(node.as_str()) || job_gen != generation {
                return Err(fenced());
            }
        }
        let leased = db
            .prepare_cached("SELECT 1 FROM nodes WHERE node = ?1 AND generation = ?2 AND lost = 0")
            .and_then(|mut stmt| stmt.exists(params![node, generation]))
            .ctx(action)?;
        if !leased {
            return Err(fenced());
        }
        Ok(())
    }
}

/// Reader connections, each used by one blocking task at a time.
struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

/// The SQLite job store. Open it once per data directory; share it as
/// `Arc<dyn JobStore>`. Dropping it lets the writer finish what was sent and
/// closes the file.
pub struct SqliteStore {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    ops: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    counters: Arc<Counters>,
    events: broadcast::Sender<StoreEvent>,
    joined: Arc<Joined>,
    /// Held for the store's life; dropped last (`None`: a test's second store).
    _lock: Option<fs::File>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has committed what was
        // sent; wait for it so that the file is let go when this returns.
        self.ops.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl SqliteStore {
    /// Opens (or creates) `data_dir/jobs.sqlite3`, creating `data_dir` if needed
    /// (private to the user: queued jobs' env values are in the file), migrating
    /// a file written by an older warmpool. Blocks (call it at start-up).
    ///
    /// A second open of the same directory, in this process or another, is
    /// refused while this store lives.
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(data_dir, clock, OPEN_BUSY_TIMEOUT, true)
    }

    /// A second store on the file of an open one, without the directory's lock:
    /// for the conformance cases that play two nodes on one storage (SQLite
    /// serialises the two writers; a deployment has one node per file).
    #[cfg(test)]
    fn open_beside(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(data_dir, clock, OPEN_BUSY_TIMEOUT, false)
    }

    /// `open`, waiting at most `busy` for another process to let go of the file;
    /// without the directory's lock unless `lock` (tests only).
    fn open_with(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        busy: Duration,
        lock: bool,
    ) -> Result<SqliteStore, StoreError> {
        create_private_dir(data_dir).map_err(|e| {
            StoreError::Open(format!(
                "could not create the data directory {}: {e}; check [server] data_dir and \
                 that warmpool may write there",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(FILE_NAME);
        let in_use = || {
            StoreError::Open(format!(
                "the job store {} is in use by another warmpool server; stop that server \
                 or give this one its own [server] data_dir",
                path.display()
            ))
        };
        let lock = lock
            .then(|| lock_dir(data_dir))
            .transpose()
            .map_err(|e| match e {
                LockError::Held => in_use(),
                LockError::Io(e) => StoreError::Open(format!(
                    "could not lock {}: {e}; check [server] data_dir and that warmpool may \
                     write there",
                    data_dir.join(LOCK_FILE_NAME).display()
                )),
            })?;
        create_private_file(&path).map_err(|e| {
            StoreError::Open(format!(
                "could not create the job store {}: {e}; check [server] data_dir and that \
                 warmpool may write there",
                path.display()
            ))
        })?;
        let open_error = |e: rusqlite::Error| {
            if is_busy(&e) {
                in_use()
            } else {
                StoreError::Open(format!(
                    "could not open the job store {}: {e}; check that the file is a \
                     readable, writable SQLite file, or move it away to start with an \
                     empty store",
                    path.display()
                ))
            }
        };
        let mut db = Connection::open(&path).map_err(open_error)?;
        let mode = configure_writer(&db, busy).map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open(format!(
                "the job store {} cannot use a write-ahead log (SQLite chose journal mode \
                 {mode}); put [server] data_dir on a local file system",
                path.display()
            )));
        }
        migrate(&mut db, &path, open_error)?;
        db.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(&path).map_err(open_error)?;
            configure_reader(&reader).map_err(open_error)?;
            idle.push(reader);
        }
        let (ops, queue) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let writer = std::thread::Builder::new()
            .name("warmpool-store-writer".into())
            .spawn({
                let counters = Arc::clone(&counters);
                move || run_writer(db, queue, counters)
            })
            .map_err(|e| StoreError::Open(format!("could not start the store's writer: {e}")))?;
        Ok(SqliteStore {
            path,
            clock,
            ops: Some(ops),
            writer: Some(writer),
            counters,
            readers: Arc::new(Readers {
                idle: Mutex::new(idle),
                permits: Semaphore::new(READERS),
            }),
            events: broadcast::channel(EVENT_CAPACITY).0,
            joined: Arc::new(Joined::default()),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.counters.read()
    }

    /// Runs `f` on the writer in its own savepoint, committed at `durability`
    /// with whatever else is waiting; `now` is the clock when it runs.
    async fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        action: &'static str,
        f: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (value, _) = self
            .write_notify(durability, action, move |db, now| {
                f(db, now).map(|value| (value, Vec::new()))
            })
            .await?;
        Ok(value)
    }

    /// [`Self::write`] for an operation that has events to send: they go out
    /// from the writer once its commit succeeded, before the caller's answer.
    async fn write_notify<T: Send + 'static>(
        &self,
        durability: Durability,
        action: &'static str,
        f: impl FnOnce(&Connection, i64) -> Result<(T, Vec<StoreEvent>), StoreError> + Send + 'static,
    ) -> Result<(T, Vec<StoreEvent>), StoreError> {
        let events = self.events.clone();
        let (op, answer) = write_op_then(
            durability,
            action,
            Arc::clone(&self.clock),
            f,
            move |(_, sent): &(T, Vec<StoreEvent>)| {
                for event in sent {
                    // No receiver is fine: events are hints.
                    let _ = events.send(event.clone());
                }
            },
        );
        let ops = self.ops.as_ref().ok_or(StoreError::Closed)?;
        ops.send(Op::Write(op)).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a reader connection, off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        action: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let readers = Arc::clone(&self.readers);
        let joined = tokio::task::spawn_blocking(move || {
            fn lock(r: &Readers) -> std::sync::MutexGuard<'_, Vec<Connection>> {
                r.idle.lock().unwrap_or_else(PoisonError::into_inner)
            }
            let conn = lock(&readers).pop();
            let Some(conn) = conn else {
                return Err(backend(action, &"no reader connection is left"));
            };
            let result = f(&conn);
            lock(&readers).push(conn);
            result
        })
        .await;
        joined.unwrap_or_else(|e| Err(backend(action, &e)))
    }
}

enum LockError {
    Held,
    Io(io::Error),
}

/// Takes the data directory's OS lock (released when the file is closed, so
/// also when the process dies).
fn lock_dir(data_dir: &Path) -> Result<fs::File, LockError> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(data_dir.join(LOCK_FILE_NAME))
        .map_err(LockError::Io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(LockError::Held),
        Err(fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
    }
}

/// An online backup of the store in `data_dir` into the new file `dest`: one
/// consistent snapshot (`VACUUM INTO`, a read transaction), taken while a
/// server runs on the directory or not. Its size in bytes. `dest` must not
/// exist; it is a store file a server opens as `jobs.sqlite3`.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<u64, StoreError> {
    let path = data_dir.join(FILE_NAME);
    if !path.is_file() {
        return Err(StoreError::Open(format!(
            "no job store at {}: check [server] data_dir",
            path.display()
        )));
    }
    if dest.exists() {
        return Err(StoreError::Open(format!(
            "{} exists: a backup goes to a new file",
            dest.display()
        )));
    }
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(&path, flags)
        .map_err(|e| StoreError::Open(format!("opening {}: {e}", path.display())))?;
    db.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| StoreError::Open(e.to_string()))?;
    let dest_text = dest
        .to_str()
        .ok_or_else(|| StoreError::Open(format!("{} is not a UTF-8 path", dest.display())))?;
    db.execute("VACUUM INTO ?1", params![dest_text])
        .map_err(|e| StoreError::Open(format!("backing up into {}: {e}", dest.display())))?;
    let len = fs::metadata(dest)
        .map_err(|e| StoreError::Open(format!("{}: {e}", dest.display())))?
        .len();
    Ok(len)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the database file readable by its owner only (SQLite gives its WAL
/// the same mode); an existing file is left as it is.
fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn encode_error(e: serde_json::Error) -> StoreError {
    StoreError::Backend {
        action: "encode a new job",
        message: e.to_string(),
    }
}

/// A new job's columns, encoded before they go to the writer.
struct JobRow {
    profile: String,
    args: String,
    env: String,
    stdin: Option<Vec<u8>>,
    timeout_ms: Option<i64>,
}

impl JobRow {
    fn encode(job: &NewJob) -> Result<JobRow, StoreError> {
        Ok(JobRow {
            env: serde_json::to_string(&job.env).map_err(encode_error)?,
            stdin: job.stdin.clone(),
            ..JobRow::encode_without_input(job)?
        })
    }

    /// The job's row only, for a job whose input is never stored.
    fn encode_without_input(job: &NewJob) -> Result<JobRow, StoreError> {
        Ok(JobRow {
            profile: job.profile.clone(),
            args: serde_json::to_string(&job.args).map_err(encode_error)?,
            env: String::new(),
            stdin: None,
            timeout_ms: job.timeout_ms.map(to_i64),
        })
    }

    /// Inserts the job (queued) and its input; its new id.
    fn insert(&self, db: &Connection, now: i64) -> Result<String, StoreError> {
        let id = self.insert_row(db, now, None)?;
        db.prepare_cached("INSERT INTO job_input (job_id, env, stdin) VALUES (?1, ?2, ?3)")
            .and_then(|mut stmt| stmt.execute(params![id, self.env, self.stdin]))
            .ctx("store a new job's input")?;
        Ok(id)
    }

    /// Inserts the job's row: queued, or running on `(node, warm)` from now.
    fn insert_row(
        &self,
        db: &Connection,
        now: i64,
        started: Option<(&str, bool, Option<i64>)>,
    ) -> Result<String, StoreError> {
        let (state, node, warm, started_at, node_gen) = match started {
            Some((node, warm, node_gen)) => (
                JobState::Running,
                Some(node),
                Some(warm),
                Some(now),
                node_gen,
            ),
            None => (JobState::Queued, None, None, None, None),
        };
        // A clash needs two jobs in the same millisecond drawing the same 32
        // random bits; draw again rather than fail the request.
        let mut attempt = 0;
        let id = loop {
            let id = new_id(now);
            let inserted = db
                .prepare_cached(
                    "INSERT INTO jobs (id, profile, state, args, timeout_ms, created_at,
                                       node, warm, started_at, node_gen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        id,
                        self.profile,
                        state.as_str(),
                        self.args,
                        self.timeout_ms,
                        now,
                        node,
                        warm,
                        started_at,
                        node_gen
                    ])
                });
            match inserted {
                Ok(_) => break id,
                Err(e) if is_constraint(&e) && attempt < 8 => attempt += 1,
                Err(e) => return Err(e).ctx("store a new job"),
            }
        };
        Ok(id)
    }
}

fn wipe_input(db: &Connection, id: &str) -> Result<(), StoreError> {
    db.prepare_cached("DELETE FROM job_input WHERE job_id = ?1")
        .and_then(|mut stmt| stmt.execute(params![id]))
        .ctx("wipe a job's env and stdin")?;
    Ok(())
}

fn ids_of(
    db: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    action: &'static str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = db.prepare_cached(sql).ctx(action)?;
    let mut rows = stmt.query(params).ctx(action)?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next().ctx(action)? {
        let id = row.get::<_, Value>(0).ctx(action)?;
        ids.push(text(id, "id").map_err(|detail| StoreError::Corrupt {
            id: "<unreadable id>".into(),
            detail,
        })?);
    }
    Ok(ids)
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert(&self, job: &NewJob) -> Result<String, StoreError> {
        let row = JobRow::encode(job)?;
        let queued = StoreEvent::Queued {
            profile: job.profile.clone(),
        };
        let (id, _) = self
            .write_notify(Durability::Fsync, "store a new job", move |db, now| {
                Ok((row.insert(db, now)?, vec![queued]))
            })
            .await?;
        Ok(id)
    }

    async fn insert_for_delivery(
        &self,
        delivery: &str,
        meta: &str,
        job: &NewJob,
    ) -> Result<Option<String>, StoreError> {
        let row = JobRow::encode(job)?;
        let (delivery, meta) = (delivery.to_owned(), meta.to_owned());
        let action = "store a delivery's job";
        let queued = StoreEvent::Queued {
            profile: job.profile.clone(),
        };
        let (id, _) = self
            .write_notify(Durability::Fsync, action, move |db, now| {
                let seen = db
                    .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1")
                    .and_then(|mut stmt| stmt.exists(params![delivery]))
                    .ctx(action)?;
                if seen {
                    return Ok((None, Vec::new()));
                }
                let id = row.insert(db, now)?;
                db.prepare_cached(
                "INSERT INTO deliveries (id, job_id, meta, received_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| stmt.execute(params![delivery, id, meta, now]))
            .ctx("store a delivery")?;
                Ok((Some(id), vec![queued]))
            })
            .await?;
        Ok(id)
    }

    async fn insert_started(
        &self,
        job: &NewJob,
        node: &str,
        warm: bool,
    ) -> Result<String, StoreError> {
        // Its input is never stored: not encoded (nor stdin copied) either.
        let row = JobRow::encode_without_input(job)?;
        let node = node.to_owned();
        let joined = Arc::clone(&self.joined);
        self.write(Durability::Fsync, "store a started job", move |db, now| {
            row.insert_row(db, now, Some((&node, warm, joined.generation_of(&node))))
        })
        .await
    }

    async fn queued(&self, id: &str) -> Result<Option<QueuedJob>, StoreError> {
        let id = id.to_owned();
        self.read("read a queued job", move |db| read_queued(db, &id))
            .await
    }

    async fn start(&self, id: &str, node: &str, warm: bool) -> Result<bool, StoreError> {
        let (id, node) = (id.to_owned(), node.to_owned());
        let action = "mark a job running";
        let joined = Arc::clone(&self.joined);
        self.write(Durability::Fsync, action, move |db, now| {
            let node_gen = joined.generation_of(&node);
            let changed = db
                .prepare_cached(&START_SQL)
                .and_then(|mut stmt| stmt.execute(params![id, node, warm, now, node_gen, false]))
                .ctx(action)?;
            if changed == 0 {
                return Ok(false);
            }
            wipe_input(db, &id)?;
            Ok(true)
        })
        .await
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
        let id = id.to_owned();
        let data = data.to_vec();
        let joined = Arc::clone(&self.joined);
        let action = "store job output";
        self.write(Durability::Deferred, action, move |db, _| {
            joined.check(db, &id, action)?;
            append(db, &id, stream, offset, &data)
        })
        .await
    }

    async fn finish(&self, id: &str, finish: &Finish) -> Result<Option<JobRecord>, StoreError> {
        if !finish.state.is_final() {
            return Err(StoreError::NotFinal(finish.state));
        }
        let id = id.to_owned();
        let finish = finish.clone();
        let action = "record a job's end";
        let joined = Arc::clone(&self.joined);
        self.write_notify(Durability::Fsync, action, move |db, now| {
            joined.check(db, &id, action)?;
            let changed = db
                .prepare_cached(&FINISH_SQL)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        id,
                        finish.state.as_str(),
                        finish.exit_code,
                        finish.signal,
                        finish.error,
                        finish.truncated,
                        now
                    ])
                })
                .ctx(action)?;
            if changed == 0 {
                return Ok((None, Vec::new()));
            }
            wipe_input(db, &id)?;
            // The row as it ended, read in the same transaction: the caller
            // answers with it without another read.
            let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?1");
            let mut stmt = db.prepare_cached(&sql).ctx(action)?;
            let mut rows = stmt.query(params![id]).ctx(action)?;
            match rows.next().ctx(action)? {
                Some(row) => Ok((
                    Some(record_from_row(row)?),
                    vec![StoreEvent::Ended { id: id.clone() }],
                )),
                None => Err(StoreError::NoSuchJob(id.clone())),
            }
        })
        .await
        .map(|(record, _)| record)
    }

    async fn request_cancel(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let id = id.to_owned();
        let action = "cancel a job";
        let (outcome, _) = self
            .write_notify(Durability::Fsync, action, move |db, now| {
                let row = db
                    .prepare_cached("SELECT state, node FROM jobs WHERE id = ?1")
                    .and_then(|mut stmt| {
                        stmt.query_row(params![id], |row| {
                            Ok((row.get::<_, Value>(0)?, row.get::<_, Value>(1)?))
                        })
                    })
                    .optional()
                    .ctx(action)?;
                let Some((state, node)) = row else {
                    return Ok((CancelOutcome::NotFound, Vec::new()));
                };
                let corrupt = |detail: String| StoreError::Corrupt {
                    id: id.clone(),
                    detail,
                };
                let state = text(state, "state")
                    .and_then(|s| s.parse::<JobState>().map_err(|e| format!("state: {e}")))
                    .map_err(corrupt)?;
                match state.on_cancel() {
                    StoredCancel::EndNow => {
                        let end = Finish::without_exit(JobState::Cancelled, CANCELLED_QUEUED_ERROR);
                        db.prepare_cached(&CANCEL_NOW_SQL)
                            .and_then(|mut stmt| {
                                stmt.execute(params![id, end.state.as_str(), end.error, now])
                            })
                            .ctx(action)?;
                        wipe_input(db, &id)?;
                        let ended = StoreEvent::Ended { id: id.clone() };
                        Ok((CancelOutcome::Cancelled, vec![ended]))
                    }
                    StoredCancel::AskRunner => {
                        db.prepare_cached(&CANCEL_ASK_SQL)
                            .and_then(|mut stmt| stmt.execute(params![id]))
                            .ctx(action)?;
                        let node = rows::opt_text(node, "node").map_err(corrupt)?;
                        let event = node.map(|node| StoreEvent::CancelRequested {
                            id: id.clone(),
                            node,
                        });
                        Ok((CancelOutcome::Requested, event.into_iter().collect()))
                    }
                    StoredCancel::AlreadyEnded(state) => {
                        Ok((CancelOutcome::AlreadyEnded(state), Vec::new()))
                    }
                }
            })
            .await?;
        Ok(outcome)
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let id = id.to_owned();
        let action = "read a job";
        self.read(action, move |db| {
            let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?1");
            let mut stmt = db.prepare_cached(&sql).ctx(action)?;
            let mut rows = stmt.query(params![id]).ctx(action)?;
            match rows.next().ctx(action)? {
                Some(row) => record_from_row(row).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut conditions = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(state) = query.state {
            values.push(Value::Text(state.as_str().to_owned()));
            conditions.push(format!("state = ?{}", values.len()));
        }
        if let Some(profile) = &query.profile {
            values.push(Value::Text(profile.clone()));
            conditions.push(format!("profile = ?{}", values.len()));
        }
        values.push(Value::Integer(
            i64::try_from(query.limit).unwrap_or(i64::MAX),
        ));
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM jobs {filter} ORDER BY seq DESC LIMIT ?{}",
            values.len()
        );
        let action = "list jobs";
        self.read(action, move |db| {
            let mut stmt = db.prepare_cached(&sql).ctx(action)?;
            let mut rows = stmt.query(params_from_iter(values)).ctx(action)?;
            let mut records = Vec::new();
            while let Some(row) = rows.next().ctx(action)? {
                records.push(record_from_row(row)?);
            }
            Ok(records)
        })
        .await
    }

    async fn read_output(
        &self,
        id: &str,
        stream: StreamName,
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let id = id.to_owned();
        self.read("read job output", move |db| {
            read_range(db, &id, stream, offset, max)
        })
        .await
    }

    async fn recover(&self, node: &str, error: &str) -> Result<Recovered, StoreError> {
        let (node, error) = (node.to_owned(), error.to_owned());
        let action = "recover jobs after a restart";
        let (recovered, _) = self
            .write_notify(Durability::Fsync, action, move |db, now| {
                // NULL: started by a warmpool older than schema 3, which ran alone.
                let mine = "state = 'running' AND (node = ?1 OR node IS NULL)";
                let interrupted = ids_of(
                    db,
                    &format!("SELECT id FROM jobs WHERE {mine} ORDER BY seq"),
                    params![node],
                    action,
                )?;
                if JobState::Running.can_finish() {
                    db.prepare_cached(&format!(
                        "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4 WHERE {mine}"
                    ))
                    .and_then(|mut stmt| {
                        stmt.execute(params![node, JobState::Interrupted.as_str(), error, now])
                    })
                    .ctx(action)?;
                }
                // Input belongs to queued jobs, and to running ones that keep it;
                // drop any left by an older build.
                db.prepare_cached(
                    "DELETE FROM job_input WHERE job_id NOT IN (SELECT id FROM jobs
                     WHERE state = 'queued' OR (state = 'running' AND keep_input = 1))",
                )
                .and_then(|mut stmt| stmt.execute([]))
                .ctx(action)?;
                let queued = ids_of(
                    db,
                    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq",
                    [],
                    action,
                )?;
                let ended = interrupted
                    .iter()
                    .map(|id| StoreEvent::Ended { id: id.clone() })
                    .collect();
                Ok((
                    Recovered {
                        queued,
                        interrupted,
                    },
                    ended,
                ))
            })
            .await?;
        Ok(recovered)
    }

    async fn prune(&self, older_than: Duration) -> Result<usize, StoreError> {
        let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        self.write(Durability::Fsync, "prune old jobs", move |db, now| {
            let cutoff = now.saturating_sub(age);
            let old = format!(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at <= ?1 \
                 AND state IN ({})",
                *FINAL_STATES
            );
            let delete = |sql: String, action: &'static str| {
                db.prepare_cached(&sql)
                    .and_then(|mut stmt| stmt.execute(params![cutoff]))
                    .ctx(action)
            };
            delete(
                format!("DELETE FROM output WHERE job_id IN ({old})"),
                "prune old jobs' output",
            )?;
            delete(
                format!("DELETE FROM job_input WHERE job_id IN ({old})"),
                "prune old jobs' input",
            )?;
            delete(
                format!("DELETE FROM deliveries WHERE job_id IN ({old})"),
                "prune old deliveries",
            )?;
            delete(
                format!("DELETE FROM jobs WHERE id IN ({old})"),
                "prune old jobs",
            )
        })
        .await
    }

    async fn unanswered_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        let action = "read deliveries";
        self.read(action, move |db| {
            let mut stmt = db
                .prepare_cached(
                    "SELECT id, job_id, meta FROM deliveries WHERE answered = 0
                     ORDER BY received_at, rowid",
                )
                .ctx(action)?;
            let mut rows = stmt.query([]).ctx(action)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().ctx(action)? {
                let id = row.get::<_, Value>(0).ctx(action)?;
                let job_id = row.get::<_, Value>(1).ctx(action)?;
                let meta = row.get::<_, Value>(2).ctx(action)?;
                let job_id =
                    text(job_id, "a delivery's job_id").map_err(|detail| StoreError::Corrupt {
                        id: "<unreadable id>".into(),
                        detail,
                    })?;
                let corrupt = |detail: String| StoreError::Corrupt {
                    id: job_id.clone(),
                    detail,
                };
                out.push(Delivery {
                    id: text(id, "a delivery's id").map_err(corrupt)?,
                    meta: text(meta, "a delivery's meta").map_err(corrupt)?,
                    job_id: job_id.clone(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn mark_answered(&self, delivery: &str) -> Result<(), StoreError> {
        let delivery = delivery.to_owned();
        let action = "mark a delivery answered";
        self.write(Durability::Fsync, action, move |db, _| {
            db.prepare_cached("UPDATE deliveries SET answered = 1 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![delivery]))
                .ctx(action)?;
            Ok(())
        })
        .await
    }

    /// Copies the WAL into the database file and empties it: wiped env values
    /// and stdin are zeroed in the database file (`secure_delete`), but their
    /// old pages stay in the WAL until it is checkpointed and cut back.
    async fn scrub(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let ops = self.ops.as_ref().ok_or(StoreError::Closed)?;
        ops.send(Op::Checkpoint(reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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
        let (profile, node) = (profile.to_owned(), node.to_owned());
        let joined = Arc::clone(&self.joined);
        let action = "claim a queued job";
        self.write(Durability::Fsync, action, move |db, now| {
            let next = ids_of(
                db,
                "SELECT id FROM jobs WHERE profile = ?1 AND state = 'queued' ORDER BY seq LIMIT 1",
                params![profile],
                action,
            )?;
            let Some(id) = next.into_iter().next() else {
                return Ok(None);
            };
            let Some(job) = read_queued(db, &id)? else {
                return Err(backend(action, &"the queued job went away"));
            };
            let node_gen = joined.generation_of(&node);
            db.prepare_cached(&START_SQL)
                .and_then(|mut stmt| {
                    stmt.execute(params![id, node, warm, now, node_gen, keep_input])
                })
                .ctx(action)?;
            if !keep_input {
                wipe_input(db, &id)?;
            }
            Ok(Some(job))
        })
        .await
    }

    async fn queued_count(&self, profile: &str) -> Result<usize, StoreError> {
        let profile = profile.to_owned();
        let action = "count queued jobs";
        self.read(action, move |db| {
            let n: i64 = db
                .prepare_cached("SELECT count(*) FROM jobs WHERE profile = ?1 AND state = 'queued'")
                .and_then(|mut stmt| stmt.query_row(params![profile], |row| row.get(0)))
                .ctx(action)?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn expire_queued(
        &self,
        profile: &str,
        max_wait: Duration,
        error: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (profile, error) = (profile.to_owned(), error.to_owned());
        let age = i64::try_from(max_wait.as_millis()).unwrap_or(i64::MAX);
        let action = "expire queued jobs";
        let (expired, _) = self
            .write_notify(Durability::Fsync, action, move |db, now| {
                let cutoff = now.saturating_sub(age);
                let expired = ids_of(
                    db,
                    "SELECT id FROM jobs WHERE profile = ?1 AND state = 'queued'
                     AND created_at <= ?2 ORDER BY seq",
                    params![profile, cutoff],
                    action,
                )?;
                let failed = JobState::Failed.as_str();
                for id in &expired {
                    db.prepare_cached(&FINISH_SQL)
                        .and_then(|mut stmt| {
                            stmt.execute(params![
                                id,
                                failed,
                                None::<i32>,
                                None::<i32>,
                                error,
                                false,
                                now
                            ])
                        })
                        .ctx(action)?;
                    wipe_input(db, id)?;
                }
                let ended = expired
                    .iter()
                    .map(|id| StoreEvent::Ended { id: id.clone() })
                    .collect();
                Ok((expired, ended))
            })
            .await?;
        Ok(expired)
    }

    async fn join(&self, beat: &NodeBeat) -> Result<(), StoreError> {
        let beat = beat.clone();
        let joined = Arc::clone(&self.joined);
        let action = "join the cluster";
        self.write_notify(Durability::Fsync, action, move |db, now| {
            let generation: i64 = db
                .prepare_cached(
                    "INSERT INTO nodes (node, address, pools, generation, joined_ms,
                                        last_seen_ms, lost)
                     VALUES (?1, ?2, ?3, 1, ?4, ?4, 0)
                     ON CONFLICT (node) DO UPDATE SET address = excluded.address,
                         pools = excluded.pools, generation = nodes.generation + 1,
                         joined_ms = excluded.joined_ms, last_seen_ms = excluded.last_seen_ms,
                         lost = 0
                     RETURNING generation",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![beat.node, beat.address, beat.pools, now], |row| {
                        row.get(0)
                    })
                })
                .ctx(action)?;
            // Runs of earlier generations can never write again: they end.
            let stale = "node = ?1 AND state = 'running' AND node_gen IS NOT NULL
                         AND node_gen <> ?2";
            let interrupted = ids_of(
                db,
                &format!("SELECT id FROM jobs WHERE {stale} ORDER BY seq"),
                params![beat.node, generation],
                action,
            )?;
            let error = format!(
                "node \"{}\" joined again (generation {generation}) while this job ran \
                 under an earlier one",
                beat.node
            );
            db.prepare_cached(&format!(
                "UPDATE jobs SET state = ?3, error = ?4, finished_at = ?5 WHERE {stale}"
            ))
            .and_then(|mut stmt| {
                stmt.execute(params![
                    beat.node,
                    generation,
                    JobState::Interrupted.as_str(),
                    error,
                    now
                ])
            })
            .ctx(action)?;
            for id in &interrupted {
                wipe_input(db, id)?;
            }
            // On the writer, in the order of the writes: what runs after this
            // operation carries the new generation. (Should the group's commit
            // fail, the store is ahead of its row: its heartbeat is `Fenced`
            // and the node joins again.)
            joined.set(&beat.node, generation);
            let ended = interrupted
                .into_iter()
                .map(|id| StoreEvent::Ended { id })
                .collect();
            Ok(((), ended))
        })
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, beat: &NodeBeat) -> Result<Beat, StoreError> {
        let beat = beat.clone();
        let joined = Arc::clone(&self.joined);
        let action = "renew this node's lease";
        // A lost heartbeat only makes the node look older: no fsync.
        self.write(Durability::Deferred, action, move |db, now| {
            let Some(generation) = joined.generation_of(&beat.node) else {
                return Ok(Beat::Fenced);
            };
            let changed = db
                .prepare_cached(
                    "UPDATE nodes SET address = ?3, pools = ?4, last_seen_ms = ?5
                     WHERE node = ?1 AND generation = ?2 AND lost = 0",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        beat.node,
                        generation,
                        beat.address,
                        beat.pools,
                        now
                    ])
                })
                .ctx(action)?;
            Ok(if changed == 0 {
                Beat::Fenced
            } else {
                Beat::Alive
            })
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let action = "read nodes";
        self.read(action, move |db| {
            let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY node");
            let mut stmt = db.prepare_cached(&sql).ctx(action)?;
            let mut rows = stmt.query([]).ctx(action)?;
            let mut nodes = Vec::new();
            while let Some(row) = rows.next().ctx(action)? {
                nodes.push(node_from_row(row)?);
            }
            Ok(nodes)
        })
        .await
    }

    async fn take_over(
        &self,
        by: &str,
        timeout: Duration,
        requeue: &[String],
    ) -> Result<Vec<TakenOver>, StoreError> {
        let by = by.to_owned();
        let requeue: Vec<String> = requeue.to_vec();
        let age = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let action = "take over a lost node's jobs";
        let (taken, _) = self
            .write_notify(Durability::Fsync, action, move |db, now| {
                let cutoff = now.saturating_sub(age);
                let lost: Vec<(String, i64)> = {
                    let mut stmt = db
                        .prepare_cached(
                            // Nodes lost now, and nodes lost before that still
                            // show running jobs (a claim that committed after
                            // the node was declared lost: its lease was gone).
                            "SELECT node, last_seen_ms FROM nodes
                             WHERE node <> ?1 AND (
                                 (lost = 0 AND last_seen_ms <= ?2)
                                 OR (lost = 1 AND EXISTS (SELECT 1 FROM jobs
                                         WHERE jobs.node = nodes.node AND jobs.state = 'running')))
                             ORDER BY node",
                        )
                        .ctx(action)?;
                    let rows = stmt
                        .query_map(params![by, cutoff], |row| Ok((row.get(0)?, row.get(1)?)))
                        .ctx(action)?;
                    rows.collect::<rusqlite::Result<_>>().ctx(action)?
                };
                let mut events = Vec::new();
                let mut taken = Vec::new();
                for (node, last_seen) in lost {
                    db.prepare_cached("UPDATE nodes SET lost = 1 WHERE node = ?1")
                        .and_then(|mut stmt| stmt.execute(params![node]))
                        .ctx(action)?;
                    let error = format!(
                        "node \"{node}\" was lost (no heartbeat for {}s)",
                        now.saturating_sub(last_seen) / 1000
                    );
                    let running: Vec<(String, String, bool)> = {
                        let mut stmt = db
                            .prepare_cached(
                                "SELECT j.id, j.profile, j.keep_input = 1 AND j.cancel_requested = 0
                                     AND EXISTS (SELECT 1 FROM job_input i WHERE i.job_id = j.id)
                                 FROM jobs j WHERE j.node = ?1 AND j.state = 'running'
                                 ORDER BY j.seq",
                            )
                            .ctx(action)?;
                        let rows = stmt
                            .query_map(params![node], |row| {
                                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                            })
                            .ctx(action)?;
                        rows.collect::<rusqlite::Result<_>>().ctx(action)?
                    };
                    let mut done = TakenOver {
                        node: node.clone(),
                        ..TakenOver::default()
                    };
                    for (id, profile, kept) in running {
                        if kept && requeue.contains(&profile) {
                            // Queued again from nothing; -1: no node writes it
                            // until it is claimed again (the lost one may
                            // still be running it).
                            db.prepare_cached(
                                "UPDATE jobs SET state = 'queued', node = NULL, node_gen = -1,
                                     warm = NULL, started_at = NULL, keep_input = 0,
                                     cancel_requested = 0, truncated = 0,
                                     stdout_len = 0, stderr_len = 0
                                 WHERE id = ?1",
                            )
                            .and_then(|mut stmt| stmt.execute(params![id]))
                            .ctx(action)?;
                            db.prepare_cached("DELETE FROM output WHERE job_id = ?1")
                                .and_then(|mut stmt| stmt.execute(params![id]))
                                .ctx(action)?;
                            events.push(StoreEvent::Queued { profile });
                            done.requeued.push(id);
                        } else {
                            db.prepare_cached(
                                "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4,
                                     node_gen = -1
                                 WHERE id = ?1",
                            )
                            .and_then(|mut stmt| {
                                stmt.execute(params![
                                    id,
                                    JobState::Interrupted.as_str(),
                                    error,
                                    now
                                ])
                            })
                            .ctx(action)?;
                            wipe_input(db, &id)?;
                            events.push(StoreEvent::Ended { id: id.clone() });
                            done.interrupted.push(id);
                        }
                    }
                    taken.push(done);
                }
                Ok((taken, events))
            })
            .await?;
        Ok(taken)
    }

    async fn cancels_requested(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let node = node.to_owned();
        let action = "read cancels";
        self.read(action, move |db| {
            ids_of(
                db,
                "SELECT id FROM jobs WHERE node = ?1 AND state = 'running'
                 AND cancel_requested = 1 ORDER BY seq",
                params![node],
                action,
            )
        })
        .await
    }
}
