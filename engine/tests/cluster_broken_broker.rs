//! A broker that sends what no NATS server sends: a `MSG` announcing a payload larger
//! than any NATS server allows, or a protocol line that never ends, is a broken stream.
//! The node drops the connection and reconnects; it does not allocate what the line
//! claims (a 100 GB buffer would abort the process) nor buffer the line without end. The "broker" is a TCP listener in the test that speaks just enough
//! of the protocol (`INFO`, `PONG`) to get a node past its greeting. Both backends, as
//! every socket test.

use crate::cluster_util;
use crate::fanout_util;
use crate::util;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cluster_util::{node, wait_cluster};
use fanout_util::TIMEOUT;
use ringcast::server::Backend;

/// The next connection to `listener`, within [`TIMEOUT`].
fn accept(listener: &TcpListener) -> TcpStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the node did not connect");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Greets a node as a JetStream server would, up to its `PING`'s `PONG`, and waits for
/// its first subscription: the node is past its greeting then (data right behind the
/// `PONG` would fail the greeting instead).
fn greet(s: &mut TcpStream) -> BufReader<TcpStream> {
    s.write_all(b"INFO {\"server_id\":\"fake\",\"jetstream\":true,\"headers\":true}\r\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the node hung up");
        if line.trim_end() == "PING" {
            break;
        }
    }
    s.write_all(b"PONG\r\n").unwrap();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the node hung up");
        if line.starts_with("SUB ") {
            return r;
        }
    }
}

util::for_each_backend!(
    an_oversized_message_line_drops_the_connection_not_the_process,
    an_endless_protocol_line_drops_the_connection_not_the_memory,
);

/// A node on a fake broker: once the node is past its greeting, `break_it` sends it
/// something no NATS server sends; the node must hang up and come back.
fn reconnects_after(
    backend: Backend,
    id: &str,
    break_it: impl FnOnce(&mut TcpStream, &mut BufReader<TcpStream>),
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    let n = node(backend, &url, id);
    let mut first = accept(&listener);
    let mut r = greet(&mut first);
    break_it(&mut first, &mut r);
    let mut second = accept(&listener);
    let _r = greet(&mut second);
    wait_cluster(&n, "the reconnection", |s| s.reconnects >= 1 && s.connected);
}

fn an_oversized_message_line_drops_the_connection_not_the_process(backend: Backend) {
    reconnects_after(backend, "big", |first, r| {
        // 100 GB claimed, nothing sent.
        first
            .write_all(b"MSG ringcast.t 1 100000000000\r\n")
            .unwrap();
        // The node hangs up on it (what it sent before is read and ignored).
        let mut sink = Vec::new();
        loop {
            sink.clear();
            match r.read_until(b'\n', &mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the node kept the connection: {e}"),
            }
        }
    });
}

fn an_endless_protocol_line_drops_the_connection_not_the_memory(backend: Backend) {
    reconnects_after(backend, "long", |first, _| {
        // A line that never ends: 1 MiB of it; the node hangs up long before.
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..16 {
            if first.write_all(&chunk).is_err() {
                break;
            }
        }
    });
}
