//! Job output by byte offset: an append stores only what is not stored yet
//! and refuses a gap; a read finds its first chunk through the offset index.

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{opt_u64, stream_code, type_name};
use super::{to_i64, Context};
use crate::{StoreError, StreamName};

/// Appends at `offset`: the part already stored is skipped, a gap refused.
pub(super) fn append(
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
pub(super) fn read_range(
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
    if max == 0 || offset > i64::MAX as u64 {
        return Ok(Some(Vec::new()));
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
    let mut assembly = crate::chunks::Assembly::new(offset, end);
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
        assembly
            .push(start, &data, stream.as_str())
            .map_err(corrupt)?;
    }
    Ok(Some(assembly.bytes()))
}
