//! SipHash over a byte string in one call, keyed: what the standard
//! library's `RandomState` computes (SipHash-1-3), without its streaming
//! `Hasher` (which buffers every write and adds a terminator byte for a
//! `str`). A task name is hashed once when it is parsed (see
//! [`TaskName`](crate::tasks::TaskName)); `RandomState::hash_one` cost
//! about 150 instructions for a short name, this about 70 (callgrind).
//! Pure; depends on nothing.

/// SipHash-1-3 of `bytes` under the key `(k0, k1)`: one compression
/// round a word, three finalization rounds.
pub fn siphash13(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    siphash::<1, 3>(k0, k1, bytes)
}

/// SipHash-C-D (Aumasson and Bernstein), the reference algorithm: the
/// input as little-endian words, the last one holding the remaining bytes
/// and the length's low byte in its top byte.
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let (words, tail) = bytes.as_chunks::<8>();
    for word in words {
        compress::<C>(&mut v, u64::from_le_bytes(*word));
    }
    let mut last = (bytes.len() as u64) << 56;
    for (at, &byte) in tail.iter().enumerate() {
        last |= u64::from(byte) << (8 * at);
    }
    compress::<C>(&mut v, last);
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn compress<const C: usize>(v: &mut [u64; 4], word: u64) {
    v[3] ^= word;
    for _ in 0..C {
        round(v);
    }
    v[0] ^= word;
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vectors' first and last outputs: SipHash-2-4 under
    /// the key 00 01 .. 0f of the inputs [], [00], .., [00 .. 3e].
    #[test]
    fn siphash24_gives_the_papers_vectors() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let input: Vec<u8> = (0..64).collect();
        assert_eq!(siphash::<2, 4>(k0, k1, &input[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash::<2, 4>(k0, k1, &input[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash::<2, 4>(k0, k1, &input[..63]), 0x958a_324c_eb06_4572);
    }

    /// The same code with 2 and 4 rounds agrees with the standard
    /// library's SipHash-2-4 at every length around the word boundaries.
    #[test]
    #[allow(deprecated)]
    fn siphash24_agrees_with_the_standard_library() {
        use std::hash::Hasher;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..80 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 56)) as u8).collect();
            let (k0, k1) = (state, state.rotate_left(29) ^ 0x5555);
            let mut std = std::hash::SipHasher::new_with_keys(k0, k1);
            std.write(&bytes);
            assert_eq!(siphash::<2, 4>(k0, k1, &bytes), std.finish(), "{len}");
        }
    }
}
