//! A Bloom filter of the keys in a user's stored base of recent keys (ADR 0033), carried in
//! their record: an avatar woken from the record can tell that a key is not in the base without
//! reading the base (4 KB for a long-lived user), which a fan-out to many cold subscribers
//! would otherwise read for every one of them.
//!
//! Built from the keys' fingerprints (already uniform 64-bit hashes), with
//! [`PROBES`] bits per key picked by double hashing from the fingerprint's halves, and at
//! least 8 bits of filter per key (the size a power of two between [`MIN_BYTES`] and
//! [`MAX_BYTES`]): a key not in the base is taken for one of its keys about 2 % of the time
//! with a full base of 512, and less with fewer. A filter never misses a key it was built with.

/// Bits set per key.
const PROBES: u32 = 5;
/// The smallest filter, in bytes.
pub const MIN_BYTES: usize = 64;
/// The largest filter (a base of 512 keys), in bytes.
pub const MAX_BYTES: usize = 512;

/// The filter's bits, a power of two of 64-bit words.
#[derive(Clone, Debug, PartialEq)]
pub struct BaseFilter {
    words: Box<[u64]>,
}

impl BaseFilter {
    /// The filter of `keys` (their fingerprints).
    pub fn of(keys: impl ExactSizeIterator<Item = u64>) -> BaseFilter {
        let bytes = keys.len().next_power_of_two().clamp(MIN_BYTES, MAX_BYTES);
        let mut filter = BaseFilter {
            words: vec![0u64; bytes / 8].into_boxed_slice(),
        };
        for f in keys {
            for bit in filter.bits(f) {
                filter.words[bit / 64] |= 1 << (bit % 64);
            }
        }
        filter
    }

    /// Whether the key with fingerprint `f` may be one the filter was built with (false: it
    /// certainly is not).
    pub fn may_hold(&self, f: u64) -> bool {
        self.bits(f)
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// The bits of fingerprint `f`: `PROBES` positions from its two halves, the step odd so
    /// that they differ in a power-of-two range.
    fn bits(&self, f: u64) -> impl Iterator<Item = usize> + use<> {
        let mask = (self.words.len() * 64 - 1) as u32;
        let (h1, h2) = (f as u32, (f >> 32) as u32 | 1);
        (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
    }

    /// The filter as stored: its words, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A stored filter; None unless it is a power of two of bytes between [`MIN_BYTES`] and
    /// [`MAX_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Option<BaseFilter> {
        let n = bytes.len();
        if !(MIN_BYTES..=MAX_BYTES).contains(&n) || !n.is_power_of_two() {
            return None;
        }
        let words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Some(BaseFilter { words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recent::fingerprint;

    #[test]
    fn never_misses_a_key_and_rarely_takes_another_for_one() {
        for n in [0usize, 1, 65, 300, 512] {
            let keys: Vec<u64> = (0..n).map(|i| fingerprint(&format!("in{i}"))).collect();
            let filter = BaseFilter::of(keys.iter().copied());
            assert!(keys.iter().all(|&f| filter.may_hold(f)), "{n} keys");
            let others = 20_000;
            let false_hits = (0..others)
                .filter(|i| filter.may_hold(fingerprint(&format!("out{i}"))))
                .count();
            // 8 bits a key and 5 probes: about 2.2 % with a full base, under it with fewer
            assert!(
                false_hits * 100 < others * 3,
                "{n} keys: {false_hits} of {others}"
            );
            let back = BaseFilter::from_bytes(&filter.to_bytes()).unwrap();
            assert_eq!(back, filter);
        }
    }

    #[test]
    fn is_sized_to_its_keys() {
        let size = |n: usize| {
            BaseFilter::of((0..n).map(|i| i as u64 * 7919))
                .to_bytes()
                .len()
        };
        assert_eq!(
            (size(0), size(65), size(200), size(512), size(600)),
            (64, 128, 256, 512, 512)
        );
    }

    #[test]
    fn refuses_a_stored_filter_of_another_size() {
        for n in [0, 8, 63, 100, 1024] {
            assert!(BaseFilter::from_bytes(&vec![0u8; n]).is_none(), "{n} bytes");
        }
        assert!(BaseFilter::from_bytes(&[0u8; 64]).is_some());
    }
}
