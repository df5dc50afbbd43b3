//! The writer thread: the only read-write connection, taking every operation
//! waiting when a commit starts and committing them as one group, a SAVEPOINT
//! each so that one failing rolls back alone. What an operation does is its
//! caller's; this only runs, groups, commits and answers.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{backend, Context};
use crate::clock::Clock;
use crate::StoreError;

/// At most this many operations in one commit (bounds a commit's latency).
pub(super) const MAX_GROUP: usize = 512;

/// What the writer has done since the store was opened (for metrics, and to
/// see how well commits are grouped: `operations / commits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Committed transactions.
    pub commits: u64,
    /// Of those, committed with an fsync (`synchronous=FULL`).
    pub fsync_commits: u64,
    /// Operations in committed transactions (failed ones included: they
    /// rolled back to their savepoint, the rest committed).
    pub operations: u64,
}

/// The writer's counters, read from any thread.
#[derive(Debug, Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    fsync_commits: AtomicU64,
    operations: AtomicU64,
}

impl Counters {
    pub(super) fn read(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            fsync_commits: self.fsync_commits.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
        }
    }
}

/// How far a commit must reach before its operations return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// On the disk (`synchronous=FULL`): jobs and their states.
    Fsync,
    /// In the WAL file (`synchronous=NORMAL`): survives a crash of warmpool and
    /// reaches the disk with the next `Fsync` commit (a job's `finish` at the
    /// latest). For output, which comes in many small appends.
    Deferred,
}

impl Durability {
    pub(super) fn pragma(self) -> &'static str {
        match self {
            Durability::Fsync => "FULL",
            Durability::Deferred => "NORMAL",
        }
    }
}

/// Runs an operation inside its savepoint (`None`: do not run it, the group
/// failed): whether it succeeded, and what to do once the group's commit is known.
pub(super) type Work = Box<dyn FnOnce(Option<&Connection>) -> (bool, Complete) + Send>;
/// Called with the group's commit: `Err(message)` if it failed.
pub(super) type Complete = Box<dyn FnOnce(Result<(), &str>) + Send>;

pub(super) struct WriteOp {
    durability: Durability,
    work: Work,
}

pub(super) enum Op {
    Write(WriteOp),
    /// A WAL checkpoint, which cannot run inside a transaction.
    Checkpoint(oneshot::Sender<Result<(), StoreError>>),
}

/// An operation for the writer, and where its result will come.
#[cfg(test)]
pub(super) fn write_op<T: Send + 'static>(
    durability: Durability,
    action: &'static str,
    clock: Arc<dyn Clock>,
    f: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
) -> (WriteOp, oneshot::Receiver<Result<T, StoreError>>) {
    write_op_then(durability, action, clock, f, |_| {})
}

/// [`write_op`], calling `committed` with the result once it has committed
/// (on the writer thread, before the caller is answered): where events go out.
pub(super) fn write_op_then<T: Send + 'static>(
    durability: Durability,
    action: &'static str,
    clock: Arc<dyn Clock>,
    f: impl FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    committed: impl FnOnce(&T) + Send + 'static,
) -> (WriteOp, oneshot::Receiver<Result<T, StoreError>>) {
    let (reply, answer) = oneshot::channel();
    let work: Work = Box::new(move |db| {
        // `None`: the group failed before this operation could run.
        let result = db.map(|db| f(db, clock.now_ms()));
        let ok = matches!(result, Some(Ok(_)));
        let complete: Complete = Box::new(move |commit| {
            let result = match (result, commit) {
                (Some(result), Ok(())) => {
                    if let Ok(value) = &result {
                        committed(value);
                    }
                    result
                }
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
pub(super) fn run_writer(db: Connection, queue: mpsc::Receiver<Op>, counters: Arc<Counters>) {
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
        commit_group(&db, &mut level, group, &counters);
    }
}

pub(super) fn checkpoint(db: &Connection) -> Result<(), StoreError> {
    let action = "checkpoint the write-ahead log";
    let busy: i64 = db
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .ctx(action)?;
    if busy != 0 {
        return Err(backend(action, &"readers kept it busy; try again"));
    }
    Ok(())
}

/// Commits what was waiting: output appends in one transaction, the others in
/// a second one.
pub(super) fn commit_group(
    db: &Connection,
    level: &mut Durability,
    group: Vec<WriteOp>,
    counters: &Counters,
) {
    // The operations of a group were all in flight at once (each caller waits
    // for its own), so any order among them is one the callers could have seen.
    // Appends commit first without an fsync and are answered at once, instead
    // of waiting for the fsync of durable operations beside them.
    let (deferred, durable): (Vec<WriteOp>, Vec<WriteOp>) = group
        .into_iter()
        .partition(|op| op.durability == Durability::Deferred);
    if !deferred.is_empty() {
        commit(db, level, Durability::Deferred, deferred, counters);
    }
    if !durable.is_empty() {
        commit(db, level, Durability::Fsync, durable, counters);
    }
}

/// Commits `group` in one transaction at `needed`, a savepoint per operation.
fn commit(
    db: &Connection,
    level: &mut Durability,
    needed: Durability,
    group: Vec<WriteOp>,
    counters: &Counters,
) {
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
        // A panic in an operation (a bug) must not take the writer, and with it
        // the whole store, down: roll it back; its caller sees the store closed.
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| (op.work)(Some(db))));
        let ok = match ran {
            Ok((ok, complete)) => {
                completes.push(complete);
                ok
            }
            Err(_) => {
                tracing::error!("a job store operation panicked; it was rolled back");
                false
            }
        };
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
    if outcome.is_ok() {
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters
            .operations
            .fetch_add(completes.len() as u64, Ordering::Relaxed);
        if needed == Durability::Fsync {
            counters.fsync_commits.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Err(message) = &outcome {
        tracing::warn!(
            operations = completes.len(),
            "a job store commit failed: {message}"
        );
        if !db.is_autocommit() {
            let _ = run(db, "ROLLBACK");
        }
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

pub(super) fn run(db: &Connection, sql: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql)?.execute([]).map(|_| ())
}
