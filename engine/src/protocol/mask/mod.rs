//! Client payload unmasking (RFC 6455 §5.3), in place, SIMD where the CPU has it.
//!
//! STUB: to be implemented (scalar twin in `scalar.rs`, `simd_x86.rs`, `simd_arm.rs`).
//!
//! `phase` is the index into the 4-byte key of the first byte of `buf`, so a payload that
//! arrives in several pieces (or fragments that continue one frame) is unmasked piece by
//! piece: `phase = unmask(piece, key, phase)`.

/// XORs `buf` in place with the repeating `key`, starting at `key[phase % 4]`; returns the
/// phase of the byte after `buf`.
pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    scalar::unmask(buf, key, phase)
}

/// The portable implementation every SIMD path is checked against.
pub mod scalar {
    /// Scalar twin of [`super::unmask`].
    pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(phase + i) & 3];
        }
        (phase + buf.len()) & 3
    }
}
