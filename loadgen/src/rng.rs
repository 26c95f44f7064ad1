//! A fast, non-cryptographic RNG for mask keys and handshake nonces.
//!
//! RFC 6455 §5.3 asks for unpredictable mask keys to protect intermediaries from cache
//! poisoning; a load generator talking to loopback only needs them to vary, and must not
//! spend its budget on a CSPRNG. xorshift64* (Vigna) passes BigCrush on its high bits.

/// xorshift64* state; never zero.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed`, the clock and the process id.
    pub(crate) fn new(seed: u64) -> Self {
        let mut s = seed
            ^ crate::clock::monotonic_raw_ns().rotate_left(17)
            ^ u64::from(std::process::id()).rotate_left(41);
        // SplitMix64 finaliser spreads weak seeds over all bits.
        s = (s ^ (s >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        s = (s ^ (s >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        s ^= s >> 31;
        Self(if s == 0 { 0x9e37_79b9_7f4a_7c15 } else { s })
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A mask key (the high bits, the better half of xorshift64*).
    pub(crate) fn mask_key(&mut self) -> [u8; 4] {
        ((self.next_u64() >> 32) as u32).to_ne_bytes()
    }

    /// Fills `dst` with random bytes.
    pub(crate) fn fill(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_vary() {
        let mut rng = Rng::new(7);
        let keys: std::collections::HashSet<[u8; 4]> = (0..1000).map(|_| rng.mask_key()).collect();
        assert!(keys.len() > 990);
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        rng.fill(&mut a);
        rng.fill(&mut b);
        assert_ne!(a, b);
    }
}
