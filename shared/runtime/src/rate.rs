//! A token bucket per key (an inbound address, a user, a client address): `per_minute`
//! requests a minute with a burst of as many, in memory, bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct KeyedRateLimit<K> {
    per_minute: u32,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> KeyedRateLimit<K> {
    /// `per_minute` = 0 allows everything.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    /// Take one token for `key`: `Ok`, or how long until one is available.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = self.per_minute as f64;
        let now = Instant::now();
        let mut map = self.buckets.lock().expect("rate lock");
        if map.len() > 100_000 {
            // forget idle keys rather than grow without bound
            map.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(120));
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * cap / 60.0).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) * 60.0 / cap))
        }
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
}
