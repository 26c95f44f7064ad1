//! Plain HTTP on the WebSocket listener, on real sockets: health and readiness, the
//! browser client and demo page, `/metrics` scraped and parsed as Prometheus would with
//! figures that match what the clients did, `/stats`, the metrics token, and the edge cases
//! (HEAD, other methods, absent paths, a body on GET, oversized and slow heads). Every
//! answer closes its connection.

use crate::util;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringcast::server::{Backend, Broadcast, HttpEndpoints, ReactorStats, Stats};
use util::{Client, HttpResponse, Request, TestServer, for_each_backend, start_server_with};

for_each_backend!(
    health_ready_and_the_client_script,
    edge_cases,
    slow_head_is_dropped_at_the_handshake_timeout,
    metrics_match_what_the_clients_did,
    metrics_token_and_metrics_off,
    demo_page_with_ui,
);

/// How long a test waits for the counters to settle after the clients' last step.
const SETTLE: Duration = Duration::from_secs(10);

/// Sends `raw` on a new connection and reads the response up to the server's close: every
/// plain answer ends its connection.
fn send(server: &TestServer, raw: &[u8]) -> HttpResponse {
    let mut client = Client::connect_tcp(server.addr());
    client.write_raw(raw);
    client
        .read_http_response_or_eof()
        .expect("an HTTP response before the close")
}

/// `METHOD PATH` with a Host header and nothing else.
fn request(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

fn get(server: &TestServer, path: &str) -> HttpResponse {
    send(server, &request("GET", path))
}

fn body(r: &HttpResponse) -> &str {
    std::str::from_utf8(&r.body).expect("UTF-8 body")
}

/// The server's counters summed, once `done` holds for them (or the deadline passes).
#[track_caller]
fn settled(server: &TestServer, done: impl Fn(&ReactorStats) -> bool) -> Stats {
    let deadline = Instant::now() + SETTLE;
    loop {
        let stats = server.stats().expect("in-process server");
        if done(&stats.total()) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "counters never settled: {:?}",
            stats.total()
        );
        std::thread::yield_now();
    }
}

fn health_ready_and_the_client_script(backend: Backend) {
    let server = start_server_with(backend, 1, |b| b);
    let health = get(&server, "/healthz");
    assert_eq!((health.status, body(&health)), (200, "ok\n"), "{health:?}");
    assert_eq!(health.header("connection"), Some("close"));
    assert_eq!(health.header("cache-control"), Some("no-store"));
    let ready = get(&server, "/readyz");
    assert_eq!((ready.status, body(&ready)), (200, "ready\n"));
    // HTTP/1.0 without Host, as some health checkers send it.
    let old = send(&server, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(old.status, 200);

    let js = get(&server, "/ringcast.js");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let file = include_bytes!("../src/server/web/ringcast.js");
    assert_eq!(js.body, file);
    assert_eq!(js.header("content-length"), Some(&*file.len().to_string()));
    // Without --ui, the page is not served.
    assert_eq!(get(&server, "/").status, 404);
}

fn edge_cases(backend: Backend) {
    let server = start_server_with(backend, 1, |b| {
        b.handshake(ringcast::protocol::handshake::HandshakeConfig {
            max_head_len: 1024,
            ..Default::default()
        })
    });
    // HEAD: the headers of GET, Content-Length included, and no body.
    let got = get(&server, "/ringcast.js");
    let head = send(&server, &request("HEAD", "/ringcast.js"));
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD answered with a body");
    assert_eq!(head.headers, got.headers);

    // Other methods: 405 naming the allowed ones.
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = send(
            &server,
            format!("{method} /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{{}}")
                .as_bytes(),
        );
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    // An absent path: 404 naming it.
    let absent = get(&server, "/nope?x=1");
    assert_eq!(absent.status, 404);
    assert_eq!(body(&absent), "no HTTP endpoint at /nope\n");
    // A body on GET is not read as anything: answered, then the connection closes.
    let with_body = send(
        &server,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nGET /nope\r\n",
    );
    assert_eq!((with_body.status, body(&with_body)), (200, "ok\n"));
    let chunked = send(
        &server,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(chunked.status, 200);
    // A head over the limit: 431, plain or upgrade alike.
    let long = format!(
        "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "x".repeat(1100)
    );
    assert_eq!(send(&server, long.as_bytes()).status, 431);
    // Not HTTP at all: 400.
    assert_eq!(send(&server, b"HELLO\r\n\r\n").status, 400);
    // An upgrade still upgrades.
    let mut ws = server.client();
    ws.send_text("still a WebSocket server");
    ws.expect_text("still a WebSocket server");
}

fn slow_head_is_dropped_at_the_handshake_timeout(backend: Backend) {
    let server = start_server_with(backend, 1, |b| {
        b.handshake_timeout(Duration::from_millis(200))
    });
    let mut slow = Client::connect_tcp(server.addr());
    slow.write_raw(b"GET /metrics HTTP/1.1\r\nHost: a\r\n");
    // Dropped without an answer once the timeout passes (the read waits for it).
    assert!(slow.read_http_response_or_eof().is_none());
    settled(&server, |t| t.handshake_timeouts == 1);
}

/// Each sample of `name` in `scrape`, by its labels.
fn samples<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
) -> Vec<(&'a prometheus_parse::Labels, f64)> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| {
            use prometheus_parse::Value::{Counter, Gauge, Untyped};
            let (Counter(v) | Gauge(v) | Untyped(v)) = s.value else {
                panic!("{name}: not a counter or gauge");
            };
            (&s.labels, v)
        })
        .collect()
}

/// The sum of `name` over the samples whose labels include `with`.
fn sum(scrape: &prometheus_parse::Scrape, name: &str, with: &[(&str, &str)]) -> f64 {
    let found = samples(scrape, name);
    assert!(!found.is_empty(), "no {name} in the scrape");
    found
        .iter()
        .filter(|(labels, _)| with.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .map(|(_, v)| v)
        .sum()
}

fn metrics_match_what_the_clients_did(backend: Backend) {
    const SUBSCRIBERS: u64 = 3;
    const MESSAGES: u64 = 5;
    let server = start_server_with(backend, 2, |b| b.handler(Broadcast::default()));
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| server.client_at("/sub/t"))
        .collect();
    let mut publisher = server.client_at("/pub/t");
    // Refusals, one of each kind, each answered and closed.
    let refused = [
        (Request::new("/nope").to_bytes(), 404),
        (
            Request::new("/sub/t")
                .header("Sec-WebSocket-Version", "12")
                .to_bytes(),
            426,
        ),
        (
            Request::new("/sub/t")
                .header("X-Pad", &"x".repeat(9000))
                .to_bytes(),
            431,
        ),
    ];
    for (raw, status) in &refused {
        assert_eq!(send(&server, raw).status, *status);
    }
    // A control message from each subscriber (acked, though it already has the topic).
    for s in &mut subs {
        s.send_text(r#"{"op":"subscribe","topics":["t"]}"#);
        s.expect_text(r#"{"op":"subscribed","topics":["t"]}"#);
    }
    for i in 0..MESSAGES {
        publisher.send_text(format!("m{i}"));
    }
    for s in &mut subs {
        for i in 0..MESSAGES {
            s.expect_text(format!("m{i}"));
        }
    }
    // Frames written: the 101s, the refusals, the acks and the deliveries.
    let upgrades = SUBSCRIBERS + 1;
    let frames = upgrades + refused.len() as u64 + SUBSCRIBERS + MESSAGES * SUBSCRIBERS;
    let open = upgrades;
    // (`topics` is refreshed by the reactors' timer.)
    settled(&server, |t| {
        t.frames_out == frames
            && t.connections == open
            && t.closing == 0
            && t.subscriptions == SUBSCRIBERS
            && t.topics >= 1
    });

    let metrics = get(&server, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let lines = body(&metrics).lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let n = |name: &str, with: &[(&str, &str)]| sum(&scrape, name, with) as u64;

    let info = samples(&scrape, "ringcast_info");
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].0.get("backend"), Some(backend.name()));
    assert_eq!(n("ringcast_ready", &[]), 1);
    assert_eq!(n("ringcast_connections", &[("state", "open")]), open);
    // The scrape's own connection, being answered.
    assert_eq!(n("ringcast_connections", &[("state", "handshake")]), 1);
    assert_eq!(n("ringcast_connections", &[("state", "closing")]), 0);
    let accepted = upgrades + refused.len() as u64 + 1;
    assert_eq!(n("ringcast_connections_accepted_total", &[]), accepted);
    assert_eq!(n("ringcast_upgrades_total", &[]), upgrades);
    for (status, count) in [("404", 1), ("426", 1), ("431", 1), ("400", 0), ("405", 0)] {
        let got = n("ringcast_handshake_rejections_total", &[("status", status)]);
        assert_eq!(got, count, "rejections with {status}");
    }
    assert_eq!(n("ringcast_subscriptions", &[]), SUBSCRIBERS);
    assert_eq!(
        n("ringcast_messages_received_total", &[]),
        MESSAGES + SUBSCRIBERS
    );
    assert_eq!(n("ringcast_frames_sent_total", &[]), frames);
    // Every reactor takes every publication.
    for (labels, v) in samples(&scrape, "ringcast_publications_total") {
        assert_eq!(v as u64, MESSAGES, "{labels:?}");
    }
    let stats = server.stats().unwrap().total();
    assert!(n("ringcast_sent_bytes_total", &[]) >= MESSAGES * SUBSCRIBERS * 4);
    assert!(n("ringcast_writes_total", &[]) >= upgrades);
    assert_eq!(n("ringcast_slow_consumer_actions_total", &[]), 0);
    assert_eq!(
        n("ringcast_v1_resumes_total", &[]),
        0,
        "plain subscribers only"
    );
    assert_eq!(n("ringcast_inbox_dropped_publications_total", &[]), 0);
    // The history gauge is there for every reactor (its figure is checked in
    // `market_data.rs`).
    let reactors = server.stats().unwrap().reactors.len();
    assert_eq!(samples(&scrape, "ringcast_history_bytes").len(), reactors);
    // The lag histogram: one observation per subscriber visit; its +Inf bucket is the
    // count, and it agrees with the engine's own figures.
    let count = n("ringcast_delivery_lag_bytes_count", &[]);
    assert!(count >= SUBSCRIBERS, "{count}");
    assert_eq!(count, stats.delivery_lag.count());
    let (mut first, mut inf) = (0.0, 0.0);
    for s in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "ringcast_delivery_lag_bytes")
    {
        let prometheus_parse::Value::Histogram(buckets) = &s.value else {
            panic!("ringcast_delivery_lag_bytes is not a histogram: {s:?}");
        };
        assert_eq!(buckets.len(), 9, "{buckets:?}");
        first += buckets
            .iter()
            .find(|b| b.less_than == 1024.0)
            .unwrap()
            .count;
        inf += buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .unwrap()
            .count;
    }
    assert_eq!(inf as u64, count);
    assert_eq!(first as u64, stats.delivery_lag.buckets[0]);
    for family in ["ringcast_topics", "ringcast_frames_sent_total"] {
        let reactors = samples(&scrape, family);
        assert_eq!(reactors.len(), 2, "{family}: one series per reactor");
        assert!(reactors.iter().any(|(l, _)| l.get("reactor") == Some("1")));
    }

    // /stats: the demo page's object, exactly these keys, once the scrape is done.
    let frames = frames + 1;
    settled(&server, |t| t.frames_out == frames && t.connections == open);
    let json = get(&server, "/stats");
    assert_eq!(json.status, 200);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&json.body).expect("JSON");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = [
        "backend",
        "reactors",
        "connections",
        "subscriptions",
        "topics",
        "publications",
        "deliveries",
        "bytes_out",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    let expect: HashMap<&str, serde_json::Value> = [
        ("backend", backend.name().into()),
        ("reactors", 2.into()),
        ("connections", (open + 1).into()),
        ("subscriptions", SUBSCRIBERS.into()),
        ("topics", 1.into()),
        ("publications", MESSAGES.into()),
        ("deliveries", frames.into()),
    ]
    .into_iter()
    .collect();
    for (key, want) in expect {
        assert_eq!(v[key], want, "{key} in {v}");
    }
    assert!(v["bytes_out"].as_u64().unwrap() > 0);
}

fn metrics_token_and_metrics_off(backend: Backend) {
    let mut http = HttpEndpoints::default();
    http.metrics_token = Some("s3cret".into());
    let server = start_server_with(backend, 1, |b| b.http(http));
    for path in ["/metrics", "/stats"] {
        let none = get(&server, path);
        assert_eq!(none.status, 401, "{path}");
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        assert!(body(&none).contains("Authorization: Bearer"), "{none:?}");
        let with = |token: &str| {
            let raw =
                format!("GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n");
            send(&server, raw.as_bytes()).status
        };
        assert_eq!(with("wrong"), 401, "{path}");
        assert_eq!(with("s3cret"), 200, "{path}");
    }
    // Health needs no token.
    assert_eq!(get(&server, "/healthz").status, 200);
    drop(server);

    let mut http = HttpEndpoints::default();
    http.metrics = false;
    let server = start_server_with(backend, 1, |b| b.http(http));
    assert_eq!(get(&server, "/metrics").status, 404);
    assert_eq!(get(&server, "/stats").status, 404);
    assert_eq!(get(&server, "/readyz").status, 200);
}

fn demo_page_with_ui(backend: Backend) {
    let mut http = HttpEndpoints::default();
    http.ui = true;
    let server = start_server_with(backend, 1, |b| b.http(http));
    let page = get(&server, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.body, include_bytes!("../src/server/web/index.html"));
    let head = send(&server, &request("HEAD", "/"));
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), page.header("content-length"));
    // A WebSocket upgrade at / is still the application's (echo).
    let mut ws = server.client();
    ws.send_text("hi");
    ws.expect_text("hi");
}
