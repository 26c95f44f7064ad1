//! The engine around the fan-out: publishing never blocks and inbox overflow is counted
//! exactly; `/pub` needs the publish token and does not echo; unknown paths get 404;
//! `shutdown` says 1001 to every client; the lag high-water mark sees a stalled subscriber.

use crate::fanout_util;
use crate::util;

use std::time::{Duration, Instant};

use fanout_util::flood::{Flood, MAX_BEFORE_TRIGGER, MAX_LAG, engine};
use fanout_util::{
    TIMEOUT, Ws, builder, connect, connect_many, connect_stalled, next_data, start,
    try_connect_with, wait_for,
};
use ringcast::fanout::{SlowConsumer, TopicName};
use ringcast::protocol::conn::Limits;
use ringcast::protocol::frame::OpCode;
use ringcast::server::{Backend, Broadcast};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A flood of publishes into 4-slot inboxes returns promptly; every (reactor, publication)
/// pair the publisher was told was dropped is counted in `ring_dropped`, and the subscriber
/// receives exactly the publications its reactor took, in order.
fn publishing_never_blocks_and_inbox_drops_are_counted_exactly(backend: Backend) {
    const N: u64 = 100_000;
    let h = start(builder(backend).inbox_capacity(4));
    let mut sub = connect(h.local_addr(), "/sub/F");
    let fanout = h.fanout();
    let publisher = std::thread::spawn(move || {
        let topic = TopicName::new("F");
        let started = Instant::now();
        let mut dropped = 0u64;
        for i in 0..N {
            let r = fanout.publish(&topic, OpCode::Binary, &i.to_be_bytes());
            dropped += r.dropped_reactors as u64;
        }
        (dropped, started.elapsed())
    });
    let (dropped, elapsed) = publisher.join().expect("publisher thread");
    assert!(
        elapsed < TIMEOUT,
        "{N} publishes took {elapsed:?}: the publisher blocked"
    );
    assert!(dropped > 0, "4-slot inboxes never overflowed under a flood");

    // Every reactor has taken or dropped each publication.
    wait_for("every reactor to account for every publication", || {
        h.stats()
            .reactors
            .iter()
            .all(|r| r.publications + r.ring_dropped == N)
    });
    let stats = h.stats();
    let counted: u64 = stats.reactors.iter().map(|r| r.ring_dropped).sum();
    assert_eq!(
        counted, dropped,
        "ring_dropped vs dropped_reactors: {stats:#?}"
    );
    assert_eq!(stats.total().ring_lag, 0);

    // The inboxes are empty now: the end marker reaches every reactor.
    let r = h.publish_binary("F", b"end");
    assert!(r.is_complete(), "{r:?}");
    let mut received = 0u64;
    let mut last = None;
    loop {
        match next_data(&mut sub) {
            Message::Binary(b) if &b[..] == b"end" => break,
            Message::Binary(b) => {
                let seq = u64::from_be_bytes(b[..].try_into().expect("8-byte payload"));
                assert!(last < Some(seq), "{seq} after {last:?}");
                last = Some(seq);
                received += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The subscriber's reactor is the one that accepted a connection.
    let stats = h.stats();
    let mine = stats
        .reactors
        .iter()
        .find(|r| r.accepted == 1)
        .expect("one reactor accepted the subscriber");
    assert_eq!(received, N - mine.ring_dropped, "{stats:#?}");
    assert_eq!(received + 1, mine.publications, "{stats:#?}");
    wait_for(
        "frames_out to count the handshake and every message",
        || h.stats().total().frames_out >= received + 2,
    );
    assert_eq!(h.stats().total().frames_out, received + 2);
}

fn tokened() -> Broadcast {
    Broadcast {
        publish_token: Some("s3cret".into()),
        rules: Default::default(),
    }
}

/// The next frame on a publisher is the pong to `ping`: nothing it published came back.
fn assert_not_echoed(publisher: &mut Ws, ping: &str) {
    publisher
        .send(Message::Ping(ping.as_bytes().to_vec().into()))
        .unwrap();
    loop {
        match publisher.read().expect("read") {
            Message::Ping(_) => {}
            Message::Pong(p) => {
                assert_eq!(&p[..], ping.as_bytes());
                return;
            }
            other => panic!("the publisher got {other:?} back"),
        }
    }
}

fn pub_needs_the_token_and_does_not_echo(backend: Backend) {
    let h = start(builder(backend).handler(tokened()));
    let addr = h.local_addr();
    let mut sub = connect(addr, "/sub/T");
    let mut sub_default = connect(addr, "/sub");

    let refused: [(&str, &[(&str, &str)]); 6] = [
        ("/pub/T", &[]),
        ("/pub/T?token=wrong", &[]),
        ("/pub/T?token=", &[]),
        ("/pub/T", &[("Authorization", "Bearer wrong")]),
        ("/pub/T", &[("Authorization", "s3cret")]),
        ("/pub", &[("Authorization", "Bearer s3cre")]),
    ];
    for (path, headers) in refused {
        match try_connect_with(addr, path, headers) {
            Err((status, _)) => assert_eq!(status, 401, "{path} {headers:?}"),
            Ok(_) => panic!("{path} {headers:?} was accepted"),
        }
    }

    let mut by_header = try_connect_with(addr, "/pub/T", &[("Authorization", "Bearer s3cret")])
        .expect("bearer token accepted");
    let mut by_query = try_connect_with(addr, "/pub/T?token=s3cret", &[]).expect("query token");
    let mut default = try_connect_with(addr, "/pub?token=s3cret", &[]).expect("default topic");

    by_header.send(Message::text("by header")).unwrap();
    assert_not_echoed(&mut by_header, "a");
    assert_eq!(next_data(&mut sub), Message::text("by header"));

    let bin = vec![0u8, 0xFF, 0xFE, 7];
    by_query.send(Message::binary(bin.clone())).unwrap();
    assert_not_echoed(&mut by_query, "b");
    assert_eq!(next_data(&mut sub), Message::binary(bin));

    default.send(Message::text("to default")).unwrap();
    assert_not_echoed(&mut default, "c");
    assert_eq!(next_data(&mut sub_default), Message::text("to default"));

    // Nothing of topic T reached the default subscriber, nor the reverse.
    assert!(h.publish("default", "marker").is_complete());
    assert_eq!(next_data(&mut sub_default), Message::text("marker"));
    assert!(h.publish("T", "marker").is_complete());
    assert_eq!(next_data(&mut sub), Message::text("marker"));
    assert_eq!(h.stats().total().messages_in, 3);
}

fn unknown_paths_get_404(backend: Backend) {
    let h = start(builder(backend));
    let addr = h.local_addr();
    for path in ["/nope", "/", "/subway", "/publish", "/nope?token=x"] {
        match try_connect_with(addr, path, &[]) {
            Err((status, _)) => assert_eq!(status, 404, "{path}"),
            Ok(_) => panic!("{path} was accepted"),
        }
    }
    for path in ["/sub/bad topic", "/sub/a,,b", "/pub/a,b"] {
        let path = path.replace(' ', "%20");
        match try_connect_with(addr, &path, &[]) {
            Err((status, _)) => assert_eq!(status, 400, "{path}"),
            Ok(_) => panic!("{path} was accepted"),
        }
    }
}

fn shutdown_sends_1001_to_every_client_and_returns(backend: Backend) {
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
    let h = start(builder(backend).limits(Limits {
        close_timeout: CLOSE_TIMEOUT,
        ..Limits::default()
    }));
    let addr = h.local_addr();
    let mut clients = connect_many(addr, "/sub/S", 40);
    clients.extend(connect_many(addr, "/sub", 10));
    clients.push(connect(addr, "/pub/S"));
    assert_eq!(h.stats().total().connections, clients.len() as u64);

    let shutdown = std::thread::spawn(move || {
        let started = Instant::now();
        h.shutdown();
        started.elapsed()
    });
    for (i, mut ws) in clients.into_iter().enumerate() {
        match next_data(&mut ws) {
            Message::Close(Some(f)) => {
                assert_eq!(f.code, CloseCode::Away, "client {i}: {f:?}");
            }
            other => panic!("client {i}: expected close 1001, got {other:?}"),
        }
        // tungstenite replies to the close; the server then ends the TCP connection.
        match ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("client {i}: expected the end after the close, got {other:?}"),
        }
        // Dropping the socket ends our side too, which the server lingers for.
        drop(ws);
    }
    let elapsed = shutdown.join().expect("shutdown thread");
    assert!(
        elapsed < CLOSE_TIMEOUT,
        "shutdown took {elapsed:?}: it waited for the close timeout although every client \
         answered"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}
/// The policy acts only on a subscriber that had more than the limit pending before a
/// batch, so once it has acted, the lag high-water mark must say that a subscriber passed
/// the limit.
fn lag_high_water_sees_the_stalled_subscriber(backend: Backend) {
    let h = engine(backend, SlowConsumer::DropOldest);
    let addr = h.local_addr();
    let healthy = connect(addr, "/sub/T");
    let _stalled = connect_stalled(addr, "/sub/T");
    let mut flood = Flood {
        h: &h,
        healthy,
        topics: &["T"],
        next: 0,
    };
    while h.stats().total().slow_dropped_frames == 0 {
        assert!(flood.next < MAX_BEFORE_TRIGGER, "the policy never acted");
        flood.batch();
    }
    let t = h.stats().total();
    assert!(
        t.lag_high_water as usize > MAX_LAG,
        "lag_high_water is {} although drop-oldest acted ({} messages), which it does only \
         past {MAX_LAG} bytes of lag",
        t.lag_high_water,
        t.slow_dropped_frames
    );
}

/// A WebSocket publisher flooding the inboxes (default size: more than a quarter of them
/// plus one read's worth of frames, see the README) is paused — its input is not read while
/// an inbox is over a quarter full — not dropped: every message reaches the subscriber, in
/// order, on io_uring as on epoll, and no reactor counts a drop.
fn websocket_publishers_are_paused_not_dropped_by_congested_inboxes(backend: Backend) {
    const N: u32 = 200_000;
    let h = start(builder(backend));
    let addr = h.local_addr();
    let mut sub = connect(addr, "/sub/P");
    let mut publisher = connect(addr, "/pub/P");
    fanout_util::wait_stats(&h, "the subscriber", |s| s.subscriptions == 1);
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            publisher
                .write(Message::binary(i.to_be_bytes().to_vec()))
                .expect("publish");
        }
        publisher.flush().expect("flush");
        publisher
    });
    for i in 0..N {
        match sub.read() {
            Ok(Message::Binary(b)) => assert_eq!(
                u32::from_be_bytes(b[..4].try_into().unwrap()),
                i,
                "lost or reordered"
            ),
            Ok(_) => {}
            Err(e) => panic!("message {i}: {e}; {:#?}", h.stats()),
        }
    }
    let _publisher = writer.join().expect("publisher thread");
    // Both reactors took every publication (the one without subscribers too), none
    // dropped.
    let s = fanout_util::wait_stats(&h, "every publication taken", |s| {
        s.publications == 2 * u64::from(N)
    });
    assert_eq!(s.ring_dropped, 0, "{s:#?}");
    assert_eq!(s.messages_in, u64::from(N));
}

util::for_each_backend!(
    publishing_never_blocks_and_inbox_drops_are_counted_exactly,
    websocket_publishers_are_paused_not_dropped_by_congested_inboxes,
    pub_needs_the_token_and_does_not_echo,
    unknown_paths_get_404,
    shutdown_sends_1001_to_every_client_and_returns,
    lag_high_water_sees_the_stalled_subscriber,
);
