//! Error paths: each says what went wrong and exits non-zero.

use crate::util;

use util::{echo_server, loadgen};

#[test]
fn unreachable_server() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let out = loadgen(&["fanout", "--url", &url, "-n", "5", "--duration", "1s"]);
    assert_eq!(out.code, Some(1), "stdout: {}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: connection refused — is the server running?"
        )),
        "stderr: {}",
        out.stderr
    );
    // With --json the failure is also one JSON object.
    let out = loadgen(&["connect", "--url", &url, "-n", "5", "--json"]);
    assert_eq!(out.code, Some(1));
    let r = out.json();
    assert_eq!(r["scenario"], "connect");
    assert!(
        r["error"]
            .as_str()
            .expect("error")
            .contains("connection refused")
    );
}

#[test]
fn non_loopback_target_is_refused() {
    for url in ["ws://192.0.2.1:80", "ws://example.com:8080/"] {
        let out = loadgen(&["fanout", "--url", url, "-n", "1"]);
        assert_eq!(out.code, Some(1), "{url}");
        assert!(
            out.stderr.contains("only targets loopback"),
            "stderr: {}",
            out.stderr
        );
    }
    let out = loadgen(&["echo", "--url", "wss://127.0.0.1:443"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("ws://"), "stderr: {}", out.stderr);
}

#[test]
fn refused_handshake_quotes_status_and_body() {
    // The echo server has no /sub endpoint.
    let server = echo_server();
    let url = format!("ws://{}", server.local_addr());
    let out = loadgen(&["fanout", "--url", &url, "-n", "3", "--duration", "1s"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("handshake refused: HTTP/1.1 404"),
        "stderr: {}",
        out.stderr
    );
    server.shutdown();
}

#[test]
fn bad_flags_name_the_flag() {
    let out = loadgen(&["fanout", "--size", "8"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--size"), "stderr: {}", out.stderr);
    let out = loadgen(&["fanout", "--rate", "lots"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--rate"), "stderr: {}", out.stderr);
    let out = loadgen(&["fanout", "--topics", "3", "--publishers", "2"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("--publishers"),
        "stderr: {}",
        out.stderr
    );
    let out = loadgen(&["fanout", "--trust-envelopes"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("--trust-envelopes needs --protocol ringcast.v1"),
        "stderr: {}",
        out.stderr
    );
    let out = loadgen(&["resume", "--rejoin-elsewhere"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("--rejoin-elsewhere needs at least two --url"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn open_files_limit_is_explained() {
    let server = util::broadcast_server();
    let url = format!("ws://{}", server.local_addr());
    // `ulimit -n` in sh lowers both limits, so loadgen cannot raise its own.
    let script = format!(
        "ulimit -n 150 && exec '{}' connect --url {url} -n 400 --workers 0",
        env!("CARGO_BIN_EXE_loadgen")
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    // Some sockets do open; then the limit is hit and explained.
    assert!(
        stderr.contains("hit the open-files limit (ulimit -n = 150) at")
            && stderr.contains("use --workers or fewer connections"),
        "stderr: {stderr}"
    );
    server.shutdown();
}

#[test]
fn the_lag_log_needs_every_connection_here() {
    let out = loadgen(&[
        "fanout",
        "--url",
        "ws://127.0.0.1:9",
        "-n",
        "4",
        "--workers",
        "2",
        "--lag-log",
        "/nonexistent/lag.csv",
    ]);
    assert_eq!(out.code, Some(1), "stdout: {}", out.stdout);
    assert!(
        out.stderr
            .contains("--lag-log needs every connection in this process, not in 2 workers"),
        "stderr: {}",
        out.stderr
    );
}
