//! Client payload unmasking (RFC 6455 §5.3), in place, SIMD where the CPU has it.
//!
//! `phase` is the index into the 4-byte key of the first byte of `buf`, so a payload that
//! arrives in several pieces (or fragments that continue one frame) is unmasked piece by
//! piece: `phase = unmask(piece, key, phase)`.
//!
//! ```
//! use ringcast::protocol::mask::unmask;
//!
//! let key = [0x37, 0xfa, 0x21, 0x3d];
//! let mut frame = [0x7f, 0x9f, 0x4d, 0x51, 0x58]; // RFC 6455 §5.7, masked "Hello"
//! let phase = unmask(&mut frame[..2], key, 0);
//! let phase = unmask(&mut frame[2..], key, phase);
//! assert_eq!(&frame, b"Hello");
//! assert_eq!(phase, 1);
//! ```
//!
//! # Implementations
//! - [`scalar`]: portable, safe, eight bytes at a time; the oracle every SIMD path is tested
//!   against.
//! - SSE2 and AVX2 on x86_64 (`simd_x86.rs`), NEON on aarch64 (`simd_arm.rs`): 16 or 32
//!   bytes per instruction, unaligned loads and stores, the tail handed to [`scalar`].
//!
//! [`unmask`] picks the best one the CPU supports the first time it sees a buffer of at
//! least [`SIMD_THRESHOLD`] bytes, by runtime feature detection, and caches the choice as a
//! function pointer; shorter buffers go straight to [`scalar`]. Tests and benches call a
//! given implementation through [`unmask_with`] and list them with [`Impl::available`].
//!
//! # Panics
//! Nothing here panics, whatever the length, phase or alignment of `buf`.

use std::sync::OnceLock;

pub mod scalar;
// Under Miri the SIMD kernels are left out (Miri does not model most intrinsics) and
// dispatch falls back to the scalar twin.
#[cfg(all(target_arch = "aarch64", not(miri)))]
#[allow(unsafe_code)] // NEON intrinsics on raw pointers
mod simd_arm;
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[allow(unsafe_code)] // SSE2/AVX2 intrinsics on raw pointers, `target_feature` functions
mod simd_x86;
#[cfg(test)]
mod tests;

/// Buffers shorter than this are unmasked by [`scalar`] without looking at the dispatch.
pub const SIMD_THRESHOLD: usize = 16;

/// The signature every implementation shares; see [`unmask`].
type UnmaskFn = fn(&mut [u8], [u8; 4], usize) -> usize;

/// One implementation of [`unmask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impl {
    /// [`scalar::unmask`]: portable, eight bytes at a time. Always available.
    Scalar,
    /// x86_64 SSE2, 16 bytes at a time (part of the x86_64 baseline).
    Sse2,
    /// x86_64 AVX2, 32 bytes at a time, when the CPU has it.
    Avx2,
    /// aarch64 NEON, 16 bytes at a time (part of the aarch64 baseline).
    Neon,
}

impl Impl {
    /// Every implementation, available here or not, best last.
    pub const ALL: [Self; 4] = [Self::Scalar, Self::Sse2, Self::Neon, Self::Avx2];

    /// The implementations this CPU can run, [`Impl::Scalar`] first and the best last.
    pub fn available() -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|i| i.function().is_some())
            .collect()
    }

    /// The implementation [`unmask`] uses for buffers of [`SIMD_THRESHOLD`] bytes or more.
    pub fn selected() -> Self {
        selected().0
    }

    /// A short lowercase name, for bench and test labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Sse2 => "sse2",
            Self::Avx2 => "avx2",
            Self::Neon => "neon",
        }
    }

    /// The implementation as a safe function, or `None` if this target or CPU lacks it.
    fn function(self) -> Option<UnmaskFn> {
        match self {
            Self::Scalar => Some(scalar::unmask),
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Self::Sse2 => simd_x86::sse2(),
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Self::Avx2 => simd_x86::avx2(),
            #[cfg(all(target_arch = "aarch64", not(miri)))]
            Self::Neon => simd_arm::neon(),
            _ => None,
        }
    }
}

/// The best available implementation, detected on first use.
fn selected() -> (Impl, UnmaskFn) {
    static SELECTED: OnceLock<(Impl, UnmaskFn)> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        Impl::ALL
            .into_iter()
            .rev()
            .find_map(|i| i.function().map(|f| (i, f)))
            .unwrap_or((Impl::Scalar, scalar::unmask as UnmaskFn))
    })
}

/// XORs `buf` in place with the repeating `key`, starting at `key[phase % 4]`; returns the
/// phase of the byte after `buf` (`(phase + buf.len()) % 4`).
///
/// Uses the best implementation the CPU supports (see the [module docs](self)).
#[inline]
pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    if buf.len() < SIMD_THRESHOLD {
        scalar::unmask(buf, key, phase)
    } else {
        (selected().1)(buf, key, phase)
    }
}

/// Like [`unmask`], but with the implementation `imp` whatever the length of `buf`.
///
/// Returns `None`, leaving `buf` untouched, if `imp` is not available on this target or CPU
/// (see [`Impl::available`]).
pub fn unmask_with(imp: Impl, buf: &mut [u8], key: [u8; 4], phase: usize) -> Option<usize> {
    imp.function().map(|f| f(buf, key, phase))
}

/// `key` rotated left by `phase % 4` bytes, so that byte 0 of the result masks the byte at
/// `phase`: repeating it over any multiple of 4 bytes keeps the phase.
#[inline]
fn rotate_key(key: [u8; 4], phase: usize) -> [u8; 4] {
    // Little-endian value: moving bytes towards index 0 is shifting right.
    u32::from_le_bytes(key)
        .rotate_right(8 * (phase & 3) as u32)
        .to_le_bytes()
}
