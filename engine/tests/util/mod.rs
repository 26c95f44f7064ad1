//! Shared helpers of the integration suite: an in-process test server, a raw RFC 6455 client
//! on `std::net::TcpStream` (frames of any shape, including invalid ones), HTTP helpers for the
//! handshake tests, and `for_each_backend!`.
//!
//! # Running the suite against another server
//!
//! With `RINGCAST_TEST_URL=ws://HOST:PORT` set, `start_server*` start nothing and every client
//! connects to that server instead (only `ws://` with a socket address; the path is ignored,
//! each test chooses its own). Builder settings (limits, handshake config, threads) do not reach
//! an external server, so the tests that rely on them may legitimately fail there:
//!
//! ```sh
//! RINGCAST_TEST_URL=ws://127.0.0.1:9555 cargo test -p ringcast --test integration rfc6455_framing::
//! ```
//!
//! # Conventions
//!
//! Every socket read has a generous timeout ([`TIMEOUT`]); nothing sleeps to synchronise. Frames
//! from the server must be unmasked, carry no RSV bits and use the minimal length encoding.
//! Writes that fail because the server already closed the connection (EPIPE, ECONNRESET) are
//! tolerated: a server may close as soon as it sees a violation, and the next `expect_*` call
//! tells what it actually sent.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::any::Any;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ringcast::server::Backend;
use ringcast::{Engine, EngineBuilder, EngineHandle};
use sha1::{Digest, Sha1};

/// Read and write timeout of every test socket: generous, a test never waits this long unless
/// the server misbehaves.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable naming an external server to test instead of the in-process engine.
pub(crate) const URL_ENV: &str = "RINGCAST_TEST_URL";

/// The magic GUID of RFC 6455 §1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcodes (RFC 6455 §5.2), as raw numbers so that reserved ones can be sent too.
pub(crate) mod op {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

mod backend;
mod client;
mod frame;
mod http;
mod payload;
mod received;

pub(crate) use backend::for_each_backend;
pub(crate) use backend::*;
pub(crate) use client::*;
pub(crate) use frame::*;
pub(crate) use http::*;
pub(crate) use payload::*;
pub(crate) use received::*;
