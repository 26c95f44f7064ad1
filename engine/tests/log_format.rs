//! Logs fit for operators: `--log-format json` writes one JSON object per line, text logs
//! carry no colour codes when stderr is not a terminal, and the events an operator greps
//! for carry their facts as fields (reactor, conn, peer, path, status, reason).

use crate::binary;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use binary::{Running, ringcast};

/// One server that refuses a bad path (404) and, over `--max-conns 1`, a second
/// connection (503).
fn server(format: &str) -> Running {
    let mut cmd = ringcast(&format!(
        "serve --log-format {format} --listen 127.0.0.1:0 --threads 1 --no-pin \
         --backend epoll --max-conns 1 --close-timeout 30s"
    ));
    cmd.env("RUST_LOG", "ringcast=debug");
    Running::start(cmd)
}

/// Sends an upgrade request for `path`; returns the connection (held open, so it keeps
/// its place under `--max-conns`) and the status line.
fn upgrade(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("status line");
    (s, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn json_lines_parse_and_carry_the_fields() {
    let mut server = server("json");
    let (_held, status) = upgrade(server.addr, "/nope");
    assert_eq!(status, "HTTP/1.1 404");
    let line = server.wait_for(|l| l.contains("handshake refused"));
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["level"], "DEBUG", "{line}");
    assert_eq!(event["message"], "handshake refused", "{line}");
    assert_eq!(event["path"], "/nope", "{line}");
    assert_eq!(event["status"], 404, "{line}");
    assert!(event["conn"].is_u64(), "{line}");
    assert!(event["reason"].is_string(), "{line}");
    assert_eq!(event["span"]["reactor"], 0, "{line}");

    let (_refused, status) = upgrade(server.addr, "/sub");
    assert_eq!(status, "HTTP/1.1 503");
    let line = server.wait_for(|l| l.contains("connection refused"));
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["peer"], "127.0.0.1", "{line}");
    assert_eq!(event["status"], 503, "{line}");
    assert_eq!(
        event["reason"], "server at its connection limit (1)",
        "{line}"
    );

    for line in &server.log {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn text_lines_have_fields_and_no_colour_codes_on_a_pipe() {
    let mut server = server("text");
    let (_held, status) = upgrade(server.addr, "/nope");
    assert_eq!(status, "HTTP/1.1 404");
    let line = server.wait_for(|l| l.contains("handshake refused"));
    for field in [
        "reactor{reactor=0}",
        "path=\"/nope\"",
        "status=404",
        "conn=",
    ] {
        assert!(line.contains(field), "no {field} in {line}");
    }
    let (_refused, _) = upgrade(server.addr, "/sub");
    let line = server.wait_for(|l| l.contains("connection refused"));
    assert!(line.contains("peer=127.0.0.1 status=503"), "{line}");
    let log = server.log.join("\n");
    assert!(!log.contains('\x1b'), "colour codes on a pipe:\n{log:?}");
}

/// With its stderr gone (the reader of the pipe exited), the server still serves, logs
/// nothing it cannot write, and exits 0 on SIGTERM.
#[test]
fn a_closed_stderr_stops_neither_serving_nor_shutting_down() {
    let mut cmd = ringcast(
        "serve --listen 127.0.0.1:0 --threads 1 --no-pin --backend epoll --drain-delay 100ms",
    );
    cmd.env("RUST_LOG", "ringcast=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ringcast");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let banner = loop {
        let line = lines.next().expect("a startup line").expect("read stderr");
        if line.contains("listening on ws://") {
            break line;
        }
    };
    drop(lines);
    let addr: SocketAddr = banner.split("ws://").nth(1).unwrap()[..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Each of these makes the reactor log (accepted, refused) to the closed pipe.
    for _ in 0..2 {
        let (_conn, status) = upgrade(addr, "/nope");
        assert_eq!(status, "HTTP/1.1 404");
    }
    // SAFETY: kill(2) on the pid of a child this test spawned and still owns.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
