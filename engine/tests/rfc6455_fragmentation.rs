//! RFC 6455 §5.4: fragmentation, control frames between fragments, continuation errors
//! (Autobahn|Testsuite category 5).

use crate::util;

use ringcast::server::Backend;
use util::{Frame, binary_payload, for_each_backend, fragments, op, start_server, text_payload};

/// "fragment1" + "fragment2" as a text message.
fn two_text_fragments() -> [Frame; 2] {
    [
        Frame::text("fragment1").fin(false),
        Frame::continuation("fragment2"),
    ]
}

/// Autobahn 5.3: both fragments in one write.
fn text_in_two_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&two_text_fragments());
    client.expect_text("fragment1fragment2");
}

/// Autobahn 5.4: one write per fragment.
fn text_in_two_fragments_written_separately(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    for frame in two_text_fragments() {
        client.send(frame);
    }
    client.expect_text("fragment1fragment2");
}

/// Autobahn 5.5: every fragment written one byte at a time.
fn text_in_two_fragments_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    for frame in two_text_fragments() {
        client.send_chunked(frame, 1);
    }
    client.expect_text("fragment1fragment2");
}

/// Autobahn 5.6-5.8: a ping between the fragments is answered at once, then the message is
/// echoed whole.
fn ping_between_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let [first, last] = two_text_fragments();
    client.send_all(&[first, Frame::ping("pongme!"), last]);
    client.expect_pong("pongme!");
    client.expect_text("fragment1fragment2");
}

fn ping_between_fragments_written_separately(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let [first, last] = two_text_fragments();
    client.send(first);
    client.send_ping("pongme!");
    // The pong comes before the message is complete.
    client.expect_pong("pongme!");
    client.send(last);
    client.expect_text("fragment1fragment2");
}

fn ping_between_fragments_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let [first, last] = two_text_fragments();
    for frame in [first, Frame::ping("pongme!"), last] {
        client.send_chunked(frame, 1);
    }
    client.expect_pong("pongme!");
    client.expect_text("fragment1fragment2");
}

/// Autobahn 5.19-5.20: several pings between several fragments.
fn pings_between_many_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("f1").fin(false),
        Frame::continuation("f2").fin(false),
        Frame::ping("pongme 1!"),
        Frame::continuation("f3").fin(false),
        Frame::continuation("f4").fin(false),
        Frame::ping("pongme 2!"),
        Frame::continuation("f5"),
    ]);
    client.expect_pong("pongme 1!");
    client.expect_pong("pongme 2!");
    client.expect_text("f1f2f3f4f5");
}

/// An unsolicited pong between fragments is ignored and does not break the message.
fn pong_between_fragments_is_ignored(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let [first, last] = two_text_fragments();
    client.send_all(&[first, Frame::pong("unsolicited"), last]);
    client.expect_text("fragment1fragment2");
}

fn binary_in_three_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(3000);
    client.send_all(&[
        Frame::binary(&payload[..1000]).fin(false),
        Frame::continuation(&payload[1000..2000]).fin(false),
        Frame::continuation(&payload[2000..]),
    ]);
    client.expect_binary(&payload);
}

/// Autobahn 6.1.2: a text message made only of empty fragments.
fn empty_fragments_make_an_empty_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("").fin(false),
        Frame::continuation("").fin(false),
        Frame::continuation(""),
    ]);
    client.expect_text("");
    client.send_all(&[
        Frame::binary(Vec::new()).fin(false),
        Frame::continuation(""),
    ]);
    client.expect_binary([]);
}

/// Autobahn 6.1.3: empty first and last fragments around a non-empty one.
fn empty_fragments_around_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("").fin(false),
        Frame::continuation("middle").fin(false),
        Frame::continuation(""),
    ]);
    client.expect_text("middle");
}

fn many_small_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let text = text_payload(1000 * 64);
    client.send_all(&fragments(op::TEXT, text.as_bytes(), 64));
    client.expect_text(&text);
}

/// Messages after a fragmented one are independent of it.
fn messages_after_fragmented_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let [first, last] = two_text_fragments();
    client.send_all(&[
        first,
        last,
        Frame::binary(vec![7; 10]),
        Frame::text("whole"),
    ]);
    client.expect_text("fragment1fragment2");
    client.expect_binary([7; 10]);
    client.expect_text("whole");
}

/// Autobahn 5.2: a fragmented pong is a fragmented control frame.
fn fragmented_pong_is_protocol_error(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::pong("fragment1").fin(false),
        Frame::continuation("fragment2"),
    ]);
    client.expect_close(1002);
}

/// Autobahn 5.9-5.10: a final continuation frame with no message started.
fn continuation_without_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::continuation("non-continuation payload"),
        Frame::text("Hello, world!"),
    ]);
    client.expect_close(1002);
}

/// Autobahn 5.11: the same, written one byte at a time.
fn continuation_without_message_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_chunked(Frame::continuation("non-continuation payload"), 1);
    client.expect_close(1002);
}

/// Autobahn 5.12-5.14: a non-final continuation frame with no message started.
fn non_final_continuation_without_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::continuation("non-continuation payload").fin(false),
        Frame::text("Hello, world!"),
    ]);
    client.expect_close(1002);
}

/// Autobahn 5.15: a continuation after the message was finished; the finished message is
/// echoed first.
fn continuation_after_finished_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("fragment1").fin(false),
        Frame::continuation("fragment2"),
        Frame::continuation("fragment3").fin(false),
        Frame::text("fragment4"),
    ]);
    client.expect_text("fragment1fragment2");
    client.expect_close(1002);
}

/// Autobahn 5.16-5.17: stray continuations before a fragmented message.
fn stray_continuations_before_fragmented_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::continuation("fragment1").fin(false),
        Frame::text("fragment2").fin(false),
        Frame::continuation("fragment3"),
    ]);
    client.expect_close(1002);
}

/// Autobahn 5.18: a new text frame while a message is in progress.
fn text_frame_during_fragmented_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("fragment1").fin(false),
        Frame::text("fragment2"),
    ]);
    client.expect_close(1002);
}

fn non_final_text_frame_during_fragmented_message(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("fragment1").fin(false),
        Frame::text("fragment2").fin(false),
        Frame::continuation("fragment3"),
    ]);
    client.expect_close(1002);
}

fn binary_frame_during_fragmented_text(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("fragment1").fin(false),
        Frame::binary(vec![1, 2, 3]),
    ]);
    client.expect_close(1002);
}

/// A close between fragments ends the connection; the partial message is never echoed.
fn close_between_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[Frame::text("partial").fin(false), Frame::close(1000, "")]);
    client.expect_close(1000);
}

for_each_backend!(
    text_in_two_fragments,
    text_in_two_fragments_written_separately,
    text_in_two_fragments_written_one_byte_at_a_time,
    ping_between_fragments,
    ping_between_fragments_written_separately,
    ping_between_fragments_written_one_byte_at_a_time,
    pings_between_many_fragments,
    pong_between_fragments_is_ignored,
    binary_in_three_fragments,
    empty_fragments_make_an_empty_message,
    empty_fragments_around_payload,
    many_small_fragments,
    messages_after_fragmented_message,
    fragmented_pong_is_protocol_error,
    continuation_without_message,
    continuation_without_message_written_one_byte_at_a_time,
    non_final_continuation_without_message,
    continuation_after_finished_message,
    stray_continuations_before_fragmented_message,
    text_frame_during_fragmented_message,
    non_final_text_frame_during_fragmented_message,
    binary_frame_during_fragmented_text,
    close_between_fragments,
);
