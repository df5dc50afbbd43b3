//! The SQLite file's layout: each schema version as it was written, the
//! migration from any older version, and how connections are set up. Knows
//! nothing of jobs' rules or of the writer thread.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::writer::Durability;
use crate::StoreError;

/// Schema version in `PRAGMA user_version`; bump it with a migration step.
pub(super) const SCHEMA_VERSION: i64 = 4;

/// `PRAGMA application_id` of a warmpool store ("wpjs"), so that another
/// program's SQLite file in the data directory is refused, not migrated.
pub(super) const APPLICATION_ID: i64 = 0x7770_6a73;

/// How long a connection waits for another (a checkpoint waits for readers).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL's size kept across checkpoints: a bit more than the automatic
/// checkpoint lets it grow to (1000 pages of 4 KiB).
const WAL_KEEP_BYTES: i64 = 8 << 20;

/// Prepared statements kept per connection: more than the store's distinct
/// statements, so none is prepared twice (rusqlite keeps 16 by default).
const STATEMENT_CACHE: usize = 64;

/// Version 1: jobs, the input of queued jobs, output chunks. Kept verbatim: a
/// new file is created by running every step from version 0.
pub(super) const V1: &str = "
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
pub(super) const V2: &str = "
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
pub(super) const V3: &str = "
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

/// Version 4: the cluster part of the interface (nodes, their generations,
/// input kept for a job that may be queued again, the shared queue's index).
pub(super) const V4: &str = "
-- Nodes that joined: a join bumps `generation`; `lost` once another node took
-- its jobs over (its heartbeat lapsed). Times in ms since the epoch.
CREATE TABLE nodes (
    node         TEXT    PRIMARY KEY,
    address      TEXT    NOT NULL,
    pools        TEXT    NOT NULL,
    generation   INTEGER NOT NULL,
    joined_ms    INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    lost         INTEGER NOT NULL DEFAULT 0
);
-- The generation of the join under which the job was made running on `node`
-- (NULL: made running by a store that had not joined as that node, or never
-- started); -1: taken over from a lost node (no node's write is accepted until
-- it is claimed again).
ALTER TABLE jobs ADD COLUMN node_gen INTEGER;
-- A running job's input (job_input) is kept until its end: it may be queued again.
ALTER TABLE jobs ADD COLUMN keep_input INTEGER NOT NULL DEFAULT 0;
-- claim_next: the oldest queued job of a profile.
CREATE INDEX jobs_queued_by_profile ON jobs (profile, seq) WHERE state = 'queued';
";

/// Sets the write connection up; returns the journal mode SQLite settled on.
/// `busy`: how long to wait for another process holding the file.
pub(super) fn configure_writer(db: &Connection, busy: Duration) -> rusqlite::Result<String> {
    db.busy_timeout(busy)?;
    db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    db.pragma_update(None, "synchronous", Durability::Fsync.pragma())?;
    // Deleted content (wiped env and stdin, pruned jobs) is overwritten with
    // zeros, not left in free space.
    db.pragma_update(None, "secure_delete", "ON")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    // Keep the WAL file's size when it restarts after a checkpoint: commits
    // then overwrite it in place, and an fsync of a file that did not grow is
    // much cheaper. Stale frames (wiped input among them) are overwritten by
    // the next writes or cut away by `scrub` (a TRUNCATE checkpoint).
    db.pragma_update_and_check(None, "journal_size_limit", WAL_KEEP_BYTES, |_| Ok(()))?;
    Ok(mode)
}

pub(super) fn configure_reader(db: &Connection) -> rusqlite::Result<()> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    db.pragma_update(None, "query_only", "ON")
}

pub(super) fn migrate(
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
    if version < 4 {
        tx.execute_batch(V4).map_err(&open_error)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(&open_error)?;
    }
    tx.commit().map_err(&open_error)
}
