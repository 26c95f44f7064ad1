//! `ringcast serve --cluster` as an operator runs it: two processes through a real
//! `nats-server -js`, a WebSocket publisher on one and a subscriber on the other, the
//! cluster's figures in `/metrics`, on each backend and with one node on each; a bad
//! `--cluster` URL refused, naming the key.

use crate::binary;
use crate::cluster_util;
use crate::fanout_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use binary::{Running, ringcast};
use cluster_util::{Nats, have};
use fanout_util::{TIMEOUT, connect, next_data, send_text};
use tungstenite::Message;

fn serve(url: &str, id: Option<&str>, backend: &str) -> Running {
    let mut args = format!(
        "serve --listen 127.0.0.1:0 --threads 1 --no-pin --backend {backend} --cluster {url}"
    );
    if let Some(id) = id {
        args += &format!(" --node-id {id}");
    }
    let mut r = Running::start(ringcast(&args));
    if !r.log.iter().any(|l| l.contains("cluster: connected")) {
        r.wait_for(|l| l.contains("cluster: connected"));
    }
    r
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Polls `/metrics` of `addr` until it has `line`.
fn wait_metric(addr: SocketAddr, line: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = get(addr, "/metrics");
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {line:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_processes_through_nats() {
    if !have("nats-server", "two_processes_through_nats") {
        return;
    }
    let uring = !ringcast::reactor::skip_without_uring("two_processes_through_nats (io_uring)");
    let mut pairs = vec![("epoll", "epoll")];
    if uring {
        pairs.extend([("uring", "uring"), ("epoll", "uring")]);
    }
    for (a, b) in pairs {
        two_processes(a, b);
    }
}

/// Node A on backend `a` publishes, node B on backend `b` delivers.
fn two_processes(a: &str, b: &str) {
    let nats = Nats::start();
    let a = serve(&nats.url(), Some("bin-a"), a);
    let b = serve(&nats.url(), None, b);
    // A random node id, logged.
    assert!(
        b.log.iter().any(|l| l.contains("node id ")),
        "{}",
        b.log.join("\n")
    );
    let mut sub = connect(b.addr, "/sub/t");
    wait_metric(b.addr, "ringcast_cluster_subscriptions 1");
    let mut publisher = connect(a.addr, "/pub/t");
    send_text(&mut publisher, "across");
    assert_eq!(next_data(&mut sub), Message::text("across"));
    wait_metric(
        a.addr,
        "ringcast_cluster_messages_total{direction=\"out\",origin=\"own\"} 1",
    );
    let text = wait_metric(
        b.addr,
        "ringcast_cluster_messages_total{direction=\"in\",origin=\"remote\"} 1",
    );
    assert!(text.contains("ringcast_cluster_connected 1"), "{text}");
    let stats = get(b.addr, "/stats");
    assert!(stats.contains("\"cluster\":{"), "{stats}");
}

#[test]
fn a_bad_cluster_url_is_refused() {
    for (args, key) in [
        ("--cluster nats:/h", "cluster"),
        ("--cluster http://h:1", "cluster"),
        ("--cluster nats://h:1 --node-id a/b", "node-id"),
        (
            "--cluster nats://h:1 --cluster-prefix a..",
            "cluster-prefix",
        ),
    ] {
        let out = ringcast(&format!("serve --listen 127.0.0.1:0 {args}"))
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("key `{key}`")), "{args}: {err}");
    }
}
