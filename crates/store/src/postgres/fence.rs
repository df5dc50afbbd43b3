//! Fencing: which writes of a node are refused once its jobs are no longer its
//! own. [`lock_checked`] reads the job's row (locked) and this store's node's
//! row inside the write's transaction; [`check`] (pure) decides. The rules
//! are the trait's (`JobStore::join`), as the embedded backend has them.
//!
//! A store remembers the node and generation of its last `join` ([`Joined`]).
//! After a join, a write (`append_output`, `finish`) of job J through that
//! store is refused when:
//! 1. this store's lease is gone: its node's row no longer has the store's
//!    generation, or says lost (the node was declared lost, or the same name
//!    joined again through another store) — then every write is refused,
//!    even for a queued job or an unknown one;
//! 2. or J carries a generation that is not this join's: another node's job,
//!    a job of this node's earlier (or later) join, or a job `take_over`
//!    interrupted or queued again (it sets `node_gen = -1`, which no join
//!    has), whatever J's state.
//!
//! A job carrying no generation (made running before any join, or on a node
//! name the store did not join as, or never started) is otherwise not fenced.
//! Before any join nothing is fenced.

use tokio_postgres::Row;

use super::listen::Tx;
use super::pool::Failure;
use super::rows::{owner, value, Owner, OWNER_COLUMNS};
use crate::StoreError;

/// The generation `take_over` gives the jobs it interrupts or queues again:
/// no join has it (generations start at 1), so no node writes them until they
/// are claimed or started again.
pub(super) const TAKEN_OVER: i64 = -1;

/// The node and generation of a store's last `join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Joined {
    pub node: String,
    pub generation: i64,
}

/// `Err(Fenced)` if this store (joined as `joined`, `None` before any join)
/// must not write for job `id`. `job`: the job's row, `None` if unknown;
/// `lease`: the joined node's row now, `(generation, lost)`, `None` if absent.
pub(super) fn check(
    id: &str,
    joined: Option<&Joined>,
    lease: Option<(i64, bool)>,
    job: Option<&Owner>,
) -> Result<(), StoreError> {
    let Some(joined) = joined else {
        return Ok(());
    };
    let fenced = || StoreError::Fenced { id: id.to_owned() };
    if lease != Some((joined.generation, false)) {
        return Err(fenced());
    }
    if let Some(Owner {
        node,
        node_gen: Some(gen),
    }) = job
    {
        if node.as_deref() != Some(joined.node.as_str()) || *gen != joined.generation {
            return Err(fenced());
        }
    }
    Ok(())
}

/// Locks job `id`'s row and refuses (`Fenced`) as [`check`] says; the row
/// (`node, node_gen` then `columns`, from index 2), `None` for an unknown job.
/// Called first in the write's transaction, which then holds the lock to its
/// end: a `take_over` or `join` that changes the job waits for this write, or
/// this write waited for it. The node's row is read by a statement of its
/// own, after the lock is held: its snapshot (READ COMMITTED) then sees
/// whatever committed while this write waited, e.g. the node declared lost.
pub(super) async fn lock_checked(
    client: &Tx<'_>,
    id: &str,
    joined: Option<&Joined>,
    columns: &str,
) -> Result<Option<Row>, Failure> {
    let sql = format!("SELECT {OWNER_COLUMNS}{columns} FROM jobs WHERE id = $1 FOR UPDATE");
    let row = client.query_opt(&sql, &[&id]).await?;
    let job = row.as_ref().map(|row| owner(id, row)).transpose()?;
    let lease = match joined {
        None => None,
        Some(joined) => {
            let node = client
                .query_opt(
                    "SELECT generation, lost FROM nodes WHERE node = $1",
                    &[&joined.node],
                )
                .await?;
            node.map(|row| -> Result<(i64, bool), StoreError> {
                let corrupt = |detail| StoreError::Corrupt {
                    id: "<a node's row>".into(),
                    detail,
                };
                Ok((
                    value(&row, 0).map_err(corrupt)?,
                    value(&row, 1).map_err(corrupt)?,
                ))
            })
            .transpose()?
        }
    };
    check(id, joined, lease, job.as_ref())?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(node: Option<&str>, gen: Option<i64>) -> Owner {
        Owner {
            node: node.map(str::to_owned),
            node_gen: gen,
        }
    }

    fn joined(node: &str, generation: i64) -> Joined {
        Joined {
            node: node.into(),
            generation,
        }
    }

    #[test]
    fn the_rules() {
        let fenced =
            |j: Option<&Joined>, lease, o: Option<&Owner>| check("j", j, lease, o).is_err();
        let a1 = joined("a", 1);
        let a2 = joined("a", 2);
        let live1 = Some((1, false));
        let live2 = Some((2, false));
        // Before any join nothing is fenced, whatever the job or the node rows.
        assert!(!fenced(None, None, Some(&owner(Some("a"), Some(1)))));
        assert!(!fenced(None, None, Some(&owner(Some("b"), Some(7)))));
        assert!(!fenced(None, None, Some(&owner(None, Some(TAKEN_OVER)))));
        // Its own job of this join: fine; of another generation: fenced.
        assert!(!fenced(Some(&a1), live1, Some(&owner(Some("a"), Some(1)))));
        assert!(fenced(Some(&a2), live2, Some(&owner(Some("a"), Some(1)))));
        assert!(fenced(Some(&a1), live1, Some(&owner(Some("a"), Some(2)))));
        // Carrying no generation (before the join, another node name, never
        // started): not fenced while the lease holds.
        assert!(!fenced(Some(&a1), live1, Some(&owner(Some("a"), None))));
        assert!(!fenced(Some(&a1), live1, Some(&owner(Some("b"), None))));
        assert!(!fenced(Some(&a1), live1, Some(&owner(None, None))));
        assert!(!fenced(Some(&a1), live1, None), "unknown: not fenced");
        // Another node's job: that node's alone (the state is not looked at).
        assert!(fenced(Some(&a1), live1, Some(&owner(Some("b"), Some(1)))));
        assert!(fenced(Some(&a1), live1, Some(&owner(Some("b"), Some(7)))));
        // Taken over (interrupted: node kept; queued again: node cleared):
        // nobody's, even after a new join.
        assert!(fenced(
            Some(&a1),
            live1,
            Some(&owner(Some("a"), Some(TAKEN_OVER)))
        ));
        assert!(fenced(
            Some(&a2),
            live2,
            Some(&owner(None, Some(TAKEN_OVER)))
        ));
        // Claimed again by a node: that run's generation.
        assert!(!fenced(Some(&a2), live2, Some(&owner(Some("a"), Some(2)))));
        // The lease is gone (declared lost; the name joined again elsewhere;
        // no row): every write is refused, even of a job with no generation
        // or an unknown one.
        for lease in [Some((1, true)), Some((2, false)), None] {
            assert!(fenced(Some(&a1), lease, Some(&owner(Some("a"), Some(1)))));
            assert!(fenced(Some(&a1), lease, Some(&owner(None, None))));
            assert!(fenced(Some(&a1), lease, None));
        }
    }
}
