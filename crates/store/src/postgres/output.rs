//! Job output by byte offset: an append stores only what is not stored yet
//! and refuses a gap; a read finds its first chunk through the primary key.
//! Run inside the caller's transaction.

use super::listen::Tx;

use super::fence::{lock_checked, Joined};
use super::pool::Failure;
use super::rows::{len_column, stream_code, unsigned, value};
use crate::{StoreError, StreamName};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends at `offset`: the part already stored is skipped, a gap refused, a
/// fenced writer refused. Locks the job's row (appends to one job serialize).
pub(super) async fn append(
    client: &Tx<'_>,
    id: &str,
    stream: StreamName,
    offset: u64,
    data: &[u8],
    joined: Option<&Joined>,
) -> Result<(), Failure> {
    let column = len_column(stream);
    let Some(row) = lock_checked(client, id, joined, &format!(", {column}")).await? else {
        return Err(StoreError::NoSuchJob(id.to_owned()).into());
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        id: id.to_owned(),
        detail,
    };
    let stored = value::<i64>(&row, 2)
        .and_then(|n| unsigned(n, column))
        .map_err(corrupt)?;
    let end = offset.saturating_add(data.len() as u64);
    if end <= stored {
        return Ok(());
    }
    if offset > stored {
        return Err(StoreError::Backend {
            action: "store job output",
            message: format!(
                "job {id} has {stored} bytes of {stream} and this append starts at byte \
                 {offset}, leaving a gap; append from the stored length"
            ),
        }
        .into());
    }
    // `offset <= stored < end`: store the part not stored yet.
    let skip = usize::try_from(stored - offset).unwrap_or(data.len());
    let tail = &data[skip.min(data.len())..];
    client
        .execute(
            "INSERT INTO output (job_id, stream, byte_offset, data) VALUES ($1, $2, $3, $4)",
            &[&id, &stream_code(stream), &to_i64(stored), &tail],
        )
        .await?;
    client
        .execute(
            &format!("UPDATE jobs SET {column} = $2 WHERE id = $1"),
            &[&id, &to_i64(end)],
        )
        .await?;
    Ok(())
}

/// Up to `max` bytes of a stream from `offset`; `None` for an unknown job.
pub(super) async fn read_range(
    client: &Tx<'_>,
    id: &str,
    stream: StreamName,
    offset: u64,
    max: usize,
) -> Result<Option<Vec<u8>>, Failure> {
    if client
        .query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&id])
        .await?
        .is_none()
    {
        return Ok(None);
    }
    if max == 0 || offset > i64::MAX as u64 {
        return Ok(Some(Vec::new()));
    }
    let end = offset.saturating_add(max as u64);
    // The chunk holding `offset` is the last one starting at or before it.
    let rows = client
        .query(
            "SELECT byte_offset, data FROM output
             WHERE job_id = $1 AND stream = $2 AND byte_offset < $4 AND byte_offset >=
                 coalesce((SELECT max(byte_offset) FROM output
                           WHERE job_id = $1 AND stream = $2 AND byte_offset <= $3), 0)
             ORDER BY byte_offset",
            &[&id, &stream_code(stream), &to_i64(offset), &to_i64(end)],
        )
        .await?;
    let corrupt = |detail: String| StoreError::Corrupt {
        id: id.to_owned(),
        detail,
    };
    let mut assembly = crate::chunks::Assembly::new(offset, end);
    for row in &rows {
        let start = value::<i64>(row, 0)
            .and_then(|n| unsigned(n, "byte_offset"))
            .map_err(corrupt)?;
        let data: &[u8] = value(row, 1).map_err(corrupt)?;
        assembly
            .push(start, data, stream.as_str())
            .map_err(|d| Failure::from(corrupt(d)))?;
    }
    Ok(Some(assembly.bytes()))
}
