//! RFC 6455 §4.1-4.4 (and RFC 9110 for the HTTP side): the opening handshake, its rejections
//! with their status codes, subprotocols and origins.

use crate::util;

use std::time::{Duration, Instant};

use ringcast::protocol::handshake::HandshakeConfig;
use ringcast::server::Backend;
use util::{
    Client, Frame, HttpResponse, Request, TestServer, check_cases, for_each_backend, start_server,
    start_server_with,
};

/// Sends `request` on a new connection; expects `status` with a non-empty text body.
#[track_caller]
fn expect_rejection(server: &TestServer, request: &[u8], status: u16) -> HttpResponse {
    let response = server.http(request);
    assert_eq!(response.status, status, "response {response:?}");
    assert!(
        !response.body.is_empty(),
        "rejection without a body: {response:?}"
    );
    assert!(
        std::str::from_utf8(&response.body).is_ok(),
        "body is not text: {response:?}"
    );
    if let Some(content_type) = response.header("content-type") {
        assert!(
            content_type.starts_with("text/"),
            "Content-Type: {content_type}"
        );
    }
    response
}

/// A handshake on `path` succeeds and the connection echoes.
#[track_caller]
fn expect_upgrade_and_echo(server: &TestServer, request: &Request) {
    let mut client = server.tcp();
    let response = client.handshake(request);
    client.check_upgrade_with_key(
        &response,
        request.get("sec-websocket-key").unwrap_or_default(),
    );
    client.send_text("after handshake");
    client.expect_text("after handshake");
}

/// RFC 6455 §1.3: the example key and its accept value.
fn accept_value_of_rfc_example(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.tcp();
    let response = client.handshake(&Request::new("/"));
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.version, 1, "HTTP/1.1 response");
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(
        response.header("sec-websocket-protocol"),
        None,
        "no subprotocol was offered"
    );
}

fn random_key(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.tcp();
    let key = client.new_key();
    let response = client.handshake(&Request::new("/").header("Sec-WebSocket-Key", &key));
    client.check_upgrade_with_key(&response, &key);
}

fn echo_path_and_queries(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(
        ["/", "/echo", "/?room=1", "/echo?room=1&x=%20y", "/echo?"].map(|p| (p.to_owned(), p)),
        |path| {
            expect_upgrade_and_echo(&server, &Request::new(path));
        },
    );
}

/// Header names and the `Upgrade`/`Connection` tokens are case-insensitive; `Connection` is a
/// list (browsers send `keep-alive, Upgrade`).
fn case_insensitive_headers_and_token_lists(backend: Backend) {
    let server = start_server(backend, 2);
    let variants = [
        (
            "lower-case names",
            Request::new("/")
                .without("Upgrade")
                .without("Connection")
                .header("upgrade", "websocket")
                .header("connection", "upgrade"),
        ),
        (
            "WebSocket token",
            Request::new("/").header("Upgrade", "WebSocket"),
        ),
        (
            "connection list",
            Request::new("/").header("Connection", "keep-alive, Upgrade"),
        ),
        (
            "extra headers",
            Request::new("/")
                .header("User-Agent", "ringcast-tests")
                .header("Cache-Control", "no-cache"),
        ),
    ];
    check_cases(variants.map(|(n, r)| (n.to_owned(), r)), |request| {
        expect_upgrade_and_echo(&server, &request)
    });
}

fn missing_key(backend: Backend) {
    let server = start_server(backend, 2);
    expect_rejection(
        &server,
        &Request::new("/").without("Sec-WebSocket-Key").to_bytes(),
        400,
    );
}

/// RFC 6455 §4.2.1: the key must decode to 16 bytes.
fn bad_keys(backend: Backend) {
    let server = start_server(backend, 2);
    let keys = [
        ("empty", ""),
        ("too short", "abc"),
        ("not base64", "not base64 at all!!!!!!!"),
        ("15 bytes", "dGhlIHNhbXBsZSBub25j"),
        ("17 bytes", "dGhlIHNhbXBsZSBub25jZTE="),
    ];
    check_cases(keys.map(|(n, k)| (n.to_owned(), k)), |key| {
        expect_rejection(
            &server,
            &Request::new("/")
                .header("Sec-WebSocket-Key", key)
                .to_bytes(),
            400,
        );
    });
}

/// Without `Upgrade` a request is plain HTTP, answered by the HTTP endpoints: the echo
/// server has none at `/` (tests/http_endpoints.rs has the rest).
fn missing_upgrade(backend: Backend) {
    let server = start_server(backend, 2);
    let response = expect_rejection(
        &server,
        &Request::new("/").without("Upgrade").to_bytes(),
        404,
    );
    assert_eq!(response.body, b"no HTTP endpoint at /\n");
}

fn upgrade_to_another_protocol(backend: Backend) {
    let server = start_server(backend, 2);
    expect_rejection(
        &server,
        &Request::new("/").header("Upgrade", "h2c").to_bytes(),
        400,
    );
}

fn missing_connection_upgrade(backend: Backend) {
    let server = start_server(backend, 2);
    expect_rejection(
        &server,
        &Request::new("/").without("Connection").to_bytes(),
        400,
    );
    expect_rejection(
        &server,
        &Request::new("/")
            .header("Connection", "keep-alive")
            .to_bytes(),
        400,
    );
}

/// RFC 6455 §4.1: "HTTP/1.1 or higher".
fn http_1_0(backend: Backend) {
    let server = start_server(backend, 2);
    expect_rejection(
        &server,
        &Request::new("/").version("HTTP/1.0").to_bytes(),
        400,
    );
}

fn garbage(backend: Backend) {
    let server = start_server(backend, 2);
    let requests: [(&str, &[u8]); 3] = [
        ("not HTTP", b"HELLO WORLD\r\n\r\n"),
        (
            "header without colon",
            b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
        ),
        (
            "binary",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ),
    ];
    check_cases(requests.map(|(n, r)| (n.to_owned(), r)), |request| {
        expect_rejection(&server, request, 400);
    });
}

/// `request` with `extra` header lines appended to its head (repeats included, which
/// `Request::header` would replace), then `body`.
fn with_extra(request: &Request, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut bytes = request.to_bytes();
    bytes.truncate(bytes.len() - 2); // the blank line
    for line in extra {
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

/// An upgrade request has no body (RFC 6455 §4.1): a `Content-Length` other than 0 or any
/// `Transfer-Encoding` is a 400 that says why; `Content-Length: 0` upgrades.
fn request_with_a_body(backend: Backend) {
    let server = start_server(backend, 2);
    let cases: [(&str, &[&str], &[u8], &str); 4] = [
        (
            "content-length with body",
            &["Content-Length: 5"],
            b"hello",
            "Content-Length",
        ),
        (
            "content-length without body",
            &["Content-Length: 5"],
            b"",
            "Content-Length",
        ),
        (
            "chunked",
            &["Transfer-Encoding: chunked"],
            b"5\r\nhello\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        (
            "chunked with length 0",
            &["Content-Length: 0", "Transfer-Encoding: chunked"],
            b"0\r\n\r\n",
            "Transfer-Encoding",
        ),
    ];
    check_cases(
        cases.map(|(n, extra, body, named)| (n.to_owned(), (extra, body, named))),
        |(extra, body, named)| {
            let response =
                expect_rejection(&server, &with_extra(&Request::new("/"), extra, body), 400);
            let text = String::from_utf8_lossy(&response.body);
            assert!(
                text.contains("body") && text.contains(named),
                "reason {text:?} should say the request has a body ({named})"
            );
        },
    );
    expect_upgrade_and_echo(&server, &Request::new("/").header("Content-Length", "0"));
}

/// A repeated `Host`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version` is a 400 whose reason
/// names the header, even when both values agree.
fn repeated_headers(backend: Backend) {
    let server = start_server(backend, 2);
    let cases = [
        ("Host", "127.0.0.1"),
        ("Host", "example.com"),
        ("Sec-WebSocket-Key", Request::DEFAULT_KEY),
        ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("Sec-WebSocket-Version", "13"),
        ("sec-websocket-version", "13"),
    ];
    check_cases(
        cases.map(|(name, value)| (format!("{name}: {value}"), (name, value))),
        |(name, value)| {
            let line = format!("{name}: {value}");
            let request = with_extra(&Request::new("/"), &[&line], b"");
            let response = expect_rejection(&server, &request, 400);
            let text = String::from_utf8_lossy(&response.body).to_ascii_lowercase();
            assert!(
                text.contains("duplicate") && text.contains(&name.to_ascii_lowercase()),
                "reason {text:?} should name {name}"
            );
        },
    );
}

/// RFC 9110 §15.5.6: a 405 MUST carry `Allow`.
fn post_is_method_not_allowed(backend: Backend) {
    let server = start_server(backend, 2);
    let response = expect_rejection(&server, &Request::new("/").method("POST").to_bytes(), 405);
    let allow = response.header("allow").unwrap_or_default();
    assert!(
        allow.split(',').any(|m| m.trim() == "GET"),
        "Allow: {allow:?}"
    );
}

/// RFC 6455 §4.4: an unsupported version gets the versions the server speaks.
fn unsupported_version(backend: Backend) {
    let server = start_server(backend, 2);
    let response = expect_rejection(
        &server,
        &Request::new("/")
            .header("Sec-WebSocket-Version", "8")
            .to_bytes(),
        426,
    );
    let versions = response.header("sec-websocket-version").unwrap_or_default();
    assert!(
        versions.split(',').any(|v| v.trim() == "13"),
        "Sec-WebSocket-Version: {versions:?}"
    );
}

fn unknown_path(backend: Backend) {
    let server = start_server(backend, 2);
    check_cases(
        ["/nope", "/echo/more", "/echoes", "/nope?x=/echo"].map(|p| (p.to_owned(), p)),
        |path| {
            expect_rejection(&server, &Request::new(path).to_bytes(), 404);
        },
    );
}

fn origin_server(backend: Backend) -> TestServer {
    start_server_with(backend, 2, |b| {
        b.handshake(HandshakeConfig {
            allowed_origins: Some(vec!["https://ok.example".into()]),
            ..Default::default()
        })
    })
}

fn origin_not_allowed(backend: Backend) {
    let server = origin_server(backend);
    expect_rejection(
        &server,
        &Request::new("/")
            .header("Origin", "https://evil.example")
            .to_bytes(),
        403,
    );
}

fn origin_allowed(backend: Backend) {
    let server = origin_server(backend);
    expect_upgrade_and_echo(
        &server,
        &Request::new("/").header("Origin", "https://ok.example"),
    );
}

/// Non-browser clients send no `Origin`: accepted (HandshakeConfig::allowed_origins).
fn no_origin_with_origin_list(backend: Backend) {
    let server = origin_server(backend);
    expect_upgrade_and_echo(&server, &Request::new("/"));
}

/// Over the default 8 KiB head limit: 431.
fn oversized_head(backend: Backend) {
    let server = start_server(backend, 2);
    let padding = "a".repeat(9 * 1024);
    expect_rejection(
        &server,
        &Request::new("/").header("X-Padding", &padding).to_bytes(),
        431,
    );
}

/// Just under the limit is fine.
fn large_head_under_limit(backend: Backend) {
    let server = start_server(backend, 2);
    let padding = "a".repeat(7 * 1024);
    expect_upgrade_and_echo(&server, &Request::new("/").header("X-Padding", &padding));
}

fn chat_server(backend: Backend) -> TestServer {
    start_server_with(backend, 2, |b| {
        b.handshake(HandshakeConfig {
            protocols: vec!["chat".into()],
            ..Default::default()
        })
    })
}

/// RFC 6455 §4.2.2: the server picks one of the offered subprotocols it speaks.
fn subprotocol_chosen(backend: Backend) {
    let server = chat_server(backend);
    check_cases(
        ["chat", "superchat, chat", "superchat,chat"].map(|o| (o.to_owned(), o)),
        |offer| {
            let mut client = server.tcp();
            let response =
                client.handshake(&Request::new("/").header("Sec-WebSocket-Protocol", offer));
            client.check_upgrade_with_key(&response, Request::DEFAULT_KEY);
            assert_eq!(response.header("sec-websocket-protocol"), Some("chat"));
        },
    );
}

/// No common subprotocol (or none offered): the upgrade succeeds without the header.
fn no_common_subprotocol(backend: Backend) {
    let server = chat_server(backend);
    for request in [
        Request::new("/").header("Sec-WebSocket-Protocol", "superchat"),
        Request::new("/"),
    ] {
        let mut client = server.tcp();
        let response = client.handshake(&request);
        client.check_upgrade_with_key(&response, Request::DEFAULT_KEY);
        assert_eq!(
            response.header("sec-websocket-protocol"),
            None,
            "{response:?}"
        );
    }
}

fn request_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.tcp();
    client.write_chunked(&Request::new("/echo").to_bytes(), 1);
    let response = client.read_http_head();
    client.check_upgrade_with_key(&response, Request::DEFAULT_KEY);
    client.send_text("after handshake");
    client.expect_text("after handshake");
}

/// Frame bytes right behind the request, in the same write, belong to the connection.
fn request_followed_by_frame_in_same_write(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.tcp();
    let mut bytes = Request::new("/").to_bytes();
    bytes.extend(client.encode_all(&[Frame::text("early"), Frame::ping("early ping")]));
    client.write_raw(&bytes);
    let response = client.read_http_head();
    client.check_upgrade_with_key(&response, Request::DEFAULT_KEY);
    client.expect_text("early");
    client.expect_pong("early ping");
}

fn quick_timeout_server(backend: Backend, timeout: Duration) -> TestServer {
    start_server_with(backend, 2, |b| b.handshake_timeout(timeout))
}

/// The server drops a connection that has not completed the handshake in time: either at once
/// or after a 408 response.
#[track_caller]
fn expect_dropped_within(client: &mut Client, start: Instant, timeout: Duration) {
    if let Some(response) = client.read_http_response_or_eof() {
        assert_eq!(response.status, 408, "{response:?}");
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed < timeout + Duration::from_secs(3),
        "dropped after {elapsed:?}, timeout {timeout:?}"
    );
}

fn silent_connection_is_dropped(backend: Backend) {
    let timeout = Duration::from_millis(300);
    let server = quick_timeout_server(backend, timeout);
    let start = Instant::now();
    let mut client = server.tcp();
    expect_dropped_within(&mut client, start, timeout);
}

/// A slowloris: part of the head, then nothing.
fn incomplete_request_is_dropped(backend: Backend) {
    let timeout = Duration::from_millis(300);
    let server = quick_timeout_server(backend, timeout);
    let start = Instant::now();
    let mut client = server.tcp();
    client.write_raw(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n");
    expect_dropped_within(&mut client, start, timeout);
}

/// The handshake timeout does not apply once the connection is upgraded.
fn handshake_timeout_ends_with_the_handshake(backend: Backend) {
    let timeout = Duration::from_millis(300);
    let server = quick_timeout_server(backend, timeout);
    let mut client = server.client();
    // A pong from the server proves the connection is alive after more than the timeout; the
    // client waits on its own read timeout, never on a sleep.
    client.set_read_timeout(timeout * 3);
    client.expect_no_frame();
    client.set_read_timeout(util::TIMEOUT);
    client.send_ping("still here");
    client.expect_pong("still here");
}

for_each_backend!(
    accept_value_of_rfc_example,
    random_key,
    echo_path_and_queries,
    case_insensitive_headers_and_token_lists,
    missing_key,
    bad_keys,
    missing_upgrade,
    upgrade_to_another_protocol,
    missing_connection_upgrade,
    http_1_0,
    garbage,
    request_with_a_body,
    repeated_headers,
    post_is_method_not_allowed,
    unsupported_version,
    unknown_path,
    origin_not_allowed,
    origin_allowed,
    no_origin_with_origin_list,
    oversized_head,
    large_head_under_limit,
    subprotocol_chosen,
    no_common_subprotocol,
    request_written_one_byte_at_a_time,
    request_followed_by_frame_in_same_write,
    silent_connection_is_dropped,
    incomplete_request_is_dropped,
    handshake_timeout_ends_with_the_handshake,
);
