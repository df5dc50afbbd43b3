//! Reading rows back: every value checked, a damaged row is `Corrupt` (never a
//! panic). No writes here.

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::Context;
use crate::{JobRecord, JobState, NewJob, NodeRecord, QueuedJob, StoreError, StreamName};

/// Columns read by [`record_from_row`], in its order.
pub(super) const RECORD_COLUMNS: &str =
    "id, profile, state, args, timeout_ms, warm, exit_code, signal, \
     error, truncated, created_at, started_at, finished_at, node, cancel_requested, \
     stdout_len, stderr_len";
pub(super) const RECORD_COLUMN_COUNT: usize = 17;

/// The value in `output.stream`.
pub(super) fn stream_code(stream: StreamName) -> i64 {
    match stream {
        StreamName::Stdout => 1,
        StreamName::Stderr => 2,
    }
}

pub(super) fn read_queued(db: &Connection, id: &str) -> Result<Option<QueuedJob>, StoreError> {
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
pub(super) fn record_from_row(row: &Row<'_>) -> Result<JobRecord, StoreError> {
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

pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real number",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
    }
}

pub(super) fn text(value: Value, column: &str) -> Result<String, String> {
    match value {
        Value::Text(s) => Ok(s),
        other => Err(format!("{column} is {}", type_name(&other))),
    }
}

pub(super) fn opt_text(value: Value, column: &str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        other => text(other, column).map(Some),
    }
}

pub(super) fn opt_int(value: Value, column: &str) -> Result<Option<i64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Integer(n) => Ok(Some(n)),
        other => Err(format!("{column} is {}", type_name(&other))),
    }
}

pub(super) fn opt_i32(value: Value, column: &str) -> Result<Option<i32>, String> {
    opt_int(value, column)?
        .map(|n| i32::try_from(n).map_err(|_| format!("{column} {n} is out of range")))
        .transpose()
}

pub(super) fn opt_u64(value: Value, column: &str) -> Result<Option<u64>, String> {
    opt_int(value, column)?
        .map(|n| u64::try_from(n).map_err(|_| format!("{column} {n} is negative")))
        .transpose()
}

pub(super) fn decode_json<T: serde::de::DeserializeOwned>(
    value: Value,
    column: &str,
) -> Result<T, String> {
    let json = text(value, column)?;
    serde_json::from_str(&json).map_err(|e| format!("{column} is not valid: {e}"))
}

/// Columns read by [`node_from_row`], in its order.
pub(super) const NODE_COLUMNS: &str =
    "node, address, pools, generation, joined_ms, last_seen_ms, lost";

/// Reads a row selected with [`NODE_COLUMNS`], checking every value.
pub(super) fn node_from_row(row: &Row<'_>) -> Result<NodeRecord, StoreError> {
    let action = "read a node";
    let mut values = Vec::with_capacity(7);
    for i in 0..7 {
        values.push(row.get::<_, Value>(i).ctx(action)?);
    }
    let mut values = values.into_iter();
    let mut next = || values.next().unwrap_or(Value::Null);
    let corrupt = |detail: String| StoreError::Backend {
        action,
        message: format!("a node's row is damaged ({detail}); delete it from the nodes table"),
    };
    let int = |value: Value, column: &str| {
        opt_int(value, column)?.ok_or_else(|| format!("{column} is NULL"))
    };
    Ok(NodeRecord {
        node: text(next(), "node").map_err(corrupt)?,
        address: text(next(), "address").map_err(corrupt)?,
        pools: text(next(), "pools").map_err(corrupt)?,
        generation: int(next(), "generation").map_err(corrupt)?,
        joined_ms: int(next(), "joined_ms").map_err(corrupt)?,
        last_seen_ms: int(next(), "last_seen_ms").map_err(corrupt)?,
        lost: int(next(), "lost").map_err(corrupt)? != 0,
    })
}
