//! `raw-batch`: the ceiling of a coalescing broadcast server on loopback.
//!
//! One thread, mio (epoll, edge-triggered), the same minimal protocol as `raw-writev` (least
//! HTTP upgrade, client frames parsed only to find their boundaries and unmask, close/ping
//! answered). The difference is the write path. Each published frame is re-framed once
//! (server header, unmasked payload; first header byte kept) by appending it to ONE shared,
//! append-only byte log for the single topic. Every subscriber holds a cursor (absolute byte
//! offset) into that log, and every subscriber behind the head gets ONE
//! `write(&log[cursor..head])`: one contiguous slice, one syscall, no per-message work per
//! subscriber. A pass over the subscribers writes `SLICE` of them per poll turn and polls
//! again between slices (as ringcast's reactor does), so a subscriber further down the pass
//! is written with what was published meanwhile too: under load each write carries up to
//! twice as many messages as a pass that writes everyone before reading again. A partial write advances the cursor (WRITABLE interest is registered once,
//! edge-triggered, so the next edge resumes it). A subscriber joins at the head. The log's
//! front is dropped once every cursor has passed it (amortised: only when the dead prefix is
//! at least as long as the rest). A subscriber more than `MAX_LAG` (64 MiB) behind the head
//! is disconnected, which bounds the log. Replies a connection is owed (101/404, pong, close
//! echo) go in a small private buffer, written at the next frame boundary of its cursor.
//!
//! `--sends uring` makes the writes of a pass io_uring sends instead ([`uring`]): the
//! io_uring ceiling, everything else the same.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;

use base64::Engine as _;
use clap::Parser;
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use ringcast_bench_peers::{Args, Role};
use sha1::{Digest, Sha1};
use slab::Slab;

mod uring;

const LISTENER: Token = Token(usize::MAX);
const SIGNAL: Token = Token(usize::MAX - 1);
/// Largest request head accepted.
const MAX_HEAD: usize = 8192;
/// Largest client frame accepted (the connection is dropped above it).
const MAX_PAYLOAD: u64 = 64 << 20;
/// A subscriber further behind the log's head than this is disconnected.
const MAX_LAG: u64 = 64 << 20;
/// Reads per connection per loop turn before yielding to the others (64 KiB each).
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
/// Subscribers written per loop turn in a pass over all of them.
const SLICE: usize = 256;
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, PartialEq, Eq)]
enum State {
    Handshake,
    /// `idx` is the position in `Server::subs` (`usize::MAX` until registered).
    Sub {
        idx: usize,
    },
    Pub,
}

#[derive(Debug)]
struct Conn {
    sock: TcpStream,
    state: State,
    /// Unparsed input.
    rbuf: Vec<u8>,
    /// Private replies (101/404, pong, close echo), written at a frame boundary.
    ctl: Vec<u8>,
    /// Bytes of `ctl` already written.
    ctl_off: usize,
    /// Subscribers: absolute log offset of the next byte to write.
    cursor: u64,
    /// Listed in `Server::ready` (try a write this turn).
    queued: bool,
    /// Listed in `Server::again` (read budget ran out before WouldBlock).
    again: bool,
    /// The last write was short or would block: wait for the WRITABLE edge.
    blocked: bool,
    /// Close (or an HTTP refusal) queued: input ignored, dropped once `ctl` is written.
    closing: bool,
    /// Registered with the io_uring (`--sends uring`): its pass writes are sends there.
    fixed: bool,
}

impl Conn {
    fn is_sub(&self) -> bool {
        matches!(self.state, State::Sub { .. })
    }

    /// Has something to write, given the log's head.
    fn pending(&self, head: u64) -> bool {
        self.ctl_off < self.ctl.len() || (self.is_sub() && self.cursor < head)
    }
}

/// The shared byte log of server frames: `buf[0]` is absolute offset `base`.
#[derive(Debug, Default)]
struct Log {
    buf: Vec<u8>,
    base: u64,
    /// Absolute offsets of the frames in `buf`, oldest first (for private replies only).
    starts: VecDeque<u64>,
}

impl Log {
    fn head(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// `[from, to)` in absolute offsets; both must lie within the log.
    fn slice(&self, from: u64, to: u64) -> &[u8] {
        &self.buf[(from - self.base) as usize..(to - self.base) as usize]
    }

    /// The first frame boundary at or after `at` (the head if none).
    fn next_boundary(&self, at: u64) -> u64 {
        let i = self.starts.partition_point(|&s| s < at);
        self.starts.get(i).copied().unwrap_or_else(|| self.head())
    }

    /// Appends a server frame: header byte `b0`, length, then `payload` unmasked with `mask`.
    fn push_frame(&mut self, b0: u8, payload: &[u8], mask: Option<[u8; 4]>) {
        self.starts.push_back(self.head());
        push_header(&mut self.buf, b0, payload.len());
        let at = self.buf.len();
        self.buf.extend_from_slice(payload);
        if let Some(mask) = mask {
            unmask(&mut self.buf[at..], mask);
        }
    }

    /// Drops the prefix every cursor has passed (`min` is the smallest cursor), when that
    /// is all of the log or at least as long as what stays (so memmoves stay amortised).
    fn compact(&mut self, min: u64) {
        let dead = (min - self.base) as usize;
        if dead == self.buf.len() {
            self.buf.clear();
            self.starts.clear();
        } else if dead > 0 && dead >= self.buf.len() - dead {
            self.buf.drain(..dead);
            let keep = self.starts.partition_point(|&s| s < min);
            self.starts.drain(..keep);
        } else {
            return;
        }
        self.base = min;
    }
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    /// Keys of subscribers, in no order; `State::Sub { idx }` is a conn's position here.
    subs: Vec<usize>,
    log: Log,
    /// The head when the last pass over all subscribers began.
    flushed_head: u64,
    /// The pass under way: the position in `subs` it goes on from.
    pass: Option<usize>,
    /// Keys to try a write for outside a pass over all subscribers (new replies, a
    /// WRITABLE edge); stale entries are skipped.
    ready: Vec<usize>,
    /// Keys whose read budget ran out: read again next turn.
    again: Vec<usize>,
    scratch: Box<[u8]>,
    /// Subscribers disconnected for falling more than `MAX_LAG` behind.
    dropped: u64,
    /// `--sends uring`: the ring the pass's writes go through.
    uring: Option<uring::Sends>,
    /// This slice's io_uring sends: (key, cursor).
    batch: Vec<(usize, u64)>,
    /// Connections whose send failed in this slice.
    failed: Vec<usize>,
}

/// How the writes of a pass are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SendsVia {
    /// One `write` system call per subscriber.
    Epoll,
    /// One io_uring send per subscriber, a slice's sends submitted together.
    Uring,
}

/// The peers' common flags, and how to write.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: Args,
    /// How a pass writes its subscribers: `epoll` (a `write` each) or `uring` (io_uring
    /// sends on registered files, a slice's submitted together; accepts, reads and the
    /// rest stay on epoll).
    #[arg(long, value_enum, default_value = "epoll")]
    sends: SendsVia,
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    let args = cli.common;
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
        log: Log::default(),
        flushed_head: 0,
        pass: None,
        ready: Vec::new(),
        again: Vec::new(),
        scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        dropped: 0,
        uring: match cli.sends {
            SendsVia::Epoll => None,
            SendsVia::Uring => Some(uring::Sends::new()?),
        },
        batch: Vec::with_capacity(SLICE),
        failed: Vec::new(),
    };
    server.run()?;
    eprintln!(
        "raw-batch: shutting down; {} subscribers were dropped for falling more than {} MiB behind",
        server.dropped,
        MAX_LAG >> 20
    );
    Ok(())
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = (!self.ready.is_empty() || !self.again.is_empty() || self.pass.is_some())
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
                                c.blocked = false;
                                if c.pending(self.log.head()) {
                                    mark_ready(&mut self.ready, c, key);
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
                    // WRITABLE once, edge-triggered: an edge only follows a blocked write.
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut sock, Token(key), interest)
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(Conn {
                        sock,
                        state: State::Handshake,
                        rbuf: Vec::new(),
                        ctl: Vec::new(),
                        ctl_off: 0,
                        cursor: 0,
                        queued: false,
                        again: false,
                        blocked: false,
                        closing: false,
                        fixed: false,
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
                    if process_input(c, &mut self.log).is_err() {
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

    /// Registers a new subscriber (at the log's head) and queues owed replies.
    fn after_input(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.state == (State::Sub { idx: usize::MAX }) {
            c.state = State::Sub {
                idx: self.subs.len(),
            };
            c.cursor = self.log.head();
            self.subs.push(key);
            if let Some(u) = &self.uring {
                c.fixed = u.register(key, c.sock.as_raw_fd());
            }
        }
        if c.ctl_off < c.ctl.len() {
            mark_ready(&mut self.ready, c, key);
        }
    }

    /// After new publications, a pass over all subscribers (one write each, laggards
    /// dropped, the log compacted at its end), `SLICE` of them per turn; then the
    /// connections listed in `ready`.
    fn flush_all(&mut self) {
        if self.pass.is_none() && self.log.head() != self.flushed_head {
            self.flushed_head = self.log.head();
            self.pass = Some(0);
        }
        if let Some(mut i) = self.pass {
            let head = self.log.head();
            let mut written = 0;
            while i < self.subs.len() && written < SLICE {
                let key = self.subs[i];
                let c = &mut self.conns[key];
                if head - c.cursor > MAX_LAG {
                    self.dropped += 1;
                    self.remove(key); // swaps the last subscriber into `i`
                    continue;
                }
                if !c.blocked {
                    c.queued = false;
                    written += 1;
                    if c.fixed && c.ctl_off == c.ctl.len() && !c.closing {
                        // Sent below, with the rest of the slice.
                        if c.cursor < head {
                            self.batch.push((key, c.cursor));
                        }
                    } else {
                        match flush(c, &self.log) {
                            Ok(Flushed::Done | Flushed::Blocked) => {}
                            Ok(Flushed::Close) | Err(_) => {
                                self.remove(key);
                                continue;
                            }
                        }
                    }
                }
                i += 1;
            }
            self.send_batch(head);
            if i < self.subs.len() {
                self.pass = Some(i);
            } else {
                self.pass = None;
                let min = self.subs.iter().map(|&k| self.conns[k].cursor).min();
                let min = min.unwrap_or_else(|| self.log.head());
                self.log.compact(min);
                // A connection removed between two slices swapped an unvisited subscriber
                // into a visited place: one still behind and writable gets another pass.
                let head = self.log.head();
                let behind = self.subs.iter().any(|&k| {
                    let c = &self.conns[k];
                    !c.blocked && c.cursor < head
                });
                if behind {
                    self.pass = Some(0);
                }
            }
        }
        let mut ready = std::mem::take(&mut self.ready);
        for &key in &ready {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if !c.queued {
                continue; // stale entry, or written in the pass above
            }
            c.queued = false;
            if c.blocked {
                continue; // its WRITABLE edge lists it again
            }
            match flush(c, &self.log) {
                Ok(Flushed::Done | Flushed::Blocked) => {}
                Ok(Flushed::Close) | Err(_) => self.remove(key),
            }
        }
        ready.clear();
        self.ready = ready; // keep the allocation
    }

    /// Sends this slice's io_uring batch (`--sends uring`) and applies the results as
    /// `flush` does a `write`'s: the cursor advances, a short send waits for WRITABLE.
    fn send_batch(&mut self, head: u64) {
        let Self {
            uring: Some(u),
            batch,
            log,
            conns,
            failed,
            ready,
            ..
        } = self
        else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        u.send_all(
            batch,
            |from| log.slice(from, head),
            |key, res| {
                let Some(c) = conns.get_mut(key) else {
                    return;
                };
                if res > 0 {
                    c.cursor += res as u64;
                    c.blocked = c.cursor < head;
                } else if res == -libc::EAGAIN {
                    c.blocked = true;
                } else if res == -libc::EINTR {
                    // Retried with a `write` in this turn's ready list (as `write`
                    // retries at once): else nothing would come back to it until the
                    // next publication.
                    mark_ready(ready, c, key);
                } else {
                    failed.push(key);
                }
            },
        );
        batch.clear();
        for key in std::mem::take(&mut self.failed) {
            self.remove(key);
        }
    }

    fn remove(&mut self, key: usize) {
        let Some(c) = self.conns.try_remove(key) else {
            return;
        };
        if let (true, Some(u)) = (c.fixed, &self.uring) {
            u.unregister(key);
        }
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

fn mark_ready(ready: &mut Vec<usize>, c: &mut Conn, key: usize) {
    if !c.queued {
        c.queued = true;
        ready.push(key);
    }
}

enum Flushed {
    /// Nothing left to write.
    Done,
    /// Short write or WouldBlock: wait for the WRITABLE edge.
    Blocked,
    /// A closing connection wrote its last reply: drop it.
    Close,
}

/// Writes what `c` is owed: log bytes up to the next frame boundary and its private replies
/// first when it has any (rare), then `log[cursor..head]` as one contiguous write.
fn flush(c: &mut Conn, log: &Log) -> io::Result<Flushed> {
    let head = log.head();
    if c.ctl_off < c.ctl.len() {
        if c.is_sub() {
            let boundary = log.next_boundary(c.cursor);
            if c.cursor < boundary {
                let n = write_some(&c.sock, log.slice(c.cursor, boundary))?;
                c.cursor += n as u64;
                if c.cursor < boundary {
                    return blocked(c);
                }
            }
        }
        c.ctl_off += write_some(&c.sock, &c.ctl[c.ctl_off..])?;
        if c.ctl_off < c.ctl.len() {
            return blocked(c);
        }
        c.ctl.clear();
        c.ctl_off = 0;
    }
    if c.closing {
        return Ok(Flushed::Close);
    }
    if c.is_sub() && c.cursor < head {
        let n = write_some(&c.sock, log.slice(c.cursor, head))?;
        c.cursor += n as u64;
        if c.cursor < head {
            return blocked(c);
        }
    }
    Ok(Flushed::Done)
}

fn blocked(c: &mut Conn) -> io::Result<Flushed> {
    c.blocked = true;
    Ok(Flushed::Blocked)
}

/// One `write`; WouldBlock counts as 0 bytes written.
fn write_some(mut sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match sock.write(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Handles the request head, then every complete frame in `c.rbuf`. A publisher's data
/// frames are appended, re-framed and unmasked, to `log`. `Err` means drop the connection.
fn process_input(c: &mut Conn, log: &mut Log) -> Result<(), ()> {
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
                c.ctl.extend_from_slice(resp.as_bytes());
                // Sub index and cursor assigned by the server (`after_input`).
                c.state = if role == Role::Subscriber {
                    State::Sub { idx: usize::MAX }
                } else {
                    State::Pub
                };
            }
            _ => {
                c.ctl.extend_from_slice(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
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
        let buf = &c.rbuf[pos..];
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
        let mask: Option<[u8; 4]> = masked.then(|| buf[mask_at..mask_at + 4].try_into().unwrap());
        let opcode = b0 & 0x0f;
        if c.state == State::Pub && opcode < 0x8 {
            // Data (text, binary, continuation): header byte 0 kept as is, unmasked in the log.
            log.push_frame(b0, &buf[hdr..hdr + len], mask);
        } else if opcode == 0x8 || opcode == 0x9 {
            let payload = &mut c.rbuf[pos + hdr..pos + hdr + len];
            if let Some(mask) = mask {
                unmask(payload, mask);
            }
            if opcode == 0x8 {
                // Echo the status code (if any) and close once it is written.
                push_frame_into(&mut c.ctl, 0x88, &payload[..payload.len().min(2)]);
                c.closing = true;
            } else {
                push_frame_into(&mut c.ctl, 0x8a, payload);
            }
        }
        pos += hdr + len;
    }
    c.rbuf.drain(..pos);
    Ok(())
}

/// XORs `buf` with the repeating 4-byte `mask`, starting at mask phase 0.
fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().unwrap()) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends a server frame header: byte 0, then the 7/16/64-bit length.
fn push_header(out: &mut Vec<u8>, b0: u8, len: usize) {
    out.push(b0);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends an unmasked server frame (header byte `b0`, length, payload) to `out`.
fn push_frame_into(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
    push_header(out, b0, payload.len());
    out.extend_from_slice(payload);
}
