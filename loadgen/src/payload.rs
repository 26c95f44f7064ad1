//! The stamp at the front of every payload loadgen sends: who sent it, its sequence
//! number, and when.
//!
//! # Memory layout
//! The stamp fills the first [`STAMP_LEN`] bytes; the rest of the payload is padding.
//!
//! Binary (little-endian):
//! ```text
//! 0        8                      14      16
//! | ts u64 | seq (48 bits)        | pub16 |
//! ```
//! Text (so the payload is valid UTF-8): 16 characters of a 64-letter alphabet, 6 bits
//! each, most significant first: 8 for the timestamp (48 bits, 78 hours of ns), 2 for the
//! publisher (12 bits), 6 for the sequence number (36 bits).

/// Bytes of the stamp; the smallest payload loadgen sends.
pub(crate) const STAMP_LEN: usize = 16;
/// Most publishers a run may have (text stamps carry 12 bits).
pub(crate) const MAX_PUBLISHERS: u32 = 1 << 12;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const TEXT_SEQ_MASK: u64 = (1 << 36) - 1;
const TEXT_TS_MASK: u64 = (1 << 48) - 1;

/// The decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Publisher (or echo connection) that sent the message.
    pub(crate) publisher: u16,
    /// Sequence number within that publisher's stream, from 0.
    pub(crate) seq: u64,
    /// Send time, ns on the run's clock ([`crate::clock::now_ns`]).
    pub(crate) ts_ns: u64,
}

/// A payload of `size` bytes with padding filled in; [`Stamp::encode_into`] writes the
/// stamp over its first [`STAMP_LEN`] bytes before each send.
pub(crate) fn template(size: usize, text: bool) -> Vec<u8> {
    (0..size.max(STAMP_LEN))
        .map(|i| if text { ALPHABET[i % 64] } else { i as u8 })
        .collect()
}

impl Stamp {
    /// Writes the stamp over the first [`STAMP_LEN`] bytes of `dst`; a shorter `dst` is
    /// left alone (callers size payloads at least [`STAMP_LEN`]).
    pub(crate) fn encode_into(&self, dst: &mut [u8], text: bool) {
        let Some(dst) = dst.get_mut(..STAMP_LEN) else {
            return;
        };
        if text {
            let ts = self.ts_ns & TEXT_TS_MASK;
            let rest = (u64::from(self.publisher) & 0xFFF) << 36 | (self.seq & TEXT_SEQ_MASK);
            put_sextets(&mut dst[..8], ts);
            put_sextets(&mut dst[8..], rest);
        } else {
            dst[..8].copy_from_slice(&self.ts_ns.to_le_bytes());
            let word = u64::from(self.publisher) << SEQ_BITS | (self.seq & SEQ_MASK);
            dst[8..].copy_from_slice(&word.to_le_bytes());
        }
    }

    /// Reads a stamp from the front of `src`; `None` if it is too short or (text) holds a
    /// character outside the alphabet.
    pub(crate) fn decode(src: &[u8], text: bool) -> Option<Self> {
        let src = src.get(..STAMP_LEN)?;
        if text {
            let ts = get_sextets(&src[..8])?;
            let rest = get_sextets(&src[8..])?;
            Some(Self {
                publisher: (rest >> 36) as u16,
                seq: rest & TEXT_SEQ_MASK,
                ts_ns: ts,
            })
        } else {
            let ts = u64::from_le_bytes(src[..8].try_into().ok()?);
            let word = u64::from_le_bytes(src[8..].try_into().ok()?);
            Some(Self {
                publisher: (word >> SEQ_BITS) as u16,
                seq: word & SEQ_MASK,
                ts_ns: ts,
            })
        }
    }
}

fn put_sextets(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = ALPHABET[(v & 63) as usize];
        v >>= 6;
    }
}

fn get_sextets(src: &[u8]) -> Option<u64> {
    src.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(acc << 6 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binary_and_text() {
        for text in [false, true] {
            for (publisher, seq, ts_ns) in [
                (0u16, 0u64, 0u64),
                (1, 1, 1),
                (4095, (1 << 36) - 1, (1 << 48) - 1),
                (17, 123_456_789, 98_765_432_100),
            ] {
                let s = Stamp {
                    publisher,
                    seq,
                    ts_ns,
                };
                let mut buf = template(64, text);
                s.encode_into(&mut buf, text);
                assert_eq!(Stamp::decode(&buf, text), Some(s), "text={text}");
                if text {
                    assert!(std::str::from_utf8(&buf).is_ok());
                }
            }
        }
    }

    #[test]
    fn binary_carries_wider_fields() {
        let s = Stamp {
            publisher: u16::MAX,
            seq: SEQ_MASK,
            ts_ns: u64::MAX,
        };
        let mut buf = [0u8; 16];
        s.encode_into(&mut buf, false);
        assert_eq!(Stamp::decode(&buf, false), Some(s));
    }

    #[test]
    fn short_or_foreign_payloads_do_not_decode() {
        assert_eq!(Stamp::decode(b"short", false), None);
        assert_eq!(Stamp::decode(b"{\"op\":\"subscribed\"}", true), None);
        let mut tiny = [0u8; 4];
        Stamp {
            publisher: 1,
            seq: 2,
            ts_ns: 3,
        }
        .encode_into(&mut tiny, false);
        assert_eq!(tiny, [0; 4]);
    }

    #[test]
    fn template_sizes() {
        assert_eq!(template(64, false).len(), 64);
        assert_eq!(template(3, true).len(), STAMP_LEN);
    }
}
