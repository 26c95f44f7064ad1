//! Drain under load, on the real binary with two reactors: SIGTERM while a WebSocket
//! publisher floods a topic with many subscribers.
//!
//! What the server promises, and what is checked:
//! - readiness flips first: `/readyz` answers 503 while the publisher is still publishing,
//!   and publications keep being accepted and delivered through the drain delay;
//! - when the delay ends, the server stops taking publications (whatever a publisher sends
//!   from then on is discarded, on every reactor at once), delivers every publication it
//!   took, then closes each connection with 1001: so every subscriber gets the same
//!   messages, `1..=M` in order, none missing or repeated, with `M` past everything any
//!   subscriber had when `/readyz` turned 503, then its 1001 — within the close timeout.
//!   (What the publisher wrote but the server had not read yet, in socket buffers or
//!   held back by congested inboxes, is not taken: `M` is what the server accepted.);
//! - the process exits 0.
//!
//! The clients are raw sockets (8-byte binary payloads: the sequence number), so that the
//! test harness, built in debug like the server under `cargo test`, keeps up. The rate the
//! run reached (deliveries per second) is printed; `RINGCAST_TEST_BIN=target/release/ringcast`
//! runs the same test against a release server.

use crate::binary;
use crate::util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use binary::{Running, ringcast};
use ringcast::server::Backend;
use util::{Client, HttpResponse, for_each_backend};

for_each_backend!(sigterm_while_flooding_delivers_every_accepted_message_then_1001);

/// Subscribers of the flooded topic (spread over both reactors by the kernel).
const SUBSCRIBERS: usize = 16;
/// Most messages the publisher sends: far more than it can send before the drain ends.
const MAX_MESSAGES: u64 = 50_000_000;
/// `--drain-delay`: how long publications go on being served after SIGTERM (long enough
/// for the test to see `/readyz` turn 503 first on a loaded machine).
const DRAIN_DELAY: Duration = Duration::from_secs(2);
/// `--close-timeout`, the bound on the last deliveries and the 1001 after the delay.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A generous bound on every wait of the test (a shared 2-core machine).
const PATIENCE: Duration = Duration::from_secs(30);

/// `GET path` on a new connection; the answer, read to the server's close.
fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut c = Client::connect_tcp(addr);
    c.write_raw(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    c.read_http_response_or_eof().expect("an answer")
}

/// A WebSocket connection on `path` after its `101`, and the bytes read past the head.
fn upgrade(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut chunk).expect("read the handshake response");
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    (s, buf.split_off(end))
}

/// A masked close frame with `code` (what a client answers a server's close with).
fn close_frame(code: u16) -> [u8; 8] {
    let key = [1, 2, 3, 4];
    let c = code.to_be_bytes();
    [0x88, 0x82, 1, 2, 3, 4, c[0] ^ key[0], c[1] ^ key[1]]
}

/// What one subscriber saw.
#[derive(Debug)]
struct Seen {
    /// The last sequence number (every one before it came once, in order).
    last: u64,
    /// The close code, and when it came.
    close: Option<(u16, Instant)>,
    /// When the first and last messages came.
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// The first broken expectation.
    problem: Option<String>,
}

/// Reads server frames until the close: each binary message must be the next sequence
/// number; `progress` follows the last one.
fn subscribe(mut s: TcpStream, mut buf: Vec<u8>, progress: Arc<AtomicU64>) -> Seen {
    let mut seen = Seen {
        last: 0,
        close: None,
        first_at: None,
        last_at: None,
        problem: None,
    };
    let mut at = 0;
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        // Every whole frame in `buf[at..]`.
        loop {
            let b = &buf[at..];
            if b.len() < 2 {
                break;
            }
            let (len, head) = match b[1] {
                126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
                126 | 127 => break,
                n if n & 0x80 != 0 => {
                    seen.problem = Some("a masked frame from the server".into());
                    return seen;
                }
                n => (u64::from(n), 2),
            };
            let Ok(len) = usize::try_from(len) else {
                seen.problem = Some(format!("a frame of {len} bytes"));
                return seen;
            };
            if b.len() < head + len {
                break;
            }
            let payload = &b[head..head + len];
            match b[0] {
                0x82 if len == 8 => {
                    let seq = u64::from_be_bytes(payload.try_into().unwrap());
                    if seq != seen.last + 1 {
                        seen.problem = Some(format!("got {seq} after {}", seen.last));
                        return seen;
                    }
                    seen.last = seq;
                    let now = Instant::now();
                    seen.first_at.get_or_insert(now);
                    seen.last_at = Some(now);
                }
                0x88 if len >= 2 => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    seen.close = Some((code, Instant::now()));
                    progress.store(seen.last, Ordering::Relaxed);
                    let _ = s.write_all(&close_frame(code));
                    let _ = s.shutdown(Shutdown::Write);
                    return seen;
                }
                other => {
                    seen.problem = Some(format!("an unexpected frame {other:#04x} of {len} B"));
                    return seen;
                }
            }
            at += head + len;
        }
        buf.drain(..at);
        at = 0;
        progress.store(seen.last, Ordering::Relaxed);
        match s.read(&mut chunk) {
            Ok(0) => {
                seen.problem = Some(format!("EOF before a close, after {}", seen.last));
                return seen;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                seen.problem = Some(format!("read after {}: {e}", seen.last));
                return seen;
            }
        }
    }
}

/// The publisher: sends `1, 2, 3…` as masked 8-byte binary messages, in batches, until
/// `stop` (its reader saw the server's close) or an error; `sent` follows what it wrote.
fn publish(mut s: TcpStream, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> u64 {
    const BATCH: u64 = 512;
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = Vec::with_capacity(BATCH as usize * 14);
    let mut seq = 0;
    while seq < MAX_MESSAGES && !stop.load(Ordering::Relaxed) {
        frame.clear();
        for _ in 0..BATCH {
            seq += 1;
            frame.extend_from_slice(&[0x82, 0x88]);
            frame.extend_from_slice(&key);
            let p = seq.to_be_bytes();
            frame.extend((0..8).map(|i| p[i] ^ key[i % 4]));
        }
        if s.write_all(&frame).is_err() {
            // The server dropped the connection: this batch may be partly written.
            return seq;
        }
        sent.store(seq, Ordering::Relaxed);
    }
    let _ = s.write_all(&close_frame(1001));
    seq
}

/// Reads the publisher's socket until the server's close frame (or EOF); then tells the
/// publisher to stop.
fn watch_publisher(mut s: TcpStream, mut buf: Vec<u8>, stop: Arc<AtomicBool>) -> Option<u16> {
    let mut chunk = [0u8; 1024];
    let code = loop {
        if buf.len() >= 4 && buf[0] == 0x88 {
            break Some(u16::from_be_bytes([buf[2], buf[3]]));
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    stop.store(true, Ordering::Relaxed);
    code
}

/// Polls `cond` (every few milliseconds) until it holds or `PATIENCE` passes.
fn poll(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn sigterm_while_flooding_delivers_every_accepted_message_then_1001(backend: Backend) {
    let mut server = Running::start(ringcast(&format!(
        "serve --listen 127.0.0.1:0 --threads 2 --no-pin --backend {backend} \
         --drain-delay {}s --close-timeout {}s --max-lag 256MiB",
        DRAIN_DELAY.as_secs(),
        CLOSE_TIMEOUT.as_secs()
    )));
    let addr = server.addr;
    assert_eq!(get(addr, "/readyz").status, 200);

    // Every subscriber is registered once its 101 is read.
    let progress: Vec<Arc<AtomicU64>> = (0..SUBSCRIBERS)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let subs: Vec<JoinHandle<Seen>> = progress
        .iter()
        .map(|p| {
            let (s, rest) = upgrade(addr, "/sub/flood");
            let p = Arc::clone(p);
            thread::spawn(move || subscribe(s, rest, p))
        })
        .collect();
    let (ps, rest) = upgrade(addr, "/pub/flood");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (r, stop) = (ps.try_clone().unwrap(), Arc::clone(&stop));
        thread::spawn(move || watch_publisher(r, rest, stop))
    };
    let publisher = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || publish(ps, stop, sent))
    };
    let slowest = || progress.iter().map(|p| p.load(Ordering::Relaxed)).min();
    let fastest = || progress.iter().map(|p| p.load(Ordering::Relaxed)).max();

    // Under load: every subscriber has a good share of messages.
    poll("every subscriber to get 20 000 messages", || {
        slowest() >= Some(20_000)
    });
    let t_term = Instant::now();
    let at_term = sent.load(Ordering::Relaxed);
    // SAFETY: kill(2) on the pid of a child this test spawned and still owns.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) }, 0);

    // Readiness flips first, while the publisher is still being served.
    poll("/readyz to answer 503", || {
        get(addr, "/readyz").status == 503
    });
    // What the publisher wrote may wait in socket buffers: what the server took is what
    // reached a subscriber.
    let at_503 = fastest().unwrap_or(0);
    let sent_503 = sent.load(Ordering::Relaxed);
    let t_503 = t_term.elapsed();
    assert!(
        !stop.load(Ordering::Relaxed),
        "the publisher was closed before readiness flipped"
    );
    poll("deliveries to go on after /readyz turned 503", || {
        slowest() > Some(at_503)
    });

    let publisher_close = watcher.join().unwrap();
    let published = publisher.join().unwrap();
    let seen: Vec<Seen> = subs.into_iter().map(|h| h.join().unwrap()).collect();
    let status = server.wait_exit();
    let drained = t_term.elapsed();

    for (i, s) in seen.iter().enumerate() {
        assert!(s.problem.is_none(), "subscriber {i}: {s:?}");
    }
    let accepted = seen[0].last;
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            s.last, accepted,
            "subscriber {i} got 1..={} but subscriber 0 got 1..={accepted}: {seen:?}",
            s.last
        );
        let (code, at) = s.close.expect("a close");
        assert_eq!(code, 1001, "subscriber {i}");
        // The delay and the close timeout, with room for a loaded machine.
        let bound = DRAIN_DELAY + CLOSE_TIMEOUT + Duration::from_secs(5);
        assert!(
            at - t_term < bound,
            "subscriber {i}: 1001 came {:?} after SIGTERM",
            at - t_term
        );
    }
    assert!(
        accepted >= at_503,
        "delivered before /readyz turned 503: {at_503}, in all: {accepted}"
    );
    assert!(accepted <= published, "{accepted} > {published}");
    assert_eq!(publisher_close, Some(1001), "the publisher's close");
    assert!(status.success(), "exit status {status}");

    let first = seen.iter().filter_map(|s| s.first_at).min().unwrap();
    let last = seen.iter().filter_map(|s| s.last_at).max().unwrap();
    let secs = (last - first).as_secs_f64();
    let deliveries = accepted * SUBSCRIBERS as u64;
    println!(
        "drain under load ({backend}): {deliveries} deliveries ({accepted} messages × \
         {SUBSCRIBERS} subscribers) in {secs:.2} s = {:.0} deliveries/s; SIGTERM at \
         {at_term} published, /readyz 503 after {t_503:?} at {at_503} delivered, {sent_503} sent; publisher \
         sent {published}, {} never taken; exited {drained:?} after SIGTERM",
        deliveries as f64 / secs,
        published - accepted,
    );
}
