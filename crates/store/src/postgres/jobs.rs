//! One job's statements (insert, start, finish, cancel, reads, recover, prune,
//! deliveries), each run inside the caller's transaction. The conditional
//! updates are built from `warmpool_core::lifecycle`'s rules, as SQLite's are.

use std::sync::{LazyLock, Mutex, PoisonError};

use super::listen::Tx;
use tokio_postgres::types::ToSql;
use warmpool_core::lifecycle::{StoredCancel, CANCELLED_QUEUED_ERROR};

use super::fence::{lock_checked, Joined};
use super::listen::notify;
use super::pool::Failure;
use super::rows::{decode_json, ids, record, unsigned, value, RECORD_COLUMNS};
use crate::chunks::states_where;
use crate::ids::new_id;
use crate::{
    CancelOutcome, Delivery, Finish, JobRecord, JobState, ListQuery, NewJob, QueuedJob, Recovered,
    StoreError, StoreEvent,
};

static START_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = 'running', node = $2, node_gen = $3, warm = $4,
                         started_ms = $5, keep_input = false
         WHERE id = $1 AND state IN ({})",
        states_where(JobState::can_start)
    )
});

static FINISH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = $2, exit_code = $3, signal = $4, error = $5,
                         truncated = truncated OR $6, finished_ms = $7
         WHERE id = $1 AND state IN ({}) RETURNING {RECORD_COLUMNS}",
        states_where(JobState::can_finish)
    )
});

static FINAL_STATES: LazyLock<String> = LazyLock::new(|| states_where(JobState::is_final));

fn encode_error(e: serde_json::Error) -> StoreError {
    StoreError::Backend {
        action: "encode a new job",
        message: e.to_string(),
    }
}

/// A new job's columns, encoded once; its id chosen once, before the first
/// attempt, so that a retried insert recognises its own committed row.
pub(super) struct NewRow {
    id: Mutex<String>,
    profile: String,
    args: String,
    /// `None`: the input is never stored (a job inserted running).
    input: Option<(String, Option<Vec<u8>>)>,
    timeout_ms: Option<i64>,
    created_ms: i64,
}

/// Running on `node` from the insert: (node, its generation here, warm).
pub(super) type StartedOn<'a> = (&'a str, Option<i64>, bool);

impl NewRow {
    pub(super) fn encode(job: &NewJob, with_input: bool, now: i64) -> Result<NewRow, StoreError> {
        let input = if with_input {
            let env = serde_json::to_string(&job.env).map_err(encode_error)?;
            Some((env, job.stdin.clone()))
        } else {
            None
        };
        Ok(NewRow {
            id: Mutex::new(new_id(now)),
            profile: job.profile.clone(),
            args: serde_json::to_string(&job.args).map_err(encode_error)?,
            input,
            timeout_ms: job.timeout_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            created_ms: now,
        })
    }

    /// The same row under another id (tests: an id taken by another job).
    #[cfg(test)]
    pub(super) fn with_id(self, id: &str) -> NewRow {
        *self.id.lock().unwrap_or_else(PoisonError::into_inner) = id.to_owned();
        self
    }

    pub(super) fn id(&self) -> String {
        self.id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn redraw(&self) -> String {
        let id = new_id(self.created_ms);
        *self.id.lock().unwrap_or_else(PoisonError::into_inner) = id.clone();
        id
    }

    /// Inserts the job (and its input); its id. `retried`: an earlier attempt
    /// may have committed, so a row with this id and these values is ours.
    pub(super) async fn insert(
        &self,
        client: &Tx<'_>,
        started: Option<StartedOn<'_>>,
        retried: bool,
    ) -> Result<String, Failure> {
        let (state, node, node_gen, warm, started_ms) = match started {
            Some((node, gen, warm)) => (
                "running",
                Some(node),
                gen,
                Some(warm),
                Some(self.created_ms),
            ),
            None => ("queued", None, None, None, None),
        };
        let mut id = self.id();
        // A clash needs two jobs in the same millisecond drawing the same 32
        // random bits; draw again rather than fail the request.
        for _ in 0..8 {
            let inserted = client
                .execute(
                    "INSERT INTO jobs (id, profile, state, args, timeout_ms, created_ms,
                                       node, node_gen, warm, started_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &id,
                        &self.profile,
                        &state,
                        &self.args,
                        &self.timeout_ms,
                        &self.created_ms,
                        &node,
                        &node_gen,
                        &warm,
                        &started_ms,
                    ],
                )
                .await?;
            if inserted == 1 {
                if let Some((env, stdin)) = &self.input {
                    client
                        .execute(
                            "INSERT INTO job_input (job_id, env, stdin) VALUES ($1, $2, $3)",
                            &[&id, env, stdin],
                        )
                        .await?;
                }
                return Ok(id);
            }
            if retried && self.is_stored_as(client, &id).await? {
                return Ok(id);
            }
            id = self.redraw();
        }
        Err(StoreError::Backend {
            action: "store a new job",
            message: "8 new job ids in a row were taken; try again".into(),
        }
        .into())
    }

    /// Whether the row stored under `id` is this job (an earlier attempt's).
    async fn is_stored_as(&self, client: &Tx<'_>, id: &str) -> Result<bool, Failure> {
        let row = client
            .query_opt(
                "SELECT profile, args, created_ms FROM jobs WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.is_some_and(|row| {
            value::<String>(&row, 0).is_ok_and(|p| p == self.profile)
                && value::<String>(&row, 1).is_ok_and(|a| a == self.args)
                && value::<i64>(&row, 2).is_ok_and(|c| c == self.created_ms)
        }))
    }
}

/// Inserts a delivery's job; `None` if the delivery was seen before.
pub(super) async fn insert_for_delivery(
    client: &Tx<'_>,
    row: &NewRow,
    delivery: &str,
    meta: &str,
    retried: bool,
) -> Result<Option<String>, Failure> {
    // The delivery first: a concurrent insert of the same delivery waits here
    // for the other transaction, then finds it (its job_id is checked at commit).
    let id = row.id();
    let inserted = client
        .execute(
            "INSERT INTO deliveries (id, job_id, meta, received_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            &[&delivery, &id, &meta, &row.created_ms],
        )
        .await?;
    if inserted == 0 {
        if retried {
            let seen = client
                .query_opt("SELECT job_id FROM deliveries WHERE id = $1", &[&delivery])
                .await?;
            if seen.is_some_and(|r| value::<String>(&r, 0).is_ok_and(|j| j == id)) {
                return Ok(Some(id));
            }
        }
        return Ok(None);
    }
    let stored = row.insert(client, None, retried).await?;
    if stored != id {
        client
            .execute(
                "UPDATE deliveries SET job_id = $2 WHERE id = $1",
                &[&delivery, &stored],
            )
            .await?;
    }
    notify(
        client,
        &StoreEvent::Queued {
            profile: row.profile.clone(),
        },
    )
    .await?;
    Ok(Some(stored))
}

pub(super) async fn queued(client: &Tx<'_>, id: &str) -> Result<Option<QueuedJob>, Failure> {
    let row = client
        .query_opt(
            "SELECT j.profile, j.args, j.timeout_ms, i.env, i.stdin
             FROM jobs j LEFT JOIN job_input i ON i.job_id = j.id
             WHERE j.id = $1 AND j.state = 'queued'",
            &[&id],
        )
        .await?;
    match row {
        Some(row) => Ok(Some(queued_job(id, &row, 0)?)),
        None => Ok(None),
    }
}

/// A queued job from `profile, args, timeout_ms, env, stdin` at `first`.
pub(super) fn queued_job(
    id: &str,
    row: &tokio_postgres::Row,
    first: usize,
) -> Result<QueuedJob, StoreError> {
    let read = || -> Result<QueuedJob, String> {
        let args: String = value(row, first + 1)?;
        let timeout_ms: Option<i64> = value(row, first + 2)?;
        let env: Option<String> = value(row, first + 3)?;
        let env = env.ok_or("a queued job has no stored input")?;
        Ok(QueuedJob {
            id: id.to_owned(),
            job: NewJob {
                profile: value(row, first)?,
                args: decode_json(&args, "args")?,
                env: decode_json(&env, "env")?,
                stdin: value(row, first + 4)?,
                timeout_ms: timeout_ms.map(|t| unsigned(t, "timeout_ms")).transpose()?,
            },
        })
    };
    read().map_err(|detail| StoreError::Corrupt {
        id: id.to_owned(),
        detail,
    })
}

pub(super) async fn wipe_input(client: &Tx<'_>, ids: &[String]) -> Result<(), Failure> {
    client
        .execute("DELETE FROM job_input WHERE job_id = ANY($1)", &[&ids])
        .await?;
    Ok(())
}

pub(super) async fn start(
    client: &Tx<'_>,
    id: &str,
    (node, gen, warm): StartedOn<'_>,
    now: i64,
) -> Result<bool, Failure> {
    let changed = client
        .execute(START_SQL.as_str(), &[&id, &node, &gen, &warm, &now])
        .await?;
    if changed == 0 {
        return Ok(false);
    }
    wipe_input(client, &[id.to_owned()]).await?;
    Ok(true)
}

pub(super) async fn finish(
    client: &Tx<'_>,
    id: &str,
    finish: &Finish,
    now: i64,
    joined: Option<&Joined>,
) -> Result<Option<JobRecord>, Failure> {
    if lock_checked(client, id, joined, "").await?.is_none() {
        return Ok(None);
    }
    let row = client
        .query_opt(
            FINISH_SQL.as_str(),
            &[
                &id,
                &finish.state.as_str(),
                &finish.exit_code,
                &finish.signal,
                &finish.error,
                &finish.truncated,
                &now,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    wipe_input(client, &[id.to_owned()]).await?;
    notify(client, &StoreEvent::Ended { id: id.to_owned() }).await?;
    Ok(Some(record(&row)?))
}

pub(super) async fn request_cancel(
    client: &Tx<'_>,
    id: &str,
    now: i64,
) -> Result<CancelOutcome, Failure> {
    let Some(row) = client
        .query_opt(
            "SELECT state, node FROM jobs WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
    else {
        return Ok(CancelOutcome::NotFound);
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        id: id.to_owned(),
        detail,
    };
    let state: String = value(&row, 0).map_err(corrupt)?;
    let state = state
        .parse::<JobState>()
        .map_err(|e| corrupt(format!("state: {e}")))?;
    let node: Option<String> = value(&row, 1).map_err(corrupt)?;
    match state.on_cancel() {
        StoredCancel::EndNow => {
            client
                .execute(
                    "UPDATE jobs SET state = $2, error = $3, finished_ms = $4 WHERE id = $1",
                    &[
                        &id,
                        &JobState::Cancelled.as_str(),
                        &CANCELLED_QUEUED_ERROR,
                        &now,
                    ],
                )
                .await?;
            wipe_input(client, &[id.to_owned()]).await?;
            notify(client, &StoreEvent::Ended { id: id.to_owned() }).await?;
            Ok(CancelOutcome::Cancelled)
        }
        StoredCancel::AskRunner => {
            client
                .execute(
                    "UPDATE jobs SET cancel_requested = true WHERE id = $1",
                    &[&id],
                )
                .await?;
            let event = StoreEvent::CancelRequested {
                id: id.to_owned(),
                node: node.unwrap_or_default(),
            };
            notify(client, &event).await?;
            Ok(CancelOutcome::Requested)
        }
        StoredCancel::AlreadyEnded(state) => Ok(CancelOutcome::AlreadyEnded(state)),
    }
}

pub(super) async fn get(client: &Tx<'_>, id: &str) -> Result<Option<JobRecord>, Failure> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = $1");
    match client.query_opt(&sql, &[&id]).await? {
        Some(row) => Ok(Some(record(&row)?)),
        None => Ok(None),
    }
}

pub(super) async fn list(client: &Tx<'_>, query: &ListQuery) -> Result<Vec<JobRecord>, Failure> {
    let state = query.state.map(JobState::as_str);
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut conditions = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(state) = &state {
        params.push(state);
        conditions.push(format!("state = ${}", params.len()));
    }
    if let Some(profile) = &query.profile {
        params.push(profile);
        conditions.push(format!("profile = ${}", params.len()));
    }
    params.push(&limit);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM jobs {filter} ORDER BY seq DESC LIMIT ${}",
        params.len()
    );
    let rows = client.query(&sql, &params).await?;
    Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
}

pub(super) async fn recover(
    client: &Tx<'_>,
    node: &str,
    error: &str,
    now: i64,
) -> Result<Recovered, Failure> {
    // NULL: started without a node name (never, in this backend; kept as SQLite).
    let rows = client
        .query(
            "WITH ended AS (
                 UPDATE jobs SET state = $2, error = $3, finished_ms = $4
                 WHERE state = 'running' AND (node = $1 OR node IS NULL)
                 RETURNING id, seq)
             SELECT id FROM ended ORDER BY seq",
            &[&node, &JobState::Interrupted.as_str(), &error, &now],
        )
        .await?;
    let interrupted = ids(&rows)?;
    wipe_input(client, &interrupted).await?;
    for id in &interrupted {
        notify(client, &StoreEvent::Ended { id: id.clone() }).await?;
    }
    let rows = client
        .query(
            "SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq",
            &[],
        )
        .await?;
    Ok(Recovered {
        queued: ids(&rows)?,
        interrupted,
    })
}

pub(super) async fn prune(client: &Tx<'_>, cutoff: i64) -> Result<usize, Failure> {
    // Input, output and deliveries go with their job (ON DELETE CASCADE).
    let sql = format!(
        "DELETE FROM jobs WHERE finished_ms IS NOT NULL AND finished_ms <= $1 \
         AND state IN ({})",
        *FINAL_STATES
    );
    let deleted = client.execute(&sql, &[&cutoff]).await?;
    Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
}

pub(super) async fn unanswered_deliveries(client: &Tx<'_>) -> Result<Vec<Delivery>, Failure> {
    let rows = client
        .query(
            "SELECT id, job_id, meta FROM deliveries WHERE NOT answered
             ORDER BY received_ms, seq",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let read = || -> Result<Delivery, String> {
            Ok(Delivery {
                id: value(row, 0)?,
                job_id: value(row, 1)?,
                meta: value(row, 2)?,
            })
        };
        out.push(read().map_err(|detail| StoreError::Corrupt {
            id: "<a delivery's job>".into(),
            detail,
        })?);
    }
    Ok(out)
}

pub(super) async fn mark_answered(client: &Tx<'_>, delivery: &str) -> Result<(), Failure> {
    client
        .execute(
            "UPDATE deliveries SET answered = true WHERE id = $1",
            &[&delivery],
        )
        .await?;
    Ok(())
}
