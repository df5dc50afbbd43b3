//! Reading rows back: every value checked, a damaged row is `Corrupt` (never a
//! panic). No writes here.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::{JobRecord, JobState, NodeRecord, StoreError, StreamName};

/// Columns read by [`record`], in its order.
pub(super) const RECORD_COLUMNS: &str =
    "id, profile, state, args, timeout_ms, warm, exit_code, signal, error, truncated, \
     created_ms, started_ms, finished_ms, node, cancel_requested, stdout_len, stderr_len";

/// Columns read by [`node`], in its order.
pub(super) const NODE_COLUMNS: &str =
    "node, address, pools, generation, joined_ms, last_seen_ms, lost";

/// The value in `output.stream`.
pub(super) fn stream_code(stream: StreamName) -> i16 {
    match stream {
        StreamName::Stdout => 1,
        StreamName::Stderr => 2,
    }
}

/// The `jobs` column holding a stream's stored length.
pub(super) fn len_column(stream: StreamName) -> &'static str {
    match stream {
        StreamName::Stdout => "stdout_len",
        StreamName::Stderr => "stderr_len",
    }
}

/// Column `idx` of `row` as `T`, or what is wrong with it.
pub(super) fn value<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, String> {
    row.try_get::<_, T>(idx).map_err(|e| {
        let name = row.columns().get(idx).map_or("?", |c| c.name());
        format!("{name} is unreadable: {e}")
    })
}

/// A non-negative count or length.
pub(super) fn unsigned(n: i64, column: &str) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| format!("{column} {n} is negative"))
}

pub(super) fn decode_json<T: serde::de::DeserializeOwned>(
    json: &str,
    column: &str,
) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("{column} is not valid: {e}"))
}

/// The first column of every row, as text (ids).
pub(super) fn ids(rows: &[Row]) -> Result<Vec<String>, StoreError> {
    rows.iter()
        .map(|row| {
            value::<String>(row, 0).map_err(|detail| StoreError::Corrupt {
                id: "<unreadable id>".into(),
                detail,
            })
        })
        .collect()
}

/// Reads a row selected with [`RECORD_COLUMNS`], checking every value.
pub(super) fn record(row: &Row) -> Result<JobRecord, StoreError> {
    let id: String = value(row, 0).map_err(|detail| StoreError::Corrupt {
        id: "<unreadable id>".into(),
        detail,
    })?;
    let read = || -> Result<JobRecord, String> {
        let state: String = value(row, 2)?;
        let state = state
            .parse::<JobState>()
            .map_err(|e| format!("state: {e}"))?;
        let args: String = value(row, 3)?;
        let timeout_ms: Option<i64> = value(row, 4)?;
        let stdout_len: i64 = value(row, 15)?;
        let stderr_len: i64 = value(row, 16)?;
        Ok(JobRecord {
            id: id.clone(),
            profile: value(row, 1)?,
            state,
            args: decode_json(&args, "args")?,
            timeout_ms: timeout_ms.map(|t| unsigned(t, "timeout_ms")).transpose()?,
            warm: value(row, 5)?,
            exit_code: value(row, 6)?,
            signal: value(row, 7)?,
            error: value(row, 8)?,
            truncated: value(row, 9)?,
            created_ms: value(row, 10)?,
            started_ms: value(row, 11)?,
            finished_ms: value(row, 12)?,
            node: value(row, 13)?,
            cancel_requested: value(row, 14)?,
            output_len: [
                unsigned(stdout_len, "stdout_len")?,
                unsigned(stderr_len, "stderr_len")?,
            ],
        })
    };
    read().map_err(|detail| StoreError::Corrupt {
        id: id.clone(),
        detail,
    })
}

/// Reads a row selected with [`NODE_COLUMNS`].
pub(super) fn node(row: &Row) -> Result<NodeRecord, StoreError> {
    let read = || -> Result<NodeRecord, String> {
        Ok(NodeRecord {
            node: value(row, 0)?,
            address: value(row, 1)?,
            pools: value(row, 2)?,
            generation: value(row, 3)?,
            joined_ms: value(row, 4)?,
            last_seen_ms: value(row, 5)?,
            lost: value(row, 6)?,
        })
    };
    read().map_err(|detail| StoreError::Corrupt {
        id: "<a node's row>".into(),
        detail,
    })
}

/// What fencing looks at in a job's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pub node: Option<String>,
    /// The generation the job carries: of the join that made it running, or
    /// `fence::TAKEN_OVER`; `None` if it carries none.
    pub node_gen: Option<i64>,
}

/// Columns read by [`owner`], in its order.
pub(super) const OWNER_COLUMNS: &str = "node, node_gen";

pub(super) fn owner(id: &str, row: &Row) -> Result<Owner, StoreError> {
    let read = || -> Result<Owner, String> {
        Ok(Owner {
            node: value(row, 0)?,
            node_gen: value(row, 1)?,
        })
    };
    read().map_err(|detail| StoreError::Corrupt {
        id: id.to_owned(),
        detail,
    })
}
