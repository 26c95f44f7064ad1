use super::*;

/// An unmasked server frame.
fn server_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { FIN | op } else { op }];
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=65535 => {
            out.push(LEN16_MARK);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(LEN64_MARK);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Owned copy of an event, for comparisons.
#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Message(u8, Vec<u8>, u64),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, Vec<u8>),
}

fn own(e: Event<'_>) -> Owned {
    match e {
        Event::Message { opcode, head, len } => Owned::Message(opcode, head.to_vec(), len),
        Event::Ping(p) => Owned::Ping(p.to_vec()),
        Event::Pong => Owned::Pong,
        Event::Close(c, r) => Owned::Close(c, r.to_vec()),
    }
}

/// Feeds `wire` in pieces as a reactor would: append, parse, keep the tail.
fn feed_in_pieces(wire: &[u8], cuts: &[usize]) -> Vec<Owned> {
    let mut state = FrameState::default();
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        buf.extend_from_slice(&wire[last..cut]);
        last = cut;
        let p = read_frames(&buf, &mut state, |e| {
            events.push(own(e));
            true
        })
        .expect("valid stream");
        buf.drain(..p.consumed);
    }
    assert!(buf.is_empty(), "all bytes consumed");
    events
}

#[test]
fn every_length_class_decodes() {
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let wire = server_frame(true, opcode::BINARY, &payload);
        let Ok(Decoded::Header(h)) = decode(&wire) else {
            panic!("length {len} did not decode");
        };
        assert_eq!(h.payload_len, len as u64);
        assert_eq!(h.header_len + len, wire.len(), "length {len}");
        assert!(h.fin);
        assert_eq!(h.opcode, opcode::BINARY);
    }
}

#[test]
fn header_split_at_every_byte_needs_more() {
    for len in [5usize, 300, 70000] {
        let wire = server_frame(true, opcode::TEXT, &vec![b'a'; len]);
        let Ok(Decoded::Header(h)) = decode(&wire) else {
            panic!("full header decodes");
        };
        for cut in 0..h.header_len {
            match decode(&wire[..cut]) {
                Ok(Decoded::Need(n)) => assert!(n > cut && n <= h.header_len),
                other => panic!("prefix {cut} of a {len}-byte frame gave {other:?}"),
            }
        }
    }
}

#[test]
fn stream_split_at_every_byte() {
    let mut wire = Vec::new();
    wire.extend(server_frame(true, opcode::BINARY, b"0123456789abcdefXYZ"));
    wire.extend(server_frame(true, opcode::PING, b"pi"));
    wire.extend(server_frame(false, opcode::TEXT, b"0123456"));
    wire.extend(server_frame(true, opcode::PONG, b""));
    wire.extend(server_frame(false, opcode::CONTINUATION, b"789abcdefgh"));
    wire.extend(server_frame(true, opcode::CONTINUATION, b"ij"));
    wire.extend(server_frame(true, opcode::TEXT, &[b'x'; 200]));
    wire.extend(server_frame(
        true,
        opcode::CLOSE,
        &[0x03, 0xE8, b'b', b'y', b'e'],
    ));
    let expected = vec![
        Owned::Message(opcode::BINARY, b"0123456789abcdefXYZ".to_vec(), 19),
        Owned::Ping(b"pi".to_vec()),
        Owned::Pong,
        Owned::Message(opcode::TEXT, b"0123456789abcdefghij".to_vec(), 20),
        Owned::Message(opcode::TEXT, vec![b'x'; 200], 200),
        Owned::Close(Some(1000), b"bye".to_vec()),
    ];
    assert_eq!(feed_in_pieces(&wire, &[]), expected);
    for cut in 0..wire.len() {
        assert_eq!(feed_in_pieces(&wire, &[cut]), expected, "split at {cut}");
    }
    let every: Vec<usize> = (1..wire.len()).collect();
    assert_eq!(
        feed_in_pieces(&wire, &every),
        expected,
        "one byte at a time"
    );
}

#[test]
fn need_reports_whole_frame_length() {
    let wire = server_frame(true, opcode::BINARY, &[7; 1000]);
    let mut state = FrameState::default();
    let p = read_frames(&wire[..10], &mut state, |_| panic!("no event yet")).expect("ok");
    assert_eq!(
        p,
        Progress {
            consumed: 0,
            need: 1004
        }
    );
}

#[test]
fn sink_can_stop_after_close() {
    let mut wire = server_frame(true, opcode::CLOSE, &[]);
    wire.extend(server_frame(true, opcode::BINARY, b"late"));
    let mut state = FrameState::default();
    let mut n = 0;
    let p = read_frames(&wire, &mut state, |_| {
        n += 1;
        false
    })
    .expect("ok");
    assert_eq!((n, p.consumed), (1, 2));
}

#[test]
fn violations_are_errors_not_panics() {
    let mut state = FrameState::default();
    let run = |wire: &[u8]| read_frames(wire, &mut FrameState::default(), |_| true);
    assert_eq!(run(&[0xC2, 0x00]), Err(FrameError::ReservedBits));
    assert_eq!(run(&[0x83, 0x00]), Err(FrameError::UnknownOpcode(3)));
    assert_eq!(run(&[0x82, 0x81, 1, 2, 3, 4, 0]), Err(FrameError::Masked));
    assert_eq!(run(&[0x09, 0x00]), Err(FrameError::BadControl));
    assert_eq!(
        run(&server_frame(true, opcode::PING, &[0; 126])),
        Err(FrameError::BadControl)
    );
    assert_eq!(run(&[0x80, 0x00]), Err(FrameError::Fragmentation));
    assert_eq!(
        run(&server_frame(true, opcode::CLOSE, &[3])),
        Err(FrameError::CloseLength)
    );
    let mut huge = vec![0x82, 127];
    huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
    assert_eq!(run(&huge), Err(FrameError::LengthMsb));
    let mut big = vec![0x82, 127];
    big.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
    assert_eq!(run(&big), Err(FrameError::TooLarge(MAX_FRAME + 1)));
    // A new message while one is fragmented.
    let mut wire = server_frame(false, opcode::TEXT, b"a");
    wire.extend(server_frame(true, opcode::TEXT, b"b"));
    assert_eq!(
        read_frames(&wire, &mut state, |_| true),
        Err(FrameError::Fragmentation)
    );
}

#[test]
fn mask_matches_naive_at_every_length() {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    for len in 0..=67usize {
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let mut fast = data.clone();
        apply_mask(&mut fast, key);
        let naive: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(fast, naive, "length {len}");
        apply_mask(&mut fast, key);
        assert_eq!(fast, data, "masking twice restores, length {len}");
    }
}

#[test]
fn rfc6455_masked_hello() {
    // RFC 6455 §5.7: a single-frame masked text message "Hello".
    let mut out = Vec::new();
    encode_into(&mut out, opcode::TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
    assert_eq!(
        out,
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
}

#[test]
fn client_header_lengths() {
    for len in [0usize, 125, 126, 65535, 65536] {
        let mut out = Vec::new();
        header_into(&mut out, opcode::BINARY, len, [1, 2, 3, 4]);
        assert_eq!(out.len(), header_len(len), "length {len}");
        // The server's view: same header with the mask bit and key.
        assert_eq!(out[1] & MASK, MASK);
        let mut unmasked = out[..out.len() - 4].to_vec();
        unmasked[1] &= !MASK;
        unmasked.extend(std::iter::repeat_n(0u8, len));
        match decode(&unmasked) {
            Ok(Decoded::Header(h)) => assert_eq!(h.payload_len, len as u64),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn fragmented_message_keeps_its_head_only() {
    let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let mut wire = server_frame(false, opcode::BINARY, &body[..300]);
    wire.extend(server_frame(false, opcode::CONTINUATION, &body[300..310]));
    wire.extend(server_frame(true, opcode::CONTINUATION, &body[310..]));
    let expected = vec![Owned::Message(
        opcode::BINARY,
        body[..HEAD_LEN].to_vec(),
        1000,
    )];
    assert_eq!(feed_in_pieces(&wire, &[]), expected);
    // The kept head starts afresh with the next fragmented message.
    wire.extend(server_frame(false, opcode::TEXT, b"ab"));
    wire.extend(server_frame(true, opcode::CONTINUATION, b"c"));
    let events = feed_in_pieces(&wire, &[7]);
    assert_eq!(events[1], Owned::Message(opcode::TEXT, b"abc".to_vec(), 3));
}
