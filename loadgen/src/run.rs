//! One process's share of a run: its reactor threads and the state they share with the
//! controlling thread.
//!
//! ```text
//!  controller (main thread, or a worker's stdin loop)
//!     │  Run::start ──► threads connect their planned connections   phase CONNECT
//!     │  Run::wait_connected ◄── every thread has an outcome         phase READY
//!     │  Run::go(t0, t1, t2) ──► publishers send from t0 to t2        phase RUN
//!     │  Run::wait_stopped ◄── final count of each local publisher
//!     │  Run::drain(finals) ──► subscribers wait for the tail         phase DRAIN
//!     │  Run::finish ──► close, join, merge thread tallies            phase CLOSE
//! ```
//! The controller never touches a socket; threads only read the shared state at the top
//! of each loop turn, and write counters there once per turn (no per-message atomics
//! except a publisher's own count).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cli::Protocol;
use crate::clock;
use crate::reactor;
use crate::report::{ConnectSummary, Latency, Tally};
use crate::resume;
use crate::sample::Sampler;
use crate::target::Target;

/// The longest drain, in multiples of its idle limit.
pub(crate) const DRAIN_CAP: u32 = 30;

/// Phases of a run, in order.
pub(crate) mod phase {
    /// Opening connections.
    pub(crate) const CONNECT: u8 = 0;
    /// All connections have an outcome; waiting for `go`.
    pub(crate) const READY: u8 = 1;
    /// Publishing (between t0 and t2) or echoing.
    pub(crate) const RUN: u8 = 2;
    /// Publishers stopped; subscribers wait for the tail.
    pub(crate) const DRAIN: u8 = 3;
    /// Close connections and end the threads.
    pub(crate) const CLOSE: u8 = 4;
}

/// What one connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Receives a topic's messages.
    Subscriber {
        /// Topic index.
        topic: u32,
    },
    /// Sends a stream of stamped messages to a topic.
    Publisher {
        /// Global publisher id (stamped into every message).
        id: u32,
        /// Topic index.
        topic: u32,
    },
    /// Sends messages and times their echoes.
    Echo {
        /// Connection id, stamped as the publisher.
        id: u32,
    },
    /// Just holds the connection open.
    Idle,
}

/// A connection to open.
#[derive(Debug, Clone)]
pub(crate) struct ConnPlan {
    /// Request path.
    pub(crate) path: Arc<str>,
    /// Its job.
    pub(crate) role: Role,
    /// Which server: 0 the first (`--url`, or `--pub-url`), `k` the `k`-th `--url` of
    /// [`Settings::sub_targets`].
    pub(crate) node: usize,
}

/// Parameters the threads read but never change.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Server (publishers' with several).
    pub(crate) target: Target,
    /// With several servers (`--url` more than once, or `--pub-url`): every `--url`, which
    /// subscribers take in turn.
    pub(crate) sub_targets: Vec<Target>,
    /// Source address to bind before connecting (workers use 127.0.0.2 and up).
    pub(crate) source_ip: Option<Ipv4Addr>,
    /// Payload size in bytes (at least the stamp).
    pub(crate) size: usize,
    /// Send text messages (else binary).
    pub(crate) text: bool,
    /// Interval between a publisher's messages, ns; `None`: as fast as the window allows.
    pub(crate) publish_interval_ns: Option<u64>,
    /// Interval between an echo connection's messages, ns; `None`: one in flight.
    pub(crate) echo_interval_ns: Option<u64>,
    /// Messages a publisher may be ahead of its local subscribers' average.
    pub(crate) window: u64,
    /// Interval between connection attempts of one thread, ns; `None`: no pacing.
    pub(crate) connect_interval_ns: Option<u64>,
    /// Handshakes one thread keeps in flight.
    pub(crate) max_pending: usize,
    /// Time a connection has to complete its handshake.
    pub(crate) handshake_timeout: Duration,
    /// Topic of every publisher of the run (global id → topic), across processes.
    pub(crate) publisher_topics: Vec<u32>,
    /// Topics in the run.
    pub(crate) topics: usize,
    /// Topic names by index (empty where topics have no names: plain `/sub`).
    pub(crate) topic_names: Vec<Arc<str>>,
    /// What subscribers speak.
    pub(crate) protocol: Protocol,
    /// Binary envelopes are stripped, not checked (`--trust-envelopes`).
    pub(crate) trust_envelopes: bool,
    /// When subscribers drop and resume (`resume` scenario).
    pub(crate) rejoin: Option<resume::Plan>,
    /// Connections in the whole run (all processes), for staggering paced senders.
    pub(crate) total_connections: u64,
    /// Subscribers also add each delivery's latency to [`Shared::lag_window`], which the
    /// controller takes every second (`fanout --lag-log`).
    pub(crate) live_latency: bool,
    /// Subscribers record the latency of the messages whose sequence number is a multiple
    /// of this (`fanout --latency-every`; 1: all).
    pub(crate) latency_every: Sampler,
}

impl Settings {
    /// The server of a connection planned for `node` (see [`ConnPlan::node`]).
    pub(crate) fn target_of(&self, node: usize) -> &Target {
        node.checked_sub(1)
            .and_then(|k| self.sub_targets.get(k))
            .unwrap_or(&self.target)
    }
}

/// State shared by the controller and the reactor threads of one process.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Parameters.
    pub(crate) settings: Settings,
    /// Current [`phase`].
    pub(crate) phase: AtomicU8,
    /// Publishing starts (ns on the run clock).
    pub(crate) t0: AtomicU64,
    /// Measurement starts (end of warm-up).
    pub(crate) t1: AtomicU64,
    /// Publishing and measurement stop.
    pub(crate) t2: AtomicU64,
    /// Handshakes completed.
    pub(crate) connected: AtomicU64,
    /// Subscribers among them.
    pub(crate) subscribers: AtomicU64,
    /// Publishers among them.
    pub(crate) publishers: AtomicU64,
    /// Attempts failed.
    pub(crate) failed: AtomicU64,
    /// Connections open now (handshake done, not closed).
    pub(crate) open_now: AtomicU64,
    /// Most open at once.
    pub(crate) peak_open: AtomicU64,
    /// Sockets held now (any state), for the fd-limit message.
    pub(crate) sockets: AtomicU64,
    /// Threads whose every planned connection has an outcome.
    pub(crate) setup_done: AtomicUsize,
    /// When the last thread got there (run clock).
    pub(crate) setup_end_ns: AtomicU64,
    /// When connecting began (run clock).
    pub(crate) setup_start_ns: AtomicU64,
    /// A failure that stops all further attempts.
    pub(crate) fatal: AtomicBool,
    /// The first failure, worded for the user.
    pub(crate) first_error: Mutex<Option<String>>,
    /// Open subscribers per topic (the publisher window's denominator).
    pub(crate) topic_open: Vec<AtomicU64>,
    /// Per topic: the lowest `ringcast.v1` sequence number a subscriber here started at
    /// (`u64::MAX`: none yet), where a subscriber that saw nothing yet resumes.
    pub(crate) topic_first_seq: Vec<AtomicU64>,
    /// Per global publisher: deliveries of its messages to local subscribers.
    pub(crate) pub_delivered: Vec<AtomicU64>,
    /// Per global publisher hosted here: its final count once stopped, else 0.
    pub(crate) pub_final: Vec<AtomicU64>,
    /// Per global publisher: the final count the drain waits for (set by the controller).
    pub(crate) drain_target: Vec<AtomicU64>,
    /// Local publishers that have stopped.
    pub(crate) pubs_stopped: AtomicUsize,
    /// Threads with nothing left to receive.
    pub(crate) drained: AtomicUsize,
    /// Live counters for the progress bar.
    pub(crate) live_delivered: AtomicU64,
    /// Live counters for the progress bar.
    pub(crate) live_published: AtomicU64,
    /// Latency of the deliveries since the controller last took it (with
    /// [`Settings::live_latency`]); threads add theirs every [`LAG_FLUSH_NS`].
    pub(crate) lag_window: Mutex<Latency>,
}

/// How often a thread adds its deliveries' latency to [`Shared::lag_window`], ns.
pub(crate) const LAG_FLUSH_NS: u64 = 100_000_000;

impl Shared {
    fn new(settings: Settings) -> Self {
        let pubs = settings.publisher_topics.len();
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Self {
            topic_open: atomics(settings.topics),
            topic_first_seq: (0..settings.topics)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
            pub_delivered: atomics(pubs),
            pub_final: atomics(pubs),
            drain_target: atomics(pubs),
            settings,
            phase: AtomicU8::new(phase::CONNECT),
            t0: AtomicU64::new(u64::MAX),
            t1: AtomicU64::new(u64::MAX),
            t2: AtomicU64::new(u64::MAX),
            connected: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            publishers: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            open_now: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            sockets: AtomicU64::new(0),
            setup_done: AtomicUsize::new(0),
            setup_end_ns: AtomicU64::new(0),
            setup_start_ns: AtomicU64::new(0),
            fatal: AtomicBool::new(false),
            first_error: Mutex::new(None),
            pubs_stopped: AtomicUsize::new(0),
            drained: AtomicUsize::new(0),
            live_delivered: AtomicU64::new(0),
            live_published: AtomicU64::new(0),
            lag_window: Mutex::new(Latency::new()),
        }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Keeps `msg` if it is the first failure; `fatal` stops further attempts.
    pub(crate) fn record_error(&self, msg: String, fatal: bool) {
        if let Ok(mut slot) = self.first_error.lock()
            && slot.is_none()
        {
            *slot = Some(msg);
        }
        if fatal {
            self.fatal.store(true, Ordering::Release);
        }
    }
}

/// The threads of one process and their shared state.
#[derive(Debug)]
pub(crate) struct Run {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<Tally>>,
    local_publishers: usize,
    planned: u64,
}

impl Run {
    /// Spawns `threads` reactor threads (pinned to `pin_cpus[i % len]` if given) and
    /// spreads `plans` over them round-robin; they start connecting at once.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub(crate) fn start(
        settings: Settings,
        plans: Vec<ConnPlan>,
        threads: usize,
        pin_cpus: &[usize],
    ) -> std::io::Result<Self> {
        let threads = threads.clamp(1, plans.len().max(1));
        let local_publishers = plans
            .iter()
            .filter(|p| matches!(p.role, Role::Publisher { .. }))
            .count();
        let planned = plans.len() as u64;
        let mut shares: Vec<Vec<ConnPlan>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, plan) in plans.into_iter().enumerate() {
            shares[i % threads].push(plan);
        }
        let shared = Arc::new(Shared::new(settings));
        shared
            .setup_start_ns
            .store(clock::now_ns(), Ordering::Relaxed);
        let mut handles = Vec::with_capacity(threads);
        for (index, share) in shares.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let cpu = (!pin_cpus.is_empty()).then(|| pin_cpus[index % pin_cpus.len()]);
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-{index}"))
                .spawn(move || {
                    if let Some(id) = cpu {
                        core_affinity::set_for_current(core_affinity::CoreId { id });
                    }
                    reactor::run_thread(index, share, &shared)
                })?;
            handles.push(handle);
        }
        Ok(Self {
            shared,
            handles,
            local_publishers,
            planned,
        })
    }

    /// Waits until every planned connection has succeeded or failed; `tick` is called
    /// about every 100 ms with (connected, failed) so far.
    pub(crate) fn wait_connected(&self, mut tick: impl FnMut(u64, u64)) -> ConnectSummary {
        let s = &self.shared;
        while s.setup_done.load(Ordering::Acquire) < self.handles.len() {
            if self.handles.iter().any(JoinHandle::is_finished) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            tick(
                s.connected.load(Ordering::Relaxed),
                s.failed.load(Ordering::Relaxed),
            );
        }
        s.phase.store(phase::READY, Ordering::Release);
        let start = s.setup_start_ns.load(Ordering::Relaxed);
        let end = s.setup_end_ns.load(Ordering::Relaxed).max(start);
        ConnectSummary {
            planned: self.planned,
            connected: s.connected.load(Ordering::Relaxed),
            subscribers: s.subscribers.load(Ordering::Relaxed),
            publishers: s.publishers.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            peak_open: s.peak_open.load(Ordering::Relaxed),
            elapsed_ns: end - start,
            first_error: s.first_error.lock().ok().and_then(|g| g.clone()),
            fatal: s.fatal.load(Ordering::Relaxed),
        }
    }

    /// Stops opening connections (those not attempted yet fail with `why`).
    pub(crate) fn abort(&self, why: &str) {
        self.shared.record_error(why.to_owned(), true);
    }

    /// Starts publishing at `t0`, measuring from `t1`, stopping at `t2` (run clock, ns).
    pub(crate) fn go(&self, t0: u64, t1: u64, t2: u64) {
        let s = &self.shared;
        s.t0.store(t0, Ordering::Relaxed);
        s.t1.store(t1, Ordering::Relaxed);
        s.t2.store(t2, Ordering::Relaxed);
        s.phase.store(phase::RUN, Ordering::Release);
    }

    /// Live totals: (delivered, published).
    pub(crate) fn live(&self) -> (u64, u64) {
        (
            self.shared.live_delivered.load(Ordering::Relaxed),
            self.shared.live_published.load(Ordering::Relaxed),
        )
    }

    /// The latency of the deliveries since the last call (empty without
    /// [`Settings::live_latency`]).
    pub(crate) fn take_lag_window(&self) -> Latency {
        match self.shared.lag_window.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => Latency::new(),
        }
    }

    /// Connections open now.
    pub(crate) fn open_now(&self) -> u64 {
        self.shared.open_now.load(Ordering::Relaxed)
    }

    /// Waits (at most `limit`) until every local publisher has stopped; returns each
    /// global publisher's final count, 0 for those hosted elsewhere.
    pub(crate) fn wait_stopped(&self, limit: Duration) -> Vec<u64> {
        let deadline = Instant::now() + limit;
        let s = &self.shared;
        while s.pubs_stopped.load(Ordering::Acquire) < self.local_publishers
            && Instant::now() < deadline
            && !self.handles.iter().any(JoinHandle::is_finished)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        s.pub_final
            .iter()
            .map(|f| f.load(Ordering::Acquire))
            .collect()
    }

    /// Tells subscribers the final count of every publisher and waits until they have
    /// all of it, or `idle` passes with nothing arriving (at most [`DRAIN_CAP`] × `idle`
    /// in all). Returns whether everything arrived.
    pub(crate) fn drain(&self, finals: &[u64], idle: Duration) -> bool {
        let s = &self.shared;
        for (slot, &f) in s.drain_target.iter().zip(finals) {
            slot.store(f, Ordering::Relaxed);
        }
        s.phase.store(phase::DRAIN, Ordering::Release);
        let start = Instant::now();
        let mut last = (start, s.live_delivered.load(Ordering::Relaxed));
        loop {
            if s.drained.load(Ordering::Acquire) >= self.handles.len() {
                return true;
            }
            let now = Instant::now();
            let seen = s.live_delivered.load(Ordering::Relaxed);
            if seen != last.1 {
                last = (now, seen);
            }
            if now - last.0 >= idle
                || now - start >= idle * DRAIN_CAP
                || self.handles.iter().any(JoinHandle::is_finished)
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes every connection, ends the threads and merges their tallies.
    pub(crate) fn finish(self) -> Tally {
        self.shared.phase.store(phase::CLOSE, Ordering::Release);
        let mut total = Tally::default();
        for h in self.handles {
            match h.join() {
                Ok(t) => total.merge(&t),
                Err(_) => {
                    if total.first_problem.is_none() {
                        total.first_problem = Some("a reactor thread panicked".to_owned());
                    }
                }
            }
        }
        total
    }
}
