//! Maps keyed by call id: ids are handed out in sequence on a connection, so
//! the id itself picks its bucket (calls sent together sit together in the
//! table, a burst of thousands in flight touches memory in order), and one
//! multiplication picks the control bits the table matches on. A call pays
//! no SipHash on its way in and out of the tables of calls in flight.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from call ids.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// A `u64` key as its own bucket index, its top 7 bits (the table's control
/// bits) replaced by those of its Fibonacci hash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else still hashes.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        const TOP: u64 = 0x7F << 57;
        self.0 = (n & !TOP) | (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) & TOP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_take_neighbouring_buckets_and_varied_top_bits() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut low = std::collections::HashSet::new();
        let mut top = std::collections::HashSet::new();
        for id in 1..=1024u64 {
            let h = build.hash_one(id);
            low.insert(h & 1023);
            top.insert(h >> 57);
        }
        assert_eq!(low.len(), 1024, "consecutive ids take distinct buckets");
        assert!(
            (1..1023u64).all(|id| build.hash_one(id + 1) & 1023 == (build.hash_one(id) & 1023) + 1),
            "consecutive ids take neighbouring buckets"
        );
        assert!(top.len() > 100, "the control bits vary: {}", top.len());
        let mut map: IdMap<u64> = IdMap::default();
        for id in 0..10_000 {
            map.insert(id, id * 2);
        }
        assert!((0..10_000).all(|id| map.get(&id) == Some(&(id * 2))));
    }
}
