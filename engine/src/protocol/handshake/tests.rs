use proptest::prelude::*;

use super::*;

const LINE: &str = "GET /chat?room=1 HTTP/1.1";
const HEADERS: &[&str] = &[
    "Host: server.example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Origin: http://example.com",
    "Sec-WebSocket-Protocol: chat, superchat",
    "Sec-WebSocket-Version: 13",
];
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A head with `line`, the valid headers minus those named in `drop`, plus `add`.
fn build(line: &str, drop: &[&str], add: &[&str]) -> Vec<u8> {
    let mut head = format!("{line}\r\n");
    let name = |h: &str| h.split(':').next().unwrap_or_default().to_ascii_lowercase();
    for h in HEADERS
        .iter()
        .filter(|h| !drop.iter().any(|d| d.eq_ignore_ascii_case(&name(h))))
    {
        head += &format!("{h}\r\n");
    }
    for h in add {
        head += &format!("{h}\r\n");
    }
    head += "\r\n";
    head.into_bytes()
}

fn with(drop: &[&str], add: &[&str]) -> Vec<u8> {
    build(LINE, drop, add)
}

fn valid() -> Vec<u8> {
    with(&[], &[])
}

fn accept(buf: &[u8], config: &HandshakeConfig) -> Request {
    match parse(buf, config) {
        Parsed::Accept(req) => req,
        other => panic!("expected Accept, got {other:?}"),
    }
}

fn reject(buf: &[u8]) -> HandshakeError {
    match parse(buf, &HandshakeConfig::default()) {
        Parsed::Reject(err) => err,
        other => panic!("expected Reject, got {other:?}"),
    }
}

fn bad(reason: &'static str) -> HandshakeError {
    HandshakeError::BadRequest(reason)
}

fn chat_config() -> HandshakeConfig {
    HandshakeConfig {
        protocols: vec!["superchat".into(), "chat".into()],
        ..HandshakeConfig::default()
    }
}

#[test]
fn rfc_example_accept_key() {
    assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), RFC_ACCEPT);
}

#[test]
fn valid_request_in_one_piece() {
    let buf = valid();
    let req = accept(&buf, &chat_config());
    assert_eq!(req.head_len, buf.len());
    assert_eq!(req.path, "/chat");
    assert_eq!(req.query.as_deref(), Some("room=1"));
    assert_eq!(req.accept, RFC_ACCEPT);
    assert_eq!(req.protocol.as_deref(), Some("superchat"));
    assert_eq!(req.headers.len(), HEADERS.len());
    assert_eq!(
        req.headers[3],
        (
            "sec-websocket-key".into(),
            "dGhlIHNhbXBsZSBub25jZQ==".into()
        )
    );

    let req = accept(
        &build("GET / HTTP/1.1", &[], &[]),
        &HandshakeConfig::default(),
    );
    assert_eq!(
        (req.path.as_str(), req.query, req.protocol),
        ("/", None, None)
    );
}

/// The prefix lengths of `buf` to parse one by one: every one, but under Miri (where each
/// parse is interpreted) those within two bytes of a line end, the last few and every
/// 16th in between.
fn prefix_ends(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    (0..=buf.len()).filter(move |&end| {
        !cfg!(miri)
            || end % 16 == 0
            || end + 4 >= buf.len()
            || buf[end.saturating_sub(2)..(end + 2).min(buf.len())].contains(&b'\n')
    })
}

#[test]
fn valid_request_byte_by_byte() {
    let buf = valid();
    let config = chat_config();
    for end in prefix_ends(&buf).filter(|&end| end < buf.len()) {
        assert_eq!(
            parse(&buf[..end], &config),
            Parsed::Need,
            "prefix of {end} bytes"
        );
    }
    assert_eq!(
        parse(&buf, &config),
        Parsed::Accept(accept(&valid(), &config))
    );
}

#[test]
fn frame_bytes_after_head() {
    let head = valid();
    let mut buf = head.clone();
    buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o']);
    let req = accept(&buf, &HandshakeConfig::default());
    assert_eq!(req.head_len, head.len());
    assert_eq!(buf[req.head_len], 0x81);
    // Byte by byte, the first Accept comes exactly when the head is complete.
    let first = prefix_ends(&buf)
        .find(|&end| parse(&buf[..end], &HandshakeConfig::default()) != Parsed::Need);
    assert_eq!(first, Some(head.len()));
}

#[test]
fn rejects_other_methods_with_405() {
    assert_eq!(
        reject(&build("POST /chat HTTP/1.1", &[], &[])),
        HandshakeError::MethodNotAllowed
    );
    assert_eq!(
        reject(&build("get /chat HTTP/1.1", &[], &[])),
        HandshakeError::MethodNotAllowed
    );
    // Malformed HTTP is a 400 even with another method.
    assert_eq!(
        reject(&build("POST /chat HTTP/1.1", &[], &["Bad Name: x"])),
        bad("invalid header name")
    );
}

#[test]
fn rejects_malformed_http_with_400() {
    assert_eq!(
        reject(&with(&[], &["Bad Name: x"])),
        bad("invalid header name")
    );
    assert_eq!(
        reject(&with(&[], &["X: a\x01b"])),
        bad("invalid header value")
    );
    assert_eq!(
        reject(b"GET /chat HTTP/1.1\r\nHost: a\rb\r\n\r\n"),
        bad("invalid header value")
    );
    assert_eq!(
        reject(&build("GET /chat HTTP/2.0", &[], &[])),
        bad("HTTP version must be 1.1")
    );
    assert_eq!(
        reject(&build("G(T /chat HTTP/1.1", &[], &[])),
        bad("invalid request line")
    );
}

#[test]
fn rejects_http_1_0() {
    assert_eq!(
        reject(&build("GET /chat HTTP/1.0", &[], &[])),
        bad("HTTP version must be 1.1")
    );
}

#[test]
fn rejects_target_not_in_origin_form() {
    let err = bad("request target must be a path starting with /");
    assert_eq!(
        reject(&build("GET ws://example.com/chat HTTP/1.1", &[], &[])),
        err
    );
    assert_eq!(reject(&build("GET * HTTP/1.1", &[], &[])), err);
}

#[test]
fn rejects_missing_or_duplicate_host() {
    assert_eq!(reject(&with(&["host"], &[])), bad("missing Host header"));
    assert_eq!(
        reject(&with(&[], &["Host: other.example.com"])),
        bad("duplicate Host header")
    );
}

/// An upgrade request carries no body: any `Transfer-Encoding`, or a `Content-Length`
/// other than 0, is a 400 that says so.
#[test]
fn rejects_request_with_a_body() {
    let te = bad("upgrade request must not have a body (Transfer-Encoding present)");
    for h in [
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: identity",
        "transfer-encoding: gzip, chunked",
        "TRANSFER-ENCODING:",
    ] {
        assert_eq!(reject(&with(&[], &[h])), te, "{h}");
    }
    // Together with Content-Length: 0, still refused.
    assert_eq!(
        reject(&with(
            &[],
            &["Content-Length: 0", "Transfer-Encoding: chunked"]
        )),
        te
    );
    let cl = bad("upgrade request must not have a body (Content-Length must be 0)");
    for h in [
        "Content-Length: 5",
        "Content-Length: 1",
        "content-length: 18446744073709551616",
        "Content-Length: 01",
        "Content-Length: -0",
        "Content-Length: +0",
        "Content-Length: 0x0",
        "Content-Length: 0, 0",
        "Content-Length:",
    ] {
        assert_eq!(reject(&with(&[], &[h])), cl, "{h}");
    }
    // A zero length among others does not hide a non-zero one.
    assert_eq!(
        reject(&with(&[], &["Content-Length: 0", "Content-Length: 7"])),
        cl
    );
    // The body itself is never read as part of the head.
    let mut buf = with(&[], &["Content-Length: 5"]);
    buf.extend_from_slice(b"hello");
    assert_eq!(reject(&buf), cl);
}

#[test]
fn accepts_content_length_zero() {
    let config = HandshakeConfig::default();
    for add in [
        &["Content-Length: 0"][..],
        &["content-length:  0 "],
        &["Content-Length: 000"],
        &["Content-Length: 0", "Content-Length: 0"],
    ] {
        let buf = with(&[], add);
        assert_eq!(accept(&buf, &config).head_len, buf.len(), "{add:?}");
    }
}

/// A repeated `Host`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version` is a 400 naming the
/// header, whether or not the values agree and however the name is spelt.
#[test]
fn rejects_repeated_headers_naming_them() {
    let cases = [
        ("Host", "server.example.com", "other.example.com"),
        (
            "Sec-WebSocket-Key",
            "dGhlIHNhbXBsZSBub25jZQ==",
            "AAAAAAAAAAAAAAAAAAAAAA==",
        ),
        ("Sec-WebSocket-Version", "13", "8"),
    ];
    for (name, same, other) in cases {
        let expected = match name {
            "Host" => bad("duplicate Host header"),
            "Sec-WebSocket-Key" => bad("duplicate Sec-WebSocket-Key header"),
            _ => bad("duplicate Sec-WebSocket-Version header"),
        };
        for value in [same, other] {
            for spelling in [
                name.to_owned(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
            ] {
                let buf = with(&[], &[&format!("{spelling}: {value}")]);
                let err = reject(&buf);
                assert_eq!(err, expected, "{spelling}: {value}");
                let mut out = Vec::new();
                reject_response_into(&err, &mut out);
                let (status, _, _, body) = parse_response(&out);
                assert_eq!(status, 400);
                let body = String::from_utf8(body).unwrap();
                assert!(body.contains(name), "body {body:?} does not name {name}");
            }
        }
    }
}

#[test]
fn rejects_missing_upgrade_or_connection_token() {
    let no_upgrade = bad("Upgrade header must contain websocket");
    // Without any `Upgrade` it is a plain HTTP request, for the application to answer.
    assert!(matches!(
        parse(&with(&["upgrade"], &[]), &HandshakeConfig::default()),
        Parsed::Http(_)
    ));
    assert_eq!(reject(&with(&["upgrade"], &["Upgrade: h2c"])), no_upgrade);
    assert_eq!(
        reject(&with(&["upgrade"], &["Upgrade: websockets"])),
        no_upgrade
    );
    let no_connection = bad("Connection header must contain upgrade");
    assert_eq!(reject(&with(&["connection"], &[])), no_connection);
    assert_eq!(
        reject(&with(&["connection"], &["Connection: keep-alive"])),
        no_connection
    );
    assert_eq!(
        reject(&with(&["connection"], &["Connection: upgraded"])),
        no_connection
    );
}

#[test]
fn token_lists() {
    let config = HandshakeConfig::default();
    let cases: &[&[&str]] = &[
        &["Connection: keep-alive, Upgrade", "Upgrade: WebSocket"],
        &[
            "Connection: keep-alive",
            "connection: UPGRADE",
            "upgrade: h2c, websocket",
        ],
        &[
            "Connection: ,, upgrade ,",
            "Upgrade: h2c",
            "Upgrade: wEbSoCkEt",
        ],
    ];
    for add in cases {
        accept(&with(&["connection", "upgrade"], add), &config);
    }
}

#[test]
fn version_missing_is_400_other_is_426() {
    assert_eq!(
        reject(&with(&["sec-websocket-version"], &[])),
        bad("missing Sec-WebSocket-Version")
    );
    for v in ["8", "14", "13, 8", ""] {
        let buf = with(
            &["sec-websocket-version"],
            &[&format!("Sec-WebSocket-Version: {v}")],
        );
        assert_eq!(
            reject(&buf),
            HandshakeError::UnsupportedVersion,
            "version {v:?}"
        );
    }
    let dup = with(&[], &["Sec-WebSocket-Version: 13"]);
    assert_eq!(reject(&dup), bad("duplicate Sec-WebSocket-Version header"));
}

#[test]
fn key_checks() {
    let config = HandshakeConfig::default();
    assert_eq!(
        reject(&with(&["sec-websocket-key"], &[])),
        bad("missing Sec-WebSocket-Key")
    );
    let dup = with(&[], &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="]);
    assert_eq!(reject(&dup), bad("duplicate Sec-WebSocket-Key header"));
    let invalid = bad("Sec-WebSocket-Key must be base64 of 16 bytes");
    for key in [
        "",
        "short",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ==AAAA",
        "dGhlIHNhbXBsZSBub25jZR==",
        "dGhlIHNh!XBsZSBub25jZQ==",
        "AAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let buf = with(
            &["sec-websocket-key"],
            &[&format!("Sec-WebSocket-Key: {key}")],
        );
        assert_eq!(reject(&buf), invalid, "key {key:?}");
    }
    let padded = with(
        &["sec-websocket-key"],
        &["Sec-WebSocket-Key: \t dGhlIHNhbXBsZSBub25jZQ==  "],
    );
    assert_eq!(accept(&padded, &config).accept, RFC_ACCEPT);
}

#[test]
fn protocol_selection_by_server_preference() {
    let offer =
        |value: &[&str]| accept(&with(&["sec-websocket-protocol"], value), &chat_config()).protocol;
    assert_eq!(
        offer(&["Sec-WebSocket-Protocol: chat, superchat"]).as_deref(),
        Some("superchat")
    );
    assert_eq!(
        offer(&[
            "Sec-WebSocket-Protocol: chat",
            "Sec-WebSocket-Protocol: superchat"
        ])
        .as_deref(),
        Some("superchat")
    );
    assert_eq!(
        offer(&["Sec-WebSocket-Protocol: mqtt, chat"]).as_deref(),
        Some("chat")
    );
    assert_eq!(offer(&["Sec-WebSocket-Protocol: Chat, mqtt"]), None);
    assert_eq!(offer(&[]), None);
}

#[test]
fn origin_allow_list() {
    let config = HandshakeConfig {
        allowed_origins: Some(vec!["https://app.example.com".into()]),
        ..HandshakeConfig::default()
    };
    let origin = |o: &str| with(&["origin"], &[&format!("Origin: {o}")]);
    accept(&origin("https://app.example.com"), &config);
    accept(&origin("HTTPS://App.Example.COM"), &config);
    accept(&with(&["origin"], &[]), &config);
    for refused in ["http://app.example.com", "https://evil.example.com", "null"] {
        assert_eq!(
            parse(&origin(refused), &config),
            Parsed::Reject(HandshakeError::OriginRefused)
        );
    }
    let dup = with(&[], &["Origin: https://app.example.com"]);
    assert_eq!(
        parse(&dup, &config),
        Parsed::Reject(bad("duplicate Origin header"))
    );
    // Without an allow-list any origin is accepted.
    accept(
        &origin("https://evil.example.com"),
        &HandshakeConfig::default(),
    );
}

#[test]
fn head_too_large_for_endless_headers() {
    let config = HandshakeConfig {
        max_head_len: 256,
        ..HandshakeConfig::default()
    };
    let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
    while buf.len() < 1024 {
        buf.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    // Under Miri (every prefix re-parsed, interpreted) only the prefixes near the limit, a
    // sample of the rest and the whole buffer.
    let ends = (0..=buf.len())
        .filter(|&e| !cfg!(miri) || e % 97 == 0 || (250..=260).contains(&e) || e == buf.len());
    for end in ends {
        let expect = if end <= 256 {
            Parsed::Need
        } else {
            Parsed::Reject(HandshakeError::HeadTooLarge(256))
        };
        assert_eq!(parse(&buf[..end], &config), expect, "prefix of {end} bytes");
    }
    // One endless header line does not escape the limit either.
    let mut line = b"GET / HTTP/1.1\r\nX: ".to_vec();
    line.resize(10_000, b'a');
    assert_eq!(
        parse(&line, &config),
        Parsed::Reject(HandshakeError::HeadTooLarge(256))
    );
}

#[test]
fn head_too_large_when_complete() {
    let buf = valid();
    let exact = HandshakeConfig {
        max_head_len: buf.len(),
        ..HandshakeConfig::default()
    };
    accept(&buf, &exact);
    let small = HandshakeConfig {
        max_head_len: buf.len() - 1,
        ..HandshakeConfig::default()
    };
    assert_eq!(
        parse(&buf, &small),
        Parsed::Reject(HandshakeError::HeadTooLarge(buf.len() - 1))
    );
}

#[test]
fn too_many_headers_is_named_as_such() {
    // Far under the byte limit: the count is what is refused, and the answer says so.
    let many: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let req = with(&[], &many);
    assert!(req.len() < DEFAULT_MAX_HEAD_LEN / 4);
    let e = reject(&req);
    assert_eq!(e, HandshakeError::TooManyHeaders(MAX_HEADERS));
    assert_eq!(e.status(), 431);
    assert_eq!(
        e.to_string(),
        format!("more than {MAX_HEADERS} header fields")
    );
}

/// Parses an HTTP response back: status, reason, lower-cased headers, body.
fn parse_response(out: &[u8]) -> (u16, String, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = res.parse(out).expect("valid response") else {
        panic!("incomplete response");
    };
    let headers = res
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    (
        res.code.unwrap_or_default(),
        res.reason.unwrap_or_default().into(),
        headers,
        out[n..].to_vec(),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn accept_response_format() {
    let mut req = accept(&valid(), &chat_config());
    for protocol in [Some("superchat"), None] {
        req.protocol = protocol.map(Into::into);
        let mut out = Vec::new();
        accept_response_into(&req, &mut out);
        let (status, reason, headers, body) = parse_response(&out);
        assert_eq!((status, reason.as_str()), (101, "Switching Protocols"));
        assert_eq!(header(&headers, "upgrade"), Some("websocket"));
        assert_eq!(header(&headers, "connection"), Some("Upgrade"));
        assert_eq!(header(&headers, "sec-websocket-accept"), Some(RFC_ACCEPT));
        assert_eq!(header(&headers, "sec-websocket-protocol"), protocol);
        assert!(body.is_empty());
    }
}

#[test]
fn reject_response_format() {
    let refused = |status: u16, reason: &str| HandshakeError::Refused {
        status,
        reason: reason.into(),
    };
    let cases = [
        (bad("missing Host header"), 400, "Bad Request"),
        (refused(401, "token expired"), 401, "Unauthorized"),
        (HandshakeError::OriginRefused, 403, "Forbidden"),
        (HandshakeError::NotFound, 404, "Not Found"),
        (HandshakeError::MethodNotAllowed, 405, "Method Not Allowed"),
        (HandshakeError::UnsupportedVersion, 426, "Upgrade Required"),
        (
            HandshakeError::HeadTooLarge(8192),
            431,
            "Request Header Fields Too Large",
        ),
        (refused(500, "oops"), 500, "Internal Server Error"),
        (refused(503, "draining"), 503, "Service Unavailable"),
        (refused(418, "teapot"), 418, "Error"),
        (
            HandshakeError::Unavailable("server at its connection limit (5)".into()),
            503,
            "Service Unavailable",
        ),
    ];
    for (err, status, phrase) in cases {
        let mut out = Vec::new();
        reject_response_into(&err, &mut out);
        let (code, reason, headers, body) = parse_response(&out);
        assert_eq!((code, reason.as_str()), (status, phrase));
        assert_eq!(body, format!("{err}\n").into_bytes());
        assert_eq!(
            header(&headers, "content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(header(&headers, "connection"), Some("close"));
        assert_eq!(header(&headers, "allow"), (status == 405).then_some("GET"));
        assert_eq!(
            header(&headers, "sec-websocket-version"),
            (status == 426).then_some("13")
        );
        let unavailable = matches!(err, HandshakeError::Unavailable(_));
        assert_eq!(header(&headers, "retry-after"), unavailable.then_some("1"));
    }
}

#[test]
fn reject_response_is_not_injectable() {
    let err = HandshakeError::Refused {
        status: 403,
        reason: "no\r\nSet-Cookie: x=1\r\n\r\nboo".into(),
    };
    let mut out = Vec::new();
    reject_response_into(&err, &mut out);
    let (code, _, headers, body) = parse_response(&out);
    assert_eq!(code, 403);
    assert_eq!(header(&headers, "set-cookie"), None);
    assert_eq!(body, b"refused: 403 no  Set-Cookie: x=1    boo\n");
    assert_eq!(
        header(&headers, "content-length"),
        Some(body.len().to_string().as_str())
    );
    // A non-error status is never sent.
    for status in [0, 101, 200, 302, 600, u16::MAX] {
        let mut out = Vec::new();
        reject_response_into(
            &HandshakeError::Refused {
                status,
                reason: "x".into(),
            },
            &mut out,
        );
        assert!(
            out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"),
            "status {status}"
        );
    }
}

/// What holds for every input: `Need` only within the limit, `Accept` within the buffer.
fn check_invariants(buf: &[u8], config: &HandshakeConfig) {
    match parse(buf, config) {
        Parsed::Need => assert!(buf.len() <= config.max_head_len),
        Parsed::Accept(req) => assert!(req.head_len <= buf.len().min(config.max_head_len)),
        Parsed::Http(req) => assert!(req.head_len <= buf.len().min(config.max_head_len)),
        Parsed::Reject(err) => {
            let mut out = Vec::new();
            reject_response_into(&err, &mut out);
            parse_response(&out);
        }
    }
}

proptest! {
    // Miri interprets every case (seconds each); two still reach the code under it.
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 256 }))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        buf in proptest::collection::vec(any::<u8>(), 0..600),
        max_head_len in 0usize..700,
    ) {
        let config = HandshakeConfig { max_head_len, ..chat_config() };
        check_invariants(&buf, &config);
    }

    #[test]
    fn parse_never_panics_on_mutated_requests(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut buf = valid();
        buf.extend_from_slice(&[0x81, 0x80, 0, 0, 0, 0]);
        for (at, byte, op) in edits {
            let i = at.index(buf.len());
            match op {
                0 => buf[i] = byte,
                1 => buf.insert(i, byte),
                _ => { buf.remove(i); }
            }
        }
        let config = HandshakeConfig {
            allowed_origins: Some(vec!["http://example.com".into()]),
            ..chat_config()
        };
        check_invariants(&buf, &config);
        check_invariants(&buf[..cut.index(buf.len() + 1)], &config);
    }
}
