//! Connection limits (`max_conns`, `max_conns_per_ip`, `max_pending_handshakes`) on real
//! sockets: a connection over a limit is answered `503` with `Retry-After: 1` and a reason
//! naming the limit, then closed, and counted; once a connection goes, the next one gets in.

use crate::util;

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use ringcast::server::{Backend, ReactorStats};
use util::{Client, Request, TestServer, for_each_backend, start_server_with};

/// How long a test waits for the server to notice a close.
const SETTLE: Duration = Duration::from_secs(5);

for_each_backend!(
    server_limit_refuses_then_admits,
    per_ip_limit_spares_other_addresses,
    pending_handshake_limit_stops_slow_heads,
);

/// The server's summed counters.
fn totals(server: &TestServer) -> ReactorStats {
    server.stats().expect("in-process server").total()
}

/// Sends an upgrade request on `client` and reads the whole response.
fn request(client: &mut Client) -> util::HttpResponse {
    client.write_raw(&Request::new("/").to_bytes());
    client.read_http_response()
}

/// Asserts `client` was refused with 503, `Retry-After: 1` and `reason`, then closed.
#[track_caller]
fn expect_refused(client: &mut Client, reason: &str) {
    let response = request(client);
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"), "{response:?}");
    let body = String::from_utf8_lossy(&response.body);
    assert_eq!(body.trim_end(), reason);
    client.expect_eof();
}

/// Closes `client` cleanly (close handshake, then TCP close).
fn close(mut client: Client) {
    client.send_close(1000, "");
    client.expect_close(1000);
    drop(client);
}

/// Upgrades a new connection from `connect`, retrying (while the server is still at a limit)
/// until it is accepted or [`SETTLE`] has passed.
#[track_caller]
fn admitted_within(connect: impl Fn() -> Client) -> Client {
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut client = connect();
        let response = client.handshake(&Request::new("/"));
        if response.status == 101 {
            return client;
        }
        assert_eq!(response.status, 503, "{response:?}");
        assert!(Instant::now() < deadline, "still refused after {SETTLE:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn server_limit_refuses_then_admits(backend: Backend) {
    // Two reactors: the limit is the whole server's, whichever reactor a client reaches.
    let server = start_server_with(backend, 2, |b| b.max_conns(Some(3)));
    let mut clients: Vec<Client> = (0..3).map(|_| server.client()).collect();
    for c in &mut clients {
        c.send_text("hi");
        c.expect_text("hi");
    }
    for _ in 0..2 {
        expect_refused(&mut server.tcp(), "server at its connection limit (3)");
    }
    let t = totals(&server);
    assert_eq!(t.refused_conns, 2);
    assert_eq!((t.refused_per_ip, t.refused_handshakes), (0, 0));

    close(clients.pop().expect("three clients"));
    let mut again = admitted_within(|| server.tcp());
    again.send_text("back");
    again.expect_text("back");
    // Full again. A refused client that stays connected is let go within about a second
    // (the refused linger), so refused connections do not hold the table.
    let mut held = server.tcp();
    expect_refused(&mut held, "server at its connection limit (3)");
    let deadline = Instant::now() + SETTLE;
    while totals(&server).connections > 3 {
        assert!(Instant::now() < deadline, "refused connection still held");
        thread::sleep(Duration::from_millis(20));
    }
    for c in &mut clients {
        c.send_text("still");
        c.expect_text("still");
    }
}

fn per_ip_limit_spares_other_addresses(backend: Backend) {
    let server = start_server_with(backend, 2, |b| b.max_conns_per_ip(Some(2)));
    let mut local: Vec<Client> = (0..2).map(|_| server.client()).collect();
    let reason = "too many connections from this address (2)";
    expect_refused(&mut server.tcp(), reason);

    // Another loopback address is counted apart.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let from_other = || Client::connect_tcp_from(server.addr(), other);
    let mut others: Vec<Client> = (0..2).map(|_| admitted_within(from_other)).collect();
    for c in local.iter_mut().chain(&mut others) {
        c.send_text("hi");
        c.expect_text("hi");
    }
    expect_refused(&mut from_other(), reason);
    let t = totals(&server);
    assert_eq!(t.refused_per_ip, 2);
    assert_eq!((t.refused_conns, t.refused_handshakes), (0, 0));

    // One address's close makes room for that address.
    close(local.pop().expect("two clients"));
    let mut again = admitted_within(|| server.tcp());
    again.send_text("back");
    again.expect_text("back");
}

fn pending_handshake_limit_stops_slow_heads(backend: Backend) {
    // One reactor: the limit is per reactor.
    let server = start_server_with(backend, 1, |b| b.max_pending_handshakes(Some(2)));
    // Open connections do not count.
    let mut open = server.client();
    // Two slow heads: connected, nothing sent.
    let mut slow: Vec<Client> = (0..2).map(|_| server.tcp()).collect();
    let reason = "too many handshakes in progress (2)";
    expect_refused(&mut server.tcp(), reason);
    expect_refused(&mut server.tcp(), reason);
    let t = totals(&server);
    assert_eq!(t.refused_handshakes, 2);
    assert_eq!((t.refused_conns, t.refused_per_ip), (0, 0));

    // A slow head that finishes its request frees its place.
    let mut done = slow.pop().expect("two slow heads");
    let response = done.handshake(&Request::new("/"));
    assert_eq!(response.status, 101, "{response:?}");
    let mut next = admitted_within(|| server.tcp());
    for c in [&mut open, &mut done, &mut next] {
        c.send_text("hi");
        c.expect_text("hi");
    }
    // Full again with another slow head; one that leaves frees its place.
    let slow2 = server.tcp();
    expect_refused(&mut server.tcp(), reason);
    drop(slow2);
    let _late = admitted_within(|| server.tcp());
    // Three, and any retry made before the server saw the slow head leave.
    assert!(totals(&server).refused_handshakes >= 3);
}
