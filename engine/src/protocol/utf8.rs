//! Incremental UTF-8 validation of text messages across fragments (RFC 6455 §8.1).
//!
//! A text message arrives in arbitrary pieces: fragments, or partial reads of one frame.
//! [`Utf8Validator`] checks each piece with [`simdutf8`] as it arrives and **fails fast**:
//! [`Utf8Validator::feed`] returns an error for the piece in which the input stops being a
//! prefix of some valid UTF-8 string, so a connection can be failed (close code 1007)
//! without waiting for the rest of the message. A piece may end inside a character; the at
//! most 3 bytes of that incomplete sequence are carried and completed by the next pieces
//! (which may be just as short: a 4-byte character may come one byte per piece).
//!
//! ```
//! use ringcast::protocol::utf8::Utf8Validator;
//!
//! let text = "Grüße, κόσμε 🦀".as_bytes();
//! let mut v = Utf8Validator::new();
//! for piece in text.chunks(3) {
//!     v.feed(piece).unwrap();
//! }
//! v.finish().unwrap();
//!
//! // 0xF4 0x90 can only start a code point above U+10FFFF: fails at once, mid-character.
//! assert!(v.feed(&[b'a', 0xF4]).is_ok());
//! assert!(v.feed(&[0x90]).is_err());
//! ```
//!
//! # Cost
//! One pass per piece. The last character of a piece is split off if it is cut (found by
//! looking at the last 3 bytes) and checked alone; everything before it is one
//! [`simdutf8::basic::from_utf8`] call (`std::str::from_utf8` below 64 bytes, as simdutf8
//! would do itself). Completing a carried sequence looks at no more than 4 bytes.
//!
//! # Panics
//! Nothing here panics, whatever the bytes or how they are cut.

#![forbid(unsafe_code)]

use std::fmt;

/// Invalid UTF-8 was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

impl fmt::Display for Utf8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid UTF-8 in a text message")
    }
}

impl std::error::Error for Utf8Error {}

/// Validates a text message fed in arbitrary pieces; carries at most 3 bytes of an
/// incomplete sequence from one piece to the next.
///
/// # Memory layout
/// Six bytes, no heap: the carried bytes, their count, and whether an error was seen.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a character cut at the end of the last piece (`carry_len` bytes, at
    /// most 3); the fourth slot lets a 4-byte sequence be completed in place.
    carry: [u8; 4],
    carry_len: u8,
    /// Set by the first error; later calls fail until [`Utf8Validator::reset`].
    failed: bool,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self {
            carry: [0; 4],
            carry_len: 0,
            failed: false,
        }
    }

    /// Validates the next piece. Fails as soon as an invalid sequence is seen, even when
    /// more pieces follow; a sequence cut at the end of `piece` is carried over.
    ///
    /// # Errors
    /// [`Utf8Error`] if the message so far, ending with `piece`, is not a prefix of valid
    /// UTF-8 (lone continuation bytes, 0xC0, 0xC1, 0xF5..=0xFF, overlong forms, surrogates,
    /// code points above U+10FFFF, a sequence interrupted by a non-continuation byte). The
    /// error sticks: every later `feed` and [`finish`](Self::finish) fails too, until
    /// [`reset`](Self::reset) or `finish`.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), Utf8Error> {
        if self.failed {
            return Err(Utf8Error);
        }
        let verdict = self.feed_unchecked(piece);
        if verdict.is_err() {
            self.failed = true;
            self.carry_len = 0;
        }
        verdict
    }

    /// Ends the message: fails if an incomplete sequence is still carried. Resets.
    ///
    /// # Errors
    /// [`Utf8Error`] if the message ends inside a character or an earlier
    /// [`feed`](Self::feed) failed.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let r = if self.carry_len == 0 && !self.failed {
            Ok(())
        } else {
            Err(Utf8Error)
        };
        self.reset();
        r
    }

    /// Forgets any carried bytes and any error: ready for a new message.
    pub fn reset(&mut self) {
        self.carry_len = 0;
        self.failed = false;
    }

    /// [`feed`](Self::feed) without the sticky error.
    fn feed_unchecked(&mut self, mut piece: &[u8]) -> Result<(), Utf8Error> {
        if self.carry_len != 0 {
            piece = match self.complete_carry(piece)? {
                Some(rest) => rest,
                None => return Ok(()),
            };
        }
        // `head` ends on a character boundary, `tail` is a lead byte and fewer continuation
        // bytes than it announces (at most 3 bytes), or empty. UTF-8 synchronises on lead
        // bytes, so the piece is a valid prefix iff `head` is valid and `tail` is a valid
        // prefix of one character: one pass over the piece, with no second pass to learn
        // where a failure was.
        let (head, tail) = piece.split_at(incomplete_tail_start(piece));
        let head_ok = if head.len() < SIMD_MIN_LEN {
            std::str::from_utf8(head).is_ok()
        } else {
            simdutf8::basic::from_utf8(head).is_ok()
        };
        if !head_ok {
            return Err(Utf8Error);
        }
        if tail.is_empty() {
            return Ok(());
        }
        match std::str::from_utf8(tail) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Appends the first bytes of `piece` to the carried sequence. Returns the rest of the
    /// piece once the character is complete and valid, or `None` if `piece` ran out first
    /// (the longer prefix stays carried).
    fn complete_carry<'a>(&mut self, piece: &'a [u8]) -> Result<Option<&'a [u8]>, Utf8Error> {
        let have = usize::from(self.carry_len);
        // A carried sequence starts with a lead byte (0xC2..=0xF4), whose width is 2 to 4.
        let take = (sequence_width(self.carry[0]) - have).min(piece.len());
        let (head, rest) = piece.split_at(take);
        self.carry[have..have + take].copy_from_slice(head);
        let seq = &self.carry[..have + take];
        match std::str::from_utf8(seq) {
            Ok(_) => {
                self.carry_len = 0;
                Ok(Some(rest))
            }
            Err(e) if e.error_len().is_none() => {
                // Still a valid prefix, and `piece` was used up.
                self.carry_len = seq.len() as u8;
                Ok(None)
            }
            Err(_) => Err(Utf8Error),
        }
    }
}

/// Shorter slices go to `std::str::from_utf8`, as simdutf8 itself does below its 64-byte
/// SIMD block, minus its indirect call.
const SIMD_MIN_LEN: usize = 64;

/// The length a sequence starting with `lead` must have; 1 for ASCII and for bytes that
/// never start a sequence (continuation bytes, 0xC0, 0xC1, 0xF5..=0xFF).
const fn sequence_width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// Where the possibly incomplete last character of `piece` starts: the last of its final
/// three bytes that is not a continuation byte, if that byte announces a longer sequence
/// than what follows it; otherwise `piece.len()`.
fn incomplete_tail_start(piece: &[u8]) -> usize {
    let last = piece.len().wrapping_sub(1);
    match piece.iter().rev().take(3).position(|&b| b & 0xC0 != 0x80) {
        Some(back) if sequence_width(piece[last - back]) > back + 1 => last - back,
        _ => piece.len(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Utf8Error, Utf8Validator};

    /// The index of the first byte after which `bytes` is no longer a prefix of valid
    /// UTF-8, if any: the earliest point a fail-fast validator can (and must) fail.
    fn first_bad_index(bytes: &[u8]) -> Option<usize> {
        let e = std::str::from_utf8(bytes).err()?;
        e.error_len()?;
        (e.valid_up_to()..bytes.len())
            .find(|&k| std::str::from_utf8(&bytes[..=k]).is_err_and(|e| e.error_len().is_some()))
    }

    /// Feeds `bytes` cut at `cuts` (sorted, each `<= bytes.len()`), then finishes; checks
    /// the verdict against `std::str::from_utf8` and, when invalid, that the first failure
    /// is the feed whose piece holds [`first_bad_index`] (or `finish` for a truncated end).
    fn check_pieces(bytes: &[u8], cuts: &[usize]) {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        let mut failed_at = None;
        for (i, end) in cuts.iter().copied().chain([bytes.len()]).enumerate() {
            if v.feed(&bytes[start..end]).is_err() {
                failed_at = Some((i, start, end));
                break;
            }
            start = end;
        }
        let finished = v.finish();
        let std_ok = std::str::from_utf8(bytes).is_ok();
        match (first_bad_index(bytes), failed_at) {
            (None, None) => assert_eq!(finished.is_ok(), std_ok, "{bytes:02x?} cut {cuts:?}"),
            (Some(k), Some((_, start, end))) => {
                assert!(
                    (start..end).contains(&k),
                    "{bytes:02x?} cut {cuts:?}: bad byte {k} but failed on piece {start}..{end}"
                );
                assert_eq!(finished, Err(Utf8Error));
            }
            (k, f) => panic!("{bytes:02x?} cut {cuts:?}: bad byte {k:?}, failed piece {f:?}"),
        }
        // Reusable after finish.
        assert_eq!(v.feed("ok".as_bytes()), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    /// Markus Kuhn's UTF-8 decoder capability and stress test, section by section.
    const KUHN: &[(&str, &[u8])] = &[
        ("1 kosme", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
        ("2.1.1 U+0000", b"\x00"),
        ("2.1.2 U+0080", b"\xc2\x80"),
        ("2.1.3 U+0800", b"\xe0\xa0\x80"),
        ("2.1.4 U+10000", b"\xf0\x90\x80\x80"),
        ("2.1.5 5-byte U+200000", b"\xf8\x88\x80\x80\x80"),
        ("2.1.6 6-byte U+4000000", b"\xfc\x84\x80\x80\x80\x80"),
        ("2.2.1 U+007F", b"\x7f"),
        ("2.2.2 U+07FF", b"\xdf\xbf"),
        ("2.2.3 U+FFFF", b"\xef\xbf\xbf"),
        ("2.2.4 U+1FFFFF", b"\xf7\xbf\xbf\xbf"),
        ("2.2.5 5-byte U+3FFFFFF", b"\xfb\xbf\xbf\xbf\xbf"),
        ("2.2.6 6-byte U+7FFFFFFF", b"\xfd\xbf\xbf\xbf\xbf\xbf"),
        ("2.3.1 U+D7FF", b"\xed\x9f\xbf"),
        ("2.3.2 U+E000", b"\xee\x80\x80"),
        ("2.3.3 U+FFFD", b"\xef\xbf\xbd"),
        ("2.3.4 U+10FFFF", b"\xf4\x8f\xbf\xbf"),
        ("2.3.5 U+110000", b"\xf4\x90\x80\x80"),
        ("3.1.1 lone 0x80", b"\x80"),
        ("3.1.2 lone 0xbf", b"\xbf"),
        ("3.1.3 2 continuations", b"\x80\xbf"),
        ("3.1.4 3 continuations", b"\x80\xbf\x80"),
        ("3.1.9 all continuations", &CONTINUATIONS),
        ("3.2.1 lonely 2-byte starts", b"\xc0 \xc1 \xc2 \xdf "),
        ("3.2.2 lonely 3-byte starts", b"\xe0 \xe1 \xef "),
        ("3.2.3 lonely 4-byte starts", b"\xf0 \xf4 \xf7 "),
        ("3.2.4 lonely 5-byte starts", b"\xf8 \xfb "),
        ("3.2.5 lonely 6-byte starts", b"\xfc \xfd "),
        ("3.3.1 C0 missing last", b"\xc0"),
        ("3.3.2 E0 80 missing last", b"\xe0\x80"),
        ("3.3.3 F0 80 80 missing last", b"\xf0\x80\x80"),
        ("3.3.4 5-byte missing last", b"\xf8\x80\x80\x80"),
        ("3.3.5 6-byte missing last", b"\xfc\x80\x80\x80\x80"),
        ("3.3.6 DF missing last", b"\xdf"),
        ("3.3.7 EF BF missing last", b"\xef\xbf"),
        ("3.3.8 F7 BF BF missing last", b"\xf7\xbf\xbf"),
        ("3.3.x C2 missing last", b"\xc2"),
        ("3.3.x E1 80 missing last", b"\xe1\x80"),
        ("3.3.x F0 9F 98 missing last", b"\xf0\x9f\x98"),
        ("3.3.x F4 8F BF missing last", b"\xf4\x8f\xbf"),
        (
            "3.4 concatenated",
            b"\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xdf\xef\xbf",
        ),
        ("3.5.1 FE", b"\xfe"),
        ("3.5.2 FF", b"\xff"),
        ("3.5.3 FE FE FF FF", b"\xfe\xfe\xff\xff"),
        ("3.5.x F5", b"\xf5\x80\x80\x80"),
        ("4.1.1 overlong / 2", b"\xc0\xaf"),
        ("4.1.2 overlong / 3", b"\xe0\x80\xaf"),
        ("4.1.3 overlong / 4", b"\xf0\x80\x80\xaf"),
        ("4.1.4 overlong / 5", b"\xf8\x80\x80\x80\xaf"),
        ("4.1.5 overlong / 6", b"\xfc\x80\x80\x80\x80\xaf"),
        ("4.2.1 max overlong 2", b"\xc1\xbf"),
        ("4.2.2 max overlong 3", b"\xe0\x9f\xbf"),
        ("4.2.3 max overlong 4", b"\xf0\x8f\xbf\xbf"),
        ("4.2.4 max overlong 5", b"\xf8\x87\xbf\xbf\xbf"),
        ("4.3.1 overlong NUL 2", b"\xc0\x80"),
        ("4.3.2 overlong NUL 3", b"\xe0\x80\x80"),
        ("4.3.3 overlong NUL 4", b"\xf0\x80\x80\x80"),
        ("5.1.1 U+D800", b"\xed\xa0\x80"),
        ("5.1.2 U+DB7F", b"\xed\xad\xbf"),
        ("5.1.3 U+DB80", b"\xed\xae\x80"),
        ("5.1.4 U+DBFF", b"\xed\xaf\xbf"),
        ("5.1.5 U+DC00", b"\xed\xb0\x80"),
        ("5.1.6 U+DF80", b"\xed\xbe\x80"),
        ("5.1.7 U+DFFF", b"\xed\xbf\xbf"),
        ("5.2.1 U+D800 U+DC00", b"\xed\xa0\x80\xed\xb0\x80"),
        ("5.2.8 U+DBFF U+DFFF", b"\xed\xaf\xbf\xed\xbf\xbf"),
        ("5.3.1 U+FFFE", b"\xef\xbf\xbe"),
        ("5.3.2 U+FFFF", b"\xef\xbf\xbf"),
        ("5.3.3 U+FDD0", b"\xef\xb7\x90"),
        ("x emoji", "🦀 crab".as_bytes()),
        ("x interrupted", b"\xe2\x82\x41"),
        ("x valid then E0 80", b"\xce\xba\xe0\x80\x80"),
    ];

    const CONTINUATIONS: [u8; 64] = {
        let mut a = [0; 64];
        let mut i = 0;
        while i < 64 {
            a[i] = 0x80 + i as u8;
            i += 1;
        }
        a
    };

    /// Each vector bare, and inside valid text (so the bad byte is mid-piece too).
    fn kuhn_inputs() -> impl Iterator<Item = (&'static str, Vec<u8>)> {
        KUHN.iter().flat_map(|&(name, v)| {
            let mut wrapped = "aé ".as_bytes().to_vec();
            wrapped.extend_from_slice(v);
            wrapped.extend_from_slice("z€".as_bytes());
            [(name, v.to_vec()), (name, wrapped)]
        })
    }

    #[test]
    fn kuhn_vectors_whole_match_std() {
        for (name, v) in kuhn_inputs() {
            let mut val = Utf8Validator::new();
            let ok = val.feed(&v).and_then(|()| val.finish()).is_ok();
            assert_eq!(ok, std::str::from_utf8(&v).is_ok(), "{name}");
            check_pieces(&v, &[]);
        }
    }

    #[test]
    fn kuhn_vectors_every_two_piece_split() {
        for (_, v) in kuhn_inputs() {
            // Under Miri (each split interpreted) a long vector is cut near its ends, where
            // the wrapping text meets it, and every fifth byte in between.
            let n = v.len();
            let cuts =
                (0..=n).filter(|&c| !cfg!(miri) || n <= 16 || c <= 6 || c + 6 >= n || c % 5 == 0);
            for cut in cuts {
                check_pieces(&v, &[cut]);
            }
        }
    }

    #[test]
    fn kuhn_vectors_one_byte_at_a_time() {
        for (_, v) in kuhn_inputs() {
            let cuts: Vec<usize> = (1..v.len()).collect();
            check_pieces(&v, &cuts);
        }
    }

    #[test]
    fn four_byte_char_split_one_one_one_one() {
        let crab = "🦀".as_bytes();
        let mut v = Utf8Validator::new();
        for b in crab {
            assert_eq!(v.feed(std::slice::from_ref(b)), Ok(()));
        }
        assert_eq!(v.finish(), Ok(()));
        // The same, interrupted by an empty piece and broken at the last byte.
        for (i, b) in [0xf0, 0x9f, 0xa6, 0x41].into_iter().enumerate() {
            assert_eq!(v.feed(&[]), Ok(()));
            assert_eq!(v.feed(&[b]).is_err(), i == 3, "byte {i}");
        }
        assert_eq!(v.finish(), Err(Utf8Error));
    }

    #[test]
    fn fails_fast_on_the_piece_with_the_bad_byte() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"abc", b"\xc0"),              // never valid
            (b"abc", b"\xc1\xbf"),          // overlong
            (b"abc", b"\xf5"),              // above U+10FFFF
            (b"abc", b"\xff"),              // never valid
            (b"abc", b"\x80"),              // lone continuation
            (b"abc\xf4", b"\x90"),          // U+110000 and up
            (b"abc", b"\xf4\x90"),          // the same, within one piece
            (b"abc\xe0", b"\x80"),          // overlong 3-byte
            (b"abc", b"\xe0\x80"),          // the same, within one piece
            (b"abc\xed", b"\xa0"),          // surrogate
            (b"abc", b"x\xed\xa0"),         // the same, within one piece
            (b"abc\xf0\x9f", b"\x98A"),     // interrupted 4-byte
            (b"abc\xf0\x9f\x98", b"A"),     // interrupted at the last byte
            ("κό".as_bytes(), b"\xf8\x88"), // 5-byte form
        ];
        for &(first, second) in cases {
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(first), Ok(()), "{first:02x?}");
            assert_eq!(v.feed(second), Err(Utf8Error), "{first:02x?} {second:02x?}");
            // The same with pieces long enough for the SIMD path.
            let long_first = [&[b'x'; 100][..], first].concat();
            let long_second = [second, &[b'z'; 100][..]].concat();
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(&long_first), Ok(()), "{first:02x?}");
            assert_eq!(v.feed(&long_second), Err(Utf8Error), "{second:02x?}");
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(&long_first), Ok(()), "{first:02x?}");
            assert_eq!(v.feed(second), Err(Utf8Error), "{second:02x?}");
        }
    }

    #[test]
    fn truncated_end_fails_only_at_finish() {
        for tail in [&b"\xc2"[..], b"\xe2\x82", b"\xf0\x9f\xa6", b"\xf4\x8f"] {
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(b"abc"), Ok(()));
            assert_eq!(v.feed(tail), Ok(()));
            assert_eq!(v.finish(), Err(Utf8Error));
            // finish reset the carry.
            assert_eq!(v.feed(b"\x80"), Err(Utf8Error));
        }
    }

    #[test]
    fn error_is_sticky_until_reset_or_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xff"), Err(Utf8Error));
        assert_eq!(v.feed(b"fine"), Err(Utf8Error));
        assert_eq!(v.finish(), Err(Utf8Error));
        assert_eq!(v.feed(b"fine"), Ok(()));
        assert_eq!(v.feed(b"\xff"), Err(Utf8Error));
        v.reset();
        assert_eq!(v.feed("€".as_bytes()), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn reset_forgets_the_carry() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xe2\x82"), Ok(()));
        v.reset();
        assert_eq!(v.feed(b"\xac"), Err(Utf8Error));
        v.reset();
        assert_eq!(v.feed(b"\xe2\x82"), Ok(()));
        v.reset();
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn long_pieces_take_the_simd_path() {
        let text = "Grüße κόσμε 漢字 🦀 ".repeat(200);
        let bytes = text.as_bytes();
        for cut in [1, 63, 64, 65, 1000, 1001, 1002, 1003, bytes.len() - 1] {
            check_pieces(bytes, &[cut]);
        }
        let mut bad = bytes.to_vec();
        bad[2000] = 0xff;
        for cut in [0, 1999, 2000, 2001, 3000] {
            check_pieces(&bad, &[cut]);
        }
    }

    /// Mostly valid UTF-8, sometimes with one byte replaced or the last byte dropped, and
    /// sometimes raw bytes.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let text = any::<String>().prop_map(String::into_bytes);
        prop_oneof![
            3 => text.clone(),
            3 => (text.clone(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
                |(mut b, i, x)| {
                    if !b.is_empty() {
                        let i = i.index(b.len());
                        b[i] = x;
                    }
                    b
                }
            ),
            1 => text.prop_map(|mut b| {
                b.pop();
                b
            }),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        // Miri interprets every case (several seconds each); two still reach the code under it.
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 2048 }))]

        /// Piecewise validation at random cut points agrees with `std::str::from_utf8` on
        /// the whole, and fails exactly at the piece holding the first impossible byte.
        #[test]
        fn prop_pieces_match_std_and_fail_fast(
            bytes in message(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            check_pieces(&bytes, &cuts);
        }
    }
}
