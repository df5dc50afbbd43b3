//! Admission: how many jobs of a profile may wait for a container on this node
//! (what the pool can still start plus its `max_queue`); beyond that a submit is
//! refused with 429. A place is held by a [`Ticket`] and given back when the
//! ticket drops, whatever path the job takes. Counts only; no policy of its own.

use crate::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Admission {
    waiting: Mutex<HashMap<String, usize>>,
}

/// A place taken for one job until it holds a container (or ends).
pub struct Ticket {
    admission: Arc<Admission>,
    profile: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut w = lock(&self.admission.waiting);
        if let Some(n) = w.get_mut(&self.profile) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Admission {
    /// Take a place if fewer than `room` jobs of `profile` wait; else how many wait.
    pub fn admit(self: &Arc<Self>, profile: &str, room: usize) -> Result<Ticket, usize> {
        let mut w = lock(&self.waiting);
        let n = w.entry(profile.to_string()).or_default();
        if *n >= room {
            return Err(*n);
        }
        *n += 1;
        Ok(Ticket {
            admission: self.clone(),
            profile: profile.to_string(),
        })
    }

    /// A place that is always given (jobs already stored: recovered, deliveries).
    pub fn force(self: &Arc<Self>, profile: &str) -> Ticket {
        let mut w = lock(&self.waiting);
        *w.entry(profile.to_string()).or_default() += 1;
        Ticket {
            admission: self.clone(),
            profile: profile.to_string(),
        }
    }

    #[cfg(test)]
    fn waiting(&self, profile: &str) -> usize {
        let w = lock(&self.waiting);
        w.get(profile).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_come_back_when_tickets_drop() {
        let a = Arc::new(Admission::default());
        let t1 = a.admit("p", 2).expect("first");
        let t2 = a.admit("p", 2).expect("second");
        assert_eq!(a.admit("p", 2).err(), Some(2));
        assert!(a.admit("q", 1).is_ok(), "per profile");
        drop(t1);
        let _t3 = a.admit("p", 2).expect("a place came back");
        drop(t2);
        let forced = a.force("p");
        assert_eq!(a.waiting("p"), 2);
        drop(forced);
        assert_eq!(a.waiting("p"), 1);
    }
}
