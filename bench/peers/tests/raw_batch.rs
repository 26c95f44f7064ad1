//! `raw-batch` in both write modes, through real sockets: every subscriber gets every
//! publication whole and in order, including one that reads nothing until publishing has
//! ended (its socket fills, so its writes stop short and resume on the writable edge).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::thread;
use std::time::Duration;

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Publications, and the largest payload (sizes vary up to it): ~24 MB in all, more than
/// a stalled subscriber's socket buffers take.
const MESSAGES: u64 = 3000;
const MAX_SIZE: u64 = 16_000;
const READERS: usize = 8;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `raw-batch --sends MODE` on a free port; `None` when io_uring is unavailable
/// outside CI (a skip; under `CI=true` it fails instead).
fn start(mode: &str) -> Option<(Server, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raw-batch"))
        .args(["--sends", mode, "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start raw-batch");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let Some(addr) = first.strip_prefix("listening on ws://") else {
        let _ = child.wait();
        let why: Vec<String> = std::iter::once(first)
            .chain(lines.map_while(Result::ok))
            .collect();
        assert!(
            mode == "uring" && std::env::var("CI").as_deref() != Ok("true"),
            "raw-batch --sends {mode} did not start: {why:?}"
        );
        eprintln!("SKIPPED raw-batch --sends uring: {why:?}");
        return None;
    };
    let addr = addr.to_owned();
    drain(lines);
    Some((Server(child), addr))
}

/// Keeps reading the server's stderr so that it never blocks on a full pipe.
fn drain(lines: std::io::Lines<BufReader<ChildStderr>>) {
    thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
}

fn connect(addr: &str, path: &str) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let (ws, _) = tungstenite::connect(format!("ws://{addr}{path}")).expect("connect");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
    }
    ws
}

/// Publication `seq`: its number, then bytes that depend on it and their position.
fn payload(seq: u64) -> Vec<u8> {
    let len = 8 + (seq * 7919) % MAX_SIZE;
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((8..len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// Reads every publication, checking each against [`payload`].
fn expect_all(ws: &mut WebSocket<MaybeTlsStream<TcpStream>>) {
    let mut seq = 0;
    while seq < MESSAGES {
        match ws.read().expect("read") {
            Message::Binary(b) => {
                let want = payload(seq);
                assert_eq!(b.len(), want.len(), "size of message {seq}");
                assert!(*b == want, "bytes of message {seq}");
                seq += 1;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("message {seq}: unexpected {other:?}"),
        }
    }
}

fn every_subscriber_gets_everything(mode: &str) {
    let Some((_server, addr)) = start(mode) else {
        return;
    };
    // The 101 answer comes once the server has registered the subscriber: connected
    // subscribers see every publication from the first.
    let readers: Vec<_> = (0..READERS).map(|_| connect(&addr, "/sub")).collect();
    let mut stalled = connect(&addr, "/sub");
    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut ws| thread::spawn(move || expect_all(&mut ws)))
        .collect();
    let mut publisher = connect(&addr, "/pub");
    for seq in 0..MESSAGES {
        publisher
            .send(Message::binary(payload(seq)))
            .expect("publish");
    }
    for r in readers {
        r.join().expect("a subscriber's check failed");
    }
    expect_all(&mut stalled);
}

#[test]
fn epoll_writes_deliver_everything() {
    every_subscriber_gets_everything("epoll");
}

#[test]
fn io_uring_sends_deliver_everything() {
    every_subscriber_gets_everything("uring");
}
