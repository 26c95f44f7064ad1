//! Client-side RFC 6455 framing: masked frames out, unmasked server frames in.
//!
//! Contract (as in the engine's `protocol` module):
//! - Nothing here panics on bytes a server sent. [`decode`] returns [`Decoded::Need`]
//!   for short input and a [`FrameError`] for a violation.
//! - [`read_frames`] parses in place from the caller's buffer (the reactor thread's read
//!   buffer) and hands out borrowed [`Event`]s: no allocation per message. It consumes
//!   whole frames only; the caller keeps the unconsumed tail for the next read.
//! - Only the first [`HEAD_LEN`] bytes of a fragmented message are kept (in
//!   [`FrameState`]): that is where the payload stamp lives (behind the `ringcast.v1`
//!   envelope's topic and sequence number, when there is one), and all loadgen looks at.
//! - UTF-8 of text messages is not validated: loadgen measures, it does not police.

use thiserror::Error;

/// Bytes of a message kept across fragments: a `ringcast.v1` envelope head (a topic of up
/// to 255 bytes, the sequence number) and the payload stamp behind it.
pub(crate) const HEAD_LEN: usize = 320;
/// Largest frame loadgen accepts (its read buffer grows up to this).
pub(crate) const MAX_FRAME: u64 = 64 << 20;

/// Frame opcodes (RFC 6455 §5.2).
pub(crate) mod opcode {
    /// Continuation of a fragmented message.
    pub(crate) const CONTINUATION: u8 = 0x0;
    /// Text message.
    pub(crate) const TEXT: u8 = 0x1;
    /// Binary message.
    pub(crate) const BINARY: u8 = 0x2;
    /// Close.
    pub(crate) const CLOSE: u8 = 0x8;
    /// Ping.
    pub(crate) const PING: u8 = 0x9;
    /// Pong.
    pub(crate) const PONG: u8 = 0xA;
}

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const OPCODE: u8 = 0x0F;
const MASK: u8 = 0x80;
const LEN7: u8 = 0x7F;
const LEN16_MARK: u8 = 126;
const LEN64_MARK: u8 = 127;

/// A server frame that breaks RFC 6455.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// RSV1-3 set without a negotiated extension (§5.2).
    #[error("reserved bits set without an extension")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame with more than 125 bytes or without FIN (§5.5).
    #[error("control frame too long or fragmented")]
    BadControl,
    /// A server frame with the mask bit set (§5.1: the client must close).
    #[error("masked frame from the server")]
    Masked,
    /// The 64-bit length has its most significant bit set (§5.2).
    #[error("64-bit length with the top bit set")]
    LengthMsb,
    /// A frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds loadgen's limit")]
    TooLarge(u64),
    /// A continuation without a message to continue, or a new message mid-message.
    #[error("bad fragmentation sequence")]
    Fragmentation,
    /// A close frame with a one-byte payload (§5.5.1).
    #[error("close frame with a one-byte payload")]
    CloseLength,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Final fragment.
    pub(crate) fin: bool,
    /// Opcode (see [`opcode`]).
    pub(crate) opcode: u8,
    /// Header length in bytes (2, 4 or 10: servers never mask).
    pub(crate) header_len: usize,
    /// Payload length.
    pub(crate) payload_len: u64,
}

/// What [`decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// At least this many bytes in total are needed to decode the header.
    Need(usize),
    /// A complete header (the payload may still be incomplete).
    Header(Header),
}

/// Decodes a server frame header from the start of `buf`.
///
/// # Errors
/// A [`FrameError`] for a header a server may not send.
pub(crate) fn decode(buf: &[u8]) -> Result<Decoded, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(Decoded::Need(2));
    };
    if b0 & RSV != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & FIN != 0;
    let op = b0 & OPCODE;
    let control = match op {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => false,
        opcode::CLOSE | opcode::PING | opcode::PONG => true,
        other => return Err(FrameError::UnknownOpcode(other)),
    };
    if b1 & MASK != 0 {
        return Err(FrameError::Masked);
    }
    let (header_len, payload_len) = match b1 & LEN7 {
        LEN16_MARK => match buf.get(2..4) {
            Some(&[a, b]) => (4, u64::from(u16::from_be_bytes([a, b]))),
            _ => return Ok(Decoded::Need(4)),
        },
        LEN64_MARK => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(b) => (10, u64::from_be_bytes(b)),
            None => return Ok(Decoded::Need(10)),
        },
        n => (2, u64::from(n)),
    };
    if payload_len >> 63 != 0 {
        return Err(FrameError::LengthMsb);
    }
    if control && (payload_len > 125 || !fin) {
        return Err(FrameError::BadControl);
    }
    if payload_len > MAX_FRAME {
        return Err(FrameError::TooLarge(payload_len));
    }
    Ok(Decoded::Header(Header {
        fin,
        opcode: op,
        header_len,
        payload_len,
    }))
}

/// XORs `buf` with the repeating 4-byte `key`, starting at key byte 0.
pub(crate) fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let k8 = [
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ];
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        for (b, k) in chunk.iter_mut().zip(k8) {
            *b ^= k;
        }
    }
    // Chunks are multiples of 4 bytes long, so the remainder starts at key phase 0.
    for (b, k) in chunks.into_remainder().iter_mut().zip(k8) {
        *b ^= k;
    }
}

/// Appends the header of a masked, final client frame of `len` payload bytes; the
/// caller appends the payload and masks it with [`apply_mask`] (or uses [`encode_into`]).
pub(crate) fn header_into(out: &mut Vec<u8>, op: u8, len: usize, key: [u8; 4]) {
    out.push(FIN | op);
    if len < usize::from(LEN16_MARK) {
        out.push(MASK | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(MASK | LEN16_MARK);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(MASK | LEN64_MARK);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
}

/// Bytes [`header_into`] writes for a payload of `len`.
pub(crate) fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 6,
        126..=65535 => 8,
        _ => 14,
    }
}

/// Appends a complete masked, final client frame carrying `payload`.
pub(crate) fn encode_into(out: &mut Vec<u8>, op: u8, payload: &[u8], key: [u8; 4]) {
    header_into(out, op, payload.len(), key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

/// A message or control frame parsed by [`read_frames`], borrowing the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// A complete data message. `head` is the whole payload of an unfragmented message,
    /// or the first [`HEAD_LEN`] bytes of a fragmented one; `len` is its full length.
    Message {
        /// [`opcode::TEXT`] or [`opcode::BINARY`].
        opcode: u8,
        /// Payload, or its first [`HEAD_LEN`] bytes when fragmented.
        head: &'a [u8],
        /// Full payload length.
        len: u64,
    },
    /// A ping; answer with a pong carrying `payload`.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame: status code (if any) and reason bytes.
    Close(Option<u16>, &'a [u8]),
}

/// Per-connection state carried between reads: the head of a fragmented message.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameState {
    /// Opcode of the message being reassembled, 0 when none.
    frag_opcode: u8,
    /// Allocated on the first fragmented message only; its capacity is reused.
    head: Vec<u8>,
    total: u64,
}

/// Outcome of [`read_frames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes of whole frames consumed from the front of the buffer.
    pub(crate) consumed: usize,
    /// Total bytes the next frame needs from `consumed` on, when known; the caller's
    /// buffer must be able to hold that many.
    pub(crate) need: usize,
}

/// Parses every complete frame at the front of `buf`, calling `sink` for each message and
/// control frame; stops early if `sink` returns `false` (after a close, say).
///
/// # Errors
/// A [`FrameError`] on a protocol violation; the connection should then be dropped.
pub(crate) fn read_frames(
    buf: &[u8],
    state: &mut FrameState,
    mut sink: impl FnMut(Event<'_>) -> bool,
) -> Result<Progress, FrameError> {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let h = match decode(rest)? {
            Decoded::Need(n) => {
                return Ok(Progress {
                    consumed: pos,
                    need: n,
                });
            }
            Decoded::Header(h) => h,
        };
        // Bounded by MAX_FRAME in `decode`, so it fits a usize.
        let total = h.header_len + h.payload_len as usize;
        let Some(payload) = rest.get(h.header_len..total) else {
            return Ok(Progress {
                consumed: pos,
                need: total,
            });
        };
        pos += total;
        let go_on = match h.opcode {
            opcode::TEXT | opcode::BINARY => {
                if state.frag_opcode != 0 {
                    return Err(FrameError::Fragmentation);
                }
                if h.fin {
                    sink(Event::Message {
                        opcode: h.opcode,
                        head: payload,
                        len: h.payload_len,
                    })
                } else {
                    state.frag_opcode = h.opcode;
                    state.head.clear();
                    state.total = 0;
                    state.push(payload);
                    true
                }
            }
            opcode::CONTINUATION => {
                if state.frag_opcode == 0 {
                    return Err(FrameError::Fragmentation);
                }
                state.push(payload);
                if h.fin {
                    let op = state.frag_opcode;
                    state.frag_opcode = 0;
                    sink(Event::Message {
                        opcode: op,
                        head: &state.head,
                        len: state.total,
                    })
                } else {
                    true
                }
            }
            opcode::PING => sink(Event::Ping(payload)),
            opcode::PONG => sink(Event::Pong),
            _ => match *payload {
                [] => sink(Event::Close(None, &[])),
                [_] => return Err(FrameError::CloseLength),
                [a, b, ref reason @ ..] => {
                    sink(Event::Close(Some(u16::from_be_bytes([a, b])), reason))
                }
            },
        };
        if !go_on {
            return Ok(Progress {
                consumed: pos,
                need: 0,
            });
        }
    }
}

impl FrameState {
    fn push(&mut self, payload: &[u8]) {
        let take = payload.len().min(HEAD_LEN - self.head.len());
        self.head.extend_from_slice(&payload[..take]);
        self.total += payload.len() as u64;
    }
}

#[cfg(test)]
mod tests;
