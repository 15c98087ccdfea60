//! Who may hold a channel's shared window: the decision, per pulled job, to hold it here (in
//! its lane) or to park it back in the stream, and the circuit breaker per destination. Pure:
//! counts in, decisions out; `lanes.rs` does the I/O.
//!
//! A channel's consumer has one window of unsettled jobs (`delivery.max_ack_pending`), and
//! jobs waiting behind a slow destination are unsettled. Without a bound, one tenant with a
//! few tarpit webhooks fills the window and every other tenant's jobs wait in the stream
//! behind it. So a user holds at most `max_held_per_user` jobs, a destination whose sends
//! keep failing (an open breaker) holds none but the one probing it, and every other job of
//! theirs is parked: published again on the channel's parked subject (its own consumer and
//! window) and acked. A lane with parked jobs parks its later ones too, so a destination's
//! jobs keep their order.

use std::collections::HashMap;
use std::time::Duration;

/// The bounds, from `[delivery]`.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_held_per_user: usize,
    /// Consecutive failed sends that open a destination's breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open the first time; doubled each time it opens again, up
    /// to `breaker_max`.
    pub breaker_open: Duration,
    pub breaker_max: Duration,
}

/// A change of a destination's breaker, for its user to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Paused for this long after `failures` failed sends in a row.
    Opened { pause: Duration, failures: u32 },
    /// Delivering again after a pause.
    Closed,
}

/// Where a pulled job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Into its lane, counted against its user.
    Hold,
    /// Back to the stream (the parked subject), for this reason.
    Park(String),
}

#[derive(Default, Debug)]
struct LaneState {
    held: usize,
    /// Jobs of this lane published to the parked subject and not yet pulled from it.
    parked: usize,
    failures: u32,
    /// Times the breaker opened in a row (for the doubling).
    opened: u32,
    open_until: Option<Duration>,
}

/// The counts for one channel. Times are offsets from any fixed start (`Instant` elapsed).
#[derive(Debug)]
pub struct Fairness {
    bounds: Bounds,
    lanes: HashMap<String, LaneState>,
    users: HashMap<String, usize>,
}

impl Fairness {
    pub fn new(bounds: Bounds) -> Fairness {
        Fairness {
            bounds,
            lanes: HashMap::new(),
            users: HashMap::new(),
        }
    }

    /// Decide for a job of `user` to `lane` pulled at `now`; `from_parked` when it comes from
    /// the parked subject. A held job must be given back with [`Fairness::release`].
    pub fn admit(&mut self, lane: &str, user: &str, from_parked: bool, now: Duration) -> Admit {
        let held_by_user = self.users.get(user).copied().unwrap_or(0);
        let l = self.lanes.entry(lane.to_owned()).or_default();
        if from_parked {
            l.parked = l.parked.saturating_sub(1);
        }
        let verdict = if let Some(until) = l.open_until.filter(|u| now < *u) {
            Admit::Park(format!(
                "the destination failed {} times in a row; paused for {}s",
                l.failures,
                (until - now).as_secs().max(1)
            ))
        } else if l.held > 0 && l.open_until.is_some() {
            // half-open: the job probing the destination is out; the rest wait for its result
            Admit::Park("the destination is being probed after failures".into())
        } else if !from_parked && l.parked > 0 {
            Admit::Park("earlier jobs for this destination are parked".into())
        } else if held_by_user >= self.bounds.max_held_per_user {
            Admit::Park(format!(
                "the user already has {held_by_user} jobs waiting on this channel"
            ))
        } else {
            Admit::Hold
        };
        match verdict {
            Admit::Hold => {
                l.held += 1;
                *self.users.entry(user.to_owned()).or_default() += 1;
            }
            Admit::Park(_) => l.parked += 1,
        }
        verdict
    }

    /// A parked job could not be published: it stays where it was (unparked).
    pub fn park_failed(&mut self, lane: &str) {
        if let Some(l) = self.lanes.get_mut(lane) {
            l.parked = l.parked.saturating_sub(1);
        }
    }

    /// A held job is settled.
    pub fn release(&mut self, lane: &str, user: &str) {
        if let Some(l) = self.lanes.get_mut(lane) {
            l.held = l.held.saturating_sub(1);
            if l.held == 0 && l.parked == 0 && l.failures == 0 && l.open_until.is_none() {
                self.lanes.remove(lane);
            }
        }
        if let Some(n) = self.users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(user);
            }
        }
    }

    /// A send to `lane`'s destination ended (`ok`: delivered, or refused for good, which is
    /// the destination answering). Returns the breaker's change, if it changed.
    pub fn sent(&mut self, lane: &str, ok: bool, now: Duration) -> Option<Breaker> {
        let b = self.bounds;
        let l = self.lanes.entry(lane.to_owned()).or_default();
        if ok {
            let was_open = l.open_until.is_some();
            l.failures = 0;
            l.opened = 0;
            l.open_until = None;
            return was_open.then_some(Breaker::Closed);
        }
        l.failures = l.failures.saturating_add(1);
        let probing = l.open_until.is_some_and(|u| now >= u);
        if l.failures >= b.breaker_failures && (l.open_until.is_none() || probing) {
            let open = b
                .breaker_open
                .saturating_mul(1 << l.opened.min(16))
                .min(b.breaker_max);
            l.opened += 1;
            l.open_until = Some(now + open);
            return Some(Breaker::Opened {
                pause: open,
                failures: l.failures,
            });
        }
        None
    }

    /// Jobs held for `user` now.
    #[cfg(test)]
    fn held_by(&self, user: &str) -> usize {
        self.users.get(user).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        max_held_per_user: 3,
        breaker_failures: 2,
        breaker_open: Duration::from_secs(10),
        breaker_max: Duration::from_secs(25),
    };
    const T0: Duration = Duration::ZERO;

    #[test]
    fn a_user_holds_at_most_its_share_and_later_jobs_of_a_parked_lane_follow_it() {
        let mut f = Fairness::new(B);
        for _ in 0..3 {
            assert_eq!(f.admit("u1:a", "u1", false, T0), Admit::Hold);
        }
        assert!(matches!(f.admit("u1:b", "u1", false, T0), Admit::Park(_)));
        // another user is not affected
        assert_eq!(f.admit("u2:a", "u2", false, T0), Admit::Hold);
        f.release("u1:a", "u1");
        // u1:b has a parked job: its next one is parked too, keeping their order…
        assert!(matches!(f.admit("u1:b", "u1", false, T0), Admit::Park(_)));
        // …and the parked ones come back in, in order
        assert_eq!(f.admit("u1:b", "u1", true, T0), Admit::Hold);
        assert!(
            matches!(f.admit("u1:b", "u1", true, T0), Admit::Park(_)),
            "u1 is full again"
        );
        f.release("u1:a", "u1");
        assert_eq!(f.admit("u1:b", "u1", true, T0), Admit::Hold);
        assert_eq!(f.held_by("u1"), 3);
        for lane in ["u1:a", "u1:b", "u1:b"] {
            f.release(lane, "u1");
        }
        assert_eq!(f.held_by("u1"), 0);
        assert_eq!(
            f.admit("u1:b", "u1", false, T0),
            Admit::Hold,
            "nothing parked is left"
        );
    }

    #[test]
    fn a_failing_destination_opens_its_breaker_probes_once_and_backs_off_doubling() {
        let mut f = Fairness::new(B);
        let s = Duration::from_secs;
        assert_eq!(f.admit("u1:a", "u1", false, T0), Admit::Hold);
        assert_eq!(f.sent("u1:a", false, s(1)), None);
        let opened = |secs, failures| {
            Some(Breaker::Opened {
                pause: s(secs),
                failures,
            })
        };
        assert_eq!(f.sent("u1:a", false, s(2)), opened(10, 2));
        f.release("u1:a", "u1");
        // open: parked
        let Admit::Park(why) = f.admit("u1:a", "u1", true, s(5)) else {
            panic!()
        };
        assert!(why.contains("paused for 7s"), "{why}");
        // after the pause one job probes; the others wait for it
        assert_eq!(f.admit("u1:a", "u1", true, s(12)), Admit::Hold);
        assert!(matches!(f.admit("u1:a", "u1", true, s(12)), Admit::Park(_)));
        // the probe fails: open again, twice as long, capped
        assert_eq!(f.sent("u1:a", false, s(13)), opened(20, 3));
        f.release("u1:a", "u1");
        assert!(matches!(f.admit("u1:a", "u1", true, s(30)), Admit::Park(_)));
        assert_eq!(f.admit("u1:a", "u1", true, s(34)), Admit::Hold);
        assert_eq!(f.sent("u1:a", false, s(35)), opened(25, 4), "capped");
        f.release("u1:a", "u1");
        assert_eq!(f.admit("u1:a", "u1", true, s(61)), Admit::Hold);
        // a success closes it
        assert_eq!(f.sent("u1:a", true, s(62)), Some(Breaker::Closed));
        assert_eq!(f.sent("u1:a", true, s(63)), None);
        assert_eq!(f.admit("u1:a", "u1", true, s(62)), Admit::Hold);
        assert_eq!(f.admit("u1:a", "u1", false, s(62)), Admit::Hold);
    }
}
