//! aarch64 NEON, 16 bytes per instruction.
//!
//! The same shape as the x86 kernels: XOR with a vector holding the key rotated to `phase`
//! and repeated (16 bytes, a multiple of 4, so the phase never moves), unaligned
//! `vld1q_u8`/`vst1q_u8`, four vectors per loop turn, then one, and the last bytes (fewer
//! than 16) go to [`scalar`].
//!
//! The `#[target_feature]` kernel is an `unsafe fn`; the only way in from safe code is the
//! function pointer that [`neon`] returns after runtime feature detection.

use std::arch::aarch64::{veorq_u8, vld1q_u8, vst1q_u8};
use std::arch::is_aarch64_feature_detected;

use super::{UnmaskFn, rotate_key, scalar};

/// The NEON implementation, if the CPU has NEON (every aarch64 CPU Rust targets does).
pub(super) fn neon() -> Option<UnmaskFn> {
    is_aarch64_feature_detected!("neon").then_some(unmask_neon as UnmaskFn)
}

/// Safe entry to [`neon_kernel`]; reachable only through the pointer [`neon`] returns.
fn unmask_neon(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    debug_assert!(is_aarch64_feature_detected!("neon"));
    // SAFETY: this private function is only called through the pointer that `neon()` hands
    // out, and `neon()` hands it out only after `is_aarch64_feature_detected!("neon")`.
    unsafe { neon_kernel(buf, key, phase) }
}

/// NEON twin of [`scalar::unmask`].
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
unsafe fn neon_kernel(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let pattern = [u32::from_ne_bytes(rotate_key(key, phase)); 4];
    // SAFETY: `pattern` is 16 initialised bytes (the rotated key four times); `vld1q_u8`
    // needs only byte alignment; NEON is this function's contract.
    let kv = unsafe { vld1q_u8(pattern.as_ptr().cast::<u8>()) };

    let mut blocks = buf.chunks_exact_mut(64);
    for block in &mut blocks {
        let p = block.as_mut_ptr();
        // SAFETY: `block` is 64 bytes of `buf`, borrowed exclusively, so the four 16-byte
        // vectors at `p`, `p + 16`, `p + 32`, `p + 48` are in bounds; byte alignment suffices.
        unsafe {
            let a = vld1q_u8(p);
            let b = vld1q_u8(p.add(16));
            let c = vld1q_u8(p.add(32));
            let d = vld1q_u8(p.add(48));
            vst1q_u8(p, veorq_u8(a, kv));
            vst1q_u8(p.add(16), veorq_u8(b, kv));
            vst1q_u8(p.add(32), veorq_u8(c, kv));
            vst1q_u8(p.add(48), veorq_u8(d, kv));
        }
    }
    let mut vectors = blocks.into_remainder().chunks_exact_mut(16);
    for vector in &mut vectors {
        let p = vector.as_mut_ptr();
        // SAFETY: `vector` is 16 bytes of `buf`, borrowed exclusively; byte alignment
        // suffices for `vld1q_u8`/`vst1q_u8`.
        unsafe { vst1q_u8(p, veorq_u8(vld1q_u8(p), kv)) };
    }
    // Everything so far was whole vectors, a multiple of 4 bytes: the tail starts at `phase`.
    scalar::unmask(vectors.into_remainder(), key, phase)
}
