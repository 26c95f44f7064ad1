//! Bursts wider than the backend's fixed resources: more clients sending at once than the
//! io_uring receive-buffer ring has buffers (receives end with ENOBUFS and are re-armed;
//! nothing is lost), and one publication to more subscribers of one reactor than its
//! submission queue has entries (full queue: submit, then queue the rest; no send dropped);
//! and connections refused and closed in quick succession, each one's descriptor slot
//! reused by the next (on io_uring, a half-close still in flight on a kernel worker must not
//! reach the next connection in the slot). Run on both backends like every socket test.

use crate::fanout_util;
use crate::util;

use std::thread;

use fanout_util::{builder, connect_many, next_text, start, wait_stats};
use ringcast::server::Backend;
use util::{Frame, binary_payload, start_server, start_server_with};

/// 48 clients × 8 messages of 64 KiB, all written at once: 24 MiB in flight towards one
/// reactor with 4 receive buffers of 16 KiB (io_uring; epoll ignores the setting).
fn more_senders_than_receive_buffers(backend: Backend) {
    let server = start_server_with(backend, 1, |b| b.uring_recv_buffers(4));
    let payload = binary_payload(64 * 1024);
    thread::scope(|scope| {
        let clients: Vec<_> = (0..48).map(|_| server.client()).collect();
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for (i, mut client) in clients.into_iter().enumerate() {
            let mut mine = payload.clone();
            mine[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let bytes = client.encode_all(&vec![Frame::binary(mine.clone()); 8]);
            writers.push(client.write_in_background(bytes));
            readers.push(scope.spawn(move || {
                for _ in 0..8 {
                    client.expect_binary(&mine);
                }
            }));
        }
        for r in readers {
            r.join().expect("reader");
        }
        for w in writers {
            w.join().expect("writer");
        }
    });
}

/// 6000 subscribers on one reactor (its submission queue holds 4096 entries), three
/// publications: every subscriber gets all three, in order.
fn more_subscribers_than_submission_entries(backend: Backend) {
    const SUBS: usize = 6000;
    let h = start(builder(backend).threads(1));
    let mut subs = connect_many(h.local_addr(), "/sub/W", SUBS);
    wait_stats(&h, "every subscription", |s| s.subscriptions == SUBS as u64);
    for i in 0..3 {
        assert!(h.publish("W", &format!("wide {i}")).is_complete());
    }
    let chunk = SUBS.div_ceil(4);
    thread::scope(|scope| {
        for part in subs.chunks_mut(chunk) {
            scope.spawn(move || {
                for ws in part {
                    for i in 0..3 {
                        assert_eq!(next_text(ws), format!("wide {i}"));
                    }
                }
            });
        }
    });
    wait_stats(&h, "every frame counted", |s| {
        s.frames_out >= 3 * SUBS as u64
    });
}

/// 400 refused upgrades, one after the other: the server answers, half-closes, the client
/// closes at once, and the next connection (often in the same descriptor slot) still gets
/// its whole answer.
fn refusals_in_quick_succession(backend: Backend) {
    let server = start_server(backend, 1);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Version: 13\r\n\r\n";
    for i in 0..400 {
        let response = server.http(request);
        assert_eq!(response.status, 400, "request {i}: {response:?}");
    }
}

util::for_each_backend!(
    more_senders_than_receive_buffers,
    more_subscribers_than_submission_entries,
    refusals_in_quick_succession,
);
