//! A token bucket per key (an inbound address, a user, a client address): `per_minute`
//! requests a minute with a burst of as many, in memory, bounded: keys live in two generations
//! that rotate every two minutes or when the current one is full, so memory stays under twice
//! the key budget and no request ever scans the table (a flood of new keys costs O(1) each).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys per generation: memory stays under twice this.
const MAX_KEYS: usize = 100_000;
/// A key idle this long (at most twice this) is forgotten: its bucket would be full again.
const GENERATION: Duration = Duration::from_secs(120);

pub struct KeyedRateLimit<K> {
    per_minute: u32,
    max_keys: usize,
    buckets: Mutex<Generations<K>>,
}

struct Generations<K> {
    current: HashMap<K, (f64, Instant)>,
    previous: HashMap<K, (f64, Instant)>,
    rotated: Instant,
}

impl<K: Hash + Eq + Clone> KeyedRateLimit<K> {
    /// `per_minute` = 0 allows everything.
    pub fn new(per_minute: u32) -> Self {
        Self::with_max_keys(per_minute, MAX_KEYS)
    }

    fn with_max_keys(per_minute: u32, max_keys: usize) -> Self {
        Self {
            per_minute,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                rotated: Instant::now(),
            }),
        }
    }

    /// Take one token for `key`: `Ok`, or how long until one is available.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = self.per_minute as f64;
        let now = Instant::now();
        // a panic elsewhere while this was held leaves only token counts behind
        let mut g = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(g.rotated) >= GENERATION || g.current.len() >= self.max_keys {
            g.previous = std::mem::take(&mut g.current);
            g.rotated = now;
        }
        let bucket = match g.previous.remove(key) {
            Some(b) if !g.current.contains_key(key) => b,
            _ => (cap, now),
        };
        let (tokens, at) = g.current.entry(key.clone()).or_insert(bucket);
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * cap / 60.0).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) * 60.0 / cap))
        }
    }

    /// Keys held now (both generations).
    #[cfg(test)]
    fn keys(&self) -> usize {
        let g = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        g.current.len() + g.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_a_wait() {
        let l = KeyedRateLimit::new(3);
        for _ in 0..3 {
            assert!(l.take(&"a").is_ok());
        }
        let wait = l.take(&"a").unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(l.take(&"b").is_ok(), "keys are independent");
        let open = KeyedRateLimit::new(0);
        for _ in 0..1000 {
            assert!(open.take(&"a").is_ok());
        }
    }

    #[test]
    fn a_flood_of_new_keys_stays_bounded_and_a_busy_key_stays_limited() {
        let l = KeyedRateLimit::with_max_keys(2, 1_000);
        assert!(l.take(&0u64).is_ok());
        assert!(l.take(&0u64).is_ok());
        for k in 1..50_000u64 {
            let _ = l.take(&k);
            assert!(l.keys() <= 2_000, "{} keys after {k}", l.keys());
            if k % 500 == 0 {
                // the busy key is carried from one generation to the next, still empty
                assert!(l.take(&0u64).is_err(), "key 0 was reset after {k} new keys");
            }
        }
    }
}
