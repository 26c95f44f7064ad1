//! The message format on the broker: a small header, then the payload as published.
//!
//! ```text
//!  0      2   3   4            12           20  21          21+n
//!  ┌──────┬───┬───┬────────────┬────────────┬───┬────────────┬──────────
//!  │ C1 72│ 1 │ op│ seq (u64BE)│ sent µs BE │ n │ origin (n) │ payload …
//!  └──────┴───┴───┴────────────┴────────────┴───┴────────────┴──────────
//! ```
//!
//! - magic `0xC1 0x72`: `0xC1` never occurs in UTF-8, so no text published by another
//!   program starts with it; version `1`;
//! - `op`: 1 text, 2 binary;
//! - `seq`: the topic's sequence number when the broker side assigned it in the message
//!   (Redis), else 0 (NATS: the stream sequence comes in the `Nats-Sequence` header);
//! - `sent`: microseconds since the Unix epoch at the publishing node (for the
//!   remote-to-local latency histogram; nodes of one cluster share a clock well enough);
//! - `origin`: the publishing node's id, 1 to 64 bytes.
//!
//! A message that does not start with the magic is **foreign** (published by another
//! program): text when it is valid UTF-8, else binary. [`decode`] never panics, whatever
//! the bytes.

use crate::protocol::frame::OpCode;

/// The first two bytes of a ringcast message.
pub(crate) const MAGIC: [u8; 2] = [0xC1, 0x72];
/// The format's version.
pub(crate) const VERSION: u8 = 1;
/// Longest node id.
pub(crate) const MAX_ORIGIN: usize = 64;

mod field {
    use std::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..2;
    pub(super) const VERSION: usize = 2;
    pub(super) const OP: usize = 3;
    pub(super) const SEQ: Range<usize> = 4..12;
    pub(super) const SENT: Range<usize> = 12..20;
    pub(super) const ORIGIN_LEN: usize = 20;
    pub(super) const ORIGIN: usize = 21;
}

/// A message read from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    /// Text or binary.
    pub(crate) opcode: OpCode,
    /// The sequence number carried (0: none).
    pub(crate) seq: u64,
    /// When the publishing node sent it (µs since the epoch; 0: unknown).
    pub(crate) sent_us: u64,
    /// The publishing node (`None`: a foreign message).
    pub(crate) origin: Option<&'a [u8]>,
    /// The payload as published.
    pub(crate) payload: &'a [u8],
}

/// Why a message that starts with the magic cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Shorter than its header says.
    #[error("truncated ringcast header")]
    Truncated,
    /// A version this node does not know.
    #[error("unknown ringcast wire version {0}")]
    Version(u8),
    /// Neither text nor binary.
    #[error("unknown opcode {0}")]
    OpCode(u8),
    /// An empty or too long origin.
    #[error("bad origin length {0}")]
    Origin(u8),
}

/// The header's length for an origin of `origin_len` bytes.
pub(crate) fn header_len(origin_len: usize) -> usize {
    field::ORIGIN + origin_len
}

/// Appends the header and then `payload` to `out`.
///
/// # Panics
/// If `origin` is empty or longer than [`MAX_ORIGIN`] (node ids are checked at start).
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    opcode: OpCode,
    seq: u64,
    sent_us: u64,
    origin: &[u8],
    payload: &[u8],
) {
    assert!(
        (1..=MAX_ORIGIN).contains(&origin.len()),
        "node id of 1 to {MAX_ORIGIN} bytes"
    );
    out.reserve(header_len(origin.len()) + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(if opcode == OpCode::Binary { 2 } else { 1 });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&sent_us.to_be_bytes());
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out.extend_from_slice(payload);
}

/// Reads a message from the broker: a ringcast one, or a foreign one.
///
/// # Errors
/// A message that starts with the magic but is not a valid ringcast message.
pub(crate) fn decode(buf: &[u8]) -> Result<Message<'_>, WireError> {
    if buf.get(field::MAGIC) != Some(&MAGIC[..]) {
        let opcode = if simdutf8::basic::from_utf8(buf).is_ok() {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        return Ok(Message {
            opcode,
            seq: 0,
            sent_us: 0,
            origin: None,
            payload: buf,
        });
    }
    if buf.len() < field::ORIGIN {
        return Err(WireError::Truncated);
    }
    if buf[field::VERSION] != VERSION {
        return Err(WireError::Version(buf[field::VERSION]));
    }
    let opcode = match buf[field::OP] {
        1 => OpCode::Text,
        2 => OpCode::Binary,
        op => return Err(WireError::OpCode(op)),
    };
    let u64_at = |r: std::ops::Range<usize>| {
        let mut b = [0; 8];
        b.copy_from_slice(&buf[r]);
        u64::from_be_bytes(b)
    };
    let n = buf[field::ORIGIN_LEN];
    if n == 0 || usize::from(n) > MAX_ORIGIN {
        return Err(WireError::Origin(n));
    }
    let end = header_len(usize::from(n));
    if buf.len() < end {
        return Err(WireError::Truncated);
    }
    Ok(Message {
        opcode,
        seq: u64_at(field::SEQ),
        sent_us: u64_at(field::SENT),
        origin: Some(&buf[field::ORIGIN..end]),
        payload: &buf[end..],
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode_into(&mut out, OpCode::Binary, 42, 7, b"node-a", &[0, 1, 0xff]);
        assert_eq!(out.len(), header_len(6) + 3);
        assert_eq!(&out[..4], &[0xC1, 0x72, 1, 2]);
        let m = decode(&out).unwrap();
        assert_eq!(
            m,
            Message {
                opcode: OpCode::Binary,
                seq: 42,
                sent_us: 7,
                origin: Some(b"node-a"),
                payload: &[0, 1, 0xff],
            }
        );
    }

    #[test]
    fn foreign_messages_are_text_when_utf8() {
        let m = decode("héllo".as_bytes()).unwrap();
        assert_eq!(
            (m.opcode, m.origin, m.payload),
            (OpCode::Text, None, "héllo".as_bytes())
        );
        let m = decode(&[0xff, 0]).unwrap();
        assert_eq!((m.opcode, m.origin), (OpCode::Binary, None));
        assert_eq!(decode(b"").unwrap().opcode, OpCode::Text);
        // The magic's first byte alone is foreign binary.
        assert_eq!(decode(&[0xC1]).unwrap().opcode, OpCode::Binary);
    }

    #[test]
    fn bad_headers_are_errors() {
        let mut ok = Vec::new();
        encode_into(&mut ok, OpCode::Text, 1, 2, b"n", b"x");
        assert_eq!(decode(&ok[..10]), Err(WireError::Truncated));
        assert_eq!(decode(&ok[..21]), Err(WireError::Truncated));
        let mut v = ok.clone();
        v[2] = 9;
        assert_eq!(decode(&v), Err(WireError::Version(9)));
        let mut v = ok.clone();
        v[3] = 8;
        assert_eq!(decode(&v), Err(WireError::OpCode(8)));
        let mut v = ok.clone();
        v[20] = 0;
        assert_eq!(decode(&v), Err(WireError::Origin(0)));
        let mut v = ok;
        v[20] = 65;
        assert_eq!(decode(&v), Err(WireError::Origin(65)));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_after_the_magic(
            rest in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.extend_from_slice(&rest);
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_inverts_encode(
            binary in any::<bool>(),
            seq in any::<u64>(),
            sent in any::<u64>(),
            origin in proptest::collection::vec(any::<u8>(), 1..=MAX_ORIGIN),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let opcode = if binary { OpCode::Binary } else { OpCode::Text };
            let mut out = Vec::new();
            encode_into(&mut out, opcode, seq, sent, &origin, &payload);
            prop_assert_eq!(out.len(), header_len(origin.len()) + payload.len());
            let m = decode(&out).unwrap();
            prop_assert_eq!(m, Message {
                opcode, seq, sent_us: sent, origin: Some(&origin), payload: &payload,
            });
        }
    }
}
