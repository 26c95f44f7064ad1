//! `loadgen fanout --protocol ringcast.v1` against a scripted relay that speaks the
//! envelope format and makes the faults a real server must not make on its own: an
//! announced gap (legitimate: the run passes), a duplicate and an unannounced skip (each
//! fails `--expect-all`), also with `--trust-envelopes`; and a server that does not select
//! the subprotocol.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util;

use util::raw::{echo_close, read_client_frame, read_request, response, server_frame};
use util::{loadgen, u};

/// What the relay does to the stream, by topic sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Holds back 10..=12 and announces them with a gap.
    Gap,
    /// Sends 20 twice.
    Duplicate,
    /// Holds back 10 without a word.
    Skip,
}

#[derive(Debug)]
struct Relay {
    fault: Fault,
    /// Select ringcast.v1 when offered.
    select: bool,
    subscribers: Mutex<Vec<TcpStream>>,
}

/// Starts a relay on an ephemeral port.
fn relay(fault: Fault, select: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let relay = Arc::new(Relay {
        fault,
        select,
        subscribers: Mutex::new(Vec::new()),
    });
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let relay = Arc::clone(&relay);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            std::thread::spawn(move || serve(s, &relay));
        }
    });
    addr
}

/// The envelope of publication `seq` (text ones carry the payload as a JSON string:
/// loadgen's text stamps are not JSON and need no escaping).
fn envelope(opcode: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    let body = if opcode == 0x1 {
        let text = String::from_utf8_lossy(payload);
        format!("{{\"topic\":\"t0\",\"seq\":{seq},\"data\":\"{text}\"}}").into_bytes()
    } else {
        let mut b = vec![0x01, 2, b't', b'0'];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(payload);
        b
    };
    server_frame(opcode, &body)
}

fn serve(mut s: TcpStream, relay: &Relay) {
    let Some(req) = read_request(&mut s) else {
        return;
    };
    let v1 =
        (relay.select && req.protocol.as_deref() == Some("ringcast.v1")).then_some("ringcast.v1");
    if req.path.starts_with("/sub") {
        // Registered before the 101: loadgen publishes once every handshake completed.
        let clone = s.try_clone().expect("clone");
        relay.subscribers.lock().expect("lock").push(clone);
    }
    if s.write_all(response(&req.key, v1).as_bytes()).is_err() {
        return;
    }
    let mut seq = 0u64;
    while let Some((op, payload)) = read_client_frame(&mut s) {
        match op {
            0x1 | 0x2 if req.path.starts_with("/pub") => {
                seq += 1;
                let mut out = Vec::new();
                match (relay.fault, seq) {
                    (Fault::Gap, 10) => out.extend(server_frame(
                        0x1,
                        br#"{"op":"gap","topic":"t0","from":10,"to":12}"#,
                    )),
                    (Fault::Gap, 11 | 12) | (Fault::Skip, 10) => {}
                    (Fault::Duplicate, 20) => {
                        out.extend(envelope(op, seq, &payload));
                        out.extend(envelope(op, seq, &payload));
                    }
                    _ => out.extend(envelope(op, seq, &payload)),
                }
                if seq % 16 == 0 {
                    out.extend(server_frame(
                        0x1,
                        format!("{{\"op\":\"heartbeat\",\"seq\":{{\"t0\":{seq}}}}}").as_bytes(),
                    ));
                    out.extend(server_frame(0x1, br#"{"op":"news","hello":1}"#));
                }
                for sub in relay.subscribers.lock().expect("lock").iter_mut() {
                    let _ = sub.write_all(&out);
                }
            }
            0x8 => {
                let _guard = relay.subscribers.lock();
                echo_close(&mut s, &payload);
                return;
            }
            _ => {}
        }
    }
}

fn fanout(addr: SocketAddr, extra: &[&str]) -> util::Outcome {
    let url = format!("ws://{addr}");
    let mut args = vec![
        "fanout",
        "--url",
        &url,
        "-n",
        "4",
        "--protocol",
        "ringcast.v1",
        "--rate",
        "100",
        "--duration",
        "0.5s",
        "--warmup",
        "0s",
        "--drain",
        "0.5s",
        "--threads",
        "1",
        "--expect-all",
        "--json",
    ];
    args.extend_from_slice(extra);
    loadgen(&args)
}

#[test]
fn announced_gap_passes_and_is_counted() {
    let out = fanout(relay(Fault::Gap, true), &["--text"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["protocol"], "ringcast.v1");
    let published = u(&r, "published");
    assert!(published >= 20, "published {published}");
    let v1 = &r["v1"];
    assert_eq!(u(v1, "envelopes"), 4 * (published - 3));
    assert_eq!(u(v1, "gap_messages"), 4);
    assert_eq!(u(v1, "announced"), 4 * 3);
    assert_eq!(u(v1, "unannounced"), 0);
    assert_eq!(u(v1, "duplicates"), 0);
    assert!(u(v1, "heartbeats") >= 4);
    assert!(u(v1, "other_ops") >= 4);
    // The payload streams miss the three held back: lost, but announced.
    assert_eq!(u(&r, "lost"), 4 * 3);
    assert_eq!(u(&r, "delivered"), 4 * (published - 3));
    assert_eq!(u(&r, "malformed"), 0);
    assert!(r["lat_us"]["p50"].as_f64().expect("p50") > 0.0);
}

#[test]
fn duplicate_fails_expect_all() {
    let out = fanout(relay(Fault::Duplicate, true), &[]);
    assert_eq!(out.code, Some(3), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r["v1"], "duplicates"), 4);
    assert_eq!(u(&r["v1"], "unannounced"), 0);
    assert_eq!(u(&r, "duplicates"), 4);
    assert!(
        out.stderr.contains("4 duplicate envelopes"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn unannounced_skip_fails_expect_all() {
    let out = fanout(relay(Fault::Skip, true), &[]);
    assert_eq!(out.code, Some(3), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r["v1"], "unannounced"), 4);
    assert_eq!(u(&r["v1"], "seq_holes"), 4);
    assert!(
        out.stderr.contains("4 messages lost without a gap"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn server_without_the_subprotocol_is_a_clear_failure() {
    let out = fanout(relay(Fault::Gap, false), &[]);
    assert_eq!(out.code, Some(1), "stdout: {}", out.stdout);
    assert!(
        out.stderr
            .contains("did not select subprotocol ringcast.v1"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn trusted_envelopes_still_catch_what_the_payload_streams_see() {
    // Binary envelopes stripped unchecked: the announced gap (a text op, checked as
    // always) still excuses what it announced...
    let out = fanout(relay(Fault::Gap, true), &["--trust-envelopes"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["trust_envelopes"], true);
    let published = u(&r, "published");
    assert_eq!(u(&r["v1"], "envelopes"), 4 * (published - 3));
    assert_eq!(u(&r["v1"], "announced"), 4 * 3);
    assert_eq!(u(&r["v1"], "unannounced"), 0);
    assert_eq!(u(&r, "lost"), 4 * 3);
    // ... a silent skip is lost on the payload streams, with no sequence hole seen ...
    let out = fanout(relay(Fault::Skip, true), &["--trust-envelopes"]);
    assert_eq!(out.code, Some(3), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r["v1"], "unannounced"), 4);
    assert_eq!(u(&r["v1"], "seq_holes"), 0);
    assert!(
        out.stderr.contains("4 messages lost without a gap"),
        "stderr: {}",
        out.stderr
    );
    // ... and a duplicate is one on the payload streams.
    let out = fanout(relay(Fault::Duplicate, true), &["--trust-envelopes"]);
    assert_eq!(out.code, Some(3), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r["v1"], "duplicates"), 0);
    assert_eq!(u(&r, "duplicates"), 4);
    assert!(
        out.stderr.contains("4 duplicates"),
        "stderr: {}",
        out.stderr
    );
}
