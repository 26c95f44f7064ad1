//! The frame header codec (RFC 6455 §5.2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               | Masking-key, if MASK set to 1 |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! # Panics
//! [`decode`] never panics, whatever the input: short input is [`Decoded::Need`].
//! [`FrameHeader::encode_into`] panics only if the buffer is shorter than
//! [`FrameHeader::encoded_len`].
//!
//! ```
//! use ringcast::protocol::frame::{decode, Decoded, FrameHeader, OpCode};
//! let h = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some([1, 2, 3, 4]), len: 70_000 };
//! let mut buf = [0u8; 14];
//! let n = h.encode_into(&mut buf);
//! assert_eq!(n, h.encoded_len());
//! assert_eq!(decode(&buf[..n]).unwrap(), Decoded::Header(h, n));
//! ```

#![forbid(unsafe_code)]

use super::error::ProtocolError;

/// The longest header: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;
/// The longest control frame payload (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

mod field {
    pub(super) const FIN: u8 = 0x80;
    pub(super) const RSV: u8 = 0x70;
    pub(super) const OPCODE: u8 = 0x0F;
    pub(super) const MASK: u8 = 0x80;
    pub(super) const LEN7: u8 = 0x7F;
    pub(super) const LEN_16: u8 = 126;
    pub(super) const LEN_64: u8 = 127;
}

/// A frame opcode (§5.2); reserved values are rejected by [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: a text message (UTF-8).
    Text,
    /// 0x2: a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Parses a wire value.
    ///
    /// # Errors
    /// [`ProtocolError::ReservedOpcode`] for 0x3-0x7 and 0xB-0xF.
    pub const fn try_from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// Close, ping and pong.
    pub const fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A decoded (or to-be-encoded) frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

/// The result of [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A complete header of this many bytes; the payload follows it.
    Header(FrameHeader, usize),
    /// The header is incomplete: at least this many bytes are needed in total.
    Need(usize),
}

/// Decodes the header at the start of `buf`, checking the rules a header alone can
/// break: reserved opcodes, control frames that are long or fragmented, and the minimal,
/// top-bit-clear length encoding. RSV bits and masking are left to the caller, which knows
/// its role and the negotiated extensions.
///
/// # Errors
/// The [`ProtocolError`] for the broken rule.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProtocolError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(Decoded::Need(2));
    };
    let opcode = OpCode::try_from_u8(b0 & field::OPCODE)?;
    let fin = b0 & field::FIN != 0;
    let masked = b1 & field::MASK != 0;
    let len7 = b1 & field::LEN7;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if len7 > MAX_CONTROL_PAYLOAD as u8 {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let ext = match len7 {
        field::LEN_16 => 2,
        field::LEN_64 => 8,
        _ => 0,
    };
    let total = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < total {
        return Ok(Decoded::Need(total));
    }
    let len = match len7 {
        field::LEN_16 => {
            let l = u64::from(u16::from_be_bytes([rest[0], rest[1]]));
            if l < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            l
        }
        field::LEN_64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[..8]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 {
                return Err(ProtocolError::LengthTopBit);
            }
            if l <= u64::from(u16::MAX) {
                return Err(ProtocolError::NonMinimalLength);
            }
            l
        }
        l => u64::from(l),
    };
    let mask = masked.then(|| {
        let k = &rest[ext..ext + 4];
        [k[0], k[1], k[2], k[3]]
    });
    Ok(Decoded::Header(
        FrameHeader {
            fin,
            rsv: (b0 & field::RSV) >> 4,
            opcode,
            mask,
            len,
        },
        total,
    ))
}

impl FrameHeader {
    /// A final, unmasked header (the server's frames).
    pub const fn server(opcode: OpCode, len: u64) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            len,
        }
    }

    /// Bytes [`encode_into`](Self::encode_into) writes.
    pub const fn encoded_len(&self) -> usize {
        let ext = if self.len < 126 {
            0
        } else if self.len <= u16::MAX as u64 {
            2
        } else {
            8
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header with the shortest length form; returns the bytes written.
    ///
    /// # Panics
    /// If `out` is shorter than [`encoded_len`](Self::encoded_len).
    pub fn encode_into(&self, out: &mut [u8]) -> usize {
        let fin = if self.fin { field::FIN } else { 0 };
        out[0] = fin | ((self.rsv << 4) & field::RSV) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { field::MASK } else { 0 };
        let mut n = 2;
        if self.len < 126 {
            out[1] = mask_bit | self.len as u8;
        } else if self.len <= u64::from(u16::MAX) {
            out[1] = mask_bit | field::LEN_16;
            out[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
            n = 4;
        } else {
            out[1] = mask_bit | field::LEN_64;
            out[2..10].copy_from_slice(&self.len.to_be_bytes());
            n = 10;
        }
        if let Some(key) = self.mask {
            out[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        n
    }
}

#[cfg(test)]
mod tests;
