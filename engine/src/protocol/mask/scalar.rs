//! The portable implementation every SIMD path is checked against: safe code, one `u64`
//! word at a time.
//!
//! Each 8-byte word (unaligned; `from_ne_bytes` compiles to a plain load) is XORed with the
//! key rotated to `phase` and repeated twice; a word is a multiple of the key length, so the
//! phase does not move from one word to the next. A byte loop covers the tail of fewer than
//! 8 bytes. (Aligning a byte-loop head first measured no faster here.) The optimiser
//! vectorises the word loop with the target's baseline SIMD (SSE2 on x86_64).

#![forbid(unsafe_code)]

use super::rotate_key;

/// Scalar twin of [`super::unmask`]: XORs `buf` in place with the repeating `key`,
/// starting at `key[phase % 4]`; returns the phase of the byte after `buf`.
pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    // 2^64 is a multiple of 4, so the wrapped sum still has the right remainder.
    let end_phase = phase.wrapping_add(buf.len()) & 3;

    // The rotated key twice, in memory order whatever the endianness.
    let word = u64::from(u32::from_ne_bytes(rotate_key(key, phase))) * 0x1_0000_0001;
    let mut words = buf.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // The tail starts a multiple of 8 bytes in, so at the same phase.
    bytewise(words.into_remainder(), key, phase);

    end_phase
}

/// The byte loop for short pieces; returns the phase after `buf`.
#[inline]
fn bytewise(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    for (b, m) in buf.iter_mut().zip(rotate_key(key, phase).iter().cycle()) {
        *b ^= m;
    }
    phase.wrapping_add(buf.len()) & 3
}
