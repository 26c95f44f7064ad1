//! Faults on the embedding side, on real sockets and both backends: a configuration the
//! engine cannot run with refused at start, naming the field; a handler that panics
//! takes the whole engine down (`wait` returns the panic's message, and every connection,
//! on every reactor, is closed, none left hanging on a dead reactor), and topic names
//! longer than a `ringcast.v1` binary envelope can carry (255 bytes) are refused where
//! they come in (topic rules at start, a publication) while a 255-byte name works end to
//! end.

use crate::fanout_util;
use crate::util;

use std::io;
use std::sync::mpsc;
use std::time::Duration;

use fanout_util::{TIMEOUT, Ws, builder, connect, next_data, start, try_connect_with};
use ringcast::EngineBuilder;
use ringcast::fanout::{MAX_TOPIC_LEN, TopicRules};
use ringcast::server::config::MAX_DURATION;
use ringcast::server::{
    Backend, Broadcast, Client, Handler, HttpEndpoints, Message as Incoming, Upgrade,
    UpgradeRequest,
};
use tungstenite::Message;

util::for_each_backend!(
    a_panicking_handler_stops_the_engine,
    topic_names_past_what_an_envelope_carries,
);

/// What the types let through but the engine cannot run with is refused by `start`, with
/// `InvalidInput` naming the field, before any thread or socket exists.
#[test]
fn a_configuration_the_engine_cannot_run_with_is_refused_at_start() {
    let mut empty_token = HttpEndpoints::default();
    empty_token.metrics_token = Some(String::new());
    let cases: [(EngineBuilder, &str); 7] = [
        (
            builder(Backend::Epoll).topics(TopicRules {
                max_name_len: MAX_TOPIC_LEN + 1,
                max_per_connection: 8,
            }),
            "topic rules: max_name_len 256 is not a length from 1 to 255 bytes",
        ),
        (
            builder(Backend::Epoll).topics(TopicRules {
                max_name_len: 0,
                max_per_connection: 8,
            }),
            "topic rules: max_name_len 0 is not a length from 1 to 255 bytes",
        ),
        (
            builder(Backend::Epoll).inbox_capacity(0),
            "inbox_capacity 0 is not a number of publications from 1 to 16777216",
        ),
        (
            builder(Backend::Epoll).inbox_capacity(usize::MAX),
            "inbox_capacity 18446744073709551615 is not a number of publications",
        ),
        (
            builder(Backend::Epoll).handshake_timeout(Duration::MAX),
            "handshake_timeout 18446744073709551615.999999999s is over 365 days",
        ),
        (
            builder(Backend::Epoll).heartbeat(Some(MAX_DURATION + Duration::from_secs(1))),
            "heartbeat 31536001s is over 365 days",
        ),
        (
            builder(Backend::Epoll).http(empty_token),
            "http: an empty metrics_token would let no one in",
        ),
    ];
    for (b, expected) in cases {
        let err = b.start().expect_err(expected);
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    // The limits themselves are taken.
    let h = builder(Backend::Epoll)
        .inbox_capacity(1)
        .handshake_timeout(MAX_DURATION)
        .start()
        .expect("the limits are valid");
    h.shutdown();
}

/// Accepts everyone and panics on the text `boom`: a handler with a bug.
struct Boom;

impl Handler for Boom {
    fn on_upgrade(&self, _: &UpgradeRequest<'_>) -> Upgrade {
        Upgrade::accept()
    }

    fn on_message(&self, _: &mut Client<'_>, msg: Incoming<'_>) {
        if let Incoming::Text("boom") = msg {
            panic!("handler bug: boom");
        }
    }
}

/// Reads until the server ends the connection (a close frame or the socket closed);
/// panics if it is still open after [`TIMEOUT`].
fn ended(ws: &mut Ws) {
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the connection is still open after {TIMEOUT:?}")
            }
            Err(_) => return,
        }
    }
}

fn a_panicking_handler_stops_the_engine(backend: Backend) {
    let handle = start(builder(backend).handler(Boom));
    let addr = handle.local_addr();
    // Two reactors; clients from as many ports land on both (`SO_REUSEPORT` hashes them).
    let mut clients: Vec<Ws> = (0..8).map(|_| connect(addr, "/")).collect();
    // The reactor of client 0 handles its message and panics.
    clients[0].send(Message::text("boom")).expect("send");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.wait());
    });
    let result = rx
        .recv_timeout(TIMEOUT)
        .expect("the engine stops once a reactor panicked");
    let err = result.expect_err("a panicked reactor is an error");
    assert!(
        err.to_string().contains("panicked: handler bug: boom"),
        "{err}"
    );
    for ws in &mut clients {
        ended(ws);
    }
}

fn topic_names_past_what_an_envelope_carries(backend: Backend) {
    let rules = |max_name_len| TopicRules {
        max_name_len,
        max_per_connection: 8,
    };

    // The longest name works end to end: plainly, and in a binary envelope whose length
    // byte is 255.
    let handle = start(
        builder(backend)
            .topics(rules(MAX_TOPIC_LEN))
            .handler(Broadcast {
                publish_token: None,
                rules: rules(MAX_TOPIC_LEN),
            }),
    );
    let addr = handle.local_addr();
    let longest = "x".repeat(MAX_TOPIC_LEN);
    let path = format!("/sub/{longest}");
    let mut plain = connect(addr, &path);
    let mut v1 = try_connect_with(addr, &path, &[("Sec-WebSocket-Protocol", "ringcast.v1")])
        .unwrap_or_else(|(status, body)| panic!("{status}: {body}"));
    // The subscription's epoch names the topic too (in JSON).
    match next_data(&mut v1) {
        Message::Text(t) => assert!(
            t.starts_with(r#"{"op":"epoch","topic":""#) && t.contains(&longest),
            "{t}"
        ),
        other => panic!("expected the epoch, got {other:?}"),
    }
    let envelope = |seq: u64, payload: &[u8]| {
        let mut f = vec![0x01, 255];
        f.extend_from_slice(longest.as_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(payload);
        Message::binary(f)
    };
    let r = handle.publish_binary(&longest, b"tick");
    assert!(r.is_complete() && !r.refused && r.seq == 1, "{r:?}");
    assert_eq!(next_data(&mut plain), Message::binary(&b"tick"[..]));
    assert_eq!(next_data(&mut v1), envelope(1, b"tick"));

    // One byte longer: refused, nothing numbered or sent, and the engine goes on.
    let too_long = "x".repeat(MAX_TOPIC_LEN + 1);
    for r in [
        handle.publish_binary(&too_long, b"lost"),
        handle.publish(&too_long, "lost"),
    ] {
        assert!(r.refused && !r.is_complete() && r.seq == 0, "{r:?}");
    }
    let r = handle.publish_binary(&longest, b"tock");
    assert_eq!(r.seq, 2, "{r:?}");
    assert_eq!(next_data(&mut plain), Message::binary(&b"tock"[..]));
    assert_eq!(next_data(&mut v1), envelope(2, b"tock"));
}
