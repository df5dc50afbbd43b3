//! The pool's rules, once, as pure code: given what a pool holds (its parked
//! containers, parks in flight, busy slots, live waiters), its limits and its idle
//! target, say what a claim, a reconcile, a freed slot or a finished park does. No
//! I/O, no clock, no tokio: time comes in as a `Duration` since the pool's epoch.
//! Two drivers execute these rules and must not re-decide them: `pool.rs` against
//! the engine and `sim.rs` on simulated time. How demand sets the target is
//! `sizing.rs`'s; how a container is parked is `warmpool-exec`'s.

use std::time::Duration;
use warmpool_core::Profile;

/// Parks the pool runs side by side: the engine parks no faster beyond about four
/// (measured: 3.3 / 4.5 / 5.7 / 5.6 parks/s at 1 / 2 / 4 / 8), and fewer leaves
/// room for cold starts.
pub const MAX_PARALLEL_PARKS: usize = 4;
/// How often a pool reconciles when nothing wakes it.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How long a woken pool waits before it reconciles: the hand-over that woke it
/// goes first (a park started in the same instant competes with it for the engine
/// and the CPU), and the wakes of a burst make one reconcile.
pub const REPLENISH_DELAY: Duration = Duration::from_millis(15);
/// First pause after a failed park; it doubles per failure in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest pause after failed parks.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A profile's limits, as the rules apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Parked + parking + cold starts + busy, at most.
    pub max_containers: usize,
    /// Claims waiting for a container, at most (beyond the parks in flight).
    pub max_queue: usize,
    /// A queued claim fails after this.
    pub max_wait: Duration,
    /// A parked container older than this is replaced.
    pub max_age: Duration,
    /// The pool's own parks in flight, at most.
    pub max_parallel_parks: usize,
}

impl Limits {
    /// The limits of `profile`'s keys, with [`MAX_PARALLEL_PARKS`].
    pub fn of(profile: &Profile) -> Limits {
        Limits {
            max_containers: profile.max_containers,
            max_queue: profile.max_queue,
            max_wait: profile.max_wait,
            max_age: profile.max_age,
            max_parallel_parks: MAX_PARALLEL_PARKS,
        }
    }
}

/// One parked container, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleView {
    /// When it was parked, since the pool's epoch.
    pub parked_at: Duration,
    /// Its image is still the one the profile's image name points to.
    pub image_current: bool,
}

impl IdleView {
    /// Why it must go whatever the demand, if it must.
    fn expired(&self, now: Duration, limits: &Limits) -> Option<RemoveReason> {
        if !self.image_current {
            Some(RemoveReason::StaleImage)
        } else if now.saturating_sub(self.parked_at) > limits.max_age {
            Some(RemoveReason::TooOld)
        } else {
            None
        }
    }
}

/// What a pool holds besides its parked containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Parks in flight for the pool (for the idle target or a waiter).
    pub parking: usize,
    /// Parks in flight for claims that found nothing parked (cold starts).
    pub cold: usize,
    /// Containers handed to a job and not yet given back.
    pub busy: usize,
    /// Queued claims whose caller still waits.
    pub waiters: usize,
    /// Of the busy ones, containers whose gate is resetting them after a job
    /// (reuse): parked again in a few milliseconds.
    pub resetting: usize,
    /// Of the busy ones, containers that come back after their job (reuse,
    /// with jobs left; the resetting ones included).
    pub returning: usize,
}

impl Counts {
    /// Every container of the pool, with `idle` parked ones.
    pub fn total(&self, idle: usize) -> usize {
        idle + self.parking + self.cold + self.busy
    }
}

/// Why a parked container is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its image is no longer the profile's (the tag moved): counted `replaced`.
    StaleImage,
    /// Parked longer than `max_age`: counted `replaced`.
    TooOld,
    /// Above the idle target: counted `shrunk`.
    Surplus,
}

/// What a claim does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAction {
    /// Take the front parked container (after the removals), a warm start.
    Hit,
    /// Park a container of its own now, on its own time.
    Cold,
    /// Wait, first come first served, for the next container that parks or slot
    /// that frees.
    Queue,
    /// Refused at once: the queue is full.
    Full { queued: usize },
}

/// A claim's decision: the first `remove` parked containers go (stale image or
/// too old), then `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimPlan {
    pub remove: usize,
    pub action: ClaimAction,
}

/// A claim arrives at `now`. `idle` is the pool's parked containers, longest parked
/// first: the claim takes the longest-parked one that is still good, removing the
/// stale or aged ones it passes. With none, it starts its own container if
/// `max_containers` allows and no earlier claim waits (queued claims come first),
/// else it queues, unless `max_queue` claims wait already beyond the parks in
/// flight (each of which will serve a waiter soon).
pub fn claim(
    now: Duration,
    idle: impl IntoIterator<Item = IdleView>,
    counts: Counts,
    limits: &Limits,
) -> ClaimPlan {
    let mut remove = 0;
    for container in idle {
        if container.expired(now, limits).is_some() {
            remove += 1;
            continue;
        }
        return ClaimPlan {
            remove,
            action: ClaimAction::Hit,
        };
    }
    // Every parked container (if any) is removed: none is left to count. A
    // container being reset comes back sooner than one started now: wait for it.
    let action = if counts.waiters == 0
        && counts.resetting == 0
        && counts.total(0) < limits.max_containers
    {
        ClaimAction::Cold
    } else if counts.waiters >= limits.max_queue + counts.parking + counts.resetting {
        ClaimAction::Full {
            queued: counts.waiters,
        }
    } else {
        ClaimAction::Queue
    };
    ClaimPlan { remove, action }
}

/// One parked container to remove: its index in the list the reconcile was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    pub index: usize,
    pub reason: RemoveReason,
}

/// A reconcile's decision: remove these parked containers (indices ascending), and
/// start `park` parks for the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    pub remove: Vec<Removal>,
    pub park: usize,
}

/// Compare what is parked with what should be. Parked containers of a stale image
/// or older than `max_age` go; while nobody waits, parked containers above `target`
/// (counting the pool's parks in flight) go too, the longest parked first. Then
/// parks start for `target` plus the waiters, within `max_containers` and
/// `max_parallel_parks`, and none while `backing_off`.
pub fn reconcile(
    now: Duration,
    idle: impl IntoIterator<Item = IdleView>,
    counts: Counts,
    target: usize,
    backing_off: bool,
    limits: &Limits,
) -> ReconcilePlan {
    let mut remove = Vec::new();
    let mut fresh = Vec::new();
    for (index, container) in idle.into_iter().enumerate() {
        match container.expired(now, limits) {
            Some(reason) => remove.push(Removal { index, reason }),
            None => fresh.push(index),
        }
    }
    // A waiter would take any parked container: nothing is surplus while one
    // waits. Beside the target, one parked container per busy one that comes
    // back (reuse) is kept: its job's end returns it, and removing a container
    // for it would only cost a park when the next job comes.
    let surplus = if counts.waiters == 0 {
        (fresh.len() + counts.parking)
            .saturating_sub(target + counts.returning)
            .min(fresh.len())
    } else {
        0
    };
    remove.extend(fresh.iter().take(surplus).map(|&index| Removal {
        index,
        reason: RemoveReason::Surplus,
    }));
    remove.sort_by_key(|r| r.index);
    let idle_left = fresh.len() - surplus;
    let park = if backing_off {
        0
    } else {
        // Containers being reset are parked again soon: counted as coming.
        let want =
            (target + counts.waiters).saturating_sub(idle_left + counts.parking + counts.resetting);
        let room = limits
            .max_containers
            .saturating_sub(counts.total(idle_left));
        let parallel = limits.max_parallel_parks.saturating_sub(counts.parking);
        want.min(room).min(parallel)
    };
    ReconcilePlan { remove, park }
}

/// A job gave its container back (`counts` is after that): whether to park for the
/// oldest waiter at once, before a newer claim can take the room as a cold start.
pub fn on_slot_freed(idle: usize, counts: Counts, limits: &Limits) -> bool {
    counts.waiters > 0 && counts.total(idle) < limits.max_containers
}

/// Where a container that just finished parking goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// To the claim that started it (a cold start whose caller still waits).
    Claimant,
    /// To the oldest live waiter.
    Waiter,
    /// Parked, for the next claim.
    Idle,
}

/// A park finished. A cold start's container goes to its claim if that still
/// waits; otherwise (a pool park, or a cold start whose claim was dropped) to the
/// oldest waiter, else it is parked: a container once made is never wasted.
pub fn place_parked(claimant_waits: bool, counts: Counts) -> Placement {
    if claimant_waits {
        Placement::Claimant
    } else if counts.waiters > 0 {
        Placement::Waiter
    } else {
        Placement::Idle
    }
}

/// Failed parks in a row, and when the next may start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    retry_at: Option<Duration>,
}

/// What a failed pool park does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkFailed {
    /// No pool park starts before this.
    pub retry_at: Duration,
    /// Fail the oldest waiter with the park's error, rather than letting it sit
    /// out `max_wait` behind parks that fail.
    pub fail_oldest_waiter: bool,
}

impl Backoff {
    /// Whether pool parks are held back at `now`.
    pub fn holds(&self, now: Duration) -> bool {
        self.retry_at.is_some_and(|at| now < at)
    }

    /// A park succeeded: the next may start at once.
    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// A pool park failed at `now`: pause 0.5 s, 1 s, 2 s, ... at most 30 s.
    pub fn failed(&mut self, now: Duration, counts: Counts) -> ParkFailed {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(6);
        let pause = (BACKOFF_FIRST * (1u32 << doublings)).min(BACKOFF_MAX);
        let retry_at = now + pause;
        self.retry_at = Some(retry_at);
        ParkFailed {
            retry_at,
            fail_oldest_waiter: counts.waiters > 0,
        }
    }
}

/// Whether a claim queued at `queued_at` has waited out `max_wait` at `now`.
pub fn wait_expired(queued_at: Duration, now: Duration, limits: &Limits) -> bool {
    now.saturating_sub(queued_at) >= limits.max_wait
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_containers: 4,
        max_queue: 2,
        max_wait: Duration::from_secs(300),
        max_age: Duration::from_secs(3600),
        max_parallel_parks: MAX_PARALLEL_PARKS,
    };

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn good(parked_at: u64) -> IdleView {
        IdleView {
            parked_at: s(parked_at),
            image_current: true,
        }
    }

    fn stale(parked_at: u64) -> IdleView {
        IdleView {
            parked_at: s(parked_at),
            image_current: false,
        }
    }

    fn counts(parking: usize, cold: usize, busy: usize, waiters: usize) -> Counts {
        Counts {
            resetting: 0,
            returning: 0,
            parking,
            cold,
            busy,
            waiters,
        }
    }

    fn removal(index: usize, reason: RemoveReason) -> Removal {
        Removal { index, reason }
    }

    #[test]
    fn a_claim_takes_the_longest_parked_container() {
        let plan = claim(s(10), [good(1), good(5)], Counts::default(), &LIMITS);
        assert_eq!(
            plan,
            ClaimPlan {
                remove: 0,
                action: ClaimAction::Hit
            }
        );
    }

    #[test]
    fn a_claim_removes_stale_and_aged_containers_it_passes() {
        // Stale image, then parked 3601 s ago (> max_age 3600), then a good one.
        let plan = claim(
            s(3700),
            [stale(3000), good(99), good(3000)],
            Counts::default(),
            &LIMITS,
        );
        assert_eq!(
            plan,
            ClaimPlan {
                remove: 2,
                action: ClaimAction::Hit
            }
        );
        // Exactly max_age old is still good.
        let plan = claim(s(3601), [good(1)], Counts::default(), &LIMITS);
        assert_eq!(plan.action, ClaimAction::Hit);
    }

    #[test]
    fn a_claim_with_nothing_parked_starts_its_own_container_within_max_containers() {
        let plan = claim(s(1), [], counts(1, 1, 1, 0), &LIMITS);
        assert_eq!(
            plan,
            ClaimPlan {
                remove: 0,
                action: ClaimAction::Cold
            }
        );
        // All parked ones stale: removed, and they no longer count against the cap.
        let plan = claim(s(1), [stale(0)], counts(1, 1, 1, 0), &LIMITS);
        assert_eq!(
            plan,
            ClaimPlan {
                remove: 1,
                action: ClaimAction::Cold
            }
        );
    }

    #[test]
    fn a_claim_at_max_containers_queues() {
        let plan = claim(s(1), [], counts(1, 1, 2, 0), &LIMITS);
        assert_eq!(plan.action, ClaimAction::Queue);
    }

    #[test]
    fn a_claim_never_overtakes_a_waiter_with_a_cold_start() {
        // Room for a container, but an earlier claim waits: this one queues behind it.
        let plan = claim(s(1), [], counts(0, 0, 1, 1), &LIMITS);
        assert_eq!(plan.action, ClaimAction::Queue);
    }

    #[test]
    fn a_claim_beyond_max_queue_is_refused() {
        // max_queue 2, 2 waiting, no park in flight: full.
        let plan = claim(s(1), [], counts(0, 0, 4, 2), &LIMITS);
        assert_eq!(plan.action, ClaimAction::Full { queued: 2 });
        // A park in flight will serve one of them soon: one more may wait.
        let plan = claim(s(1), [], counts(1, 0, 3, 2), &LIMITS);
        assert_eq!(plan.action, ClaimAction::Queue);
        let plan = claim(s(1), [], counts(1, 0, 3, 3), &LIMITS);
        assert_eq!(plan.action, ClaimAction::Full { queued: 3 });
    }

    #[test]
    fn reconcile_parks_up_to_the_target() {
        let plan = reconcile(s(1), [good(0)], counts(1, 0, 0, 0), 3, false, &LIMITS);
        assert_eq!(
            plan,
            ReconcilePlan {
                remove: vec![],
                park: 1
            }
        );
    }

    #[test]
    fn reconcile_parks_for_waiters_too() {
        // Target 1, one parking; two waiters want two more.
        let plan = reconcile(s(1), [], counts(1, 0, 1, 2), 1, false, &LIMITS);
        assert_eq!(plan.park, 2);
    }

    #[test]
    fn reconcile_parks_within_max_containers() {
        // Target 4 wants 3 more; 1 idle + 2 busy leave room for 1.
        let plan = reconcile(s(1), [good(0)], counts(0, 0, 2, 0), 4, false, &LIMITS);
        assert_eq!(plan.park, 1);
    }

    #[test]
    fn reconcile_parks_at_most_max_parallel_parks_at_once() {
        let limits = Limits {
            max_containers: 16,
            ..LIMITS
        };
        let plan = reconcile(s(1), [], counts(1, 0, 0, 0), 8, false, &limits);
        assert_eq!(plan.park, MAX_PARALLEL_PARKS - 1);
    }

    #[test]
    fn reconcile_parks_nothing_while_backing_off() {
        let plan = reconcile(s(1), [stale(0)], counts(0, 0, 0, 1), 2, true, &LIMITS);
        assert_eq!(
            plan,
            ReconcilePlan {
                remove: vec![removal(0, RemoveReason::StaleImage)],
                park: 0
            }
        );
    }

    #[test]
    fn reconcile_replaces_stale_and_aged_containers() {
        let plan = reconcile(
            s(4000),
            [good(3000), stale(3500), good(100)],
            Counts::default(),
            3,
            false,
            &LIMITS,
        );
        assert_eq!(
            plan,
            ReconcilePlan {
                remove: vec![
                    removal(1, RemoveReason::StaleImage),
                    removal(2, RemoveReason::TooOld)
                ],
                park: 2
            }
        );
    }

    #[test]
    fn reconcile_removes_surplus_longest_parked_first() {
        // Target 1 with 3 parked and 1 parking: the two longest parked... and a
        // third, as the park in flight counts toward the target.
        let plan = reconcile(
            s(10),
            [good(1), good(2), good(3)],
            counts(1, 0, 0, 0),
            1,
            false,
            &LIMITS,
        );
        assert_eq!(
            plan,
            ReconcilePlan {
                remove: vec![
                    removal(0, RemoveReason::Surplus),
                    removal(1, RemoveReason::Surplus),
                    removal(2, RemoveReason::Surplus)
                ],
                park: 0
            }
        );
        let plan = reconcile(
            s(10),
            [good(1), good(2), good(3)],
            Counts::default(),
            2,
            false,
            &LIMITS,
        );
        assert_eq!(plan.remove, vec![removal(0, RemoveReason::Surplus)]);
    }

    #[test]
    fn reconcile_keeps_surplus_while_a_claim_waits() {
        let plan = reconcile(
            s(10),
            [good(1), good(2)],
            counts(0, 0, 2, 1),
            0,
            false,
            &LIMITS,
        );
        assert_eq!(plan, ReconcilePlan::default());
    }

    #[test]
    fn a_freed_slot_parks_for_the_oldest_waiter_if_there_is_room() {
        assert!(on_slot_freed(0, counts(0, 0, 3, 1), &LIMITS));
        assert!(
            !on_slot_freed(0, counts(0, 0, 3, 0), &LIMITS),
            "nobody waits"
        );
        assert!(!on_slot_freed(1, counts(1, 0, 2, 1), &LIMITS), "no room");
    }

    #[test]
    fn a_finished_park_goes_to_its_claim_then_the_oldest_waiter_then_idle() {
        assert_eq!(place_parked(true, counts(0, 0, 0, 2)), Placement::Claimant);
        // A cold start whose claim was dropped, or a pool park: a waiter gets it.
        assert_eq!(place_parked(false, counts(0, 0, 0, 2)), Placement::Waiter);
        // Nobody waits: it is parked for the next claim, not wasted.
        assert_eq!(place_parked(false, Counts::default()), Placement::Idle);
    }

    #[test]
    fn a_claim_waits_for_a_container_being_reset_rather_than_start_one() {
        let resetting = Counts {
            busy: 2,
            resetting: 1,
            returning: 1,
            ..Counts::default()
        };
        let plan = claim(s(0), [], resetting, &LIMITS);
        assert_eq!(plan.action, ClaimAction::Queue);
        // Not counted as room beyond max_queue: it serves one more waiter.
        let full = Counts {
            waiters: LIMITS.max_queue + 1,
            ..resetting
        };
        assert!(matches!(
            claim(s(0), [], full, &LIMITS).action,
            ClaimAction::Full { .. }
        ));
        // Without a reset under way, the same pool starts a container.
        let plan = claim(
            s(0),
            [],
            Counts {
                busy: 2,
                ..Counts::default()
            },
            &LIMITS,
        );
        assert_eq!(plan.action, ClaimAction::Cold);
        // And the reconcile counts it as coming back: no park for the target.
        let plan = reconcile(s(0), [], resetting, 1, false, &LIMITS);
        assert_eq!(plan.park, 0);
        let plan = reconcile(
            s(0),
            [],
            Counts {
                busy: 2,
                ..Counts::default()
            },
            1,
            false,
            &LIMITS,
        );
        assert_eq!(plan.park, 1);
    }

    #[test]
    fn parked_containers_beside_returning_ones_are_not_surplus() {
        let idle = |n: u64| {
            (0..n).map(|i| IdleView {
                parked_at: s(i),
                image_current: true,
            })
        };
        // Two running jobs on containers that come back; four parked, target 2:
        // none of them is surplus.
        let busy = Counts {
            busy: 2,
            returning: 2,
            ..Counts::default()
        };
        let plan = reconcile(s(10), idle(4), busy, 2, false, &LIMITS);
        assert!(plan.remove.is_empty(), "{plan:?}");
        // Single use: the same two beyond the target are.
        let single = Counts {
            busy: 2,
            ..Counts::default()
        };
        let plan = reconcile(s(10), idle(4), single, 2, false, &LIMITS);
        assert_eq!(plan.remove.len(), 2, "{plan:?}");
    }

    #[test]
    fn failed_parks_back_off_doubling_to_thirty_seconds() {
        let mut backoff = Backoff::default();
        assert!(!backoff.holds(s(0)));
        let pauses: Vec<Duration> = (0..9)
            .map(|_| backoff.failed(s(100), Counts::default()).retry_at - s(100))
            .collect();
        let ms = |m| Duration::from_millis(m);
        assert_eq!(
            pauses,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(30000),
                ms(30000),
                ms(30000)
            ]
        );
        assert!(backoff.holds(s(129)));
        assert!(!backoff.holds(s(130)));
        backoff.succeeded();
        assert!(!backoff.holds(s(100)));
        assert_eq!(backoff.failed(s(0), Counts::default()).retry_at, ms(500));
    }

    #[test]
    fn a_failed_park_fails_the_oldest_waiter() {
        let mut backoff = Backoff::default();
        assert!(backoff.failed(s(0), counts(0, 0, 0, 1)).fail_oldest_waiter);
        assert!(!backoff.failed(s(0), Counts::default()).fail_oldest_waiter);
    }

    #[test]
    fn a_queued_claim_expires_after_max_wait() {
        assert!(!wait_expired(s(10), s(309), &LIMITS));
        assert!(wait_expired(s(10), s(310), &LIMITS));
    }

    #[test]
    fn limits_come_from_the_profile() {
        let mut p = Profile::new("p", "img");
        p.max_containers = 7;
        p.max_queue = 3;
        let limits = Limits::of(&p);
        assert_eq!(
            (
                limits.max_containers,
                limits.max_queue,
                limits.max_parallel_parks
            ),
            (7, 3, MAX_PARALLEL_PARKS)
        );
        assert_eq!((limits.max_wait, limits.max_age), (p.max_wait, p.max_age));
    }
}
