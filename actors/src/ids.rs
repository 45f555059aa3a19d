//! Identities, a leaf of the crate (it imports nothing of it): who a runner
//! is ([`RunnerId`]), the secret it proves ([`Token`]), which build it serves
//! ([`BuildId`]), the project's one stable hash ([`Fnv`]), and the maps keyed
//! by call id.
//!
//! Call-id maps: ids are handed out in sequence on a connection, so the id
//! itself picks its bucket (calls sent together sit together in the table, a
//! burst of thousands in flight touches memory in order), and one
//! multiplication picks the control bits the table matches on. A call pays
//! no SipHash on its way in and out of the tables of calls in flight.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

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

/// A runner's identity, unique per boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunnerId(uuid::Uuid);

impl RunnerId {
    /// A fresh random id.
    pub fn new() -> Self {
        RunnerId(uuid::Uuid::new_v4())
    }

    /// The full id as 32 hex digits (for labels and names).
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }
}

impl Default for RunnerId {
    fn default() -> Self {
        RunnerId::new()
    }
}

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 hex digits are plenty in logs; the full id is in Debug.
        let s = self.0.simple().to_string();
        f.write_str(&s[..8])
    }
}

/// A per-runner secret the runner proves in the handshake.
///
/// Its `Debug` never shows the secret; comparison is constant-time.
#[derive(Clone, Serialize, Deserialize)]
pub struct Token(#[serde(with = "serde_bytes")] Vec<u8>);

/// Constant-time, like [`Token::verify`]: `==` on tokens leaks nothing either.
impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.verify(&other.0)
    }
}

impl Eq for Token {}

impl Token {
    /// A fresh random 32-byte token.
    pub fn generate() -> Self {
        let mut bytes = Vec::with_capacity(32);
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Token(bytes)
    }

    /// Compares in time that depends only on the lengths, never on where the
    /// first difference is.
    pub fn verify(&self, presented: &[u8]) -> bool {
        if self.0.len() != presented.len() {
            return false;
        }
        let diff = self.0.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The identity of a build's remote functions, compared in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildId(pub u64);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms (unlike
/// `DefaultHasher`). The project's one hash: build identities here, runner
/// image tags in the facade.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv {
    /// The FNV-1a offset basis.
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Mixes in `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash of `bytes`.
    pub fn hash(bytes: &[u8]) -> u64 {
        let mut h = Fnv::new();
        h.write(bytes);
        h.finish()
    }
}

/// As a [`std::hash::Hasher`]: maps keyed by short names (the
/// registry's functions, looked up on every call) pay a few instructions a
/// byte instead of SipHash's setup.
impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        Fnv::write(self, bytes);
    }

    fn finish(&self) -> u64 {
        Fnv::finish(self)
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
