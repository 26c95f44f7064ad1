//! The `ringcast.v1` subprotocol's frames: publications in envelopes that name their topic
//! and sequence number, and the protocol's own messages (`gap`, `heartbeat`).
//!
//! ```text
//!  text:    {"topic":"BTC-USD","seq":42,"data":D}     D = the text if it is JSON, else a JSON string
//!  binary:  0x01 | topic length (u8) | topic | seq (u64 big-endian) | payload
//!  gap:     {"op":"gap","topic":"BTC-USD","from":42,"to":57}
//!  beat:    {"op":"heartbeat","seq":{"BTC-USD":42,"ETH-USD":7}}
//!  epoch:   {"op":"epoch","topic":"BTC-USD","epoch":"5f0c93a1d2e47b68"}
//!  reset:   {"op":"reset","topic":"BTC-USD","epoch":"5f0c93a1d2e47b68"}
//! ```
//!
//! Each is encoded once into a complete server frame, like any frame: an envelope is built
//! once per message (and shared by every subscriber on every reactor), a `gap` once per
//! event. Topic names are plain ASCII from a small set (`TopicRules`), so they need no
//! JSON escaping; the builders still escape, so any name produces valid JSON.

#![forbid(unsafe_code)]

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};

/// The subprotocol name a client offers in `Sec-WebSocket-Protocol`.
pub const PROTOCOL: &str = "ringcast.v1";

/// First byte of a binary envelope (its format version).
pub const BINARY_TAG: u8 = 0x01;

/// Whether `payload` is one JSON value (checked once per publication: it then goes into
/// the envelope verbatim).
pub fn is_json(payload: &[u8]) -> bool {
    // Skipping a value does not validate its strings' UTF-8: check that first.
    simdutf8::basic::from_utf8(payload).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// The envelope frame of publication `seq` of `topic`: text (`opcode` text; `json` says
/// whether the payload is JSON, see [`is_json`]) or binary.
///
/// # Panics
/// If a binary envelope's topic is over 255 bytes (the fan-out refuses such names before
/// they get here).
pub fn frame(topic: &str, seq: u64, opcode: OpCode, payload: &[u8], json: bool) -> Bytes {
    // Sized before it is written, header first: one buffer and one pass over the payload
    // (a 16 MiB payload of control characters becomes a 96 MiB JSON string).
    if opcode == OpCode::Binary {
        let len = u8::try_from(topic.len()).expect("topic names are at most 255 bytes");
        let mut out = head(opcode, 2 + topic.len() + 8 + payload.len());
        out.put_u8(BINARY_TAG);
        out.put_u8(len);
        out.put_slice(topic.as_bytes());
        out.put_u64(seq);
        out.put_slice(payload);
        return out.freeze();
    }
    let lossy;
    let (text, data_len) = if json {
        (payload, payload.len())
    } else {
        lossy = String::from_utf8_lossy(payload);
        (lossy.as_bytes(), quoted_len(lossy.as_bytes()))
    };
    let mut digits = [0; 20];
    let seq = itoa(seq, &mut digits);
    let topic = topic.as_bytes();
    let len = TEXT_HEAD.len() + quoted_len(topic) + SEQ.len() + seq.len() + DATA.len();
    let mut out = head(opcode, len + data_len + 1);
    out.put_slice(TEXT_HEAD);
    json_string(topic, &mut out);
    out.put_slice(SEQ);
    out.put_slice(seq);
    out.put_slice(DATA);
    if json {
        out.put_slice(text);
    } else {
        json_string(text, &mut out);
    }
    out.put_u8(b'}');
    out.freeze()
}

const TEXT_HEAD: &[u8] = b"{\"topic\":";
const SEQ: &[u8] = b",\"seq\":";
const DATA: &[u8] = b",\"data\":";

/// A buffer holding the header of a server frame whose body is `len` bytes, with room for
/// the body.
fn head(opcode: OpCode, len: usize) -> BytesMut {
    let header = FrameHeader::server(opcode, len as u64);
    let mut h = [0u8; MAX_HEADER_LEN];
    let n = header.encode_into(&mut h);
    let mut out = BytesMut::with_capacity(n + len);
    out.put_slice(&h[..n]);
    out
}

/// `{"op":"gap","topic":T,"from":F,"to":L}`: messages `from..=to` of `topic` will not be
/// delivered (no longer held, or skipped for a slow consumer).
pub fn gap(topic: &str, from: u64, to: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(topic.len() + 72);
    body.put_slice(b"{\"op\":\"gap\",\"topic\":");
    json_string(topic.as_bytes(), &mut body);
    body.put_slice(b",\"from\":");
    body.put_slice(itoa(from, &mut [0; 20]));
    body.put_slice(b",\"to\":");
    body.put_slice(itoa(to, &mut [0; 20]));
    body.put_u8(b'}');
    framed(OpCode::Text, &body)
}

/// `{"op":"epoch","topic":T,"epoch":E}`: the numbering `topic`'s sequence numbers belong
/// to, as 16 hex digits (sent when a subscription starts; a resume names it back).
pub fn epoch(topic: &str, epoch: u64) -> Bytes {
    numbering("epoch", topic, epoch)
}

/// `{"op":"reset","topic":T,"epoch":E}`: a resume named another numbering of `topic` than
/// its current one, `epoch` (the server restarted, or forgot the topic): the `since` it
/// gave means nothing here, and what follows starts with the new numbering's oldest
/// message held.
pub fn reset(topic: &str, epoch: u64) -> Bytes {
    numbering("reset", topic, epoch)
}

fn numbering(op: &str, topic: &str, epoch: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(topic.len() + 64);
    body.put_slice(b"{\"op\":\"");
    body.put_slice(op.as_bytes());
    body.put_slice(b"\",\"topic\":");
    json_string(topic.as_bytes(), &mut body);
    body.put_slice(format!(",\"epoch\":\"{epoch:016x}\"}}").as_bytes());
    framed(OpCode::Text, &body)
}

/// `{"op":"heartbeat","seq":{T:S,…}}`: the latest sequence number sent of each topic.
pub fn heartbeat<'a>(seqs: impl IntoIterator<Item = (&'a str, u64)>) -> Bytes {
    let mut body = BytesMut::with_capacity(128);
    body.put_slice(b"{\"op\":\"heartbeat\",\"seq\":{");
    for (i, (topic, seq)) in seqs.into_iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        json_string(topic.as_bytes(), &mut body);
        body.put_u8(b':');
        body.put_slice(itoa(seq, &mut [0; 20]));
    }
    body.put_slice(b"}}");
    framed(OpCode::Text, &body)
}

/// A complete server frame around `body`.
fn framed(opcode: OpCode, body: &[u8]) -> Bytes {
    let mut out = head(opcode, body.len());
    out.put_slice(body);
    out.freeze()
}

/// What each byte becomes inside a JSON string: itself (0), a two-byte escape (the
/// escape's letter), or `\u00XX` (`u`).
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// The length of `s` (UTF-8) as a JSON string, quotes included.
fn quoted_len(s: &[u8]) -> usize {
    let extra: usize = s
        .iter()
        .map(|&b| match ESCAPE[b as usize] {
            0 => 0,
            b'u' => 5,
            _ => 1,
        })
        .sum();
    s.len() + extra + 2
}

/// Writes `s` (UTF-8: every byte to escape is ASCII, never part of a longer character)
/// as a JSON string.
fn json_string(s: &[u8], out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put_u8(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.put_slice(&s[start..i]);
        if esc == b'u' {
            out.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.put_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    out.put_slice(&s[start..]);
    out.put_u8(b'"');
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Decoded, decode};

    fn body(f: &Bytes) -> (OpCode, &[u8]) {
        let Decoded::Header(h, n) = decode(f).unwrap() else {
            panic!("incomplete")
        };
        assert!(h.fin);
        assert_eq!(h.len as usize, f.len() - n);
        (h.opcode, &f[n..])
    }

    fn json(f: &Bytes) -> serde_json::Value {
        let (op, b) = body(f);
        assert_eq!(op, OpCode::Text);
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn text_envelopes() {
        let f = frame("BTC-USD", 42, OpCode::Text, br#"{"px":1.5}"#, true);
        assert_eq!(
            body(&f).1,
            br#"{"topic":"BTC-USD","seq":42,"data":{"px":1.5}}"#
        );
        let f = frame("t", 1, OpCode::Text, b"not \"json\"\n\x01", false);
        assert_eq!(
            json(&f),
            serde_json::json!({"topic":"t","seq":1,"data":"not \"json\"\n\u{1}"})
        );
        assert_eq!(
            json(&frame("t", u64::MAX, OpCode::Text, b"", false))["seq"],
            u64::MAX
        );
        assert_eq!(json(&frame("t", 0, OpCode::Text, b"7", true))["data"], 7);
    }

    /// Every byte value, quotes, backslashes and characters of every UTF-8 length come out
    /// as `serde_json` reads them back, at the length the frame was sized for; a payload
    /// that is not UTF-8 is taken lossily.
    #[test]
    fn json_strings_read_back_at_their_sized_length() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let cases = [
            all.as_str(),
            "",
            "plain",
            "\"\\\"",
            "é€😀\u{1}x\u{1f}\u{7f}",
            "\n\r\t\u{8}\u{c}",
        ];
        for s in cases {
            let mut out = BytesMut::new();
            json_string(s.as_bytes(), &mut out);
            assert_eq!(out.len(), quoted_len(s.as_bytes()), "{s:?}");
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
            let f = frame("t", 3, OpCode::Text, s.as_bytes(), false);
            assert_eq!(json(&f)["data"], s, "{s:?}");
        }
        let f = frame("t", 3, OpCode::Text, b"a\xffb", false);
        assert_eq!(json(&f)["data"], "a\u{fffd}b");
        let n = if cfg!(miri) { 1 << 8 } else { 1 << 16 };
        let f = frame("t", 3, OpCode::Text, &vec![1u8; n], false);
        assert_eq!(body(&f).1.len(), n * 6 + 31);
    }

    #[test]
    fn json_check() {
        for ok in [&b"1"[..], b" {\"a\":[1,2]} ", b"\"s\"", b"null"] {
            assert!(is_json(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b"hello",
            b"{\"a\":1",
            b"1 2",
            b"{} x",
            b"\"b\xf5d\"",
        ] {
            assert!(!is_json(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn binary_envelope() {
        let f = frame("ETH-USD", 0x0102, OpCode::Binary, &[9, 8, 7], false);
        let (op, b) = body(&f);
        assert_eq!(op, OpCode::Binary);
        assert_eq!(b[0], BINARY_TAG);
        assert_eq!(b[1] as usize, 7);
        assert_eq!(&b[2..9], b"ETH-USD");
        assert_eq!(&b[9..17], &0x0102u64.to_be_bytes());
        assert_eq!(&b[17..], &[9, 8, 7]);
    }

    #[test]
    fn op_messages() {
        assert_eq!(
            json(&gap("BTC-USD", 42, 57)),
            serde_json::json!({"op":"gap","topic":"BTC-USD","from":42,"to":57})
        );
        assert_eq!(
            json(&heartbeat([("a", 1), ("b", 0)])),
            serde_json::json!({"op":"heartbeat","seq":{"a":1,"b":0}})
        );
        assert_eq!(
            json(&heartbeat([])),
            serde_json::json!({"op":"heartbeat","seq":{}})
        );
    }
}
