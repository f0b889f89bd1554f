//! Connection leases: how `MAX_CONNECTIONS_PER_USER` stays exact under a burst.
//!
//! Counting a user's views cannot hold a limit: the views are written by the
//! projector after the stream delivers `Connected`, so every `$connect` of a burst
//! sees the same count. Instead each `$connect` takes a slot in the user's
//! [`UserLeases`] with a conditional write of the whole set: of two concurrent
//! `$connect`s that read the same set, one write wins and the other reads again.
//!
//! A lease lives until its `live_until`: `$disconnect` releases it; a ghost (a
//! connection whose `$disconnect` never came) frees its slot when its lease
//! expires, with nobody's help. [`lease_until`] is the latest time API Gateway can
//! still hold the connection open, given when it was last seen: the handler renews
//! the lease when it records `Activity` (at most once an activity interval), so an
//! active connection keeps its slot without a write per message.

use chrono::TimeDelta;

use super::ids::{ConnectionId, UserId};
use super::time::Timestamp;
use super::view::{IDLE_TIMEOUT, MAX_CONNECTION_DURATION};

/// One connection's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub connection_id: ConnectionId,
    pub live_until: Timestamp,
}

/// A user's slots, written as one item with a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLeases {
    pub user_id: UserId,
    pub leases: Vec<Lease>,
}

/// Why a `$connect` gets no slot: the user's live connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached {
    pub live: usize,
}

/// The end of a lease renewed at `seen` (a request of the connection): API
/// Gateway's idle timeout after it, plus the activity interval (the handler renews
/// at most that often, so the connection may have been seen that much later),
/// and never past the connection's maximum duration.
pub fn lease_until(connected_at: Timestamp, seen: Timestamp, activity_interval: TimeDelta) -> Timestamp {
    seen.plus(IDLE_TIMEOUT).plus(activity_interval).min(connected_at.plus(MAX_CONNECTION_DURATION))
}

impl UserLeases {
    pub fn new(user_id: UserId) -> Self {
        UserLeases { user_id, leases: Vec::new() }
    }

    /// The connections whose lease has not expired at `now`.
    pub fn live(&self, now: Timestamp) -> impl Iterator<Item = &Lease> {
        self.leases.iter().filter(move |lease| lease.live_until > now)
    }

    /// Takes a slot for `connection_id` until `live_until`, unless `max` other
    /// connections hold live slots. Expired leases are dropped; a connection that
    /// already holds a slot (a retried `$connect`) keeps it.
    pub fn acquire(
        &mut self,
        connection_id: &ConnectionId,
        now: Timestamp,
        live_until: Timestamp,
        max: usize,
    ) -> Result<(), LimitReached> {
        self.leases.retain(|lease| lease.live_until > now);
        if let Some(held) = self.leases.iter_mut().find(|lease| lease.connection_id == *connection_id) {
            held.live_until = held.live_until.max(live_until);
            return Ok(());
        }
        if self.leases.len() >= max {
            return Err(LimitReached { live: self.leases.len() });
        }
        self.leases.push(Lease { connection_id: connection_id.clone(), live_until });
        Ok(())
    }

    /// Gives `connection_id`'s slot back (and drops expired ones). Whether anything changed.
    pub fn release(&mut self, connection_id: &ConnectionId, now: Timestamp) -> bool {
        let before = self.leases.len();
        self.leases.retain(|lease| lease.connection_id != *connection_id && lease.live_until > now);
        self.leases.len() != before
    }

    /// Moves `connection_id`'s lease on to `live_until`, if it holds a live one.
    /// Whether anything changed.
    pub fn renew(&mut self, connection_id: &ConnectionId, now: Timestamp, live_until: Timestamp) -> bool {
        match self.leases.iter_mut().find(|lease| lease.connection_id == *connection_id) {
            Some(lease) if lease.live_until > now && live_until > lease.live_until => {
                lease.live_until = live_until;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: i64 = 1_795_734_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_epoch_millis(T0 + seconds * 1_000)
    }

    fn connection(index: usize) -> ConnectionId {
        ConnectionId::parse(format!("c{index}")).unwrap()
    }

    #[derive(Debug, Clone)]
    enum Step {
        Connect(usize),
        Disconnect(usize),
        Renew(usize),
        Wait(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..8).prop_map(Step::Connect),
            (0usize..8).prop_map(Step::Disconnect),
            (0usize..8).prop_map(Step::Renew),
            (1i64..900).prop_map(Step::Wait),
        ]
    }

    proptest! {
        /// Whatever happens, no more than `max` connections hold live slots; a
        /// connection is refused only when `max` others hold live ones; an expired
        /// lease never blocks anyone.
        #[test]
        fn never_more_than_max_live_and_a_refusal_means_the_others_are_live(
            max in 1usize..4,
            steps in prop::collection::vec(step(), 1..60),
        ) {
            let mut leases = UserLeases::new(UserId::parse("u").unwrap());
            let interval = TimeDelta::seconds(60);
            let mut now = at(0);
            for step in steps {
                match step {
                    Step::Connect(index) => {
                        let live_before: Vec<ConnectionId> = leases.live(now).map(|lease| lease.connection_id.clone()).collect();
                        let result = leases.acquire(&connection(index), now, lease_until(now, now, interval), max);
                        match result {
                            Ok(()) => prop_assert!(leases.live(now).any(|lease| lease.connection_id == connection(index))),
                            Err(LimitReached { live }) => {
                                prop_assert_eq!(live, max);
                                prop_assert!(!live_before.contains(&connection(index)));
                                prop_assert_eq!(live_before.len(), max);
                            }
                        }
                    }
                    Step::Disconnect(index) => {
                        leases.release(&connection(index), now);
                        prop_assert!(leases.live(now).all(|lease| lease.connection_id != connection(index)));
                    }
                    Step::Renew(index) => {
                        leases.renew(&connection(index), now, lease_until(at(0), now, interval));
                    }
                    Step::Wait(seconds) => now = now.plus(TimeDelta::seconds(seconds)),
                }
                prop_assert!(leases.live(now).count() <= max);
            }
        }
    }

    #[test]
    fn a_ghost_frees_its_slot_when_its_lease_ends_and_activity_keeps_one() {
        let mut leases = UserLeases::new(UserId::parse("u").unwrap());
        let interval = TimeDelta::seconds(60);
        leases.acquire(&connection(1), at(0), lease_until(at(0), at(0), interval), 2).unwrap();
        leases.acquire(&connection(2), at(0), lease_until(at(0), at(0), interval), 2).unwrap();
        assert_eq!(leases.acquire(&connection(3), at(60), at(60 + 660), 2), Err(LimitReached { live: 2 }));
        // Connection 2 is active (renewed at 600 s); connection 1 is a ghost.
        assert!(leases.renew(&connection(2), at(600), lease_until(at(0), at(600), interval)));
        assert_eq!(leases.acquire(&connection(3), at(659), at(659 + 660), 2), Err(LimitReached { live: 2 }));
        assert_eq!(leases.acquire(&connection(3), at(661), at(661 + 660), 2), Ok(()));
        assert_eq!(leases.live(at(661)).count(), 2);
        // Never past the connection's two hours, however active.
        assert_eq!(lease_until(at(0), at(7_000), interval), at(7_200));
    }
}
