//! One accepted socket's life, independent of the I/O backend.
//!
//! A session goes `Handshake → Open → Draining → Lingering`: it parses the upgrade request,
//! drives the protocol [`Connection`], and after the last frame flushes its out-queue,
//! half-closes the socket and waits (bounded) for the peer's end of the TCP connection, so
//! that unread input never turns our final close frame into a reset. The backend only
//! moves bytes: it calls [`Session::handle_read`] with what it read, writes from
//! [`Session::outq`], and asks [`Session::wants_read`] / [`Session::next_step`] what to do.

use std::time::Instant;

use bytes::Bytes;

use crate::fanout::{OutQueue, encode};
use crate::protocol::close::CloseCode;
use crate::protocol::conn::{Connection, Event, Sink};
use crate::protocol::error::HandshakeError;
use crate::protocol::frame::OpCode;
use crate::protocol::handshake::{self, Parsed};
use crate::server::config::{Config, Mode};

/// Where a session is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading the upgrade request until the deadline.
    Handshake { buf: Vec<u8>, deadline: Instant },
    /// A WebSocket connection.
    Open(Box<Connection>),
    /// No more frames: flush the out-queue, then half-close.
    Draining,
    /// Half-closed: discard input until the peer closes or the deadline passes.
    Lingering { deadline: Instant },
}

/// What the backend should do with the socket next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep going (read if [`Session::wants_read`], write while the queue is not empty).
    Continue,
    /// The queue is flushed and no frame follows: shut the socket down for writing.
    ShutdownWrite,
    /// Close the socket and forget the session.
    Drop,
}

/// Per-connection state the reactor keeps beside the socket.
#[derive(Debug)]
pub(crate) struct Session {
    phase: Phase,
    /// Encoded frames (and the handshake response) waiting for the socket.
    pub(crate) outq: OutQueue,
}

/// Routes protocol output into the out-queue and runs the application.
struct Echo<'a> {
    outq: &'a mut OutQueue,
}

impl Sink for Echo<'_> {
    fn transmit(&mut self, frame: Bytes) {
        self.outq.push(frame);
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Text(t) => self.outq.push(encode::frame(OpCode::Text, t.as_bytes())),
            Event::Binary(b) => self.outq.push(encode::frame(OpCode::Binary, b)),
            Event::Ping(_) | Event::Pong(_) | Event::Close(_) => {}
        }
    }
}

impl Session {
    /// A session for a socket accepted at `now`.
    pub(crate) fn new(now: Instant, config: &Config) -> Self {
        Self {
            phase: Phase::Handshake {
                buf: Vec::new(),
                deadline: now + config.handshake_timeout,
            },
            outq: OutQueue::new(),
        }
    }

    /// Whether the backend should read from the socket now: not while the out-queue is
    /// over its limit (backpressure) and not while draining.
    pub(crate) fn wants_read(&self, config: &Config) -> bool {
        match self.phase {
            Phase::Handshake { .. } | Phase::Open(_) => {
                self.outq.len_bytes() <= config.max_outq_bytes
            }
            Phase::Draining => false,
            Phase::Lingering { .. } => true,
        }
    }

    /// Whether the session sends no more frames and waits for its queue to drain.
    pub(crate) fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining)
    }

    /// Takes bytes read from the socket (modified in place: unmasking).
    pub(crate) fn handle_read(&mut self, data: &mut [u8], now: Instant, config: &Config) {
        match &mut self.phase {
            Phase::Handshake { buf, .. } => {
                buf.extend_from_slice(data);
                let mut buf = std::mem::take(buf);
                self.handshake(&mut buf, now, config);
            }
            Phase::Open(conn) => {
                let mut sink = Echo {
                    outq: &mut self.outq,
                };
                if let Err(e) = conn.handle_read(data, now, &mut sink) {
                    tracing::debug!("protocol error: {e}");
                }
                if conn.is_finished() {
                    self.phase = Phase::Draining;
                }
            }
            Phase::Draining | Phase::Lingering { .. } => {}
        }
    }

    fn handshake(&mut self, buf: &mut Vec<u8>, now: Instant, config: &Config) {
        match handshake::parse(buf, &config.handshake) {
            Parsed::Need => {
                if let Phase::Handshake { buf: b, .. } = &mut self.phase {
                    *b = std::mem::take(buf);
                }
            }
            Parsed::Reject(e) => self.reject(&e),
            Parsed::Accept(req) => {
                if !serves(config.mode, &req.path) {
                    return self.reject(&HandshakeError::NotFound);
                }
                let mut resp = Vec::with_capacity(160);
                handshake::accept_response_into(&req, &mut resp);
                self.outq.push(Bytes::from(resp));
                let conn = Connection::new(config.limits.clone(), now);
                self.phase = Phase::Open(Box::new(conn));
                let rest = &mut buf[req.head_len..];
                if !rest.is_empty() {
                    self.handle_read(rest, now, config);
                }
            }
        }
    }

    fn reject(&mut self, e: &HandshakeError) {
        tracing::debug!("handshake refused: {e}");
        let mut resp = Vec::with_capacity(256);
        handshake::reject_response_into(e, &mut resp);
        self.outq.push(Bytes::from(resp));
        self.phase = Phase::Draining;
    }

    /// The peer closed its end (read returned 0) or the socket failed.
    pub(crate) fn handle_eof(&mut self) -> Step {
        Step::Drop
    }

    /// Starts a server-side close (shutdown): close 1001 on open connections, and drops
    /// sessions still in their handshake.
    pub(crate) fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Step {
        match &mut self.phase {
            Phase::Handshake { .. } => return Step::Drop,
            Phase::Open(conn) => {
                let mut sink = Echo {
                    outq: &mut self.outq,
                };
                conn.close(code, reason, now, &mut sink);
            }
            Phase::Draining | Phase::Lingering { .. } => {}
        }
        Step::Continue
    }

    /// Runs timers; returns what to do next.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Step {
        match &mut self.phase {
            Phase::Handshake { deadline, .. } if now >= *deadline => {
                tracing::debug!("handshake timeout");
                return Step::Drop;
            }
            Phase::Open(conn) if conn.poll_timeout().is_some_and(|t| now >= t) => {
                let mut sink = Echo {
                    outq: &mut self.outq,
                };
                conn.handle_timeout(now, &mut sink);
                if conn.is_finished() {
                    self.phase = Phase::Draining;
                }
            }
            Phase::Lingering { deadline } if now >= *deadline => return Step::Drop,
            _ => {}
        }
        Step::Continue
    }

    /// Called after writing: once a draining session's queue is empty, it half-closes.
    pub(crate) fn next_step(&mut self, now: Instant, config: &Config) -> Step {
        if matches!(self.phase, Phase::Draining) && self.outq.is_empty() {
            self.phase = Phase::Lingering {
                deadline: now + config.limits.close_timeout,
            };
            return Step::ShutdownWrite;
        }
        Step::Continue
    }
}

/// Whether `mode` has an endpoint at `path`.
fn serves(mode: Mode, path: &str) -> bool {
    match mode {
        Mode::Echo => matches!(path, "/" | "/echo"),
    }
}
