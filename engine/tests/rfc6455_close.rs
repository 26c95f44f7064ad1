//! RFC 6455 §5.5.1, §7 and §7.4: the closing handshake and close codes (Autobahn|Testsuite
//! category 7).

use crate::util;

use std::time::{Duration, Instant};

use ringcast::protocol::Limits;
use ringcast::server::Backend;
use util::{
    Frame, binary_payload, check_cases, close_payload, for_each_backend, is_valid_close_code, op,
    start_server, start_server_with, text_payload,
};

/// Autobahn 7.1.1: a message, then a clean close.
fn message_then_close(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_text("Hello World!");
    client.expect_text("Hello World!");
    client.send_close(1000, "");
    client.expect_close(1000);
}

/// Autobahn 7.3.1: an empty close is answered with an empty close or 1000.
fn close_empty(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::close_empty());
    client.expect_normal_close();
}

/// Autobahn 7.3.2: a close payload of one byte cannot hold a code.
fn close_one_byte_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::new(op::CLOSE, vec![0x03]));
    client.expect_close(1002);
}

fn close_with_reason(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_close(1000, "Hello World! κόσμε");
    client.expect_close(1000);
}

/// Autobahn 7.3.5: the largest close payload, 125 bytes (a 123-byte reason).
fn close_125_byte_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_close(1000, text_payload(123));
    client.expect_close(1000);
}

/// Autobahn 7.3.6: 126 bytes is over the control-frame limit.
fn close_126_byte_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_close(1000, "x".repeat(124));
    client.expect_close(1002);
}

/// Autobahn 7.5.1: the reason must be UTF-8.
fn close_reason_invalid_utf8(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_close(
        1000,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
    );
    client.expect_close(1007);
}

fn close_reason_truncated_utf8(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_close(1000, b"ok \xe2\x82");
    client.expect_close(1007);
}

/// Autobahn 7.7.x: every code valid on the wire is echoed.
fn valid_close_codes_are_echoed(backend: Backend) {
    let server = start_server(backend, 2);
    let codes = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    check_cases(codes.map(|c| (format!("code {c}"), c)), |code| {
        assert!(is_valid_close_code(code));
        let mut client = server.client();
        client.send_close(code, "");
        client.expect_close(code);
    });
}

/// Autobahn 7.9.x and 7.13.x: codes that must never appear on the wire.
fn invalid_close_codes_are_protocol_errors(backend: Backend) {
    let server = start_server(backend, 2);
    let codes = [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    check_cases(codes.map(|c| (format!("code {c}"), c)), |code| {
        assert!(!is_valid_close_code(code));
        let mut client = server.client();
        client.send_close(code, "");
        client.expect_close(1002);
    });
}

/// Autobahn 7.1.2: a second close from the client is ignored.
fn close_twice(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[Frame::close(1000, ""), Frame::close(1000, "again")]);
    client.expect_close(1000);
}

/// Autobahn 7.1.3: a ping after the close is not answered.
fn ping_after_close_is_ignored(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[Frame::close(1000, ""), Frame::ping("after close")]);
    client.expect_close(1000);
}

/// Autobahn 7.1.4: a message after the close is not echoed.
fn message_after_close_is_ignored(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::close(1000, ""),
        Frame::text("after close"),
        Frame::binary(vec![1; 200]),
    ]);
    client.expect_close(1000);
}

/// The same when the frames after the close come in a later write.
fn message_after_close_in_later_write_is_ignored(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_close(3000, "bye");
    client.send_text("after close");
    client.expect_close(3000);
}

/// Autobahn 7.1.5: a fragment, the close, then the final fragment: nothing is echoed.
fn fragment_close_continuation(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("fragment1").fin(false),
        Frame::close(1000, ""),
        Frame::continuation("fragment2"),
    ]);
    client.expect_close(1000);
}

/// Autobahn 7.1.6 (scaled): a large message and a close in one write: the message is echoed,
/// then the close.
fn large_message_then_close(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(256 * 1024);
    client.send_all(&[Frame::binary(payload.clone()), Frame::close(1000, "")]);
    client.expect_binary(&payload);
    client.expect_close(1000);
}

/// After the closing handshake the server closes TCP, while the client keeps its end open.
fn server_closes_tcp_after_closing_handshake(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_close(1000, "");
    let close = client.read_close();
    assert_eq!(close.close_code(), Some(1000));
    client.expect_eof();
}

/// After a server-initiated close that the client never answers, the server closes TCP by
/// itself within the close timeout.
fn server_closes_tcp_when_close_is_not_answered(backend: Backend) {
    let close_timeout = Duration::from_millis(300);
    let server = start_server_with(backend, 2, |b| {
        b.limits(Limits {
            close_timeout,
            ..Default::default()
        })
    });
    let mut client = server.client();
    client.send(Frame::text("unmasked").unmasked());
    let start = Instant::now();
    let close = client.read_close();
    assert_eq!(close.close_code(), Some(1002));
    client.expect_eof();
    let elapsed = start.elapsed();
    assert!(
        elapsed < close_timeout + Duration::from_secs(3),
        "TCP closed {elapsed:?} after the close, close timeout {close_timeout:?}"
    );
}

/// The close payload is parsed whole even when written one byte at a time.
fn close_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_chunked(Frame::new(op::CLOSE, close_payload(4000, b"reason")), 1);
    client.expect_close(4000);
}

for_each_backend!(
    message_then_close,
    close_empty,
    close_one_byte_payload,
    close_with_reason,
    close_125_byte_payload,
    close_126_byte_payload,
    close_reason_invalid_utf8,
    close_reason_truncated_utf8,
    valid_close_codes_are_echoed,
    invalid_close_codes_are_protocol_errors,
    close_twice,
    ping_after_close_is_ignored,
    message_after_close_is_ignored,
    message_after_close_in_later_write_is_ignored,
    fragment_close_continuation,
    large_message_then_close,
    server_closes_tcp_after_closing_handshake,
    server_closes_tcp_when_close_is_not_answered,
    close_written_one_byte_at_a_time,
);
