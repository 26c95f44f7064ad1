//! x86_64 SSE2 (16 bytes per instruction) and AVX2 (32 bytes per instruction).
//!
//! Each kernel XORs the buffer with a vector holding the key rotated to `phase` and
//! repeated; a vector is a multiple of 4 bytes long, so the phase does not move from one
//! vector to the next. Loads and stores are unaligned (`loadu`/`storeu`), four vectors per
//! loop turn, then one vector at a time, and the last bytes (fewer than one vector) go to
//! [`scalar`].
//!
//! The `#[target_feature]` kernels are `unsafe fn`s; the only way in from safe code is the
//! function pointer that [`sse2`] or [`avx2`] returns after runtime feature detection.

use std::arch::x86_64::{
    __m128i, __m256i, _mm_loadu_si128, _mm_storeu_si128, _mm_xor_si128, _mm256_loadu_si256,
    _mm256_storeu_si256, _mm256_xor_si256,
};

use super::{UnmaskFn, rotate_key, scalar};

/// The SSE2 implementation, if the CPU has SSE2 (every x86_64 CPU does).
pub(super) fn sse2() -> Option<UnmaskFn> {
    is_x86_feature_detected!("sse2").then_some(unmask_sse2 as UnmaskFn)
}

/// The AVX2 implementation, if the CPU has AVX2.
pub(super) fn avx2() -> Option<UnmaskFn> {
    is_x86_feature_detected!("avx2").then_some(unmask_avx2 as UnmaskFn)
}

/// Safe entry to [`sse2_kernel`]; reachable only through the pointer [`sse2`] returns.
fn unmask_sse2(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    debug_assert!(is_x86_feature_detected!("sse2"));
    // SAFETY: this private function is only called through the pointer that `sse2()` hands
    // out, and `sse2()` hands it out only after `is_x86_feature_detected!("sse2")`.
    unsafe { sse2_kernel(buf, key, phase) }
}

/// Safe entry to [`avx2_kernel`]; reachable only through the pointer [`avx2`] returns.
fn unmask_avx2(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    debug_assert!(is_x86_feature_detected!("avx2"));
    // SAFETY: this private function is only called through the pointer that `avx2()` hands
    // out, and `avx2()` hands it out only after `is_x86_feature_detected!("avx2")`.
    unsafe { avx2_kernel(buf, key, phase) }
}

/// SSE2 twin of [`scalar::unmask`].
///
/// # Safety
/// The CPU must support SSE2.
#[target_feature(enable = "sse2")]
unsafe fn sse2_kernel(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let pattern = [u32::from_ne_bytes(rotate_key(key, phase)); 4];
    // SAFETY: `pattern` is 16 initialised bytes (the rotated key four times) and
    // `_mm_loadu_si128` has no alignment requirement; SSE2 is this function's contract.
    let kv = unsafe { _mm_loadu_si128(pattern.as_ptr().cast::<__m128i>()) };

    let mut blocks = buf.chunks_exact_mut(64);
    for block in &mut blocks {
        let p = block.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `block` is 64 bytes of `buf`, borrowed exclusively, so `p..p.add(4)` are
        // four in-bounds 16-byte vectors; `loadu`/`storeu` have no alignment requirement.
        unsafe {
            let a = _mm_loadu_si128(p);
            let b = _mm_loadu_si128(p.add(1));
            let c = _mm_loadu_si128(p.add(2));
            let d = _mm_loadu_si128(p.add(3));
            _mm_storeu_si128(p, _mm_xor_si128(a, kv));
            _mm_storeu_si128(p.add(1), _mm_xor_si128(b, kv));
            _mm_storeu_si128(p.add(2), _mm_xor_si128(c, kv));
            _mm_storeu_si128(p.add(3), _mm_xor_si128(d, kv));
        }
    }
    let mut vectors = blocks.into_remainder().chunks_exact_mut(16);
    for vector in &mut vectors {
        let p = vector.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `vector` is 16 bytes of `buf`, borrowed exclusively; `loadu`/`storeu` have
        // no alignment requirement.
        unsafe { _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), kv)) };
    }
    // Everything so far was whole vectors, a multiple of 4 bytes: the tail starts at `phase`.
    scalar::unmask(vectors.into_remainder(), key, phase)
}

/// AVX2 twin of [`scalar::unmask`].
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn avx2_kernel(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let pattern = [u32::from_ne_bytes(rotate_key(key, phase)); 8];
    // SAFETY: `pattern` is 32 initialised bytes (the rotated key eight times) and
    // `_mm256_loadu_si256` has no alignment requirement; AVX2 is this function's contract.
    let kv = unsafe { _mm256_loadu_si256(pattern.as_ptr().cast::<__m256i>()) };

    let mut blocks = buf.chunks_exact_mut(128);
    for block in &mut blocks {
        let p = block.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `block` is 128 bytes of `buf`, borrowed exclusively, so `p..p.add(4)` are
        // four in-bounds 32-byte vectors; `loadu`/`storeu` have no alignment requirement.
        unsafe {
            let a = _mm256_loadu_si256(p);
            let b = _mm256_loadu_si256(p.add(1));
            let c = _mm256_loadu_si256(p.add(2));
            let d = _mm256_loadu_si256(p.add(3));
            _mm256_storeu_si256(p, _mm256_xor_si256(a, kv));
            _mm256_storeu_si256(p.add(1), _mm256_xor_si256(b, kv));
            _mm256_storeu_si256(p.add(2), _mm256_xor_si256(c, kv));
            _mm256_storeu_si256(p.add(3), _mm256_xor_si256(d, kv));
        }
    }
    let mut vectors = blocks.into_remainder().chunks_exact_mut(32);
    for vector in &mut vectors {
        let p = vector.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `vector` is 32 bytes of `buf`, borrowed exclusively; `loadu`/`storeu` have
        // no alignment requirement.
        unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), kv)) };
    }
    // Everything so far was whole vectors, a multiple of 4 bytes: the tail starts at `phase`.
    scalar::unmask(vectors.into_remainder(), key, phase)
}
