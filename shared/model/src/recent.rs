//! A user's recent keys (notification ids, content keys, acks), kept as 64-bit fingerprints,
//! and stored as a base of their own plus the record's change since (ADR 0033).
//!
//! The avatar asks one question of them — "was this key seen lately?" — so it keeps no key's
//! text: each key is the first 8 bytes of its SHA-256, and the set is those numbers in
//! insertion order, oldest first. Two different keys of one user share a fingerprint with
//! probability about 2⁻⁶⁴ per pair: a set of 512 makes a false "seen" about 3·10⁻¹⁷ a lookup.
//!
//! Stored, a user with few keys has them all in the record: one base64 string of the packed
//! numbers under `seen`. Once more than [`RecentSet::SPILL`] keys changed, the avatar writes
//! every key as the user's *base* (the `seen` bucket, [`RecentSet::base_bytes`]) and the record
//! keeps only what changed since: `seen` becomes `{"base": <the base's revision>, "added":
//! <packed>, "forgot": <packed>}`. So a notification rewrites a few hundred bytes of keys with
//! the record rather than all 4 KB of them, and the base is rewritten once per
//! [`RecentSet::SPILL`] changes. A record read that way holds only the change until the base is
//! merged into it ([`RecentSet::needs_base`], [`RecentSet::adopt_base`]). The change also
//! carries a filter of the base's keys (`filter`, [`BaseFilter`]): until the base is merged,
//! the set answers for any key the filter rules out, and only a key it may hold needs the base
//! read ([`RecentSet::took_unsure`]). A record from before fingerprints (a list of the
//! keys' text under `recent`) is read by fingerprinting each key.

use crate::recent_filter::{BaseFilter, MAX_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A bounded, insertion-ordered set of recent keys' fingerprints, and what of it changed since
/// its stored base.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecentSet {
    order: VecDeque<u64>,
    /// How many of the newest keys in `order` were added since the base (none of them is in
    /// it). Without a base, all of them.
    fresh: u32,
    /// Read from a record whose base is not merged in yet: `order` holds only the added keys.
    partial: bool,
    /// The revision of the stored base the change applies to (0: no base).
    base: u64,
    /// Keys of the base forgotten since it was written. Boxed: most users never forget one,
    /// and every record in memory would carry an empty vector's 24 bytes.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes in every record rather than 24 for a list most never have"
    )]
    forgot: Option<Box<Vec<u64>>>,
    /// While the base is not merged: the filter of its keys, as the record carried it (None:
    /// a record from before filters, whose base must be read before the set is used). A
    /// merged set computes it from its keys when it is stored.
    filter: Option<Box<BaseFilter>>,
    /// Set when a key the filter may hold was looked up or changed before the base was merged:
    /// what was answered then cannot be trusted ([`RecentSet::took_unsure`]).
    unsure: Unsure,
}

/// Whether a set answered without the base for a key the base may hold. Not part of what the
/// set holds: clones start clear, and sets compare equal whatever it says.
#[derive(Debug, Default)]
struct Unsure(std::sync::atomic::AtomicBool);

impl Clone for Unsure {
    fn clone(&self) -> Self {
        Unsure::default()
    }
}

impl PartialEq for Unsure {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The fingerprint a key is remembered by (here, and in the bus's log of records done).
pub fn fingerprint(key: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    u64::from_le_bytes(first)
}

/// The change to a base of recent keys in a stored record (its JSON), found in its bytes
/// without decoding it: from `"seen":{` to the object's end (it holds a number and base64
/// strings, so no other brace). A record's keys are written that way exactly when they are a
/// change to a base; inside a JSON string those quotes would be escaped. None: no base named.
fn change_in(record: &[u8]) -> Option<&[u8]> {
    let at = memchr::memmem::find(record, br#""seen":{"#)?;
    let change = &record[at..];
    Some(&change[..memchr::memchr(b'}', change).unwrap_or(change.len())])
}

/// Whether an avatar woken from a stored record (its JSON) reads its base of recent keys at
/// once, told from its bytes: a hint for reading many users' bases together (whoever decodes
/// the record learns it for sure). It does when the record names a base and carries no filter
/// of it (written before filters); one that carries a filter reads its base only if a key it
/// is asked about may be in it.
pub fn base_read_on_wake(record: &[u8]) -> bool {
    change_in(record).is_some_and(|change| memchr::memmem::find(change, br#""filter":""#).is_none())
}

/// The first byte of a stored base: its format (fingerprints packed, 8 bytes each, oldest
/// first).
const BASE_FORMAT: u8 = 1;

impl RecentSet {
    /// How many keys a user's avatar remembers.
    pub const CAPACITY: usize = 512;

    /// How many changes (keys added or base keys forgotten) a record carries before its
    /// avatar writes a new base.
    pub const SPILL: usize = 64;

    pub fn contains(&self, key: &str) -> bool {
        let f = fingerprint(key);
        self.answerable(f);
        self.order.contains(&f)
    }

    /// Before the base is merged only a key its filter rules out is answered for; any other
    /// marks the set unsure.
    fn answerable(&self, f: u64) {
        if self.partial && self.filter.as_ref().is_none_or(|b| b.may_hold(f)) {
            self.unsure
                .0
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether, before its base was merged, the set was asked about or changed for a key the
    /// base may hold: whatever used it then must be undone and done again once the base is
    /// merged ([`RecentSet::adopt_base`], which clears this).
    pub fn took_unsure(&self) -> bool {
        self.unsure.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the stored base must be merged ([`RecentSet::adopt_base`]) before the set is
    /// used at all: it is not merged, and the record carried no filter of it, or the change
    /// has grown to where the next checkpoint writes a new base. Otherwise the set answers for
    /// the keys its filter rules out, and says when it was asked about another
    /// ([`RecentSet::took_unsure`]).
    pub fn base_wanted(&self) -> bool {
        self.partial && (self.filter.is_none() || self.changes() >= Self::SPILL)
    }

    /// Insert `key`, forgetting the oldest key past capacity. Returns false if present.
    pub fn insert(&mut self, key: impl AsRef<str>) -> bool {
        self.insert_fingerprint(fingerprint(key.as_ref()))
    }

    fn insert_fingerprint(&mut self, f: u64) -> bool {
        self.answerable(f);
        if self.order.contains(&f) {
            return false;
        }
        // make room first, so a full set never grows its buffer past the capacity; the oldest
        // is a base key unless every key is new (the stored form forgets it the same way:
        // the added keys push it out again when the base is merged)
        while self.order.len() >= Self::CAPACITY {
            self.order.pop_front();
            if self.fresh as usize > self.order.len() {
                self.fresh -= 1;
            }
        }
        self.order.push_back(f);
        self.fresh += 1;
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
        self.answerable(f);
        let Some(i) = self.order.iter().position(|&k| k == f) else {
            return false;
        };
        self.order.remove(i);
        if i >= self.order.len() + 1 - self.fresh as usize {
            // added since the base: the base never had it
            self.fresh -= 1;
        } else {
            self.forgot.get_or_insert_default().push(f);
        }
        true
    }

    /// How many changes the stored record carries besides its base.
    pub fn changes(&self) -> usize {
        self.fresh as usize + self.forgot.as_ref().map_or(0, |f| f.len())
    }

    /// Whether the avatar should write a new base after it writes the record.
    pub fn wants_base(&self) -> bool {
        !self.partial && self.changes() > Self::SPILL
    }

    /// Whether this set was read from a record whose base is not merged in yet (see
    /// [`RecentSet::base_wanted`] for when it must be).
    pub fn needs_base(&self) -> bool {
        self.partial
    }

    /// The revision of the stored base the record's change applies to (0: none).
    pub fn base_revision(&self) -> u64 {
        self.base
    }

    /// Every key, as the value of a new base.
    pub fn base_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.order.len() * 8);
        out.push(BASE_FORMAT);
        for f in &self.order {
            out.extend_from_slice(&f.to_le_bytes());
        }
        out
    }

    /// The base written from [`RecentSet::base_bytes`] is stored as `revision`: nothing has
    /// changed since.
    pub fn rebased(&mut self, revision: u64) {
        self.fresh = 0;
        self.forgot = None;
        self.base = revision;
    }

    /// Merge the stored base (its value and revision; None: there is none) into a set read
    /// from a record: the base's keys less those forgotten, then the added keys in order.
    /// Any base read for this user may be merged, also one written after the record (by a
    /// checkpoint that ended before the next record write): it holds the record's change
    /// already, and merging it again changes nothing. A damaged base is an error; the caller
    /// decides whether to go on without it.
    pub fn adopt_base(&mut self, stored: Option<(&[u8], u64)>) -> Result<(), String> {
        self.partial = false;
        self.filter = None;
        self.unsure = Unsure::default();
        let Some((value, revision)) = stored else {
            // the base is gone (deleted by hand, or a bucket lost): what the record holds
            self.fresh = self.order.len() as u32;
            self.forgot = None;
            self.base = 0;
            return Ok(());
        };
        let packed = match value.split_first() {
            Some((&BASE_FORMAT, rest)) if rest.len() % 8 == 0 => rest,
            Some((&BASE_FORMAT, rest)) => {
                return Err(format!(
                    "recent keys' base: {} bytes, not a whole number of 8-byte fingerprints",
                    rest.len()
                ));
            }
            Some((v, _)) => return Err(format!("recent keys' base: unknown format {v}")),
            None => return Err("recent keys' base: empty".into()),
        };
        let added = std::mem::take(&mut self.order);
        let forgot = self.forgot.take();
        let mut merged = RecentSet {
            order: newest(packed),
            base: revision,
            ..Default::default()
        };
        for f in forgot.iter().flat_map(|f| f.iter()) {
            if let Some(i) = merged.order.iter().position(|k| k == f) {
                merged.order.remove(i);
                merged.forgot.get_or_insert_default().push(*f);
            }
        }
        for f in added {
            merged.insert_fingerprint(f);
        }
        *self = merged;
        Ok(())
    }
}

impl Serialize for RecentSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let packed = |fs: &mut dyn Iterator<Item = &u64>| {
            let mut bytes = Vec::with_capacity(self.order.len() * 8);
            for f in fs {
                bytes.extend_from_slice(&f.to_le_bytes());
            }
            crate::packed::pack(&bytes)
        };
        if self.base == 0 && self.forgot.is_none() {
            // no base: every key is in the record
            return s.serialize_str(&packed(&mut self.order.iter()));
        }
        let added = self.order.len() - self.fresh as usize;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("base", &self.base)?;
        m.serialize_entry("added", &packed(&mut self.order.iter().skip(added)))?;
        if let Some(forgot) = &self.forgot {
            m.serialize_entry("forgot", &packed(&mut forgot.iter()))?;
        }
        if self.base != 0 {
            // the base's keys this set still holds: one forgotten since, or pushed out by newer
            // ones, is not seen any more, so the filter need not answer for it
            let filter = match &self.filter {
                Some(read) => crate::packed::pack(&read.to_bytes()),
                None => crate::packed::pack(
                    &BaseFilter::of(self.order.iter().take(added).copied()).to_bytes(),
                ),
            };
            m.serialize_entry("filter", &filter)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for RecentSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Visitor)
    }
}

/// Fingerprints packed in base64, at most the set's capacity of them (the newest kept).
fn unpacked(v: &str, what: &str) -> Result<VecDeque<u64>, String> {
    let packed = crate::packed::unpack(v, 8, RecentSet::CAPACITY, what)?;
    Ok(newest(&packed))
}

/// The fingerprints packed in `packed` (8 bytes each, oldest first; a partial last one is
/// ignored), at most the set's capacity of them: the newest, as inserting them all would keep.
fn newest(packed: &[u8]) -> VecDeque<u64> {
    let skip = (packed.len() / 8).saturating_sub(RecentSet::CAPACITY);
    packed
        .chunks_exact(8)
        .skip(skip)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

struct Visitor;

impl<'de> serde::de::Visitor<'de> for Visitor {
    type Value = RecentSet;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("packed fingerprints in base64, a change to a base, or a list of keys")
    }

    /// Every key in the record: the fingerprints packed, 8 bytes each, in base64. Written
    /// from a set, so without repeats: taken as they are, in linear time.
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RecentSet, E> {
        let order = unpacked(v, "recent fingerprints").map_err(E::custom)?;
        Ok(RecentSet {
            fresh: order.len() as u32,
            order,
            ..Default::default()
        })
    }

    /// The change since a base: its revision, the keys added, the base keys forgotten.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RecentSet, A::Error> {
        use serde::de::Error;
        let mut set = RecentSet {
            partial: true,
            ..Default::default()
        };
        while let Some(field) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match field.as_ref() {
                "base" => set.base = map.next_value()?,
                "added" => {
                    let v = map.next_value::<std::borrow::Cow<'de, str>>()?;
                    set.order = unpacked(&v, "recent keys added").map_err(A::Error::custom)?;
                    set.fresh = set.order.len() as u32;
                }
                "filter" => {
                    // a filter that does not read only costs the base's read
                    let v = map.next_value::<std::borrow::Cow<'de, str>>()?;
                    set.filter = crate::packed::unpack(&v, 8, MAX_BYTES / 8, "base filter")
                        .ok()
                        .and_then(|b| BaseFilter::from_bytes(&b))
                        .map(Box::new);
                }
                "forgot" => {
                    let v = map.next_value::<std::borrow::Cow<'de, str>>()?;
                    let forgot = unpacked(&v, "recent keys forgotten").map_err(A::Error::custom)?;
                    set.forgot = Some(Box::new(forgot.into()));
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        if set.base == 0 {
            return Err(A::Error::custom("recent keys: a change names no base"));
        }
        Ok(set)
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
#[path = "recent_tests.rs"]
mod tests;
