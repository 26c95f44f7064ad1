//! Encoding server frames once into shared buffers.

#![forbid(unsafe_code)]

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::close::{CloseCode, CloseFrame};
use crate::protocol::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};

/// Encodes an unmasked, final frame (header and payload) into one buffer.
pub fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
    frame_into(opcode, payload, &mut buf);
    buf.freeze()
}

/// Appends an unmasked, final frame to `buf`.
pub fn frame_into(opcode: OpCode, payload: &[u8], buf: &mut BytesMut) {
    let header = FrameHeader::server(opcode, payload.len() as u64);
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = header.encode_into(&mut h);
    buf.reserve(n + payload.len());
    buf.put_slice(&h[..n]);
    buf.put_slice(payload);
}

/// Encodes a close frame with `code` and `reason` (cut to fit a control frame).
pub fn close(code: CloseCode, reason: &str) -> Bytes {
    let mut p = [0u8; 125];
    let n = CloseFrame::encode_into(code, reason, &mut p);
    frame(OpCode::Close, &p[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Decoded, decode};

    #[test]
    fn frame_is_header_then_payload() {
        for len in [0usize, 1, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let f = frame(OpCode::Binary, &payload);
            let Decoded::Header(h, n) = decode(&f).unwrap() else {
                panic!("incomplete")
            };
            assert_eq!(h, FrameHeader::server(OpCode::Binary, len as u64));
            assert_eq!(&f[n..], &payload[..]);
        }
    }
}
