//! The server side of RFC 6455 written out by hand, for scripted fake servers that make
//! the faults a real server must not: blocking sockets, one thread per connection.

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// An upgrade request as far as the fakes care.
#[derive(Debug)]
pub(crate) struct Request {
    /// Path and query.
    pub(crate) path: String,
    /// `Sec-WebSocket-Key`.
    pub(crate) key: String,
    /// `Sec-WebSocket-Protocol`, if offered.
    pub(crate) protocol: Option<String>,
}

/// Reads a request head (`None` if the peer went away first).
pub(crate) fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).ok()?;
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    Some(Request {
        path: text.split_whitespace().nth(1)?.to_owned(),
        key: header("sec-websocket-key")?,
        protocol: header("sec-websocket-protocol"),
    })
}

/// The 101 answering `key`, selecting `protocol` if given.
pub(crate) fn response(key: &str, protocol: Option<&str>) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let proto = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{proto}\r\n"
    )
}

/// An unmasked, final server frame.
pub(crate) fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=65535 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Reads one masked client frame: (opcode, unmasked payload).
pub(crate) fn read_client_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    assert_eq!(h[1] & 0x80, 0x80, "client frames are masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    s.read_exact(&mut key).ok()?;
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Some((h[0] & 0x0f, payload))
}

/// Answers a close frame's `payload` with the same close and ends the write side.
pub(crate) fn echo_close(s: &mut TcpStream, payload: &[u8]) {
    let _ = s.write_all(&server_frame(0x8, payload));
}
