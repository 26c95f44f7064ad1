//! Engine configuration, shared read-only by all reactors.

use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::conn::Limits;
use crate::protocol::handshake::HandshakeConfig;

/// The I/O backend of the reactors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// Readiness-based, through `mio` (epoll on Linux).
    #[default]
    Epoll,
}

/// What connections do with the messages they receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Echo every message back with its type (the mode conformance suites use), on the
    /// paths `/` and `/echo`.
    #[default]
    Echo,
}

/// Everything a reactor needs to know; built by [`EngineBuilder`](super::EngineBuilder).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every reactor listens on (`SO_REUSEPORT`).
    pub listen: SocketAddr,
    /// Reactor threads; 0 means one per available core.
    pub threads: usize,
    /// Pin reactor `i` to core `i` (modulo the cores available).
    pub pin: bool,
    /// I/O backend.
    pub backend: Backend,
    /// Application mode.
    pub mode: Mode,
    /// Opening handshake rules.
    pub handshake: HandshakeConfig,
    /// A connection that has not completed its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Protocol limits and timers of open connections.
    pub limits: Limits,
    /// A connection whose out-queue holds more than this is not read from until the
    /// queue drains below it (backpressure for echo; no message is ever dropped).
    pub max_outq_bytes: usize,
    /// Listen backlog of each reactor's listener.
    pub backlog: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            threads: 0,
            pin: true,
            backend: Backend::Epoll,
            mode: Mode::Echo,
            handshake: HandshakeConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            max_outq_bytes: 4 << 20,
            backlog: 4096,
        }
    }
}

impl Config {
    /// The reactor count after resolving 0 to the number of cores.
    pub fn reactor_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}
