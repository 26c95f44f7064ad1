//! Interoperability with an independent client implementation: `tungstenite`.

use crate::util;

use std::net::TcpStream;

use ringcast::server::Backend;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error, Message, WebSocket};
use util::{TIMEOUT, TestServer, binary_payload, for_each_backend, start_server, text_payload};

fn connect(server: &TestServer) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set_read_timeout");
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("set_write_timeout");
    let url = format!("ws://{}/echo", server.addr());
    let (socket, response) = tungstenite::client(url, stream).expect("tungstenite handshake");
    assert_eq!(response.status(), 101);
    socket
}

#[track_caller]
fn round_trip(socket: &mut WebSocket<TcpStream>, message: Message) {
    socket.send(message.clone()).expect("send");
    let echoed = socket.read().expect("read");
    match (&echoed, &message) {
        (Message::Text(a), Message::Text(b)) => util::assert_payload(a.as_bytes(), b.as_bytes()),
        (Message::Binary(a), Message::Binary(b)) => util::assert_payload(a, b),
        _ => panic!(
            "sent {} message, got {echoed:?}",
            if message.is_text() {
                "a text"
            } else {
                "a binary"
            }
        ),
    }
}

fn text_round_trip(backend: Backend) {
    let server = start_server(backend, 2);
    let mut socket = connect(&server);
    round_trip(&mut socket, Message::text("Hello, κόσμε 𝄞"));
    round_trip(&mut socket, Message::text(text_payload(100_000)));
}

fn binary_round_trip(backend: Backend) {
    let server = start_server(backend, 2);
    let mut socket = connect(&server);
    round_trip(&mut socket, Message::binary(binary_payload(1000)));
    round_trip(&mut socket, Message::binary(binary_payload(70_000)));
}

fn empty_messages(backend: Backend) {
    let server = start_server(backend, 2);
    let mut socket = connect(&server);
    round_trip(&mut socket, Message::text(""));
    round_trip(&mut socket, Message::binary(Vec::new()));
}

fn binary_16_mib(backend: Backend) {
    let server = start_server(backend, 2);
    let mut socket = connect(&server);
    round_trip(&mut socket, Message::binary(binary_payload(16 << 20)));
}

fn ping_is_answered(backend: Backend) {
    let server = start_server(backend, 2);
    let mut socket = connect(&server);
    socket
        .send(Message::Ping(b"are you there?".to_vec().into()))
        .expect("send ping");
    match socket.read().expect("read") {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there?"),
        other => panic!("expected a pong, got {other:?}"),
    }
    round_trip(&mut socket, Message::text("still open"));
}

fn close_1000_is_echoed(backend: Backend) {
    let server = start_server(backend, 2);
    let mut socket = connect(&server);
    round_trip(&mut socket, Message::text("before close"));
    socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .expect("close");
    match socket.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close echo, got {other:?}"),
    }
    // The server then closes TCP; tungstenite reports the completed close.
    match socket.read() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

for_each_backend!(
    text_round_trip,
    binary_round_trip,
    empty_messages,
    binary_16_mib,
    ping_is_answered,
    close_1000_is_echoed,
);
