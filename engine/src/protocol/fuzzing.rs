//! Entry points of the fuzz targets in `engine/fuzz/` (built only under `--cfg fuzzing`,
//! which `cargo fuzz` sets).
//!
//! Each function takes the fuzzer's bytes, runs one part of the protocol core and panics
//! when an invariant fails, so every target is a one-liner. The invariants are the
//! contract of the [module docs](super): no panic on peer bytes, bounded memory, and
//! results that do not depend on how the input was cut into reads. Where the input has a
//! structure (limits, cut points, a key), it is read from the first bytes, documented per
//! function, so that the seeds under `engine/fuzz/corpus/` can be written by hand.

#![forbid(unsafe_code)]

use bytes::Bytes;

use super::close::{CloseCode, CloseFrame};
use super::conn::{Connection, Event, Limits, Sink};
use super::error::{HandshakeError, ProtocolError};
use super::frame::{self, Decoded, FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use super::handshake::{self, HandshakeConfig, Parsed, Request};
use super::http::{self, Method};
use super::mask::{self, Impl};
use super::utf8::Utf8Validator;

// ---------------------------------------------------------------------------------------
// frame_decode
// ---------------------------------------------------------------------------------------

/// `frame_decode`: [`frame::decode`] on arbitrary bytes.
///
/// - It never panics; `Need(n)` asks for more than it was given and at most
///   [`MAX_HEADER_LEN`] bytes; every prefix of a decodable header is `Need`.
/// - A decoded header re-encodes to exactly the bytes it was decoded from (decode only
///   accepts the minimal length form), and decodes again to itself.
/// - Errors map to a close code valid on the wire and a reason that fits a close frame.
/// - The first 15 bytes also describe a header to encode (any fin, rsv, opcode, mask,
///   and a length from each of the 7-, 16- and 64-bit classes): it round-trips, unless
///   it is a control frame decode must refuse.
pub fn frame_decode(data: &[u8]) {
    match frame::decode(data) {
        Ok(Decoded::Header(h, n)) => {
            assert!(n <= data.len() && n <= MAX_HEADER_LEN);
            assert_eq!(n, h.encoded_len(), "{h:?}");
            let mut out = [0u8; MAX_HEADER_LEN];
            assert_eq!(h.encode_into(&mut out), n);
            assert_eq!(&out[..n], &data[..n], "{h:?} re-encodes differently");
            assert_eq!(frame::decode(&out[..n]), Ok(Decoded::Header(h, n)));
            check_prefixes_need(&data[..n]);
        }
        Ok(Decoded::Need(n)) => {
            assert!(
                n > data.len() && (2..=MAX_HEADER_LEN).contains(&n),
                "Need({n})"
            );
            check_prefixes_need(data);
        }
        Err(e) => check_protocol_error(&e),
    }
    if let Some(h) = header_from(data) {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = h.encode_into(&mut out);
        assert_eq!(n, h.encoded_len());
        let refused = h.opcode.is_control() && (!h.fin || h.len > MAX_CONTROL_PAYLOAD as u64);
        match frame::decode(&out[..n]) {
            Ok(Decoded::Header(back, m)) if !refused => assert_eq!((back, m), (h, n)),
            Err(ProtocolError::FragmentedControlFrame | ProtocolError::ControlFrameTooLong)
                if refused => {}
            other => panic!("{h:?} encoded as {:02x?} decodes to {other:?}", &out[..n]),
        }
    }
}

/// Every strict prefix of `bytes` (a header, or an incomplete one that raised no error)
/// decodes to `Need`, asking for more than it has.
fn check_prefixes_need(bytes: &[u8]) {
    for end in 0..bytes.len() {
        match frame::decode(&bytes[..end]) {
            Ok(Decoded::Need(n)) => assert!(n > end, "prefix {end}: Need({n})"),
            Ok(h) => panic!("prefix of {end} bytes of {bytes:02x?} decoded to {h:?}"),
            Err(e) => panic!("prefix of {end} bytes of {bytes:02x?} failed with {e:?}"),
        }
    }
}

/// A header built from the first 15 bytes: `[flags, opcode, mask?, key x4, len x8]`.
fn header_from(data: &[u8]) -> Option<FrameHeader> {
    let d: &[u8; 15] = data.get(..15)?.try_into().ok()?;
    const OPCODES: [OpCode; 6] = [
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ];
    let raw = u64::from_be_bytes([d[7], d[8], d[9], d[10], d[11], d[12], d[13], d[14]]);
    // Each length class, and the boundaries between them, equally likely.
    let len = match (d[2] >> 1) & 3 {
        0 => raw % 126,
        1 => 126 + raw % (65_536 - 126),
        2 => 65_536 + raw % ((1 << 63) - 65_536),
        _ => [0, 125, 126, 65_535, 65_536, (1 << 63) - 1][(raw % 6) as usize],
    };
    Some(FrameHeader {
        fin: d[0] & 1 != 0,
        rsv: (d[0] >> 1) & 7,
        opcode: OPCODES[usize::from(d[1]) % OPCODES.len()],
        mask: (d[2] & 1 != 0).then_some([d[3], d[4], d[5], d[6]]),
        len,
    })
}

fn check_protocol_error(e: &ProtocolError) {
    assert!(e.close_code().is_valid_on_wire(), "{e:?}");
    assert!(e.reason().len() <= 123, "{e:?}");
    let _ = e.to_string();
}

// ---------------------------------------------------------------------------------------
// handshake
// ---------------------------------------------------------------------------------------

/// `handshake`: [`handshake::parse`] on arbitrary bytes, with the default configuration
/// and with one that has subprotocols, an origin allow-list and a small head limit.
///
/// - It never panics; `Need` only while the bytes are within the head limit.
/// - An accepted request is complete at `head_len` (within the buffer and the limit), the
///   prefix one byte shorter is `Need`, and it obeys the checks of the handshake (one
///   `Host`, key and version, version 13, no body); its `101` response is well-formed
///   HTTP with the right accept value and only a subprotocol the client offered.
/// - A rejection's response is well-formed HTTP with a 4xx status and a text body whose
///   length matches `Content-Length`.
pub fn handshake(data: &[u8]) {
    check_handshake(data, &HandshakeConfig::default());
    check_handshake(
        data,
        &HandshakeConfig {
            max_head_len: 256,
            protocols: vec!["chat".into(), "superchat".into()],
            allowed_origins: Some(vec!["https://ok.example".into()]),
        },
    );
}

fn check_handshake(data: &[u8], config: &HandshakeConfig) {
    match handshake::parse(data, config) {
        Parsed::Need => assert!(data.len() <= config.max_head_len),
        Parsed::Accept(req) => {
            assert!(req.head_len <= data.len().min(config.max_head_len));
            // A blank line ends the head; httparse also takes a bare LF as a line end
            // (RFC 9112 §2.2 allows a recipient to).
            let head = &data[..req.head_len];
            assert!(head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n"));
            assert_eq!(
                handshake::parse(&data[..req.head_len], config),
                Parsed::Accept(req.clone()),
                "not stateless"
            );
            assert_eq!(
                handshake::parse(&data[..req.head_len - 1], config),
                Parsed::Need
            );
            check_accepted(&req, config);
        }
        Parsed::Http(req) => {
            assert!(req.head_len <= data.len().min(config.max_head_len));
            assert_eq!(
                handshake::parse(&data[..req.head_len], config),
                Parsed::Http(req.clone()),
                "not stateless"
            );
            assert_eq!(
                handshake::parse(&data[..req.head_len - 1], config),
                Parsed::Need
            );
            check_plain(&req);
        }
        Parsed::Reject(err) => check_rejection(&err),
    }
}

// ---------------------------------------------------------------------------------------
// http_request
// ---------------------------------------------------------------------------------------

/// `http_request`: a plain HTTP request (no `Upgrade`) parsed, and a response encoded.
///
/// Input: byte 0 picks the head limit (`64 << (b % 8)` bytes: 64 B to 8 KiB); the rest is
/// the request. The parse is checked as in `handshake` (stateless, `Need` only within the
/// limit, `Need` for every prefix of a complete head); a plain request has no `Upgrade`
/// header, a `GET` or `HEAD` method and an origin-form path. Then a response made from the
/// request (its status from the head length, an extra header holding the path, the raw
/// request as body) must encode to well-formed HTTP/1.1 whatever it holds: no header line
/// injected, `Content-Length` the body's length, and the `HEAD` answer exactly the `GET`
/// answer without its body.
pub fn http_request(data: &[u8]) {
    let Some((&limit, request)) = data.split_first() else {
        return;
    };
    let config = HandshakeConfig {
        max_head_len: 64 << (limit % 8),
        ..HandshakeConfig::default()
    };
    check_handshake(request, &config);
    if let Parsed::Http(req) = handshake::parse(request, &config) {
        let status = 200 + (req.head_len % 400) as u16;
        let resp = http::Response::text(status, request.to_vec())
            .header("X-Path", req.path.clone())
            .header("X-Query", req.query.clone().unwrap_or_default());
        let (mut get, mut head) = (Vec::new(), Vec::new());
        http::response_into(&resp, Method::Get, &mut get);
        http::response_into(&resp, Method::Head, &mut head);
        assert_eq!(&get[..head.len()], &head[..]);
        assert_eq!(&get[head.len()..], request);
        let (code, headers, body) = parse_response(&head);
        assert_eq!(code, status);
        assert!(body.is_empty());
        assert_eq!(headers.len(), 5, "{headers:?}");
        let length = headers.iter().find(|(n, _)| n == "content-length");
        assert_eq!(length.map(|(_, v)| v.parse()), Some(Ok(request.len())));
    }
}

/// A plain request restated: no `Upgrade`, `GET` or `HEAD`, a path without its query.
fn check_plain(req: &http::Request) {
    assert!(req.path.starts_with('/') && !req.path.contains('?'));
    assert!(req.headers.len() <= handshake::MAX_HEADERS);
    assert!(req.headers.iter().all(|(n, _)| n != "upgrade"));
    assert!(matches!(req.method, Method::Get | Method::Head));
}

/// The checks of the handshake, restated over the parsed headers, and the response.
fn check_accepted(req: &Request, config: &HandshakeConfig) {
    assert!(req.path.starts_with('/') && !req.path.contains('?'));
    assert!(req.headers.len() <= handshake::MAX_HEADERS);
    let all = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    for name in ["host", "sec-websocket-key", "sec-websocket-version"] {
        assert_eq!(all(name).count(), 1, "{name} must appear once");
    }
    assert_eq!(all("transfer-encoding").count(), 0);
    let zero = |v: &str| {
        let v = v.trim_ascii();
        !v.is_empty() && v.bytes().all(|b| b == b'0')
    };
    assert!(all("content-length").all(zero));
    assert_eq!(
        all("sec-websocket-version").next().map(str::trim_ascii),
        Some("13")
    );
    let key = all("sec-websocket-key")
        .next()
        .unwrap_or_default()
        .trim_ascii();
    assert_eq!(req.accept, handshake::accept_key(key.as_bytes()));
    if let Some(p) = &req.protocol {
        assert!(config.protocols.contains(p));
        let offered = all("sec-websocket-protocol")
            .flat_map(|v| v.split(','))
            .any(|t| t.trim_ascii() == p);
        assert!(offered, "{p} was not offered");
    }

    let mut out = Vec::new();
    handshake::accept_response_into(req, &mut out);
    let (status, headers, body) = parse_response(&out);
    assert_eq!(status, 101);
    assert!(body.is_empty());
    let header = |name: &str| {
        let mut values = headers.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "repeated {name} in the response");
        first
    };
    assert_eq!(header("upgrade"), Some("websocket"));
    assert_eq!(header("connection"), Some("Upgrade"));
    assert_eq!(header("sec-websocket-accept"), Some(req.accept.as_str()));
    assert_eq!(header("sec-websocket-protocol"), req.protocol.as_deref());
    assert_eq!(headers.len(), 3 + usize::from(req.protocol.is_some()));
}

fn check_rejection(err: &HandshakeError) {
    let mut out = Vec::new();
    handshake::reject_response_into(err, &mut out);
    let (status, headers, body) = parse_response(&out);
    assert_eq!(status, err.status());
    assert!((400..500).contains(&status), "{err:?}");
    let allow = headers
        .iter()
        .find(|(n, _)| n == "allow")
        .map(|(_, v)| v.as_str());
    match err {
        HandshakeError::MethodNotAllowed => assert_eq!(allow, Some("GET")),
        HandshakeError::HttpMethodNotAllowed => assert_eq!(allow, Some("GET, HEAD")),
        _ => assert_eq!(allow, None),
    }
    assert!(std::str::from_utf8(&body).is_ok_and(|b| !b.trim().is_empty()));
    let length = headers.iter().find(|(n, _)| n == "content-length");
    assert_eq!(length.map(|(_, v)| v.parse()), Some(Ok(body.len())));
}

/// Parses a whole response; panics unless it is well-formed HTTP/1.1 with nothing after
/// the body its `Content-Length` announces (none: no body).
fn parse_response(out: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    let n = match res.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("response {:?}: {other:?}", String::from_utf8_lossy(out)),
    };
    assert_eq!(res.version, Some(1));
    let headers: Vec<(String, String)> = res
        .headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value).expect("header value is text");
            (h.name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    (res.code.unwrap_or_default(), headers, out[n..].to_vec())
}

// ---------------------------------------------------------------------------------------
// conn_feed
// ---------------------------------------------------------------------------------------

/// Frame limits byte 0 selects (bits 0-2); index 0 is the default.
const FRAME_LIMITS: [usize; 8] = [16 << 20, 0, 1, 125, 126, 1000, 65_535, 65_536];
/// Message limits byte 0 selects (bits 3-5); index 0 is the default.
const MESSAGE_LIMITS: [usize; 8] = [16 << 20, 0, 1, 125, 126, 1000, 65_535, 65_536];
/// Fragment limits byte 0 selects (bits 6-7).
const FRAGMENT_LIMITS: [Option<u32>; 4] = [None, Some(1), Some(2), Some(16)];

/// `conn_feed`: a server [`Connection`] fed an arbitrary byte stream.
///
/// Input: byte 0 picks the [`Limits`] (bits 0-2: frame limit, 3-5: message limit, 6-7:
/// fragment limit, from the tables above; `0x00` is the defaults); byte 1 bit 7 makes the
/// server start a close before any input, bits 0-6 seed the random cut points; the rest
/// is the stream (client frames, so masked to be valid).
///
/// The stream is fed whole, one byte per read, and in random pieces (empty ones
/// included). Each way must give the same transmitted frames, events, error and final
/// state; nothing panics; every transmitted frame is a valid unmasked final server frame;
/// and after every read the connection's buffers are within the limits (the message
/// buffer within twice the larger of the message limit and the capacity it keeps, and
/// back to what it keeps once the connection is finished; control payloads within twice
/// 125 bytes).
pub fn conn_feed(data: &[u8]) {
    let [config, cuts, stream @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_frame: FRAME_LIMITS[usize::from(config & 7)],
        max_message: MESSAGE_LIMITS[usize::from((config >> 3) & 7)],
        max_fragments: FRAGMENT_LIMITS[usize::from(config >> 6)],
        ..Limits::default()
    };
    let close_first = cuts & 0x80 != 0;
    let whole = feed(
        stream,
        &limits,
        close_first,
        &mut std::iter::once(stream.len()),
    );
    let bytewise = feed(stream, &limits, close_first, &mut std::iter::repeat(1));
    assert_eq!(whole, bytewise, "fed whole vs one byte at a time");
    let mut rng = XorShift(u64::from(cuts & 0x7F).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut pieces = std::iter::from_fn(move || {
        // Mostly short pieces (cut headers), sometimes long ones.
        let r = rng.next();
        Some(match r % 4 {
            0 => 0,
            1 | 2 => (r >> 8) as usize % (2 * MAX_HEADER_LEN),
            _ => (r >> 8) as usize % 4096,
        })
    });
    let random = feed(stream, &limits, close_first, &mut pieces);
    assert_eq!(whole, random, "fed whole vs in random pieces");
}

/// What a connection did with a stream: its output in order, the first error, and the
/// final state.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    output: Vec<Out>,
    error: Option<ProtocolError>,
    open: bool,
    finished: bool,
}

/// One transmitted frame or event, owned.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Tx(Bytes),
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

/// Records output, checking each transmitted frame.
#[derive(Debug, Default)]
struct Record(Vec<Out>);

impl Sink for Record {
    fn transmit(&mut self, bytes: Bytes) {
        let Ok(Decoded::Header(h, n)) = frame::decode(&bytes) else {
            panic!("transmitted a bad frame {bytes:02x?}");
        };
        assert!(h.fin && h.rsv == 0 && h.mask.is_none(), "{h:?}");
        assert_eq!(h.len, (bytes.len() - n) as u64);
        assert!(
            h.opcode.is_control(),
            "the protocol only transmits control frames"
        );
        if h.opcode == OpCode::Close {
            let close = CloseFrame::decode(&bytes[n..]).expect("valid close payload");
            assert!(close.code.is_none_or(CloseCode::is_valid_on_wire));
        }
        self.0.push(Out::Tx(bytes));
    }

    fn event(&mut self, event: Event<'_>) {
        self.0.push(match event {
            Event::Text(t) => Out::Text(t.to_owned()),
            Event::Binary(b) => Out::Binary(b.to_vec()),
            Event::Ping(p) => Out::Ping(p.to_vec()),
            Event::Pong(p) => Out::Pong(p.to_vec()),
            Event::Close(c) => Out::Close(c.code.map(|c| c.0), c.reason.to_owned()),
        });
    }
}

/// Feeds `stream` to a new connection in pieces of the lengths `pieces` yields.
fn feed(
    stream: &[u8],
    limits: &Limits,
    close_first: bool,
    pieces: &mut dyn Iterator<Item = usize>,
) -> Outcome {
    let now = std::time::Instant::now();
    let mut conn = Connection::new(limits.clone(), now);
    let mut sink = Record::default();
    if close_first {
        conn.close(CloseCode::GOING_AWAY, "shutting down", now, &mut sink);
    }
    let mut error = None;
    // One copy, fed piece by piece: each byte is read (and unmasked in place) once.
    let mut copy = stream.to_vec();
    let mut rest = &mut copy[..];
    loop {
        let take = pieces.next().unwrap_or(usize::MAX).min(rest.len());
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(take);
        rest = tail;
        if let Err(e) = conn.handle_read(piece, now, &mut sink) {
            assert!(error.is_none(), "a second error after {error:?}: {e:?}");
            assert!(conn.is_finished());
            check_protocol_error(&e);
            error = Some(e);
        }
        check_buffers(&conn, limits);
        if rest.is_empty() {
            break;
        }
    }
    Outcome {
        output: sink.0,
        error,
        open: conn.is_open(),
        finished: conn.is_finished(),
    }
}

fn check_buffers(conn: &Connection, limits: &Limits) {
    let [msg_len, msg_capacity, control_capacity, keep] = conn.buffer_sizes();
    assert!(
        msg_len <= limits.max_message,
        "message buffer {msg_len} bytes"
    );
    let bound = (2 * limits.max_message.max(keep)).max(8);
    assert!(
        msg_capacity <= bound,
        "message buffer capacity {msg_capacity}"
    );
    if conn.is_finished() {
        assert_eq!(msg_len, 0);
        assert!(
            msg_capacity <= keep,
            "finished, still holding {msg_capacity}"
        );
    }
    assert!(
        control_capacity <= 2 * MAX_CONTROL_PAYLOAD,
        "control buffer capacity {control_capacity}"
    );
}

/// xorshift64: cut points from a seed, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ---------------------------------------------------------------------------------------
// unmask_differential
// ---------------------------------------------------------------------------------------

/// Most bytes of misalignment tried before the buffer.
const MAX_OFFSET: usize = 64;
/// Guard bytes after the buffer, which no implementation may touch.
const GUARD: usize = 64;

/// `unmask_differential`: every available [`mask::unmask_with`] implementation (SIMD and
/// scalar) and the dispatching [`mask::unmask`] against a byte-at-a-time oracle.
///
/// Input: bytes 0-3 the key, byte 4 an extra phase (any value: only `phase % 4`
/// counts), byte 5 the offset of the buffer from an allocation's start (alignment), byte
/// 6 a cut point; the rest is the buffer. For every phase 0..=3 and the extra one, each
/// implementation must give the oracle's bytes and end phase, leave the bytes around the
/// buffer alone, and give the same result when the buffer is unmasked in two pieces cut
/// at byte 6 (modulo the length), and in an allocation of its exact length (where the
/// address sanitizer `cargo fuzz` builds with catches any access past the ends).
pub fn unmask_differential(data: &[u8]) {
    let [k0, k1, k2, k3, extra_phase, offset, cut, buf @ ..] = data else {
        return;
    };
    let key = [*k0, *k1, *k2, *k3];
    let offset = usize::from(*offset) % MAX_OFFSET;
    let cut = usize::from(*cut) % (buf.len() + 1);
    // The extra phase may exceed 3 and wrap past usize::MAX.
    let phases = [0, 1, 2, 3, usize::from(*extra_phase), usize::MAX - 2];
    for phase in phases {
        let expected: Vec<u8> = buf
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[(phase % 4 + i) % 4])
            .collect();
        let expected_phase = (phase % 4 + buf.len()) % 4;
        // `None` is the dispatching `unmask`.
        let runs = std::iter::once(None).chain(Impl::available().into_iter().map(Some));
        for imp in runs {
            let name = imp.map_or("unmask", Impl::name);
            let f = |buf: &mut [u8], key, phase| match imp {
                None => mask::unmask(buf, key, phase),
                Some(imp) => mask::unmask_with(imp, buf, key, phase).expect("available"),
            };
            for split in [false, true] {
                let mut space = vec![0xA5u8; offset + buf.len() + GUARD];
                let region = &mut space[offset..offset + buf.len()];
                region.copy_from_slice(buf);
                let end_phase = if split {
                    let (a, b) = region.split_at_mut(cut);
                    let mid = f(a, key, phase);
                    assert_eq!(mid, (phase % 4 + cut) % 4, "{name}: phase after {cut}");
                    f(b, key, mid)
                } else {
                    f(region, key, phase)
                };
                assert_eq!(end_phase, expected_phase, "{name}: end phase");
                assert!(
                    space[offset..offset + buf.len()] == expected[..],
                    "{name}: wrong bytes, phase {phase}, offset {offset}, len {}, split {split}",
                    buf.len()
                );
                assert!(
                    space[..offset]
                        .iter()
                        .chain(&space[offset + buf.len()..])
                        .all(|&b| b == 0xA5),
                    "{name}: wrote outside the buffer"
                );
            }
            // In an allocation of exactly its length, so that AddressSanitizer reports
            // any read or write past either end.
            let mut exact = buf.to_vec();
            assert_eq!(
                f(&mut exact, key, phase),
                expected_phase,
                "{name}: end phase"
            );
            assert!(
                exact == expected,
                "{name}: wrong bytes in an exact allocation"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// utf8_incremental
// ---------------------------------------------------------------------------------------

/// `utf8_incremental`: [`Utf8Validator`] against `std::str::from_utf8`.
///
/// Input: byte 0 (modulo 8) is the count `n` of piece lengths that follow; the rest is
/// the text, fed in pieces of those lengths (cycled; zero-length pieces included), and
/// also whole and one byte at a time. The verdict after `finish` must be `from_utf8`'s;
/// for invalid input the first failing `feed` must be the one whose piece holds the first
/// byte after which the input can no longer be a prefix of valid UTF-8 (or `finish`, for
/// input that is only cut short); the validator is reusable afterwards.
pub fn utf8_incremental(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (lengths, text) = rest.split_at(n);
    let mut v = Utf8Validator::new();
    check_utf8_pieces(&mut v, text, &mut std::iter::once(text.len()));
    check_utf8_pieces(&mut v, text, &mut std::iter::repeat(1));
    if lengths.iter().any(|&l| l != 0) {
        let mut pieces = lengths.iter().map(|&l| usize::from(l)).cycle();
        check_utf8_pieces(&mut v, text, &mut pieces);
    }
}

/// The index of the first byte after which `bytes` is no longer a prefix of valid UTF-8.
fn first_bad_index(bytes: &[u8]) -> Option<usize> {
    let e = std::str::from_utf8(bytes).err()?;
    e.error_len()?;
    (e.valid_up_to()..bytes.len())
        .find(|&k| std::str::from_utf8(&bytes[..=k]).is_err_and(|e| e.error_len().is_some()))
}

fn check_utf8_pieces(v: &mut Utf8Validator, text: &[u8], pieces: &mut dyn Iterator<Item = usize>) {
    let mut start = 0;
    let mut failed_in = None;
    loop {
        let end = start + pieces.next().unwrap_or(usize::MAX).min(text.len() - start);
        if v.feed(&text[start..end]).is_err() {
            failed_in = Some(start..end);
            break;
        }
        start = end;
        if start == text.len() {
            break;
        }
    }
    let finished = v.finish();
    match (first_bad_index(text), failed_in) {
        (None, None) => assert_eq!(finished.is_ok(), std::str::from_utf8(text).is_ok()),
        (Some(k), Some(piece)) => {
            assert!(piece.contains(&k), "bad byte {k}, failed on {piece:?}");
            assert!(finished.is_err());
        }
        (k, piece) => panic!("bad byte {k:?}, failed piece {piece:?}"),
    }
    assert!(v.feed("reusable ✓".as_bytes()).is_ok() && v.finish().is_ok());
}
