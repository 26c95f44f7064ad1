//! Several ringcast nodes through a real `redis-server` on 127.0.0.1: delivery across nodes
//! both ways, exactly once, in publisher order, with the same `seq` on every node (one
//! script numbers and publishes); foreign `PUBLISH`es; subscriptions that follow the
//! nodes' subscribers; the server killed and restarted; absent at start.
//!
//! Nodes are in-process engines that share nothing but the broker. Nothing sleeps to
//! synchronise: every wait polls a counter or reads a frame, bounded by `TIMEOUT`.

mod cluster_util;
mod fanout_util;

use std::collections::BTreeMap;

use cluster_util::{Redis, addr, cstats, have, node, wait_cluster};
use fanout_util::{Ws, connect, next_data, try_connect_with};
use ringcast::server::Backend;
use serde_json::Value;
use tungstenite::Message;

const V1: &[(&str, &str)] = &[("Sec-WebSocket-Protocol", "ringcast.v1")];

fn v1(node: &ringcast::EngineHandle, path: &str) -> Ws {
    try_connect_with(addr(node), path, V1).unwrap_or_else(|(s, b)| panic!("{path}: {s} {b}"))
}

/// The next envelope (topic, seq, data), heartbeats skipped; panics on another op.
fn msg(ws: &mut Ws) -> (String, u64, Vec<u8>) {
    let deadline = std::time::Instant::now() + fanout_util::TIMEOUT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "only heartbeats for too long"
        );
        match next_data(ws) {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON envelope");
                if v["op"] == "heartbeat" {
                    continue;
                }
                assert!(v.get("op").is_none(), "expected a message, got {v}");
                let data = match &v["data"] {
                    Value::String(s) => s.clone().into_bytes(),
                    d => d.to_string().into_bytes(),
                };
                return (
                    v["topic"].as_str().unwrap().into(),
                    v["seq"].as_u64().unwrap(),
                    data,
                );
            }
            Message::Binary(b) => {
                let n = usize::from(b[1]);
                let topic = String::from_utf8(b[2..2 + n].to_vec()).unwrap();
                let seq = u64::from_be_bytes(b[2 + n..10 + n].try_into().unwrap());
                return (topic, seq, b[10 + n..].to_vec());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn wait_subscribed(nodes: &[&ringcast::EngineHandle], n: u64) {
    for node in nodes {
        wait_cluster(node, "broker subscriptions", |s| {
            s.connected && s.subscriptions == n
        });
    }
}

#[test]
fn every_node_gets_every_message_once_with_one_seq() {
    if !have(
        "redis-server",
        "every_node_gets_every_message_once_with_one_seq",
    ) {
        return;
    }
    let redis = Redis::start();
    let nodes = [
        node(Backend::Epoll, &redis.url(), "ra"),
        node(Backend::Epoll, &redis.url(), "rb"),
        node(Backend::Epoll, &redis.url(), "rc"),
    ];
    let mut subs: Vec<Ws> = nodes.iter().map(|n| v1(n, "/sub/prices")).collect();
    wait_subscribed(&nodes.iter().collect::<Vec<_>>(), 1);
    const N: usize = 200;
    std::thread::scope(|s| {
        for (i, node) in nodes[..2].iter().enumerate() {
            s.spawn(move || {
                for k in 0..N {
                    if k % 2 == 0 {
                        let _ = node.publish("prices", &format!("{{\"p\":{i},\"k\":{k}}}"));
                    } else {
                        let _ = node
                            .publish_binary("prices", &[i as u8, (k >> 8) as u8, k as u8, 0xff]);
                    }
                }
            });
        }
    });
    let mut by_node: Vec<BTreeMap<u64, Vec<u8>>> = Vec::new();
    for ws in &mut subs {
        let mut got = BTreeMap::new();
        let mut last_k = [None::<usize>; 2];
        for expect_seq in 1..=(2 * N) as u64 {
            let (topic, seq, data) = msg(ws);
            assert_eq!((topic.as_str(), seq), ("prices", expect_seq));
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
    assert_eq!(by_node[0], by_node[1]);
    assert_eq!(by_node[0], by_node[2]);
    let (a, c) = (cstats(&nodes[0]), cstats(&nodes[2]));
    assert_eq!(
        (a.sent, a.received_own, a.received_remote),
        (N as u64, N as u64, N as u64)
    );
    assert_eq!((c.sent, c.received_remote), (0, 2 * N as u64));
    wait_cluster(&nodes[0], "acks", |s| s.acked == N as u64 && s.refused == 0);
}

/// A plain `PUBLISH ringcast.T …` reaches every node's subscribers (text when UTF-8,
/// else binary), numbered by each node after the last number it has.
#[test]
fn foreign_publications_reach_every_node() {
    if !have("redis-server", "foreign_publications_reach_every_node") {
        return;
    }
    let redis = Redis::start();
    let nodes = [
        node(Backend::Epoll, &redis.url(), "fa"),
        node(Backend::Epoll, &redis.url(), "fb"),
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

#[test]
fn subscriptions_follow_local_subscribers() {
    if !have("redis-server", "subscriptions_follow_local_subscribers") {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (
        node(Backend::Epoll, &redis.url(), "ia"),
        node(Backend::Epoll, &redis.url(), "ib"),
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
    assert_eq!(cstats(&a).received_remote, 1);
}

/// Redis killed mid-run: local delivery goes on; back (empty: no persistence): the nodes
/// reconnect and subscribe again, and their numbers never go backwards.
#[test]
fn broker_killed_and_restarted() {
    if !have("redis-server", "broker_killed_and_restarted") {
        return;
    }
    let mut redis = Redis::start();
    let (a, b) = (
        node(Backend::Epoll, &redis.url(), "ka"),
        node(Backend::Epoll, &redis.url(), "kb"),
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

#[test]
fn broker_absent_at_start() {
    if !have("redis-server", "broker_absent_at_start") {
        return;
    }
    let mut redis = Redis::start();
    redis.kill();
    let a = node(Backend::Epoll, &redis.url(), "za");
    let mut on_a = v1(&a, "/sub/z");
    let _ = a.publish("z", "alone");
    assert_eq!(msg(&mut on_a), ("z".into(), 1, b"alone".to_vec()));
    assert!(!cstats(&a).connected);
    redis.restart();
    let b = node(Backend::Epoll, &redis.url(), "zb");
    let mut on_b = v1(&b, "/sub/z");
    wait_subscribed(&[&a, &b], 1);
    let _ = b.publish("z", "together");
    assert_eq!(msg(&mut on_b), ("z".into(), 1, b"together".to_vec()));
    assert_eq!(msg(&mut on_a), ("z".into(), 2, b"together".to_vec()));
}
