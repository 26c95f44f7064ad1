//! The raw client: a `TcpStream` that speaks RFC 6455 frame by frame (including what a
//! server must refuse) and checks what the server answers.

#![allow(dead_code)]

use super::*;

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
    pub(crate) fn check_upgrade(&self, response: &HttpResponse) {
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
