//! Fencing: which writes of a node are refused once its jobs are no longer its
//! own. Pure: the store reads a job's [`Owner`] (row-locked) and asks here.
//!
//! A store remembers, per node name, the generation of its last `join` as
//! that node (`Generations`). A write (`append_output`, `finish`) of job J
//! through that store is refused when:
//! 1. J was taken over from a node N this store joined as, and the store's
//!    generation of N is still the one N had when it was declared lost (the
//!    node has not joined again since; after a new `join` its containers are
//!    gone, and N may legitimately finish a queued job requeued from it),
//!    unless J runs again on a node this store joined as, with that node's
//!    current generation (one store acting as two nodes);
//! 2. or J runs on a node N this store joined as, with another generation of N
//!    than the store's (N joined again since it started J), or the store's
//!    generation of N is no longer N's in the `nodes` table (N was declared
//!    lost, or the same name joined again through another store: a new
//!    process).
//!
//! 3. or J carries a generation of a node this store did not join as (another
//!    node's job, in any state).
//!
//! A job made running before any join carries no generation and is never
//! fenced by rules 2 and 3, as the trait says ("before any join, nothing is
//! fenced").

use std::collections::HashMap;

use super::rows::Owner;
use crate::StoreError;

/// Node name → the generation of this store's last `join` as that node.
pub(super) type Generations = HashMap<String, i64>;

/// `Err(Fenced)` if the writer (this store) must not write for this job.
pub(super) fn check(id: &str, owner: &Owner, mine: &Generations) -> Result<(), StoreError> {
    let fenced = || StoreError::Fenced { id: id.to_owned() };
    if let (Some(lost), Some(lost_gen)) = (&owner.lost_node, owner.lost_gen) {
        // Run again by a node this store joined as (one store acting as two
        // nodes, as tests do): that run's writes are its own.
        let runs_again_here = owner.state == "running"
            && owner.node_gen.is_some()
            && owner
                .node
                .as_ref()
                .is_some_and(|n| mine.get(n).copied() == owner.node_gen);
        if mine.get(lost) == Some(&lost_gen) && !runs_again_here {
            return Err(fenced());
        }
    }
    // A joined store writes only for the nodes it joined as: a job carrying
    // another node's lease is that node's, whatever its state.
    if let (Some(node), Some(_)) = (&owner.node, owner.node_gen) {
        if !mine.is_empty() && !mine.contains_key(node) {
            return Err(fenced());
        }
    }
    if owner.state == "running" {
        if let (Some(node), Some(gen)) = (&owner.node, owner.node_gen) {
            if let Some(&current) = mine.get(node) {
                // The job's generation is not this store's, or this store's
                // is no longer the node's (it was declared lost, or the same
                // name joined again through another store).
                let lease_gone = owner.node_now != Some((current, false));
                if current != gen || lease_gone {
                    return Err(fenced());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(
        state: &str,
        node: Option<&str>,
        gen: Option<i64>,
        lost: Option<(&str, i64)>,
    ) -> Owner {
        Owner {
            state: state.into(),
            node: node.map(str::to_owned),
            node_gen: gen,
            lost_node: lost.map(|(n, _)| n.to_owned()),
            lost_gen: lost.map(|(_, g)| g),
            node_now: node.zip(gen).map(|(_, g)| (g, false)),
        }
    }

    fn gens(pairs: &[(&str, i64)]) -> Generations {
        pairs.iter().map(|(n, g)| ((*n).to_owned(), *g)).collect()
    }

    #[test]
    fn the_rules() {
        let fenced = |o: &Owner, g: &Generations| check("j", o, g).is_err();
        let a1 = gens(&[("a", 1)]);
        let a2 = gens(&[("a", 2)]);
        // Before any join nothing is fenced.
        assert!(!fenced(
            &owner("running", Some("a"), Some(1), None),
            &gens(&[])
        ));
        assert!(!fenced(
            &owner("interrupted", Some("a"), Some(1), Some(("a", 1))),
            &gens(&[])
        ));
        // Its own running job, same generation: fine; another generation: fenced.
        assert!(!fenced(&owner("running", Some("a"), Some(1), None), &a1));
        assert!(fenced(&owner("running", Some("a"), Some(1), None), &a2));
        // Started before the join (no generation): not fenced.
        assert!(!fenced(&owner("running", Some("a"), None, None), &a1));
        // Another node's job, running or ended: that node's alone.
        assert!(fenced(&owner("running", Some("b"), Some(7), None), &a1));
        assert!(fenced(&owner("succeeded", Some("b"), Some(7), None), &a1));
        // A job started with no lease (no generation) is anyone's.
        assert!(!fenced(&owner("running", Some("b"), None, None), &a1));
        // Taken over: interrupted, requeued, rerun elsewhere: fenced while the
        // store has not joined again.
        assert!(fenced(
            &owner("interrupted", Some("a"), Some(1), Some(("a", 1))),
            &a1
        ));
        assert!(fenced(&owner("queued", None, None, Some(("a", 1))), &a1));
        assert!(fenced(
            &owner("running", Some("b"), Some(3), Some(("a", 1))),
            &a1
        ));
        // After a new join, the requeued job may be ended or run again here.
        assert!(!fenced(&owner("queued", None, None, Some(("a", 1))), &a2));
        assert!(!fenced(
            &owner("running", Some("a"), Some(2), Some(("a", 1))),
            &a2
        ));
        // One store as two nodes: b runs the job taken from a.
        let both = gens(&[("a", 1), ("b", 4)]);
        assert!(!fenced(
            &owner("running", Some("b"), Some(4), Some(("a", 1))),
            &both
        ));
        assert!(fenced(
            &owner("interrupted", Some("a"), Some(1), Some(("a", 1))),
            &both
        ));
        // The node's row says another generation (a new process joined as a)
        // or lost: the stale store is fenced.
        let mut stale = owner("running", Some("a"), Some(1), None);
        stale.node_now = Some((2, false));
        assert!(fenced(&stale, &a1));
        stale.node_now = Some((1, true));
        assert!(fenced(&stale, &a1));
        // An ended job of an old generation: finish answers "ended", not fenced.
        assert!(!fenced(&owner("succeeded", Some("a"), Some(1), None), &a2));
    }
}
