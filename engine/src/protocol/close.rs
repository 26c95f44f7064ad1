//! Close codes (RFC 6455 §7.4) and the close frame payload (§5.5.1).
//!
//! A close payload is empty, or a big-endian `u16` code followed by a UTF-8 reason.
//! [`CloseFrame::decode`] checks both the code and the reason's UTF-8, so every close the
//! connection echoes is one the peer may legally have sent.

#![forbid(unsafe_code)]

use super::error::ProtocolError;

/// The largest reason that fits a control frame beside its 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, idle timeout).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: Self = Self(1003);
    /// 1005: no code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: payload inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation (also used for slow consumers).
    pub const POLICY: Self = Self(1008);
    /// 1009: message too big.
    pub const TOO_BIG: Self = Self(1009);
    /// 1011: internal server error.
    pub const INTERNAL: Self = Self(1011);
    /// 1013: try again later (IANA registry): the server is short of a resource for now.
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Whether this code may appear in a close frame on the wire (§7.4.1, §7.4.2, and the
    /// IANA registry: 1012-1014 are registered; 1004-1006 and 1015 are reserved).
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A decoded close frame payload, borrowing the reason from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The code, or `None` when the payload was empty (reported as 1005).
    pub code: Option<CloseCode>,
    /// The reason text (validated UTF-8; empty when absent).
    pub reason: &'a str,
}

impl<'a> CloseFrame<'a> {
    /// Decodes and validates a close payload (§5.5.1, §7.4).
    ///
    /// # Errors
    /// [`ProtocolError::CloseTooShort`] for a 1-byte payload,
    /// [`ProtocolError::InvalidCloseCode`] for a code not allowed on the wire, and
    /// [`ProtocolError::InvalidUtf8`] for a reason that is not UTF-8.
    pub fn decode(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        match payload {
            [] => Ok(Self {
                code: None,
                reason: "",
            }),
            [_] => Err(ProtocolError::CloseTooShort),
            [hi, lo, rest @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason =
                    simdutf8::basic::from_utf8(rest).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Self {
                    code: Some(code),
                    reason,
                })
            }
        }
    }

    /// Writes `code` and as much of `reason` as fits (cut at a char boundary) into `out`;
    /// returns the payload length (2..=125).
    pub fn encode_into(code: CloseCode, reason: &str, out: &mut [u8; 125]) -> usize {
        out[..2].copy_from_slice(&code.0.to_be_bytes());
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        out[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        2 + end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_follows_rfc_and_registry() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok}");
        }
        for ok in [3000, 3999, 4000, 4999] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_valid_on_wire(), "{bad}");
        }
    }

    #[test]
    fn decode_checks_length_code_and_reason() {
        assert_eq!(CloseFrame::decode(&[]).unwrap().code, None);
        assert_eq!(CloseFrame::decode(&[3]), Err(ProtocolError::CloseTooShort));
        assert_eq!(
            CloseFrame::decode(&[0x03, 0xED]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::decode(&[0x03, 0xE8, 0xFF]),
            Err(ProtocolError::InvalidUtf8)
        );
        let ok = CloseFrame::decode(b"\x03\xe8bye \xce\xba").unwrap();
        assert_eq!(ok.code, Some(CloseCode::NORMAL));
        assert_eq!(ok.reason, "bye κ");
    }

    #[test]
    fn encode_truncates_reason_at_char_boundary() {
        let mut out = [0u8; 125];
        let reason = "κ".repeat(100); // 200 bytes
        let n = CloseFrame::encode_into(CloseCode::POLICY, &reason, &mut out);
        assert!(n <= 125);
        let back = CloseFrame::decode(&out[..n]).unwrap();
        assert_eq!(back.code, Some(CloseCode::POLICY));
        assert_eq!(back.reason.len(), 122);
    }
}
