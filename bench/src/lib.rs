//! Benchmarks for ringcast live in `benches/` (criterion); this library holds shared inputs
//! and the baselines the benches compare against.

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

/// The naive byte-at-a-time unmasking loop, the baseline for `ringcast::protocol::mask`:
/// what the optimiser makes of the obvious code.
pub fn naive_unmask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(phase + i) & 3];
    }
    (phase + buf.len()) & 3
}

/// Exactly `len` bytes of ASCII prose-like text (letters, digits, spaces, punctuation).
pub fn ascii_text(len: usize, seed: u64) -> String {
    const WORDS: &str = "the quick brown fox jumps over lazy dog, 42 frames broadcast. \
                         WebSocket ring cast payload mask; UTF-8 (text)";
    text_from(WORDS, len, seed)
}

/// Exactly `len` bytes of valid UTF-8 mixing Latin (1-2 bytes per character), Greek
/// (2 bytes), CJK (3 bytes) and emoji (4 bytes).
pub fn mixed_text(len: usize, seed: u64) -> String {
    const WORDS: &str = "Grüße naïve façade déjà κόσμε Ἀθῆναι λόγος 漢字 東京都 広播 한국어 \
                         🦀 🚀✨ 👩‍💻 hello world €100 Ωmega";
    text_from(WORDS, len, seed)
}

/// Words picked pseudo-randomly from the space-separated `words`, separated by spaces,
/// padded with spaces to exactly `len` bytes.
fn text_from(words: &str, len: usize, seed: u64) -> String {
    let words: Vec<&str> = words.split_whitespace().collect();
    let mut out = String::with_capacity(len);
    let picks = pseudo_random_bytes(len, seed);
    for &p in &picks {
        let word = words[usize::from(p) % words.len()];
        if out.len() + word.len() + 1 > len {
            break;
        }
        out.push_str(word);
        out.push(' ');
    }
    while out.len() < len {
        out.push(' ');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ascii_text, mixed_text};

    #[test]
    fn texts_have_the_requested_length() {
        for len in [0, 1, 7, 64, 1024, 65536] {
            assert_eq!(ascii_text(len, 1).len(), len);
            assert!(ascii_text(len, 1).is_ascii());
            assert_eq!(mixed_text(len, 1).len(), len);
        }
        assert!(!mixed_text(1024, 1).is_ascii());
    }
}
