//! One accepted socket's life, independent of the I/O backend.
//!
//! A session goes `Handshake → Open → Draining → Lingering`: it parses the upgrade request
//! and asks the handler (a plain HTTP request, without `Upgrade`, is answered by the
//! handler's [`on_http`](super::handler::Handler::on_http) and goes straight to
//! `Draining`), drives the protocol [`Connection`], and after the last frame
//! flushes what it has pending, half-closes the socket and waits (bounded) for the peer's end of
//! the TCP connection, so that unread input never turns our final close frame into a
//! reset. The backend only moves bytes: it calls [`Session::handle_read`] with what it
//! read, writes what [`Session::outbox`] gathers (own frames and the pending runs of the
//! subscribed topics' logs), and asks [`Session::wants_read`] / [`Session::next_step`]
//! what to do.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::Config;
use super::handler::{
    Client, HttpRequest, HttpResponse, Message, Source, Subscriber, Upgrade, UpgradeRequest,
};
use super::stats::Counters;
use crate::fanout::Fanout;
use crate::fanout::outbox::Outbox;
use crate::fanout::ring::{InboxRx, Publication};
use crate::fanout::topic::{Form, TopicName, Topics};
use crate::protocol::close::CloseCode;
use crate::protocol::conn::{Connection, Event, Limits, Sink};
use crate::protocol::envelope;
use crate::protocol::error::HandshakeError;
use crate::protocol::handshake::{self, Parsed};
use crate::protocol::http;

/// Longest a connection refused by a connection limit lingers after its `503` (bounded by
/// the close timeout too): long enough for the client to read the answer and close, short
/// so that refused connections arriving in a flood do not hold the table themselves.
const REFUSED_LINGER: Duration = Duration::from_secs(1);

/// Where a session is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading the upgrade request until the deadline.
    Handshake { buf: Vec<u8>, deadline: Instant },
    /// A WebSocket connection.
    Open(Connection),
    /// No more frames: flush what is pending (by the deadline), then half-close.
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

/// The reactor's state a session acts on while handling input.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config,
    /// The protocol limits, shared by every connection.
    pub(crate) limits: &'a Arc<Limits>,
    pub(crate) topics: &'a mut Topics,
    pub(crate) fanout: &'a Fanout,
    /// The reactor's inbox, and its reused publication list.
    pub(crate) inbox: &'a InboxRx,
    pub(crate) batch: &'a mut Vec<Publication>,
    /// The session's key in the reactor (its subscriber id).
    pub(crate) key: usize,
    /// The reactor's counters (requests refused, answered, upgraded).
    pub(crate) stats: &'a Counters,
    /// Whether client messages reach the handler: not once the reactor is shutting down.
    pub(crate) taking: bool,
}

/// Per-connection state the reactor keeps beside the socket.
#[derive(Debug)]
pub(crate) struct Session {
    phase: Phase,
    /// What waits for the socket: own frames (the handshake response, replies, control
    /// frames) and a cursor per subscribed topic.
    pub(crate) outbox: Outbox,
    /// The topic this connection publishes to, if the handler said so.
    publish_to: Option<TopicName>,
    /// Plain, or `ringcast.v1` (the subprotocol the handshake selected).
    form: Form,
    /// Refused by a connection limit: lingers at most [`REFUSED_LINGER`].
    refused: bool,
}

/// Routes protocol output into the outbox and client messages to the handler.
struct App<'s, 'c> {
    outbox: &'s mut Outbox,
    publish_to: Option<&'s TopicName>,
    form: Form,
    ctx: &'s mut Ctx<'c>,
    close: Option<(CloseCode, String)>,
    messages: u64,
}

impl Sink for App<'_, '_> {
    fn transmit(&mut self, frame: Bytes) {
        self.outbox.push(frame);
    }

    fn transmit_close(&mut self, frame: Bytes) {
        close_after_pending(self.outbox, self.ctx.topics, self.ctx.key, frame);
    }

    fn event(&mut self, event: Event<'_>) {
        let msg = match event {
            Event::Text(t) => Message::Text(t),
            Event::Binary(b) => Message::Binary(b),
            Event::Ping(_) | Event::Pong(_) | Event::Close(_) => return,
        };
        self.messages += 1;
        if self.close.is_some() || !self.ctx.taking {
            return;
        }
        let mut client = Client {
            key: self.ctx.key,
            form: self.form,
            outbox: self.outbox,
            topics: self.ctx.topics,
            rules: &self.ctx.config.topics,
            source: Source {
                fanout: self.ctx.fanout,
                stats: self.ctx.stats,
                inbox: self.ctx.inbox,
                batch: self.ctx.batch,
            },
            publish_to: self.publish_to,
            close: &mut self.close,
        };
        self.ctx.config.handler.0.on_message(&mut client, msg);
    }
}

/// A sink for frames the protocol sends on its own (timers, server closes).
struct Tx<'a> {
    outbox: &'a mut Outbox,
    topics: &'a mut Topics,
    key: usize,
}

impl Sink for Tx<'_> {
    fn transmit(&mut self, frame: Bytes) {
        self.outbox.push(frame);
    }

    fn transmit_close(&mut self, frame: Bytes) {
        close_after_pending(self.outbox, self.topics, self.key, frame);
    }

    fn event(&mut self, _: Event<'_>) {}
}

/// Queues the close frame, the last frame of a connection: the subscriptions end there,
/// and what they still have pending is sent before it.
fn close_after_pending(outbox: &mut Outbox, topics: &mut Topics, key: usize, frame: Bytes) {
    for s in outbox.freeze(topics) {
        topics.unsubscribe(s.topic, key, s.pos);
    }
    outbox.push(frame);
}

impl Session {
    /// A session for a socket accepted at `now`.
    pub(crate) fn new(now: Instant, config: &Config) -> Self {
        Self {
            phase: Phase::Handshake {
                buf: Vec::new(),
                deadline: now + config.handshake_timeout,
            },
            outbox: Outbox::default(),
            publish_to: None,
            form: Form::Plain,
            refused: false,
        }
    }

    /// A session that refuses its connection at once: the `503` response naming the limit
    /// (`reason`) is queued, the request is not read, and the session drains.
    pub(crate) fn refused(now: Instant, config: &Config, reason: String) -> Self {
        let mut s = Self::new(now, config);
        s.reject(&HandshakeError::Unavailable(reason), now, config);
        s.refused = true;
        s
    }

    /// Whether the session is still reading its upgrade request.
    pub(crate) fn in_handshake(&self) -> bool {
        matches!(self.phase, Phase::Handshake { .. })
    }

    /// Whether the session is closing: flushing its last bytes, or half-closed and
    /// waiting for the peer's end.
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. } | Phase::Lingering { .. })
    }

    /// Whether the backend should read from the socket now: not while its own frames
    /// (replies) are over the limit (backpressure) and not while draining.
    pub(crate) fn wants_read(&self, config: &Config) -> bool {
        match self.phase {
            Phase::Handshake { .. } | Phase::Open(_) => {
                self.outbox.own_bytes() <= config.max_lag_bytes
            }
            Phase::Draining { .. } => false,
            Phase::Lingering { .. } => true,
        }
    }

    /// Whether this connection publishes (its reads feed the fan-out rings).
    pub(crate) fn is_publisher(&self) -> bool {
        self.publish_to.is_some()
    }

    /// Whether the session sends no more frames and waits for its queue to drain.
    pub(crate) fn is_draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    /// Ends every subscription (the connection is going away).
    pub(crate) fn leave(&mut self, topics: &mut Topics, key: usize) {
        for s in self.outbox.drop_subs(topics) {
            topics.unsubscribe(s.topic, key, s.pos);
        }
    }

    /// Takes bytes read from the socket (modified in place: unmasking); returns the
    /// number of complete messages received.
    pub(crate) fn handle_read(&mut self, data: &mut [u8], now: Instant, ctx: &mut Ctx<'_>) -> u64 {
        self.read_phase(data, now, ctx)
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
                    outbox: &mut self.outbox,
                    publish_to: self.publish_to.as_ref(),
                    form: self.form,
                    ctx,
                    close: None,
                    messages: 0,
                };
                if let Err(e) = conn.handle_read(data, now, &mut app) {
                    tracing::debug!(
                        conn = app.ctx.key,
                        close_code = e.close_code().0,
                        reason = %e,
                        "protocol error"
                    );
                }
                let messages = app.messages;
                if let Some((code, reason)) = app.close.take() {
                    let mut tx = Tx {
                        outbox: &mut self.outbox,
                        topics: ctx.topics,
                        key: ctx.key,
                    };
                    conn.close(code, &reason, now, &mut tx);
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
                log_refusal(ctx.key, None, &e);
                ctx.stats.count_rejection(e.status());
                self.reject(&e, now, ctx.config);
                return 0;
            }
            Parsed::Http(req) => {
                self.answer(&req, now, ctx);
                return 0;
            }
            Parsed::Accept(req) => req,
        };
        let decision = ctx.config.handler.0.on_upgrade(&UpgradeRequest {
            path: &req.path,
            query: req.query.as_deref(),
            headers: &req.headers,
            protocol: req.protocol.as_deref(),
        });
        let (topics, publish_to, start) = match decision {
            Upgrade::Accept {
                topics,
                publish_to,
                start,
            } => (topics, publish_to, start),
            Upgrade::Reject { status, reason } => {
                let e = if status == 404 {
                    HandshakeError::NotFound
                } else {
                    HandshakeError::Refused { status, reason }
                };
                log_refusal(ctx.key, Some(&req.path), &e);
                ctx.stats.count_rejection(e.status());
                self.reject(&e, now, ctx.config);
                return 0;
            }
        };
        if req.protocol.as_deref() == Some(envelope::PROTOCOL) {
            self.form = Form::V1;
        }
        let sub = Subscriber {
            key: ctx.key,
            form: self.form,
            rules: &ctx.config.topics,
        };
        let mut source = Source {
            fanout: ctx.fanout,
            stats: ctx.stats,
            inbox: ctx.inbox,
            batch: ctx.batch,
        };
        // The response goes out first; a gap announced by a resume follows it.
        let mut resp = Vec::with_capacity(160);
        handshake::accept_response_into(&req, &mut resp);
        self.outbox.push(Bytes::from(resp));
        for t in &topics {
            let r = sub.subscribe(&mut self.outbox, ctx.topics, &mut source, t, start);
            if let Err(e) = r {
                // The 101 response (and any gap) is not sent: a 400 goes instead.
                self.leave(ctx.topics, ctx.key);
                self.outbox = Outbox::default();
                let e = HandshakeError::Refused {
                    status: 400,
                    reason: format!("topic '{t}': {e}"),
                };
                log_refusal(ctx.key, Some(&req.path), &e);
                ctx.stats.count_rejection(e.status());
                self.reject(&e, now, ctx.config);
                return 0;
            }
        }
        ctx.stats.upgrades.fetch_add(1, Ordering::Relaxed);
        self.publish_to = publish_to;
        let conn = Connection::new(Arc::clone(ctx.limits), now);
        self.phase = Phase::Open(conn);
        let rest = &mut buf[req.head_len..];
        if rest.is_empty() {
            0
        } else {
            self.read_phase(rest, now, ctx)
        }
    }

    /// Answers a plain HTTP request with what the handler says (404 when it has nothing at
    /// the path), then drains: one request per connection.
    fn answer(&mut self, req: &http::Request, now: Instant, ctx: &mut Ctx<'_>) {
        let resp = ctx.config.handler.0.on_http(&HttpRequest {
            method: req.method,
            path: &req.path,
            query: req.query.as_deref(),
            headers: &req.headers,
        });
        let resp = resp.unwrap_or_else(|| HttpResponse::not_found(&req.path));
        tracing::debug!(
            conn = ctx.key,
            path = req.path,
            status = resp.status,
            "http request"
        );
        ctx.stats.http_requests.fetch_add(1, Ordering::Relaxed);
        // One frame of the outbox: head and body together.
        let mut out = Vec::with_capacity(160 + resp.body.len());
        http::response_into(&resp, req.method, &mut out);
        self.outbox.push(Bytes::from(out));
        self.phase = draining(now, ctx.config);
    }

    fn reject(&mut self, e: &HandshakeError, now: Instant, config: &Config) {
        let mut resp = Vec::with_capacity(256);
        handshake::reject_response_into(e, &mut resp);
        self.outbox.push(Bytes::from(resp));
        self.phase = draining(now, config);
    }

    /// Closes a slow consumer with 1008: its subscriptions end without sending what they
    /// have pending (a frame already started is finished), then the close frame goes out
    /// if the peer reads it by the deadline.
    pub(crate) fn close_slow(
        &mut self,
        now: Instant,
        config: &Config,
        topics: &mut Topics,
        key: usize,
    ) {
        tracing::debug!(
            conn = key,
            close_code = CloseCode::POLICY.0,
            "slow consumer: closing"
        );
        // Own frames not started are dropped first: the rest of a published frame the
        // subscription had started goes to the front of the own queue and must stay.
        self.outbox.discard_own_unstarted();
        self.leave(topics, key);
        if let Phase::Open(conn) = &mut self.phase {
            let mut tx = Tx {
                outbox: &mut self.outbox,
                topics,
                key,
            };
            conn.close(CloseCode::POLICY, "slow consumer", now, &mut tx);
        }
        self.phase = draining(now, config);
    }

    /// Starts a server-side close (shutdown): close 1001 on open connections, after what
    /// their subscriptions have pending, and drops sessions still in their handshake.
    pub(crate) fn close(
        &mut self,
        code: CloseCode,
        reason: &str,
        now: Instant,
        topics: &mut Topics,
        key: usize,
    ) -> Step {
        match &mut self.phase {
            Phase::Handshake { .. } => return Step::Drop,
            Phase::Open(conn) => {
                let mut tx = Tx {
                    outbox: &mut self.outbox,
                    topics,
                    key,
                };
                conn.close(code, reason, now, &mut tx);
            }
            Phase::Draining { .. } | Phase::Lingering { .. } => {}
        }
        Step::Continue
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do, as far as
    /// the session knows now (input or a close can bring it forward).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Handshake { deadline, .. }
            | Phase::Draining { deadline }
            | Phase::Lingering { deadline } => Some(*deadline),
            Phase::Open(conn) => conn.poll_timeout(),
        }
    }

    /// Runs timers; returns what to do next.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        config: &Config,
        topics: &mut Topics,
        key: usize,
    ) -> Step {
        match &mut self.phase {
            Phase::Handshake { deadline, .. } if now >= *deadline => {
                tracing::debug!(conn = key, "handshake timeout");
                return Step::Drop;
            }
            Phase::Open(conn) if conn.poll_timeout().is_some_and(|t| now >= t) => {
                let mut tx = Tx {
                    outbox: &mut self.outbox,
                    topics,
                    key,
                };
                conn.handle_timeout(now, &mut tx);
                if conn.is_finished() {
                    self.phase = draining(now, config);
                }
            }
            Phase::Draining { deadline } | Phase::Lingering { deadline } if now >= *deadline => {
                return Step::Drop;
            }
            _ => {}
        }
        Step::Continue
    }

    /// Queues a `ringcast.v1` heartbeat: the last sequence number sent of each topic
    /// subscribed to; returns whether it did (an open v1 connection with subscriptions,
    /// one of them quiet since the last tick). A connection that was sent something of
    /// every topic since the last tick has just seen each topic's progress and is alive:
    /// it is skipped, as a FIX session skips a heartbeat after other traffic. So a busy
    /// connection costs no heartbeat frame or write, and every connection still hears
    /// something at least every two intervals.
    pub(crate) fn heartbeat(&mut self, topics: &Topics) -> bool {
        if self.form != Form::V1 || !matches!(self.phase, Phase::Open(_)) {
            return false;
        }
        if self.outbox.subs().is_empty() || !self.outbox.quiet_since_last_beat() {
            return false;
        }
        let subs = self.outbox.subs();
        let frame = envelope::heartbeat(subs.iter().map(|s| {
            let entry = topics.entry(s.topic);
            (entry.name.as_str(), entry.log.seq_before(s.cursor))
        }));
        self.outbox.push(frame);
        true
    }

    /// Called after writing: once a draining session has sent everything, it half-closes.
    pub(crate) fn next_step(&mut self, now: Instant, config: &Config, topics: &Topics) -> Step {
        if self.is_draining() && self.outbox.is_empty(topics) {
            let linger = if self.refused {
                REFUSED_LINGER.min(config.limits.close_timeout)
            } else {
                config.limits.close_timeout
            };
            self.phase = Phase::Lingering {
                deadline: now + linger,
            };
            return Step::ShutdownWrite;
        }
        Step::Continue
    }
}

/// Logs a refused upgrade with the fields an operator looks for (`path` once the request
/// is parsed).
fn log_refusal(conn: usize, path: Option<&str>, e: &HandshakeError) {
    tracing::debug!(conn, path, status = e.status(), reason = %e, "handshake refused");
}

/// The draining phase, with the time allowed to flush.
fn draining(now: Instant, config: &Config) -> Phase {
    Phase::Draining {
        deadline: now + config.limits.close_timeout,
    }
}
