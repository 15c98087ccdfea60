//! When each feed is next due: a time-ordered queue, one entry per feed.
//!
//! The poll loop takes the earliest entry once it is due and a fetch permit is free, so a
//! finished fetch starts the next one at once and the cost of finding due feeds does not grow
//! with the number of feeds. Entries may be stale (the feed's record is the truth): the loop
//! checks each one against the record before it polls.

use std::collections::{BTreeSet, HashMap};
use tocsin_model::Millis;

#[derive(Default, Debug)]
pub struct PollQueue {
    by_time: BTreeSet<(Millis, String)>,
    at: HashMap<String, Millis>,
}

impl PollQueue {
    /// Put `key` at `at`, replacing its entry. True when it is now the earliest entry (the
    /// loop, perhaps asleep until a later one, must look again).
    pub fn set(&mut self, key: &str, at: Millis) -> bool {
        match self.at.get_mut(key) {
            Some(old) if *old == at => {}
            Some(old) => {
                self.by_time.remove(&(*old, key.to_owned()));
                *old = at;
                self.by_time.insert((at, key.to_owned()));
            }
            None => {
                self.at.insert(key.to_owned(), at);
                self.by_time.insert((at, key.to_owned()));
            }
        }
        self.by_time.first().is_some_and(|(_, k)| k == key)
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(at) = self.at.remove(key) {
            self.by_time.remove(&(at, key.to_owned()));
        }
    }

    /// The earliest entry due at `now`, taken out of the queue.
    pub fn pop_due(&mut self, now: Millis) -> Option<String> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.at.remove(&key);
        Some(key)
    }

    /// When the earliest entry is due.
    pub fn next_at(&self) -> Option<Millis> {
        self.by_time.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_only_when_due() {
        let mut q = PollQueue::default();
        assert!(q.set("b", 20));
        assert!(q.set("a", 10));
        assert!(!q.set("c", 30));
        assert_eq!(q.next_at(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(25).as_deref(), Some("a"));
        assert_eq!(q.pop_due(25).as_deref(), Some("b"));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(30).as_deref(), Some("c"));
        assert!(q.is_empty());
        assert_eq!(q.next_at(), None);
    }

    #[test]
    fn one_entry_per_key() {
        let mut q = PollQueue::default();
        q.set("a", 10);
        q.set("b", 15);
        // moved later: b is first now; moved earlier again: a is
        assert!(!q.set("a", 40));
        assert_eq!(q.next_at(), Some(15));
        assert!(q.set("a", 0));
        assert_eq!(q.len(), 2);
        // the same time again changes nothing
        assert!(q.set("a", 0));
        q.remove("a");
        q.remove("missing");
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(100).as_deref(), Some("b"));
        assert!(q.is_empty());
    }
}
