use super::*;
use crate::payload::{self, Stamp};

fn text(topic: &str, seq: u64, data: &str) -> Vec<u8> {
    format!("{{\"topic\":\"{topic}\",\"seq\":{seq},\"data\":{data}}}").into_bytes()
}

fn binary(topic: &str, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![BINARY_TAG, topic.len() as u8];
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn data(f: Frame<'_>) -> (Vec<u8>, u64, Vec<u8>) {
    match f {
        Frame::Data { topic, seq, data } => (topic.to_vec(), seq, data.to_vec()),
        other => panic!("not data: {other:?}"),
    }
}

fn checker() -> Checker {
    Checker::new([Arc::from("BTC-USD")])
}

/// Feeds text envelopes and ops (`gap F T`) through a checker of BTC-USD.
fn run(c: &mut Checker, script: &[&str]) -> V1Tally {
    let mut t = V1Tally::default();
    for step in script {
        let msg = match step.split_whitespace().collect::<Vec<_>>()[..] {
            ["gap", from, to] => {
                format!("{{\"op\":\"gap\",\"topic\":\"BTC-USD\",\"from\":{from},\"to\":{to}}}")
                    .into_bytes()
            }
            [seq] => text("BTC-USD", seq.parse().expect("seq"), "1"),
            _ => panic!("bad step {step}"),
        };
        match parse(true, &msg, true) {
            Frame::Data { topic, seq, .. } => {
                c.handle_data(topic, seq, &mut t);
            }
            Frame::Op(op) => assert_eq!(c.handle_op(op, &mut t), None),
            Frame::Malformed(why) => panic!("{why}: {step}"),
        }
    }
    t
}

#[test]
fn text_envelope_with_json_data_is_verbatim() {
    let msg = text("BTC-USD", 42, r#"{"px":1.5,"q":[1,2]}"#);
    assert_eq!(
        data(parse(true, &msg, true)),
        (b"BTC-USD".to_vec(), 42, br#"{"px":1.5,"q":[1,2]}"#.to_vec())
    );
    // The largest seq, and data that is a bare number.
    let msg = text("t0", u64::MAX, "7");
    assert_eq!(
        data(parse(true, &msg, true)),
        (b"t0".to_vec(), u64::MAX, b"7".to_vec())
    );
}

#[test]
fn non_json_text_comes_as_a_string_and_its_stamp_reads() {
    let mut payload = payload::template(40, true);
    let stamp = Stamp {
        publisher: 3,
        seq: 99,
        ts_ns: 123_456,
    };
    stamp.encode_into(&mut payload, true);
    let quoted = format!("\"{}\"", String::from_utf8(payload.clone()).expect("ascii"));
    let msg = text("t1", 5, &quoted);
    let (topic, seq, inner) = data(parse(true, &msg, true));
    assert_eq!((topic.as_slice(), seq), (&b"t1"[..], 5));
    assert_eq!(inner, payload);
    assert_eq!(Stamp::decode(&inner, true), Some(stamp));
    // A fragmented message keeps only its head: the closing quote and brace are not there.
    let head = &msg[..msg.len() - 10];
    let (_, _, inner) = data(parse(true, head, false));
    assert_eq!(Stamp::decode(&inner, true), Some(stamp));
    // A string stays escaped.
    let msg = text("t1", 6, r#""a\"b""#);
    assert_eq!(data(parse(true, &msg, true)).2, br#"a\"b"#.to_vec());
}

#[test]
fn binary_envelope() {
    let mut payload = payload::template(64, false);
    let stamp = Stamp {
        publisher: 1,
        seq: 7,
        ts_ns: 42,
    };
    stamp.encode_into(&mut payload, false);
    let msg = binary("ETH-USD", 1 << 40, &payload);
    let (topic, seq, inner) = data(parse(false, &msg, true));
    assert_eq!((topic.as_slice(), seq), (&b"ETH-USD"[..], 1 << 40));
    assert_eq!(Stamp::decode(&inner, false), Some(stamp));
    // Empty payload and empty topic are still envelopes.
    assert_eq!(
        data(parse(false, &binary("", 1, b""), true)),
        (vec![], 1, vec![])
    );
}

#[test]
fn stripping_agrees_with_the_parse_and_refuses_what_is_no_envelope() {
    for (topic, payload) in [("ETH-USD", &b"0123456789"[..]), ("", b""), ("t0", b"x")] {
        let msg = binary(topic, 9, payload);
        assert_eq!(
            strip_binary(&msg),
            Some(&data(parse(false, &msg, true)).2[..])
        );
    }
    let msg = binary("t0", 9, b"abc");
    // Every cut short of the seq's end, another tag, text: left to the full check.
    for cut in 0..12 {
        assert_eq!(strip_binary(&msg[..cut]), None, "cut {cut}");
    }
    assert_eq!(strip_binary(&msg[..12]), Some(&b""[..]));
    let mut other = msg.clone();
    other[0] = b'{';
    assert_eq!(strip_binary(&other), None);
}

#[test]
fn a_gap_out_of_range_is_named() {
    let why = "a gap needs a topic and from ≤ to < 18446744073709551615";
    for msg in [
        &br#"{"op":"gap","topic":"t0","from":5,"to":4}"#[..],
        br#"{"op":"gap","topic":"t0","from":1,"to":18446744073709551615}"#,
        br#"{"op":"gap","from":1,"to":2}"#,
    ] {
        match parse(true, msg, true) {
            Frame::Malformed(w) => assert_eq!(w, why, "{}", String::from_utf8_lossy(msg)),
            other => panic!("{other:?}: {}", String::from_utf8_lossy(msg)),
        }
    }
    assert!(matches!(
        parse(
            true,
            br#"{"op":"gap","topic":"t0","from":1,"to":18446744073709551614}"#,
            true
        ),
        Frame::Op(Op::Gap {
            to: 18446744073709551614,
            ..
        })
    ));
}

#[test]
fn malformed_frames_are_named_not_panicked_on() {
    let bad_text: [&[u8]; 9] = [
        b"{\"topic\":\"t0",
        b"{\"topic\":\"t0\",\"seq\":,\"data\":1}",
        b"{\"topic\":\"t0\",\"seq\":99999999999999999999999,\"data\":1}",
        b"{\"topic\":\"t0\",\"seq\":18446744073709551616,\"data\":1}",
        b"{\"topic\":\"t0\",\"data\":1,\"seq\":1}",
        b"{\"topic\":\"t0\",\"seq\":1,\"data\":1",
        b"{\"topic\":\"t0\",\"seq\":1,\"data\":\"abc}",
        b"not json at all",
        b"{\"hello\":1}",
    ];
    for msg in bad_text {
        assert!(
            matches!(parse(true, msg, true), Frame::Malformed(_)),
            "{}",
            String::from_utf8_lossy(msg)
        );
    }
    let bad_binary: [&[u8]; 4] = [b"", b"\x01", b"\x02\x00\0\0\0\0\0\0\0\x01", b"\x01\x05abc"];
    for msg in bad_binary {
        assert!(
            matches!(parse(false, msg, true), Frame::Malformed(_)),
            "{msg:?}"
        );
    }
    // Every prefix of a good envelope parses or is malformed; none panics.
    let good = text("BTC-USD", 12345, "\"xyz\"");
    for cut in 0..good.len() {
        let _ = parse(true, &good[..cut], true);
        let _ = parse(true, &good[..cut], false);
    }
    let good = binary("BTC-USD", 9, b"payload");
    for cut in 0..good.len() {
        let _ = parse(false, &good[..cut], true);
    }
}

#[test]
fn op_messages() {
    let op = |s: &str| match parse(true, s.as_bytes(), true) {
        Frame::Op(op) => op,
        other => panic!("{s}: {other:?}"),
    };
    assert_eq!(
        op(r#"{"op":"gap","topic":"T","from":42,"to":57}"#),
        Op::Gap {
            topic: "T".into(),
            from: 42,
            to: 57
        }
    );
    assert_eq!(
        op(r#"{ "op" : "heartbeat", "seq": {"T": 42, "U": 7} }"#),
        Op::Heartbeat
    );
    assert_eq!(op(r#"{"op":"subscribed","topics":["T"]}"#), Op::Subscribed);
    assert_eq!(
        op(r#"{"op":"error","error":"bad topic"}"#),
        Op::Error("bad topic".into())
    );
    assert_eq!(op(r#"{"op":"news","x":1}"#), Op::Other);
    for bad in [
        r#"{"op":"gap","topic":"T","from":58,"to":57}"#,
        r#"{"op":"gap","from":1,"to":2}"#,
        r#"{"op":7}"#,
    ] {
        assert!(
            matches!(parse(true, bad.as_bytes(), true), Frame::Malformed(_)),
            "{bad}"
        );
    }
}

#[test]
fn in_order_stream_is_clean_from_any_start() {
    let mut c = checker();
    let mut t = run(&mut c, &["41", "42", "43"]);
    assert_eq!(c.last_seq(0), Some(43));
    c.finish(0, &mut t);
    assert_eq!(
        t,
        V1Tally {
            envelopes: 3,
            ..V1Tally::default()
        }
    );
}

#[test]
fn announced_gap_is_not_a_loss() {
    let mut c = checker();
    // Resuming after 41 with 42..=57 no longer held.
    c.expect_first(0, 42);
    let mut t = run(&mut c, &["gap 42 57", "58", "59"]);
    assert_eq!((t.gap_messages, t.announced, t.bad_gaps), (1, 16, 0));
    assert_eq!(c.last_seq(0), Some(59));
    // The payload streams lost exactly the 16 announced messages.
    c.finish(16, &mut t);
    assert_eq!((t.unannounced, t.seq_holes), (0, 0));
    assert!(t.failures().is_empty(), "{:?}", t.failures());
}

#[test]
fn unannounced_jump_duplicate_and_late_arrival() {
    let mut c = checker();
    let mut t = run(&mut c, &["1", "2", "5", "5", "3", "6"]);
    assert_eq!((t.duplicates, t.out_of_order), (1, 1));
    c.finish(1, &mut t);
    // 4 never came and no gap announced it.
    assert_eq!((t.seq_holes, t.unannounced), (1, 1));
    let f = t.failures();
    assert_eq!(f.len(), 3, "{f:?}");
    assert!(f[0].starts_with("1 messages lost without a gap"));
}

#[test]
fn announced_messages_arriving_anyway_are_duplicates() {
    let mut c = checker();
    let t = run(&mut c, &["10", "gap 11 12", "12", "13"]);
    assert_eq!((t.announced, t.duplicates), (2, 1));
}

#[test]
fn gaps_that_do_not_start_at_the_next_seq() {
    // A gap starting late: 11 was skipped without a word.
    let mut c = checker();
    let mut t = run(&mut c, &["10", "gap 12 14", "15"]);
    assert_eq!((t.bad_gaps, t.announced), (1, 3));
    c.finish(4, &mut t);
    assert_eq!((t.seq_holes, t.unannounced), (1, 1));
    // A gap overlapping what arrived: only the part not yet seen is announced.
    let mut c = checker();
    let t = run(&mut c, &["10", "11", "gap 11 13", "14"]);
    assert_eq!((t.bad_gaps, t.announced, t.duplicates), (1, 2, 0));
}

#[test]
fn losses_beyond_announced_are_unannounced() {
    // The tail never came (the payload streams lost 5), one gap announced 2.
    let mut c = checker();
    let mut t = run(&mut c, &["1", "gap 2 3", "4"]);
    c.finish(5, &mut t);
    assert_eq!(t.unannounced, 3);
}

#[test]
fn foreign_topics_and_other_ops() {
    let mut c = checker();
    let mut t = V1Tally::default();
    assert_eq!(c.handle_data(b"ETH-USD", 1, &mut t), Verdict::Foreign);
    assert_eq!(
        c.handle_data(b"BTC-USD", 8, &mut t),
        Verdict::Subscribed { first: true }
    );
    assert_eq!(
        c.handle_data(b"BTC-USD", 9, &mut t),
        Verdict::Subscribed { first: false }
    );
    let gap = Op::Gap {
        topic: "SOL-USD".into(),
        from: 1,
        to: 2,
    };
    assert_eq!(c.handle_op(gap, &mut t), None);
    assert_eq!(c.handle_op(Op::Heartbeat, &mut t), None);
    assert_eq!(c.handle_op(Op::Other, &mut t), None);
    let err = c.handle_op(Op::Error("nope".into()), &mut t);
    assert!(err.is_some_and(|e| e.contains("nope")));
    assert_eq!(
        (
            t.envelopes,
            t.wrong_topic,
            t.heartbeats,
            t.other_ops,
            t.errors
        ),
        (3, 2, 1, 1, 1)
    );
    let mut sum = V1Tally::default();
    sum.merge(&t);
    sum.merge(&t);
    assert_eq!((sum.envelopes, sum.wrong_topic), (6, 4));
}

#[test]
fn resume_point_before_and_after_the_first_envelope() {
    let mut c = checker();
    assert_eq!(c.last_seq(0), None);
    assert_eq!(c.last_seq(5), None);
    c.expect_first(0, 100);
    assert_eq!(c.last_seq(0), Some(99));
    // Once started, a resume point does not move it.
    let t = run(&mut c, &["100"]);
    c.expect_first(0, 500);
    assert_eq!(c.last_seq(0), Some(100));
    assert_eq!(t.envelopes, 1);
}

#[test]
fn interleaved_topics_keep_their_own_sequences() {
    // Runs of one topic, switches, a name that is a prefix of another: each envelope is
    // checked against its own topic's sequence, whatever topic came before it.
    let mut c = Checker::new([Arc::from("BTC"), Arc::from("BTC-USD"), Arc::from("ETH")]);
    let mut t = V1Tally::default();
    let script: &[(&[u8], u64)] = &[
        (b"BTC", 1),
        (b"BTC", 2),
        (b"BTC-USD", 7),
        (b"ETH", 3),
        (b"BTC-USD", 8),
        (b"BTC", 3),
        (b"BTC", 3),
        (b"ETH", 5),
        (b"BTC-U", 1),
    ];
    for &(topic, seq) in script {
        c.handle_data(topic, seq, &mut t);
    }
    assert_eq!(
        (t.envelopes, t.duplicates, t.wrong_topic),
        (9, 1, 1),
        "{t:?}"
    );
    assert_eq!(
        (c.last_seq(0), c.last_seq(1), c.last_seq(2)),
        (Some(3), Some(8), Some(5))
    );
    let mut fin = V1Tally::default();
    c.finish(0, &mut fin);
    // ETH skipped 4 without a gap: the only hole.
    assert_eq!(fin.seq_holes, 1);
}

#[test]
fn the_largest_sequence_numbers_are_counted_not_panicked_on() {
    // A hostile server's envelopes jump to u64::MAX on two topics: huge holes, no panic.
    let mut c = Checker::new([Arc::from("a"), Arc::from("b")]);
    let mut t = V1Tally::default();
    for topic in [&b"a"[..], b"b"] {
        c.handle_data(topic, 1, &mut t);
        c.handle_data(topic, u64::MAX, &mut t);
        c.handle_data(topic, u64::MAX, &mut t);
    }
    let mut fin = V1Tally::default();
    c.finish(u64::MAX, &mut fin);
    assert_eq!((fin.seq_holes, fin.unannounced), (u64::MAX, u64::MAX));
}

/// The general path: parse, then check.
fn slow(c: &mut Checker, msg: &[u8], t: &mut V1Tally) -> Option<(Verdict, u64, Vec<u8>)> {
    match parse(false, msg, true) {
        Frame::Data { topic, seq, data } => {
            Some((c.handle_data(topic, seq, t), seq, data.to_vec()))
        }
        Frame::Op(_) => None,
        Frame::Malformed(_) => {
            t.malformed += 1;
            None
        }
    }
}

#[test]
fn the_binary_fast_path_agrees_with_parse_and_check() {
    // Frames a subscriber may see: its topic in and out of order, repeated, at the
    // largest seq; another topic of the same and of other lengths; a prefix of its own
    // name; a wrong tag; frames too short for a head or a seq; an empty payload.
    let mut frames = vec![
        binary("t0", 5, b"abc"),
        binary("t0", 6, b""),
        binary("t0", 6, b"dup"),
        binary("t0", 9, b"jump"),
        binary("t0", 7, b"late"),
        binary("t1", 10, b"other"),
        binary("t", 11, b"prefix"),
        binary("t00", 12, b"longer"),
        binary("t0", u64::MAX - 1, b"big"),
        binary("t0", u64::MAX, b"max"),
        vec![0x02, 2, b't', b'0', 0, 0, 0, 0, 0, 0, 0, 1],
        vec![BINARY_TAG, 2, b't', b'0', 0, 0, 0],
        vec![BINARY_TAG, 2, b't'],
        vec![],
    ];
    frames.extend((20..40).map(|s| binary("t0", s, &s.to_le_bytes())));
    for name in ["t0", "BTC-USD", "abcdef", ""] {
        let mut fast = Checker::new([Arc::from(name)]);
        let mut reference = Checker::new([Arc::from(name)]);
        let (mut tf, mut tr) = (V1Tally::default(), V1Tally::default());
        let renamed: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                // The same frames, re-addressed from t0 to this checker's topic.
                match parse(false, f, true) {
                    Frame::Data { topic, seq, data } if topic == b"t0" => binary(name, seq, data),
                    _ => f.clone(),
                }
            })
            .collect();
        for f in &renamed {
            let want = slow(&mut reference, f, &mut tr);
            let got = match fast.handle_binary(f, &mut tf) {
                Some((v, seq, data)) => Some((v, seq, data.to_vec())),
                None => slow(&mut fast, f, &mut tf),
            };
            assert_eq!(got, want, "topic {name:?}, frame {f:?}");
        }
        assert_eq!(tf, tr, "topic {name:?}");
        assert_eq!(fast.last_seq(0), reference.last_seq(0));
        let (mut ff, mut fr) = (V1Tally::default(), V1Tally::default());
        fast.finish(0, &mut ff);
        reference.finish(0, &mut fr);
        assert_eq!(ff, fr);
    }
    // Only a one-topic subscriber with a name of at most 6 bytes has a head.
    let mut long = Checker::new([Arc::from("BTC-USDT")]);
    let mut two = Checker::new([Arc::from("t0"), Arc::from("t1")]);
    let mut t = V1Tally::default();
    assert_eq!(
        long.handle_binary(&binary("BTC-USDT", 1, b""), &mut t),
        None
    );
    assert_eq!(two.handle_binary(&binary("t0", 1, b""), &mut t), None);
    // And it takes envelopes of its topic.
    let mut c = Checker::new([Arc::from("t0")]);
    let msg = binary("t0", 3, b"x");
    assert_eq!(
        c.handle_binary(&msg, &mut t),
        Some((Verdict::Subscribed { first: true }, 3, &b"x"[..]))
    );
}

#[test]
fn epochs_are_read_and_a_reset_fails_the_run() {
    let mut c = checker();
    let mut t = V1Tally::default();
    let op = |op: &str, topic: &str, e: &str| {
        let text = format!(r#"{{"op":"{op}","topic":"{topic}","epoch":"{e}"}}"#);
        match parse(true, text.as_bytes(), true) {
            Frame::Op(op) => op,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        op("epoch", "BTC-USD", "5f0c93a1d2e47b68"),
        Op::Epoch {
            topic: "BTC-USD".into(),
            epoch: "5f0c93a1d2e47b68".into()
        }
    );
    assert_eq!(
        c.handle_op(op("epoch", "BTC-USD", "5f0c93a1d2e47b68"), &mut t),
        None
    );
    assert_eq!(
        c.handle_op(op("epoch", "ETH-USD", "5f0c93a1d2e47b68"), &mut t),
        None
    );
    assert_eq!(t.wrong_topic, 1);
    c.handle_data(b"BTC-USD", 7, &mut t);
    // The numbering was lost: a failure, and the topic's numbers start afresh.
    let why = c.handle_op(op("reset", "BTC-USD", "9b41d07e33a5c2f1"), &mut t);
    assert!(why.is_some_and(|w| w.contains("reset")));
    assert_eq!(
        c.handle_data(b"BTC-USD", 1, &mut t),
        Verdict::Subscribed { first: true }
    );
    assert_eq!((t.resets, t.duplicates), (1, 0));
    assert!(t.failures().iter().any(|f| f.contains("1 resets")));
    assert!(matches!(
        parse(true, br#"{"op":"epoch","topic":"BTC-USD"}"#, true),
        Frame::Malformed(_)
    ));
}
