//! # ringcast
//!
//! A WebSocket broadcast engine: a message published once reaches very many clients.
//!
//! ```text
//!  socket bytes ──► reactor (one per core, pinned; epoll via mio)
//!                     │  read into a reactor buffer
//!                     ▼
//!                   protocol::Connection (sans-IO): handshake, frames, unmask (SIMD),
//!                     │  UTF-8 (simdutf8, incremental), close/ping rules, limits
//!                     ▼ events
//!                   application (echo, …) ──► frames encoded once as `Bytes`
//!                     │
//!                     ▼
//!                   out-queue (bounded) ──► one writev per writable socket ──► socket
//! ```
//!
//! The seams: [`protocol`] never touches I/O; [`reactor`] never parses frames beyond the
//! connection's API; [`server`] is the public face used by the `ringcast` binary and by
//! embedders alike.

#![warn(missing_docs)]

pub mod fanout;
pub mod protocol;
pub mod reactor;
pub mod server;

pub use server::{Engine, EngineBuilder, EngineHandle, ShutdownTrigger};
