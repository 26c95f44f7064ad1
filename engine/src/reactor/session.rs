//! One accepted socket's life, independent of the I/O backend.
//!
//! A session goes `Handshake → Open → Draining → Lingering`: it parses the upgrade request
//! and asks the handler, drives the protocol [`Connection`], and after the last frame
//! flushes its out-queue, half-closes the socket and waits (bounded) for the peer's end of
//! the TCP connection, so that unread input never turns our final close frame into a
//! reset. The backend only moves bytes: it calls [`Session::handle_read`] with what it
//! read, writes from [`Session::outq`], and asks [`Session::wants_read`] /
//! [`Session::next_step`] what to do.

use std::time::Instant;

use bytes::Bytes;

use crate::fanout::topic::{TopicName, Topics};
use crate::fanout::{Fanout, OutQueue, SlowConsumer};
use crate::protocol::close::CloseCode;
use crate::protocol::conn::{Connection, Event, Sink};
use crate::protocol::error::HandshakeError;
use crate::protocol::handshake::{self, Parsed};
use crate::server::config::Config;
use crate::server::handler::{self, Client, Message, Upgrade, UpgradeRequest};

/// Where a session is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading the upgrade request until the deadline.
    Handshake { buf: Vec<u8>, deadline: Instant },
    /// A WebSocket connection.
    Open(Box<Connection>),
    /// No more frames: flush the out-queue (by the deadline), then half-close.
    Draining { deadline: Instant },
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

/// What a slow-consumer check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SlowAction {
    /// The connection was closed (1008).
    pub(crate) closed: bool,
    /// Frames discarded (drop-oldest).
    pub(crate) dropped: usize,
    /// Frames replaced by newer ones (conflate).
    pub(crate) conflated: usize,
}

/// The reactor's state a session acts on while handling input.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) topics: &'a mut Topics,
    pub(crate) fanout: &'a Fanout,
    /// The session's key in the reactor (its subscriber id).
    pub(crate) key: usize,
}

/// Per-connection state the reactor keeps beside the socket.
#[derive(Debug)]
pub(crate) struct Session {
    phase: Phase,
    /// Encoded frames (and the handshake response) waiting for the socket.
    pub(crate) outq: OutQueue,
    /// Topics this connection subscribes to.
    subs: Vec<TopicName>,
    /// The topic this connection publishes to, if the handler said so.
    publish_to: Option<TopicName>,
    /// Open and not closing: published frames are queued. Kept beside the phase so the
    /// fan-out loop reads it without following the boxed connection.
    receiving: bool,
}

/// Routes protocol output into the out-queue and client messages to the handler.
struct App<'s, 'c> {
    outq: &'s mut OutQueue,
    subs: &'s mut Vec<TopicName>,
    publish_to: Option<&'s TopicName>,
    ctx: &'s mut Ctx<'c>,
    close: Option<(CloseCode, String)>,
    messages: u64,
}

impl Sink for App<'_, '_> {
    fn transmit(&mut self, frame: Bytes) {
        self.outq.push(frame);
    }

    fn event(&mut self, event: Event<'_>) {
        let msg = match event {
            Event::Text(t) => Message::Text(t),
            Event::Binary(b) => Message::Binary(b),
            Event::Ping(_) | Event::Pong(_) | Event::Close(_) => return,
        };
        self.messages += 1;
        if self.close.is_some() {
            return;
        }
        let mut client = Client {
            key: self.ctx.key,
            outq: self.outq,
            subs: self.subs,
            topics: self.ctx.topics,
            rules: &self.ctx.config.topics,
            fanout: self.ctx.fanout,
            publish_to: self.publish_to,
            close: &mut self.close,
        };
        self.ctx.config.handler.0.on_message(&mut client, msg);
    }
}

/// A sink for frames the protocol sends on its own (timers, server closes).
struct Tx<'a>(&'a mut OutQueue);

impl Sink for Tx<'_> {
    fn transmit(&mut self, frame: Bytes) {
        self.0.push(frame);
    }

    fn event(&mut self, _: Event<'_>) {}
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
            subs: Vec::new(),
            publish_to: None,
            receiving: false,
        }
    }

    /// Recomputes [`receiving`](Self::is_open) after the phase or connection changed.
    fn sync(&mut self) {
        self.receiving = matches!(&self.phase, Phase::Open(c) if c.is_open());
    }

    /// Whether the backend should read from the socket now: not while the out-queue is
    /// over its limit (backpressure) and not while draining.
    pub(crate) fn wants_read(&self, config: &Config) -> bool {
        match self.phase {
            Phase::Handshake { .. } | Phase::Open(_) => {
                self.outq.len_bytes() <= config.max_outq_bytes
            }
            Phase::Draining { .. } => false,
            Phase::Lingering { .. } => true,
        }
    }

    /// Whether published frames should be queued for this session.
    pub(crate) fn is_open(&self) -> bool {
        self.receiving
    }

    /// Whether this connection publishes (its reads feed the fan-out rings).
    pub(crate) fn is_publisher(&self) -> bool {
        self.publish_to.is_some()
    }

    /// Whether the session sends no more frames and waits for its queue to drain.
    pub(crate) fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    /// The topics this session subscribes to (to unsubscribe them when it goes).
    pub(crate) fn take_subscriptions(&mut self) -> Vec<TopicName> {
        std::mem::take(&mut self.subs)
    }

    /// Takes bytes read from the socket (modified in place: unmasking); returns the
    /// number of complete messages received.
    pub(crate) fn handle_read(&mut self, data: &mut [u8], now: Instant, ctx: &mut Ctx<'_>) -> u64 {
        let messages = self.read_phase(data, now, ctx);
        self.sync();
        messages
    }

    fn read_phase(&mut self, data: &mut [u8], now: Instant, ctx: &mut Ctx<'_>) -> u64 {
        match &mut self.phase {
            Phase::Handshake { buf, .. } => {
                buf.extend_from_slice(data);
                let mut buf = std::mem::take(buf);
                self.handshake(&mut buf, now, ctx)
            }
            Phase::Open(conn) => {
                let mut app = App {
                    outq: &mut self.outq,
                    subs: &mut self.subs,
                    publish_to: self.publish_to.as_ref(),
                    ctx,
                    close: None,
                    messages: 0,
                };
                if let Err(e) = conn.handle_read(data, now, &mut app) {
                    tracing::debug!("protocol error: {e}");
                }
                let messages = app.messages;
                if let Some((code, reason)) = app.close.take() {
                    conn.close(code, &reason, now, &mut Tx(&mut self.outq));
                }
                if conn.is_finished() {
                    self.phase = draining(now, ctx.config);
                }
                messages
            }
            Phase::Draining { .. } | Phase::Lingering { .. } => 0,
        }
    }

    fn handshake(&mut self, buf: &mut Vec<u8>, now: Instant, ctx: &mut Ctx<'_>) -> u64 {
        let req = match handshake::parse(buf, &ctx.config.handshake) {
            Parsed::Need => {
                if let Phase::Handshake { buf: b, .. } = &mut self.phase {
                    *b = std::mem::take(buf);
                }
                return 0;
            }
            Parsed::Reject(e) => {
                self.reject(&e, now, ctx.config);
                return 0;
            }
            Parsed::Accept(req) => req,
        };
        let decision = ctx.config.handler.0.on_upgrade(&UpgradeRequest {
            path: &req.path,
            query: req.query.as_deref(),
            headers: &req.headers,
        });
        let (topics, publish_to) = match decision {
            Upgrade::Accept { topics, publish_to } => (topics, publish_to),
            Upgrade::Reject { status, reason } => {
                let e = if status == 404 {
                    HandshakeError::NotFound
                } else {
                    HandshakeError::Refused { status, reason }
                };
                self.reject(&e, now, ctx.config);
                return 0;
            }
        };
        for t in &topics {
            let r = handler::subscribe(ctx.key, &mut self.subs, ctx.topics, &ctx.config.topics, t);
            if let Err(e) = r {
                for s in self.subs.drain(..) {
                    ctx.topics.unsubscribe(s.as_str(), ctx.key);
                }
                let e = HandshakeError::Refused {
                    status: 400,
                    reason: format!("topic '{t}': {e}"),
                };
                self.reject(&e, now, ctx.config);
                return 0;
            }
        }
        self.publish_to = publish_to;
        let mut resp = Vec::with_capacity(160);
        handshake::accept_response_into(&req, &mut resp);
        self.outq.push(Bytes::from(resp));
        let conn = Connection::new(ctx.config.limits.clone(), now);
        self.phase = Phase::Open(Box::new(conn));
        let rest = &mut buf[req.head_len..];
        if rest.is_empty() {
            0
        } else {
            self.read_phase(rest, now, ctx)
        }
    }

    fn reject(&mut self, e: &HandshakeError, now: Instant, config: &Config) {
        tracing::debug!("handshake refused: {e}");
        let mut resp = Vec::with_capacity(256);
        handshake::reject_response_into(e, &mut resp);
        self.outq.push(Bytes::from(resp));
        self.phase = draining(now, config);
    }

    /// Applies the slow-consumer policy once the out-queue is over `limit`.
    pub(crate) fn handle_slow(&mut self, now: Instant, config: &Config) -> SlowAction {
        let (policy, limit) = (config.slow_consumer, config.max_outq_bytes);
        let mut action = SlowAction::default();
        if self.outq.len_bytes() <= limit {
            return action;
        }
        if policy == SlowConsumer::Conflate {
            action.conflated = self.outq.conflate();
        }
        if policy != SlowConsumer::Close && self.outq.len_bytes() > limit {
            // Down to three quarters, so a flood does not rescan the queue per frame.
            action.dropped = self.outq.drop_oldest(limit - limit / 4);
        }
        if policy == SlowConsumer::Close || self.outq.len_bytes() > limit {
            self.outq.discard_unstarted();
            if let Phase::Open(conn) = &mut self.phase {
                conn.close(
                    CloseCode::POLICY,
                    "slow consumer",
                    now,
                    &mut Tx(&mut self.outq),
                );
            }
            // The close frame goes out if the peer reads by the deadline.
            self.phase = draining(now, config);
            action.closed = true;
        }
        self.sync();
        action
    }

    /// Starts a server-side close (shutdown): close 1001 on open connections, and drops
    /// sessions still in their handshake.
    pub(crate) fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Step {
        match &mut self.phase {
            Phase::Handshake { .. } => return Step::Drop,
            Phase::Open(conn) => conn.close(code, reason, now, &mut Tx(&mut self.outq)),
            Phase::Draining { .. } | Phase::Lingering { .. } => {}
        }
        self.sync();
        Step::Continue
    }

    /// Runs timers; returns what to do next.
    pub(crate) fn handle_timeout(&mut self, now: Instant, config: &Config) -> Step {
        match &mut self.phase {
            Phase::Handshake { deadline, .. } if now >= *deadline => {
                tracing::debug!("handshake timeout");
                return Step::Drop;
            }
            Phase::Open(conn) if conn.poll_timeout().is_some_and(|t| now >= t) => {
                conn.handle_timeout(now, &mut Tx(&mut self.outq));
                if conn.is_finished() {
                    self.phase = draining(now, config);
                }
                self.sync();
            }
            Phase::Draining { deadline } | Phase::Lingering { deadline } if now >= *deadline => {
                return Step::Drop;
            }
            _ => {}
        }
        Step::Continue
    }

    /// Called after writing: once a draining session's queue is empty, it half-closes.
    pub(crate) fn next_step(&mut self, now: Instant, config: &Config) -> Step {
        if self.is_draining() && self.outq.is_empty() {
            self.phase = Phase::Lingering {
                deadline: now + config.limits.close_timeout,
            };
            return Step::ShutdownWrite;
        }
        Step::Continue
    }
}

/// The draining phase, with the time allowed to flush.
fn draining(now: Instant, config: &Config) -> Phase {
    Phase::Draining {
        deadline: now + config.limits.close_timeout,
    }
}
