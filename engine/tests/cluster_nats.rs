//! Several ringcast nodes through a real `nats-server -js` on 127.0.0.1: delivery across
//! nodes both ways, exactly once and in publisher order; the same `seq` for a message on
//! every node; messages published into NATS by another program; subscriptions on the
//! broker that follow the nodes' subscribers; resume on another node; the broker killed
//! and restarted mid-run; the broker absent at start. Every test runs on both backends
//! (`for_each_backend!`).
//!
//! Nodes are in-process engines (each with its own reactors and its own bridge threads;
//! they share nothing but the broker). Nothing sleeps to synchronise: every wait polls a
//! counter or reads a frame, bounded by `TIMEOUT`.

use crate::cluster_util;
use crate::fanout_util;
use crate::util;

use std::collections::BTreeMap;

use cluster_util::{
    Got, Nats, Relay, V1, addr, cstats, have, msg, next, next_any, node, v1, wait_cluster,
    wait_subscribed,
};
use fanout_util::{Ws, connect, next_data, try_connect_with};
use ringcast::server::Backend;
use serde_json::{Value, json};
use tungstenite::Message;

util::for_each_backend!(
    every_node_gets_every_message_once_with_one_seq,
    foreign_publications_reach_every_node,
    broker_subscriptions_follow_local_subscribers,
    resume_on_another_node,
    resume_across_a_pause_in_following,
    broker_killed_and_restarted,
    broker_absent_at_start,
    plain_subscribers_get_local_publications_at_once,
    a_node_cut_off_recovers_from_the_stream,
    a_refused_stream_costs_the_topic_not_the_connection,
    a_publication_jetstream_refuses_is_delivered_on_its_node,
    a_second_node_with_the_same_id_stops,
    a_broker_that_wants_credentials,
    a_server_list_is_tried_in_turn,
);

/// Three nodes; publishers on two of them at once; a v1 subscriber on each node gets every
/// message exactly once, publisher order kept, the same seq on every node, 1..=N.
fn every_node_gets_every_message_once_with_one_seq(backend: Backend) {
    if !have(
        "nats-server",
        "every_node_gets_every_message_once_with_one_seq",
    ) {
        return;
    }
    let nats = Nats::start();
    let nodes = [
        node(backend, &nats.url(), &format!("a-{backend:?}")),
        node(backend, &nats.url(), &format!("b-{backend:?}")),
        node(backend, &nats.url(), &format!("c-{backend:?}")),
    ];
    let mut subs: Vec<Ws> = nodes.iter().map(|n| v1(n, "/sub/prices")).collect();
    wait_subscribed(&nodes.iter().collect::<Vec<_>>(), 1);

    const N: usize = 200;
    std::thread::scope(|s| {
        for (i, node) in nodes[..2].iter().enumerate() {
            s.spawn(move || {
                for k in 0..N {
                    if k % 2 == 0 {
                        let r = node.publish("prices", &format!("{{\"p\":{i},\"k\":{k}}}"));
                        assert_eq!(r.seq, 0, "numbered by the broker");
                    } else {
                        let _ = node
                            .publish_binary("prices", &[i as u8, (k >> 8) as u8, k as u8, 0xff]);
                    }
                }
            });
        }
    });

    let mut by_node: Vec<BTreeMap<u64, Vec<u8>>> = Vec::new();
    for (i, ws) in subs.iter_mut().enumerate() {
        let mut got = BTreeMap::new();
        let mut last_k = [None::<usize>; 2];
        for expect_seq in 1..=(2 * N) as u64 {
            let (topic, seq, data) = match next(ws) {
                Got::Msg(t, s, d) => (t, s, d),
                Got::Op(v) => panic!(
                    "node {i}: {v} at {expect_seq}; {:#?}",
                    nodes.iter().map(cstats).collect::<Vec<_>>()
                ),
            };
            assert_eq!((topic.as_str(), seq), ("prices", expect_seq));
            // Per publisher, in publish order.
            let (p, k) = if data.last() == Some(&0xff) {
                (
                    usize::from(data[0]),
                    (usize::from(data[1]) << 8) | usize::from(data[2]),
                )
            } else {
                let v: Value = serde_json::from_slice(&data).unwrap();
                (
                    v["p"].as_u64().unwrap() as usize,
                    v["k"].as_u64().unwrap() as usize,
                )
            };
            assert_eq!(
                last_k[p].map_or(0, |l| l + 1),
                k,
                "publisher {p} out of order"
            );
            last_k[p] = Some(k);
            got.insert(seq, data);
        }
        by_node.push(got);
    }
    assert_eq!(by_node[0], by_node[1], "node a and b agree on every seq");
    assert_eq!(by_node[0], by_node[2], "node a and c agree on every seq");

    let (a, b, c) = (cstats(&nodes[0]), cstats(&nodes[1]), cstats(&nodes[2]));
    assert_eq!(
        (a.sent, a.received_own, a.received_remote),
        (N as u64, N as u64, N as u64)
    );
    assert_eq!(
        (b.sent, b.received_own, b.received_remote),
        (N as u64, N as u64, N as u64)
    );
    assert_eq!(
        (c.sent, c.received_own, c.received_remote),
        (0, 0, 2 * N as u64)
    );
    assert_eq!((a.dropped_to_broker, a.missed, a.malformed), (0, 0, 0));
    assert!(c.latency_quantile_us(0.99).is_some(), "{c:#?}");
    // No duplicate: nothing more is waiting (a last message through another node
    // arrives after anything that could have been sent twice).
    let _ = nodes[2].publish("prices", "\"end\"");
    for ws in &mut subs {
        assert_eq!(
            msg(ws),
            ("prices".into(), 2 * N as u64 + 1, b"end".to_vec())
        );
    }
    // The same counters through `stats()`.
    let s = nodes[2].stats().cluster.expect("in a cluster");
    assert_eq!((s.received_own, s.received_remote), (1, 2 * N as u64));
    wait_cluster(&nodes[0], "acks", |s| s.acked == N as u64 && s.refused == 0);
}

/// A plain `PUB ringcast.T` from another program reaches every node's subscribers: text
/// when UTF-8, else binary, numbered alike on every node.
fn foreign_publications_reach_every_node(backend: Backend) {
    if !have("nats-server", "foreign_publications_reach_every_node") {
        return;
    }
    let nats = Nats::start();
    let nodes = [
        node(backend, &nats.url(), "fa"),
        node(backend, &nats.url(), "fb"),
    ];
    let mut plain: Vec<Ws> = nodes
        .iter()
        .map(|n| connect(addr(n), "/sub/feed"))
        .collect();
    let mut subs: Vec<Ws> = nodes.iter().map(|n| v1(n, "/sub/feed")).collect();
    wait_subscribed(&nodes.iter().collect::<Vec<_>>(), 1);

    nats.publish("ringcast.feed", b"{\"bid\":1}");
    nats.publish("ringcast.feed", &[0xC3, 0x28, 0]); // not UTF-8
    nats.publish("ringcast.feed", "plain text é".as_bytes());
    for ws in &mut plain {
        assert_eq!(next_data(ws), Message::text("{\"bid\":1}"));
        assert_eq!(next_data(ws), Message::binary(vec![0xC3, 0x28, 0]));
        assert_eq!(next_data(ws), Message::text("plain text é"));
    }
    for ws in &mut subs {
        assert_eq!(msg(ws), ("feed".into(), 1, b"{\"bid\":1}".to_vec()));
        assert_eq!(msg(ws), ("feed".into(), 2, vec![0xC3, 0x28, 0]));
        assert_eq!(
            msg(ws),
            ("feed".into(), 3, "plain text é".as_bytes().to_vec())
        );
    }
    for n in &nodes {
        let s = cstats(n);
        assert_eq!(
            (s.received_foreign, s.received_remote, s.malformed),
            (3, 0, 0),
            "{s:#?}"
        );
    }
}

/// A node is subscribed on the broker to a topic only while it has subscribers to it (and
/// for the linger after the last one), and receives nothing for topics it does not follow.
fn broker_subscriptions_follow_local_subscribers(backend: Backend) {
    if !have(
        "nats-server",
        "broker_subscriptions_follow_local_subscribers",
    ) {
        return;
    }
    let nats = Nats::start();
    let (a, b) = (
        node(backend, &nats.url(), "ia"),
        node(backend, &nats.url(), "ib"),
    );
    wait_cluster(&a, "connected", |s| s.connected);
    wait_cluster(&b, "connected", |s| s.connected);
    let mut on_b = connect(addr(&b), "/sub/quiet");
    wait_cluster(&b, "b subscribed", |s| s.subscriptions == 1);
    assert_eq!(cstats(&a).subscriptions, 0);
    // B publishes on `quiet`: A, without subscribers to it, receives none of it.
    for k in 0..20 {
        let _ = b.publish("quiet", &format!("q{k}"));
    }
    for k in 0..20 {
        assert_eq!(next_data(&mut on_b), Message::text(format!("q{k}")));
    }
    // (B's plain subscriber had them at once; the broker has them once they are back.)
    wait_cluster(&b, "b's own back", |s| s.received_own == 20);
    // A subscriber on A: A subscribes on the broker and receives from then on.
    let mut on_a = connect(addr(&a), "/sub/quiet,loud");
    wait_cluster(&a, "a subscribed", |s| s.subscriptions == 2);
    let _ = b.publish("loud", "l0");
    assert_eq!(next_data(&mut on_a), Message::text("l0"));
    let s = cstats(&a);
    assert_eq!((s.received_remote, s.received_own), (1, 0), "{s:#?}");
    // The last subscriber leaves: after the linger, A unsubscribes.
    on_a.close(None).unwrap();
    let _ = on_a.flush();
    wait_cluster(&a, "a unsubscribed", |s| s.subscriptions == 0);
    for k in 20..30 {
        let _ = b.publish("quiet", &format!("q{k}"));
    }
    for k in 20..30 {
        assert_eq!(next_data(&mut on_b), Message::text(format!("q{k}")));
    }
    // B does not follow `loud`: its own `l0` does not come back to it.
    wait_cluster(&b, "b's own back", |s| s.received_own == 30);
    assert_eq!(cstats(&a).received_remote, 1);
}

/// A client leaves node A at seq 3 and comes back on node B with `?since=3`: B, which
/// follows the topic (and so holds its history, with the same numbers), gives exactly
/// 4.. then live messages. Node C began to follow the topic after 4: it gives a `gap` for
/// 4 (which it never held), then 5... A client that resumes on C before C follows the
/// topic at all makes C follow it: C learns the topic's numbers from the broker and
/// announces 4 as a `gap`, then live messages. A `since` past the latest of a node that
/// follows the topic is refused, as on a single node.
fn resume_on_another_node(backend: Backend) {
    if !have("nats-server", "resume_on_another_node") {
        return;
    }
    let nats = Nats::start();
    let nodes = [
        node(backend, &nats.url(), "ra"),
        node(backend, &nats.url(), "rb"),
        node(backend, &nats.url(), "rc"),
    ];
    let [a, b, c] = &nodes;
    let mut on_a = v1(a, "/sub/t");
    // The broker numbers the topic for every node: one epoch on all of them.
    let Got::Op(e) = next_any(&mut on_a) else {
        panic!("a subscription starts with its epoch")
    };
    let epoch = e["epoch"].as_str().expect("the epoch").to_owned();
    let mut keep_b = v1(b, "/sub/t"); // B follows t (and holds its history)
    wait_subscribed(&[a, b], 1);
    wait_cluster(c, "c connected", |s| s.connected);
    // Published on A and B in turn, each one seen by B's subscriber before the next (two
    // publishers' messages have no order between them).
    let publish = |k: u64, followers: &mut [&mut Ws]| {
        let _ = nodes[(k % 2) as usize].publish("t", &k.to_string());
        for ws in followers {
            assert_eq!(msg(ws), ("t".into(), k, k.to_string().into_bytes()));
        }
    };
    for k in 1..=3 {
        publish(k, &mut [&mut keep_b, &mut on_a]);
    }
    drop(on_a);
    publish(4, &mut [&mut keep_b]);
    // C never followed t: since=3 is past its latest (0), but not the cluster's.
    let mut keep_c = v1(c, &format!("/sub/t?since=3&epoch={epoch}"));
    wait_subscribed(&[c], 1);
    assert_eq!(
        next(&mut keep_c),
        Got::Op(json!({"op": "gap", "topic": "t", "from": 4, "to": 4}))
    );
    match try_connect_with(addr(c), "/sub/t?since=99", V1) {
        Err((400, body)) => assert!(body.contains("past the topic's latest"), "{body}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("C follows t: since=99 is past its latest"),
    }
    for k in 5..=6 {
        publish(k, &mut [&mut keep_b, &mut keep_c]);
    }

    let mut on_b = v1(b, "/sub/t?since=3");
    for k in 4..=6 {
        assert_eq!(msg(&mut on_b), ("t".into(), k, k.to_string().into_bytes()));
    }
    let mut on_c = v1(c, "/sub/t?since=3");
    assert_eq!(
        next(&mut on_c),
        Got::Op(json!({"op": "gap", "topic": "t", "from": 4, "to": 4}))
    );
    for k in 5..=6 {
        assert_eq!(msg(&mut on_c), ("t".into(), k, k.to_string().into_bytes()));
    }
    // Then live, once: nothing replayed twice.
    let _ = c.publish("t", "7");
    for ws in [&mut on_b, &mut on_c, &mut keep_b, &mut keep_c] {
        assert_eq!(msg(ws), ("t".into(), 7, b"7".to_vec()));
    }
    for n in &nodes {
        assert_eq!(cstats(n).missed, 0);
    }
}

/// Node B follows a topic, stops (its last subscriber left, the linger passed) while A
/// publishes on, and follows it again: a client resuming on B from before the pause gets
/// what B holds, a `gap` for what was published while B did not follow, then the rest;
/// never a silent hole.
fn resume_across_a_pause_in_following(backend: Backend) {
    if !have("nats-server", "resume_across_a_pause_in_following") {
        return;
    }
    let nats = Nats::start();
    let (a, b) = (
        node(backend, &nats.url(), "pa"),
        node(backend, &nats.url(), "pb"),
    );
    let mut keep_a = v1(&a, "/sub/t");
    let mut on_b = v1(&b, "/sub/t");
    wait_subscribed(&[&a, &b], 1);
    for k in 1..=3 {
        let _ = a.publish("t", &k.to_string());
    }
    for ws in [&mut keep_a, &mut on_b] {
        for k in 1..=3 {
            assert_eq!(msg(ws), ("t".into(), k, k.to_string().into_bytes()));
        }
    }
    on_b.close(None).unwrap();
    let _ = on_b.flush();
    wait_cluster(&b, "b stopped following t", |s| s.subscriptions == 0);
    for k in 4..=6 {
        let _ = a.publish("t", &k.to_string());
    }
    for k in 4..=6 {
        assert_eq!(msg(&mut keep_a).1, k);
    }
    assert_eq!(cstats(&b).received_remote, 3);
    let mut again = v1(&b, "/sub/t");
    wait_subscribed(&[&b], 1);
    let _ = a.publish("t", "7");
    // A live subscriber that came as B followed again: 7 (B's log announces 4..=6 to every
    // cursor at its end, this one included).
    let mut got = next(&mut again);
    if let Got::Op(gap) = &got {
        assert_eq!(gap, &json!({"op": "gap", "topic": "t", "from": 4, "to": 6}));
        got = next(&mut again);
    }
    assert_eq!(got, Got::Msg("t".into(), 7, b"7".to_vec()));
    let mut resumed = v1(&b, "/sub/t?since=2");
    assert_eq!(msg(&mut resumed), ("t".into(), 3, b"3".to_vec()));
    assert_eq!(
        next(&mut resumed),
        Got::Op(json!({"op": "gap", "topic": "t", "from": 4, "to": 6}))
    );
    assert_eq!(msg(&mut resumed), ("t".into(), 7, b"7".to_vec()));
    assert_eq!(msg(&mut keep_a).1, 7);
    // Then live, once.
    let _ = b.publish("t", "8");
    for ws in [&mut keep_a, &mut again, &mut resumed] {
        assert_eq!(msg(ws), ("t".into(), 8, b"8".to_vec()));
    }
    assert_eq!(cstats(&b).missed, 0, "not followed is not missed");
}

/// The broker killed mid-run: local delivery goes on (numbered by the node, counted as
/// not sent); the broker back on the same store: the nodes reconnect, subscribe again,
/// and deliver each other's publications again with the broker's numbers, shifted past
/// those the node gave out meanwhile (never backwards).
fn broker_killed_and_restarted(backend: Backend) {
    if !have("nats-server", "broker_killed_and_restarted") {
        return;
    }
    let mut nats = Nats::start();
    let (a, b) = (
        node(backend, &nats.url(), "ka"),
        node(backend, &nats.url(), "kb"),
    );
    let mut on_a = v1(&a, "/sub/k");
    let mut on_b = v1(&b, "/sub/k");
    wait_subscribed(&[&a, &b], 1);
    let _ = a.publish("k", "1");
    assert_eq!(msg(&mut on_a).1, 1);
    assert_eq!(msg(&mut on_b).1, 1);

    nats.kill();
    wait_cluster(&a, "a disconnected", |s| !s.connected);
    wait_cluster(&b, "b disconnected", |s| !s.connected);
    // Local delivery never stops.
    let r = a.publish("k", "local");
    assert_eq!(r.seq, 2, "numbered by the node while the broker is away");
    assert_eq!(msg(&mut on_a), ("k".into(), 2, b"local".to_vec()));
    assert_eq!(cstats(&a).dropped_to_broker, 1);

    nats.restart();
    for n in [&a, &b] {
        wait_cluster(n, "reconnected and subscribed", |s| {
            s.connected && s.reconnects == 1 && s.subscriptions == 1
        });
    }
    let _ = b.publish("k", "after");
    // B: the broker's number (2). A: past its own 2, so 3, and never backwards.
    assert_eq!(msg(&mut on_b), ("k".into(), 2, b"after".to_vec()));
    assert_eq!(msg(&mut on_a), ("k".into(), 3, b"after".to_vec()));
    let _ = a.publish("k", "again");
    assert_eq!(msg(&mut on_b).1, 3);
    assert_eq!(msg(&mut on_a), ("k".into(), 4, b"again".to_vec()));
}

/// A node whose broker is not there at start serves local traffic, and joins the cluster
/// when the broker comes.
fn broker_absent_at_start(backend: Backend) {
    if !have("nats-server", "broker_absent_at_start") {
        return;
    }
    let mut nats = Nats::stopped();
    let a = node(backend, &nats.url(), "za");
    let mut on_a = v1(&a, "/sub/z");
    let _ = a.publish("z", "alone");
    assert_eq!(msg(&mut on_a), ("z".into(), 1, b"alone".to_vec()));
    let s = wait_cluster(&a, "the failure noted", |s| s.last_error.is_some());
    assert!(!s.connected && s.dropped_to_broker == 1, "{s:#?}");
    let why = s.last_error.unwrap();
    assert!(
        why.starts_with("cannot reach: ") && why.contains("refused"),
        "{why}"
    );

    nats.restart();
    let b = node(backend, &nats.url(), "zb");
    let mut on_b = v1(&b, "/sub/z");
    wait_subscribed(&[&a, &b], 1);
    let _ = b.publish("z", "together");
    assert_eq!(msg(&mut on_b), ("z".into(), 1, b"together".to_vec()));
    // A numbered one itself before: the broker's 1 comes after it.
    assert_eq!(msg(&mut on_a), ("z".into(), 2, b"together".to_vec()));
}

/// One node loses the broker while the others keep it: what the others publish meanwhile
/// is recovered from the topic's stream when it is back (same numbers, nothing missed),
/// and its own publications of the outage were delivered locally.
fn a_node_cut_off_recovers_from_the_stream(backend: Backend) {
    if !have("nats-server", "a_node_cut_off_recovers_from_the_stream") {
        return;
    }
    let nats = Nats::start();
    let relay = Relay::start(nats.port);
    let a = node(backend, &relay.url(), "ca");
    let b = node(backend, &nats.url(), "cb");
    let mut on_a = v1(&a, "/sub/r");
    let mut on_b = v1(&b, "/sub/r");
    wait_subscribed(&[&a, &b], 1);
    let _ = b.publish("r", "1");
    assert_eq!(msg(&mut on_a).1, 1);
    assert_eq!(msg(&mut on_b).1, 1);

    relay.cut();
    wait_cluster(&a, "a cut off", |s| !s.connected);
    for k in 2..=5 {
        let _ = b.publish("r", &k.to_string());
    }
    for k in 2..=5 {
        assert_eq!(msg(&mut on_b), ("r".into(), k, k.to_string().into_bytes()));
    }
    relay.restore();
    wait_cluster(&a, "a back", |s| s.connected && s.subscriptions == 1);
    // Recovered from the stream, in order, with the broker's numbers.
    for k in 2..=5 {
        assert_eq!(msg(&mut on_a), ("r".into(), k, k.to_string().into_bytes()));
    }
    let _ = b.publish("r", "6");
    assert_eq!(msg(&mut on_a), ("r".into(), 6, b"6".to_vec()));
    assert_eq!(msg(&mut on_b).1, 6);
    let s = cstats(&a);
    assert_eq!((s.missed, s.reconnects), (0, 1), "{s:#?}");
}

/// A publication reaches the plain subscribers of its node at once, not through the broker
/// (frozen meanwhile); its envelope follows with the broker's number; nothing twice.
fn plain_subscribers_get_local_publications_at_once(backend: Backend) {
    if !have(
        "nats-server",
        "plain_subscribers_get_local_publications_at_once",
    ) {
        return;
    }
    let broker = Nats::start();
    cluster_util::local_publication_at_once(
        backend,
        &broker.url(),
        || broker.pause(),
        || broker.resume(),
    );
}

/// A broker whose account holds at most two streams (an operator's limit, or one reached
/// by clients subscribing to ever new names): the topics past it are served on their node
/// only — local numbers, counted as refused and dropped to the broker — while the
/// connection stays up and the topics that have streams go on through the broker.
fn a_refused_stream_costs_the_topic_not_the_connection(backend: Backend) {
    if !have(
        "nats-server",
        "a_refused_stream_costs_the_topic_not_the_connection",
    ) {
        return;
    }
    let nats = Nats::start_with_max_streams(2);
    let n = node(backend, &nats.url(), "lim");
    let mut subs: Vec<Ws> = (0..4).map(|i| v1(&n, &format!("/sub/t{i}"))).collect();
    // Two topics get their streams; the other two are refused (in whichever order the
    // node asks), and not asked again for a while.
    let s = wait_cluster(&n, "two streams refused", |s| s.streams_refused >= 2);
    assert!(s.connected, "{s:#?}");
    for i in 0..4 {
        nats.publish(&format!("ringcast.t{i}"), b"{\"via\":\"nats\"}");
    }
    // Local publications reach every topic's subscriber: through the broker where the
    // topic has a stream (after the foreign message), at once on this node where not.
    for i in 0..4 {
        let mut p = connect(addr(&n), &format!("/pub/t{i}"));
        p.send(Message::text(format!("local {i}"))).unwrap();
    }
    let mut through_broker = 0;
    for (i, ws) in subs.iter_mut().enumerate() {
        let (topic, seq, data) = msg(ws);
        assert_eq!(topic, format!("t{i}"));
        if data == b"{\"via\":\"nats\"}" {
            // A topic with a stream: the foreign message first, numbered 1 by JetStream.
            through_broker += 1;
            assert_eq!(seq, 1);
            assert_eq!(
                msg(ws),
                (format!("t{i}"), 2, format!("local {i}").into_bytes())
            );
        } else {
            // A refused topic: the foreign message was not stored by anyone, the local
            // one is numbered here.
            assert_eq!((seq, data), (1, format!("local {i}").into_bytes()));
        }
    }
    assert_eq!(through_broker, 2);
    let s = cstats(&n);
    assert_eq!(
        (
            s.connected,
            s.reconnects,
            s.streams_refused,
            s.dropped_to_broker
        ),
        (true, 0, 2, 2),
        "one refusal per topic (not asked again at its publication), no reconnection: {s:#?}"
    );
}

/// A publication JetStream refuses — here its topic's stream was deleted on the broker
/// (`nats stream rm`), so nothing takes it (`503`, no responders) — is delivered on its
/// node, numbered there and counted, rather than lost for everyone; the node makes the
/// stream again, and the next publication goes through the broker, numbered past the
/// node's own.
fn a_publication_jetstream_refuses_is_delivered_on_its_node(backend: Backend) {
    if !have(
        "nats-server",
        "a_publication_jetstream_refuses_is_delivered_on_its_node",
    ) {
        return;
    }
    let nats = Nats::start();
    let delete_stream = || {
        let stream: String = b"ringcast.t".iter().map(|b| format!("{b:02x}")).collect();
        let answer = nats.request(&format!("$JS.API.STREAM.DELETE.RC_{stream}"), b"");
        assert!(answer.contains("\"success\":true"), "{answer}");
    };
    // Nothing to allow: the node makes the stream again itself.
    cluster_util::refused_publication_scenario(backend, &nats.url(), delete_stream, || {});
}

/// Two running nodes with one id would take each other's publications for their own: the
/// second one stops, saying why; the first goes on.
fn a_second_node_with_the_same_id_stops(backend: Backend) {
    if !have("nats-server", "a_second_node_with_the_same_id_stops") {
        return;
    }
    let broker = Nats::start();
    cluster_util::same_id_scenario(backend, &broker.url());
}

/// A broker that wants credentials: user and password (percent-encoded in the URL), or a
/// token; the secret never shows.
fn a_broker_that_wants_credentials(backend: Backend) {
    if !have("nats-server", "a_broker_that_wants_credentials") {
        return;
    }
    let nats = Nats::start_with_args(&["--user", "ann", "--pass", "s3cr@t:x"]);
    let port = nats.port;
    cluster_util::credentials_scenario(
        backend,
        &format!("nats://ann:s3cr%40t%3Ax@127.0.0.1:{port}"),
        &format!("nats://ann:***@127.0.0.1:{port}"),
        "t1",
    );
    let nats = Nats::start_with_args(&["--auth", "t0ken"]);
    let port = nats.port;
    cluster_util::credentials_scenario(
        backend,
        &format!("nats://t0ken@127.0.0.1:{port}"),
        &format!("nats://***@127.0.0.1:{port}"),
        "t2",
    );
}

/// A list of NATS servers (`nats://a,b,c`): one that does not answer is skipped at start,
/// and when the one connected to is lost the node goes on through another.
fn a_server_list_is_tried_in_turn(backend: Backend) {
    if !have("nats-server", "a_server_list_is_tried_in_turn") {
        return;
    }
    let dead = cluster_util::port::free_port();
    let mut first = Nats::start();
    let second = Nats::start();
    let url = format!(
        "nats://127.0.0.1:{dead},127.0.0.1:{},nats://127.0.0.1:{}",
        first.port, second.port
    );
    let n = node(backend, &url, "list");
    let mut sub = v1(&n, "/sub/t");
    wait_subscribed(&[&n], 1);
    let mut publisher = connect(addr(&n), "/pub/t");
    publisher.send(Message::text("one")).unwrap();
    assert_eq!(msg(&mut sub), ("t".into(), 1, b"one".to_vec()));
    assert_eq!(cstats(&n).reconnects, 0);
    // The server it is connected to dies: it goes on through the next one (a server of
    // its own here, whose stream starts anew: the node's numbers go on rising).
    first.kill();
    let s = wait_cluster(&n, "connected through the next server", |s| {
        s.connected && s.reconnects == 1 && s.subscriptions == 1
    });
    assert_eq!(s.url, url);
    publisher.send(Message::text("two")).unwrap();
    let (topic, seq, data) = msg(&mut sub);
    assert_eq!((topic.as_str(), data.as_slice()), ("t", &b"two"[..]));
    assert!(seq >= 2, "numbers keep rising: {seq}");
    wait_cluster(&n, "its publication back from the second server", |s| {
        s.received_own == 2
    });
}

/// A broker's port is free and below the ephemeral range, where no outgoing connection
/// can take it before the broker binds it (or while it restarts on it).
#[test]
fn broker_ports_are_free_and_not_ephemeral() {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("the ephemeral range")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("its low end");
    for _ in 0..20 {
        let port = cluster_util::port::free_port();
        if low >= 11_000 {
            assert!(
                (10_000..low).contains(&port),
                "{port} (ephemeral from {low})"
            );
        }
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
