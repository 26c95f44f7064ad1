//! Run-time topic changes: `{"op":"subscribe"}` / `{"op":"unsubscribe"}` take effect by the
//! time their ack arrives; malformed or refused control messages get an error reply and the
//! connection stays open.
//!
//! Synchronisation: the server subscribes before it queues the ack, and frames reach a
//! connection in the order its reactor queued them; so after an ack, a publication of the
//! new topic must arrive, and after an unsubscribe ack, a publication of the old topic must
//! not arrive before a marker published after it to a topic still subscribed.

use crate::fanout_util;
use crate::util;

use fanout_util::{Ws, builder, connect, next_text, send_text, start, wait_stats};
use ringcast::EngineHandle;
use ringcast::fanout::TopicRules;
use ringcast::server::{Backend, Broadcast};
use serde_json::{Value, json};
use tungstenite::Message;

fn rules() -> TopicRules {
    TopicRules {
        max_per_connection: 2,
        ..TopicRules::default()
    }
}

fn engine(backend: Backend) -> EngineHandle {
    start(builder(backend).topics(rules()).handler(Broadcast {
        publish_token: None,
        rules: rules(),
    }))
}

fn publish(h: &EngineHandle, topic: &str, text: &str) {
    let r = h.publish(topic, text);
    assert!(r.is_complete(), "{r:?}");
}

fn control(ws: &mut Ws, msg: &Value) -> Value {
    send_text(ws, &msg.to_string());
    reply(ws)
}

fn reply(ws: &mut Ws) -> Value {
    let t = next_text(ws);
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("reply {t:?} is not JSON: {e}"))
}

/// The reply is an error whose message contains `needle`.
fn assert_error(reply: &Value, needle: &str) {
    assert_eq!(reply["op"], "error", "{reply}");
    let e = reply["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(e.contains(needle), "error {e:?} should mention {needle:?}");
}

/// The connection is open and still subscribed to `topic`: a publication arrives next.
fn assert_receives(h: &EngineHandle, ws: &mut Ws, topic: &str, text: &str) {
    publish(h, topic, text);
    assert_eq!(next_text(ws), text);
}

/// The next two messages are `a` and `b`, of two topics: in either order, since order is
/// promised within a topic, not across topics.
fn assert_both(ws: &mut Ws, a: &str, b: &str) {
    let mut got = [next_text(ws), next_text(ws)];
    got.sort();
    let mut want = [a.to_owned(), b.to_owned()];
    want.sort();
    assert_eq!(got, want);
}

fn subscribe_and_unsubscribe_take_effect_by_the_ack(backend: Backend) {
    let h = engine(backend);
    let mut ws = connect(h.local_addr(), "/sub/X");
    assert_receives(&h, &mut ws, "X", "x1");

    // Not yet subscribed to Y: Y's message never arrives, the marker on X does.
    publish(&h, "Y", "y0");
    assert_receives(&h, &mut ws, "X", "x2");

    let ack = control(&mut ws, &json!({"op": "subscribe", "topics": ["Y"]}));
    assert_eq!(ack, json!({"op": "subscribed", "topics": ["Y"]}));
    publish(&h, "Y", "y1");
    publish(&h, "X", "x3");
    assert_both(&mut ws, "y1", "x3");

    // Subscribing again is not an error and does not duplicate deliveries.
    let ack = control(&mut ws, &json!({"op": "subscribe", "topics": ["Y"]}));
    assert_eq!(ack, json!({"op": "subscribed", "topics": ["Y"]}));
    publish(&h, "Y", "y2");
    publish(&h, "X", "x4");
    assert_both(&mut ws, "y2", "x4");

    let ack = control(&mut ws, &json!({"op": "unsubscribe", "topics": ["Y"]}));
    assert_eq!(ack, json!({"op": "unsubscribed", "topics": ["Y"]}));
    publish(&h, "Y", "y3");
    publish(&h, "X", "x5");
    assert_eq!(
        next_text(&mut ws),
        "x5",
        "nothing of Y after the unsubscribe ack"
    );

    // Unsubscribing from the path topic too; another subscriber still gets X.
    let mut other = connect(h.local_addr(), "/sub/X");
    let ack = control(&mut ws, &json!({"op": "unsubscribe", "topics": ["X"]}));
    assert_eq!(ack, json!({"op": "unsubscribed", "topics": ["X"]}));
    publish(&h, "X", "x6");
    assert_eq!(next_text(&mut other), "x6");
    let ack = control(&mut ws, &json!({"op": "subscribe", "topics": ["Z"]}));
    assert_eq!(ack, json!({"op": "subscribed", "topics": ["Z"]}));
    publish(&h, "X", "x7");
    assert_receives(&h, &mut ws, "Z", "z1");
    assert_eq!(next_text(&mut other), "x7");

    // Subscribing to several topics in one message.
    let ack = control(&mut ws, &json!({"op": "subscribe", "topics": ["X", "Z"]}));
    assert_eq!(ack, json!({"op": "subscribed", "topics": ["X", "Z"]}));
    publish(&h, "X", "x8");
    publish(&h, "Z", "z2");
    assert_both(&mut ws, "x8", "z2");
}

fn control_errors_are_answered_and_the_connection_stays_open(backend: Backend) {
    let h = engine(backend);
    let mut ws = connect(h.local_addr(), "/sub/X");

    // One topic named over and over, past the limit (64 KiB with these rules): refused
    // unread, however valid its JSON.
    let repeats = format!(
        r#"{{"op":"subscribe","topics":["X"{}]}}"#,
        r#","X""#.repeat(17_000)
    );
    let cases: [(&str, &str); 9] = [
        (
            &repeats,
            "control message too long: 68033 bytes, at most 65536",
        ),
        ("not json", "bad JSON"),
        (r#"{"op":"subscribe","topics":["X"],"extra":1}"#, "bad JSON"),
        (r#"{"op":"subscribe","topics":"X"}"#, "bad JSON"),
        (r#"{"op":"frobnicate","topics":["X"]}"#, "unknown op"),
        (
            r#"{"op":"subscribe","topics":["bad topic"]}"#,
            "character outside",
        ),
        (r#"{"op":"subscribe","topics":[""]}"#, "empty"),
        (r#"{"op":"subscribe","topics":[]}"#, "no topics"),
        (
            &format!(r#"{{"op":"subscribe","topics":["{}"]}}"#, "x".repeat(65)),
            "over 64 bytes",
        ),
    ];
    for (i, (msg, needle)) in cases.iter().enumerate() {
        send_text(&mut ws, msg);
        assert_error(&reply(&mut ws), needle);
        assert_receives(&h, &mut ws, "X", &format!("after case {i}"));
    }

    // A binary message from a subscriber is not a control message.
    ws.send(Message::binary(b"{}".to_vec())).unwrap();
    assert_error(&reply(&mut ws), "binary");
    assert_receives(&h, &mut ws, "X", "after binary");

    // Two topics allowed per connection: X (from the path) and Y; Z is one too many.
    let ack = control(&mut ws, &json!({"op": "subscribe", "topics": ["Y"]}));
    assert_eq!(ack, json!({"op": "subscribed", "topics": ["Y"]}));
    let e = control(&mut ws, &json!({"op": "subscribe", "topics": ["Z"]}));
    assert_error(&e, "more than 2 topics");
    publish(&h, "Z", "z-not-subscribed");
    publish(&h, "Y", "y1");
    assert_eq!(
        next_text(&mut ws),
        "y1",
        "the refused topic Z delivers nothing"
    );
    assert_receives(&h, &mut ws, "X", "x-after-too-many");

    // Freeing a slot makes room again.
    let ack = control(&mut ws, &json!({"op": "unsubscribe", "topics": ["Y"]}));
    assert_eq!(ack, json!({"op": "unsubscribed", "topics": ["Y"]}));
    let ack = control(&mut ws, &json!({"op": "subscribe", "topics": ["Z"]}));
    assert_eq!(ack, json!({"op": "subscribed", "topics": ["Z"]}));
    assert_receives(&h, &mut ws, "Z", "z1");

    // More topics than allowed in the path is refused at the upgrade.
    let refused = fanout_util::try_connect_with(h.local_addr(), "/sub/A,B,C", &[]);
    assert_eq!(refused.err().map(|e| e.0), Some(400));

    wait_stats(&h, "the refused connection to go", |t| t.connections == 1);
    assert_receives(&h, &mut ws, "X", "still open");
}

/// A subscribe request is taken whole or not at all: when one of its topics is refused,
/// none of the others is subscribed (the error says so), and a topic named twice counts
/// once against the limit.
fn a_refused_subscribe_subscribes_none_of_its_topics(backend: Backend) {
    let h = engine(backend);
    let mut ws = connect(h.local_addr(), "/sub/X");
    for (topics, why) in [
        (json!(["Y", "Z"]), "more than 2 topics"),
        (json!(["Y", "bad topic"]), "character outside"),
        (json!(["Y", ""]), "empty"),
    ] {
        let e = control(&mut ws, &json!({"op": "subscribe", "topics": topics}));
        assert_error(&e, why);
        assert_error(&e, "(no topic subscribed)");
        publish(&h, "Y", "y-not-subscribed");
        assert_receives(&h, &mut ws, "X", &format!("after {topics}"));
    }
    wait_stats(&h, "only X subscribed", |t| t.subscriptions == 1);
    let ack = control(
        &mut ws,
        &json!({"op": "subscribe", "topics": ["Y", "Y", "X"]}),
    );
    assert_eq!(ack, json!({"op": "subscribed", "topics": ["Y", "Y", "X"]}));
    wait_stats(&h, "X and Y subscribed", |t| t.subscriptions == 2);
    assert_receives(&h, &mut ws, "Y", "y1");
    assert_receives(&h, &mut ws, "X", "x-once");
}

/// The `subscriptions` gauge counts connection × topic pairs as they come and go.
fn subscriptions_gauge_follows_subscribers(backend: Backend) {
    let h = engine(backend);
    let addr = h.local_addr();
    let mut a = connect(addr, "/sub/X,Y");
    let b = connect(addr, "/sub/X");
    wait_stats(&h, "3 subscriptions", |t| t.subscriptions == 3);
    let ack = control(&mut a, &json!({"op": "unsubscribe", "topics": ["Y"]}));
    assert_eq!(ack, json!({"op": "unsubscribed", "topics": ["Y"]}));
    wait_stats(&h, "2 subscriptions after unsubscribe", |t| {
        t.subscriptions == 2
    });
    drop(b);
    wait_stats(&h, "1 subscription after a disconnect", |t| {
        t.subscriptions == 1 && t.connections == 1
    });
}

util::for_each_backend!(
    subscribe_and_unsubscribe_take_effect_by_the_ack,
    control_errors_are_answered_and_the_connection_stays_open,
    subscriptions_gauge_follows_subscribers,
    a_refused_subscribe_subscribes_none_of_its_topics,
);
