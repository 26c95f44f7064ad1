//! Connections closed, and engines shut down, while writes are in flight (STYLE habit 8: the
//! memory a pending write points to outlives it). A subscriber that never reads keeps a
//! write pending: on io_uring a `sendmsg` SQE waiting for room in the socket, pinning the
//! topic-log chunks it points into; on epoll write interest on a full socket.

use crate::fanout_util;
use crate::util;

use std::time::{Duration, Instant};

use fanout_util::{builder, connect, connect_stalled, next_data, next_text, start, wait_stats};
use ringcast::fanout::SlowConsumer;
use ringcast::protocol::conn::Limits;
use ringcast::server::Backend;

const FRAME: usize = 16_000;
const FRAMES: usize = 32;

/// Publishes `FRAMES` frames of `FRAME` bytes to topic `T` and reads them from `healthy`.
fn flood(h: &ringcast::EngineHandle, healthy: &mut fanout_util::Ws) {
    let payload = vec![7u8; FRAME];
    for _ in 0..FRAMES {
        assert!(h.publish_binary("T", &payload).is_complete());
    }
    for _ in 0..FRAMES {
        assert_eq!(next_data(healthy).len(), FRAME);
    }
}

/// The peer of a pending write resets the connection: the write fails (or is cancelled),
/// the connection goes, and the engine keeps serving the others.
fn reset_with_a_write_in_flight(backend: Backend) {
    let h = start(
        builder(backend)
            .sndbuf(4096)
            .slow_consumer(SlowConsumer::DropOldest),
    );
    let addr = h.local_addr();
    let stalled = connect_stalled(addr, "/sub/T");
    let mut healthy = connect(addr, "/sub/T");
    wait_stats(&h, "two subscribers", |s| s.subscriptions == 2);
    flood(&h, &mut healthy);
    wait_stats(&h, "the stalled subscriber to fall behind", |s| {
        s.lag_high_water > (FRAME * FRAMES / 2) as u64
    });
    // Closing with unread input sends a reset.
    drop(stalled);
    wait_stats(&h, "the reset connection to go", |s| s.connections == 1);
    assert!(h.publish("T", "after").is_complete());
    assert_eq!(next_text(&mut healthy), "after");
}

/// Shutdown while several writes wait for stalled peers: it returns after the close
/// timeout, with every pending operation cancelled and completed first.
fn shutdown_with_writes_in_flight(backend: Backend) {
    let h = start(builder(backend).sndbuf(4096).limits(Limits {
        close_timeout: Duration::from_millis(500),
        ..Limits::default()
    }));
    let addr = h.local_addr();
    let stalled: Vec<_> = (0..4).map(|_| connect_stalled(addr, "/sub/T")).collect();
    let mut healthy = connect(addr, "/sub/T");
    wait_stats(&h, "five subscribers", |s| s.subscriptions == 5);
    flood(&h, &mut healthy);
    wait_stats(&h, "the stalled subscribers to fall behind", |s| {
        s.lag_high_water > (FRAME * FRAMES / 2) as u64
    });
    let t0 = Instant::now();
    h.shutdown();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    drop(stalled);
}

/// What is published while a subscriber's write is pending goes out once that write ends,
/// with nothing published after it: the delivery that found the write pending asked for a
/// flush at its end (on io_uring the send's completion, on epoll the writable edge). So
/// does a frame of the connection's own queued meanwhile (a pong).
fn what_comes_during_a_pending_write_follows_it(backend: Backend) {
    let h = start(builder(backend).sndbuf(4096));
    let addr = h.local_addr();
    let mut stalled = connect_stalled(addr, "/sub/T");
    wait_stats(&h, "a subscriber", |s| s.subscriptions == 1);
    let payload = vec![7u8; FRAME];
    let mut published = 0;
    for round in 0..2 {
        for _ in 0..FRAMES {
            assert!(h.publish_binary("T", &payload).is_complete());
        }
        published += FRAMES as u64;
        // Taken and delivered in the same loop turn: its write is pending from then on
        // (the socket takes a few KiB of the 512 KB).
        wait_stats(&h, "the flood to be taken", |s| {
            s.publications == 2 * published
        });
        // The second time, the client pings (and reads nothing) while the write is pending.
        if round == 1 {
            let ping = tungstenite::Message::Ping(b"p".to_vec().into());
            stalled.send(ping).unwrap();
        }
        for i in 0..5 {
            assert!(h.publish("T", &format!("tail {i}")).is_complete());
        }
        published += 5;
        wait_stats(&h, "the tail to be taken", |s| {
            s.publications == 2 * published
        });
        let mut pong = round == 0;
        let mut data = Vec::new();
        while data.len() < FRAMES + 5 || !pong {
            match stalled.read().expect("every frame, the tail and the pong") {
                tungstenite::Message::Pong(p) => pong |= &p[..] == b"p",
                tungstenite::Message::Ping(_) => {}
                m => data.push(m),
            }
        }
        assert!(data[..FRAMES].iter().all(|m| m.len() == FRAME));
        for (i, m) in data[FRAMES..].iter().enumerate() {
            assert_eq!(m.to_text().unwrap(), format!("tail {i}"));
        }
    }
}

util::for_each_backend!(
    reset_with_a_write_in_flight,
    shutdown_with_writes_in_flight,
    what_comes_during_a_pending_write_follows_it
);
