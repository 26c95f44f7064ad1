//! `loadgen echo` and `loadgen connect` against in-process ringcast servers.

use crate::util;

use util::{broadcast_server, echo_server, loadgen, u, url};

#[test]
fn echo_round_trips() {
    let server = echo_server();
    let url = url(server.local_addr());
    let out = loadgen(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "10",
        "--size",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["scenario"], "echo");
    assert!(u(&r, "sent") > 100);
    assert_eq!(u(&r, "sent"), u(&r, "received"));
    assert_eq!(u(&r, "lost"), 0);
    assert!(r["round_trips_per_sec"].as_f64().expect("rate") > 100.0);
    assert!(r["lat_us"]["p50"].as_f64().expect("p50") > 0.0);
    server.shutdown();
}

#[test]
fn echo_paced_text_on_echo_path() {
    let server = echo_server();
    let url = format!("{}/echo", url(server.local_addr()));
    let out = loadgen(&[
        "echo",
        "--url",
        &url,
        "--path",
        "",
        "-n",
        "5",
        "--rate",
        "500",
        "--text",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    let sent = u(&r, "sent");
    assert!(
        (400..=600).contains(&sent),
        "paced at 500/s for 1 s: {sent}"
    );
    assert_eq!(u(&r, "received"), sent);
    server.shutdown();
}

#[test]
fn connect_holds_and_measures_server_memory() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    // The server runs in this test process, so its pid is ours.
    let pid = std::process::id().to_string();
    let out = loadgen(&[
        "connect",
        "--url",
        &url,
        "--connections",
        "300",
        "--hold",
        "0.3s",
        "--server-pid",
        &pid,
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["scenario"], "connect");
    assert_eq!(u(&r, "connected"), 300);
    assert_eq!(u(&r, "peak_concurrent"), 300);
    assert_eq!(u(&r, "open_after_hold"), 300);
    assert!(r["conn_per_sec"].as_f64().expect("rate") > 0.0);
    assert!(u(&r, "server_rss_before_kib") > 0);
    assert!(r["server_bytes_per_conn"].is_number());
    server.shutdown();
}
