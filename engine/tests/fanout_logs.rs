//! The topic logs on real sockets, both backends: runs that cross chunk edges and mix small
//! frames with large (referenced) ones reach a slowly reading subscriber whole and in
//! order, however the writes were cut; one connection on many topics; a subscriber joining
//! mid-stream starts at the head; chunks are reused over a long run (memory flat); a
//! stalled subscriber's pending io_uring send survives the chunks it pins being recycled,
//! and its close.

use crate::fanout_util;
use crate::util;

use std::io::Read;
use std::net::Shutdown;
use std::time::Duration;

use fanout_util::{
    builder, connect, connect_stalled, next_data, next_text, start, wait_for, wait_stats,
};
use ringcast::fanout::{History, SlowConsumer};
use ringcast::protocol::conn::Limits;
use ringcast::server::Backend;
use tungstenite::Message;

/// No ringcast.v1 history: the logs hold only what plain subscribers have pending.
fn no_history() -> History {
    History {
        messages: 0,
        ..History::default()
    }
}

/// Message `seq` of `len` bytes: its sequence number, then a byte pattern of it.
fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len.max(4)).map(|i| (i as u32 ^ seq) as u8).collect();
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn check(m: Message, seq: u32, len: usize) {
    let Message::Binary(b) = m else {
        panic!("message {seq}: {m:?}")
    };
    assert_eq!(b.len(), len.max(4), "message {seq}: length");
    assert!(
        b[..] == payload(seq, len)[..],
        "message {seq}: bytes mixed up"
    );
}

/// Sizes that cross every boundary: tiny, around the 125/126 and 65535/65536 header
/// classes, and over the large-frame threshold (16 KiB), which the log references.
fn size(i: u32) -> usize {
    const SIZES: [usize; 9] = [
        4,
        100,
        125,
        126,
        3000,
        16 << 10,
        (16 << 10) + 1,
        65_535,
        65_536,
    ];
    SIZES[(i as usize * 7) % SIZES.len()]
}

fn a_slow_reader_gets_every_frame_whole_across_chunks_and_large_frames(backend: Backend) {
    let h = start(builder(backend).sndbuf(4096).max_lag_bytes(64 << 20));
    let addr = h.local_addr();
    // A small receive buffer and small reads: the server's writes stop anywhere, inside
    // headers, payloads, chunks and large frames.
    let mut slow = connect_stalled(addr, "/sub/T");
    let mut fast = connect(addr, "/sub/T");
    wait_stats(&h, "two subscribers", |s| s.subscriptions == 2);
    const N: u32 = 400;
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            assert!(h.publish_binary("T", &payload(i, size(i))).is_complete());
        }
        h
    });
    for i in 0..N {
        check(next_data(&mut fast), i, size(i));
    }
    for i in 0..N {
        check(next_data(&mut slow), i, size(i));
    }
    let h = writer.join().unwrap();
    let s = h.stats().total();
    assert_eq!(s.slow_closed + s.slow_dropped_frames, 0, "{s:?}");
}

fn one_connection_on_many_topics_gets_each_in_order(backend: Backend) {
    let h = start(builder(backend));
    let topics: Vec<String> = (0..64).map(|t| format!("t{t}")).collect();
    let mut ws = connect(h.local_addr(), &format!("/sub/{}", topics.join(",")));
    wait_stats(&h, "64 subscriptions", |s| s.subscriptions == 64);
    for round in 0..20u32 {
        for (t, name) in topics.iter().enumerate() {
            h.publish(name, &format!("{t}:{round}")).is_complete();
        }
    }
    let mut next = vec![0u32; 64];
    for _ in 0..64 * 20 {
        let m = next_text(&mut ws);
        let (t, r) = m.split_once(':').unwrap();
        let (t, r): (usize, u32) = (t.parse().unwrap(), r.parse().unwrap());
        assert_eq!(r, next[t], "topic {t} out of order");
        next[t] += 1;
    }
    assert!(next.iter().all(|&n| n == 20));
}

fn a_subscriber_joining_mid_stream_starts_at_the_head(backend: Backend) {
    let h = start(builder(backend).threads(1));
    let addr = h.local_addr();
    let mut early = connect(addr, "/sub/T");
    wait_stats(&h, "one subscriber", |s| s.subscriptions == 1);
    for i in 0..100 {
        assert!(h.publish("T", &format!("old {i}")).is_complete());
    }
    assert_eq!(next_text(&mut early), "old 0");
    let mut late = connect(addr, "/sub/T");
    wait_stats(&h, "two subscribers", |s| s.subscriptions == 2);
    assert!(h.publish("T", "new").is_complete());
    assert_eq!(
        next_text(&mut late),
        "new",
        "nothing from before the subscription"
    );
    for i in 1..100 {
        assert_eq!(next_text(&mut early), format!("old {i}"));
    }
    assert_eq!(next_text(&mut early), "new");
}

fn chunks_are_reused_over_a_long_run(backend: Backend) {
    // Plain logs only (the ringcast.v1 history is bounded on its own).
    let h = start(builder(backend).threads(1).history(no_history()));
    let mut ws = connect(h.local_addr(), "/sub/T");
    wait_stats(&h, "one subscriber", |s| s.subscriptions == 1);
    // 32 MB in batches the subscriber reads as they come.
    let body = vec![7u8; 1000];
    let mut peak = 0;
    for round in 0..320 {
        for _ in 0..100 {
            assert!(h.publish_binary("T", &body).is_complete());
        }
        for _ in 0..100 {
            assert_eq!(next_data(&mut ws).len(), 1000);
        }
        if round % 32 == 31 {
            // The tick (100 ms) trims the logs and reports what their chunks hold.
            std::thread::sleep(Duration::from_millis(150));
            peak = peak.max(h.stats().total().log_bytes);
        }
    }
    // A few 64 KiB chunks at most, reused: not the 32 MB that went through.
    assert!(peak <= 1 << 20, "topic-log chunks held {peak} bytes");
}

/// A stalled subscriber keeps a send pending (io_uring: an SQE pinning the chunks it
/// points into) while a healthy one moves the log on many times over and its chunks are
/// recycled; then the stalled one is closed by the policy and goes. Nothing is corrupted
/// for the healthy one, and the pinned memory is released.
fn a_pending_send_outlives_its_chunks(backend: Backend) {
    let h = start(
        builder(backend)
            .threads(1)
            .history(no_history())
            .sndbuf(4096)
            .max_lag_bytes(256 << 10)
            .slow_consumer(SlowConsumer::Close)
            // The stalled one is closed early in the loop below and reads its close only
            // after it: its closing handshake must outlast the loop on a slow machine.
            .limits(Limits {
                close_timeout: Duration::from_secs(120),
                ..Limits::default()
            }),
    );
    let addr = h.local_addr();
    let mut stalled = connect_stalled(addr, "/sub/T");
    let mut healthy = connect(addr, "/sub/T");
    wait_stats(&h, "two subscribers", |s| s.subscriptions == 2);
    for i in 0..3000u32 {
        assert!(h.publish_binary("T", &payload(i, 3000)).is_complete());
        check(next_data(&mut healthy), i, 3000);
    }
    let s = wait_stats(&h, "the stalled one to be closed", |s| s.slow_closed == 1);
    assert_eq!(s.subscriptions, 1);
    // What the stalled one got before its close: a prefix, whole frames.
    stalled
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut i = 0;
    loop {
        match stalled.read() {
            Ok(Message::Binary(b)) => {
                assert!(b[..] == payload(i, 3000)[..], "message {i} mixed up");
                i += 1;
            }
            Ok(Message::Close(c)) => {
                assert_eq!(u16::from(c.expect("a code").code), 1008);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("after {i} messages: {e}"),
        }
    }
    // The client ends its side: the server, whose close frame went out, lets it go.
    stalled.get_mut().shutdown(Shutdown::Write).unwrap();
    wait_stats(&h, "the stalled connection to go", |s| s.connections == 1);
    wait_for("the pinned chunks to be released", || {
        h.stats().total().log_bytes <= 256 << 10
    });
    let mut rest = Vec::new();
    let _ = stalled.get_mut().read_to_end(&mut rest);
}

util::for_each_backend!(
    a_slow_reader_gets_every_frame_whole_across_chunks_and_large_frames,
    one_connection_on_many_topics_gets_each_in_order,
    a_subscriber_joining_mid_stream_starts_at_the_head,
    chunks_are_reused_over_a_long_run,
    a_pending_send_outlives_its_chunks,
);
