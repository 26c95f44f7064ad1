//! RFC 6455 §10.4 and §7.4.1 (1009): large messages, many messages, and the configured message
//! and frame limits (Autobahn|Testsuite category 9, scaled to CI time).

use crate::util;

use std::time::Duration;

use ringcast::protocol::{Limits, MessageBudget};
use ringcast::server::Backend;
use util::{
    Frame, Length, TestServer, binary_payload, for_each_backend, fragments, op, start_server,
    start_server_with, text_payload,
};

const MIB: usize = 1 << 20;

/// A server with `max_message` 1 MiB and `max_frame` 64 KiB.
fn limited_server(backend: Backend) -> TestServer {
    start_server_with(backend, 2, |b| {
        b.limits(Limits {
            max_message: MIB,
            max_frame: 64 * 1024,
            ..Default::default()
        })
    })
}

/// A server with `max_message` 1 MiB (and frames up to it).
fn small_message_server(backend: Backend) -> TestServer {
    start_server_with(backend, 2, |b| {
        b.limits(Limits {
            max_message: MIB,
            max_frame: MIB,
            ..Default::default()
        })
    })
}

fn text_4_mib(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let text = text_payload(4 * MIB);
    client.send_text(&text);
    client.expect_text(&text);
}

fn binary_4_mib(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(4 * MIB);
    client.send_binary(payload.clone());
    client.expect_binary(&payload);
}

/// Autobahn 9.2.x-like: 4 MiB in 64 KiB fragments.
fn binary_4_mib_in_64_kib_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(4 * MIB);
    client.send_all(&fragments(op::BINARY, &payload, 64 * 1024));
    client.expect_binary(&payload);
}

/// Exactly the default limit (16 MiB) is accepted.
fn binary_16_mib_at_default_limit(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(16 * MIB);
    client.send_binary(payload.clone());
    client.expect_binary(&payload);
}

/// Autobahn 9.7/9.8-like, scaled: 10 000 small messages pipelined by a writer thread, all
/// echoed in order.
fn ten_thousand_small_messages_pipelined(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let message = |i: usize| format!("{i:08}-{}", "m".repeat(64 - 9));
    let frames: Vec<Frame> = (0..10_000).map(|i| Frame::text(message(i))).collect();
    let bytes = client.encode_all(&frames);
    let writer = client.write_in_background(bytes);
    for i in 0..10_000 {
        client.expect_text(message(i));
    }
    writer.join().expect("writer thread");
}

/// Autobahn 9.3/9.4-like, scaled: many binary messages of 16 KiB in one write.
fn many_16_kib_binary_messages(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(16 * 1024);
    let frames = vec![Frame::binary(payload.clone()); 200];
    let bytes = client.encode_all(&frames);
    let writer = client.write_in_background(bytes);
    for _ in 0..200 {
        client.expect_binary(&payload);
    }
    writer.join().expect("writer thread");
}

/// The configured `max_message` itself is accepted.
fn message_at_max_message_is_echoed(backend: Backend) {
    let server = small_message_server(backend);
    let mut client = server.client();
    let payload = binary_payload(MIB);
    client.send_binary(payload.clone());
    client.expect_binary(&payload);
}

fn message_over_max_message(backend: Backend) {
    let server = small_message_server(backend);
    let mut client = server.client();
    client.send_binary(binary_payload(MIB + 1));
    client.expect_close(1009);
}

fn text_over_max_message(backend: Backend) {
    let server = small_message_server(backend);
    let mut client = server.client();
    client.send_text(text_payload(MIB + 1));
    client.expect_close(1009);
}

/// A declared length over the limit is refused from the header alone: the server does not wait
/// for (or buffer) a gigabyte.
fn declared_length_over_limit_is_refused_from_header(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::binary(Vec::new()).length(Length::Declared64(1 << 30)));
    client.expect_close(1009);
}

/// The default limit is 16 MiB: one byte more is refused.
fn message_over_default_limit(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_binary(binary_payload(16 * MIB + 1));
    client.expect_close(1009);
}

fn frame_over_max_frame(backend: Backend) {
    let server = limited_server(backend);
    let mut client = server.client();
    client.send_binary(binary_payload(64 * 1024 + 1));
    client.expect_close(1009);
}

/// Frames within `max_frame` make up a message within `max_message`.
fn fragments_within_max_frame_are_echoed(backend: Backend) {
    let server = limited_server(backend);
    let mut client = server.client();
    let payload = binary_payload(256 * 1024);
    client.send_all(&fragments(op::BINARY, &payload, 64 * 1024));
    client.expect_binary(&payload);
}

/// Fragments that together exceed `max_message`: 1009 without the final fragment.
fn fragmented_message_over_max_message_fails_before_final_fragment(backend: Backend) {
    let server = small_message_server(backend);
    let mut client = server.client();
    let chunk = binary_payload(256 * 1024);
    let mut frames = vec![Frame::binary(chunk.clone()).fin(false)];
    frames.extend((0..4).map(|_| Frame::continuation(&chunk).fin(false)));
    client.send_all(&frames);
    client.expect_close(1009);
}

/// The same with text fragments (the limit applies before UTF-8 assembly).
fn fragmented_text_over_max_message_fails_before_final_fragment(backend: Backend) {
    let server = limited_server(backend);
    let mut client = server.client();
    let chunk = text_payload(60 * 1024);
    let mut frames = vec![Frame::text(&chunk).fin(false)];
    frames.extend((0..20).map(|_| Frame::continuation(&chunk).fin(false)));
    client.send_all(&frames);
    client.expect_close(1009);
}

/// `max_fragments`: one fragment more is a policy violation (1008), before the final fragment.
fn too_many_fragments(backend: Backend) {
    let server = start_server_with(backend, 2, |b| {
        b.limits(Limits {
            max_fragments: Some(10),
            ..Default::default()
        })
    });
    let mut client = server.client();
    let text = "0123456789";
    client.send_all(&fragments(op::TEXT, text.as_bytes(), 1));
    client.expect_text(text);
    let mut frames = fragments(op::TEXT, b"0123456789a", 1);
    frames.last_mut().expect("11 fragments").fin = false;
    client.send_all(&frames);
    client.expect_close(1008);
}

/// Large messages in progress share the server's budget (`Limits::message_budget`): a
/// client whose message would take it past its size is closed with 1013 while another's
/// goes on, and a completed message gives its share back.
fn large_messages_in_progress_share_the_budget(backend: Backend) {
    let server = start_server_with(backend, 2, |b| {
        b.limits(Limits {
            message_budget: MessageBudget::new(MIB),
            ..Default::default()
        })
    });
    let chunk = binary_payload(256 * 1024);
    let open = |n: usize| {
        let mut frames = vec![Frame::binary(chunk.clone()).fin(false)];
        frames.extend((1..n).map(|_| Frame::continuation(&chunk).fin(false)));
        frames
    };
    // A holds 768 KiB of a message: 704 KiB of the budget past its own 64 KiB (the pong
    // says the server has read it all).
    let mut a = server.client();
    a.send_all(&open(3));
    a.send_ping(b"sync");
    a.expect_pong(b"sync");
    // B's 512 KiB would take 448 KiB more: over 1 MiB.
    let mut b = server.client();
    b.send_all(&open(2));
    let close = b.read_close();
    assert_eq!(close.close_code(), Some(1013), "{}", close.describe());
    assert!(
        close.describe().contains("too many large messages"),
        "{}",
        close.describe()
    );
    // A finishes: its 1 MiB message is whole, and its share is given back.
    a.send(Frame::continuation(&chunk));
    a.expect_binary(chunk.repeat(4));
    let mut c = server.client();
    c.send_all(&open(3));
    c.send(Frame::continuation(&chunk));
    c.expect_binary(chunk.repeat(4));
}

/// `idle_timeout`: a silent client gets a Ping; answering it keeps the connection; staying
/// silent after the next one ends it with 1001.
fn idle_connection_is_pinged_then_closed(backend: Backend) {
    let idle_timeout = Duration::from_millis(200);
    let server = start_server_with(backend, 2, |b| {
        b.limits(Limits {
            idle_timeout: Some(idle_timeout),
            ..Default::default()
        })
    });
    let mut client = server.client();
    let ping = client.read_frame();
    assert_eq!(
        ping.opcode,
        op::PING,
        "expected a keep-alive Ping, got {ping:?}"
    );
    client.send(Frame::pong(&ping.payload));
    let ping = client.read_frame();
    assert_eq!(
        ping.opcode,
        op::PING,
        "expected a second keep-alive Ping, got {ping:?}"
    );
    client.expect_close(1001);
}

for_each_backend!(
    large_messages_in_progress_share_the_budget,
    text_4_mib,
    binary_4_mib,
    binary_4_mib_in_64_kib_fragments,
    binary_16_mib_at_default_limit,
    ten_thousand_small_messages_pipelined,
    many_16_kib_binary_messages,
    message_at_max_message_is_echoed,
    message_over_max_message,
    text_over_max_message,
    declared_length_over_limit_is_refused_from_header,
    message_over_default_limit,
    frame_over_max_frame,
    fragments_within_max_frame_are_echoed,
    fragmented_message_over_max_message_fails_before_final_fragment,
    fragmented_text_over_max_message_fails_before_final_fragment,
    too_many_fragments,
    idle_connection_is_pinged_then_closed,
);
