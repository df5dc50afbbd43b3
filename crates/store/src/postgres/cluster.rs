//! The shared queue and the nodes: claiming the oldest queued job, expiring
//! queued jobs, node rows (join, heartbeat), taking a lost node's jobs over.
//! Each runs inside the caller's transaction.

use std::collections::BTreeSet;
use std::time::Duration;

use super::listen::Tx;

use super::fence::TAKEN_OVER;
use super::jobs::{queued_job, wipe_input};
use super::listen::notify;
use super::pool::Failure;
use super::rows::{ids, node, value, NODE_COLUMNS};
use crate::{Beat, NodeBeat, NodeRecord, QueuedJob, StoreError, StoreEvent, TakenOver};

/// The oldest queued job of `profile`, now running on `node`; `None` if none.
/// `FOR UPDATE SKIP LOCKED`: a job another node is claiming is skipped, not
/// waited for, so two nodes never get the same job nor wait on each other.
#[allow(clippy::too_many_arguments)]
pub(super) async fn claim_next(
    client: &Tx<'_>,
    profile: &str,
    node: &str,
    gen: Option<i64>,
    warm: bool,
    keep_input: bool,
    now: i64,
) -> Result<Option<QueuedJob>, Failure> {
    let row = client
        .query_opt(
            "UPDATE jobs SET state = 'running', node = $2, node_gen = $3, warm = $4,
                             started_ms = $5, keep_input = $6
             WHERE state = 'queued' AND seq = (
                 SELECT seq FROM jobs WHERE state = 'queued' AND profile = $1
                 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            &[&profile, &node, &gen, &warm, &now, &keep_input],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = value(&row, 0).map_err(|detail| StoreError::Corrupt {
        id: "<unreadable id>".into(),
        detail,
    })?;
    let row = client
        .query_one(
            "SELECT j.profile, j.args, j.timeout_ms, i.env, i.stdin
             FROM jobs j LEFT JOIN job_input i ON i.job_id = j.id WHERE j.id = $1",
            &[&id],
        )
        .await?;
    let job = queued_job(&id, &row, 0)?;
    if !keep_input {
        wipe_input(client, std::slice::from_ref(&id)).await?;
    }
    Ok(Some(job))
}

pub(super) async fn queued_count(client: &Tx<'_>, profile: &str) -> Result<usize, Failure> {
    let row = client
        .query_one(
            "SELECT count(*) FROM jobs WHERE state = 'queued' AND profile = $1",
            &[&profile],
        )
        .await?;
    let n: i64 = row.try_get(0)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

pub(super) async fn expire_queued(
    client: &Tx<'_>,
    profile: &str,
    cutoff: i64,
    error: &str,
    now: i64,
) -> Result<Vec<String>, Failure> {
    let rows = client
        .query(
            "WITH expired AS (
                 UPDATE jobs SET state = 'failed', error = $3, finished_ms = $4
                 WHERE state = 'queued' AND profile = $1 AND created_ms <= $2
                 RETURNING id, seq)
             SELECT id FROM expired ORDER BY seq",
            &[&profile, &cutoff, &error, &now],
        )
        .await?;
    let expired = ids(&rows)?;
    wipe_input(client, &expired).await?;
    for id in &expired {
        notify(client, &StoreEvent::Ended { id: id.clone() }).await?;
    }
    Ok(expired)
}

/// Writes the node's row (not lost, seen now) with a new generation, and
/// ends `interrupted` the node's running jobs of earlier generations (nothing
/// may write them any more: they could never end otherwise); that generation.
pub(super) async fn join(client: &Tx<'_>, beat: &NodeBeat, now: i64) -> Result<i64, Failure> {
    let row = client
        .query_one(
            "INSERT INTO nodes (node, address, pools, generation, joined_ms, last_seen_ms, lost)
             VALUES ($1, $2, $3, 1, $4, $4, false)
             ON CONFLICT (node) DO UPDATE SET
                 address = excluded.address, pools = excluded.pools,
                 generation = nodes.generation + 1, joined_ms = excluded.joined_ms,
                 last_seen_ms = excluded.last_seen_ms, lost = false
             RETURNING generation",
            &[&beat.node, &beat.address, &beat.pools, &now],
        )
        .await?;
    let generation: i64 = row.try_get(0)?;
    let error = format!(
        "node \"{}\" joined again (generation {generation}) while this job ran under an \
         earlier one",
        beat.node
    );
    let rows = client
        .query(
            "WITH stale AS (
                 UPDATE jobs SET state = 'interrupted', error = $3, finished_ms = $4
                 WHERE node = $1 AND state = 'running' AND node_gen IS NOT NULL
                     AND node_gen <> $2
                 RETURNING id, seq)
             SELECT id FROM stale ORDER BY seq",
            &[&beat.node, &generation, &error, &now],
        )
        .await?;
    let interrupted = ids(&rows)?;
    wipe_input(client, &interrupted).await?;
    for id in &interrupted {
        notify(client, &StoreEvent::Ended { id: id.clone() }).await?;
    }
    Ok(generation)
}

/// Renews the lease of generation `gen` of the node; `Fenced` if that
/// generation was declared lost or replaced by a newer join.
pub(super) async fn heartbeat(
    client: &Tx<'_>,
    beat: &NodeBeat,
    gen: i64,
    now: i64,
) -> Result<Beat, Failure> {
    let renewed = client
        .execute(
            "UPDATE nodes SET last_seen_ms = $4, pools = $3, address = $2
             WHERE node = $1 AND generation = $5 AND NOT lost",
            &[&beat.node, &beat.address, &beat.pools, &now, &gen],
        )
        .await?;
    Ok(if renewed == 0 {
        Beat::Fenced
    } else {
        Beat::Alive
    })
}

pub(super) async fn nodes(client: &Tx<'_>) -> Result<Vec<NodeRecord>, Failure> {
    let rows = client
        .query(
            &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY node"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(node).collect::<Result<_, _>>()?)
}

/// `30s`, `1500ms`: a timeout as an error message shows it.
pub(super) fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Declares lost the nodes other than `by` last seen at or before `cutoff`,
/// and takes their running jobs over. Two nodes doing it at once: the row
/// locks of the first `UPDATE` make the second find those nodes lost already.
pub(super) async fn take_over(
    client: &Tx<'_>,
    by: &str,
    cutoff: i64,
    timeout: Duration,
    requeue: &[String],
    now: i64,
) -> Result<Vec<TakenOver>, Failure> {
    let rows = client
        .query(
            "UPDATE nodes SET lost = true
             WHERE node <> $1 AND NOT lost AND last_seen_ms <= $2
             RETURNING node, generation",
            &[&by, &cutoff],
        )
        .await?;
    // And nodes lost before that still show running jobs: a claim that
    // committed after its node was declared lost (its lease was gone).
    let stragglers = client
        .query(
            "SELECT node, generation FROM nodes
             WHERE node <> $1 AND lost AND EXISTS (SELECT 1 FROM jobs
                 WHERE jobs.node = nodes.node AND jobs.state = 'running')
             FOR UPDATE",
            &[&by],
        )
        .await?;
    let mut lost = Vec::with_capacity(rows.len() + stragglers.len());
    for row in rows.iter().chain(&stragglers) {
        let name: String = row.try_get(0)?;
        let gen: i64 = row.try_get(1)?;
        lost.push((name, gen));
    }
    lost.sort();
    lost.dedup();
    let mut taken = Vec::with_capacity(lost.len());
    for (name, gen) in lost {
        taken.push(take_jobs(client, &name, gen, timeout, requeue, now).await?);
    }
    Ok(taken)
}

/// One lost node's running jobs: queued again (a `requeue` profile whose
/// input was kept, no cancel asked) or interrupted.
async fn take_jobs(
    client: &Tx<'_>,
    name: &str,
    gen: i64,
    timeout: Duration,
    requeue: &[String],
    now: i64,
) -> Result<TakenOver, Failure> {
    let rows = client
        .query(
            "SELECT j.id, j.profile, j.cancel_requested, i.job_id IS NOT NULL
             FROM jobs j LEFT JOIN job_input i ON i.job_id = j.id
             WHERE j.state = 'running' AND j.node = $1
             ORDER BY j.seq FOR UPDATE OF j",
            &[&name],
        )
        .await?;
    let mut taken = TakenOver {
        node: name.to_owned(),
        ..TakenOver::default()
    };
    let mut profiles = BTreeSet::new();
    for row in &rows {
        let id: String = row.try_get(0)?;
        let profile: String = row.try_get(1)?;
        let cancel_requested: bool = row.try_get(2)?;
        let has_input: bool = row.try_get(3)?;
        if requeue.contains(&profile) && has_input && !cancel_requested {
            taken.requeued.push(id);
            profiles.insert(profile);
        } else {
            taken.interrupted.push(id);
        }
    }
    if !taken.requeued.is_empty() {
        // The next run starts from nothing: no node, no start, no output.
        client
            .execute(
                "UPDATE jobs SET state = 'queued', node = NULL, node_gen = $4, warm = NULL,
                                 started_ms = NULL, stdout_len = 0, stderr_len = 0,
                                 truncated = false, cancel_requested = false,
                                 lost_node = $2, lost_gen = $3
                 WHERE id = ANY($1)",
                &[&taken.requeued, &name, &gen, &TAKEN_OVER],
            )
            .await?;
        client
            .execute(
                "DELETE FROM output WHERE job_id = ANY($1)",
                &[&taken.requeued],
            )
            .await?;
        for profile in profiles {
            notify(client, &StoreEvent::Queued { profile }).await?;
        }
    }
    if !taken.interrupted.is_empty() {
        let error = format!(
            "node \"{name}\" was lost (no heartbeat for {})",
            show_duration(timeout)
        );
        client
            .execute(
                "UPDATE jobs SET state = 'interrupted', error = $2, finished_ms = $3,
                                 node_gen = $6, lost_node = $4, lost_gen = $5
                 WHERE id = ANY($1)",
                &[&taken.interrupted, &error, &now, &name, &gen, &TAKEN_OVER],
            )
            .await?;
        wipe_input(client, &taken.interrupted).await?;
        for id in &taken.interrupted {
            notify(client, &StoreEvent::Ended { id: id.clone() }).await?;
        }
    }
    Ok(taken)
}

pub(super) async fn cancels_requested(client: &Tx<'_>, node: &str) -> Result<Vec<String>, Failure> {
    let rows = client
        .query(
            "SELECT id FROM jobs WHERE state = 'running' AND node = $1 AND cancel_requested
             ORDER BY seq",
            &[&node],
        )
        .await?;
    Ok(ids(&rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_as_written() {
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::ZERO), "0s");
    }
}
