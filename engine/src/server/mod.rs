//! The public face: configure an engine, start it, hold a handle.
//!
//! ```
//! let handle = ringcast::Engine::builder()
//!     .listen("127.0.0.1:0".parse().unwrap()) // port 0: any free port
//!     .threads(2)
//!     .start()?;
//! println!("echo server on ws://{}", handle.local_addr());
//! assert_eq!(handle.stats().reactors.len(), 2);
//! handle.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod broadcast;
pub mod cluster;
pub mod demo;
pub mod http;
pub mod metrics;
mod ready;
pub mod settings;
pub mod stats;

pub use crate::reactor::{config, handler};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use broadcast::Broadcast;
pub use config::{Backend, Config, SharedHandler};
pub use handler::{
    Client, Echo, Handler, HttpMethod, HttpRequest, HttpResponse, Message, Upgrade, UpgradeRequest,
};
pub use http::HttpEndpoints;
pub use settings::{LogFormat, Settings, SettingsError};
pub use stats::{ReactorStats, Stats};

use crate::fanout::topic::{History, TopicName, TopicRules};
use crate::fanout::{Fanout, Published, SlowConsumer};
use crate::protocol::conn::Limits;
use crate::protocol::frame::OpCode;
use crate::protocol::handshake::HandshakeConfig;
use crate::reactor::waker::Waker;
use crate::reactor::{self, Reactors};
use cluster::{Cluster, ClusterConfig, ClusterStats};
use ready::State;

/// Entry point: `Engine::builder()`.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// A builder with defaults: `127.0.0.1:9001`, one pinned reactor per core,
    /// [`Backend::Auto`] (io_uring where the kernel allows it, else epoll), the [`Echo`]
    /// handler.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }
}

/// Configures and starts an engine.
#[derive(Debug, Clone, Default)]
pub struct EngineBuilder {
    config: Config,
    http: HttpEndpoints,
    cluster: Option<ClusterConfig>,
}

impl EngineBuilder {
    /// Address to listen on (port 0 picks a free port, shared by all reactors).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// Number of reactor threads (0: one per core).
    pub fn threads(mut self, n: usize) -> Self {
        self.config.threads = n;
        self
    }

    /// Whether reactor threads are pinned to cores (default: yes).
    pub fn pin(mut self, pin: bool) -> Self {
        self.config.pin = pin;
        self
    }

    /// I/O backend (default [`Backend::Auto`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.config.backend = backend;
        self
    }

    /// The application: upgrade decisions and client messages (default: [`Echo`]).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        self.config.handler = SharedHandler(Arc::new(handler));
        self
    }

    /// Topic name rules and topics per connection. [`start`](Self::start) refuses a
    /// `max_name_len` of 0 or over [`MAX_TOPIC_LEN`](crate::fanout::MAX_TOPIC_LEN).
    pub fn topics(mut self, rules: TopicRules) -> Self {
        self.config.topics = rules;
        self
    }

    /// What happens to a subscriber whose lag passes its limit.
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.config.slow_consumer = policy;
        self
    }

    /// `SO_SNDBUF` of accepted sockets (0: kernel autotuning).
    pub fn sndbuf(mut self, bytes: usize) -> Self {
        self.config.sndbuf = bytes;
        self
    }

    /// Publications each reactor's inbox holds.
    pub fn inbox_capacity(mut self, publications: usize) -> Self {
        self.config.inbox_capacity = publications;
        self
    }

    /// Opening handshake rules (request size limit, subprotocols, origins).
    pub fn handshake(mut self, handshake: HandshakeConfig) -> Self {
        self.config.handshake = handshake;
        self
    }

    /// How long a client may take to complete the opening handshake.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Protocol limits and timers of open connections.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// How far (bytes) a subscriber may fall behind, over all its topics together, before
    /// the slow-consumer policy acts; also the limit of a connection's queued replies,
    /// past which it is not read until they drain.
    pub fn max_lag_bytes(mut self, bytes: usize) -> Self {
        self.config.max_lag_bytes = bytes;
        self
    }

    /// What each reactor keeps of every topic's `ringcast.v1` log for snapshots and
    /// resumes (default: 1024 messages, 4 MiB, forgotten after 5 idle minutes).
    pub fn history(mut self, history: History) -> Self {
        self.config.history = history;
        self
    }

    /// How often `ringcast.v1` subscribers get a heartbeat with the latest sequence
    /// number of each of their topics (default 5 s); `None`: never.
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.config.heartbeat = every;
        self
    }

    /// io_uring receive buffers (16 KiB each) per reactor; see
    /// [`Config::uring_recv_buffers`].
    pub fn uring_recv_buffers(mut self, buffers: u16) -> Self {
        self.config.uring_recv_buffers = buffers;
        self
    }

    /// io_uring only: most rings each reactor opens, each with a table of `RLIMIT_NOFILE`
    /// direct descriptors (default 64); see [`Config::uring_rings`].
    pub fn uring_rings(mut self, rings: usize) -> Self {
        self.config.uring_rings = rings;
        self
    }

    /// Connections the whole server holds open at once (all reactors, handshakes
    /// included); one more is answered `503 Service Unavailable` with `Retry-After: 1`
    /// and the reason "server at its connection limit (N)", then closed, and counted in
    /// [`ReactorStats::refused_conns`]. `None` (the
    /// default): no limit. See [`Config::max_conns`].
    pub fn max_conns(mut self, max: Option<usize>) -> Self {
        self.config.max_conns = max;
        self
    }

    /// Connections open at once from one IP address, over the whole server; one more is
    /// answered `503` ("too many connections from this address (N)") and counted in
    /// `refused_per_ip`. On the io_uring backend this makes accepts one-shot, each with
    /// an address buffer (a multishot accept carries no peer address). `None` (the
    /// default): no limit.
    pub fn max_conns_per_ip(mut self, max: Option<usize>) -> Self {
        self.config.max_conns_per_ip = max;
        self
    }

    /// Connections each reactor holds in their opening handshake at once, so that clients
    /// that connect and send their request slowly (or never) cannot fill the server; one
    /// more is answered `503` ("too many handshakes in progress (N)") and counted in
    /// `refused_handshakes`. `None` (the default): no limit.
    pub fn max_pending_handshakes(mut self, max: Option<usize>) -> Self {
        self.config.max_pending_handshakes = max;
        self
    }

    /// The plain HTTP endpoints served on the listener, besides health and readiness
    /// (default: `/metrics` and `/stats` open to all, no demo page). See [`http`].
    pub fn http(mut self, endpoints: HttpEndpoints) -> Self {
        self.http = endpoints;
        self
    }

    /// Joins a cluster: publications reach the subscribers of every node through the
    /// broker, which numbers each topic's messages for all of them (see [`cluster`]).
    /// `None` (the default): a node on its own.
    pub fn cluster(mut self, cluster: Option<ClusterConfig>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the listeners and starts the reactors. The engine is ready (`/readyz`
    /// answers 200) once this returns.
    ///
    /// # Errors
    /// When an address cannot be bound or a thread or poller cannot be created;
    /// `InvalidInput` naming the field for a configuration the engine cannot run with
    /// ([`Config::check`]: topic rules no envelope can carry, an inbox of 0 or too large
    /// to allocate, a timeout over a year; and an empty metrics token).
    pub fn start(self) -> io::Result<EngineHandle> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        self.config.check().map_err(invalid)?;
        if self
            .http
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(invalid(
                "http: an empty metrics_token would let no one in (None needs none)".to_owned(),
            ));
        }
        let state = Arc::new(State::default());
        let mut config = self.config;
        let endpoints = http::Endpoints::new(config.handler, self.http, Arc::clone(&state));
        config.handler = SharedHandler(Arc::new(endpoints));
        let cluster = self.cluster.map(Cluster::start).transpose()?;
        let reactors = reactor::start(config, cluster.as_ref().map(Cluster::relay))?;
        if let Some(c) = &cluster {
            c.attach(reactors.fanout.clone());
            let trigger = ShutdownTrigger {
                stop: Arc::clone(&reactors.stop),
                wakers: reactors.wakers.clone(),
                state: Arc::clone(&state),
            };
            c.on_failure(move || trigger.trigger());
            state.clustered(c.probe());
        }
        state.started(reactors.stats.clone(), reactors.backend);
        Ok(EngineHandle {
            reactors: Some(reactors),
            cluster,
            state,
        })
    }
}

/// Whether the io_uring backend can run here: `Err` names what is missing or refused
/// (`io_uring_setup: EPERM ...`, a missing opcode, `RINGCAST_URING=off`).
///
/// # Errors
/// The reason io_uring cannot be used.
pub fn probe_uring() -> Result<(), String> {
    reactor::probe_uring()
}

/// A running engine. Dropping it shuts the engine down.
pub struct EngineHandle {
    reactors: Option<Reactors>,
    /// The bridge to the cluster, if the node is in one.
    cluster: Option<Cluster>,
    /// Readiness, shared with the HTTP endpoints.
    state: Arc<State>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// The backend the reactors run on: [`Backend::Epoll`] or [`Backend::Uring`] (what
    /// [`Backend::Auto`] resolved to).
    pub fn backend(&self) -> Backend {
        self.running().backend
    }

    /// Why [`Backend::Auto`] fell back to epoll (e.g. `io_uring_setup: EPERM ...`), if it
    /// did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.running().fallback.as_deref()
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.reactors
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |r| r.local_addr)
    }

    /// Publishes a text message to every subscriber of `topic`, on every reactor; the
    /// answer carries its sequence number in the topic (1, 2, 3… on this node). The frame
    /// and its `ringcast.v1` envelope are encoded once; never blocks. Callable from any
    /// thread through [`fanout`](Self::fanout). In a [cluster](EngineBuilder::cluster) the
    /// message goes to the broker, which numbers it for every node, and `seq` is 0 (see
    /// [`Fanout::publish`]). A topic name over
    /// [`MAX_TOPIC_LEN`](crate::fanout::MAX_TOPIC_LEN) bytes is refused
    /// ([`Published::refused`]).
    ///
    /// ```
    /// let handle = ringcast::Engine::builder()
    ///     .listen("127.0.0.1:0".parse().unwrap())
    ///     .threads(1)
    ///     .handler(ringcast::server::Broadcast::default())
    ///     .start()?;
    /// let r = handle.publish("BTC-USD", r#"{"bid":1}"#);
    /// assert!(r.is_complete());
    /// assert_eq!(r.seq, 1);
    /// assert_eq!(handle.publish("BTC-USD", r#"{"bid":2}"#).seq, 2);
    /// handle.shutdown();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn publish(&self, topic: &str, text: &str) -> Published {
        self.fanout()
            .publish(&TopicName::new(topic), OpCode::Text, text.as_bytes())
    }

    /// Publishes a binary message to every subscriber of `topic`.
    pub fn publish_binary(&self, topic: &str, data: &[u8]) -> Published {
        self.fanout()
            .publish(&TopicName::new(topic), OpCode::Binary, data)
    }

    /// The publisher, to clone into other threads.
    pub fn fanout(&self) -> Fanout {
        self.running().fanout.clone()
    }

    /// A snapshot of every reactor's counters, and in a [cluster](EngineBuilder::cluster)
    /// of the bridge's ([`Stats::cluster`]).
    pub fn stats(&self) -> Stats {
        Stats {
            reactors: self.running().stats.iter().map(|c| c.snapshot()).collect(),
            cluster: self.cluster_stats(),
        }
    }

    /// The cluster bridge's counters (`None`: not in a cluster); also
    /// [`Stats::cluster`] of [`stats`](Self::stats).
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.cluster.as_ref().map(Cluster::stats)
    }

    fn running(&self) -> &Reactors {
        self.reactors
            .as_ref()
            .expect("engine is running until the handle is consumed")
    }

    /// Stops accepting, sends close 1001 to every client, waits (up to the close
    /// timeout) for them to go, and joins the reactor threads.
    ///
    /// Every reactor first stops taking client messages (what clients send from then on
    /// is discarded); once all have, each delivers what its inbox holds, then sends the
    /// 1001s after what each connection has pending. So every subscriber ends at the same
    /// message. Publications made through [`publish`](Self::publish) from other threads
    /// after that point are not delivered.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Whether `/readyz` answers 200: running and not draining.
    pub fn is_ready(&self) -> bool {
        self.state.is_ready()
    }

    /// Turns readiness off (`/readyz` answers 503; everything else is served as before) or
    /// back on. See [`drain`](Self::drain).
    pub fn set_ready(&self, ready: bool) {
        self.state.set_ready(ready);
    }

    /// Shuts down gracefully behind a load balancer: turns not-ready at once, serves
    /// every connection as before for `delay` (long enough for the balancer's health
    /// check to notice and stop sending new clients), then shuts down as
    /// [`shutdown`](Self::shutdown) does. Blocks for `delay` and the shutdown.
    ///
    /// ```
    /// let handle = ringcast::Engine::builder()
    ///     .listen("127.0.0.1:0".parse().unwrap())
    ///     .threads(1)
    ///     .start()?;
    /// assert!(handle.is_ready());
    /// handle.drain(std::time::Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn drain(self, delay: Duration) {
        self.set_ready(false);
        std::thread::sleep(delay);
        self.shutdown();
    }

    /// Blocks until the reactors exit (after [`shutdown`](Self::shutdown) from another
    /// handle clone or a fatal error); returns the first reactor error.
    ///
    /// # Errors
    /// The I/O error that ended a reactor, a reactor's panic with its message, or the
    /// panic of the cluster bridge (which stops the engine too).
    pub fn wait(mut self) -> io::Result<()> {
        let Some(r) = self.reactors.take() else {
            return Ok(());
        };
        let joined = join(r);
        match self.cluster.as_ref().and_then(Cluster::failure) {
            Some(why) => joined.and(Err(io::Error::other(why))),
            None => joined,
        }
    }

    /// A cloneable trigger that shuts this engine down from another thread (e.g. a
    /// signal handler thread).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        let r = self.running();
        ShutdownTrigger {
            stop: Arc::clone(&r.stop),
            wakers: r.wakers.clone(),
            state: Arc::clone(&self.state),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.cluster.take() {
            c.stop();
        }
        if let Some(r) = self.reactors.take() {
            self.state.set_ready(false);
            signal_stop(&r.stop, &r.wakers);
            if let Err(e) = join(r) {
                tracing::error!("reactor failed: {e}");
            }
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Drains and shuts an engine down from any thread; obtained from
/// [`EngineHandle::shutdown_trigger`].
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    state: Arc<State>,
}

impl ShutdownTrigger {
    /// Asks every reactor to close its connections (1001) and exit; the engine is not
    /// ready from then on.
    pub fn trigger(&self) {
        self.state.set_ready(false);
        signal_stop(&self.stop, &self.wakers);
    }

    /// Turns readiness off (`/readyz` answers 503 while every connection is served as
    /// before) or back on: the first step of a drain ([`EngineHandle::drain`]).
    pub fn set_ready(&self, ready: bool) {
        self.state.set_ready(ready);
    }
}

fn signal_stop(stop: &AtomicBool, wakers: &[Arc<Waker>]) {
    stop.store(true, Ordering::Release);
    for w in wakers {
        let _ = w.wake();
    }
}

/// The message a panic was raised with.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Joins every reactor thread; returns the first error (a panic with its message).
fn join(r: Reactors) -> io::Result<()> {
    let mut result = Ok(());
    for (i, t) in r.threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = result.and(Err(e)),
            Err(payload) => {
                let why = panic_message(payload.as_ref());
                let e = io::Error::other(format!("reactor {i} panicked: {why}"));
                result = result.and(Err(e));
            }
        }
    }
    result
}
