//! Miscellaneous behaviour (Autobahn|Testsuite category 10) and connection independence.

use crate::util;

use std::thread;

use ringcast::server::Backend;
use util::{Frame, binary_payload, for_each_backend, fragments, op, start_server, text_payload};

/// Autobahn 10.1.1: a 64 KiB text message auto-fragmented into 1300-byte frames.
fn text_64_kib_in_1300_byte_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let text = text_payload(64 * 1024);
    client.send_all(&fragments(op::TEXT, text.as_bytes(), 1300));
    client.expect_text(&text);
}

fn binary_64_kib_in_1300_byte_fragments(backend: Backend) {
    let server = start_server(backend, 2);
    let mut client = server.client();
    let payload = binary_payload(64 * 1024);
    client.send_all(&fragments(op::BINARY, &payload, 1300));
    client.expect_binary(&payload);
}

/// Clients spread over both reactors, each with its own interleaving of messages, pings and
/// fragments, get exactly their own echoes.
fn concurrent_clients_are_independent(backend: Backend) {
    let server = start_server(backend, 2);
    thread::scope(|scope| {
        for c in 0..8 {
            let server = &server;
            scope.spawn(move || {
                let mut client = server.client();
                for i in 0..50 {
                    let text = format!("client {c} message {i}");
                    client.send_all(&[
                        Frame::text(&text[..5]).fin(false),
                        Frame::ping(format!("{c}/{i}")),
                        Frame::continuation(&text[5..]),
                    ]);
                    client.expect_pong(format!("{c}/{i}"));
                    client.expect_text(&text);
                }
                client.send_close(1000, "");
                client.expect_close(1000);
            });
        }
    });
}

for_each_backend!(
    text_64_kib_in_1300_byte_fragments,
    binary_64_kib_in_1300_byte_fragments,
    concurrent_clients_are_independent,
);
