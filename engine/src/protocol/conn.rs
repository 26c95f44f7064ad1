//! The server side of an open WebSocket connection, as a state machine.
//!
//! [`Connection::handle_read`] takes the bytes the reactor read, in the reactor's own
//! buffer: headers are decoded, payloads unmasked and UTF-8-validated in place, and
//! complete messages are handed to a [`Sink`] together with the frames the protocol
//! itself must send (pongs, the close reply), in wire order. The connection owns no socket
//! and reads no clock: `now` is an argument, and [`Connection::poll_timeout`] /
//! [`Connection::handle_timeout`] drive the close and idle timers.
//!
//! # Buffers and bounds
//! - A frame header cut by the end of a read is carried in 14 bytes.
//! - A message that arrives whole in one read is handed out borrowed from the read buffer
//!   (no copy). One that spans reads or fragments is assembled in the connection's
//!   message buffer, bounded by [`Limits::max_message`]; a frame or message announced
//!   over the limits fails with 1009 as soon as its header is seen. What connections
//!   hold of large messages together is bounded by [`Limits::message_budget`] (1013).
//! - Text is validated as it arrives, so invalid UTF-8 fails with 1007 in the fragment
//!   where it appears, not at the end of the message.
//!
//! # Closing
//! A close from the peer is answered (echoing its code) and the connection is
//! [`finished`](Connection::is_finished): the reactor flushes, shuts the socket down for
//! writing and drops it. A protocol error sends a close with the error's code and
//! finishes at once; later input is discarded. A close the server starts
//! ([`Connection::close`]) waits up to [`Limits::close_timeout`] for the peer's reply.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::budget::MessageBudget;
use super::close::{CloseCode, CloseFrame};
use super::encode;
use super::error::ProtocolError;
use super::frame::{self, Decoded, FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use super::lazy_buf::LazyBuf;
use super::mask;
use super::utf8::Utf8Validator;

/// Above this capacity the message buffer is released after each message, so that one
/// large message does not pin memory on an idle connection.
const KEEP_MSG_CAPACITY: usize = 64 * 1024;

/// Limits and timers of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (all fragments together), in bytes; over it: close 1009.
    pub max_message: usize,
    /// Largest single frame payload, in bytes; over it: close 1009.
    pub max_frame: usize,
    /// Most fragments in one message (`None`: no limit besides `max_message`); over it:
    /// close 1008.
    pub max_fragments: Option<u32>,
    /// How long a close the server starts waits for the peer's reply, and how long the
    /// reactor lingers for the peer's end of the TCP connection after the last frame.
    pub close_timeout: Duration,
    /// After this long with nothing received, the server sends a Ping; after as long
    /// again with still nothing, it closes with 1001 "idle timeout". `None` disables.
    pub idle_timeout: Option<Duration>,
    /// What every connection given these limits (clones included) may hold of large
    /// messages in progress, together; past it: close 1013. See [`MessageBudget`].
    pub message_budget: MessageBudget,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 16 << 20,
            max_frame: 16 << 20,
            max_fragments: None,
            close_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(30)),
            message_budget: MessageBudget::default(),
        }
    }
}

/// What a connection reports to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message (valid UTF-8).
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping (already answered with a pong).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer closed (already answered); no more events follow.
    Close(CloseFrame<'a>),
}

/// Where a connection delivers its output, in wire order.
pub trait Sink {
    /// A frame the protocol must send (a ping or a pong), already encoded.
    fn transmit(&mut self, frame: Bytes);
    /// The close frame: the last frame the connection sends (a sink that sends frames of
    /// its own ends them here). The default sends it like any other.
    fn transmit_close(&mut self, frame: Bytes) {
        self.transmit(frame);
    }
    /// An event for the application. Replies to it go out after the frames transmitted
    /// so far.
    fn event(&mut self, event: Event<'_>);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Exchanging messages.
    Open,
    /// The server sent a close and waits for the reply until `due`.
    CloseSent,
    /// The close handshake is over or the connection failed: no more frames either way.
    Finished,
}

/// The frame whose payload is being received.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: FrameHeader,
    key: [u8; 4],
    remaining: u64,
    /// Position in the 4-byte mask key (0..=3): one byte, to keep connections small.
    phase: u8,
}

/// The data message being received.
#[derive(Debug, Clone, Copy)]
struct InMessage {
    text: bool,
    fragments: u32,
}

/// One WebSocket connection, server side, after the opening handshake.
#[derive(Debug)]
pub struct Connection {
    /// Shared by every connection of a reactor (one pointer each, not a copy).
    limits: Arc<Limits>,
    state: State,
    head: [u8; MAX_HEADER_LEN],
    head_len: u8,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    /// A message that spans reads or fragments, while it is assembled. What it holds
    /// past [`MessageBudget::FREE`] is taken from `limits.message_budget` (no field of
    /// its own: idle connections stay small).
    msg_buf: LazyBuf,
    /// A control frame's payload that spans reads, while it is assembled.
    control: LazyBuf,
    utf8: Utf8Validator,
    /// When the timer of the current state fires: the idle ping (or, once `pinged`, the
    /// idle close) while open, the end of the wait for the close reply after a close.
    /// One instant for all of them keeps an idle connection small.
    due: Instant,
    /// The idle ping went out and no input came since.
    pinged: bool,
}

impl Connection {
    /// A connection that has just completed its handshake at `now`, with `limits` (a
    /// [`Limits`], or an `Arc` of one shared by many connections).
    pub fn new(limits: impl Into<Arc<Limits>>, now: Instant) -> Self {
        let mut c = Self {
            limits: limits.into(),
            state: State::Open,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            frame: None,
            message: None,
            msg_buf: LazyBuf::default(),
            control: LazyBuf::default(),
            utf8: Utf8Validator::new(),
            due: now,
            pinged: false,
        };
        c.restart_idle(now);
        c
    }

    /// Restarts the idle timer from `now` (input arrived, or the connection opened).
    fn restart_idle(&mut self, now: Instant) {
        if let Some(idle) = self.limits.idle_timeout {
            self.due = now + idle;
        }
        self.pinged = false;
    }

    /// Whether the application may still send messages.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether no frame will be sent or received any more: the reactor flushes what is
    /// queued and closes the socket.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Processes bytes read from the socket, unmasking them in place.
    ///
    /// # Errors
    /// The protocol violation that failed the connection; the close frame for it has
    /// already gone to `sink` and the connection is finished.
    pub fn handle_read<S: Sink>(
        &mut self,
        input: &mut [u8],
        now: Instant,
        sink: &mut S,
    ) -> Result<(), ProtocolError> {
        if self.state == State::Finished {
            return Ok(());
        }
        if self.state == State::Open {
            self.restart_idle(now);
        }
        match self.process(input, sink) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail(&e, sink);
                Err(e)
            }
        }
    }

    /// Starts a close from the server side: sends a close frame and waits for the reply
    /// until `now + close_timeout`. Does nothing unless the connection is open.
    pub fn close<S: Sink>(&mut self, code: CloseCode, reason: &str, now: Instant, sink: &mut S) {
        if self.state == State::Open {
            sink.transmit_close(encode::close(code, reason));
            self.state = State::CloseSent;
            self.due = now + self.limits.close_timeout;
        }
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open => self.limits.idle_timeout.map(|_| self.due),
            State::CloseSent => Some(self.due),
            State::Finished => None,
        }
    }

    /// Runs the timers: idle pings, the idle close, and the close-reply deadline.
    pub fn handle_timeout<S: Sink>(&mut self, now: Instant, sink: &mut S) {
        match self.state {
            State::Open => {
                let Some(idle) = self.limits.idle_timeout else {
                    return;
                };
                if now < self.due {
                    return;
                }
                if self.pinged {
                    self.close(CloseCode::GOING_AWAY, "idle timeout", now, sink);
                } else {
                    sink.transmit(encode::frame(OpCode::Ping, b""));
                    self.pinged = true;
                    self.due = now + idle;
                }
            }
            State::CloseSent if now >= self.due => self.state = State::Finished,
            _ => {}
        }
    }

    fn fail<S: Sink>(&mut self, e: &ProtocolError, sink: &mut S) {
        if self.state == State::Open {
            sink.transmit_close(encode::close(e.close_code(), e.reason()));
        }
        self.state = State::Finished;
        self.frame = None;
        self.message = None;
        self.head_len = 0;
        self.utf8.reset();
        self.release_message(0);
    }

    fn process<S: Sink>(
        &mut self,
        mut input: &mut [u8],
        sink: &mut S,
    ) -> Result<(), ProtocolError> {
        loop {
            if self.state == State::Finished {
                return Ok(());
            }
            let mut frame = match self.frame {
                Some(f) => f,
                None => {
                    let Some((header, used)) = self.decode_header(input)? else {
                        return Ok(());
                    };
                    input = &mut std::mem::take(&mut input)[used..];
                    self.start_frame(header)?
                }
            };
            let take = usize::try_from(frame.remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let (chunk, rest) = std::mem::take(&mut input).split_at_mut(take);
            input = rest;
            frame.phase = mask::unmask(chunk, frame.key, usize::from(frame.phase)) as u8;
            frame.remaining -= take as u64;
            let done = frame.remaining == 0;
            self.frame = if done { None } else { Some(frame) };
            if frame.header.opcode.is_control() {
                self.control.extend_from_slice(chunk);
                if done {
                    let r = self.finish_control(frame.header.opcode, sink);
                    // Control frames are rare: an idle connection keeps no buffer for them.
                    self.control.clear_keeping(0);
                    r?;
                }
            } else {
                self.data(frame.header, chunk, done, sink)?;
            }
            if input.is_empty() && self.frame.is_some() {
                return Ok(());
            }
        }
    }

    /// Decodes the next header from the carried bytes and `input`; returns it and the
    /// bytes of `input` it used, or `None` (after carrying what there is) if incomplete.
    fn decode_header(
        &mut self,
        input: &[u8],
    ) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let carried = usize::from(self.head_len);
        if carried == 0 {
            return match frame::decode(input)? {
                Decoded::Header(h, n) => Ok(Some((h, n))),
                Decoded::Need(_) => {
                    // Need(n) is at most MAX_HEADER_LEN, so the input fits.
                    self.head[..input.len()].copy_from_slice(input);
                    self.head_len = input.len() as u8;
                    Ok(None)
                }
            };
        }
        let take = input.len().min(MAX_HEADER_LEN - carried);
        self.head[carried..carried + take].copy_from_slice(&input[..take]);
        match frame::decode(&self.head[..carried + take])? {
            Decoded::Header(h, n) => {
                self.head_len = 0;
                Ok(Some((h, n - carried)))
            }
            Decoded::Need(_) => {
                self.head_len = (carried + take) as u8;
                Ok(None)
            }
        }
    }

    /// Checks a header against the connection's state and limits and starts its frame.
    fn start_frame(&mut self, h: FrameHeader) -> Result<InFrame, ProtocolError> {
        if h.rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let key = h.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        if h.len > self.limits.max_frame as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: h.len,
                limit: self.limits.max_frame as u64,
            });
        }
        match h.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => self.control.clear_keeping(0),
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                self.message = Some(InMessage {
                    text: h.opcode == OpCode::Text,
                    fragments: 1,
                });
                self.check_message_len(h.len)?;
            }
            OpCode::Continuation => {
                let msg = self
                    .message
                    .as_mut()
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                // Saturates: with no fragment limit, empty continuations could otherwise
                // count past u32::MAX.
                msg.fragments = msg.fragments.saturating_add(1);
                if let Some(max) = self.limits.max_fragments {
                    if msg.fragments > max {
                        return Err(ProtocolError::TooManyFragments(max));
                    }
                }
                self.check_message_len(h.len)?;
            }
        }
        Ok(InFrame {
            header: h,
            key,
            remaining: h.len,
            phase: 0,
        })
    }

    fn check_message_len(&self, frame_len: u64) -> Result<(), ProtocolError> {
        let len = (self.msg_buf.len() as u64).saturating_add(frame_len);
        if len > self.limits.max_message as u64 {
            return Err(ProtocolError::MessageTooLarge {
                len,
                limit: self.limits.max_message as u64,
            });
        }
        Ok(())
    }

    /// Takes a piece of a data frame's payload (already unmasked).
    fn data<S: Sink>(
        &mut self,
        h: FrameHeader,
        chunk: &[u8],
        frame_done: bool,
        sink: &mut S,
    ) -> Result<(), ProtocolError> {
        let Some(msg) = self.message else {
            return Ok(());
        };
        let complete = frame_done && h.fin;
        if complete && self.msg_buf.is_empty() && chunk.len() as u64 == h.len {
            // The whole message in this one piece: hand it out from the read buffer,
            // validated once.
            self.message = None;
            return Self::deliver(self.state == State::Open, msg.text, chunk, sink);
        }
        if msg.text {
            self.utf8
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if self.msg_buf.is_empty() {
            let hint = usize::try_from(h.len).unwrap_or(0).min(KEEP_MSG_CAPACITY);
            self.msg_buf.reserve(hint);
        }
        self.charge(self.msg_buf.len() + chunk.len())?;
        self.msg_buf.extend_from_slice(chunk);
        if !complete {
            return Ok(());
        }
        if msg.text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.message = None;
        let r = Self::deliver(
            self.state == State::Open,
            msg.text,
            self.msg_buf.as_slice(),
            sink,
        );
        self.release_message(KEEP_MSG_CAPACITY);
        r
    }

    /// Takes from the shared budget what a message buffer of `len` bytes holds past the
    /// connection's own allowance.
    fn charge(&self, len: usize) -> Result<(), ProtocolError> {
        let due = len.saturating_sub(MessageBudget::FREE);
        let held = self.msg_buf.len().saturating_sub(MessageBudget::FREE);
        let budget = &self.limits.message_budget;
        if due > held && !budget.take(due - held) {
            return Err(ProtocolError::MessageBudget(budget.max()));
        }
        Ok(())
    }

    /// Empties the message buffer (keeping up to `keep` bytes of capacity) and gives
    /// back what it had taken from the shared budget.
    fn release_message(&mut self, keep: usize) {
        give_back(&self.limits, &self.msg_buf);
        self.msg_buf.clear_keeping(keep);
    }

    /// Hands a complete message to the sink (only while open: after the server's close,
    /// messages are read to find the reply, then dropped). Text that was assembled from
    /// pieces was validated piece by piece already; the whole-buffer check here is what
    /// turns it into a `&str` without unsafe code.
    fn deliver<S: Sink>(
        open: bool,
        text: bool,
        payload: &[u8],
        sink: &mut S,
    ) -> Result<(), ProtocolError> {
        if text {
            let s = simdutf8::basic::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?;
            if open {
                sink.event(Event::Text(s));
            }
        } else if open {
            sink.event(Event::Binary(payload));
        }
        Ok(())
    }

    /// Acts on a complete control frame, whose payload is in `self.control`.
    fn finish_control<S: Sink>(&mut self, op: OpCode, sink: &mut S) -> Result<(), ProtocolError> {
        debug_assert!(self.control.len() <= MAX_CONTROL_PAYLOAD);
        match op {
            OpCode::Ping => {
                if self.state == State::Open {
                    sink.transmit(encode::frame(OpCode::Pong, self.control.as_slice()));
                }
                sink.event(Event::Ping(self.control.as_slice()));
            }
            OpCode::Pong => sink.event(Event::Pong(self.control.as_slice())),
            OpCode::Close => {
                let close = CloseFrame::decode(self.control.as_slice())?;
                if self.state == State::Open {
                    // Echo the peer's code (an empty close is answered with an empty one).
                    let reply = match close.code {
                        Some(code) => encode::frame(OpCode::Close, &code.0.to_be_bytes()),
                        None => encode::frame(OpCode::Close, b""),
                    };
                    sink.transmit_close(reply);
                }
                self.state = State::Finished;
                self.message = None;
                // Field by field: `close` borrows the control buffer.
                give_back(&self.limits, &self.msg_buf);
                self.msg_buf.clear_keeping(0);
                sink.event(Event::Close(close));
            }
            _ => unreachable!("data opcode in finish_control"),
        }
        Ok(())
    }
}

/// A connection dropped in the middle of a large message gives its share back.
impl Drop for Connection {
    fn drop(&mut self) {
        give_back(&self.limits, &self.msg_buf);
    }
}

/// Gives back to the shared budget what message buffer `buf` took from it.
fn give_back(limits: &Limits, buf: &LazyBuf) {
    let held = buf.len().saturating_sub(MessageBudget::FREE);
    if held > 0 {
        limits.message_budget.give(held);
    }
}

#[cfg(fuzzing)]
impl Connection {
    /// For the `conn_feed` fuzz target: the message buffer's length and capacity, the
    /// control payload buffer's capacity, and the message capacity kept between messages.
    pub fn buffer_sizes(&self) -> [usize; 4] {
        [
            self.msg_buf.len(),
            self.msg_buf.capacity(),
            self.control.capacity(),
            KEEP_MSG_CAPACITY,
        ]
    }
}

#[cfg(test)]
mod tests;
