//! Users to silos, and silos to the router/history instances that own them.

/// Jump consistent hash (Lamping & Veach): maps `key` to one of `buckets` buckets so that
/// growing the bucket count moves only `1/n` of the keys.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = buckets.max(1) as i64;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// FNV-1a, 64 bit: a stable hash of the user id that every service computes the same way.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The silo that owns `user_id`.
pub fn silo_of(user_id: &str, silo_count: u32) -> u32 {
    jump_consistent_hash(fnv1a(user_id), silo_count)
}

/// A set of silos an instance owns, from config: `all`, or a list of numbers and ranges
/// (`0-3,8,10-11`), or derived from a StatefulSet ordinal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiloSet(Vec<u32>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid silo set {input:?}: {message}")]
pub struct SiloSetError {
    pub input: String,
    pub message: String,
}

impl SiloSet {
    pub fn all(silo_count: u32) -> Self {
        Self((0..silo_count).collect())
    }

    /// Parse `all` or `0-3,8` against `silo_count`.
    pub fn parse(spec: &str, silo_count: u32) -> Result<Self, SiloSetError> {
        let err = |message: String| SiloSetError {
            input: spec.to_owned(),
            message,
        };
        let spec_t = spec.trim();
        if spec_t == "all" {
            return Ok(Self::all(silo_count));
        }
        let mut out = Vec::new();
        for part in spec_t.split(',').map(str::trim) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let lo: u32 = lo
                .parse()
                .map_err(|_| err(format!("{part:?} is not a number or range")))?;
            let hi: u32 = hi
                .parse()
                .map_err(|_| err(format!("{part:?} is not a number or range")))?;
            if lo > hi || hi >= silo_count {
                return Err(err(format!(
                    "{part:?} is outside 0-{}",
                    silo_count.saturating_sub(1)
                )));
            }
            out.extend(lo..=hi);
        }
        out.sort_unstable();
        out.dedup();
        if out.is_empty() {
            return Err(err("no silos".into()));
        }
        Ok(Self(out))
    }

    /// The silos owned by replica `ordinal` of `replicas`: silo `k` belongs to ordinal
    /// `k % replicas`. Every silo has exactly one owner for any replica count.
    pub fn for_ordinal(ordinal: u32, replicas: u32, silo_count: u32) -> Self {
        let replicas = replicas.max(1);
        Self(
            (0..silo_count)
                .filter(|k| k % replicas == ordinal)
                .collect(),
        )
    }

    /// The silos an instance owns from its config: `replica_ordinal` (with `replica_count`)
    /// when set, else the `spec` (`all` or a list).
    pub fn resolve(
        spec: &str,
        replica_ordinal: Option<u32>,
        replica_count: u32,
        silo_count: u32,
    ) -> Result<Self, String> {
        match replica_ordinal {
            Some(o) if o >= replica_count => Err(format!(
                "replica_ordinal {o} is not below replica_count {replica_count}"
            )),
            Some(o) => Ok(Self::for_ordinal(o, replica_count, silo_count)),
            None => Self::parse(spec, silo_count).map_err(|e| e.to_string()),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, silo: u32) -> bool {
        self.0.binary_search(&silo).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jump_hash_matches_reference_values() {
        // values from the paper's reference implementation
        assert_eq!(jump_consistent_hash(0, 1), 0);
        assert_eq!(jump_consistent_hash(1, 10), 6);
        assert_eq!(jump_consistent_hash(0xdead_beef, 1000), 285);
    }

    #[test]
    fn silo_sets_parse() {
        assert_eq!(SiloSet::parse("all", 4).unwrap(), SiloSet(vec![0, 1, 2, 3]));
        assert_eq!(
            SiloSet::parse("0-1, 3,1", 4).unwrap(),
            SiloSet(vec![0, 1, 3])
        );
        assert!(SiloSet::parse("4", 4).is_err());
        assert!(SiloSet::parse("x", 4).is_err());
        assert!(SiloSet::parse("3-1", 4).is_err());
    }

    proptest! {
        #[test]
        fn silo_is_in_range_and_stable(user in "[a-z0-9]{1,20}", n in 1u32..512) {
            let s = silo_of(&user, n);
            prop_assert!(s < n);
            prop_assert_eq!(s, silo_of(&user, n));
        }

        #[test]
        fn growing_moves_keys_only_to_the_new_bucket(key in any::<u64>(), n in 1u32..256) {
            let a = jump_consistent_hash(key, n);
            let b = jump_consistent_hash(key, n + 1);
            prop_assert!(a == b || b == n);
        }

        #[test]
        fn ordinals_partition_silos(replicas in 1u32..8, silos in 1u32..64) {
            let mut owners = vec![0; silos as usize];
            for o in 0..replicas {
                for k in SiloSet::for_ordinal(o, replicas, silos).iter() {
                    owners[k as usize] += 1;
                }
            }
            prop_assert!(owners.iter().all(|&c| c == 1));
        }
    }
}
