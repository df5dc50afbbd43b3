//! The embedded backend: one SQLite file (`jobs.sqlite3` under `[server]
//! data_dir`), its schema and migrations, one writer thread that commits
//! operations in groups, and a few reader connections beside it. It stores what
//! `warmpool_core::lifecycle` allows and decides nothing about a job's life.
//!
//! Writes: every write is a closure sent to the writer thread, which owns the
//! only read-write connection. It takes all the operations waiting when a
//! commit starts, runs each in its own SAVEPOINT (one that fails rolls back
//! alone) and commits them in one transaction: `synchronous=FULL` (an fsync) if
//! any of them must be durable, `NORMAL` for a group of output appends only.
//! Reads run on reader connections in `spawn_blocking` (WAL: they never wait for
//! the writer). One server owns the directory: an OS lock on `jobs.lock`.

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
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row};
use tokio::sync::{oneshot, Semaphore};
use warmpool_core::lifecycle::{StoredCancel, CANCELLED_QUEUED_ERROR};

use crate::clock::Clock;
use crate::ids::new_id;
use crate::{
    CancelOutcome, Delivery, Finish, JobRecord, JobState, JobStore, ListQuery, NewJob, QueuedJob,
    Recovered, StoreError, StreamName,
};

/// The store's file inside the data directory.
pub const FILE_NAME: &str = "jobs.sqlite3";

/// The file whose OS lock says which process owns the data directory.
pub const LOCK_FILE_NAME: &str = "jobs.lock";

/// Schema version in `PRAGMA user_version`; bump it with a migration step.
const SCHEMA_VERSION: i64 = 3;

/// `PRAGMA application_id` of a warmpool store ("wpjs"), so that another
/// program's SQLite file in the data directory is refused, not migrated.
const APPLICATION_ID: i64 = 0x7770_6a73;

/// How long a connection waits for another (a checkpoint waits for readers).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections (get, list, read_output, queued, deliveries).
const READERS: usize = 3;

/// At most this many operations in one commit (bounds a commit's latency).
const MAX_GROUP: usize = 512;

/// Version 1: jobs, the input of queued jobs, output chunks. Kept verbatim: a
/// new file is created by running every step from version 0.
const V1: &str = "
-- seq is the creation order: ids sort by creation time only to the millisecond.
CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    profile          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    args             TEXT    NOT NULL,
    timeout_ms       INTEGER,
    warm             INTEGER,
    exit_code        INTEGER,
    signal           INTEGER,
    error            TEXT,
    truncated        INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_by_profile ON jobs (profile, seq);
CREATE INDEX jobs_by_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Env values and stdin of a job, only while it is queued: the row is deleted
-- (and, with secure_delete, zeroed) in the transaction that starts or ends it.
CREATE TABLE job_input (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    env    TEXT NOT NULL,
    stdin  BLOB
);

-- One row per appended chunk: an append never rewrites earlier output.
CREATE TABLE output (
    chunk  INTEGER PRIMARY KEY,
    job_id TEXT    NOT NULL REFERENCES jobs (id),
    stream INTEGER NOT NULL,
    data   BLOB    NOT NULL
);
CREATE INDEX output_by_job ON output (job_id, stream, chunk);
";

/// Version 2: webhook deliveries.
const V2: &str = "
-- Webhook deliveries that started a job: a redelivery of the same id starts
-- nothing, across restarts. `meta` is the front end's own JSON (where to
-- answer); `answered` once the answer went out.
CREATE TABLE deliveries (
    id          TEXT    PRIMARY KEY,
    job_id      TEXT    NOT NULL REFERENCES jobs (id),
    meta        TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    answered    INTEGER NOT NULL DEFAULT 0
);
";

/// Version 3: the node running a job, a cancel asked of a running job, and
/// output addressed by byte offset (cheap ranged reads, idempotent appends).
const V3: &str = "
-- The node ([server] instance) that started the job; NULL until it starts (and
-- for jobs started by a warmpool older than version 3, which had one node).
ALTER TABLE jobs ADD COLUMN node TEXT;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
-- Bytes stored per stream: the next append's offset, without reading output.
ALTER TABLE jobs ADD COLUMN stdout_len INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stderr_len INTEGER NOT NULL DEFAULT 0;

-- Where each chunk starts in its stream: a read from an offset finds its first
-- chunk through the index, and a chunk is stored once per offset.
ALTER TABLE output ADD COLUMN byte_offset INTEGER NOT NULL DEFAULT 0;
DELETE FROM output WHERE length(data) = 0;
UPDATE output SET byte_offset = o.start FROM (
    SELECT chunk, coalesce(sum(length(data)) OVER (
        PARTITION BY job_id, stream ORDER BY chunk
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS start
    FROM output
) AS o WHERE output.chunk = o.chunk;
DROP INDEX output_by_job;
CREATE UNIQUE INDEX output_by_offset ON output (job_id, stream, byte_offset);
UPDATE jobs SET
    stdout_len = coalesce((SELECT sum(length(data)) FROM output
                           WHERE output.job_id = jobs.id AND stream = 1), 0),
    stderr_len = coalesce((SELECT sum(length(data)) FROM output
                           WHERE output.job_id = jobs.id AND stream = 2), 0);
";

/// Columns read by [`record_from_row`], in its order.
const RECORD_COLUMNS: &str = "id, profile, state, args, timeout_ms, warm, exit_code, signal, \
     error, truncated, created_at, started_at, finished_at, node, cancel_requested, \
     stdout_len, stderr_len";
const RECORD_COLUMN_COUNT: usize = 17;

/// `'queued', 'running'`: the states for which `rule` holds, as an SQL list, so
/// the store's conditional updates are the core's rules.
fn states_where(rule: impl Fn(JobState) -> bool) -> String {
    let names: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|s| rule(*s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    names.join(", ")
}

static START_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = '{}', node = ?2, warm = ?3, started_at = ?4
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

/// How far a commit must reach before its operations return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// On the disk (`synchronous=FULL`): jobs and their states.
    Fsync,
    /// In the WAL file (`synchronous=NORMAL`): survives a crash of warmpool and
    /// reaches the disk with the next `Fsync` commit (a job's `finish` at the
    /// latest). For output, which comes in many small appends.
    Deferred,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Fsync => "FULL",
            Durability::Deferred => "NORMAL",
        }
    }
}

/// Runs an operation inside its savepoint (`None`: do not run it, the group
/// failed): whether it succeeded, and what to do once the group's commit is known.
type Work = Box<dyn FnOnce(Option<&Connection>) -> (bool, Complete) + Send>;
/// Called with the group's commit: `Err(message)` if it failed.
type Complete = Box<dyn FnOnce(Result<(), &str>) + Send>;

struct WriteOp {
    durability: Durability,
    work: Work,
}

enum Op {
    Write(WriteOp),
    /// A WAL checkpoint, which cannot run inside a transaction.
    Checkpoint(oneshot::Sender<Result<(), StoreError>>),
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
    /// Held for the store's life; dropped last.
    _lock: fs::File,
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
        let lock = lock_dir(data_dir).map_err(|e| match e {
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
        let mode = configure_writer(&db).map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open(format!(
                "the job store {} cannot use a write-ahead log (SQLite chose journal mode \
                 {mode}); put [server] data_dir on a local file system",
                path.display()
            )));
        }
        migrate(&mut db, &path, open_error)?;
        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(&path).map_err(open_error)?;
            configure_reader(&reader).map_err(open_error)?;
            idle.push(reader);
        }
        let (ops, queue) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("warmpool-store-writer".into())
            .spawn(move || run_writer(db, queue))
            .map_err(|e| StoreError::Open(format!("could not start the store's writer: {e}")))?;
        Ok(SqliteStore {
            path,
            clock,
            ops: Some(ops),
            writer: Some(writer),
            readers: Arc::new(Readers {
                idle: Mutex::new(idle),
                permits: Semaphore::new(READERS),
            }),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer in its own savepoint, committed at `durability`
    /// with whatever else is waiting; `now` is the clock when it runs.
    async fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        action: &'static str,
        f: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (op, answer) = write_op(durability, action, Arc::clone(&self.clock), f);
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

/// Sets the write connection up; returns the journal mode SQLite settled on.
fn configure_writer(db: &Connection) -> rusqlite::Result<String> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    db.pragma_update(None, "synchronous", Durability::Fsync.pragma())?;
    // Deleted content (wiped env and stdin, pruned jobs) is overwritten with
    // zeros, not left in free space.
    db.pragma_update(None, "secure_delete", "ON")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    // Cut the WAL back whenever it restarts, so stale frames do not linger.
    db.pragma_update_and_check(None, "journal_size_limit", 0, |_| Ok(()))?;
    Ok(mode)
}

fn configure_reader(db: &Connection) -> rusqlite::Result<()> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "query_only", "ON")
}

fn migrate(
    db: &mut Connection,
    path: &Path,
    open_error: impl Fn(rusqlite::Error) -> StoreError,
) -> Result<(), StoreError> {
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(&open_error)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(&open_error)?;
    let application_id: i64 = tx
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(&open_error)?;
    let not_a_store = || {
        StoreError::Open(format!(
            "{} is not a warmpool job store; move it away or point [server] data_dir \
             at another directory",
            path.display()
        ))
    };
    if version == 0 {
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(&open_error)?;
        if tables != 0 {
            return Err(not_a_store());
        }
    } else if application_id != APPLICATION_ID {
        return Err(not_a_store());
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::Open(format!(
            "the job store {} has schema version {version}, newer than this warmpool \
             knows ({SCHEMA_VERSION}); run a newer warmpool or point [server] data_dir \
             elsewhere",
            path.display()
        )));
    }
    // One step per version; a new file runs them all.
    if version < 1 {
        tx.execute_batch(V1).map_err(&open_error)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(&open_error)?;
    }
    if version < 2 {
        tx.execute_batch(V2).map_err(&open_error)?;
    }
    if version < 3 {
        tx.execute_batch(V3).map_err(&open_error)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(&open_error)?;
    }
    tx.commit().map_err(&open_error)
}

/// An operation for the writer, and where its result will come.
fn write_op<T: Send + 'static>(
    durability: Durability,
    action: &'static str,
    clock: Arc<dyn Clock>,
    f: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
) -> (WriteOp, oneshot::Receiver<Result<T, StoreError>>) {
    let (reply, answer) = oneshot::channel();
    let work: Work = Box::new(move |db| {
        // `None`: the group failed before this operation could run.
        let result = db.map(|db| f(db, clock.now_ms()));
        let ok = matches!(result, Some(Ok(_)));
        let complete: Complete = Box::new(move |commit| {
            let result = match (result, commit) {
                (Some(result), Ok(())) => result,
                // Its own error stays its own; a good result did not commit.
                (Some(Err(e)), Err(_)) => Err(e),
                (_, Err(message)) => Err(StoreError::Backend {
                    action,
                    message: message.to_owned(),
                }),
                (None, Ok(())) => Err(backend(action, &"the operation did not run")),
            };
            let _ = reply.send(result);
        });
        (ok, complete)
    });
    (WriteOp { durability, work }, answer)
}

/// The writer thread: takes every operation waiting, commits them as one
/// group, answers each; ends when the store is dropped and the queue is empty.
fn run_writer(db: Connection, queue: mpsc::Receiver<Op>) {
    let mut level = Durability::Fsync;
    let mut next: Option<Op> = None;
    loop {
        let first = match next.take() {
            Some(op) => op,
            None => match queue.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        let first = match first {
            Op::Write(op) => op,
            Op::Checkpoint(reply) => {
                let _ = reply.send(checkpoint(&db));
                continue;
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(Op::Write(op)) => group.push(op),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_group(&db, &mut level, group);
    }
}

fn checkpoint(db: &Connection) -> Result<(), StoreError> {
    let action = "checkpoint the write-ahead log";
    let busy: i64 = db
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .ctx(action)?;
    if busy != 0 {
        return Err(backend(action, &"readers kept it busy; try again"));
    }
    Ok(())
}

/// One transaction for the group, one savepoint per operation.
fn commit_group(db: &Connection, level: &mut Durability, group: Vec<WriteOp>) {
    let needed = if group.iter().any(|op| op.durability == Durability::Fsync) {
        Durability::Fsync
    } else {
        Durability::Deferred
    };
    let fail_all = |group: Vec<WriteOp>, message: String| {
        for op in group {
            let (_, complete) = (op.work)(None);
            complete(Err(&message));
        }
    };
    if *level != needed {
        if let Err(e) = db.pragma_update(None, "synchronous", needed.pragma()) {
            return fail_all(group, e.to_string());
        }
        *level = needed;
    }
    if let Err(e) = run(db, "BEGIN IMMEDIATE") {
        return fail_all(group, e.to_string());
    }
    let mut completes = Vec::with_capacity(group.len());
    let mut broken: Option<String> = None;
    for op in group {
        if broken.is_none() {
            if let Err(e) = run(db, "SAVEPOINT op") {
                broken = Some(e.to_string());
            }
        }
        if broken.is_some() {
            let (_, complete) = (op.work)(None);
            completes.push(complete);
            continue;
        }
        let (ok, complete) = (op.work)(Some(db));
        completes.push(complete);
        let closed = if ok {
            run(db, "RELEASE op")
        } else {
            run(db, "ROLLBACK TO op").and_then(|()| run(db, "RELEASE op"))
        };
        if let Err(e) = closed {
            broken = Some(e.to_string());
        }
    }
    let outcome = match broken {
        Some(message) => Err(message),
        None => run(db, "COMMIT").map_err(|e| e.to_string()),
    };
    if outcome.is_err() && !db.is_autocommit() {
        let _ = run(db, "ROLLBACK");
    }
    let outcome =
        outcome.map_err(|m| format!("{m}; check free space and permissions in [server] data_dir"));
    for complete in completes {
        complete(match &outcome {
            Ok(()) => Ok(()),
            Err(message) => Err(message.as_str()),
        });
    }
}

fn run(db: &Connection, sql: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql)?.execute([]).map(|_| ())
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

/// The value in `output.stream`.
fn stream_code(stream: StreamName) -> i64 {
    match stream {
        StreamName::Stdout => 1,
        StreamName::Stderr => 2,
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
        let encode = |e: serde_json::Error| StoreError::Backend {
            action: "encode a new job",
            message: e.to_string(),
        };
        Ok(JobRow {
            profile: job.profile.clone(),
            args: serde_json::to_string(&job.args).map_err(encode)?,
            env: serde_json::to_string(&job.env).map_err(encode)?,
            stdin: job.stdin.clone(),
            timeout_ms: job.timeout_ms.map(to_i64),
        })
    }

    /// Inserts the job (queued) and its input; its new id.
    fn insert(&self, db: &Connection, now: i64) -> Result<String, StoreError> {
        // A clash needs two jobs in the same millisecond drawing the same 32
        // random bits; draw again rather than fail the request.
        let mut attempt = 0;
        let id = loop {
            let id = new_id(now);
            let inserted = db
                .prepare_cached(
                    "INSERT INTO jobs (id, profile, state, args, timeout_ms, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        id,
                        self.profile,
                        JobState::Queued.as_str(),
                        self.args,
                        self.timeout_ms,
                        now
                    ])
                });
            match inserted {
                Ok(_) => break id,
                Err(e) if is_constraint(&e) && attempt < 8 => attempt += 1,
                Err(e) => return Err(e).ctx("store a new job"),
            }
        };
        db.prepare_cached("INSERT INTO job_input (job_id, env, stdin) VALUES (?1, ?2, ?3)")
            .and_then(|mut stmt| stmt.execute(params![id, self.env, self.stdin]))
            .ctx("store a new job's input")?;
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
        self.write(Durability::Fsync, "store a new job", move |db, now| {
            row.insert(db, now)
        })
        .await
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
        self.write(Durability::Fsync, action, move |db, now| {
            let seen = db
                .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1")
                .and_then(|mut stmt| stmt.exists(params![delivery]))
                .ctx(action)?;
            if seen {
                return Ok(None);
            }
            let id = row.insert(db, now)?;
            db.prepare_cached(
                "INSERT INTO deliveries (id, job_id, meta, received_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| stmt.execute(params![delivery, id, meta, now]))
            .ctx("store a delivery")?;
            Ok(Some(id))
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
        self.write(Durability::Fsync, action, move |db, now| {
            let changed = db
                .prepare_cached(&START_SQL)
                .and_then(|mut stmt| stmt.execute(params![id, node, warm, now]))
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
        self.write(Durability::Deferred, "store job output", move |db, _| {
            append(db, &id, stream, offset, &data)
        })
        .await
    }

    async fn finish(&self, id: &str, finish: &Finish) -> Result<bool, StoreError> {
        if !finish.state.is_final() {
            return Err(StoreError::NotFinal(finish.state));
        }
        let id = id.to_owned();
        let finish = finish.clone();
        let action = "record a job's end";
        self.write(Durability::Fsync, action, move |db, now| {
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
                return Ok(false);
            }
            wipe_input(db, &id)?;
            Ok(true)
        })
        .await
    }

    async fn request_cancel(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let id = id.to_owned();
        let action = "cancel a job";
        self.write(Durability::Fsync, action, move |db, now| {
            let state = db
                .prepare_cached("SELECT state FROM jobs WHERE id = ?1")
                .and_then(|mut stmt| stmt.query_row(params![id], |row| row.get::<_, Value>(0)))
                .optional()
                .ctx(action)?;
            let Some(state) = state else {
                return Ok(CancelOutcome::NotFound);
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
                    Ok(CancelOutcome::Cancelled)
                }
                StoredCancel::AskRunner => {
                    db.prepare_cached(&CANCEL_ASK_SQL)
                        .and_then(|mut stmt| stmt.execute(params![id]))
                        .ctx(action)?;
                    Ok(CancelOutcome::Requested)
                }
                StoredCancel::AlreadyEnded(state) => Ok(CancelOutcome::AlreadyEnded(state)),
            }
        })
        .await
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
        self.write(Durability::Fsync, action, move |db, now| {
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
            // Input belongs to queued jobs only; drop any left by an older build.
            db.prepare_cached(
                "DELETE FROM job_input
                 WHERE job_id NOT IN (SELECT id FROM jobs WHERE state = 'queued')",
            )
            .and_then(|mut stmt| stmt.execute([]))
            .ctx(action)?;
            let queued = ids_of(
                db,
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq",
                [],
                action,
            )?;
            Ok(Recovered {
                queued,
                interrupted,
            })
        })
        .await
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
}

/// Appends at `offset`: the part already stored is skipped, a gap refused.
fn append(
    db: &Connection,
    id: &str,
    stream: StreamName,
    offset: u64,
    data: &[u8],
) -> Result<(), StoreError> {
    let action = "store job output";
    let column = match stream {
        StreamName::Stdout => "stdout_len",
        StreamName::Stderr => "stderr_len",
    };
    let stored = db
        .prepare_cached(&format!("SELECT {column} FROM jobs WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![id], |row| row.get::<_, Value>(0)))
        .optional()
        .ctx(action)?;
    let Some(stored) = stored else {
        return Err(StoreError::NoSuchJob(id.to_owned()));
    };
    let stored = opt_u64(stored, column)
        .and_then(|n| n.ok_or_else(|| format!("{column} is NULL")))
        .map_err(|detail| StoreError::Corrupt {
            id: id.to_owned(),
            detail,
        })?;
    let end = offset.saturating_add(data.len() as u64);
    if end <= stored {
        return Ok(());
    }
    if offset > stored {
        return Err(StoreError::Backend {
            action,
            message: format!(
                "job {id} has {stored} bytes of {stream} and this append starts at byte \
                 {offset}, leaving a gap; append from the stored length"
            ),
        });
    }
    // `offset <= stored < end`: store the part not stored yet.
    let skip = usize::try_from(stored - offset).unwrap_or(data.len());
    let tail = &data[skip.min(data.len())..];
    db.prepare_cached(
        "INSERT INTO output (job_id, stream, byte_offset, data) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(params![id, stream_code(stream), to_i64(stored), tail]))
    .ctx(action)?;
    db.prepare_cached(&format!("UPDATE jobs SET {column} = ?2 WHERE id = ?1"))
        .and_then(|mut stmt| stmt.execute(params![id, to_i64(end)]))
        .ctx(action)?;
    Ok(())
}

/// Up to `max` bytes of a stream from `offset`; `None` for an unknown job.
fn read_range(
    db: &Connection,
    id: &str,
    stream: StreamName,
    offset: u64,
    max: usize,
) -> Result<Option<Vec<u8>>, StoreError> {
    let action = "read job output";
    let exists = db
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists(params![id]))
        .ctx(action)?;
    if !exists {
        return Ok(None);
    }
    let mut out = Vec::new();
    if max == 0 || offset > i64::MAX as u64 {
        return Ok(Some(out));
    }
    let end = offset.saturating_add(max as u64);
    // The chunk holding `offset` is the last one starting at or before it.
    let mut stmt = db
        .prepare_cached(
            "SELECT byte_offset, data FROM output
             WHERE job_id = ?1 AND stream = ?2 AND byte_offset < ?4 AND byte_offset >=
                 coalesce((SELECT max(byte_offset) FROM output
                           WHERE job_id = ?1 AND stream = ?2 AND byte_offset <= ?3), 0)
             ORDER BY byte_offset",
        )
        .ctx(action)?;
    let code = stream_code(stream);
    let mut rows = stmt
        .query(params![id, code, to_i64(offset), to_i64(end)])
        .ctx(action)?;
    let corrupt = |detail: String| StoreError::Corrupt {
        id: id.to_owned(),
        detail,
    };
    let mut next: Option<u64> = None;
    while let Some(row) = rows.next().ctx(action)? {
        let start = opt_u64(row.get::<_, Value>(0).ctx(action)?, "byte_offset")
            .map_err(corrupt)?
            .ok_or_else(|| corrupt("byte_offset is NULL".into()))?;
        let data = match row.get::<_, Value>(1).ctx(action)? {
            Value::Blob(bytes) => bytes,
            other => {
                return Err(corrupt(format!(
                    "a {stream} chunk is {}",
                    type_name(&other)
                )))
            }
        };
        if let Some(expected) = next {
            if start != expected {
                return Err(corrupt(format!(
                    "{stream} has a chunk at byte {start} where byte {expected} was expected"
                )));
            }
        }
        let chunk_end = start + data.len() as u64;
        next = Some(chunk_end);
        if chunk_end <= offset {
            continue;
        }
        let from = usize::try_from(offset.saturating_sub(start)).unwrap_or(usize::MAX);
        let to = usize::try_from(end.min(chunk_end) - start).unwrap_or(data.len());
        if let Some(part) = data.get(from..to) {
            out.extend_from_slice(part);
        }
    }
    Ok(Some(out))
}

fn read_queued(db: &Connection, id: &str) -> Result<Option<QueuedJob>, StoreError> {
    let row = db
        .prepare_cached(
            "SELECT j.profile, j.args, j.timeout_ms, i.env, i.stdin
             FROM jobs j LEFT JOIN job_input i ON i.job_id = j.id
             WHERE j.id = ?1 AND j.state = 'queued'",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![id], |row| {
                Ok((
                    row.get::<_, Value>(0)?,
                    row.get::<_, Value>(1)?,
                    row.get::<_, Value>(2)?,
                    row.get::<_, Value>(3)?,
                    row.get::<_, Value>(4)?,
                ))
            })
        })
        .optional()
        .ctx("read a queued job")?;
    let Some((profile, args, timeout_ms, env, stdin)) = row else {
        return Ok(None);
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        id: id.to_owned(),
        detail,
    };
    let env = match env {
        Value::Null => return Err(corrupt("a queued job has no stored input".into())),
        env => decode_json::<Vec<(String, String)>>(env, "env").map_err(corrupt)?,
    };
    let stdin = match stdin {
        Value::Null => None,
        Value::Blob(bytes) => Some(bytes),
        other => return Err(corrupt(format!("stdin is {}", type_name(&other)))),
    };
    Ok(Some(QueuedJob {
        id: id.to_owned(),
        job: NewJob {
            profile: text(profile, "profile").map_err(corrupt)?,
            args: decode_json(args, "args").map_err(corrupt)?,
            env,
            stdin,
            timeout_ms: opt_u64(timeout_ms, "timeout_ms").map_err(corrupt)?,
        },
    }))
}

/// Reads a row selected with [`RECORD_COLUMNS`], checking every value.
fn record_from_row(row: &Row<'_>) -> Result<JobRecord, StoreError> {
    let mut values = Vec::with_capacity(RECORD_COLUMN_COUNT);
    for i in 0..RECORD_COLUMN_COUNT {
        values.push(row.get::<_, Value>(i).ctx("read a job")?);
    }
    let mut values = values.into_iter();
    let mut next = || values.next().unwrap_or(Value::Null);
    let id = match next() {
        Value::Text(id) => id,
        other => {
            return Err(StoreError::Corrupt {
                id: "<unreadable id>".into(),
                detail: format!("id is {}", type_name(&other)),
            })
        }
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        id: id.clone(),
        detail,
    };
    let profile = text(next(), "profile").map_err(corrupt)?;
    let state = text(next(), "state").map_err(corrupt)?;
    let state = state
        .parse::<JobState>()
        .map_err(|e| corrupt(format!("state: {e}")))?;
    let args = decode_json(next(), "args").map_err(corrupt)?;
    let timeout_ms = opt_u64(next(), "timeout_ms").map_err(corrupt)?;
    let warm = opt_int(next(), "warm").map_err(corrupt)?.map(|w| w != 0);
    let exit_code = opt_i32(next(), "exit_code").map_err(corrupt)?;
    let signal = opt_i32(next(), "signal").map_err(corrupt)?;
    let error = opt_text(next(), "error").map_err(corrupt)?;
    let truncated = opt_int(next(), "truncated").map_err(corrupt)?.unwrap_or(0) != 0;
    let created_ms = opt_int(next(), "created_at")
        .map_err(corrupt)?
        .ok_or_else(|| corrupt("created_at is NULL".into()))?;
    let started_ms = opt_int(next(), "started_at").map_err(corrupt)?;
    let finished_ms = opt_int(next(), "finished_at").map_err(corrupt)?;
    let node = opt_text(next(), "node").map_err(corrupt)?;
    let cancel_requested = opt_int(next(), "cancel_requested")
        .map_err(corrupt)?
        .unwrap_or(0)
        != 0;
    let stdout_len = opt_u64(next(), "stdout_len").map_err(corrupt)?.unwrap_or(0);
    let stderr_len = opt_u64(next(), "stderr_len").map_err(corrupt)?.unwrap_or(0);
    Ok(JobRecord {
        id,
        profile,
        state,
        args,
        timeout_ms,
        warm,
        exit_code,
        signal,
        truncated,
        error,
        node,
        cancel_requested,
        output_len: [stdout_len, stderr_len],
        created_ms,
        started_ms,
        finished_ms,
    })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real number",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
    }
}

fn text(value: Value, column: &str) -> Result<String, String> {
    match value {
        Value::Text(s) => Ok(s),
        other => Err(format!("{column} is {}", type_name(&other))),
    }
}

fn opt_text(value: Value, column: &str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        other => text(other, column).map(Some),
    }
}

fn opt_int(value: Value, column: &str) -> Result<Option<i64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Integer(n) => Ok(Some(n)),
        other => Err(format!("{column} is {}", type_name(&other))),
    }
}

fn opt_i32(value: Value, column: &str) -> Result<Option<i32>, String> {
    opt_int(value, column)?
        .map(|n| i32::try_from(n).map_err(|_| format!("{column} {n} is out of range")))
        .transpose()
}

fn opt_u64(value: Value, column: &str) -> Result<Option<u64>, String> {
    opt_int(value, column)?
        .map(|n| u64::try_from(n).map_err(|_| format!("{column} {n} is negative")))
        .transpose()
}

fn decode_json<T: serde::de::DeserializeOwned>(value: Value, column: &str) -> Result<T, String> {
    let json = text(value, column)?;
    serde_json::from_str(&json).map_err(|e| format!("{column} is not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use crate::conformance::{exited, job, Harness};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            TempDir(std::env::temp_dir().join(format!(
                "warmpool-store-test-{}-{n}-{}",
                std::process::id(),
                SystemClock.now_ms()
            )))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    struct SqliteHarness(TempDir);

    impl Harness for SqliteHarness {
        type Store = SqliteStore;

        fn open(
            &self,
            clock: Arc<ManualClock>,
        ) -> impl std::future::Future<Output = SqliteStore> + Send {
            let store = SqliteStore::open(&self.0 .0, clock).expect("open the store");
            async move { store }
        }
    }

    crate::conformance_tests!(SqliteHarness(TempDir::new()));

    fn open(dir: &TempDir) -> SqliteStore {
        SqliteStore::open(&dir.0, Arc::new(ManualClock::new())).expect("open")
    }

    /// A second connection to the store's file, beside the store.
    fn raw(dir: &TempDir) -> Connection {
        let db = Connection::open(dir.0.join(FILE_NAME)).expect("open raw");
        db.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
        db
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The database file and its WAL, as bytes.
    fn file_bytes(store: &SqliteStore) -> Vec<u8> {
        let mut bytes = fs::read(store.path()).expect("read db");
        let wal = PathBuf::from(format!("{}-wal", store.path().display()));
        if let Ok(more) = fs::read(wal) {
            bytes.extend(more);
        }
        bytes
    }

    fn open_error(result: Result<SqliteStore, StoreError>) -> String {
        match result {
            Err(StoreError::Open(message)) => message,
            other => panic!("expected an open error, got {other:?}"),
        }
    }

    #[test]
    fn a_second_open_of_the_same_store_is_refused_until_the_first_is_dropped() {
        let dir = TempDir::new();
        let store = open(&dir);
        let second = SqliteStore::open(&dir.0, Arc::new(ManualClock::new()));
        let message = open_error(second);
        assert!(
            message.contains("in use by another warmpool server"),
            "{message}"
        );
        drop(store);
        drop(open(&dir));
    }

    #[test]
    fn a_file_held_by_an_old_warmpool_is_refused() {
        // Old warmpools held the file with SQLite's exclusive locking mode and
        // took no lock file.
        let dir = TempDir::new();
        drop(open(&dir));
        let old = raw(&dir);
        old.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .expect("exclusive");
        old.execute_batch("BEGIN EXCLUSIVE; COMMIT;").expect("lock");
        old.busy_timeout(Duration::ZERO).expect("busy");
        let message = open_error(SqliteStore::open(&dir.0, Arc::new(ManualClock::new())));
        assert!(
            message.contains("in use by another warmpool server"),
            "{message}"
        );
    }

    #[test]
    fn another_sqlite_file_is_not_taken_for_a_store() {
        let dir = TempDir::new();
        fs::create_dir_all(&dir.0).expect("mkdir");
        raw(&dir)
            .execute_batch("CREATE TABLE notes (body TEXT)")
            .expect("create");
        let message = open_error(SqliteStore::open(&dir.0, Arc::new(ManualClock::new())));
        assert!(message.contains("is not a warmpool job store"), "{message}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = TempDir::new();
        drop(open(&dir));
        raw(&dir)
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        let message = open_error(SqliteStore::open(&dir.0, Arc::new(ManualClock::new())));
        assert!(message.contains("schema version 4"), "{message}");
    }

    #[test]
    fn the_data_directory_and_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let store = open(&dir);
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.0), 0o700);
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(&dir.0.join(LOCK_FILE_NAME)), 0o600);
    }

    #[tokio::test]
    async fn start_wipes_env_and_stdin_from_the_files() {
        let dir = TempDir::new();
        let store = open(&dir);
        let secret = format!("wp-secret-{}-{}", std::process::id(), SystemClock.now_ms());
        let stdin_marker = format!("wp-stdin-{}-{}", std::process::id(), SystemClock.now_ms());
        // Large enough for overflow pages.
        let new = NewJob {
            env: vec![("TOKEN".into(), secret.clone())],
            stdin: Some(stdin_marker.repeat(2_000).into_bytes()),
            ..job("py")
        };
        let id = store.insert(&new).await.expect("insert");
        let ended = store.insert(&new).await.expect("insert");
        store.scrub().await.expect("scrub");
        let before = file_bytes(&store);
        assert!(contains(&before, secret.as_bytes()));
        assert!(contains(&before, stdin_marker.as_bytes()));

        assert!(store.start(&id, "n1", true).await.expect("start"));
        assert!(store.finish(&ended, &exited(1)).await.expect("finish"));
        store.scrub().await.expect("scrub");
        let after = file_bytes(&store);
        assert!(
            !contains(&after, secret.as_bytes()),
            "env value left in the files"
        );
        assert!(
            !contains(&after, stdin_marker.as_bytes()),
            "stdin left in the files"
        );
        assert!(contains(&after, id.as_bytes()));
    }

    #[tokio::test]
    async fn a_damaged_row_is_an_error_not_a_panic() {
        let dir = TempDir::new();
        let store = open(&dir);
        let id = store.insert(&job("py")).await.expect("insert");
        let fine = store.insert(&job("py")).await.expect("insert");
        store
            .append_output(&id, StreamName::Stdout, 0, b"abc")
            .await
            .expect("append");
        store
            .append_output(&id, StreamName::Stdout, 3, b"def")
            .await
            .expect("append");
        let db = raw(&dir);
        let damage = |sql: &str| {
            db.execute(sql, params![id]).expect("damage");
        };
        fn corrupt<T: fmt::Debug>(result: Result<T, StoreError>) -> String {
            match result {
                Err(e @ StoreError::Corrupt { .. }) => e.to_string(),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }

        damage("UPDATE jobs SET state = 'exploded' WHERE id = ?1");
        let message = corrupt(store.get(&id).await);
        assert!(
            message.contains("exploded") && message.contains(&id),
            "{message}"
        );
        corrupt(
            store
                .list(&ListQuery {
                    state: None,
                    profile: None,
                    limit: 10,
                })
                .await,
        );
        corrupt(store.request_cancel(&id).await);
        assert!(store.get(&fine).await.expect("get").is_some());

        damage("UPDATE jobs SET state = 'queued', args = 'not json' WHERE id = ?1");
        corrupt(store.get(&id).await);
        corrupt(store.queued(&id).await);
        damage("UPDATE jobs SET args = '[]', exit_code = 'zero' WHERE id = ?1");
        corrupt(store.get(&id).await);
        damage("UPDATE jobs SET exit_code = 99999999999 WHERE id = ?1");
        corrupt(store.get(&id).await);
        damage("UPDATE jobs SET exit_code = NULL, stdout_len = 'many' WHERE id = ?1");
        corrupt(store.get(&id).await);
        corrupt(store.append_output(&id, StreamName::Stdout, 6, b"g").await);
        damage("UPDATE jobs SET stdout_len = 6 WHERE id = ?1");
        damage("UPDATE job_input SET env = '{' WHERE job_id = ?1");
        corrupt(store.queued(&id).await);
        damage("DELETE FROM job_input WHERE job_id = ?1");
        corrupt(store.queued(&id).await);
        damage("UPDATE output SET byte_offset = 4 WHERE job_id = ?1 AND byte_offset = 3");
        corrupt(store.read_output(&id, StreamName::Stdout, 0, 100).await);
        damage("UPDATE output SET byte_offset = 3, data = 'text' WHERE job_id = ?1 AND byte_offset = 4");
        corrupt(store.read_output(&id, StreamName::Stdout, 0, 100).await);
        // The store goes on working for other jobs.
        assert!(store.start(&fine, "n1", false).await.expect("start"));
    }

    #[test]
    fn one_failing_operation_in_a_group_rolls_back_alone() {
        let dir = TempDir::new();
        drop(open(&dir));
        let mut db = raw(&dir);
        configure_writer(&db).expect("configure");
        migrate(&mut db, &dir.0.join(FILE_NAME), |e| {
            StoreError::Open(e.to_string())
        })
        .expect("migrate");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let row = || JobRow::encode(&job("py")).expect("encode");
        let (r1, r2, r3) = (row(), row(), row());
        let (op1, a1) = write_op(
            Durability::Fsync,
            "t",
            Arc::clone(&clock),
            move |db, now| r1.insert(db, now),
        );
        // Writes, then fails: its write must not stay.
        let (op2, a2) = write_op(
            Durability::Fsync,
            "t",
            Arc::clone(&clock),
            move |db, now| {
                r2.insert(db, now)?;
                Err::<String, _>(StoreError::NoSuchJob("jfail".into()))
            },
        );
        let (op3, a3) = write_op(Durability::Deferred, "t", clock, move |db, now| {
            r3.insert(db, now)
        });
        let mut level = Durability::Deferred;
        commit_group(&db, &mut level, vec![op1, op2, op3]);
        assert_eq!(
            level,
            Durability::Fsync,
            "a durable operation commits with FULL"
        );
        let id1 = a1.blocking_recv().expect("answer").expect("op1");
        assert!(matches!(
            a2.blocking_recv().expect("answer"),
            Err(StoreError::NoSuchJob(_))
        ));
        let id3 = a3.blocking_recv().expect("answer").expect("op3");
        let ids: Vec<String> = db
            .prepare("SELECT id FROM jobs ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("ids");
        assert_eq!(ids, vec![id1, id3]);
        let inputs: i64 = db
            .query_row("SELECT count(*) FROM job_input", [], |r| r.get(0))
            .expect("count");
        assert_eq!(inputs, 2);

        // A group of appends only commits without an fsync.
        let (op, answer) = write_op(Durability::Deferred, "t", Arc::new(SystemClock), |_, _| {
            Ok(())
        });
        commit_group(&db, &mut level, vec![op]);
        answer.blocking_recv().expect("answer").expect("op");
        assert_eq!(level, Durability::Deferred);
        let sync: i64 = db
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("synchronous");
        assert_eq!(sync, 1, "NORMAL");
    }

    /// What a warmpool before schema 3 wrote (the server's `store.rs`): jobs in
    /// each state, input, output chunks, a delivery for version 2.
    fn write_old_file(dir: &TempDir, version: i64) -> [String; 3] {
        fs::create_dir_all(&dir.0).expect("mkdir");
        let db = raw(dir);
        db.execute_batch(V1).expect("v1");
        if version >= 2 {
            db.execute_batch(V2).expect("v2");
        }
        db.pragma_update(None, "application_id", APPLICATION_ID)
            .expect("application id");
        db.pragma_update(None, "user_version", version)
            .expect("version");
        let [queued, running, done] = [
            "j0000000000001aaaaaaaa",
            "j0000000000002bbbbbbbb",
            "j0000000000003cccccccc",
        ]
        .map(str::to_owned);
        db.execute(
            "INSERT INTO jobs (id, profile, state, args, timeout_ms, created_at)
             VALUES (?1, 'py', 'queued', '[\"echo\"]', 5000, 1)",
            params![queued],
        )
        .expect("queued");
        db.execute(
            "INSERT INTO job_input (job_id, env, stdin) VALUES (?1, '[[\"A\",\"1\"]]', x'6869')",
            params![queued],
        )
        .expect("input");
        db.execute(
            "INSERT INTO jobs (id, profile, state, args, warm, created_at, started_at)
             VALUES (?1, 'py', 'running', '[]', 1, 2, 3)",
            params![running],
        )
        .expect("running");
        db.execute(
            "INSERT INTO jobs (id, profile, state, args, warm, exit_code, created_at,
                               started_at, finished_at, truncated)
             VALUES (?1, 'go', 'succeeded', '[]', 0, 0, 3, 4, 5, 1)",
            params![done],
        )
        .expect("done");
        for (id, stream, data) in [
            (&running, 1, &b"hel"[..]),
            (&done, 1, b"x"),
            (&running, 2, b"e"),
            (&running, 1, b"lo "),
            (&running, 1, b"world"),
        ] {
            db.execute(
                "INSERT INTO output (job_id, stream, data) VALUES (?1, ?2, ?3)",
                params![id, stream, data],
            )
            .expect("output");
        }
        if version >= 2 {
            db.execute(
                "INSERT INTO deliveries (id, job_id, meta, received_at) VALUES ('d-1', ?1, '{}', 5)",
                params![done],
            )
            .expect("delivery");
        }
        [queued, running, done]
    }

    async fn check_migrated(dir: &TempDir, version: i64) {
        let [queued, running, done] = write_old_file(dir, version);
        let store = open(dir);
        let record = store.get(&running).await.expect("get").expect("running");
        assert_eq!(record.state, JobState::Running);
        assert_eq!((record.node, record.cancel_requested), (None, false));
        assert_eq!(record.output_len, [11, 1]);
        assert_eq!((record.created_ms, record.started_ms), (2, Some(3)));
        let read = |id: String, offset, max| {
            let store = &store;
            async move {
                store
                    .read_output(&id, StreamName::Stdout, offset, max)
                    .await
                    .expect("read")
                    .expect("known")
            }
        };
        assert_eq!(read(running.clone(), 0, 100).await, b"hello world");
        assert_eq!(read(running.clone(), 2, 5).await, b"llo w");
        assert_eq!(read(done.clone(), 0, 100).await, b"x");
        // Offsets carry on where the old chunks end.
        store
            .append_output(&running, StreamName::Stdout, 0, b"hello")
            .await
            .expect("retry");
        store
            .append_output(&running, StreamName::Stdout, 11, b"!")
            .await
            .expect("append");
        assert_eq!(read(running.clone(), 0, 100).await, b"hello world!");
        let record = store.get(&done).await.expect("get").expect("done");
        assert_eq!(
            (record.state, record.truncated, record.warm),
            (JobState::Succeeded, true, Some(false))
        );
        assert_eq!(record.finished_ms, Some(5));
        let input = store
            .queued(&queued)
            .await
            .expect("queued")
            .expect("queued");
        assert_eq!(input.job.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(input.job.stdin.as_deref(), Some(&b"hi"[..]));
        if version >= 2 {
            let pending = store.unanswered_deliveries().await.expect("deliveries");
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].job_id, done);
        }
        assert_eq!(
            store
                .insert_for_delivery("d-1", "{}", &job("bot"))
                .await
                .expect("insert")
                .is_some(),
            version < 2,
            "a delivery seen before the upgrade starts nothing"
        );
        // An old warmpool ran alone: its running jobs are any node's to recover.
        let recovered = store
            .recover("new-node", "restarted")
            .await
            .expect("recover");
        assert_eq!(recovered.interrupted, vec![running.clone()]);
        assert_eq!(recovered.queued[0], queued);
        drop(store);
        let version: i64 = raw(dir)
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_version_1_file_is_migrated() {
        check_migrated(&TempDir::new(), 1).await;
    }

    #[tokio::test]
    async fn a_version_2_file_is_migrated() {
        check_migrated(&TempDir::new(), 2).await;
    }

    fn rss_kib() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Inserts/s from 8 concurrent tasks, then a whole job's writes, and the
    /// process's RSS with 10,000 stored jobs. A measurement, not a check:
    /// `cargo test -p warmpool-store --release -- --ignored --nocapture measure`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement; run it by name with --release --nocapture"]
    async fn measure_inserts_per_second_from_8_tasks() {
        let dir = TempDir::new();
        let store = Arc::new(SqliteStore::open(&dir.0, Arc::new(SystemClock)).expect("open"));
        let rss_before = rss_kib();
        let tasks = 8;
        let per_task = 1_250;
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        store.insert(&job("py")).await.expect("insert");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
        let took = started.elapsed();
        let n = tasks * per_task;
        println!(
            "inserts: {n} from {tasks} tasks in {:.2}s = {:.0}/s",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );

        // One task at a time: one commit, one fsync per insert.
        let started = Instant::now();
        for _ in 0..500 {
            store.insert(&job("py")).await.expect("insert");
        }
        let took = started.elapsed();
        println!(
            "inserts: 500 from 1 task in {:.2}s = {:.0}/s",
            took.as_secs_f64(),
            500.0 / took.as_secs_f64()
        );

        // A job's whole life: insert, start, 4 appends, finish.
        let jobs = 250;
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for _ in 0..jobs {
                        let id = store.insert(&job("py")).await.expect("insert");
                        store.start(&id, "n1", true).await.expect("start");
                        for k in 0..4u64 {
                            store
                                .append_output(&id, StreamName::Stdout, k * 32, &[b'x'; 32])
                                .await
                                .expect("append");
                        }
                        store.finish(&id, &exited(0)).await.expect("finish");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
        let took = started.elapsed();
        println!(
            "whole jobs: {} from {tasks} tasks in {:.2}s = {:.0} jobs/s",
            tasks * jobs,
            took.as_secs_f64(),
            (tasks * jobs) as f64 / took.as_secs_f64()
        );

        let listed = store
            .list(&ListQuery {
                state: None,
                profile: None,
                limit: 100,
            })
            .await
            .expect("list");
        assert_eq!(listed.len(), 100);
        let stored = store
            .list(&ListQuery {
                state: None,
                profile: None,
                limit: usize::MAX,
            })
            .await
            .expect("list")
            .len();
        println!(
            "RSS: {} KiB before, {} KiB with {stored} stored jobs; file {} KiB",
            rss_before,
            rss_kib(),
            fs::metadata(store.path())
                .map(|m| m.len() / 1024)
                .unwrap_or(0)
        );
    }
}
