//! Bytes in, events out: every rule of the connection state machine without sockets.

use super::*;
use crate::protocol::frame::{Decoded, decode};

/// What a connection emitted, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    /// A transmitted frame: opcode and payload.
    Tx(OpCode, Vec<u8>),
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

#[derive(Debug, Default)]
struct Record(Vec<Out>);

impl Sink for Record {
    fn transmit(&mut self, frame: Bytes) {
        let Ok(Decoded::Header(h, n)) = decode(&frame) else {
            panic!("connection transmitted a bad frame")
        };
        assert!(h.fin && h.mask.is_none() && h.rsv == 0);
        assert_eq!(frame.len() - n, h.len as usize);
        assert_ne!(
            h.opcode,
            OpCode::Close,
            "a close frame must go through transmit_close"
        );
        self.0.push(Out::Tx(h.opcode, frame[n..].to_vec()));
    }
    fn transmit_close(&mut self, frame: Bytes) {
        let Ok(Decoded::Header(h, n)) = decode(&frame) else {
            panic!("connection transmitted a bad close frame")
        };
        assert!(h.fin && h.mask.is_none() && h.rsv == 0);
        assert_eq!(
            h.opcode,
            OpCode::Close,
            "only the close frame ends the connection"
        );
        self.0.push(Out::Tx(h.opcode, frame[n..].to_vec()));
    }
    fn event(&mut self, e: Event<'_>) {
        self.0.push(match e {
            Event::Text(t) => Out::Text(t.to_owned()),
            Event::Binary(b) => Out::Binary(b.to_vec()),
            Event::Ping(p) => Out::Ping(p.to_vec()),
            Event::Pong(p) => Out::Pong(p.to_vec()),
            Event::Close(c) => Out::Close(c.code.map(|c| c.0), c.reason.to_owned()),
        });
    }
}

/// A client frame: masked unless `raw` says otherwise.
fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, 0, op, Some([0x11, 0x22, 0x33, 0x44]), payload)
}

fn frame_with(fin: bool, rsv: u8, op: u8, key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | op];
    let m = if key.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mut p = payload.to_vec();
    if let Some(k) = key {
        out.extend_from_slice(&k);
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    out.extend_from_slice(&p);
    out
}

fn limits() -> Limits {
    Limits {
        max_message: 1 << 20,
        max_frame: 1 << 20,
        ..Limits::default()
    }
}

/// Feeds `bytes` in one read.
fn run(bytes: &[u8]) -> (Connection, Vec<Out>) {
    run_split(bytes, &[])
}

/// Feeds `bytes` cut at the given offsets.
fn run_split(bytes: &[u8], cuts: &[usize]) -> (Connection, Vec<Out>) {
    let now = Instant::now();
    let mut c = Connection::new(limits(), now);
    let mut rec = Record::default();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let mut piece = bytes[start..cut].to_vec();
        let _ = c.handle_read(&mut piece, now, &mut rec);
        start = cut;
    }
    (c, rec.0)
}

fn closed_with(out: &[Out], code: u16) -> bool {
    matches!(out.last(), Some(Out::Tx(OpCode::Close, p)) if p.len() >= 2 && u16::from_be_bytes([p[0], p[1]]) == code)
}

#[test]
fn single_frames_of_every_length_class() {
    // Under Miri every byte is interpreted (~0.25 ms each): the short length classes only;
    // 64-bit lengths are covered by frame::tests.
    let lens: &[usize] = if cfg!(miri) {
        &[0, 1, 125, 126, 127]
    } else {
        &[0, 1, 125, 126, 127, 65535, 65536, 100_000]
    };
    for &len in lens {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let (_, out) = run(&frame(true, 2, &payload));
        assert_eq!(out, vec![Out::Binary(payload)], "len {len}");
    }
    let (_, out) = run(&frame(true, 1, "héllo".as_bytes()));
    assert_eq!(out, vec![Out::Text("héllo".into())]);
}

#[test]
fn every_split_point_gives_the_same_events() {
    let mut stream = frame(false, 1, "κόσ".as_bytes());
    stream.extend(frame(true, 9, b"ping!"));
    stream.extend(frame(true, 0, "με".as_bytes()));
    stream.extend(frame(true, 2, &[1, 2, 3]));
    stream.extend(frame(true, 1, b""));
    let (_, whole) = run(&stream);
    assert_eq!(
        whole,
        vec![
            Out::Tx(OpCode::Pong, b"ping!".to_vec()),
            Out::Ping(b"ping!".to_vec()),
            Out::Text("κόσμε".into()),
            Out::Binary(vec![1, 2, 3]),
            Out::Text(String::new()),
        ]
    );
    for a in 0..=stream.len() {
        assert_eq!(run_split(&stream, &[a]).1, whole, "cut at {a}");
    }
    let every: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(run_split(&stream, &every).1, whole, "byte by byte");
}

#[test]
fn pong_precedes_the_message_it_interrupts() {
    let mut s = frame(false, 1, b"frag1");
    s.extend(frame(true, 9, b""));
    s.extend(frame(true, 0, b"frag2"));
    let (_, out) = run(&s);
    assert_eq!(out[0], Out::Tx(OpCode::Pong, vec![]));
    assert_eq!(out[2], Out::Text("frag1frag2".into()));
}

#[test]
fn unsolicited_pong_is_reported_not_answered() {
    let (_, out) = run(&frame(true, 0xA, b"x"));
    assert_eq!(out, vec![Out::Pong(b"x".to_vec())]);
}

#[test]
fn header_violations_close_with_1002() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("rsv1", frame_with(true, 4, 1, Some([1, 2, 3, 4]), b"x")),
        ("rsv3", frame_with(true, 1, 2, Some([1, 2, 3, 4]), b"x")),
        ("unmasked", frame_with(true, 0, 1, None, b"x")),
        ("opcode 3", frame(true, 3, b"")),
        ("opcode 0xB", frame(true, 0xB, b"")),
        ("long ping", frame(true, 9, &[0; 126])),
        ("fragmented ping", frame(false, 9, b"")),
        ("lone continuation", frame(true, 0, b"x")),
        (
            "non-minimal 16",
            vec![0x82, 0xFE, 0, 5, 1, 2, 3, 4, 0, 0, 0, 0, 0],
        ),
        (
            "top bit",
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
        ),
    ];
    for (name, bytes) in cases {
        let (c, out) = run(&bytes);
        assert!(closed_with(&out, 1002), "{name}: {out:?}");
        assert!(c.is_finished(), "{name}");
    }
}

#[test]
fn data_frame_inside_fragmented_message_is_1002() {
    let mut s = frame(false, 1, b"a");
    s.extend(frame(true, 1, b"b"));
    let (_, out) = run(&s);
    assert!(closed_with(&out, 1002), "{out:?}");
}

#[test]
fn invalid_utf8_fails_fast_in_the_first_fragment() {
    // No final fragment ever arrives: the error must come from the first one.
    let (c, out) = run(&frame(false, 1, b"ok \xF4\x90"));
    assert!(closed_with(&out, 1007), "{out:?}");
    assert!(c.is_finished());
    // A valid prefix of a multi-byte sequence across fragments is fine.
    let mut s = frame(false, 1, b"\xCE");
    s.extend(frame(true, 0, b"\xBA"));
    assert_eq!(run(&s).1, vec![Out::Text("κ".into())]);
    // But one left incomplete at the end of the message is not.
    let (_, out) = run(&frame(true, 1, b"\xCE"));
    assert!(closed_with(&out, 1007), "{out:?}");
}

#[test]
fn invalid_utf8_fails_fast_within_one_frame_split_across_reads() {
    let f = frame(true, 1, b"abc\xFFdef-more-bytes-to-come");
    // Deliver only the header and the first 5 payload bytes.
    let (_, out) = run(&f[..6 + 5]);
    assert!(closed_with(&out, 1007), "{out:?}");
}

#[test]
fn close_is_echoed_and_finishes() {
    let (c, out) = run(&frame(true, 8, b"\x03\xe8bye"));
    assert_eq!(
        out,
        vec![
            Out::Tx(OpCode::Close, vec![0x03, 0xe8]),
            Out::Close(Some(1000), "bye".into())
        ]
    );
    assert!(c.is_finished() && !c.is_open());
    let (_, out) = run(&frame(true, 8, b""));
    assert_eq!(out[0], Out::Tx(OpCode::Close, vec![]));
}

#[test]
fn nothing_after_close_is_processed() {
    let mut s = frame(true, 8, b"\x03\xe8");
    s.extend(frame(true, 1, b"late"));
    s.extend(frame(true, 9, b"late ping"));
    let (_, out) = run(&s);
    assert_eq!(out.len(), 2, "{out:?}");
}

#[test]
fn bad_close_payloads() {
    for (payload, code) in [
        (&b"\x03"[..], 1002),
        (b"\x00\x00", 1002),
        (b"\x03\xed", 1002), // 1005
        (b"\x03\xf7", 1002), // 1015
        (b"\x07\xd0", 1002), // 2000
        (b"\x03\xe8\xff", 1007),
    ] {
        let (_, out) = run(&frame(true, 8, payload));
        assert!(closed_with(&out, code), "{payload:?}: {out:?}");
    }
    for ok in [1000u16, 1003, 1007, 1011, 1014, 3000, 4999] {
        let (_, out) = run(&frame(true, 8, &ok.to_be_bytes()));
        assert_eq!(out[0], Out::Tx(OpCode::Close, ok.to_be_bytes().to_vec()));
    }
}

#[test]
#[cfg_attr(miri, ignore = "builds 1 MiB frames: minutes under Miri")]
fn limits_fail_at_the_header_with_1009() {
    // A frame announced over max_frame: only the header is sent.
    let big = frame(true, 2, &vec![0; (1 << 20) + 1]);
    let (_, out) = run(&big[..14]);
    assert!(closed_with(&out, 1009), "{out:?}");
    // A fragmented message whose total passes max_message fails at the fragment that
    // passes it, before any final fragment.
    let mut s = frame(false, 2, &vec![0; 700_000]);
    s.extend(&frame(false, 0, &vec![0; 700_000])[..14]);
    let (_, out) = run(&s);
    assert!(closed_with(&out, 1009), "{:?}", out.last());
}

#[test]
fn fragment_limit_is_1008() {
    let mut l = limits();
    l.max_fragments = Some(3);
    let now = Instant::now();
    let mut c = Connection::new(l, now);
    let mut rec = Record::default();
    let mut s = Vec::new();
    for _ in 0..4 {
        s.extend(frame(false, if s.is_empty() { 2 } else { 0 }, b"x"));
    }
    let r = c.handle_read(&mut s, now, &mut rec);
    assert_eq!(r, Err(ProtocolError::TooManyFragments(3)));
    assert!(closed_with(&rec.0, 1008));
}

/// The fragment count is peer-controlled: with no fragment limit it saturates at
/// `u32::MAX` instead of overflowing (a panic in debug builds) after 2^32 empty
/// continuations; with a limit of `u32::MAX` the limit is never passed.
#[test]
fn fragment_count_saturates() {
    for max_fragments in [None, Some(u32::MAX)] {
        let now = Instant::now();
        let mut c = Connection::new(
            Limits {
                max_fragments,
                ..limits()
            },
            now,
        );
        let mut rec = Record::default();
        c.handle_read(&mut frame(false, 2, b"a"), now, &mut rec)
            .unwrap();
        // Skip the 2^32 - 2 empty continuations it would take to get here.
        c.message.as_mut().unwrap().fragments = u32::MAX - 1;
        for piece in [&b"b"[..], b"", b"c"] {
            c.handle_read(&mut frame(false, 0, piece), now, &mut rec)
                .unwrap();
        }
        assert_eq!(c.message.unwrap().fragments, u32::MAX);
        c.handle_read(&mut frame(true, 0, b"d"), now, &mut rec)
            .unwrap();
        assert_eq!(
            rec.0,
            vec![Out::Binary(b"abcd".to_vec())],
            "{max_fragments:?}"
        );
    }
}

#[test]
fn idle_connection_is_pinged_then_closed() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(30);
    let mut c = Connection::new(limits(), t0);
    let mut rec = Record::default();
    assert_eq!(c.poll_timeout(), Some(t0 + idle));
    c.handle_timeout(t0 + idle - Duration::from_millis(1), &mut rec);
    assert!(rec.0.is_empty());
    c.handle_timeout(t0 + idle, &mut rec);
    assert_eq!(rec.0, vec![Out::Tx(OpCode::Ping, vec![])]);
    // Any input (here, the pong) resets the idle clock.
    let t1 = t0 + idle + Duration::from_secs(1);
    c.handle_read(&mut frame(true, 0xA, b""), t1, &mut rec)
        .unwrap();
    assert_eq!(c.poll_timeout(), Some(t1 + idle));
    // No answer to the next ping: close 1001, then finish at the close deadline.
    c.handle_timeout(t1 + idle, &mut rec);
    c.handle_timeout(t1 + idle * 2, &mut rec);
    assert!(closed_with(&rec.0, 1001));
    assert!(!c.is_open() && !c.is_finished());
    let deadline = c.poll_timeout().unwrap();
    c.handle_timeout(deadline, &mut rec);
    assert!(c.is_finished());
}

#[test]
fn server_close_waits_for_the_reply() {
    let t0 = Instant::now();
    let mut c = Connection::new(limits(), t0);
    let mut rec = Record::default();
    c.close(CloseCode::GOING_AWAY, "shutdown", t0, &mut rec);
    assert!(!c.is_open() && !c.is_finished());
    // The reply is not answered again.
    c.handle_read(&mut frame(true, 8, b"\x03\xe9"), t0, &mut rec)
        .unwrap();
    assert!(c.is_finished());
    let txs = rec
        .0
        .iter()
        .filter(|o| matches!(o, Out::Tx(OpCode::Close, _)))
        .count();
    assert_eq!(txs, 1);
}

#[test]
#[cfg_attr(miri, ignore = "a 500 KB message: minutes under Miri")]
fn large_message_buffer_is_released() {
    let now = Instant::now();
    let mut c = Connection::new(limits(), now);
    let mut rec = Record::default();
    let f = frame(true, 2, &vec![5; 500_000]);
    let (a, b) = f.split_at(1000);
    c.handle_read(&mut a.to_vec(), now, &mut rec).unwrap();
    c.handle_read(&mut b.to_vec(), now, &mut rec).unwrap();
    assert_eq!(rec.0, vec![Out::Binary(vec![5; 500_000])]);
    assert_eq!(c.msg_buf.capacity(), 0);
}

/// Connections given the same limits share one budget for large messages in progress:
/// past their own 64 KiB each, what they hold together stays within it (1013 for the one
/// that would pass it), and a message completed, a failure or a dropped connection gives
/// its share back.
#[test]
#[cfg_attr(miri, ignore = "messages of 100 KB and more: minutes under Miri")]
fn large_messages_in_progress_share_one_budget() {
    let free = MessageBudget::FREE;
    let l = Limits {
        message_budget: MessageBudget::new(100_000),
        ..limits()
    };
    let budget = l.message_budget.clone();
    let l = Arc::new(l);
    let now = Instant::now();
    let start = |len: usize, sent: usize| {
        // The head and the first `sent` bytes of a `len`-byte binary frame.
        let f = frame(true, 2, &vec![7; len]);
        let head = f.len() - len;
        (f[..head + sent].to_vec(), f[head + sent..].to_vec())
    };
    let mut rec = Record::default();
    let mut a = Connection::new(Arc::clone(&l), now);
    let (mut a1, mut a2) = start(free + 90_000, free + 60_000);
    a.handle_read(&mut a1, now, &mut rec).unwrap();
    assert_eq!(
        budget.used(),
        60_000,
        "what passes the connection's own 64 KiB"
    );
    // Another one's message would take it past 100 000: refused with 1013.
    let mut b = Connection::new(Arc::clone(&l), now);
    let (mut b1, _) = start(free + 50_001, free + 50_000);
    let r = b.handle_read(&mut b1, now, &mut rec);
    assert_eq!(r, Err(ProtocolError::MessageBudget(100_000)));
    assert!(closed_with(&rec.0, 1013));
    assert_eq!(budget.used(), 60_000, "the refused one holds nothing");
    // Messages within the connections' own allowance never draw on it.
    let mut c = Connection::new(Arc::clone(&l), now);
    let (mut c1, _) = start(free, free - 1);
    c.handle_read(&mut c1, now, &mut rec).unwrap();
    assert_eq!(budget.used(), 60_000);
    // Completed: given back.
    rec.0.clear();
    a.handle_read(&mut a2, now, &mut rec).unwrap();
    assert_eq!(rec.0, vec![Out::Binary(vec![7; free + 90_000])]);
    assert_eq!(budget.used(), 0);
    // Dropped in the middle of one: given back.
    let mut d = Connection::new(Arc::clone(&l), now);
    let (mut d1, _) = start(free + 80_001, free + 80_000);
    d.handle_read(&mut d1, now, &mut rec).unwrap();
    assert_eq!(budget.used(), 80_000);
    drop(d);
    assert_eq!(budget.used(), 0);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Msg {
        Text(String, usize),
        Binary(Vec<u8>, usize),
        Ping(Vec<u8>),
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            (".{0,40}", 1usize..4).prop_map(|(s, n)| Msg::Text(s, n)),
            (proptest::collection::vec(any::<u8>(), 0..300), 1usize..4)
                .prop_map(|(b, n)| Msg::Binary(b, n)),
            proptest::collection::vec(any::<u8>(), 0..125).prop_map(Msg::Ping),
        ]
    }

    /// Splits `p` into `n` fragments (the last one may be empty).
    fn fragments(op: u8, p: &[u8], n: usize) -> Vec<u8> {
        let step = p.len().div_ceil(n).max(1);
        let chunks: Vec<&[u8]> = if p.is_empty() {
            vec![p]
        } else {
            p.chunks(step).collect()
        };
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            out.extend(frame(last, if i == 0 { op } else { 0 }, c));
        }
        out
    }

    proptest! {
        // Miri interprets every case; a few still reach the code under it.
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

        #[test]
        fn any_stream_at_any_cuts_gives_the_messages(
            // Under Miri, which interprets every byte of every split, fewer messages.
            msgs in proptest::collection::vec(msg(), 1..if cfg!(miri) { 4 } else { 8 }),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for m in &msgs {
                match m {
                    Msg::Text(s, n) => {
                        stream.extend(fragments(1, s.as_bytes(), *n));
                        want.push(Out::Text(s.clone()));
                    }
                    Msg::Binary(b, n) => {
                        stream.extend(fragments(2, b, *n));
                        want.push(Out::Binary(b.clone()));
                    }
                    Msg::Ping(p) => {
                        stream.extend(frame(true, 9, p));
                        want.push(Out::Tx(OpCode::Pong, p.clone()));
                        want.push(Out::Ping(p.clone()));
                    }
                }
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(run_split(&stream, &cuts).1, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = run(&bytes);
        }
    }
}
