//! Frames the client sends, of any shape: masked or not, any length encoding, reserved
//! bits and opcodes, fragments.

#![allow(dead_code)]

use super::*;

/// How a client frame is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Masking {
    /// A fresh key from the client's generator (the normal case).
    Auto,
    /// This key.
    Key([u8; 4]),
    /// No mask bit, no key: a protocol violation for a client.
    None,
}

/// How the payload length is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    /// The minimal encoding (7, 16 or 64 bits).
    Minimal,
    /// Always the 16-bit form (126), even when 7 bits would do.
    Ext16,
    /// Always the 64-bit form (127), even when fewer bits would do.
    Ext64,
    /// The 64-bit form declaring this length, whatever the payload actually sent.
    Declared64(u64),
}

/// A frame as the client will write it; any field may be invalid on purpose.
#[derive(Clone)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    /// The three RSV bits, RSV1 = 0b100.
    pub(crate) rsv: u8,
    /// Four bits; reserved values are allowed.
    pub(crate) opcode: u8,
    pub(crate) masking: Masking,
    pub(crate) length: Length,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    pub(crate) fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            masking: Masking::Auto,
            length: Length::Minimal,
            payload: payload.into(),
        }
    }
    pub(crate) fn text(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::TEXT, payload.as_ref())
    }
    pub(crate) fn binary(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(op::BINARY, payload)
    }
    pub(crate) fn continuation(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::CONTINUATION, payload.as_ref())
    }
    pub(crate) fn ping(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::PING, payload.as_ref())
    }
    pub(crate) fn pong(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::PONG, payload.as_ref())
    }
    /// A close frame with a code and reason.
    pub(crate) fn close(code: u16, reason: impl AsRef<[u8]>) -> Self {
        Self::new(op::CLOSE, close_payload(code, reason.as_ref()))
    }
    /// A close frame with an empty payload.
    pub(crate) fn close_empty() -> Self {
        Self::new(op::CLOSE, Vec::new())
    }
    pub(crate) fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }
    pub(crate) fn rsv(mut self, rsv: u8) -> Self {
        assert!(rsv < 8, "three RSV bits");
        self.rsv = rsv;
        self
    }
    pub(crate) fn unmasked(mut self) -> Self {
        self.masking = Masking::None;
        self
    }
    pub(crate) fn key(mut self, key: [u8; 4]) -> Self {
        self.masking = Masking::Key(key);
        self
    }
    pub(crate) fn length(mut self, length: Length) -> Self {
        self.length = length;
        self
    }

    /// The wire bytes, masking with `auto_key` when the masking is [`Masking::Auto`].
    pub(crate) fn encode(&self, auto_key: [u8; 4]) -> Vec<u8> {
        let len = self.payload.len() as u64;
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 0xF));
        let mask_bit = if self.masking == Masking::None {
            0
        } else {
            0x80
        };
        match self.length {
            Length::Minimal if len < 126 => out.push(mask_bit | len as u8),
            Length::Minimal if len <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Length::Minimal | Length::Ext64 => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Length::Ext16 => {
                let len = u16::try_from(len).expect("payload too long for a 16-bit length");
                out.push(mask_bit | 126);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Length::Declared64(declared) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&declared.to_be_bytes());
            }
        }
        let key = match self.masking {
            Masking::Auto => Some(auto_key),
            Masking::Key(key) => Some(key),
            Masking::None => None,
        };
        match key {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("fin", &self.fin)
            .field("rsv", &self.rsv)
            .field("opcode", &self.opcode)
            .field("masking", &self.masking)
            .field("length", &self.length)
            .field("payload", &Abbrev(&self.payload))
            .finish()
    }
}

/// Debug-prints at most 48 bytes of a payload.
pub(crate) struct Abbrev<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Abbrev<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(48)];
        write!(f, "{} bytes [{}", self.0.len(), hex(shown))?;
        if shown.len() < self.0.len() {
            write!(f, " …")?;
        }
        write!(f, "]")
    }
}

/// A message of `opcode` split into fragments of `size` bytes (the last may be shorter), like a
/// client that auto-fragments. An empty payload gives one empty frame.
pub(crate) fn fragments(opcode: u8, payload: &[u8], size: usize) -> Vec<Frame> {
    if payload.is_empty() {
        return vec![Frame::new(opcode, Vec::new())];
    }
    let count = payload.len().div_ceil(size);
    payload
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            Frame::new(if i == 0 { opcode } else { op::CONTINUATION }, chunk).fin(i == count - 1)
        })
        .collect()
}
