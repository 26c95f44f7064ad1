//! Several ringcast nodes through a real `redis-server` on 127.0.0.1: delivery across nodes
//! both ways, exactly once, in publisher order, with the same `seq` on every node (one
//! script numbers and publishes), publishers on every node at once; foreign `PUBLISH`es;
//! subscriptions that follow the nodes' subscribers; resume on another node (from its own
//! history, or a `gap` for what it does not hold); the server killed and restarted; absent
//! at start. Every test runs on both backends (`for_each_backend!`).
//!
//! Nodes are in-process engines that share nothing but the broker. Nothing sleeps to
//! synchronise: every wait polls a counter or reads a frame, bounded by `TIMEOUT`.

use crate::cluster_util;
use crate::fanout_util;
use crate::util;

use std::collections::BTreeMap;

use cluster_util::{
    Got, Redis, Relay, V1, addr, cstats, have, msg, next, next_any, node, v1, wait_cluster,
    wait_subscribed,
};
use fanout_util::{Ws, connect, next_data, try_connect_with};
use ringcast::server::Backend;
use serde_json::{Value, json};
use tungstenite::Message;

util::for_each_backend!(
    every_node_gets_every_message_once_with_one_seq,
    foreign_publications_reach_every_node,
    subscriptions_follow_local_subscribers,
    resume_on_another_node,
    resume_across_a_pause_in_following,
    broker_killed_and_restarted,
    broker_absent_at_start,
    plain_subscribers_get_local_publications_at_once,
    a_node_cut_off_announces_what_it_missed,
    a_publication_redis_refuses_is_delivered_on_its_node,
    a_second_node_with_the_same_id_stops,
    a_broker_that_wants_credentials,
);

/// Three nodes, a publisher on each of them at once: a v1 subscriber on each node gets
/// every message exactly once, each publisher's in its order, the same seq on every node,
/// 1..=3N; the node's counters in `stats()` too.
fn every_node_gets_every_message_once_with_one_seq(backend: Backend) {
    if !have(
        "redis-server",
        "every_node_gets_every_message_once_with_one_seq",
    ) {
        return;
    }
    let redis = Redis::start();
    let nodes = [
        node(backend, &redis.url(), "ra"),
        node(backend, &redis.url(), "rb"),
        node(backend, &redis.url(), "rc"),
    ];
    let mut subs: Vec<Ws> = nodes.iter().map(|n| v1(n, "/sub/prices")).collect();
    wait_subscribed(&nodes.iter().collect::<Vec<_>>(), 1);
    const N: usize = 200;
    const P: usize = 3;
    std::thread::scope(|s| {
        for (i, node) in nodes.iter().enumerate() {
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
    for (n, ws) in subs.iter_mut().enumerate() {
        let mut got = BTreeMap::new();
        let mut last_k = [None::<usize>; P];
        for expect_seq in 1..=(P * N) as u64 {
            let (topic, seq, data) = match next(ws) {
                Got::Msg(t, s, d) => (t, s, d),
                Got::Op(v) => panic!(
                    "node {n}: {v} at {expect_seq}; {:#?}",
                    nodes.iter().map(cstats).collect::<Vec<_>>()
                ),
            };
            assert_eq!((topic.as_str(), seq), ("prices", expect_seq), "node {n}");
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
                "node {n}: publisher {p} out of order"
            );
            last_k[p] = Some(k);
            got.insert(seq, data);
        }
        assert_eq!(last_k, [Some(N - 1); P], "node {n}");
        by_node.push(got);
    }
    assert_eq!(by_node[0], by_node[1], "node a and b agree on every seq");
    assert_eq!(by_node[0], by_node[2], "node a and c agree on every seq");
    // No duplicate: nothing more is waiting (a last message arrives after anything that
    // could have been sent twice).
    let _ = nodes[1].publish("prices", "\"end\"");
    for ws in &mut subs {
        assert_eq!(
            msg(ws),
            ("prices".into(), (P * N) as u64 + 1, b"end".to_vec())
        );
    }
    for (n, node) in nodes.iter().enumerate() {
        let own = N as u64 + u64::from(n == 1);
        let s = wait_cluster(node, "every publication sent", |s| s.sent == own);
        assert_eq!(
            (s.received_own, s.received_remote, s.received_foreign),
            (own, (P * N + 1) as u64 - own, 0),
            "node {n}: {s:#?}"
        );
        assert_eq!((s.dropped_to_broker, s.missed, s.malformed), (0, 0, 0));
        // The same counters through `stats()`.
        let stats = node.stats();
        assert_eq!(stats.cluster.as_ref().map(|c| c.sent), Some(own));
        assert_eq!(
            stats.cluster.map(|c| c.node_id),
            Some(["ra", "rb", "rc"][n].into())
        );
    }
    assert!(cstats(&nodes[2]).latency_quantile_us(0.99).is_some());
}

/// A plain `PUBLISH ringcast.T …` reaches every node's subscribers (text when UTF-8,
/// else binary), numbered by each node after the last number it has.
fn foreign_publications_reach_every_node(backend: Backend) {
    if !have("redis-server", "foreign_publications_reach_every_node") {
        return;
    }
    let redis = Redis::start();
    let nodes = [
        node(backend, &redis.url(), "fa"),
        node(backend, &redis.url(), "fb"),
    ];
    let mut plain: Vec<Ws> = nodes
        .iter()
        .map(|n| connect(addr(n), "/sub/feed"))
        .collect();
    let mut subs: Vec<Ws> = nodes.iter().map(|n| v1(n, "/sub/feed")).collect();
    wait_subscribed(&nodes.iter().collect::<Vec<_>>(), 1);
    redis.publish("ringcast.feed", b"{\"bid\":1}");
    redis.publish("ringcast.feed", &[0xC3, 0x28, 0]);
    for ws in &mut plain {
        assert_eq!(next_data(ws), Message::text("{\"bid\":1}"));
        assert_eq!(next_data(ws), Message::binary(vec![0xC3, 0x28, 0]));
    }
    for ws in &mut subs {
        assert_eq!(msg(ws), ("feed".into(), 1, b"{\"bid\":1}".to_vec()));
        assert_eq!(msg(ws), ("feed".into(), 2, vec![0xC3, 0x28, 0]));
    }
    // A ringcast publication after them: past the foreign ones on every node.
    let _ = nodes[0].publish("feed", "\"r\"");
    for ws in &mut subs {
        assert_eq!(msg(ws), ("feed".into(), 3, b"r".to_vec()));
    }
    assert_eq!(cstats(&nodes[1]).received_foreign, 2);
}

fn subscriptions_follow_local_subscribers(backend: Backend) {
    if !have("redis-server", "subscriptions_follow_local_subscribers") {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (
        node(backend, &redis.url(), "ia"),
        node(backend, &redis.url(), "ib"),
    );
    wait_cluster(&a, "connected", |s| s.connected);
    let mut on_b = connect(addr(&b), "/sub/quiet");
    wait_subscribed(&[&b], 1);
    for k in 0..10 {
        let _ = b.publish("quiet", &format!("q{k}"));
    }
    for k in 0..10 {
        assert_eq!(next_data(&mut on_b), Message::text(format!("q{k}")));
    }
    // (B's plain subscriber had them at once; the broker has them once they are back.)
    wait_cluster(&b, "b's own back", |s| s.received_own == 10);
    let mut on_a = connect(addr(&a), "/sub/quiet");
    wait_subscribed(&[&a], 1);
    let _ = b.publish("quiet", "q10");
    assert_eq!(next_data(&mut on_a), Message::text("q10"));
    assert_eq!(next_data(&mut on_b), Message::text("q10"));
    assert_eq!(cstats(&a).received_remote, 1);
    on_a.close(None).unwrap();
    let _ = on_a.flush();
    wait_cluster(&a, "a unsubscribed", |s| s.subscriptions == 0);
    for k in 11..20 {
        let _ = b.publish("quiet", &format!("q{k}"));
    }
    for k in 11..20 {
        assert_eq!(next_data(&mut on_b), Message::text(format!("q{k}")));
    }
    wait_cluster(&b, "b's own back", |s| s.received_own == 20);
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
    if !have("redis-server", "resume_on_another_node") {
        return;
    }
    let redis = Redis::start();
    let nodes = [
        node(backend, &redis.url(), "sa"),
        node(backend, &redis.url(), "sb"),
        node(backend, &redis.url(), "sc"),
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
    if !have("redis-server", "resume_across_a_pause_in_following") {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (
        node(backend, &redis.url(), "pa"),
        node(backend, &redis.url(), "pb"),
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

/// Redis killed mid-run: local delivery goes on; back (empty: no persistence): the nodes
/// reconnect and subscribe again, and their numbers never go backwards.
fn broker_killed_and_restarted(backend: Backend) {
    if !have("redis-server", "broker_killed_and_restarted") {
        return;
    }
    let mut redis = Redis::start();
    let (a, b) = (
        node(backend, &redis.url(), "ka"),
        node(backend, &redis.url(), "kb"),
    );
    let mut on_a = v1(&a, "/sub/k");
    let mut on_b = v1(&b, "/sub/k");
    wait_subscribed(&[&a, &b], 1);
    let _ = a.publish("k", "1");
    assert_eq!(msg(&mut on_a).1, 1);
    assert_eq!(msg(&mut on_b).1, 1);
    redis.kill();
    wait_cluster(&a, "a disconnected", |s| !s.connected);
    let r = a.publish("k", "local");
    assert_eq!(r.seq, 2);
    assert_eq!(msg(&mut on_a), ("k".into(), 2, b"local".to_vec()));
    assert_eq!(cstats(&a).dropped_to_broker, 1);
    redis.restart();
    for n in [&a, &b] {
        wait_cluster(n, "reconnected", |s| s.connected && s.subscriptions == 1);
    }
    let _ = b.publish("k", "after");
    // The counter restarted at 1 (no persistence): both nodes shift it past their own
    // numbers, never backwards (B had 1, A had 2).
    assert_eq!(msg(&mut on_b), ("k".into(), 2, b"after".to_vec()));
    assert_eq!(msg(&mut on_a), ("k".into(), 3, b"after".to_vec()));
    let _ = a.publish("k", "again");
    assert_eq!(msg(&mut on_b), ("k".into(), 3, b"again".to_vec()));
    assert_eq!(msg(&mut on_a), ("k".into(), 4, b"again".to_vec()));
}

fn broker_absent_at_start(backend: Backend) {
    if !have("redis-server", "broker_absent_at_start") {
        return;
    }
    let mut redis = Redis::start();
    redis.kill();
    let a = node(backend, &redis.url(), "za");
    let mut on_a = v1(&a, "/sub/z");
    let _ = a.publish("z", "alone");
    assert_eq!(msg(&mut on_a), ("z".into(), 1, b"alone".to_vec()));
    assert!(!cstats(&a).connected);
    redis.restart();
    let b = node(backend, &redis.url(), "zb");
    let mut on_b = v1(&b, "/sub/z");
    wait_subscribed(&[&a, &b], 1);
    let _ = b.publish("z", "together");
    assert_eq!(msg(&mut on_b), ("z".into(), 1, b"together".to_vec()));
    assert_eq!(msg(&mut on_a), ("z".into(), 2, b"together".to_vec()));
    // Failed attempts are not connections: the first one made is not a reconnection.
    assert_eq!(cstats(&a).reconnects, 0, "{:#?}", cstats(&a));
}

/// One node loses Redis while the other keeps it: pub/sub keeps nothing, so what the
/// other publishes meanwhile is lost for the cut-off node only, announced to its v1
/// subscribers as a `gap` of exactly those numbers and counted as `missed`; after it,
/// delivery goes on with the same numbers as the other node.
fn a_node_cut_off_announces_what_it_missed(backend: Backend) {
    if !have("redis-server", "a_node_cut_off_announces_what_it_missed") {
        return;
    }
    let redis = Redis::start();
    let relay = Relay::start(redis.port);
    let a = node(backend, &relay.redis_url(), "ca");
    let b = node(backend, &redis.url(), "cb");
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
    let _ = b.publish("r", "6");
    assert_eq!(
        next(&mut on_a),
        Got::Op(json!({"op": "gap", "topic": "r", "from": 2, "to": 5}))
    );
    assert_eq!(msg(&mut on_a), ("r".into(), 6, b"6".to_vec()));
    assert_eq!(msg(&mut on_b).1, 6);
    let _ = a.publish("r", "7");
    assert_eq!(msg(&mut on_a), ("r".into(), 7, b"7".to_vec()));
    assert_eq!(msg(&mut on_b), ("r".into(), 7, b"7".to_vec()));
    let s = cstats(&a);
    assert_eq!(
        (s.missed, s.reconnects, s.dropped_to_broker),
        (4, 1, 0),
        "{s:#?}"
    );
    assert_eq!(cstats(&b).missed, 0);
}

/// A publication reaches the plain subscribers of its node at once, not through the broker
/// (frozen meanwhile); its envelope follows with the broker's number; nothing twice.
fn plain_subscribers_get_local_publications_at_once(backend: Backend) {
    if !have(
        "redis-server",
        "plain_subscribers_get_local_publications_at_once",
    ) {
        return;
    }
    let broker = Redis::start();
    cluster_util::local_publication_at_once(
        backend,
        &broker.url(),
        || broker.pause(),
        || broker.resume(),
    );
}

/// A publication Redis refuses (here: every write, past a `maxmemory` of one byte) is
/// delivered on its own node, numbered there and counted, rather than lost for everyone;
/// once Redis takes writes again, publications go through it, numbered past the node's.
fn a_publication_redis_refuses_is_delivered_on_its_node(backend: Backend) {
    if !have(
        "redis-server",
        "a_publication_redis_refuses_is_delivered_on_its_node",
    ) {
        return;
    }
    let redis = Redis::start();
    let maxmemory = |bytes: &str| {
        let answer = redis.command(&["CONFIG", "SET", "maxmemory", bytes]);
        assert!(answer.starts_with("+OK"), "{answer}");
    };
    cluster_util::refused_publication_scenario(
        backend,
        &redis.url(),
        || maxmemory("1"),
        || maxmemory("0"),
    );
}

/// Two running nodes with one id would take each other's publications for their own: the
/// second one stops, saying why; the first goes on.
fn a_second_node_with_the_same_id_stops(backend: Backend) {
    if !have("redis-server", "a_second_node_with_the_same_id_stops") {
        return;
    }
    let broker = Redis::start();
    cluster_util::same_id_scenario(backend, &broker.url());
}

/// A broker that wants credentials: `requirepass` (`redis://:PASSWORD@`) and an ACL user
/// (`redis://USER:PASSWORD@`, percent-encoded); the secret never shows.
fn a_broker_that_wants_credentials(backend: Backend) {
    if !have("redis-server", "a_broker_that_wants_credentials") {
        return;
    }
    let redis = Redis::start_with_args(&["--requirepass", "legacy"]);
    let port = redis.port;
    cluster_util::credentials_scenario(
        backend,
        &format!("redis://:legacy@127.0.0.1:{port}"),
        &format!("redis://:***@127.0.0.1:{port}"),
        "t1",
    );
    let answers = redis.commands(&[
        &["AUTH", "legacy"],
        &[
            "ACL", "SETUSER", "ann", "on", ">s3cr@t", "~*", "&*", "+@all",
        ],
    ]);
    assert!(answers.iter().all(|a| a.starts_with("+OK")), "{answers:?}");
    cluster_util::credentials_scenario(
        backend,
        &format!("redis://ann:s3cr%40t@127.0.0.1:{port}"),
        &format!("redis://ann:***@127.0.0.1:{port}"),
        "t2",
    );
}
