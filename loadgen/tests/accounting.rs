//! Loss, reordering and duplicate accounting end to end, against a scripted fake server
//! whose subscribers receive a fixed, faulty sequence; also checks that loadgen answers a
//! ping with a masked pong carrying the same payload.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::util;

use util::raw::{echo_close, read_client_frame, read_request, response};

/// A binary server frame with a loadgen stamp (publisher 0).
fn stamped(seq: u64) -> Vec<u8> {
    let mut payload = vec![0u8; 64];
    payload[..8].copy_from_slice(&0u64.to_le_bytes());
    payload[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut f = vec![0x82, 64];
    f.extend(payload);
    f
}

fn serve(mut s: TcpStream, pongs: Arc<AtomicUsize>) {
    let Some(req) = read_request(&mut s) else {
        return;
    };
    if s.write_all(response(&req.key, None).as_bytes()).is_err() {
        return;
    }
    if req.path.starts_with("/sub") {
        // 0, 2, 1 (late), 1 (again), then a ping.
        let mut out = Vec::new();
        for seq in [0, 2, 1, 1] {
            out.extend(stamped(seq));
        }
        out.extend([0x89, 3, b'a', b'b', b'c']);
        let _ = s.write_all(&out);
    }
    while let Some((op, payload)) = read_client_frame(&mut s) {
        match op {
            0xA if payload == b"abc" => {
                pongs.fetch_add(1, Ordering::Relaxed);
            }
            0x8 => {
                echo_close(&mut s, &payload);
                return;
            }
            _ => {}
        }
    }
}

#[test]
fn faulty_stream_is_counted_and_fails_expect_all() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pongs = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&pongs);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let p = Arc::clone(&p);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            std::thread::spawn(move || serve(s, p));
        }
    });
    let url = format!("ws://{addr}");
    let out = util::loadgen(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "4",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--drain",
        "0.3s",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(3), "stderr: {}", out.stderr);
    let r = out.json();
    let published = util::u(&r, "published");
    assert!(published > 10, "published {published}");
    assert_eq!(util::u(&r, "delivered"), 4 * 4);
    assert_eq!(util::u(&r, "out_of_order"), 4);
    assert_eq!(util::u(&r, "duplicates"), 4);
    // Each subscriber has 0, 1, 2: the rest of the stream is the missing tail.
    assert_eq!(util::u(&r, "lost"), 4 * (published - 3));
    assert_eq!(util::u(&r, "expected"), 4 * published);
    assert_eq!(r["ok"], false);
    assert!(
        out.stderr.contains("expectation failed"),
        "stderr: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("out of order"),
        "stderr: {}",
        out.stderr
    );
    assert_eq!(
        pongs.load(Ordering::Relaxed),
        4,
        "every subscriber answered the ping"
    );
}
