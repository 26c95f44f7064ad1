//! The sans-IO WebSocket core: bytes in, events and bytes out.
//!
//! Nothing here touches a socket, a thread or a clock: time is passed in (`now`), buffers
//! belong to the caller. The reactor feeds what it read to a [`Connection`] and writes what
//! the connection queues; both I/O backends drive the same state machine.
//!
//! # Contract
//! - **No panics on peer bytes.** Every parser returns "need more" for short input and a
//!   typed error ([`ProtocolError`], [`HandshakeError`]) for bad input.
//! - **Bounded.** The handshake head, frame and message sizes and the fragment count are
//!   limited by configuration; a partial frame header is carried in at most 14 bytes.
//! - **In place.** Payloads are unmasked and validated inside the caller's read buffer;
//!   only a message that spans several reads or fragments is assembled into the
//!   connection's own buffer.

pub mod budget;
pub mod close;
pub mod conn;
pub mod encode;
pub mod envelope;
pub mod error;
pub mod frame;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod handshake;
pub mod http;
mod lazy_buf;
pub mod mask;
pub mod utf8;

pub use budget::MessageBudget;
pub use close::{CloseCode, CloseFrame};
pub use conn::{Connection, Event, Limits};
pub use error::{HandshakeError, ProtocolError};
pub use frame::{FrameHeader, OpCode};
