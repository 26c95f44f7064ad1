//! RFC 6455 §5.5.2-5.5.3: Ping and Pong (Autobahn|Testsuite category 2).

use crate::util;

use ringcast::server::Backend;
use util::{Frame, binary_payload, for_each_backend, start_server};

fn ping_empty(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_ping("");
    client.expect_pong("");
}

fn ping_with_text_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_ping("Hello, world!");
    client.expect_pong("Hello, world!");
}

fn ping_with_binary_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    client.send_ping(payload);
    client.expect_pong(payload);
}

fn ping_125_bytes(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(125);
    client.send_ping(&payload);
    client.expect_pong(&payload);
}

/// RFC 6455 §5.5: control frames carry at most 125 bytes. No pong may be sent.
fn ping_126_bytes_is_protocol_error(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_ping(binary_payload(126));
    client.expect_close(1002);
}

/// RFC 6455 §5.5: control frames MUST NOT be fragmented.
fn fragmented_ping_is_protocol_error(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::ping("fragment1").fin(false),
        Frame::continuation("fragment2"),
    ]);
    client.expect_close(1002);
}

fn ping_125_bytes_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(125);
    client.send_chunked(Frame::ping(&payload), 1);
    client.expect_pong(&payload);
}

/// RFC 6455 §5.5.3: an unsolicited Pong is not answered; the next message is echoed first.
fn unsolicited_empty_pong_is_ignored(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::pong(""));
    client.send_text("after pong");
    client.expect_text("after pong");
    client.send_close(1000, "");
    client.expect_close(1000);
}

fn unsolicited_pong_with_payload_is_ignored(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::pong("unsolicited pong payload"));
    client.send_text("after pong");
    client.expect_text("after pong");
}

/// Autobahn 2.9: the pong answers the ping, not the earlier unsolicited pong.
fn unsolicited_pong_then_ping(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::pong("unsolicited pong payload"),
        Frame::ping("ping payload"),
    ]);
    client.expect_pong("ping payload");
}

/// Autobahn 2.10: every ping is answered, in order.
fn ten_pings_in_a_row(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let pings: Vec<Frame> = (0..10)
        .map(|i| Frame::ping(format!("payload-{i}")))
        .collect();
    client.send_all(&pings);
    for i in 0..10 {
        client.expect_pong(format!("payload-{i}"));
    }
}

/// Autobahn 2.11: ten pings, each written one byte at a time.
fn ten_pings_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    for i in 0..10 {
        client.send_chunked(Frame::ping(format!("payload-{i}")), 1);
    }
    for i in 0..10 {
        client.expect_pong(format!("payload-{i}"));
    }
}

/// Pongs and echoes keep the order of the frames that caused them.
fn pings_between_messages_keep_order(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("one"),
        Frame::ping("p1"),
        Frame::binary(vec![2; 1000]),
        Frame::ping("p2"),
    ]);
    client.expect_text("one");
    client.expect_pong("p1");
    client.expect_binary([2; 1000]);
    client.expect_pong("p2");
}

for_each_backend!(
    ping_empty,
    ping_with_text_payload,
    ping_with_binary_payload,
    ping_125_bytes,
    ping_126_bytes_is_protocol_error,
    fragmented_ping_is_protocol_error,
    ping_125_bytes_written_one_byte_at_a_time,
    unsolicited_empty_pong_is_ignored,
    unsolicited_pong_with_payload_is_ignored,
    unsolicited_pong_then_ping,
    ten_pings_in_a_row,
    ten_pings_written_one_byte_at_a_time,
    pings_between_messages_keep_order,
);
