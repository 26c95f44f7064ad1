//! # ringcast
//!
//! A WebSocket broadcast engine: a message published once reaches very many clients.
//!
//! ```text
//!  socket bytes ──► reactor (one per core, pinned; io_uring or epoll, one generic loop)
//!                     │  read into a reactor buffer (epoll) or a provided buffer (io_uring)
//!                     ▼
//!                   protocol::Connection (sans-IO): handshake, frames, unmask (SIMD),
//!                     │  UTF-8 (simdutf8, incremental), close/ping rules, limits
//!                     ▼ events
//!                   application (echo, broadcast, …)
//!                     │ publish: framed once (`Bytes`) ──► inbox ring of every reactor
//!                     ▼
//!                   reactor: topic log (pooled chunks, one copy per message per reactor)
//!                     │ subscriber = cursor; one visit per subscriber per batch
//!                     ▼
//!                   own frames + log[cursor..head] per topic ──► one sendmsg / send SQE
//!                                                                per socket ──► socket
//! ```
//!
//! The seams: [`protocol`] never touches I/O; [`reactor`] never parses frames beyond the
//! connection's API, and its two backends (io_uring: completions into direct descriptors;
//! epoll: readiness) share one reactor core; [`fanout`] holds the inbox rings, topic logs
//! and cursors, and wakes reactors through a trait they implement; [`server`] is the
//! public face used by the `ringcast` binary and by embedders alike, and answers plain HTTP
//! on the same listener (health, readiness, Prometheus metrics: [`server::http`]) through
//! the reactor's handler hook, and joins a cluster of nodes through a broker
//! ([`server::cluster`], behind the fan-out's [`fanout::Relay`] hook). Layers point one
//! way: `server → reactor → fanout → protocol`.
//!
//! # Feature flags
//!
//! - `cli` (default): the `ringcast` binary and the crates only it needs (`clap`,
//!   `tracing-subscriber`, `signal-hook`). An embedder depends on
//!   `ringcast = { version = "0.1", default-features = false }` and gets the engine alone;
//!   it can still read operators' settings files with [`server::Settings`].

#![warn(missing_docs)]
// Unsafe code is fenced: only the modules that declare `#[allow(unsafe_code)]` (SIMD
// unmasking, the two I/O drivers, the waker, libc helpers, topic-log chunks) may use it.
#![deny(unsafe_code)]

pub mod fanout;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod protocol;
pub mod reactor;
pub mod server;

pub use server::{Engine, EngineBuilder, EngineHandle, ShutdownTrigger};
