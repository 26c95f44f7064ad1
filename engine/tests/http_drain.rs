//! Readiness through a drain, on the real binary: on SIGTERM `/readyz` turns 503 (and
//! `ringcast_ready` 0) while health stays 200 and WebSocket clients still get every
//! message; then every connection is closed with 1001 and the process exits 0 — when the
//! drain delay ends, or at once on a second signal.

use crate::binary;
use crate::util;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use binary::{Running, ringcast};
use ringcast::server::Backend;
use tungstenite::Message;
use util::{Client, HttpResponse, for_each_backend};

for_each_backend!(
    ready_turns_503_while_clients_are_served_then_1001,
    the_drain_ends_by_itself_after_its_delay,
);

type Ws = tungstenite::WebSocket<TcpStream>;

/// `GET path` on a new connection; the answer, read to the server's close.
fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut c = Client::connect_tcp(addr);
    c.write_raw(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    c.read_http_response_or_eof().expect("an answer")
}

fn ws(addr: SocketAddr, path: &str) -> Ws {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tungstenite::client(format!("ws://{addr}{path}"), stream)
        .expect("handshake")
        .0
}

fn start(backend: Backend, drain: &str) -> Running {
    Running::start(ringcast(&format!(
        "serve --listen 127.0.0.1:0 --threads 1 --no-pin --backend {backend} --drain-delay {drain}"
    )))
}

fn signal(server: &Running, sig: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and still owns.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, sig) }, 0);
}

/// A subscriber and a publisher of topic `a`, the subscriber known to be registered.
fn pair(addr: SocketAddr) -> (Ws, Ws) {
    let mut sub = ws(addr, "/sub/a");
    let mut publisher = ws(addr, "/pub/a");
    publisher.send(Message::text("one")).unwrap();
    assert_eq!(sub.read().unwrap(), Message::text("one"));
    (sub, publisher)
}

/// Reads until the close frame, asserts its code is 1001, answers it and closes the TCP
/// connection (so the server need not wait for it).
fn expect_going_away(mut ws: Ws) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
                let _ = ws.flush();
                return;
            }
            Ok(Message::Text(_)) => {}
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
}

fn ready_turns_503_while_clients_are_served_then_1001(backend: Backend) {
    let mut server = start(backend, "60s");
    let addr = server.addr;
    assert_eq!(get(addr, "/readyz").status, 200);
    let (mut sub, mut publisher) = pair(addr);

    signal(&server, libc::SIGTERM);
    server.wait_for(|l| l.contains("draining"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/readyz").status != 503 {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
    }
    // Everything else is served as before: health, metrics, new and old WebSockets.
    assert_eq!(get(addr, "/healthz").status, 200);
    let metrics = get(addr, "/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("\nringcast_ready 0\n"), "{text}");
    let mut late = ws(addr, "/sub/a");
    publisher.send(Message::text("two")).unwrap();
    assert_eq!(sub.read().unwrap(), Message::text("two"));
    assert_eq!(late.read().unwrap(), Message::text("two"));

    // A second signal ends the drain at once.
    signal(&server, libc::SIGTERM);
    for ws in [sub, publisher, late] {
        expect_going_away(ws);
    }
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}");
}

fn the_drain_ends_by_itself_after_its_delay(backend: Backend) {
    let mut server = start(backend, "300ms");
    let (sub, publisher) = pair(server.addr);
    signal(&server, libc::SIGINT);
    expect_going_away(sub);
    expect_going_away(publisher);
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}");
    assert!(
        server.log.iter().any(|l| l.contains("draining")),
        "{:?}",
        server.log
    );
}
