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
//! RINGCAST_TEST_URL=ws://127.0.0.1:9555 cargo test -p ringcast --test rfc6455_framing
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

// ---------------------------------------------------------------------------------------------
// Backends and the test server
// ---------------------------------------------------------------------------------------------

/// Turns test functions `fn name(backend: Backend)` into one `#[test]` per backend, named
/// `name::epoll` and `name::uring`. Adding a backend is one line below.
macro_rules! for_each_backend {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn epoll() {
                    crate::util::run_on(ringcast::server::Backend::Epoll, super::$name);
                }
                #[test]
                fn uring() {
                    crate::util::run_on(ringcast::server::Backend::Uring, super::$name);
                }
            }
        )+
    };
}
pub(crate) use for_each_backend;

/// The running test's name (libtest names its threads after the tests).
fn current_test() -> String {
    thread::current().name().unwrap_or("a test").to_owned()
}

/// Runs one test body on one backend. A backend the kernel refuses (io_uring: EPERM/ENOSYS
/// from `io_uring_setup`, a missing opcode) is skipped with the printed reason, except under
/// `CI=true`, where a skip is a failure (DESIGN.md).
pub(crate) fn run_on(backend: Backend, test: fn(Backend)) {
    if backend == Backend::Uring
        && external_addr().is_none()
        && ringcast::reactor::skip_without_uring(&current_test())
    {
        return;
    }
    test(backend);
}

/// A running server for one test: the in-process engine, or the external one of [`URL_ENV`].
/// Dropping it shuts the engine down.
pub(crate) struct TestServer {
    addr: SocketAddr,
    /// In a mutex so that tests can share `&TestServer` between threads.
    handle: Mutex<Option<EngineHandle>>,
}

impl TestServer {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client connected to `/` with a completed handshake.
    pub(crate) fn client(&self) -> Client {
        self.client_at("/")
    }

    /// A client connected to `path` with a completed handshake.
    pub(crate) fn client_at(&self, path: &str) -> Client {
        let mut client = Client::connect_tcp(self.addr);
        let response = client.handshake(&Request::new(path));
        client.check_upgrade(&response);
        client
    }

    /// The engine's counters (`None` for an external server).
    pub(crate) fn stats(&self) -> Option<ringcast::server::Stats> {
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        handle.as_ref().map(EngineHandle::stats)
    }

    /// A TCP connection with no handshake yet.
    pub(crate) fn tcp(&self) -> Client {
        Client::connect_tcp(self.addr)
    }

    /// Sends a raw HTTP request on a new connection and reads the whole response.
    pub(crate) fn http(&self, request: &[u8]) -> HttpResponse {
        let mut client = Client::connect_tcp(self.addr);
        client.write_raw(request);
        client.read_http_response()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.get_mut().map_or(None, Option::take);
        if let Some(handle) = handle {
            handle.shutdown();
        }
    }
}

/// Starts an echo server with default settings and `threads` reactors.
pub(crate) fn start_server(backend: Backend, threads: usize) -> TestServer {
    start_server_with(backend, threads, |builder| builder)
}

/// Starts an echo server; `configure` adjusts the builder (limits, handshake settings).
pub(crate) fn start_server_with(
    backend: Backend,
    threads: usize,
    configure: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> TestServer {
    if let Some(addr) = external_addr() {
        return TestServer {
            addr,
            handle: Mutex::new(None),
        };
    }
    let builder = Engine::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(threads)
        .backend(backend);
    let handle = configure(builder)
        .start()
        .unwrap_or_else(|e| panic!("engine failed to start on {backend:?}: {e}"));
    TestServer {
        addr: handle.local_addr(),
        handle: Mutex::new(Some(handle)),
    }
}

fn external_addr() -> Option<SocketAddr> {
    let url = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty())?;
    let rest = url
        .strip_prefix("ws://")
        .unwrap_or_else(|| panic!("{URL_ENV}={url}: only ws://HOST:PORT is supported"));
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = authority
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{URL_ENV}={url}: cannot resolve {authority}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{URL_ENV}={url}: no address for {authority}"));
    Some(addr)
}

/// Runs every case, even after failures, then fails with the list of failing cases. For
/// table-driven tests (close codes, UTF-8 vectors, reserved opcodes). Cases run on their own
/// connections, up to 32 at a time, so a server that never answers costs one [`TIMEOUT`] per
/// batch rather than per case.
#[track_caller]
pub(crate) fn check_cases<T: Send>(
    cases: impl IntoIterator<Item = (String, T)>,
    check: impl Fn(T) + Sync,
) {
    let check = &check;
    let mut cases = cases.into_iter().peekable();
    let mut failed = Vec::new();
    let mut total = 0;
    while cases.peek().is_some() {
        let batch: Vec<(String, T)> = cases.by_ref().take(32).collect();
        total += batch.len();
        thread::scope(|scope| {
            let running: Vec<_> = batch
                .into_iter()
                .map(|(name, case)| (name, scope.spawn(move || check(case))))
                .collect();
            for (name, thread) in running {
                if let Err(e) = thread.join() {
                    failed.push(format!("  {name}: {}", panic_message(&*e)));
                }
            }
        });
    }
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn panic_message(e: &(dyn Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// `len` deterministic bytes covering all byte values.
pub(crate) fn binary_payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

/// Valid UTF-8 of exactly `len` bytes, mixing 1- to 4-byte sequences so that they straddle
/// frame and read boundaries.
pub(crate) fn text_payload(len: usize) -> String {
    const PATTERN: &str = "Hello-µ@ßöäü-κόσμε-€-𝄞-UTF-8!! ";
    let mut s = String::with_capacity(len);
    'fill: while s.len() < len {
        for c in PATTERN.chars() {
            if s.len() + c.len_utf8() > len {
                break 'fill;
            }
            s.push(c);
        }
    }
    while s.len() < len {
        s.push('x');
    }
    s
}

/// A close frame payload: the code in network order, then the reason.
pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// The `Sec-WebSocket-Accept` value for a key (RFC 6455 §4.2.2), computed independently of the
/// engine.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Formats bytes as hex for case names and messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Frames the client sends
// ---------------------------------------------------------------------------------------------

/// How a client frame is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Masking {
    /// A fresh key from the client's generator (the normal case).
    Auto,
    /// This key.
    Key([u8; 4]),
    /// No mask bit, no key: a protocol violation for a client.
    None,
}

/// How the payload length is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    /// The minimal encoding (7, 16 or 64 bits).
    Minimal,
    /// Always the 16-bit form (126), even when 7 bits would do.
    Ext16,
    /// Always the 64-bit form (127), even when fewer bits would do.
    Ext64,
    /// The 64-bit form declaring this length, whatever the payload actually sent.
    Declared64(u64),
}

/// A frame as the client will write it; any field may be invalid on purpose.
#[derive(Clone)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    /// The three RSV bits, RSV1 = 0b100.
    pub(crate) rsv: u8,
    /// Four bits; reserved values are allowed.
    pub(crate) opcode: u8,
    pub(crate) masking: Masking,
    pub(crate) length: Length,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    pub(crate) fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            masking: Masking::Auto,
            length: Length::Minimal,
            payload: payload.into(),
        }
    }
    pub(crate) fn text(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::TEXT, payload.as_ref())
    }
    pub(crate) fn binary(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(op::BINARY, payload)
    }
    pub(crate) fn continuation(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::CONTINUATION, payload.as_ref())
    }
    pub(crate) fn ping(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::PING, payload.as_ref())
    }
    pub(crate) fn pong(payload: impl AsRef<[u8]>) -> Self {
        Self::new(op::PONG, payload.as_ref())
    }
    /// A close frame with a code and reason.
    pub(crate) fn close(code: u16, reason: impl AsRef<[u8]>) -> Self {
        Self::new(op::CLOSE, close_payload(code, reason.as_ref()))
    }
    /// A close frame with an empty payload.
    pub(crate) fn close_empty() -> Self {
        Self::new(op::CLOSE, Vec::new())
    }
    pub(crate) fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }
    pub(crate) fn rsv(mut self, rsv: u8) -> Self {
        assert!(rsv < 8, "three RSV bits");
        self.rsv = rsv;
        self
    }
    pub(crate) fn unmasked(mut self) -> Self {
        self.masking = Masking::None;
        self
    }
    pub(crate) fn key(mut self, key: [u8; 4]) -> Self {
        self.masking = Masking::Key(key);
        self
    }
    pub(crate) fn length(mut self, length: Length) -> Self {
        self.length = length;
        self
    }

    /// The wire bytes, masking with `auto_key` when the masking is [`Masking::Auto`].
    pub(crate) fn encode(&self, auto_key: [u8; 4]) -> Vec<u8> {
        let len = self.payload.len() as u64;
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 0xF));
        let mask_bit = if self.masking == Masking::None {
            0
        } else {
            0x80
        };
        match self.length {
            Length::Minimal if len < 126 => out.push(mask_bit | len as u8),
            Length::Minimal if len <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Length::Minimal | Length::Ext64 => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Length::Ext16 => {
                let len = u16::try_from(len).expect("payload too long for a 16-bit length");
                out.push(mask_bit | 126);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Length::Declared64(declared) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&declared.to_be_bytes());
            }
        }
        let key = match self.masking {
            Masking::Auto => Some(auto_key),
            Masking::Key(key) => Some(key),
            Masking::None => None,
        };
        match key {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("fin", &self.fin)
            .field("rsv", &self.rsv)
            .field("opcode", &self.opcode)
            .field("masking", &self.masking)
            .field("length", &self.length)
            .field("payload", &Abbrev(&self.payload))
            .finish()
    }
}

/// Debug-prints at most 48 bytes of a payload.
struct Abbrev<'a>(&'a [u8]);

impl fmt::Debug for Abbrev<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(48)];
        write!(f, "{} bytes [{}", self.0.len(), hex(shown))?;
        if shown.len() < self.0.len() {
            write!(f, " …")?;
        }
        write!(f, "]")
    }
}

/// A message of `opcode` split into fragments of `size` bytes (the last may be shorter), like a
/// client that auto-fragments. An empty payload gives one empty frame.
pub(crate) fn fragments(opcode: u8, payload: &[u8], size: usize) -> Vec<Frame> {
    if payload.is_empty() {
        return vec![Frame::new(opcode, Vec::new())];
    }
    let count = payload.len().div_ceil(size);
    payload
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            Frame::new(if i == 0 { opcode } else { op::CONTINUATION }, chunk).fin(i == count - 1)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Frames the server sends
// ---------------------------------------------------------------------------------------------

/// A frame read from the server.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl Received {
    /// The code of a close frame, `None` for an empty close payload.
    pub(crate) fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
    fn describe(&self) -> String {
        match self.opcode {
            op::CLOSE => format!(
                "Close(code {:?}, reason {:?})",
                self.close_code(),
                String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default())
            ),
            _ => format!("{self:?}"),
        }
    }
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("fin", &self.fin)
            .field("rsv", &self.rsv)
            .field("opcode", &self.opcode)
            .field("payload", &Abbrev(&self.payload))
            .finish()
    }
}

/// The total length of the server frame at the start of `buf`, once its header is complete.
/// Panics when the header breaks what a server must do (RFC 6455 §5.1, §5.2).
fn server_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(
        buf[1] & 0x80,
        0,
        "server frame is masked (RFC 6455 §5.1): header {}",
        hex(&buf[..2])
    );
    let (len, header) = match buf[1] & 0x7F {
        126 => {
            let ext = buf.get(2..4)?;
            let len = u64::from(u16::from_be_bytes([ext[0], ext[1]]));
            assert!(len >= 126, "server used a non-minimal 16-bit length {len}");
            (len, 4)
        }
        127 => {
            let ext: [u8; 8] = buf.get(2..10)?.try_into().expect("8 bytes");
            let len = u64::from_be_bytes(ext);
            assert!(
                len > 0xFFFF,
                "server used a non-minimal 64-bit length {len}"
            );
            assert!(len >> 63 == 0, "server set the top bit of a 64-bit length");
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    Some(header + usize::try_from(len).expect("frame length fits usize"))
}

// ---------------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------------

/// A raw WebSocket client over a blocking `TcpStream`.
pub(crate) struct Client {
    stream: TcpStream,
    /// Bytes read but not yet consumed.
    rbuf: Vec<u8>,
    rng: u32,
    sent_close: bool,
    /// A write failed because the server had closed or reset the connection.
    write_failed: bool,
}

impl Client {
    /// A TCP connection, no handshake.
    pub(crate) fn connect_tcp(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Self::from_stream(stream)
    }

    /// A TCP connection from the local IPv4 address `from` (e.g. 127.0.0.2, to be another
    /// client address on loopback), no handshake.
    pub(crate) fn connect_tcp_from(addr: SocketAddr, from: std::net::Ipv4Addr) -> Self {
        use std::os::fd::FromRawFd;
        let SocketAddr::V4(to) = addr else {
            panic!("connect_tcp_from: {addr} is not IPv4");
        };
        let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: plain socket calls on a descriptor this function owns; the addresses are
        // valid `sockaddr_in`s of the length given.
        let stream = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let stream = TcpStream::from_raw_fd(fd);
            let local = sin(from, 0);
            let r = libc::bind(fd, (&raw const local).cast(), len);
            assert!(r == 0, "bind {from}: {}", io::Error::last_os_error());
            let remote = sin(*to.ip(), to.port());
            let r = libc::connect(fd, (&raw const remote).cast(), len);
            assert!(
                r == 0,
                "connect {addr} from {from}: {}",
                io::Error::last_os_error()
            );
            stream
        };
        Self::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("set_write_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        let port = stream.local_addr().map_or(1, |a| a.port());
        Self {
            stream,
            rbuf: Vec::new(),
            rng: 0x9E37_79B9 ^ u32::from(port),
            sent_close: false,
            write_failed: false,
        }
    }

    fn next_u32(&mut self) -> u32 {
        // xorshift32: deterministic, never zero.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    /// A fresh random `Sec-WebSocket-Key`.
    pub(crate) fn new_key(&mut self) -> String {
        let mut nonce = [0u8; 16];
        for chunk in nonce.chunks_mut(4) {
            chunk.copy_from_slice(&self.next_u32().to_be_bytes());
        }
        base64::engine::general_purpose::STANDARD.encode(nonce)
    }

    // ----- HTTP -----

    /// Writes `request` and reads the response head; bytes after the head stay buffered as
    /// frame data.
    pub(crate) fn handshake(&mut self, request: &Request) -> HttpResponse {
        self.write_raw(&request.to_bytes());
        self.read_http_head()
    }

    /// Asserts `response` accepts the upgrade of a request sent with `key`.
    #[track_caller]
    pub(crate) fn check_upgrade_with_key(&self, response: &HttpResponse, key: &str) {
        assert_eq!(response.status, 101, "handshake refused: {response:?}");
        let upgrade = response.header("upgrade").unwrap_or_default();
        assert!(
            upgrade.eq_ignore_ascii_case("websocket"),
            "Upgrade: {upgrade:?}"
        );
        let connection = response.header("connection").unwrap_or_default();
        assert!(
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
            "Connection: {connection:?}"
        );
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(&*accept_key(key))
        );
        assert_eq!(
            response.header("sec-websocket-extensions"),
            None,
            "no extension was offered"
        );
    }

    #[track_caller]
    fn check_upgrade(&self, response: &HttpResponse) {
        self.check_upgrade_with_key(response, Request::DEFAULT_KEY);
    }

    /// Reads an HTTP response head (up to `\r\n\r\n`).
    #[track_caller]
    pub(crate) fn read_http_head(&mut self) -> HttpResponse {
        let head_len = loop {
            if let Some(i) = self.rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.rbuf.len() < 64 * 1024,
                "HTTP response head over 64 KiB"
            );
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed before the end of the HTTP response head; got {:?}",
                    String::from_utf8_lossy(&self.rbuf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "reading the HTTP response head: {e}; got {:?}",
                    String::from_utf8_lossy(&self.rbuf)
                ),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&self.rbuf[..head_len]) {
            Ok(httparse::Status::Complete(_)) => {}
            other => panic!(
                "malformed HTTP response head ({other:?}): {:?}",
                String::from_utf8_lossy(&self.rbuf[..head_len])
            ),
        }
        let response = HttpResponse {
            version: parsed.version.unwrap_or_default(),
            status: parsed.code.unwrap_or_default(),
            reason: parsed.reason.unwrap_or_default().to_owned(),
            headers: parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
        };
        self.rbuf.drain(..head_len);
        response
    }

    /// Reads a whole HTTP response: the head, then a body framed by `Content-Length` or by the
    /// end of the connection.
    #[track_caller]
    pub(crate) fn read_http_response(&mut self) -> HttpResponse {
        let mut response = self.read_http_head();
        if let Some(len) = response.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("Content-Length: {len:?}"));
            while self.rbuf.len() < len {
                match self.fill() {
                    Ok(0) => panic!("body truncated at {} of {len} bytes", self.rbuf.len()),
                    Ok(_) => {}
                    Err(e) => panic!("reading the body: {e}"),
                }
            }
            response.body = self.rbuf.drain(..len).collect();
        } else {
            self.read_to_eof("the end of a body without Content-Length");
            response.body = std::mem::take(&mut self.rbuf);
        }
        response
    }

    /// Reads until the server closes the connection; returns the HTTP response it sent first,
    /// if any.
    #[track_caller]
    pub(crate) fn read_http_response_or_eof(&mut self) -> Option<HttpResponse> {
        self.read_to_eof("the server to drop the connection");
        if self.rbuf.is_empty() {
            return None;
        }
        let mut response = self.read_http_head();
        response.body = std::mem::take(&mut self.rbuf);
        Some(response)
    }

    /// Reads everything until EOF or ECONNRESET, within the read timeout.
    #[track_caller]
    fn read_to_eof(&mut self, what: &str) {
        loop {
            match self.fill() {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_reset(&e) => return,
                Err(e) if is_timeout(&e) => panic!("waited in vain for {what}"),
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    }

    // ----- writing -----

    /// Writes bytes as they are.
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            self.write_error(e);
        }
    }

    /// Writes bytes in chunks of `chunk` bytes, one write (and TCP segment, with NODELAY) each.
    pub(crate) fn write_chunked(&mut self, bytes: &[u8], chunk: usize) {
        for piece in bytes.chunks(chunk) {
            if self.write_failed {
                return;
            }
            self.write_raw(piece);
        }
    }

    fn write_error(&mut self, e: io::Error) {
        if is_reset(&e) || e.kind() == ErrorKind::BrokenPipe {
            self.write_failed = true;
        } else {
            panic!("write failed: {e}");
        }
    }

    /// Whether a write failed because the server closed the connection.
    pub(crate) fn write_failed(&self) -> bool {
        self.write_failed
    }

    /// The wire bytes of `frame`, with a fresh mask key.
    pub(crate) fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        if frame.opcode == op::CLOSE {
            self.sent_close = true;
        }
        let key = self.next_u32().to_be_bytes();
        frame.encode(key)
    }

    /// Encodes all frames into one buffer.
    pub(crate) fn encode_all(&mut self, frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| self.encode(f)).collect()
    }

    /// Sends one frame in one write.
    pub(crate) fn send(&mut self, frame: Frame) {
        let bytes = self.encode(&frame);
        self.write_raw(&bytes);
    }

    /// Sends frames in one write.
    pub(crate) fn send_all(&mut self, frames: &[Frame]) {
        let bytes = self.encode_all(frames);
        self.write_raw(&bytes);
    }

    /// Sends one frame in writes of `chunk` bytes.
    pub(crate) fn send_chunked(&mut self, frame: Frame, chunk: usize) {
        let bytes = self.encode(&frame);
        self.write_chunked(&bytes, chunk);
    }

    pub(crate) fn send_text(&mut self, text: impl AsRef<[u8]>) {
        self.send(Frame::text(text));
    }

    pub(crate) fn send_binary(&mut self, payload: impl Into<Vec<u8>>) {
        self.send(Frame::binary(payload));
    }

    pub(crate) fn send_ping(&mut self, payload: impl AsRef<[u8]>) {
        self.send(Frame::ping(payload));
    }

    pub(crate) fn send_close(&mut self, code: u16, reason: impl AsRef<[u8]>) {
        self.send(Frame::close(code, reason));
    }

    /// Writes `bytes` from another thread while this thread reads (for pipelines larger than
    /// the socket buffers). Join the handle at the end of the test.
    pub(crate) fn write_in_background(&mut self, bytes: Vec<u8>) -> JoinHandle<()> {
        let mut stream = self.stream.try_clone().expect("clone the stream");
        thread::spawn(move || {
            if let Err(e) = stream.write_all(&bytes) {
                assert!(
                    is_reset(&e) || e.kind() == ErrorKind::BrokenPipe,
                    "background write failed: {e}"
                );
            }
        })
    }

    // ----- reading -----

    /// Reads once into the buffer.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next frame from the server.
    #[track_caller]
    pub(crate) fn read_frame(&mut self) -> Received {
        let total = loop {
            if let Some(total) = server_frame_len(&self.rbuf) {
                if self.rbuf.len() >= total {
                    break total;
                }
                self.rbuf.reserve(total - self.rbuf.len());
            }
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed by the server while waiting for a frame ({} bytes pending: {})",
                    self.rbuf.len(),
                    hex(&self.rbuf[..self.rbuf.len().min(32)])
                ),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    panic!(
                        "no frame from the server within {TIMEOUT:?} ({} bytes pending)",
                        self.rbuf.len()
                    )
                }
                Err(e) => panic!("reading a frame: {e}"),
            }
        };
        let header_len = match self.rbuf[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let frame = Received {
            fin: self.rbuf[0] & 0x80 != 0,
            rsv: (self.rbuf[0] >> 4) & 7,
            opcode: self.rbuf[0] & 0xF,
            payload: self.rbuf[header_len..total].to_vec(),
        };
        self.rbuf.drain(..total);
        assert_eq!(
            frame.rsv, 0,
            "server set RSV bits without an extension: {frame:?}"
        );
        frame
    }

    /// Expects the next frame to be a complete message: one unfragmented text or binary frame.
    #[track_caller]
    pub(crate) fn expect_message(&mut self, opcode: u8, payload: &[u8]) {
        let frame = self.read_frame();
        assert!(
            frame.opcode == op::TEXT || frame.opcode == op::BINARY,
            "expected a {} message of {} bytes, got {}",
            opcode_name(opcode),
            payload.len(),
            frame.describe()
        );
        assert!(
            frame.fin,
            "echo must be a single unfragmented frame, got {frame:?}"
        );
        assert_eq!(
            opcode_name(frame.opcode),
            opcode_name(opcode),
            "message type; got {frame:?}"
        );
        assert_payload(&frame.payload, payload);
    }

    #[track_caller]
    pub(crate) fn expect_text(&mut self, payload: impl AsRef<[u8]>) {
        self.expect_message(op::TEXT, payload.as_ref());
    }

    #[track_caller]
    pub(crate) fn expect_binary(&mut self, payload: impl AsRef<[u8]>) {
        self.expect_message(op::BINARY, payload.as_ref());
    }

    #[track_caller]
    pub(crate) fn expect_pong(&mut self, payload: impl AsRef<[u8]>) {
        let frame = self.read_frame();
        assert_eq!(
            frame.opcode,
            op::PONG,
            "expected a Pong, got {}",
            frame.describe()
        );
        assert!(frame.fin, "control frames are never fragmented: {frame:?}");
        assert_payload(&frame.payload, payload.as_ref());
    }

    /// Reads the next frame, which must be a well-formed Close (valid payload length, code and
    /// reason); returns it.
    #[track_caller]
    pub(crate) fn read_close(&mut self) -> Received {
        let frame = self.read_frame();
        assert_eq!(
            frame.opcode,
            op::CLOSE,
            "expected a Close, got {}",
            frame.describe()
        );
        assert!(frame.fin, "control frames are never fragmented: {frame:?}");
        assert!(
            frame.payload.len() <= 125,
            "close payload over 125 bytes: {frame:?}"
        );
        assert_ne!(
            frame.payload.len(),
            1,
            "close payload of one byte: {frame:?}"
        );
        if let Some(code) = frame.close_code() {
            assert!(
                is_valid_close_code(code),
                "server sent close code {code}, invalid on the wire"
            );
            assert!(
                std::str::from_utf8(&frame.payload[2..]).is_ok(),
                "close reason is not UTF-8: {frame:?}"
            );
        }
        frame
    }

    /// Expects a Close with `code` as the next frame, answers it with a Close (unless this
    /// client already sent one) and expects the server to close the TCP connection.
    #[track_caller]
    pub(crate) fn expect_close(&mut self, code: u16) {
        let frame = self.read_close();
        assert_eq!(
            frame.close_code(),
            Some(code),
            "close code; got {}",
            frame.describe()
        );
        self.finish_close(code);
    }

    /// Like [`Self::expect_close`] for the answer to an empty or 1000 close: accepts an empty
    /// Close or a 1000.
    #[track_caller]
    pub(crate) fn expect_normal_close(&mut self) {
        let frame = self.read_close();
        let code = frame.close_code();
        assert!(
            code.is_none() || code == Some(1000),
            "expected an empty Close or 1000, got {}",
            frame.describe()
        );
        self.finish_close(1000);
    }

    #[track_caller]
    fn finish_close(&mut self, code: u16) {
        if !self.sent_close {
            self.send_close(code, "");
        }
        self.expect_eof();
    }

    /// Expects the server to close the TCP connection: a read returns 0 or ECONNRESET within
    /// [`TIMEOUT`], with no byte before it.
    #[track_caller]
    pub(crate) fn expect_eof(&mut self) {
        let start = Instant::now();
        loop {
            assert!(
                self.rbuf.is_empty(),
                "server sent bytes after its Close or where the connection should end: {}",
                hex(&self.rbuf[..self.rbuf.len().min(32)])
            );
            match self.fill() {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_reset(&e) => return,
                Err(e) if is_timeout(&e) => panic!(
                    "the server did not close the TCP connection within {:?}",
                    start.elapsed()
                ),
                Err(e) => panic!("waiting for the server to close TCP: {e}"),
            }
        }
    }

    /// Expects nothing from the server for the read timeout (set it short first): no frame and
    /// no close. For checking that something does not happen.
    #[track_caller]
    pub(crate) fn expect_no_frame(&mut self) {
        assert!(
            self.rbuf.is_empty(),
            "unexpected bytes from the server: {}",
            hex(&self.rbuf)
        );
        match self.fill() {
            Ok(0) => panic!("the server closed the connection"),
            Ok(_) => panic!("unexpected bytes from the server: {}", hex(&self.rbuf)),
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("reading: {e}"),
        }
    }

    /// Sets the read timeout (to measure how fast the server closes).
    pub(crate) fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Close codes a peer may send (RFC 6455 §7.4): 1000-1003, 1007-1014, 3000-4999.
pub(crate) fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn opcode_name(opcode: u8) -> &'static str {
    match opcode {
        op::CONTINUATION => "continuation",
        op::TEXT => "text",
        op::BINARY => "binary",
        op::CLOSE => "close",
        op::PING => "ping",
        op::PONG => "pong",
        _ => "reserved",
    }
}

/// Compares payloads without printing megabytes on failure.
#[track_caller]
pub(crate) fn assert_payload(got: &[u8], expected: &[u8]) {
    if got == expected {
        return;
    }
    let at = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    let from = at.saturating_sub(8);
    panic!(
        "payload differs: got {} bytes, expected {}; first difference at {at}: got [{}], expected [{}]",
        got.len(),
        expected.len(),
        hex(&got[from..got.len().min(at + 8)]),
        hex(&expected[from..expected.len().min(at + 8)]),
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An upgrade request to build, then to break on purpose.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    /// The key of RFC 6455 §1.3, whose accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
    pub(crate) const DEFAULT_KEY: &'static str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid upgrade request for `target`.
    pub(crate) fn new(target: &str) -> Self {
        Self {
            method: "GET".into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: [
                ("Host", "127.0.0.1"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", Self::DEFAULT_KEY),
                ("Sec-WebSocket-Version", "13"),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        }
    }

    pub(crate) fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    pub(crate) fn version(mut self, version: &str) -> Self {
        self.version = version.into();
        self
    }

    /// Sets a header, replacing one of the same name (case-insensitive) in place.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(h) => h.1 = value.into(),
            None => self.headers.push((name.into(), value.into())),
        }
        self
    }

    /// The value of a header (case-insensitive name).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Removes a header.
    pub(crate) fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.target, self.version);
        for (name, value) in &self.headers {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// A parsed HTTP response.
#[derive(Clone)]
pub(crate) struct HttpResponse {
    /// The minor version: 1 for HTTP/1.1.
    pub(crate) version: u8,
    pub(crate) status: u16,
    pub(crate) reason: String,
    /// Names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the first header of this name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP/1.{} {} {} {:?} body {:?}",
            self.version,
            self.status,
            self.reason,
            self.headers,
            { String::from_utf8_lossy(&self.body[..self.body.len().min(200)]) }
        )
    }
}
