//! The database's layout: each schema version as it was written, and the
//! migration run at every connect. Several nodes may connect at once: the
//! migration runs in one transaction holding a transaction-level advisory
//! lock, so one of them migrates and the others find the work done.

use tokio_postgres::Client;

use super::pool::describe;
use crate::StoreError;

/// The advisory lock key of the migration ("warmpool" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x7761_726d_706f_6f6c;

/// Each version's SQL, in order: version N is `STEPS[N - 1]`. Kept verbatim
/// once released; a change is a new step.
pub(super) const STEPS: &[&str] = &[V1];

/// Version 1: jobs, their input, output, deliveries, nodes. `jobs.node_gen`
/// is also -1 (`fence::TAKEN_OVER`) once `take_over` interrupted or requeued
/// the job; fencing reads `node_gen` only, `lost_node`/`lost_gen` just record
/// whom a take-over took the job from (the SQL comment predates that).
const V1: &str = "
-- seq is the creation order (ids sort by creation time only to the millisecond).
-- node_gen: the generation of the node's join that made the job running (NULL
-- when the node had not joined through that store). lost_node/lost_gen: the
-- node (and its generation) a take-over took the job from: that node's late
-- writes are refused.
CREATE TABLE jobs (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    profile          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    args             TEXT    NOT NULL,
    timeout_ms       BIGINT,
    warm             BOOLEAN,
    exit_code        INTEGER,
    signal           INTEGER,
    truncated        BOOLEAN NOT NULL DEFAULT false,
    error            TEXT,
    node             TEXT,
    node_gen         BIGINT,
    lost_node        TEXT,
    lost_gen         BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    keep_input       BOOLEAN NOT NULL DEFAULT false,
    stdout_len       BIGINT  NOT NULL DEFAULT 0,
    stderr_len       BIGINT  NOT NULL DEFAULT 0,
    created_ms       BIGINT  NOT NULL,
    started_ms       BIGINT,
    finished_ms      BIGINT
);
-- The shared queue: the oldest queued job of a profile.
CREATE INDEX jobs_queue ON jobs (profile, seq) WHERE state = 'queued';
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_by_profile ON jobs (profile, seq);
CREATE INDEX jobs_running_on ON jobs (node, seq) WHERE state = 'running';
CREATE INDEX jobs_by_finished ON jobs (finished_ms) WHERE finished_ms IS NOT NULL;

-- Env values and stdin of a job while it may still run: deleted in the
-- transaction that starts it (unless keep_input) or ends it.
CREATE TABLE job_input (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    env    TEXT NOT NULL,
    stdin  BYTEA
);

-- One row per appended chunk, at its byte offset in its stream (1 stdout,
-- 2 stderr): an append never rewrites earlier output.
CREATE TABLE output (
    job_id      TEXT     NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    stream      SMALLINT NOT NULL,
    byte_offset BIGINT   NOT NULL,
    data        BYTEA    NOT NULL,
    PRIMARY KEY (job_id, stream, byte_offset)
);

-- Webhook deliveries that started a job. The delivery row is written before
-- its job (a concurrent insert of the same delivery waits on it): the job's
-- reference is checked at commit.
CREATE TABLE deliveries (
    id          TEXT    PRIMARY KEY,
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE
                        DEFERRABLE INITIALLY DEFERRED,
    meta        TEXT    NOT NULL,
    received_ms BIGINT  NOT NULL,
    seq         BIGSERIAL,
    answered    BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX deliveries_by_job ON deliveries (job_id);

-- The nodes sharing this database: their lease (last_seen_ms) and generation.
CREATE TABLE nodes (
    node         TEXT    PRIMARY KEY,
    address      TEXT    NOT NULL,
    pools        TEXT    NOT NULL,
    generation   BIGINT  NOT NULL,
    joined_ms    BIGINT  NOT NULL,
    last_seen_ms BIGINT  NOT NULL,
    lost         BOOLEAN NOT NULL DEFAULT false
);
";

/// The schema version this build writes.
pub(super) fn latest() -> i32 {
    i32::try_from(STEPS.len()).unwrap_or(i32::MAX)
}

/// Brings the database to the latest version (creating it from nothing).
pub(super) async fn migrate(client: &Client, now_ms: i64, db: &str) -> Result<(), StoreError> {
    let open_error = |e: tokio_postgres::Error| {
        StoreError::Open(format!(
            "could not set up the job store's tables in {db}: {}; check that the database \
             exists and that its user may create tables",
            describe(&e)
        ))
    };
    client.batch_execute("BEGIN").await.map_err(open_error)?;
    let result = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(open_error)?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS warmpool_schema (
                     version    INTEGER PRIMARY KEY,
                     applied_ms BIGINT  NOT NULL
                 )",
            )
            .await
            .map_err(open_error)?;
        let row = client
            .query_one("SELECT coalesce(max(version), 0) FROM warmpool_schema", &[])
            .await
            .map_err(open_error)?;
        let version: i32 = row.try_get(0).map_err(open_error)?;
        if version > latest() {
            return Err(StoreError::Open(format!(
                "the job store in {db} has schema version {version}, newer than this \
                 warmpool knows ({}); run a newer warmpool",
                latest()
            )));
        }
        for (n, step) in STEPS.iter().enumerate().skip(version.max(0) as usize) {
            client.batch_execute(step).await.map_err(open_error)?;
            let n = i32::try_from(n + 1).unwrap_or(i32::MAX);
            client
                .execute(
                    "INSERT INTO warmpool_schema (version, applied_ms) VALUES ($1, $2)",
                    &[&n, &now_ms],
                )
                .await
                .map_err(open_error)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(open_error),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}
