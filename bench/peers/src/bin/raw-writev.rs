//! `raw-writev`: a secondary reference, a plain non-blocking `writev` loop.
//!
//! Not a ceiling: it costs a `Bytes` clone, a queue entry and an iovec per frame per
//! subscriber. `raw-batch` (one contiguous write per subscriber per turn) is the ceiling.
//!
//! One thread, mio (epoll, edge-triggered). Just enough protocol to be reachable by loadgen:
//! a minimal HTTP upgrade answer, client frames parsed only to find their boundaries and
//! unmask (scalar), close/ping answered. Each published frame is re-framed once (server header
//! and payload; first header byte kept, so opcode and FIN are unchanged) into one `Bytes`, a clone of
//! which is appended to every subscriber's queue. After each poll turn every subscriber with
//! queued data gets ONE `writev` of up to `IOV_MAX` slices; a partial write resumes at the
//! right offset on the next turn, and WRITABLE interest is registered only while a queue stays
//! non-empty after a short write. Subscriber queues are unbounded (no slow-consumer policy).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;

use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use ringcast_bench_peers::{Args, Role};
use sha1::{Digest, Sha1};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
const SIGNAL: Token = Token(usize::MAX - 1);
/// Linux `IOV_MAX`: most slices one `writev` takes.
const IOV_MAX: usize = 1024;
/// Largest request head accepted.
const MAX_HEAD: usize = 8192;
/// Largest client frame accepted (the connection is dropped above it).
const MAX_PAYLOAD: u64 = 64 << 20;
/// Reads per connection per loop turn before yielding to the others (64 KiB each).
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, PartialEq, Eq)]
enum State {
    Handshake,
    Sub { idx: usize },
    Pub,
}

#[derive(Debug)]
struct Conn {
    sock: TcpStream,
    state: State,
    /// Unparsed input.
    rbuf: Vec<u8>,
    /// Frames waiting to be written, oldest first.
    out: VecDeque<Bytes>,
    /// Bytes of `out.front()` already written.
    off: usize,
    /// Listed in `Server::dirty` (has queued data to try this turn).
    dirty: bool,
    /// Listed in `Server::again` (read budget ran out before WouldBlock).
    again: bool,
    /// WRITABLE interest registered.
    want_write: bool,
    /// Close (or an HTTP refusal) queued: input ignored, dropped once `out` drains.
    closing: bool,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    /// Keys of subscribers, in no order; `State::Sub { idx }` is a conn's position here.
    subs: Vec<usize>,
    /// Keys with queued output to write this turn (stale entries are skipped).
    dirty: Vec<usize>,
    /// Keys whose read budget ran out: read again next turn.
    again: Vec<usize>,
    scratch: Box<[u8]>,
    /// Frames decoded from one publisher read, broadcast once the conn is released.
    pending: Vec<Bytes>,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let poll = Poll::new()?;
    let mut listener = TcpListener::bind(args.listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    // SIGINT/SIGTERM wake the loop through a socket pair.
    let (sig_read, sig_write) = StdUnixStream::pair()?;
    sig_read.set_nonblocking(true)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, sig_write.try_clone()?)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, sig_write)?;
    let mut sig_read = UnixStream::from_std(sig_read);
    poll.registry()
        .register(&mut sig_read, SIGNAL, Interest::READABLE)?;

    let addr: SocketAddr = listener.local_addr()?;
    eprintln!("listening on ws://{addr}");
    let mut server = Server {
        poll,
        listener,
        conns: Slab::with_capacity(4096),
        subs: Vec::new(),
        dirty: Vec::new(),
        again: Vec::new(),
        scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        pending: Vec::new(),
    };
    server.run()?;
    eprintln!("raw-writev: shutting down");
    Ok(())
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = (!self.dirty.is_empty() || !self.again.is_empty())
                .then_some(std::time::Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for key in std::mem::take(&mut self.again) {
                if let Some(c) = self.conns.get_mut(key) {
                    if c.again {
                        c.again = false;
                        self.on_readable(key);
                    }
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    SIGNAL => return Ok(()),
                    Token(key) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key);
                        }
                        if ev.is_writable() {
                            if let Some(c) = self.conns.get_mut(key) {
                                if !c.out.is_empty() && !c.dirty {
                                    c.dirty = true;
                                    self.dirty.push(key);
                                }
                            }
                        }
                    }
                }
            }
            self.flush_all();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if self
                        .poll
                        .registry()
                        .register(&mut sock, Token(key), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(Conn {
                        sock,
                        state: State::Handshake,
                        rbuf: Vec::new(),
                        out: VecDeque::new(),
                        off: 0,
                        dirty: false,
                        again: false,
                        want_write: false,
                        closing: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: try again on the next readiness edge.
                    eprintln!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads (up to the per-turn budget) and processes everything the connection sent.
    fn on_readable(&mut self, key: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.closing {
                return;
            }
            match c.sock.read(&mut self.scratch) {
                Ok(0) => return self.remove(key),
                Ok(n) => {
                    c.rbuf.extend_from_slice(&self.scratch[..n]);
                    if process_input(c, &mut self.pending).is_err() {
                        return self.remove(key);
                    }
                    self.after_input(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.remove(key),
            }
        }
        // Budget spent without reaching WouldBlock: edge-triggered, so come back next turn.
        if let Some(c) = self.conns.get_mut(key) {
            if !c.again {
                c.again = true;
                self.again.push(key);
            }
        }
    }

    /// Registers a new subscriber, broadcasts decoded publications, marks output dirty.
    fn after_input(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.state == (State::Sub { idx: usize::MAX }) {
            c.state = State::Sub {
                idx: self.subs.len(),
            };
            self.subs.push(key);
        }
        if !c.out.is_empty() && !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
        for frame in self.pending.drain(..) {
            for &sub in &self.subs {
                let s = &mut self.conns[sub];
                if s.closing {
                    continue;
                }
                s.out.push_back(frame.clone());
                if !s.dirty {
                    s.dirty = true;
                    self.dirty.push(sub);
                }
            }
        }
    }

    /// One `writev` per connection with queued output.
    fn flush_all(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if !c.dirty {
                continue; // stale entry (key reused after a removal)
            }
            c.dirty = false;
            match flush(c) {
                Ok(Flushed::Empty) => {
                    if c.closing {
                        self.remove(key);
                        continue;
                    }
                    if c.want_write {
                        c.want_write = false;
                        if self
                            .poll
                            .registry()
                            .reregister(&mut c.sock, Token(key), Interest::READABLE)
                            .is_err()
                        {
                            self.remove(key);
                        }
                    }
                }
                // Everything offered went out but more than IOV_MAX slices are queued.
                Ok(Flushed::More) => {
                    c.dirty = true;
                    self.dirty.push(key);
                }
                Ok(Flushed::Short) => {
                    if !c.want_write {
                        c.want_write = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if self
                            .poll
                            .registry()
                            .reregister(&mut c.sock, Token(key), interest)
                            .is_err()
                        {
                            self.remove(key);
                        }
                    }
                }
                Err(_) => self.remove(key),
            }
        }
        dirty.clear();
        // Keep the allocation; entries pushed during this pass (Flushed::More) come first next turn.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    fn remove(&mut self, key: usize) {
        let Some(c) = self.conns.try_remove(key) else {
            return;
        };
        if let State::Sub { idx } = c.state {
            if idx != usize::MAX {
                self.subs.swap_remove(idx);
                if let Some(&moved) = self.subs.get(idx) {
                    self.conns[moved].state = State::Sub { idx };
                }
            }
        }
        let mut sock = c.sock;
        let _ = self.poll.registry().deregister(&mut sock);
    }
}

enum Flushed {
    /// Queue empty.
    Empty,
    /// All offered bytes written, more queued than one `writev` takes.
    More,
    /// Short write or WouldBlock: wait for WRITABLE.
    Short,
}

fn flush(c: &mut Conn) -> io::Result<Flushed> {
    if c.out.is_empty() {
        return Ok(Flushed::Empty);
    }
    let mut iov = [IoSlice::new(&[]); IOV_MAX];
    let mut n = 0;
    let mut offered = 0;
    for (i, buf) in c.out.iter().take(IOV_MAX).enumerate() {
        let slice = if i == 0 { &buf[c.off..] } else { &buf[..] };
        offered += slice.len();
        iov[i] = IoSlice::new(slice);
        n += 1;
    }
    let written = loop {
        match (&c.sock).write_vectored(&iov[..n]) {
            Ok(w) => break w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Short),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let mut left = written;
    while left > 0 {
        let front = c
            .out
            .front()
            .expect("written bytes come from queued buffers");
        let rest = front.len() - c.off;
        if left >= rest {
            left -= rest;
            c.off = 0;
            c.out.pop_front();
        } else {
            c.off += left;
            left = 0;
        }
    }
    Ok(if c.out.is_empty() {
        Flushed::Empty
    } else if written == offered {
        Flushed::More
    } else {
        Flushed::Short
    })
}

/// Handles the request head, then every complete frame in `c.rbuf`. Publications (from a
/// publisher) are pushed, re-framed, to `pending`. `Err` means drop the connection.
fn process_input(c: &mut Conn, pending: &mut Vec<Bytes>) -> Result<(), ()> {
    if c.state == State::Handshake {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&c.rbuf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if c.rbuf.len() <= MAX_HEAD => return Ok(()),
            _ => return Err(()),
        };
        let role = req.path.and_then(Role::from_target);
        let key = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"));
        match (role, key) {
            (Some(role), Some(key)) => {
                let mut sha = Sha1::new();
                sha.update(key.value);
                sha.update(WS_GUID);
                let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                c.out.push_back(Bytes::from(resp));
                // Sub index assigned by the server (`after_input`).
                c.state = if role == Role::Subscriber {
                    State::Sub { idx: usize::MAX }
                } else {
                    State::Pub
                };
            }
            _ => {
                c.out.push_back(Bytes::from_static(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ));
                c.state = State::Pub;
                c.closing = true;
                c.rbuf.clear();
                return Ok(());
            }
        }
        c.rbuf.drain(..head_len);
    }
    let mut pos = 0;
    while !c.closing {
        let buf = &mut c.rbuf[pos..];
        if buf.len() < 2 {
            break;
        }
        let (b0, b1) = (buf[0], buf[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut hdr) = match b1 & 0x7f {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        if len > MAX_PAYLOAD {
            return Err(());
        }
        let mask_at = hdr;
        if masked {
            hdr += 4;
        }
        let len = len as usize;
        if buf.len() < hdr + len {
            break;
        }
        if masked {
            let mask: [u8; 4] = buf[mask_at..mask_at + 4].try_into().unwrap();
            for (i, b) in buf[hdr..hdr + len].iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
        }
        let payload = &buf[hdr..hdr + len];
        match b0 & 0x0f {
            0x8 => {
                // Echo the status code (if any) and close once the queue drains.
                let code = &payload[..payload.len().min(2)];
                c.out.push_back(server_frame(0x88, code));
                c.closing = true;
            }
            0x9 => c.out.push_back(server_frame(0x8a, payload)),
            0xa => {}
            // Data (text, binary, continuation): header byte 0 kept as is.
            _ if c.state == State::Pub => pending.push(server_frame(b0, payload)),
            _ => {}
        }
        pos += hdr + len;
    }
    c.rbuf.drain(..pos);
    Ok(())
}

/// An unmasked server frame: header byte `b0`, length, payload, in one buffer.
fn server_frame(b0: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut v = Vec::with_capacity(len + 10);
    v.push(b0);
    if len < 126 {
        v.push(len as u8);
    } else if len <= 0xffff {
        v.push(126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(payload);
    Bytes::from(v)
}
