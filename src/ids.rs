//! Hash maps keyed by numbers the daemon chooses or the kernel vouches for
//! (connection ids, uids), or by task names, hashed by one multiplication
//! instead of SipHash.
//!
//! SipHash is the standard map's defence against keys an attacker picks
//! to collide. A connection id is a counter of ours and a uid comes from
//! the kernel (`SO_PEERCRED`), so neither needs it, and the reactor looks a
//! connection up several times a request: SipHash was about 2,000
//! instructions of each (callgrind, 64 clients refreshing). Task names come
//! from clients: a [`TaskName`](crate::tasks::TaskName) hashes as the keyed
//! SipHash of its text, computed once when it is parsed, so a map of names
//! keeps the defence and mixes only that. Depends on nothing of ours.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by daemon-chosen or kernel-vouched numbers.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A set of such keys.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// The Fx hash (rustc's): rotate, xor, multiply by an odd constant, which
/// carries every input bit into the high bits the map's probing uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keys_that_differ_hash_apart_and_maps_work() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000usize).map(|n| build.hash_one(n)).collect();
        assert_eq!(hashes.len(), 10_000);
        // Some(uid) and None are told apart, as are nearby uids.
        assert_ne!(build.hash_one(None::<u32>), build.hash_one(Some(0u32)));
        assert_ne!(build.hash_one(Some(1000u32)), build.hash_one(Some(1001u32)));
        let mut map: IdMap<usize, usize> = IdMap::default();
        for n in 0..1000 {
            map.insert(n, n * 2);
        }
        assert!((0..1000).all(|n| map[&n] == n * 2));
    }
}
