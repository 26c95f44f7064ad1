//! Benchmarks for ringcast live in `benches/` (criterion); this library holds shared inputs.

/// Deterministic pseudo-random bytes (xorshift), so every run measures the same input.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
