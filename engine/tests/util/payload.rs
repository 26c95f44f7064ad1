//! Payloads and small encodings the tests build: patterned binary and text payloads,
//! close payloads, the handshake's accept key.

#![allow(dead_code)]

use super::*;

/// `len` deterministic bytes covering all byte values.
pub(crate) fn binary_payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// Valid UTF-8 of exactly `len` bytes, mixing 1- to 4-byte sequences so that they straddle
/// frame and read boundaries.
pub(crate) fn text_payload(len: usize) -> String {
    const PATTERN: &str = "Hello-µ@ßöäü-κόσμε-€-𝄞-UTF-8!! ";
    let mut s = String::with_capacity(len);
    'fill: while s.len() < len {
        for c in PATTERN.chars() {
            if s.len() + c.len_utf8() > len {
                break 'fill;
            }
            s.push(c);
        }
    }
    while s.len() < len {
        s.push('x');
    }
    s
}

/// A close frame payload: the code in network order, then the reason.
pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// The `Sec-WebSocket-Accept` value for a key (RFC 6455 §4.2.2), computed independently of the
/// engine.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Formats bytes as hex for case names and messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
