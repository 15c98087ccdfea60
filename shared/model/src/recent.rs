//! A user's recent keys (notification ids, content keys, acks), kept as 64-bit fingerprints.
//!
//! The avatar asks one question of them — "was this key seen lately?" — so it keeps no key's
//! text: each key is the first 8 bytes of its SHA-256, and the set is those numbers in
//! insertion order, oldest first. Stored, they are one base64 string of the packed numbers
//! (8 bytes a key, 5.5 KB at capacity) under `seen`, written and read without a string per
//! key; a record from before (a list of the keys' text under `recent`) is read by
//! fingerprinting each key. Two different keys of one user share a fingerprint with
//! probability about 2⁻⁶⁴ per pair: a set of 512 makes a false "seen" about 3·10⁻¹⁷ a lookup.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A bounded, insertion-ordered set of recent keys' fingerprints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecentSet {
    order: VecDeque<u64>,
}

/// The fingerprint a key is remembered by (here, and in the bus's log of records done).
pub fn fingerprint(key: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_le_bytes(first)
}

impl RecentSet {
    /// How many keys a user's avatar remembers.
    pub const CAPACITY: usize = 512;

    pub fn contains(&self, key: &str) -> bool {
        self.order.contains(&fingerprint(key))
    }

    /// Insert `key`, forgetting the oldest key past capacity. Returns false if present.
    pub fn insert(&mut self, key: impl AsRef<str>) -> bool {
        self.insert_fingerprint(fingerprint(key.as_ref()))
    }

    fn insert_fingerprint(&mut self, f: u64) -> bool {
        if self.order.contains(&f) {
            return false;
        }
        // make room first, so a full set never grows its buffer past the capacity
        while self.order.len() >= Self::CAPACITY {
            self.order.pop_front();
        }
        self.order.push_back(f);
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Forget `key`. Returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let f = fingerprint(key);
        match self.order.iter().position(|&k| k == f) {
            Some(i) => {
                self.order.remove(i);
                true
            }
            None => false,
        }
    }
}

impl Serialize for RecentSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut packed = Vec::with_capacity(self.order.len() * 8);
        for f in &self.order {
            packed.extend_from_slice(&f.to_le_bytes());
        }
        s.serialize_str(&crate::packed::pack(&packed))
    }
}

impl<'de> Deserialize<'de> for RecentSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Visitor)
    }
}

struct Visitor;

impl<'de> serde::de::Visitor<'de> for Visitor {
    type Value = RecentSet;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("packed fingerprints in base64, or a list of keys")
    }

    /// The stored form: the fingerprints packed, 8 bytes each, in base64.
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RecentSet, E> {
        // a set longer than its capacity keeps its newest keys, as inserting them one by one
        // would
        let packed = crate::packed::unpack(v, 8, RecentSet::CAPACITY, "recent fingerprints")
            .map_err(E::custom)?;
        // written from a set, so without repeats: taken as they are, in linear time
        let mut order: VecDeque<u64> = packed
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        while order.len() > RecentSet::CAPACITY {
            order.pop_front();
        }
        Ok(RecentSet { order })
    }

    /// A record written before fingerprints: the keys' text, oldest first.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RecentSet, A::Error> {
        let mut r = RecentSet::default();
        while let Some(key) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
            r.insert(key);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_bounded_and_round_trips() {
        let mut r = RecentSet::default();
        for i in 0..RecentSet::CAPACITY + 10 {
            assert!(r.insert(format!("k{i}")));
        }
        assert_eq!(r.len(), RecentSet::CAPACITY);
        assert!(!r.contains("k0"));
        assert!(r.contains("k521"));
        assert!(!r.insert("k521"));
        assert!(r.remove("k521"));
        assert!(!r.remove("k521"));
        assert!(!r.contains("k521"));
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.len() < RecentSet::CAPACITY * 11 + 2,
            "{} bytes",
            json.len()
        );
        let back: RecentSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // and the order survives: the oldest is forgotten first after the round trip too
        let mut back = back;
        back.insert("new"); // back to capacity (k521 was removed)
        back.insert("newer");
        assert!(!back.contains("k10"));
        assert!(back.contains("k11"));
    }

    #[test]
    fn a_list_of_keys_from_before_reads_as_their_fingerprints() {
        let old: RecentSet = serde_json::from_str(r#"["nabc","k:sha256:01","ack:nabc"]"#).unwrap();
        assert_eq!(old.len(), 3);
        assert!(old.contains("nabc") && old.contains("k:sha256:01") && old.contains("ack:nabc"));
        assert!(!old.contains("ndef"));
        // escaped text is the key it stands for
        let escaped: RecentSet = serde_json::from_str(r#"["k:a\"b"]"#).unwrap();
        assert!(escaped.contains("k:a\"b"));
    }

    #[test]
    fn damaged_fingerprints_are_refused_with_what_is_wrong() {
        for (bad, says) in [
            (r#""AAAA""#, "whole number"),
            (r#""!!!""#, "not base64"),
            (r#"42"#, "packed fingerprints"),
        ] {
            let e = serde_json::from_str::<RecentSet>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let huge = format!("\"{}\"", "A".repeat(RecentSet::CAPACITY * 64));
        let e = serde_json::from_str::<RecentSet>(&huge)
            .unwrap_err()
            .to_string();
        assert!(e.contains("four times"), "{e}");
    }
}
