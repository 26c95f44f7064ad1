//! The public face: build an engine, start it, get a handle.

use std::io;
use std::net::SocketAddr;

use crate::protocol::conn::Limits;
use crate::protocol::handshake::HandshakeConfig;

/// What connections do with the messages they receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Echo every message back with its type (the conformance-suite mode).
    #[default]
    Echo,
}

/// Entry point: `Engine::builder()`.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// A builder with defaults: `127.0.0.1:9001`, one reactor per core, echo mode.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }
}

/// Configures and starts an engine.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    listen: SocketAddr,
    threads: usize,
    handshake: HandshakeConfig,
    limits: Limits,
    mode: Mode,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            threads: 0,
            handshake: HandshakeConfig::default(),
            limits: Limits::default(),
            mode: Mode::Echo,
        }
    }
}

impl EngineBuilder {
    /// Address to listen on (port 0 picks a free port shared by all reactors).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Number of reactor threads (0: one per core).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }
    /// Handshake settings.
    pub fn handshake(mut self, h: HandshakeConfig) -> Self {
        self.handshake = h;
        self
    }
    /// Protocol limits.
    pub fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }
    /// Application mode.
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }
    /// Binds and starts the reactors.
    pub fn start(self) -> io::Result<EngineHandle> {
        let _ = (self.listen, self.threads, &self.handshake, &self.limits, self.mode);
        Err(io::Error::other("not implemented"))
    }
}

/// A running engine.
#[derive(Debug)]
pub struct EngineHandle {
    local_addr: SocketAddr,
}

impl EngineHandle {
    /// The bound address (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// Stops the reactors and waits for them.
    pub fn shutdown(self) {}
}
