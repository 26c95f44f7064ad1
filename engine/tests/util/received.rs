//! Frames the server sends, as the raw client reads them.

#![allow(dead_code)]

use super::*;

/// A frame read from the server.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl Received {
    /// The code of a close frame, `None` for an empty close payload.
    pub(crate) fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
    pub(crate) fn describe(&self) -> String {
        match self.opcode {
            op::CLOSE => format!(
                "Close(code {:?}, reason {:?})",
                self.close_code(),
                String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default())
            ),
            _ => format!("{self:?}"),
        }
    }
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("fin", &self.fin)
            .field("rsv", &self.rsv)
            .field("opcode", &self.opcode)
            .field("payload", &Abbrev(&self.payload))
            .finish()
    }
}

/// The total length of the server frame at the start of `buf`, once its header is complete.
/// Panics when the header breaks what a server must do (RFC 6455 §5.1, §5.2).
pub(crate) fn server_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(
        buf[1] & 0x80,
        0,
        "server frame is masked (RFC 6455 §5.1): header {}",
        hex(&buf[..2])
    );
    let (len, header) = match buf[1] & 0x7F {
        126 => {
            let ext = buf.get(2..4)?;
            let len = u64::from(u16::from_be_bytes([ext[0], ext[1]]));
            assert!(len >= 126, "server used a non-minimal 16-bit length {len}");
            (len, 4)
        }
        127 => {
            let ext: [u8; 8] = buf.get(2..10)?.try_into().expect("8 bytes");
            let len = u64::from_be_bytes(ext);
            assert!(
                len > 0xFFFF,
                "server used a non-minimal 64-bit length {len}"
            );
            assert!(len >> 63 == 0, "server set the top bit of a 64-bit length");
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    Some(header + usize::try_from(len).expect("frame length fits usize"))
}
