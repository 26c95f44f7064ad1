//! Engine configuration, shared read-only by all reactors.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::handler::{Echo, Handler};
use crate::fanout::policy::SlowConsumer;
use crate::fanout::ring::{DEFAULT_INBOX_CAPACITY, MAX_INBOX_CAPACITY};
use crate::fanout::topic::{History, MAX_TOPIC_LEN, TopicRules};
use crate::protocol::conn::Limits;
use crate::protocol::envelope;
use crate::protocol::handshake::HandshakeConfig;

/// Default of [`Config::uring_rings`]: 64 rings of 20 000 descriptors hold 1.28 million
/// connections per reactor.
pub const DEFAULT_URING_RINGS: usize = 64;

/// The I/O backend of the reactors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring when the kernel allows it (probed at start: `io_uring_setup` and every
    /// operation the driver uses), epoll otherwise; the log says which and why.
    #[default]
    Auto,
    /// Readiness-based, through `mio` (epoll on Linux).
    Epoll,
    /// Completion-based io_uring: multishot accept into direct descriptors, multishot
    /// receive into a provided buffer ring, `sendmsg` straight from the topic logs.
    /// Starting fails when the kernel refuses it.
    Uring,
}

impl Backend {
    /// The name used on the command line: `auto`, `epoll` or `uring`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Epoll => "epoll",
            Self::Uring => "uring",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "epoll" => Ok(Self::Epoll),
            "uring" | "io_uring" | "io-uring" => Ok(Self::Uring),
            _ => Err(format!("unknown backend '{s}' (use uring, epoll or auto)")),
        }
    }
}

/// The application handler, shared by all reactors.
#[derive(Clone)]
pub struct SharedHandler(pub Arc<dyn Handler>);

impl fmt::Debug for SharedHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}

/// Everything a reactor needs to know; built by [`EngineBuilder`](crate::EngineBuilder).
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
    /// The application.
    pub handler: SharedHandler,
    /// Opening handshake rules; the default speaks the `ringcast.v1` subprotocol (a
    /// client that offers it gets envelopes, history and resume).
    pub handshake: HandshakeConfig,
    /// A connection that has not completed its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Protocol limits and timers of open connections.
    pub limits: Limits,
    /// Topic name and per-connection topic limits.
    pub topics: TopicRules,
    /// How far, in bytes, a subscriber may fall behind its topics' heads, all of them
    /// together, before the slow-consumer policy acts; also the limit of a connection's
    /// own queued frames (replies such as echoes), past which its input is not read until
    /// they drain.
    pub max_lag_bytes: usize,
    /// What to do with a subscriber whose lag passes `max_lag_bytes`.
    pub slow_consumer: SlowConsumer,
    /// What each reactor keeps of every topic's `ringcast.v1` log for snapshots and
    /// resumes.
    pub history: History,
    /// How often `ringcast.v1` connections get `{"op":"heartbeat",…}` with the latest
    /// sequence number of each topic they subscribe to; `None`: never.
    pub heartbeat: Option<Duration>,
    /// `SO_SNDBUF` of accepted sockets (the kernel doubles it), so that stalled
    /// subscribers cannot pin autotuned megabytes of kernel memory each; 0 leaves the
    /// kernel's autotuning.
    pub sndbuf: usize,
    /// Publications each reactor's inbox holds before publishes to it are dropped
    /// (and counted).
    pub inbox_capacity: usize,
    /// Listen backlog of each reactor's listener.
    pub backlog: u32,
    /// io_uring only: receive buffers (16 KiB each) in the provided-buffer ring of each
    /// reactor's first io_uring ring, rounded up to a power of two; the rings a reactor
    /// opens later have a quarter as many (at least 16) of 2 KiB. Receives that find the ring
    /// empty end (`ENOBUFS`) and are re-armed as buffers come back, a ring's worth per
    /// loop turn, so fewer buffers cost throughput, not data.
    pub uring_recv_buffers: u16,
    /// io_uring only: most rings each reactor opens. A ring's table of direct descriptors
    /// holds at most `RLIMIT_NOFILE` connections (the kernel's cap), so a reactor holds up
    /// to `uring_rings × RLIMIT_NOFILE`; rings beyond the first open only as the others
    /// fill (each costs one process descriptor and about 200 KiB), and never more than
    /// [`max_conns`](Self::max_conns) needs.
    pub uring_rings: usize,
    /// Connections the whole server holds open at once (all reactors, handshakes
    /// included); one more is answered `503` with `Retry-After: 1` and closed. `None`: no
    /// limit.
    pub max_conns: Option<usize>,
    /// Connections open at once from one IP address (whole server); one more is answered
    /// `503`. On io_uring this makes accepts one-shot (a multishot accept carries no peer
    /// address). `None`: no limit.
    pub max_conns_per_ip: Option<usize>,
    /// Connections each reactor holds in their opening handshake at once, so that slow
    /// request heads cannot fill the table; one more is answered `503`. `None`: no limit.
    pub max_pending_handshakes: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            threads: 0,
            pin: true,
            backend: Backend::Auto,
            handler: SharedHandler(Arc::new(Echo)),
            handshake: HandshakeConfig {
                protocols: vec![envelope::PROTOCOL.to_owned()],
                ..HandshakeConfig::default()
            },
            handshake_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            topics: TopicRules::default(),
            max_lag_bytes: 4 << 20,
            slow_consumer: SlowConsumer::Close,
            history: History::default(),
            heartbeat: Some(Duration::from_secs(5)),
            sndbuf: 128 << 10,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            backlog: 4096,
            uring_recv_buffers: 256,
            uring_rings: DEFAULT_URING_RINGS,
            max_conns: None,
            max_conns_per_ip: None,
            max_pending_handshakes: None,
        }
    }
}

/// `max` if it is a topic name limit an envelope can carry; else why not, after the value.
pub(crate) fn check_topic_len(max: usize) -> Result<(), String> {
    if (1..=MAX_TOPIC_LEN).contains(&max) {
        return Ok(());
    }
    Err(format!(
        "{max} is not a length from 1 to {MAX_TOPIC_LEN} bytes (a ringcast.v1 binary envelope \
         holds the topic's length in one byte)"
    ))
}

/// `inbox` if it is an inbox capacity the engine takes; else why not, after the value.
pub(crate) fn check_inbox(inbox: usize) -> Result<(), String> {
    if (1..=MAX_INBOX_CAPACITY).contains(&inbox) {
        return Ok(());
    }
    Err(format!(
        "{inbox} is not a number of publications from 1 to {MAX_INBOX_CAPACITY}"
    ))
}

/// Longest timeout or interval the engine takes: deadlines are instants this far ahead,
/// and a value past any real need is a mistake to report, not a clock to overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Config {
    /// Checks what the types let through but the engine cannot run with: a topic name
    /// limit outside 1..=[`MAX_TOPIC_LEN`], an inbox outside 1..=[`MAX_INBOX_CAPACITY`],
    /// and a timeout or interval over [`MAX_DURATION`].
    ///
    /// # Errors
    /// The first field that does not fit, and why.
    pub fn check(&self) -> Result<(), String> {
        check_topic_len(self.topics.max_name_len)
            .map_err(|e| format!("topic rules: max_name_len {e}"))?;
        check_inbox(self.inbox_capacity).map_err(|e| format!("inbox_capacity {e}"))?;
        let durations = [
            ("handshake_timeout", Some(self.handshake_timeout)),
            ("limits.close_timeout", Some(self.limits.close_timeout)),
            ("limits.idle_timeout", self.limits.idle_timeout),
            ("heartbeat", self.heartbeat),
            ("history.idle_ttl", Some(self.history.idle_ttl)),
        ];
        for (field, d) in durations {
            if let Some(d) = d.filter(|&d| d > MAX_DURATION) {
                return Err(format!(
                    "{field} {d:?} is over {} days",
                    MAX_DURATION.as_secs() / 86_400
                ));
            }
        }
        Ok(())
    }

    /// The reactor count after resolving 0 to the number of cores.
    pub fn reactor_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}
