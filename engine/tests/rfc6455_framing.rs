//! RFC 6455 §5.2-5.3 and §5.6-5.7: base framing, payload length encodings, masking, reserved
//! bits and reserved opcodes (Autobahn|Testsuite categories 1, 3 and 4).

use crate::util;

use ringcast::server::Backend;
use util::{
    Frame, Length, binary_payload, check_cases, for_each_backend, op, start_server, text_payload,
};

fn echo_text(backend: Backend, len: usize) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let text = text_payload(len);
    client.send_text(&text);
    client.expect_text(&text);
    client.send_close(1000, "");
    client.expect_close(1000);
}

fn echo_binary(backend: Backend, len: usize) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(len);
    client.send_binary(payload.clone());
    client.expect_binary(&payload);
    client.send_close(1000, "");
    client.expect_close(1000);
}

fn text_len_0(backend: Backend) {
    echo_text(backend, 0);
}
fn text_len_125(backend: Backend) {
    echo_text(backend, 125);
}
fn text_len_126(backend: Backend) {
    echo_text(backend, 126);
}
fn text_len_127(backend: Backend) {
    echo_text(backend, 127);
}
fn text_len_128(backend: Backend) {
    echo_text(backend, 128);
}
fn text_len_65535(backend: Backend) {
    echo_text(backend, 65535);
}
fn text_len_65536(backend: Backend) {
    echo_text(backend, 65536);
}
fn text_len_1_mib(backend: Backend) {
    echo_text(backend, 1 << 20);
}
fn binary_len_0(backend: Backend) {
    echo_binary(backend, 0);
}
fn binary_len_125(backend: Backend) {
    echo_binary(backend, 125);
}
fn binary_len_126(backend: Backend) {
    echo_binary(backend, 126);
}
fn binary_len_127(backend: Backend) {
    echo_binary(backend, 127);
}
fn binary_len_128(backend: Backend) {
    echo_binary(backend, 128);
}
fn binary_len_65535(backend: Backend) {
    echo_binary(backend, 65535);
}
fn binary_len_65536(backend: Backend) {
    echo_binary(backend, 65536);
}
fn binary_len_1_mib(backend: Backend) {
    echo_binary(backend, 1 << 20);
}

/// Autobahn 1.1.8 / 1.2.8: a 64 KiB frame written in chunks of 997 bytes.
fn len_65536_written_in_997_byte_chunks(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let text = text_payload(65536);
    client.send_chunked(Frame::text(&text), 997);
    client.expect_text(&text);
    let payload = binary_payload(65536);
    client.send_chunked(Frame::binary(payload.clone()), 997);
    client.expect_binary(&payload);
}

/// Every header boundary (first byte, length, extended length, key, payload) split by a read.
fn frame_written_one_byte_at_a_time(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    for len in [5, 200, 70_000] {
        let payload = binary_payload(len);
        client.send_chunked(
            Frame::binary(payload.clone()),
            if len > 1000 { 7 } else { 1 },
        );
        client.expect_binary(&payload);
    }
}

/// RFC 6455 §5.7: the masked "Hello" example, byte for byte.
fn rfc_example_masked_hello(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.write_raw(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ]);
    client.expect_text("Hello");
}

/// A zero mask key is a valid key (the payload is sent as is).
fn zero_mask_key(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::text("zero key").key([0; 4]));
    client.expect_text("zero key");
}

/// Several messages in one write are echoed in order.
fn pipelined_messages_in_one_write(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_all(&[
        Frame::text("one"),
        Frame::binary(vec![2; 300]),
        Frame::text(""),
        Frame::binary(binary_payload(70_000)),
        Frame::text("five"),
    ]);
    client.expect_text("one");
    client.expect_binary([2; 300]);
    client.expect_text("");
    client.expect_binary(binary_payload(70_000));
    client.expect_text("five");
}

/// RFC 6455 §5.1: a server MUST close the connection on an unmasked client frame.
fn unmasked_text_frame(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::text("Hello").unmasked());
    client.expect_close(1002);
}

fn unmasked_ping_frame(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::ping("Hello").unmasked());
    client.expect_close(1002);
}

/// RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the length".
fn non_minimal_16_bit_length(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::text("short").length(Length::Ext16));
    client.expect_close(1002);
}

fn non_minimal_64_bit_length_for_7_bit_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::text("short").length(Length::Ext64));
    client.expect_close(1002);
}

fn non_minimal_64_bit_length_for_16_bit_payload(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::binary(binary_payload(65535)).length(Length::Ext64));
    client.expect_close(1002);
}

/// RFC 6455 §5.2: "the most significant bit MUST be 0" in a 64-bit length. Only the header is
/// sent: the server must decide from it.
fn top_bit_of_64_bit_length(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::binary(Vec::new()).length(Length::Declared64(1 << 63 | 5)));
    client.expect_close(1002);
}

/// Autobahn 3.x: RSV bits set without a negotiated extension, on each kind of frame. The
/// message before the bad frame is echoed; the ping after it is not answered.
fn rsv_bits_on_text_frame(backend: Backend) {
    rsv_case(backend, |rsv| Frame::text("bad").rsv(rsv));
}

fn rsv_bits_on_binary_frame(backend: Backend) {
    rsv_case(backend, |rsv| {
        Frame::binary(vec![0, 0xff, 0xfe, 0xfd]).rsv(rsv)
    });
}

fn rsv_bits_on_ping_frame(backend: Backend) {
    rsv_case(backend, |rsv| Frame::ping("bad").rsv(rsv));
}

fn rsv_bits_on_close_frame(backend: Backend) {
    rsv_case(backend, |rsv| Frame::close(1000, "").rsv(rsv));
}

fn rsv_case(backend: Backend, bad_frame: fn(u8) -> Frame) {
    let server = start_server(backend, 2);
    check_cases((1..8).map(|rsv| (format!("rsv {rsv:03b}"), rsv)), |rsv| {
        let mut client = server.client();
        client.send_all(&[
            Frame::text("Hello, world!"),
            bad_frame(rsv),
            Frame::ping("after"),
        ]);
        client.expect_text("Hello, world!");
        client.expect_close(1002);
    });
}

/// Autobahn 3.4: the bad frame written one byte at a time.
fn rsv_bit_frame_written_byte_by_byte(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send_text("Hello, world!");
    client.expect_text("Hello, world!");
    client.send_chunked(Frame::text("bad").rsv(0b100), 1);
    client.expect_close(1002);
}

/// Autobahn 4.1.x: reserved non-control opcodes 3-7, with and without payload.
fn reserved_data_opcodes(backend: Backend) {
    reserved_opcode_case(backend, 0x3..=0x7);
}

/// Autobahn 4.2.x: reserved control opcodes B-F, with and without payload.
fn reserved_control_opcodes(backend: Backend) {
    reserved_opcode_case(backend, 0xB..=0xF);
}

fn reserved_opcode_case(backend: Backend, opcodes: std::ops::RangeInclusive<u8>) {
    let server = start_server(backend, 2);
    let cases = opcodes.flat_map(|opcode| {
        [
            (format!("opcode {opcode:#x} empty"), (opcode, 0)),
            (format!("opcode {opcode:#x} with payload"), (opcode, 20)),
        ]
    });
    check_cases(cases, |(opcode, len)| {
        let mut client = server.client();
        client.send_text("Hello, world!");
        client.expect_text("Hello, world!");
        client.send_all(&[
            Frame::new(opcode, binary_payload(len)),
            Frame::ping("after"),
        ]);
        client.expect_close(1002);
    });
}

/// The same reserved opcode split over writes, after a valid frame in the same write.
fn reserved_opcode_written_byte_by_byte(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let mut bytes = client.encode(&Frame::text("ok"));
    bytes.extend(client.encode(&Frame::new(0x5, "reserved")));
    client.write_chunked(&bytes, 1);
    client.expect_text("ok");
    client.expect_close(1002);
}

/// The echo keeps the message type, whatever the payload looks like.
fn binary_opcode_keeps_type(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    client.send(Frame::new(op::BINARY, "looks like text"));
    client.expect_binary("looks like text");
    client.send(Frame::new(op::TEXT, "is text"));
    client.expect_text("is text");
}

for_each_backend!(
    text_len_0,
    text_len_125,
    text_len_126,
    text_len_127,
    text_len_128,
    text_len_65535,
    text_len_65536,
    text_len_1_mib,
    binary_len_0,
    binary_len_125,
    binary_len_126,
    binary_len_127,
    binary_len_128,
    binary_len_65535,
    binary_len_65536,
    binary_len_1_mib,
    len_65536_written_in_997_byte_chunks,
    frame_written_one_byte_at_a_time,
    rfc_example_masked_hello,
    zero_mask_key,
    pipelined_messages_in_one_write,
    unmasked_text_frame,
    unmasked_ping_frame,
    non_minimal_16_bit_length,
    non_minimal_64_bit_length_for_7_bit_payload,
    non_minimal_64_bit_length_for_16_bit_payload,
    top_bit_of_64_bit_length,
    rsv_bits_on_text_frame,
    rsv_bits_on_binary_frame,
    rsv_bits_on_ping_frame,
    rsv_bits_on_close_frame,
    rsv_bit_frame_written_byte_by_byte,
    reserved_data_opcodes,
    reserved_control_opcodes,
    reserved_opcode_written_byte_by_byte,
    binary_opcode_keeps_type,
);
