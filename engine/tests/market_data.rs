//! The `ringcast.v1` contract on real sockets, both backends: envelopes, sequence numbers
//! across publishers and reactors, snapshots, resume inside and past the history, gaps
//! announced for slow consumers, heartbeats, and every bad `since`/`snapshot` answered.
//!
//! Synchronisation: a `ringcast.v1` subscription takes its reactor's inbox into the logs
//! before it starts, so everything published through the API before a client connects
//! is in the history it resumes from; nothing here waits for time to pass.

use crate::fanout_util;
use crate::util;

use std::collections::BTreeMap;
use std::time::Duration;

use fanout_util::{
    Ws, broadcast, builder, connect, connect_stalled_with, next_data, next_text, send_text, start,
    try_connect_with, wait_for, wait_stats,
};
use ringcast::EngineHandle;
use ringcast::fanout::{History, SlowConsumer};
use ringcast::server::Backend;
use serde_json::{Value, json};
use tungstenite::Message;

const V1: &[(&str, &str)] = &[("Sec-WebSocket-Protocol", "ringcast.v1")];

/// What a v1 client receives.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    /// A text envelope.
    Text {
        topic: String,
        seq: u64,
        data: Value,
    },
    /// A binary envelope.
    Binary {
        topic: String,
        seq: u64,
        payload: Vec<u8>,
    },
    /// A protocol message (`{"op":…}`).
    Op(Value),
}

/// The next frame that is not an `epoch` message (one starts every subscription; the
/// tests of epochs read them with [`next_any`]).
fn next(ws: &mut Ws) -> Got {
    loop {
        match next_any(ws) {
            Got::Op(v) if v["op"] == "epoch" => {}
            g => return g,
        }
    }
}

fn next_any(ws: &mut Ws) -> Got {
    match next_data(ws) {
        Message::Text(t) => {
            let v: Value = serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("v1 text {t:?} is not JSON: {e}"));
            if v.get("op").is_some() {
                return Got::Op(v);
            }
            let keys: Vec<&String> = v.as_object().expect("an object").keys().collect();
            assert_eq!(keys.len(), 3, "{v}");
            Got::Text {
                topic: v["topic"].as_str().expect("topic").to_owned(),
                seq: v["seq"].as_u64().expect("seq"),
                data: v["data"].clone(),
            }
        }
        Message::Binary(b) => {
            assert_eq!(b[0], 0x01, "binary envelope tag");
            let n = b[1] as usize;
            let topic = String::from_utf8(b[2..2 + n].to_vec()).expect("topic");
            let seq = u64::from_be_bytes(b[2 + n..10 + n].try_into().unwrap());
            Got::Binary {
                topic,
                seq,
                payload: b[10 + n..].to_vec(),
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The next message that is not a heartbeat.
fn next_not_beat(ws: &mut Ws) -> Got {
    loop {
        match next(ws) {
            Got::Op(v) if v["op"] == "heartbeat" => {}
            g => return g,
        }
    }
}

/// The next text envelope's (topic, seq, data).
fn envelope(ws: &mut Ws) -> (String, u64, Value) {
    match next_not_beat(ws) {
        Got::Text { topic, seq, data } => (topic, seq, data),
        other => panic!("expected an envelope, got {other:?}"),
    }
}

fn seq_of(ws: &mut Ws) -> u64 {
    envelope(ws).1
}

fn v1(h: &EngineHandle, path: &str) -> Ws {
    try_connect_with(h.local_addr(), path, V1)
        .unwrap_or_else(|(status, body)| panic!("{path}: refused with {status}: {body}"))
}

fn refused(h: &EngineHandle, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    match try_connect_with(h.local_addr(), path, headers) {
        Ok(_) => panic!("{path} was accepted"),
        Err(e) => e,
    }
}

fn engine(backend: Backend, history: usize) -> EngineHandle {
    start(builder(backend).history(History {
        messages: history,
        ..History::default()
    }))
}

fn publish_n(h: &EngineHandle, topic: &str, n: u64) {
    for _ in 0..n {
        let seq = h.fanout().last_seq(topic) + 1;
        let r = h.publish(topic, &format!("{{\"n\":{seq}}}"));
        assert_eq!(r.seq, seq);
        assert!(r.is_complete());
    }
}

fn envelopes_of_every_kind(backend: Backend) {
    let h = engine(backend, 16);
    let mut sub = v1(&h, "/sub/BTC-USD");
    let mut plain = connect(h.local_addr(), "/sub/BTC-USD");
    assert_eq!(
        h.publish("BTC-USD", r#"{"bid":64000.5,"ask":64001}"#).seq,
        1
    );
    assert_eq!(h.publish("BTC-USD", "halted \"now\"\n").seq, 2);
    assert_eq!(h.publish_binary("BTC-USD", &[0, 1, 2, 255]).seq, 3);
    assert_eq!(h.publish("BTC-USD", "").seq, 4);
    assert_eq!(
        envelope(&mut sub),
        ("BTC-USD".into(), 1, json!({"bid":64000.5,"ask":64001}))
    );
    assert_eq!(
        envelope(&mut sub),
        ("BTC-USD".into(), 2, json!("halted \"now\"\n"))
    );
    assert_eq!(
        next_not_beat(&mut sub),
        Got::Binary {
            topic: "BTC-USD".into(),
            seq: 3,
            payload: vec![0, 1, 2, 255]
        }
    );
    assert_eq!(envelope(&mut sub), ("BTC-USD".into(), 4, json!("")));
    // The text of a JSON publication is in the envelope verbatim.
    assert!(
        h.publish("BTC-USD", r#"{ "spaced" : [1, 2] }"#)
            .is_complete()
    );
    match next_data(&mut sub) {
        Message::Text(t) => assert_eq!(
            t.as_str(),
            r#"{"topic":"BTC-USD","seq":5,"data":{ "spaced" : [1, 2] }}"#
        ),
        other => panic!("{other:?}"),
    }
    // Plain subscribers get the payloads as published.
    assert_eq!(next_text(&mut plain), r#"{"bid":64000.5,"ask":64001}"#);
    assert_eq!(next_text(&mut plain), "halted \"now\"\n");
    assert_eq!(next_data(&mut plain), Message::binary(vec![0, 1, 2, 255]));
}

/// Several WebSocket publishers (on both reactors) and the API publish to two topics at
/// once; every v1 subscriber sees each topic's numbers 1, 2, 3… with no gap, and the same
/// number for the same message.
fn seq_continuity_under_concurrent_publishers(backend: Backend) {
    const PER: u64 = 300;
    let h = engine(backend, 1024);
    let addr = h.local_addr();
    let mut subs: Vec<Ws> = (0..4).map(|_| v1(&h, "/sub/A,B")).collect();
    std::thread::scope(|s| {
        for p in 0..4 {
            let topic = if p % 2 == 0 { "A" } else { "B" };
            s.spawn(move || {
                let mut ws = connect(addr, &format!("/pub/{topic}"));
                for i in 0..PER {
                    send_text(&mut ws, &format!("\"p{p}-{i}\""));
                }
                ws.close(None).unwrap();
                while ws.read().is_ok() {}
            });
        }
        let h = &h;
        s.spawn(move || {
            for i in 0..PER {
                assert!(h.publish("A", &format!("\"api-{i}\"")).is_complete());
            }
        });
    });
    let total = |t: &str| if t == "A" { 3 * PER } else { 2 * PER };
    let mut first: Option<BTreeMap<(String, u64), Value>> = None;
    for ws in &mut subs {
        let mut next_seq = BTreeMap::from([("A".to_owned(), 1u64), ("B".to_owned(), 1)]);
        let mut seen = BTreeMap::new();
        while next_seq["A"] <= total("A") || next_seq["B"] <= total("B") {
            let (topic, seq, data) = envelope(ws);
            assert_eq!(seq, next_seq[&topic], "topic {topic}");
            *next_seq.get_mut(&topic).unwrap() += 1;
            seen.insert((topic, seq), data);
        }
        match &first {
            None => first = Some(seen),
            Some(f) => assert_eq!(f, &seen, "every subscriber, the same numbering"),
        }
    }
}

fn snapshot_with_and_without_prior_messages(backend: Backend) {
    let h = engine(backend, 16);
    // Nothing published yet: the snapshot is empty and live messages follow.
    let mut early = v1(&h, "/sub/A,B?snapshot=1");
    publish_n(&h, "A", 3);
    for want in 1..=3 {
        assert_eq!(seq_of(&mut early), want);
    }
    // Now the latest of A comes first, then live ones; B has nothing.
    let mut late = v1(&h, "/sub/A,B?snapshot=1");
    assert_eq!(envelope(&mut late), ("A".into(), 3, json!({"n":3})));
    publish_n(&h, "B", 1);
    assert_eq!(envelope(&mut late), ("B".into(), 1, json!({"n":1})));
    // At run time too.
    let mut rt = v1(&h, "/sub/B");
    send_text(
        &mut rt,
        r#"{"op":"subscribe","topics":["A"],"snapshot":true}"#,
    );
    assert_eq!(
        next_not_beat(&mut rt),
        Got::Op(json!({"op":"subscribed","topics":["A"]}))
    );
    assert_eq!(envelope(&mut rt), ("A".into(), 3, json!({"n":3})));
    publish_n(&h, "A", 1);
    assert_eq!(envelope(&mut rt), ("A".into(), 4, json!({"n":4})));
}

fn resume_inside_history(backend: Backend) {
    let h = engine(backend, 1024);
    publish_n(&h, "A", 20);
    let mut ws = v1(&h, "/sub/A?since=12");
    publish_n(&h, "A", 2);
    // 13..=20 replayed, then 21 and 22 live: no gap, no duplicate at the seam.
    for want in 13..=22 {
        assert_eq!(seq_of(&mut ws), want);
    }
    // The run-time form, and since equal to the latest: only live ones.
    let mut rt = v1(&h, "/sub/B");
    send_text(
        &mut rt,
        r#"{"op":"subscribe","topics":["A"],"since":{"A":20}}"#,
    );
    assert_eq!(
        next_not_beat(&mut rt),
        Got::Op(json!({"op":"subscribed","topics":["A"]}))
    );
    assert_eq!(seq_of(&mut rt), 21);
    assert_eq!(seq_of(&mut rt), 22);
    let mut at_head = v1(&h, "/sub/A?since=22");
    publish_n(&h, "A", 1);
    assert_eq!(seq_of(&mut at_head), 23);
}

fn resume_past_history(backend: Backend) {
    let h = engine(backend, 10);
    publish_n(&h, "A", 30);
    let mut ws = v1(&h, "/sub/A?since=5");
    assert_eq!(
        next_not_beat(&mut ws),
        Got::Op(json!({"op":"gap","topic":"A","from":6,"to":20}))
    );
    for want in 21..=30 {
        assert_eq!(seq_of(&mut ws), want);
    }
    publish_n(&h, "A", 1);
    assert_eq!(seq_of(&mut ws), 31);
}

/// 1 KiB messages: a resume's replay spans several log chunks, and after the history has
/// turned over many times (chunks back in the pool and reused), still starts exactly.
fn resume_across_chunks_and_after_recycling(backend: Backend) {
    let h = engine(backend, 100);
    let body = "x".repeat(1000);
    let mut live = v1(&h, "/sub/A");
    for i in 1..=1000u64 {
        assert_eq!(h.publish("A", &format!("\"{i}{body}\"")).seq, i);
        // Keep up, so the live subscriber's cursor never holds chunks back.
        assert_eq!(seq_of(&mut live), i);
    }
    let mut ws = v1(&h, "/sub/A?since=905");
    for want in 906..=1000 {
        let (_, seq, data) = envelope(&mut ws);
        assert_eq!(seq, want);
        assert_eq!(data.as_str().unwrap(), format!("{want}{body}"));
    }
    let mut old = v1(&h, "/sub/A?since=850");
    assert_eq!(
        next_not_beat(&mut old),
        Got::Op(json!({"op":"gap","topic":"A","from":851,"to":900}))
    );
    assert_eq!(seq_of(&mut old), 901);
}

fn bad_since_and_snapshot_are_refused(backend: Backend) {
    let h = engine(backend, 16);
    publish_n(&h, "A", 3);
    for (path, headers, status, why) in [
        (
            "/sub/A?since=1",
            &[][..],
            400,
            "need the ringcast.v1 subprotocol",
        ),
        (
            "/sub/A?snapshot=1",
            &[][..],
            400,
            "need the ringcast.v1 subprotocol",
        ),
        (
            "/sub/A?since=abc",
            V1,
            400,
            "since must be a sequence number",
        ),
        ("/sub/A?since=-1", V1, 400, "not '-1'"),
        ("/sub/A?snapshot=maybe", V1, 400, "snapshot must be 1 or 0"),
        ("/sub/A?since=1&snapshot=1", V1, 400, "not both"),
        (
            "/sub/A?since=4",
            V1,
            400,
            "since 4 is past the topic's latest seq 3",
        ),
        (
            "/sub/A,Z?since=1",
            V1,
            400,
            "topic 'Z': since 1 is past the topic's latest seq 0",
        ),
        ("/pub/A?since=1", V1, 400, "for subscribers"),
    ] {
        let (s, body) = refused(&h, path, headers);
        assert_eq!(s, status, "{path}: {body}");
        assert!(body.contains(why), "{path}: {body:?} should say {why:?}");
    }
    let mut plain = connect(h.local_addr(), "/sub/B");
    let mut ws = v1(&h, "/sub/B");
    let Got::Op(e) = next_any(&mut ws) else {
        panic!("a v1 subscription starts with its epoch");
    };
    assert_eq!(
        (&e["op"], &e["topic"]),
        (&json!("epoch"), &json!("B")),
        "{e}"
    );
    for (is_v1, msg, why) in [
        (
            false,
            r#"{"op":"subscribe","topics":["A"],"since":{"A":1}}"#,
            "ringcast.v1",
        ),
        (
            true,
            r#"{"op":"subscribe","topics":["A"],"since":{"A":-1}}"#,
            "not -1",
        ),
        (
            true,
            r#"{"op":"subscribe","topics":["A"],"since":{"A":"x"}}"#,
            "sequence number",
        ),
        (
            true,
            r#"{"op":"subscribe","topics":["A"],"since":{"C":1}}"#,
            "'C', which is not among",
        ),
        (
            true,
            r#"{"op":"subscribe","topics":["A"],"since":{"A":9}}"#,
            "past the topic's latest seq 3",
        ),
        (
            true,
            r#"{"op":"subscribe","topics":["A"],"snapshot":"yes"}"#,
            "true or false",
        ),
    ] {
        let ws = if is_v1 { &mut ws } else { &mut plain };
        send_text(ws, msg);
        let reply: Value = serde_json::from_str(&next_text(ws)).unwrap();
        assert_eq!(reply["op"], "error", "{msg}: {reply}");
        let e = reply["error"].as_str().unwrap();
        assert!(e.contains(why), "{msg}: {e:?} should say {why:?}");
    }
    // Still open and subscribed to B.
    publish_n(&h, "B", 1);
    assert_eq!(next_text(&mut plain), r#"{"n":1}"#);
    assert_eq!(envelope(&mut ws), ("B".into(), 1, json!({"n":1})));
}

/// A resume request refused for one topic starts none: no replay and no gap of the
/// others reach the client, and it stays subscribed to what it had.
fn a_refused_resume_starts_none_of_its_topics(backend: Backend) {
    let h = engine(backend, 16);
    publish_n(&h, "A", 3);
    let mut ws = v1(&h, "/sub/B");
    let req = json!({"op": "subscribe", "topics": ["A", "Z"], "since": {"A": 1, "Z": 5}});
    send_text(&mut ws, &req.to_string());
    match next_not_beat(&mut ws) {
        Got::Op(v) => {
            assert_eq!(v["op"], "error", "{v}");
            let e = v["error"].as_str().unwrap();
            assert!(
                e.contains("topic 'Z': since 5 is past") && e.contains("no topic subscribed"),
                "{e}"
            );
        }
        other => panic!("expected the error, got {other:?}"),
    }
    publish_n(&h, "A", 1);
    publish_n(&h, "B", 1);
    assert_eq!(envelope(&mut ws), ("B".into(), 1, json!({"n":1})));
    // The same request within bounds: A's replay, then what follows.
    let req = json!({"op": "subscribe", "topics": ["A", "Z"], "since": {"A": 1, "Z": 0}});
    send_text(&mut ws, &req.to_string());
    assert_eq!(
        next_not_beat(&mut ws),
        Got::Op(json!({"op":"subscribed","topics":["A","Z"]}))
    );
    assert_eq!(
        (seq_of(&mut ws), seq_of(&mut ws), seq_of(&mut ws)),
        (2, 3, 4)
    );
    // Asking again for a topic it has changes nothing: acknowledged, nothing replayed.
    let req = json!({"op": "subscribe", "topics": ["A"], "since": {"A": 1}});
    send_text(&mut ws, &req.to_string());
    assert_eq!(
        next_not_beat(&mut ws),
        Got::Op(json!({"op":"subscribed","topics":["A"]}))
    );
    publish_n(&h, "B", 1);
    assert_eq!(envelope(&mut ws), ("B".into(), 2, json!({"n":2})));
}

/// An engine that broadcasts and sends heartbeats every `ms` milliseconds.
fn beating(backend: Backend, ms: u64) -> EngineHandle {
    start(
        builder(backend)
            .handler(broadcast())
            .heartbeat(Some(Duration::from_millis(ms))),
    )
}

fn heartbeat_names_the_latest_seq_sent(backend: Backend) {
    let h = beating(backend, 200);
    let mut ws = v1(&h, "/sub/A,B");
    publish_n(&h, "A", 2);
    let mut envelopes = 0;
    loop {
        match next(&mut ws) {
            Got::Text { .. } => envelopes += 1,
            Got::Op(v) => {
                assert_eq!(v["op"], "heartbeat", "{v}");
                let seq = &v["seq"];
                assert_eq!(seq.as_object().unwrap().len(), 2, "{v}");
                assert_eq!(seq["B"], 0, "{v}");
                // Never ahead of what this client was sent.
                assert_eq!(seq["A"], envelopes, "{v}");
                if envelopes == 2 {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    // Plain clients get none: the next thing a plain client sees is the next message.
    let mut plain = connect(h.local_addr(), "/sub/A");
    std::thread::sleep(Duration::from_millis(500));
    publish_n(&h, "A", 1);
    assert_eq!(next_text(&mut plain), r#"{"n":3}"#);
}

/// Heartbeats go where a topic was quiet since the last tick: a connection sent something
/// of every topic meanwhile gets none (it has just seen each topic's progress), one with a
/// quiet topic keeps getting them, and a busy topic that falls quiet gets them again.
fn heartbeat_only_where_a_topic_was_quiet(backend: Backend) {
    let h = beating(backend, 400);
    let mut busy = v1(&h, "/sub/A");
    let mut mixed = v1(&h, "/sub/A,B");
    let (mut busy_beats, mut mixed_beats) = (0, 0);
    // The next envelope of A on `ws`, counting the heartbeats before it.
    let until_envelope = |ws: &mut Ws, beats: &mut u32| loop {
        match next(ws) {
            Got::Op(v) if v["op"] == "heartbeat" => *beats += 1,
            Got::Text { topic, seq, .. } => return (topic, seq),
            other => panic!("{other:?}"),
        }
    };
    // A message every 20 ms for 2.4 s: six ticks.
    let start = std::time::Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(2400) {
        publish_n(&h, "A", 1);
        sent += 1;
        assert_eq!(
            until_envelope(&mut busy, &mut busy_beats),
            ("A".into(), sent)
        );
        assert_eq!(
            until_envelope(&mut mixed, &mut mixed_beats),
            ("A".into(), sent)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every tick would have been ~6; one is allowed for a test thread stalled past a tick.
    assert!(
        busy_beats <= 1,
        "a busy connection got {busy_beats} heartbeats"
    );
    assert!(
        mixed_beats >= 3,
        "a connection with a quiet topic got {mixed_beats}"
    );
    // A quiet now: the busy connection hears a heartbeat again, with A's last seq.
    match next(&mut busy) {
        Got::Op(v) => {
            assert_eq!(v["op"], "heartbeat", "{v}");
            assert_eq!(v["seq"]["A"], sent, "{v}");
        }
        other => panic!("{other:?}"),
    }
}

/// A stalled v1 subscriber under drop-oldest / conflate: what it receives, together with
/// the gaps it is told of, is exactly 1..=N in order, and some were skipped.
fn gaps_announced_for_slow_consumers(backend: Backend) {
    for policy in [SlowConsumer::DropOldest, SlowConsumer::Conflate] {
        const N: u64 = 3000;
        let h = start(
            builder(backend)
                .slow_consumer(policy)
                .max_lag_bytes(32 << 10)
                .sndbuf(4096),
        );
        let mut ws = connect_stalled_with(h.local_addr(), "/sub/A", V1);
        let body = "y".repeat(500);
        for _ in 0..N {
            assert!(h.publish("A", &format!("\"{body}\"")).is_complete());
        }
        wait_stats(&h, "skips", |t| {
            t.slow_dropped_frames + t.slow_conflated_frames > 0
        });
        let mut next_seq = 1;
        let mut announced = 0;
        while next_seq <= N {
            match next_not_beat(&mut ws) {
                Got::Text { seq, .. } => {
                    assert_eq!(seq, next_seq, "{policy}: unannounced loss or duplicate");
                    next_seq += 1;
                }
                Got::Op(v) => {
                    assert_eq!(v["op"], "gap", "{v}");
                    assert_eq!(v["topic"], "A");
                    assert_eq!(v["from"].as_u64(), Some(next_seq), "{policy}: {v}");
                    let to = v["to"].as_u64().unwrap();
                    assert!(to >= next_seq && to < N, "{policy}: {v}");
                    announced += to + 1 - next_seq;
                    next_seq = to + 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(announced > 0, "{policy}: nothing was skipped");
        let st = h.stats().total();
        assert_eq!(
            st.slow_dropped_frames + st.slow_conflated_frames,
            announced,
            "{policy}: every skipped message announced"
        );
    }
}

/// The `epoch` message that starts a subscription to `topic`: its epoch.
fn epoch_of(ws: &mut Ws, topic: &str) -> String {
    match next_any(ws) {
        Got::Op(v) if v["op"] == "epoch" && v["topic"] == topic => {
            let e = v["epoch"].as_str().expect("epoch").to_owned();
            assert!(
                e.len() == 16 && e.bytes().all(|b| b.is_ascii_hexdigit()),
                "{v}"
            );
            e
        }
        other => panic!("expected the epoch of {topic}, got {other:?}"),
    }
}

/// Every subscription starts with the epoch of its topic's numbering, ahead of its gap and
/// replay; a resume that names it goes on exactly as one without.
fn a_subscription_starts_with_its_epoch(backend: Backend) {
    let h = engine(backend, 4);
    publish_n(&h, "A", 10);
    let mut first = v1(&h, "/sub/A,B");
    let a = epoch_of(&mut first, "A");
    let b = epoch_of(&mut first, "B");
    assert_ne!(a, b, "each topic its own numbering");
    // A path resume in the same numbering: the epoch, the gap (7..10 held), the rest.
    let mut ws = v1(&h, &format!("/sub/A?since=2&epoch={a}"));
    assert_eq!(epoch_of(&mut ws, "A"), a);
    match next_any(&mut ws) {
        Got::Op(v) => assert_eq!(v, json!({"op":"gap","topic":"A","from":3,"to":6})),
        other => panic!("{other:?}"),
    }
    assert_eq!((seq_of(&mut ws), seq_of(&mut ws)), (7, 8));
    // At run time: the epoch, the reply, the replay.
    let req = json!({"op":"subscribe","topics":["B","A"],"since":{"A":8,"B":0},"epoch":{"A":a}});
    let mut rt = v1(&h, "/sub/C");
    epoch_of(&mut rt, "C");
    send_text(&mut rt, &req.to_string());
    assert_eq!(epoch_of(&mut rt, "B"), b);
    assert_eq!(epoch_of(&mut rt, "A"), a);
    match next_any(&mut rt) {
        Got::Op(v) => assert_eq!(v["op"], "subscribed", "{v}"),
        other => panic!("{other:?}"),
    }
    assert_eq!((seq_of(&mut rt), seq_of(&mut rt)), (9, 10));
    publish_n(&h, "A", 1);
    assert_eq!(seq_of(&mut rt), 11);
    assert_eq!(seq_of(&mut ws), 9);
}

/// A server that restarted numbers from 1 again in a new epoch. A client resuming with a
/// `since` of the old numbering (here one the new server has already passed, which a bare
/// `since` cannot tell from a real position) is told with a `reset` naming the new epoch,
/// then gets the new numbering from its oldest message held, its missing start announced:
/// never messages of the new numbering in place of those it asked for.
fn a_resume_of_another_numbering_is_a_reset(backend: Backend) {
    let old = engine(backend, 16);
    publish_n(&old, "A", 50);
    let mut ws = v1(&old, "/sub/A?since=45");
    let was = epoch_of(&mut ws, "A");
    assert_eq!(seq_of(&mut ws), 46);
    drop(ws);
    wait_stats(&old, "the resume counted", |t| t.v1_resumes == 1);
    old.shutdown();

    let new = engine(backend, 16);
    publish_n(&new, "A", 60);
    let mut ws = v1(&new, &format!("/sub/A?since=50&epoch={was}"));
    let now = match next_any(&mut ws) {
        Got::Op(v) if v["op"] == "reset" && v["topic"] == "A" => {
            v["epoch"].as_str().unwrap().to_owned()
        }
        other => panic!("expected a reset, got {other:?}"),
    };
    assert_ne!(now, was);
    match next_any(&mut ws) {
        Got::Op(v) => assert_eq!(v, json!({"op":"gap","topic":"A","from":1,"to":44})),
        other => panic!("{other:?}"),
    }
    for n in 45..=60 {
        assert_eq!(seq_of(&mut ws), n);
    }
    publish_n(&new, "A", 1);
    assert_eq!(seq_of(&mut ws), 61);

    // At run time, with a `since` past the new numbering's latest: a reset too, where a
    // bare `since` is refused as ahead of the topic.
    let mut rt = v1(&new, "/sub/B");
    epoch_of(&mut rt, "B");
    let req = json!({"op":"subscribe","topics":["A"],"since":{"A":500},"epoch":{"A":was}});
    send_text(&mut rt, &req.to_string());
    match next_any(&mut rt) {
        Got::Op(v) => assert_eq!(v, json!({"op":"reset","topic":"A","epoch":now})),
        other => panic!("{other:?}"),
    }
    match next_any(&mut rt) {
        Got::Op(v) => assert_eq!(v["op"], "gap", "{v}"),
        other => panic!("{other:?}"),
    }
    match next_any(&mut rt) {
        Got::Op(v) => assert_eq!(v["op"], "subscribed", "{v}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(seq_of(&mut rt), 46);
    // The current epoch resumes as it should.
    let mut same = v1(&new, &format!("/sub/A?since=60&epoch={now}"));
    assert_eq!(epoch_of(&mut same, "A"), now);
    assert_eq!(seq_of(&mut same), 61);
    // Counted: two resets, one resume (the subscriptions without `since` are neither).
    let t = wait_stats(&new, "the resumes counted", |t| t.v1_resets == 2);
    assert_eq!((t.v1_resets, t.v1_resumes), (2, 1));
}

/// A topic forgotten while no one subscribed (no history kept anywhere, nothing published
/// for the history TTL) numbers from 1 again in a new epoch: a resume of the old numbering
/// is a reset, where a bare `since` would replay the new numbering's messages after it.
fn a_resume_of_a_forgotten_topic_is_a_reset(backend: Backend) {
    let h = start(builder(backend).history(History {
        messages: 16,
        idle_ttl: Duration::from_millis(200),
        ..History::default()
    }));
    publish_n(&h, "A", 5);
    let mut ws = v1(&h, "/sub/A?since=0");
    let was = epoch_of(&mut ws, "A");
    assert_eq!(seq_of(&mut ws), 1);
    drop(ws);
    // The reactors forget the topic, then the node its counter (swept every second).
    wait_for("topic A forgotten", || h.fanout().last_seq("A") == 0);
    publish_n(&h, "A", 8);
    let mut ws = v1(&h, &format!("/sub/A?since=5&epoch={was}"));
    match next_any(&mut ws) {
        Got::Op(v) => {
            assert_eq!(
                (&v["op"], &v["topic"]),
                (&json!("reset"), &json!("A")),
                "{v}"
            );
            assert_ne!(v["epoch"], json!(was));
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    for n in 1..=8 {
        assert_eq!(seq_of(&mut ws), n);
    }
}

/// Many topics share `History::memory`: a topic's history, full while it is alone, is
/// held to its share once more topics keep one (within a sweep, a second or so), and what
/// it gave up is announced to a client that resumes from before it.
fn histories_share_the_memory_budget(backend: Backend) {
    const MEMORY: usize = 1 << 20;
    let h = start(builder(backend).history(History {
        messages: 1 << 20,
        bytes: MEMORY,
        memory: MEMORY,
        ..History::default()
    }));
    let reactors = h.stats().reactors.len() as u64;
    let body = "x".repeat(1000);
    let mut live = v1(&h, "/sub/A");
    for i in 1..=2000u64 {
        assert_eq!(h.publish("A", &format!("\"{i}{body}\"")).seq, i);
        assert_eq!(seq_of(&mut live), i);
    }
    drop(live);
    // Alone, A keeps a whole MiB of history: a resume from 1 500 finds it all.
    let mut ws = v1(&h, "/sub/A?since=1500");
    assert_eq!(seq_of(&mut ws), 1501);
    drop(ws);
    let full = wait_stats(&h, "A's history measured", |t| {
        t.history_bytes > reactors * (MEMORY as u64 * 3 / 4)
    })
    .history_bytes;
    assert!(full <= reactors * (MEMORY as u64 + (64 << 10)), "{full}");
    // Fifteen more topics with a history each: A's share is a 16th.
    for n in 0..15 {
        publish_n(&h, &format!("B{n}"), 1);
    }
    let share = MEMORY as u64 / 16;
    wait_stats(&h, "A's history held to its share", |t| {
        t.history_bytes <= reactors * (share + (64 << 10) + 15 * (4 << 10))
    });
    let mut ws = v1(&h, "/sub/A?since=1500");
    match next_not_beat(&mut ws) {
        Got::Op(v) => {
            assert_eq!((&v["op"], &v["from"]), (&json!("gap"), &json!(1501)), "{v}");
            let to = v["to"].as_u64().expect("to");
            assert!((1900..2000).contains(&to), "{v}");
            assert_eq!(seq_of(&mut ws), to + 1);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

/// A connection's resumes replay at most ¾ of the lag limit over all its topics: three
/// topics with 2 MiB of history each, resumed from the start in one request, replay 2 MiB,
/// then 1 MiB, then nothing, each older part announced as a gap, and the client is not
/// taken for a slow consumer (6 MiB replayed at once would be past the 4 MiB limit).
fn a_resume_of_several_topics_replays_within_the_connections_limit(backend: Backend) {
    let h = start(builder(backend).max_lag_bytes(4 << 20).history(History {
        messages: 1 << 20,
        bytes: 2 << 20,
        ..History::default()
    }));
    let body = "x".repeat(1000);
    for topic in ["A", "B", "C"] {
        for i in 1..=2000u64 {
            assert_eq!(h.publish(topic, &format!("\"{i}{body}\"")).seq, i);
        }
    }
    let mut ws = v1(&h, "/sub/A,B,C?since=0");
    let (mut replayed, mut gaps) = (BTreeMap::new(), BTreeMap::new());
    let mut count = 0;
    while count < 3 * 2000 {
        match next_not_beat(&mut ws) {
            Got::Op(v) if v["op"] == "gap" => {
                let topic = v["topic"].as_str().unwrap().to_owned();
                let (from, to) = (v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap());
                assert_eq!(from, 1, "{v}");
                count += to;
                gaps.insert(topic, to);
            }
            Got::Text { topic, seq, .. } => {
                let last = replayed
                    .entry(topic.clone())
                    .or_insert(gaps.get(&topic).copied().unwrap_or(0));
                assert_eq!(seq, *last + 1, "{topic}: in order, after its gap");
                *last = seq;
                count += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // About 2 MiB of A (its whole history), 1 MiB of B, nothing of C: each is given what
    // the ones before left of the 3 MiB.
    let got = |t: &str| 2000 - gaps.get(t).copied().unwrap_or(0);
    assert!(got("A") > 1900, "A: {}", got("A"));
    assert!((900..1100).contains(&got("B")), "B: {}", got("B"));
    assert!(got("C") < 50, "C: {}", got("C"));
    assert_eq!(h.stats().total().slow_closed, 0);
    publish_n(&h, "C", 1);
    assert_eq!(seq_of(&mut ws), 2001, "live after the replay");
}

util::for_each_backend!(
    envelopes_of_every_kind,
    seq_continuity_under_concurrent_publishers,
    snapshot_with_and_without_prior_messages,
    resume_inside_history,
    resume_past_history,
    resume_across_chunks_and_after_recycling,
    bad_since_and_snapshot_are_refused,
    heartbeat_names_the_latest_seq_sent,
    heartbeat_only_where_a_topic_was_quiet,
    gaps_announced_for_slow_consumers,
    a_refused_resume_starts_none_of_its_topics,
    a_subscription_starts_with_its_epoch,
    a_resume_of_another_numbering_is_a_reset,
    a_resume_of_a_forgotten_topic_is_a_reset,
    histories_share_the_memory_budget,
    a_resume_of_several_topics_replays_within_the_connections_limit,
);
