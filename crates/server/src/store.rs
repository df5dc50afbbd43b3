//! The durable job store: jobs, the input of queued jobs and job output, in
//! SQLite (`jobs.sqlite3` under `[server] data_dir`). It owns what is on disk and
//! which state changes are allowed; it runs nothing and never touches containers.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row, Transaction,
    TransactionBehavior,
};
use serde::{Deserialize, Serialize};

/// The store's file inside the data directory.
pub const FILE_NAME: &str = "jobs.sqlite3";

/// The error of a job that was running when warmpool stopped.
pub const INTERRUPTED_ERROR: &str =
    "warmpool stopped while the job ran (restart); its container was removed";

/// The error of a job cancelled while it was queued.
pub const CANCELLED_ERROR: &str = "cancelled before it started";

/// Schema version in `PRAGMA user_version`; bump it with a migration step.
const SCHEMA_VERSION: i64 = 2;

/// `PRAGMA application_id` of a warmpool store ("wpjs"), so that another
/// program's SQLite file in the data directory is refused, not migrated.
const APPLICATION_ID: i64 = 0x7770_6a73;

/// How long `open` waits for another process to let go of the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

const SCHEMA: &str = "
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

/// Version 2: webhook deliveries (see [`DELIVERIES`]).
const DELIVERIES: &str = "
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

/// Columns read by [`record_from_row`], in its order.
const RECORD_COLUMNS: &str = "id, profile, state, args, timeout_ms, warm, exit_code, signal, \
     error, truncated, created_at, started_at, finished_at";

/// What can go wrong in the store. Each message says what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "could not create the data directory {path}: {source}; \
         check [server] data_dir and that warmpool may write there"
    )]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "could not create the job store {path}: {source}; \
         check [server] data_dir and that warmpool may write there"
    )]
    CreateFile { path: PathBuf, source: io::Error },
    #[error(
        "could not open the job store {path}: {source}; check that the file is a \
         readable, writable SQLite file, or move it away to start with an empty store"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the job store {path} is in use by another warmpool server; stop that server \
         or give this one its own [server] data_dir"
    )]
    InUse { path: PathBuf },
    #[error(
        "the job store {path} cannot use a write-ahead log (SQLite chose journal mode \
         {mode}); put [server] data_dir on a local file system"
    )]
    NoWal { path: PathBuf, mode: String },
    #[error(
        "{path} is not a warmpool job store; move it away or point [server] data_dir \
         at another directory"
    )]
    NotAStore { path: PathBuf },
    #[error(
        "the job store {path} has schema version {found}, newer than this warmpool \
         knows ({known}); run a newer warmpool or point [server] data_dir elsewhere"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "the job store could not {action}: {source}; check free space and \
         permissions in [server] data_dir"
    )]
    Sqlite {
        action: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "job {id} is damaged in the job store ({detail}); delete that job's rows \
         from {FILE_NAME} or restore the file from a backup"
    )]
    Corrupt { id: String, detail: String },
    #[error("no job {0} in the job store; check the id (finished jobs are pruned after a while)")]
    NoSuchJob(String),
    #[error(
        "a job cannot finish in state {0}; finish it as succeeded, failed, timed_out, \
         cancelled or interrupted"
    )]
    NotFinal(JobState),
    #[error("could not encode the {what} of a job: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// Adds what the store was doing to a SQLite error.
trait Context<T> {
    fn ctx(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { action, source })
    }
}

/// Where a job is in its life. Queued and running jobs are open; the others are
/// final and never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited with another code or a signal, or could not be started.
    Failed,
    TimedOut,
    Cancelled,
    /// Was running when warmpool stopped.
    Interrupted,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Cancelled,
        JobState::Interrupted,
    ];

    /// The name in the store and the API (`timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }

    /// The state named `s` (as in [`JobState::as_str`]), if any. Also `s.parse()`,
    /// whose error says which names exist.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether the job is over: its row no longer changes.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::parse(s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A state name that is not one of [`JobState`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job state `{0}`; use one of queued, running, succeeded, failed, timed_out, \
     cancelled, interrupted"
)]
pub struct UnknownState(pub String);

/// One of a job's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamName {
    Stdout,
    Stderr,
}

impl StreamName {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        }
    }

    /// The value in `output.stream`.
    fn code(self) -> i64 {
        match self {
            StreamName::Stdout => 1,
            StreamName::Stderr => 2,
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

/// A job as the API shows it. Env and stdin are never part of it.
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
    /// Empty unless asked for with the output.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Either stream was cut at the profile's cap.
    pub truncated: bool,
    pub error: Option<String>,
    /// RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
}

/// What [`Store::recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs to run, oldest first.
    pub queued: Vec<String>,
    /// Jobs that were running and are now `interrupted`.
    pub interrupted: Vec<String>,
}

/// How far a commit must reach before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// On the disk (`synchronous=FULL`): job rows and their states.
    Fsync,
    /// In the WAL file (`synchronous=NORMAL`): survives a crash of warmpool, and
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

struct Conn {
    db: Connection,
    /// The `synchronous` level the connection is at now.
    durability: Durability,
}

struct Shared {
    path: PathBuf,
    conn: Mutex<Conn>,
}

/// The job store: a cheap handle (`Clone`), usable from any thread. Calls block
/// on disk I/O, so async code runs them in `spawn_blocking`.
///
/// One process owns the file while a `Store` is open (SQLite's exclusive
/// locking mode): a second server on the same data directory fails to open it
/// instead of interrupting the first one's jobs in [`Store::recover`].
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// A new job's columns, encoded once, and its insertion (job row and input).
struct JobRow {
    args: String,
    env: String,
    timeout_ms: Option<i64>,
}

impl JobRow {
    fn encode(job: &NewJob) -> Result<JobRow, StoreError> {
        Ok(JobRow {
            args: serde_json::to_string(&job.args).map_err(|source| StoreError::Encode {
                what: "args",
                source,
            })?,
            env: serde_json::to_string(&job.env).map_err(|source| StoreError::Encode {
                what: "env",
                source,
            })?,
            timeout_ms: job.timeout_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        })
    }

    /// Insert the job (queued) and its input; its new id.
    fn insert(&self, tx: &Transaction<'_>, job: &NewJob) -> Result<String, StoreError> {
        let created_at = now_ms();
        // A clash needs two jobs in the same millisecond drawing the same 32
        // random bits; draw again rather than fail the request.
        let mut attempt = 0;
        let id = loop {
            let id = new_id(created_at);
            let inserted = tx.execute(
                "INSERT INTO jobs (id, profile, state, args, timeout_ms, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    job.profile,
                    JobState::Queued.as_str(),
                    self.args,
                    self.timeout_ms,
                    created_at
                ],
            );
            match inserted {
                Ok(_) => break id,
                Err(e) if is_constraint(&e) && attempt < 8 => attempt += 1,
                Err(e) => return Err(e).ctx("store a new job"),
            }
        };
        tx.execute(
            "INSERT INTO job_input (job_id, env, stdin) VALUES (?1, ?2, ?3)",
            params![id, self.env, job.stdin],
        )
        .ctx("store a new job's input")?;
        Ok(id)
    }
}

impl Store {
    /// Opens (or creates) `data_dir/jobs.sqlite3`, creating `data_dir` if needed
    /// (private to the user: queued jobs' env values are in the file).
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(data_dir, BUSY_TIMEOUT)
    }

    fn open_with(data_dir: &Path, busy_timeout: Duration) -> Result<Store, StoreError> {
        create_private_dir(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(FILE_NAME);
        create_private_file(&path).map_err(|source| StoreError::CreateFile {
            path: path.clone(),
            source,
        })?;
        let open_error = |source: rusqlite::Error| {
            if is_busy(&source) {
                StoreError::InUse { path: path.clone() }
            } else {
                StoreError::Open {
                    path: path.clone(),
                    source,
                }
            }
        };
        let mut db = Connection::open(&path).map_err(open_error)?;
        let mode = configure(&db, busy_timeout).map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path, mode });
        }
        migrate(&mut db, &path, open_error)?;
        Ok(Store {
            shared: Arc::new(Shared {
                path,
                conn: Mutex::new(Conn {
                    db,
                    durability: Durability::Fsync,
                }),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Stores a new queued job and returns its id. The job is on disk when this
    /// returns, so it may be acknowledged.
    pub fn insert(&self, job: &NewJob) -> Result<String, StoreError> {
        let row = JobRow::encode(job)?;
        self.write(Durability::Fsync, "store a new job", |tx| {
            row.insert(tx, job)
        })
    }

    /// Store a job started by a webhook delivery, in one transaction with the
    /// delivery's id: `None` (and nothing stored) if that delivery was seen before.
    pub fn insert_for_delivery(
        &self,
        delivery: &str,
        meta: &str,
        job: &NewJob,
    ) -> Result<Option<String>, StoreError> {
        let row = JobRow::encode(job)?;
        self.write(Durability::Fsync, "store a delivery's job", |tx| {
            let seen: i64 = tx
                .query_row(
                    "SELECT count(*) FROM deliveries WHERE id = ?1",
                    params![delivery],
                    |row| row.get(0),
                )
                .ctx("look a delivery up")?;
            if seen > 0 {
                return Ok(None);
            }
            let id = row.insert(tx, job)?;
            tx.execute(
                "INSERT INTO deliveries (id, job_id, meta, received_at) VALUES (?1, ?2, ?3, ?4)",
                params![delivery, id, meta, now_ms()],
            )
            .ctx("store a delivery")?;
            Ok(Some(id))
        })
    }

    /// Deliveries whose job has not been answered yet: (delivery, job id, meta).
    pub fn unanswered_deliveries(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .db
            .prepare_cached(
                "SELECT id, job_id, meta FROM deliveries WHERE answered = 0 ORDER BY received_at",
            )
            .ctx("read deliveries")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .ctx("read deliveries")?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.ctx("read deliveries")?);
        }
        Ok(out)
    }

    /// The delivery's job has been answered (commented on).
    pub fn mark_answered(&self, delivery: &str) -> Result<(), StoreError> {
        self.write(Durability::Fsync, "mark a delivery answered", |tx| {
            tx.execute(
                "UPDATE deliveries SET answered = 1 WHERE id = ?1",
                params![delivery],
            )
            .ctx("mark a delivery answered")?;
            Ok(())
        })
    }

    /// The job and its input if it is queued; `None` if it is not (or unknown).
    pub fn queued(&self, id: &str) -> Result<Option<QueuedJob>, StoreError> {
        let conn = self.lock();
        let row = conn
            .db
            .query_row(
                "SELECT j.profile, j.args, j.timeout_ms, i.env, i.stdin
                 FROM jobs j LEFT JOIN job_input i ON i.job_id = j.id
                 WHERE j.id = ?1 AND j.state = 'queued'",
                params![id],
                |row| {
                    Ok((
                        row.get::<_, Value>(0)?,
                        row.get::<_, Value>(1)?,
                        row.get::<_, Value>(2)?,
                        row.get::<_, Value>(3)?,
                        row.get::<_, Value>(4)?,
                    ))
                },
            )
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

    /// Marks a queued job running and deletes its env values and stdin, in one
    /// transaction. `Ok(false)` if it is not queued (cancelled meanwhile, or
    /// unknown): then do not run it.
    pub fn mark_running(&self, id: &str, warm: bool) -> Result<bool, StoreError> {
        self.write(Durability::Fsync, "mark a job running", |tx| {
            let changed = tx
                .execute(
                    "UPDATE jobs SET state = 'running', started_at = ?2, warm = ?3
                     WHERE id = ?1 AND state = 'queued'",
                    params![id, now_ms(), warm],
                )
                .ctx("mark a job running")?;
            if changed == 0 {
                return Ok(false);
            }
            wipe_input(tx, id)?;
            Ok(true)
        })
    }

    /// Appends a chunk to a job's stdout or stderr. The caller enforces the cap.
    /// The chunk survives a crash of warmpool at once and is on the disk by the
    /// time the job is finished.
    pub fn append_output(
        &self,
        id: &str,
        stream: StreamName,
        data: &[u8],
    ) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        self.write(Durability::Deferred, "store job output", |tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO output (job_id, stream, data)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)",
                    params![id, stream.code(), data],
                )
                .ctx("store job output")?;
            if inserted == 0 {
                return Err(StoreError::NoSuchJob(id.to_owned()));
            }
            Ok(())
        })
    }

    /// Records that the job's output was cut at the profile's cap (the output
    /// itself says where: the cut leaves a marker line in the stream).
    pub fn set_truncated(&self, id: &str) -> Result<(), StoreError> {
        self.write(Durability::Deferred, "mark job output truncated", |tx| {
            let changed = tx
                .execute("UPDATE jobs SET truncated = 1 WHERE id = ?1", params![id])
                .ctx("mark job output truncated")?;
            if changed == 0 {
                return Err(StoreError::NoSuchJob(id.to_owned()));
            }
            Ok(())
        })
    }

    /// Ends a queued or running job. `Ok(false)` if it had already ended (a
    /// final job stays as it is, e.g. cancelled before its exit arrived) or is
    /// unknown.
    pub fn finish(&self, id: &str, finish: &Finish) -> Result<bool, StoreError> {
        if !finish.state.is_final() {
            return Err(StoreError::NotFinal(finish.state));
        }
        self.write(Durability::Fsync, "record a job's end", |tx| {
            let changed = tx
                .execute(
                    "UPDATE jobs
                     SET state = ?2, exit_code = ?3, signal = ?4, error = ?5, finished_at = ?6
                     WHERE id = ?1 AND state IN ('queued', 'running')",
                    params![
                        id,
                        finish.state.as_str(),
                        finish.exit_code,
                        finish.signal,
                        finish.error,
                        now_ms()
                    ],
                )
                .ctx("record a job's end")?;
            if changed == 0 {
                return Ok(false);
            }
            wipe_input(tx, id)?;
            Ok(true)
        })
    }

    /// Cancels a job that has not started (it has no container).
    /// `Ok(false)` if it is not queued (or unknown).
    pub fn cancel_queued(&self, id: &str) -> Result<bool, StoreError> {
        self.write(Durability::Fsync, "cancel a job", |tx| {
            let changed = tx
                .execute(
                    "UPDATE jobs SET state = 'cancelled', error = ?2, finished_at = ?3
                     WHERE id = ?1 AND state = 'queued'",
                    params![id, CANCELLED_ERROR, now_ms()],
                )
                .ctx("cancel a job")?;
            if changed == 0 {
                return Ok(false);
            }
            wipe_input(tx, id)?;
            Ok(true)
        })
    }

    /// A job, with its stored output if `with_output`; `None` if unknown.
    pub fn get(&self, id: &str, with_output: bool) -> Result<Option<JobRecord>, StoreError> {
        let conn = self.lock();
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?1");
        let mut stmt = conn.db.prepare_cached(&sql).ctx("read a job")?;
        let mut rows = stmt.query(params![id]).ctx("read a job")?;
        let Some(row) = rows.next().ctx("read a job")? else {
            return Ok(None);
        };
        let mut record = record_from_row(row)?;
        if with_output {
            record.stdout = read_output(&conn.db, id, StreamName::Stdout)?;
            record.stderr = read_output(&conn.db, id, StreamName::Stderr)?;
        }
        Ok(Some(record))
    }

    /// The whole stored stream of a job; `None` if the job is unknown.
    pub fn output(&self, id: &str, stream: StreamName) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.lock();
        if !job_exists(&conn.db, id)? {
            return Ok(None);
        }
        read_output(&conn.db, id, stream).map(Some)
    }

    /// Up to `limit` jobs, newest first, without output.
    pub fn list(
        &self,
        state: Option<JobState>,
        profile: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(state) = state {
            values.push(Value::Text(state.as_str().to_owned()));
            conditions.push(format!("state = ?{}", values.len()));
        }
        if let Some(profile) = profile {
            values.push(Value::Text(profile.to_owned()));
            conditions.push(format!("profile = ?{}", values.len()));
        }
        values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM jobs {filter} ORDER BY seq DESC LIMIT ?{}",
            values.len()
        );
        let conn = self.lock();
        let mut stmt = conn.db.prepare_cached(&sql).ctx("list jobs")?;
        let mut rows = stmt.query(params_from_iter(values)).ctx("list jobs")?;
        let mut records = Vec::new();
        while let Some(row) = rows.next().ctx("list jobs")? {
            records.push(record_from_row(row)?);
        }
        Ok(records)
    }

    /// After a start: marks every running job `interrupted` (its container died
    /// with the previous warmpool) and returns the queued jobs, oldest first, for
    /// the caller to run again.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        self.write(Durability::Fsync, "recover jobs after a restart", |tx| {
            let interrupted = ids_in_state(tx, JobState::Running)?;
            tx.execute(
                "UPDATE jobs SET state = 'interrupted', error = ?1, finished_at = ?2
                 WHERE state = 'running'",
                params![INTERRUPTED_ERROR, now_ms()],
            )
            .ctx("recover jobs after a restart")?;
            // Input belongs to queued jobs only; drop any left by an older build.
            tx.execute(
                "DELETE FROM job_input
                 WHERE job_id NOT IN (SELECT id FROM jobs WHERE state = 'queued')",
                [],
            )
            .ctx("recover jobs after a restart")?;
            let queued = ids_in_state(tx, JobState::Queued)?;
            Ok(Recovered {
                queued,
                interrupted,
            })
        })
    }

    /// Deletes finished jobs (with their output) that finished more than
    /// `older_than` ago; returns how many.
    pub fn prune(&self, older_than: Duration) -> Result<usize, StoreError> {
        let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(age);
        self.write(Durability::Fsync, "prune old jobs", |tx| {
            let old = "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at <= ?1";
            tx.execute(
                &format!("DELETE FROM output WHERE job_id IN ({old})"),
                params![cutoff],
            )
            .ctx("prune old jobs' output")?;
            tx.execute(
                &format!("DELETE FROM job_input WHERE job_id IN ({old})"),
                params![cutoff],
            )
            .ctx("prune old jobs' input")?;
            tx.execute(
                &format!("DELETE FROM deliveries WHERE job_id IN ({old})"),
                params![cutoff],
            )
            .ctx("prune old deliveries")?;
            tx.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at <= ?1",
                params![cutoff],
            )
            .ctx("prune old jobs")
        })
    }

    /// Copies the WAL into the database file and empties it. Wiped env values and
    /// stdin are zeroed in the database file (`secure_delete`) but old copies stay
    /// in the WAL until it is checkpointed and reused (about every 4 MiB of
    /// writes); call this off any job's path to shorten that window.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .ctx("checkpoint the write-ahead log")
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic while holding the lock rolled its transaction back on unwind,
        // so the connection is still sound.
        self.shared
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction committed at `durability`.
    fn write<T>(
        &self,
        durability: Durability,
        action: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.lock();
        let conn = &mut *guard;
        if conn.durability != durability {
            conn.db
                .pragma_update(None, "synchronous", durability.pragma())
                .ctx(action)?;
            conn.durability = durability;
        }
        let tx = conn
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(action)?;
        let out = f(&tx)?;
        tx.commit().ctx(action)?;
        Ok(out)
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

/// Sets the connection up; returns the journal mode SQLite settled on.
fn configure(db: &Connection, busy_timeout: Duration) -> rusqlite::Result<String> {
    db.busy_timeout(busy_timeout)?;
    // Exclusive before the first access in WAL mode: no shared-memory file, and
    // the file stays locked against other processes until the store is dropped.
    db.pragma_update_and_check(None, "locking_mode", "EXCLUSIVE", |_| Ok(()))?;
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

fn migrate(
    db: &mut Connection,
    path: &Path,
    open_error: impl Fn(rusqlite::Error) -> StoreError,
) -> Result<(), StoreError> {
    // Taking the write lock here holds it for good (exclusive locking mode).
    let tx = db
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(&open_error)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(&open_error)?;
    let application_id: i64 = tx
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(&open_error)?;
    if version == 0 {
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(&open_error)?;
        if tables != 0 {
            return Err(StoreError::NotAStore {
                path: path.to_owned(),
            });
        }
        tx.execute_batch(SCHEMA).map_err(&open_error)?;
        tx.execute_batch(DELIVERIES).map_err(&open_error)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(&open_error)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(&open_error)?;
    } else if application_id != APPLICATION_ID {
        return Err(StoreError::NotAStore {
            path: path.to_owned(),
        });
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    // Migrations from older versions, one step per version.
    if version == 1 {
        tx.execute_batch(DELIVERIES).map_err(&open_error)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(&open_error)?;
    }
    tx.commit().map_err(&open_error)
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

fn job_exists(db: &Connection, id: &str) -> Result<bool, StoreError> {
    db.prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists(params![id]))
        .ctx("look a job up")
}

fn wipe_input(tx: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM job_input WHERE job_id = ?1", params![id])
        .ctx("wipe a job's env and stdin")?;
    Ok(())
}

fn ids_in_state(db: &Connection, state: JobState) -> Result<Vec<String>, StoreError> {
    let action = "recover jobs after a restart";
    let mut stmt = db
        .prepare_cached("SELECT id FROM jobs WHERE state = ?1 ORDER BY seq")
        .ctx(action)?;
    let mut rows = stmt.query(params![state.as_str()]).ctx(action)?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next().ctx(action)? {
        let id = row.get::<_, Value>(0).ctx(action)?;
        ids.push(text(id, "id").map_err(|detail| StoreError::Corrupt {
            id: format!("in state {state}"),
            detail,
        })?);
    }
    Ok(ids)
}

fn read_output(db: &Connection, id: &str, stream: StreamName) -> Result<Vec<u8>, StoreError> {
    let action = "read job output";
    let mut stmt = db
        .prepare_cached("SELECT data FROM output WHERE job_id = ?1 AND stream = ?2 ORDER BY chunk")
        .ctx(action)?;
    let mut rows = stmt.query(params![id, stream.code()]).ctx(action)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx(action)? {
        match row.get::<_, Value>(0).ctx(action)? {
            Value::Blob(bytes) => out.extend_from_slice(&bytes),
            other => {
                return Err(StoreError::Corrupt {
                    id: id.to_owned(),
                    detail: format!("a {stream} chunk is {}", type_name(&other)),
                })
            }
        }
    }
    Ok(out)
}

/// Reads a row selected with [`RECORD_COLUMNS`], checking every value.
fn record_from_row(row: &Row<'_>) -> Result<JobRecord, StoreError> {
    let mut values = Vec::with_capacity(13);
    for i in 0..13 {
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
    let created_at = opt_int(next(), "created_at")
        .map_err(corrupt)?
        .ok_or_else(|| corrupt("created_at is NULL".into()))?;
    let started_at = opt_int(next(), "started_at").map_err(corrupt)?;
    let finished_at = opt_int(next(), "finished_at").map_err(corrupt)?;
    Ok(JobRecord {
        id,
        profile,
        state,
        args,
        timeout_ms,
        warm,
        exit_code,
        signal,
        stdout: Vec::new(),
        stderr: Vec::new(),
        truncated,
        error,
        created_at: rfc3339(created_at),
        started_at: started_at.map(rfc3339),
        finished_at: finished_at.map(rfc3339),
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

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `j` + 13 hex digits of the creation time in ms + 8 random hex digits: URL
/// safe, and sorted by creation time to the millisecond.
fn new_id(created_ms: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    let seed = nanos
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let random = splitmix64(seed) >> 32;
    let millis = u64::try_from(created_ms).unwrap_or(0) & 0xf_ffff_ffff_ffff;
    format!("j{millis:013x}{random:08x}")
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2024-05-01T12:00:00.123Z`.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "warmpool-store-test-{}-{n}-{}",
                std::process::id(),
                now_ms()
            ));
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn job(profile: &str) -> NewJob {
        NewJob {
            profile: profile.into(),
            args: vec!["echo".into(), "hi there".into()],
            env: vec![("A".into(), "1".into())],
            stdin: None,
            timeout_ms: Some(5_000),
        }
    }

    fn exited(code: i32) -> Finish {
        Finish {
            state: if code == 0 {
                JobState::Succeeded
            } else {
                JobState::Failed
            },
            exit_code: Some(code),
            signal: None,
            error: None,
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The database file and its WAL, as bytes.
    fn file_bytes(store: &Store) -> Vec<u8> {
        let mut bytes = fs::read(store.path()).expect("read db");
        let wal = PathBuf::from(format!("{}-wal", store.path().display()));
        if let Ok(more) = fs::read(wal) {
            bytes.extend(more);
        }
        bytes
    }

    #[test]
    fn insert_then_get_round_trips() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let new = NewJob {
            stdin: Some(b"input".to_vec()),
            ..job("py")
        };
        let id = store.insert(&new).expect("insert");
        assert!(id.starts_with('j') && id.len() == 22, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));

        let record = store.get(&id, true).expect("get").expect("exists");
        assert_eq!(record.id, id);
        assert_eq!(record.profile, "py");
        assert_eq!(record.state, JobState::Queued);
        assert_eq!(record.args, new.args);
        assert_eq!(record.timeout_ms, Some(5_000));
        assert_eq!(record.warm, None);
        assert_eq!((record.exit_code, record.signal), (None, None));
        assert!(record.stdout.is_empty() && record.stderr.is_empty());
        assert!(!record.truncated);
        assert_eq!(record.error, None);
        assert!(record.created_at.ends_with('Z') && record.created_at.len() == 24);
        assert_eq!((record.started_at, record.finished_at), (None, None));

        let queued = store.queued(&id).expect("queued").expect("is queued");
        assert_eq!(
            queued,
            QueuedJob {
                id: id.clone(),
                job: new
            }
        );
        assert_eq!(store.get("jnope", false).expect("get"), None);
        assert_eq!(store.queued("jnope").expect("queued"), None);
    }

    #[test]
    fn empty_stdin_stays_apart_from_no_stdin() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let empty = store
            .insert(&NewJob {
                stdin: Some(Vec::new()),
                env: Vec::new(),
                ..job("py")
            })
            .expect("insert");
        let none = store.insert(&job("py")).expect("insert");
        let stdin = |id: &str| store.queued(id).expect("queued").expect("queued").job.stdin;
        assert_eq!(stdin(&empty), Some(Vec::new()));
        assert_eq!(stdin(&none), None);
    }

    #[test]
    fn debug_of_a_new_job_hides_env_values_and_stdin() {
        let new = NewJob {
            env: vec![("TOKEN".into(), "hunter2".into())],
            stdin: Some(b"private".to_vec()),
            ..job("py")
        };
        let shown = format!("{new:?}");
        assert!(shown.contains("TOKEN"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("private"),
            "{shown}"
        );
    }

    #[test]
    fn mark_running_wipes_env_and_stdin_from_the_file() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let secret = format!("wp-secret-{}-{}", std::process::id(), now_ms());
        let stdin_marker = format!("wp-stdin-{}-{}", std::process::id(), now_ms());
        // Large enough for overflow pages.
        let stdin = stdin_marker.repeat(2_000).into_bytes();
        let new = NewJob {
            env: vec![("TOKEN".into(), secret.clone())],
            stdin: Some(stdin),
            ..job("py")
        };
        let id = store.insert(&new).expect("insert");
        store.checkpoint().expect("checkpoint");
        // The scan sees the values while the job is queued...
        let before = file_bytes(&store);
        assert!(contains(&before, secret.as_bytes()));
        assert!(contains(&before, stdin_marker.as_bytes()));

        assert!(store.mark_running(&id, true).expect("mark running"));
        assert_eq!(store.queued(&id).expect("queued"), None);
        let record = store.get(&id, false).expect("get").expect("exists");
        assert_eq!(record.state, JobState::Running);
        assert_eq!(record.warm, Some(true));
        assert!(record.started_at.is_some());

        // ...and nowhere once it started, free pages included.
        store.checkpoint().expect("checkpoint");
        let after = file_bytes(&store);
        assert!(
            !contains(&after, secret.as_bytes()),
            "env value left in the file"
        );
        assert!(
            !contains(&after, stdin_marker.as_bytes()),
            "stdin left in the file"
        );
        // The non-secret parts are still there.
        assert!(contains(&after, id.as_bytes()));
    }

    #[test]
    fn mark_running_only_from_queued() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let id = store.insert(&job("py")).expect("insert");
        assert!(store.cancel_queued(&id).expect("cancel"));
        assert!(!store.mark_running(&id, false).expect("mark running"));
        assert_eq!(
            store.get(&id, false).expect("get").map(|r| r.state),
            Some(JobState::Cancelled)
        );
        assert!(!store.mark_running("jnope", false).expect("mark_running"));
    }

    #[test]
    fn output_keeps_append_order_per_stream() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let id = store.insert(&job("py")).expect("insert");
        let other = store.insert(&job("py")).expect("insert");
        store.mark_running(&id, false).expect("mark running");
        store
            .append_output(&id, StreamName::Stdout, b"one ")
            .expect("append");
        store
            .append_output(&id, StreamName::Stderr, b"err1 ")
            .expect("append");
        store
            .append_output(&other, StreamName::Stdout, b"x")
            .expect("append");
        store
            .append_output(&id, StreamName::Stdout, b"")
            .expect("append");
        store
            .append_output(&id, StreamName::Stdout, b"two")
            .expect("append");
        store
            .append_output(&id, StreamName::Stderr, b"err2")
            .expect("append");
        store.set_truncated(&id).expect("truncate");

        assert_eq!(
            store.output(&id, StreamName::Stdout).expect("output"),
            Some(b"one two".to_vec())
        );
        assert_eq!(
            store.output(&id, StreamName::Stderr).expect("output"),
            Some(b"err1 err2".to_vec())
        );
        assert_eq!(
            store.output("jnope", StreamName::Stdout).expect("output"),
            None
        );
        let record = store.get(&id, true).expect("get").expect("exists");
        assert_eq!(record.stdout, b"one two");
        assert_eq!(record.stderr, b"err1 err2");
        assert!(record.truncated);
        assert!(
            !store
                .get(&other, false)
                .expect("get")
                .expect("exists")
                .truncated
        );
        assert!(matches!(
            store.append_output("jnope", StreamName::Stdout, b"x"),
            Err(StoreError::NoSuchJob(_))
        ));
        assert!(matches!(
            store.set_truncated("jnope"),
            Err(StoreError::NoSuchJob(_))
        ));
    }

    #[test]
    fn recover_interrupts_running_and_returns_queued_in_order_across_a_reopen() {
        let dir = TempDir::new();
        let (first, running, second, done, output) = {
            let store = Store::open(&dir.0).expect("open");
            let first = store.insert(&job("py")).expect("insert");
            let running = store.insert(&job("py")).expect("insert");
            let second = store.insert(&job("py")).expect("insert");
            let done = store.insert(&job("py")).expect("insert");
            store.mark_running(&running, true).expect("mark running");
            store
                .append_output(&running, StreamName::Stdout, b"partial")
                .expect("append");
            store.mark_running(&done, false).expect("mark running");
            store.finish(&done, &exited(0)).expect("finish");
            (first, running, second, done, b"partial".to_vec())
        };

        let store = Store::open(&dir.0).expect("reopen");
        let recovered = store.recover().expect("recover");
        assert_eq!(recovered.queued, vec![first.clone(), second.clone()]);
        assert_eq!(recovered.interrupted, vec![running.clone()]);

        let record = store.get(&running, true).expect("get").expect("exists");
        assert_eq!(record.state, JobState::Interrupted);
        assert_eq!(record.error.as_deref(), Some(INTERRUPTED_ERROR));
        assert!(record.finished_at.is_some());
        assert_eq!(record.stdout, output);
        assert_eq!(
            store.get(&done, false).expect("get").map(|r| r.state),
            Some(JobState::Succeeded)
        );
        // Queued jobs keep their input to be run.
        assert_eq!(
            store.queued(&first).expect("queued").map(|q| q.job),
            Some(job("py"))
        );

        let again = store.recover().expect("recover again");
        assert_eq!(again.queued, vec![first, second]);
        assert!(again.interrupted.is_empty());
    }

    #[test]
    fn a_second_open_of_the_same_store_is_refused() {
        let dir = TempDir::new();
        let _store = Store::open(&dir.0).expect("open");
        let second = Store::open_with(&dir.0, Duration::from_millis(50));
        assert!(
            matches!(second, Err(StoreError::InUse { .. })),
            "{second:?}"
        );
    }

    #[test]
    fn another_sqlite_file_is_not_taken_for_a_store() {
        let dir = TempDir::new();
        fs::create_dir_all(&dir.0).expect("mkdir");
        {
            let db = Connection::open(dir.0.join(FILE_NAME)).expect("open");
            db.execute_batch("CREATE TABLE notes (body TEXT)")
                .expect("create");
        }
        let opened = Store::open(&dir.0);
        assert!(
            matches!(opened, Err(StoreError::NotAStore { .. })),
            "{opened:?}"
        );
    }

    #[test]
    fn finish_only_from_queued_or_running() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let id = store.insert(&job("py")).expect("insert");
        store.mark_running(&id, false).expect("mark running");
        let timed_out = Finish {
            state: JobState::TimedOut,
            exit_code: Some(143),
            signal: Some(15),
            error: Some("timed out after 5s".into()),
        };
        assert!(store.finish(&id, &timed_out).expect("finish"));
        // A final job stays as it is.
        assert!(!store.finish(&id, &exited(0)).expect("finish again"));
        assert!(!store.cancel_queued(&id).expect("cancel"));
        let record = store.get(&id, false).expect("get").expect("exists");
        assert_eq!(record.state, JobState::TimedOut);
        assert_eq!((record.exit_code, record.signal), (Some(143), Some(15)));
        assert_eq!(record.error.as_deref(), Some("timed out after 5s"));
        assert!(record.finished_at.is_some());

        // A queued job can end without starting (e.g. its container failed), and
        // its input goes with it.
        let never = store.insert(&job("py")).expect("insert");
        let failed = Finish {
            state: JobState::Failed,
            exit_code: None,
            signal: None,
            error: Some("image gone".into()),
        };
        assert!(store.finish(&never, &failed).expect("finish"));
        assert_eq!(store.queued(&never).expect("queued"), None);

        let not_final = Finish {
            state: JobState::Running,
            ..exited(0)
        };
        assert!(matches!(
            store.finish(&never, &not_final),
            Err(StoreError::NotFinal(JobState::Running))
        ));
        assert!(!store.finish("jnope", &exited(1)).expect("finish"));
    }

    #[test]
    fn cancel_queued_cancels_only_queued_jobs() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let queued = store.insert(&job("py")).expect("insert");
        let running = store.insert(&job("py")).expect("insert");
        store.mark_running(&running, true).expect("mark running");

        assert!(store.cancel_queued(&queued).expect("cancel"));
        assert!(!store.cancel_queued(&queued).expect("cancel twice"));
        assert!(!store.cancel_queued(&running).expect("cancel running"));
        let record = store.get(&queued, false).expect("get").expect("exists");
        assert_eq!(record.state, JobState::Cancelled);
        assert_eq!(record.error.as_deref(), Some(CANCELLED_ERROR));
        assert_eq!(store.queued(&queued).expect("queued"), None);
        assert_eq!(
            store.get(&running, false).expect("get").map(|r| r.state),
            Some(JobState::Running)
        );
        assert!(!store.cancel_queued("jnope").expect("cancel_queued"));
    }

    #[test]
    fn list_filters_newest_first_with_a_limit() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let a = store.insert(&job("py")).expect("insert");
        let b = store.insert(&job("node")).expect("insert");
        let c = store.insert(&job("py")).expect("insert");
        let d = store.insert(&job("py")).expect("insert");
        store.mark_running(&c, false).expect("mark running");
        store
            .append_output(&c, StreamName::Stdout, b"out")
            .expect("append");

        let ids = |records: Vec<JobRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list(None, None, 10).expect("list")),
            vec![d.clone(), c.clone(), b.clone(), a.clone()]
        );
        assert_eq!(
            ids(store.list(None, None, 2).expect("list")),
            vec![d.clone(), c.clone()]
        );
        assert_eq!(
            ids(store.list(None, Some("py"), 10).expect("list")),
            vec![d.clone(), c.clone(), a.clone()]
        );
        assert_eq!(
            ids(store
                .list(Some(JobState::Queued), Some("py"), 10)
                .expect("list")),
            vec![d, a]
        );
        assert_eq!(
            ids(store.list(Some(JobState::Queued), None, 1).expect("list")).len(),
            1
        );
        let running = store.list(Some(JobState::Running), None, 10).expect("list");
        assert_eq!(ids(running.clone()), vec![c]);
        assert!(running[0].stdout.is_empty(), "list carries no output");
        assert!(store.list(None, Some("go"), 10).expect("list").is_empty());
        assert!(store.list(None, None, 0).expect("list").is_empty());
    }

    #[test]
    fn prune_deletes_old_finished_jobs_and_their_output() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let old = store.insert(&job("py")).expect("insert");
        let recent = store.insert(&job("py")).expect("insert");
        let queued = store.insert(&job("py")).expect("insert");
        let running = store.insert(&job("py")).expect("insert");
        for id in [&old, &recent, &running] {
            store.mark_running(id, false).expect("mark running");
            store
                .append_output(id, StreamName::Stdout, b"out")
                .expect("append");
        }
        store.finish(&old, &exited(0)).expect("finish");
        store.finish(&recent, &exited(1)).expect("finish");
        {
            // Back-date one job's end by two hours.
            let conn = store.lock();
            conn.db
                .execute(
                    "UPDATE jobs SET finished_at = finished_at - 7200000 WHERE id = ?1",
                    params![old],
                )
                .expect("back-date");
        }

        assert_eq!(store.prune(Duration::from_secs(3600)).expect("prune"), 1);
        assert_eq!(store.get(&old, false).expect("get"), None);
        assert_eq!(
            store.output(&old, StreamName::Stdout).expect("output"),
            None
        );
        {
            let conn = store.lock();
            let chunks: i64 = conn
                .db
                .query_row(
                    "SELECT count(*) FROM output WHERE job_id = ?1",
                    params![old],
                    |row| row.get(0),
                )
                .expect("count");
            assert_eq!(chunks, 0);
        }
        assert!(store.get(&recent, false).expect("get").is_some());

        // Everything finished goes with a zero age; open jobs never do.
        assert_eq!(store.prune(Duration::ZERO).expect("prune"), 1);
        assert_eq!(store.get(&recent, false).expect("get"), None);
        assert!(store.get(&queued, false).expect("get").is_some());
        assert_eq!(
            store.output(&running, StreamName::Stdout).expect("output"),
            Some(b"out".to_vec())
        );
        assert_eq!(store.prune(Duration::ZERO).expect("prune"), 0);
    }

    #[test]
    fn a_damaged_row_is_an_error_not_a_panic() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let id = store.insert(&job("py")).expect("insert");
        let fine = store.insert(&job("py")).expect("insert");
        let damage = |sql: &str| {
            let conn = store.lock();
            conn.db.execute(sql, params![id]).expect("damage");
        };

        damage("UPDATE jobs SET state = 'exploded' WHERE id = ?1");
        let err = store.get(&id, false).expect_err("bad state");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("exploded"), "{err}");
        assert!(matches!(
            store.list(None, None, 10),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(store.get(&fine, false).expect("get").is_some());

        damage("UPDATE jobs SET state = 'queued', args = 'not json' WHERE id = ?1");
        assert!(matches!(
            store.get(&id, false),
            Err(StoreError::Corrupt { .. })
        ));
        damage("UPDATE jobs SET args = '[]', exit_code = 'zero' WHERE id = ?1");
        assert!(matches!(
            store.get(&id, false),
            Err(StoreError::Corrupt { .. })
        ));
        damage("UPDATE jobs SET exit_code = 99999999999 WHERE id = ?1");
        assert!(matches!(
            store.get(&id, false),
            Err(StoreError::Corrupt { .. })
        ));
        damage("UPDATE jobs SET exit_code = NULL WHERE id = ?1");
        damage("UPDATE job_input SET env = '{' WHERE job_id = ?1");
        assert!(matches!(store.queued(&id), Err(StoreError::Corrupt { .. })));
        damage("DELETE FROM job_input WHERE job_id = ?1");
        assert!(matches!(store.queued(&id), Err(StoreError::Corrupt { .. })));
        damage("INSERT INTO output (job_id, stream, data) VALUES (?1, 1, 'text')");
        assert!(matches!(
            store.output(&id, StreamName::Stdout),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_delivery_starts_one_job_across_reopens() {
        let dir = TempDir::new();
        let job = NewJob {
            profile: "claude".into(),
            ..NewJob::default()
        };
        let id = {
            let store = Store::open(&dir.0).expect("open");
            let id = store
                .insert_for_delivery("d-1", "{}", &job)
                .expect("insert")
                .expect("new delivery");
            assert_eq!(
                store.insert_for_delivery("d-1", "{}", &job).expect("again"),
                None
            );
            id
        };
        let store = Store::open(&dir.0).expect("reopen");
        assert_eq!(
            store
                .insert_for_delivery("d-1", "{}", &job)
                .expect("after a restart"),
            None
        );
        let pending = store.unanswered_deliveries().expect("list");
        assert_eq!(pending, vec![("d-1".to_string(), id, "{}".to_string())]);
        store.mark_answered("d-1").expect("answer");
        assert!(store.unanswered_deliveries().expect("list").is_empty());
        assert_eq!(
            store.list(None, None, 10).expect("list").len(),
            1,
            "one job"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = TempDir::new();
        drop(Store::open(&dir.0).expect("open"));
        {
            let db = Connection::open(dir.0.join(FILE_NAME)).expect("open");
            db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("bump");
        }
        let opened = Store::open(&dir.0);
        assert!(
            matches!(opened, Err(StoreError::NewerSchema { found, .. }) if found == SCHEMA_VERSION + 1),
            "{opened:?}"
        );
    }

    #[test]
    fn concurrent_use_from_several_threads() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).expect("open");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for n in 0..20 {
                        let id = store.insert(&job(&format!("p{t}"))).expect("insert");
                        assert!(store.mark_running(&id, n % 2 == 0).expect("mark running"));
                        for chunk in 0..3 {
                            let data = format!("{t}-{n}-{chunk};");
                            store
                                .append_output(&id, StreamName::Stdout, data.as_bytes())
                                .expect("append");
                        }
                        store.finish(&id, &exited(0)).expect("finish");
                        store.list(None, None, 5).expect("list");
                        ids.push((id, format!("{t}-{n}-0;{t}-{n}-1;{t}-{n}-2;")));
                    }
                    ids
                })
            })
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            all.extend(thread.join().expect("thread"));
        }
        assert_eq!(all.len(), 160);
        for (id, expected) in &all {
            let record = store.get(id, true).expect("get").expect("exists");
            assert_eq!(record.state, JobState::Succeeded);
            assert_eq!(record.stdout, expected.as_bytes());
        }
        let mut ids: Vec<_> = all.into_iter().map(|(id, _)| id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 160, "ids are unique");
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Store>();
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).expect("json");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert!("TimedOut".parse::<JobState>().is_err());
        assert!(!JobState::Running.is_final() && JobState::Interrupted.is_final());
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let early = new_id(1_700_000_000_000);
        let late = new_id(1_700_000_000_001);
        assert!(early < late);
        assert_eq!(&early[..14], "j0018bcfe56800");
        assert_ne!(new_id(5), new_id(5));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // Absurd values still format.
        let _ = rfc3339(i64::MAX);
        let _ = rfc3339(i64::MIN);
    }
}
