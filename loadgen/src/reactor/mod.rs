//! A reactor thread: its connections, one `mio::Poll` (epoll, edge-triggered), and one
//! read buffer shared by all its connections.
//!
//! Per loop turn: open more connections (while connecting), poll, handle readiness,
//! let publishers and echo clients send, then publish counters to [`Shared`] once.
//!
//! Reads go into the thread's buffer, after whatever partial frame the connection had
//! left over (kept in its `pending`, whose capacity is reused). Frames are parsed in
//! place and only the stamp is looked at: nothing is allocated per message. Writes go
//! through the connection's `out` buffer; a publisher adds messages only while that buffer
//! is flushed (so the kernel buffers are not simply filled) and while it is at most
//! `window` messages ahead of the average of its local subscribers.
//!
//! Under `ringcast.v1` a subscriber's frames go through its [`Checker`] first and the
//! stamp is read from inside the envelope. In the `resume` scenario subscribers reset
//! their connections on a schedule and reconnect with `?since=` (`rejoin.rs`).

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use smallvec::SmallVec;
use socket2::{Domain, Protocol, Socket, Type};

use crate::clock;
use crate::envelope::{self, Checker, Frame, Op, Verdict};
use crate::frame::{self, Event, FrameState, opcode};
use crate::handshake::{self, Accept};
use crate::payload::{self, Stamp};
use crate::report::{Latency, Tally};
use crate::resume::{Rejoin, Schedule};
use crate::rng::Rng;
use crate::run::{ConnPlan, LAG_FLUSH_NS, Role, Settings, Shared, phase};
use crate::sequence::{Arrival, Counts, Tracker};

mod rejoin;

/// Initial (and usual) size of a thread's read buffer.
const READ_BUF: usize = 64 << 10;
/// Most messages a publisher encodes per loop turn.
const MAX_BATCH: u64 = 64;
/// Out-buffer size past which a publisher stops adding messages in a turn.
const MAX_OUT: usize = 64 << 10;
/// Most readiness events taken per poll. Small, so a loop turn stays short (~64 reads)
/// and a publisher on this thread sends in small steady steps against fresh delivery
/// counts. With 4096, a turn behind a 10 000-subscriber fan-out lasted ~15 ms and runs
/// against the same server settled at anywhere from 12 to 20 M deliveries/s (fewer
/// messages per read); with 64 they land within a few per cent of each other.
const EVENTS: usize = 64;
/// Longest poll sleep, so phase changes are seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// How long the closing handshake may take at the end.
const CLOSE_GRACE: Duration = Duration::from_millis(1000);

/// Where a connection is in its life.
#[derive(Debug)]
enum State {
    /// TCP connect in flight.
    Connecting { deadline: u64 },
    /// Upgrade request sent; waiting for the 101.
    Handshaking { accept: Accept, deadline: u64 },
    /// Exchanging frames.
    Open,
    /// Close frame sent (or received and answered); waiting for the TCP close.
    Closing,
    /// Reset by the `resume` scenario; queued to reconnect.
    Rejoin,
    /// Socket dropped; counters kept for the report.
    Closed,
}

/// What a connection does once open, with its counters.
#[derive(Debug)]
enum Job {
    Subscriber {
        topic: u32,
        /// Per publisher of the topic, inline for one: a delivery is checked without a
        /// pointer chase out of the connection (a cache miss per read at 10 000
        /// subscribers).
        streams: SmallVec<[(u32, Tracker); 1]>,
        /// Envelope checks, under `ringcast.v1` (inline for the same reason).
        v1: Option<Checker>,
        /// Reconnection state, in the `resume` scenario.
        rejoin: Option<Box<Rejoin>>,
    },
    Publisher {
        id: u32,
        topic: u32,
        seq: u64,
        next_due: u64,
        stopped: bool,
    },
    Echo {
        id: u32,
        seq: u64,
        inflight: u32,
        next_due: u64,
    },
    Idle,
}

#[derive(Debug)]
struct Conn {
    sock: Option<TcpStream>,
    state: State,
    path: Arc<str>,
    /// Which server ([`Settings::target_of`]).
    node: usize,
    job: Job,
    out: Vec<u8>,
    out_pos: usize,
    pending: Vec<u8>,
    frames: FrameState,
    /// Set once the handshake completed (the connection counts as a subscriber etc.).
    was_open: bool,
}

/// Everything a handler needs besides the connection and the read buffer.
struct Ctx<'s> {
    shared: &'s Shared,
    poll: Poll,
    rng: Rng,
    tally: Tally,
    counts: Counts,
    template: Vec<u8>,
    /// Per global publisher: deliveries not yet added to `shared.pub_delivered`.
    delivered_by_pub: Vec<u64>,
    live_delivered: u64,
    live_published: u64,
    /// Latency of deliveries not yet added to `shared.lag_window`, and when this thread
    /// last added it (run clock).
    window: Latency,
    window_flushed: u64,
    pending: usize,
    /// Connections in their handshake, with its deadline, in the order they started
    /// (the order of their deadlines): timeouts are found without scanning every
    /// connection.
    handshakes: VecDeque<(u64, usize)>,
    t1: u64,
    t2: u64,
    /// Echo connections ready to send their next message (closed loop).
    echo_ready: Vec<usize>,
    /// Connections with queued output to flush after reading.
    dirty: Vec<usize>,
}

/// Runs one reactor thread over `plans` until the [`phase::CLOSE`] phase; returns its tally.
pub(crate) fn run_thread(index: usize, plans: Vec<ConnPlan>, shared: &Shared) -> Tally {
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            shared.record_error(format!("cannot create an epoll instance: {e}"), true);
            shared
                .failed
                .fetch_add(plans.len() as u64, Ordering::Relaxed);
            shared.setup_done.fetch_add(1, Ordering::AcqRel);
            shared.drained.fetch_add(1, Ordering::AcqRel);
            return Tally::default();
        }
    };
    let settings = &shared.settings;
    let mut r = Reactor {
        conns: Slab::with_capacity(plans.len()),
        rbuf: vec![0; READ_BUF],
        publishers: Vec::new(),
        echoers: Vec::new(),
        to_open: plans.into_iter(),
        next_connect: clock::now_ns(),
        setup_reported: false,
        drained_reported: false,
        last_scan: 0,
        last_drain_check: 0,
        schedule: None,
        rejoin_queue: VecDeque::new(),
        ctx: Ctx {
            shared,
            poll,
            rng: Rng::new(index as u64 + 1),
            tally: Tally::default(),
            counts: Counts::default(),
            template: payload::template(settings.size, settings.text),
            delivered_by_pub: vec![0; settings.publisher_topics.len()],
            live_delivered: 0,
            live_published: 0,
            window: Latency::new(),
            window_flushed: 0,
            pending: 0,
            handshakes: VecDeque::new(),
            t1: u64::MAX,
            t2: u64::MAX,
            echo_ready: Vec::new(),
            dirty: Vec::new(),
        },
    };
    r.run();
    r.ctx.tally
}

struct Reactor<'s> {
    conns: Slab<Conn>,
    rbuf: Vec<u8>,
    publishers: Vec<usize>,
    echoers: Vec<usize>,
    to_open: std::vec::IntoIter<ConnPlan>,
    next_connect: u64,
    setup_reported: bool,
    drained_reported: bool,
    last_scan: u64,
    last_drain_check: u64,
    /// When this thread's subscribers drop (`resume` scenario, from the run phase on).
    schedule: Option<Schedule>,
    /// Subscribers reset and waiting for a handshake slot to reconnect.
    rejoin_queue: VecDeque<usize>,
    ctx: Ctx<'s>,
}

impl Reactor<'_> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut started_run = false;
        loop {
            let shared = self.ctx.shared;
            let ph = shared.phase();
            let now = clock::now_ns();
            // A run abandoned before `go` goes straight to CLOSE, with no start time.
            if (phase::RUN..phase::CLOSE).contains(&ph) && !started_run {
                started_run = true;
                self.ctx.t1 = shared.t1.load(Ordering::Relaxed);
                self.ctx.t2 = shared.t2.load(Ordering::Relaxed);
                self.start_senders(shared.t0.load(Ordering::Relaxed));
            }
            if ph == phase::CLOSE {
                self.finish();
                return;
            }
            self.open_more(now);
            if now.saturating_sub(self.last_scan) > 100_000_000 {
                self.last_scan = now;
                self.expire_handshakes(now);
            }
            if !self.setup_reported && self.to_open.len() == 0 && self.ctx.pending == 0 {
                self.setup_reported = true;
                shared.setup_end_ns.fetch_max(now, Ordering::Relaxed);
                shared.setup_done.fetch_add(1, Ordering::AcqRel);
            }
            // Counters first, so publishers see this thread's latest deliveries.
            self.publish_counters();
            let sleep = if started_run && ph == phase::RUN {
                self.send_due(now).min(self.rejoin_due(now))
            } else {
                MAX_SLEEP
            };
            self.reopen_more(now);
            if ph == phase::DRAIN
                && !self.drained_reported
                && now.saturating_sub(self.last_drain_check) > 2_000_000
                && {
                    self.last_drain_check = now;
                    self.is_drained()
                }
            {
                self.drained_reported = true;
                shared.drained.fetch_add(1, Ordering::AcqRel);
            }
            let sleep = if self.to_open.len() > 0
                && self.ctx.pending < shared.settings.max_pending
                && !shared.fatal.load(Ordering::Relaxed)
            {
                Duration::from_nanos(self.next_connect.saturating_sub(now)).min(sleep)
            } else {
                sleep
            };
            if let Err(e) = self.ctx.poll.poll(&mut events, Some(sleep))
                && e.kind() != io::ErrorKind::Interrupted
            {
                shared.record_error(format!("epoll_wait failed: {e}"), true);
                self.ctx.tally.first_problem = Some(format!("epoll_wait failed: {e}"));
                return;
            }
            for ev in &events {
                self.handle(
                    ev.token().0,
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                );
            }
            let dirty = std::mem::take(&mut self.ctx.dirty);
            for &key in &dirty {
                self.flush_key(key);
            }
            self.ctx.dirty = dirty;
            self.ctx.dirty.clear();
        }
    }

    /// Opens planned connections while under the pending cap and the pacing.
    fn open_more(&mut self, now: u64) {
        let shared = self.ctx.shared;
        let s = &shared.settings;
        while self.ctx.pending < s.max_pending && self.to_open.len() > 0 {
            if shared.fatal.load(Ordering::Relaxed) {
                // Everything left fails with the first error.
                let left = self.to_open.len() as u64;
                self.to_open.by_ref().for_each(drop);
                shared.failed.fetch_add(left, Ordering::Relaxed);
                return;
            }
            if s.connect_interval_ns.is_some() && now < self.next_connect {
                return;
            }
            let Some(plan) = self.to_open.next() else {
                return;
            };
            if let Some(iv) = s.connect_interval_ns {
                self.next_connect = self.next_connect.max(now.saturating_sub(iv)) + iv;
            }
            match open_socket(s.target_of(plan.node).addr, s.source_ip) {
                Ok(sock) => {
                    shared.sockets.fetch_add(1, Ordering::Relaxed);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let mut sock = sock;
                    if let Err(e) = self.ctx.poll.registry().register(
                        &mut sock,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        shared.sockets.fetch_sub(1, Ordering::Relaxed);
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        shared.record_error(
                            format!("cannot register a socket with epoll: {e}"),
                            false,
                        );
                        continue;
                    }
                    let deadline = now + s.handshake_timeout.as_nanos() as u64;
                    self.ctx.handshakes.push_back((deadline, key));
                    entry.insert(Conn {
                        sock: Some(sock),
                        state: State::Connecting { deadline },
                        job: job_for(plan.role, &plan.path, s),
                        path: plan.path,
                        node: plan.node,
                        out: Vec::new(),
                        out_pos: 0,
                        pending: Vec::new(),
                        frames: FrameState::default(),
                        was_open: false,
                    });
                    self.ctx.pending += 1;
                }
                Err(e) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    let (msg, fatal) = describe_connect_error(&e, s.target.addr, shared);
                    shared.record_error(msg, fatal);
                }
            }
        }
    }

    /// Fails connections whose handshake is overdue, and every one still in its
    /// handshake once the run has failed for good (nothing waits for their timeout).
    fn expire_handshakes(&mut self, now: u64) {
        if self.ctx.pending == 0 {
            return;
        }
        let all = self.ctx.shared.fatal.load(Ordering::Relaxed);
        let mut overdue = Vec::new();
        while let Some(&(deadline, key)) = self.ctx.handshakes.front() {
            if !all && now <= deadline {
                break;
            }
            self.ctx.handshakes.pop_front();
            // Still in the handshake this deadline was set for (not done, nor retried).
            let same = self.conns.get(key).is_some_and(|c| match c.state {
                State::Connecting { deadline: d } | State::Handshaking { deadline: d, .. } => {
                    d == deadline
                }
                _ => false,
            });
            if same {
                overdue.push(key);
            }
        }
        let limit = self.ctx.shared.settings.handshake_timeout;
        let addr = self.ctx.shared.settings.target.addr;
        for key in overdue {
            if let Some(conn) = self.conns.get_mut(key) {
                let what = if matches!(conn.state, State::Connecting { .. }) {
                    "TCP connect"
                } else {
                    "WebSocket handshake"
                };
                let msg = format!("{what} to {addr} timed out after {limit:?}");
                fail_setup(conn, &mut self.ctx, msg, false);
            }
        }
    }

    /// Readiness of connection `key`.
    fn handle(&mut self, key: usize, readable: bool) {
        let Reactor {
            conns, rbuf, ctx, ..
        } = self;
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        match conn.state {
            State::Connecting { .. } => {
                let Some(sock) = conn.sock.as_ref() else {
                    return;
                };
                match sock.take_error() {
                    Ok(Some(e)) | Err(e) => {
                        let shared = ctx.shared;
                        let (msg, fatal) =
                            describe_connect_error(&e, shared.settings.target.addr, shared);
                        fail_setup(conn, ctx, msg, fatal);
                        return;
                    }
                    Ok(None) => {}
                }
                match sock.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => {
                        let shared = ctx.shared;
                        let (msg, fatal) =
                            describe_connect_error(&e, shared.settings.target.addr, shared);
                        fail_setup(conn, ctx, msg, fatal);
                        return;
                    }
                }
                let mut nonce = [0u8; 16];
                ctx.rng.fill(&mut nonce);
                let s = &ctx.shared.settings;
                let accept = handshake::request_into(
                    &mut conn.out,
                    &s.target_of(conn.node).host,
                    &conn.path,
                    nonce,
                    offered(&conn.job, s),
                );
                let deadline = match conn.state {
                    State::Connecting { deadline } => deadline,
                    _ => 0,
                };
                conn.state = State::Handshaking { accept, deadline };
                if let Err(e) = flush(conn) {
                    let msg = format!("sending the handshake to {} failed: {e}", s.target.addr);
                    fail_setup(conn, ctx, msg, false);
                    return;
                }
                // The response may already be there.
                read_conn(key, conn, rbuf, ctx);
            }
            _ => {
                if conn.out_pos < conn.out.len() {
                    ctx.dirty.push(key);
                }
                if readable {
                    read_conn(key, conn, rbuf, ctx);
                }
            }
        }
    }

    fn flush_key(&mut self, key: usize) {
        let Reactor { conns, ctx, .. } = self;
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        if conn.sock.is_none() {
            return;
        }
        if let Err(e) = flush(conn) {
            lost_conn(conn, ctx, format!("write failed: {e}"));
        }
    }

    /// Called once when the run phase begins: schedules the senders from `t0`.
    fn start_senders(&mut self, t0: u64) {
        let s = &self.ctx.shared.settings;
        let pubs = s.publisher_topics.len().max(1) as u64;
        for (key, conn) in &mut self.conns {
            match &mut conn.job {
                Job::Publisher { id, next_due, .. } => {
                    let stagger = s
                        .publish_interval_ns
                        .map_or(0, |iv| iv * u64::from(*id) / pubs);
                    *next_due = t0.saturating_add(stagger);
                    self.publishers.push(key);
                }
                Job::Echo { id, next_due, .. } => {
                    // Spread the connections evenly over one interval.
                    let stagger = s.echo_interval_ns.map_or(0, |iv| {
                        ((u128::from(iv) * u128::from(*id))
                            / u128::from(s.total_connections.max(1))) as u64
                    });
                    *next_due = t0.saturating_add(stagger);
                    self.echoers.push(key);
                }
                _ => {}
            }
        }
        if s.echo_interval_ns.is_none() {
            self.ctx.echo_ready.extend(self.echoers.iter().copied());
        }
        self.start_schedule(t0);
    }

    /// Lets publishers and echo clients send what is due; returns how long to sleep.
    fn send_due(&mut self, now: u64) -> Duration {
        let shared = self.ctx.shared;
        let t0 = shared.t0.load(Ordering::Relaxed);
        let t2 = self.ctx.t2;
        let mut sleep = MAX_SLEEP;
        if now < t0 {
            return Duration::from_nanos(t0 - now).min(MAX_SLEEP);
        }
        for i in 0..self.publishers.len() {
            let key = self.publishers[i];
            let Reactor { conns, ctx, .. } = self;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if let Some(d) = publish(conn, ctx, now, t2) {
                sleep = sleep.min(d);
            }
            if conn.out_pos < conn.out.len() {
                ctx.dirty.push(key);
            }
        }
        if shared.settings.echo_interval_ns.is_some() {
            for i in 0..self.echoers.len() {
                let key = self.echoers[i];
                let Reactor { conns, ctx, .. } = self;
                if let Some(conn) = conns.get_mut(key)
                    && let Some(d) = echo_paced(conn, ctx, now, t2)
                {
                    sleep = sleep.min(d);
                    if conn.out_pos < conn.out.len() {
                        ctx.dirty.push(key);
                    }
                }
            }
        } else if now < t2 {
            let ready = std::mem::take(&mut self.ctx.echo_ready);
            for &key in &ready {
                let Reactor { conns, ctx, .. } = self;
                if let Some(conn) = conns.get_mut(key)
                    && matches!(conn.state, State::Open)
                {
                    echo_send(conn, ctx, now);
                    ctx.dirty.push(key);
                }
            }
            self.ctx.echo_ready = ready;
            self.ctx.echo_ready.clear();
        }
        // Flush now rather than after the next poll.
        let dirty = std::mem::take(&mut self.ctx.dirty);
        for &key in &dirty {
            self.flush_key(key);
        }
        self.ctx.dirty = dirty;
        self.ctx.dirty.clear();
        sleep
    }

    /// Whether every open subscriber has reached its publishers' final counts and every
    /// echo has returned.
    fn is_drained(&self) -> bool {
        let targets = &self.ctx.shared.drain_target;
        self.conns.iter().all(|(_, c)| {
            if rejoining(c) {
                return false;
            }
            if !matches!(c.state, State::Open) {
                return true;
            }
            match &c.job {
                Job::Subscriber { streams, .. } => streams.iter().all(|(p, t)| {
                    t.complete(
                        targets
                            .get(*p as usize)
                            .map_or(0, |a| a.load(Ordering::Relaxed)),
                    )
                }),
                Job::Echo { inflight, .. } => *inflight == 0,
                _ => true,
            }
        })
    }

    /// Adds this turn's counts to the shared counters.
    fn publish_counters(&mut self) {
        let shared = self.ctx.shared;
        for (slot, n) in shared
            .pub_delivered
            .iter()
            .zip(self.ctx.delivered_by_pub.iter_mut())
        {
            if *n > 0 {
                slot.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
        if shared.settings.live_latency && self.ctx.window.count() > 0 {
            let now = clock::now_ns();
            if now.saturating_sub(self.ctx.window_flushed) >= LAG_FLUSH_NS {
                self.ctx.window_flushed = now;
                if let Ok(mut w) = shared.lag_window.lock() {
                    w.merge(&self.ctx.window);
                }
                self.ctx.window.reset();
            }
        }
        if self.ctx.live_delivered > 0 {
            shared
                .live_delivered
                .fetch_add(self.ctx.live_delivered, Ordering::Relaxed);
            self.ctx.live_delivered = 0;
        }
        if self.ctx.live_published > 0 {
            shared
                .live_published
                .fetch_add(self.ctx.live_published, Ordering::Relaxed);
            self.ctx.live_published = 0;
        }
    }

    /// End of run: settle the accounting, then close every connection politely.
    fn finish(&mut self) {
        let shared = self.ctx.shared;
        let targets: Vec<u64> = shared
            .drain_target
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        for (_, c) in &self.conns {
            match &c.job {
                Job::Subscriber {
                    streams,
                    v1,
                    rejoin,
                    ..
                } if c.was_open => {
                    let lost_before = self.ctx.counts.lost;
                    for (p, t) in streams {
                        let fin = targets.get(*p as usize).copied().unwrap_or(0);
                        self.ctx.tally.expected += fin;
                        self.ctx.tally.first_expected += u64::from(fin > 0);
                        t.finish(fin, &mut self.ctx.counts);
                    }
                    if let Some(v1) = v1 {
                        v1.finish(self.ctx.counts.lost - lost_before, &mut self.ctx.tally.v1);
                    }
                    if let Some(r) = rejoin {
                        r.finish(&mut self.ctx.tally.resume);
                    }
                }
                Job::Echo { .. } => {}
                _ => {}
            }
        }
        let tally = &mut self.ctx.tally;
        tally.lost = self.ctx.counts.lost;
        tally.out_of_order = self.ctx.counts.out_of_order;
        tally.duplicates = self.ctx.counts.duplicates;
        if tally.expected == 0
            && self
                .conns
                .iter()
                .any(|(_, c)| matches!(c.job, Job::Echo { .. }))
        {
            tally.expected = tally.published;
            tally.lost = tally.published.saturating_sub(tally.delivered);
        }
        self.publish_counters();

        // Closing handshake: send 1000, wait for the server to close TCP.
        let mut closing = 0usize;
        for (_, c) in &mut self.conns {
            match c.state {
                State::Open => {
                    let key = self.ctx.rng.mask_key();
                    c.out.clear();
                    c.out_pos = 0;
                    frame::encode_into(&mut c.out, opcode::CLOSE, &1000u16.to_be_bytes(), key);
                    let _ = flush(c);
                    c.state = State::Closing;
                    closing += 1;
                }
                State::Closing => closing += 1,
                State::Connecting { .. } | State::Handshaking { .. } => drop_socket(c, shared),
                State::Closed | State::Rejoin => {}
            }
        }
        let deadline = clock::now_ns() + CLOSE_GRACE.as_nanos() as u64;
        let mut events = Events::with_capacity(1024);
        while closing > 0 && clock::now_ns() < deadline {
            if self.ctx.poll.poll(&mut events, Some(MAX_SLEEP)).is_err() {
                break;
            }
            for ev in &events {
                let Some(c) = self.conns.get_mut(ev.token().0) else {
                    continue;
                };
                if !matches!(c.state, State::Closing) {
                    continue;
                }
                let _ = flush(c);
                if drain_to_eof(c, &mut self.rbuf) {
                    drop_socket(c, shared);
                    closing -= 1;
                }
            }
        }
        for (_, c) in &mut self.conns {
            if let Some(sock) = &c.sock {
                // Whatever did not close in time is reset rather than left in TIME_WAIT.
                let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
            }
            drop_socket(c, shared);
        }
    }
}

fn job_for(role: Role, path: &Arc<str>, s: &Settings) -> Job {
    match role {
        Role::Subscriber { topic } => Job::Subscriber {
            topic,
            streams: SmallVec::new(),
            v1: s.protocol.offer().map(|_| {
                let name = s.topic_names.get(topic as usize);
                Checker::new(name.cloned())
            }),
            rejoin: s.rejoin.map(|_| Box::new(Rejoin::new(Arc::clone(path)))),
        },
        Role::Publisher { id, topic } => Job::Publisher {
            id,
            topic,
            seq: 0,
            next_due: u64::MAX,
            stopped: false,
        },
        Role::Echo { id } => Job::Echo {
            id,
            seq: 0,
            inflight: 0,
            next_due: u64::MAX,
        },
        Role::Idle => Job::Idle,
    }
}

/// The subprotocol a connection offers: subscribers offer the run's.
fn offered(job: &Job, s: &Settings) -> Option<&'static str> {
    match job {
        Job::Subscriber { .. } => s.protocol.offer(),
        _ => None,
    }
}

/// A subscriber between a reset and its reconnection's outcome.
fn rejoining(c: &Conn) -> bool {
    c.was_open
        && matches!(
            c.state,
            State::Rejoin | State::Connecting { .. } | State::Handshaking { .. }
        )
}

/// A non-blocking socket with a connect in flight.
fn open_socket(addr: SocketAddr, source: Option<std::net::Ipv4Addr>) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

/// Words a connection failure for the user; `true` if retrying is pointless.
fn describe_connect_error(e: &io::Error, addr: SocketAddr, shared: &Shared) -> (String, bool) {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => (
            format!("cannot connect to {addr}: connection refused — is the server running?"),
            true,
        ),
        Some(libc::EMFILE | libc::ENFILE) => (
            format!(
                "hit the open-files limit (ulimit -n = {}) at {} connections; use --workers or fewer connections",
                crate::limits::nofile_soft(),
                shared.sockets.load(Ordering::Relaxed)
            ),
            true,
        ),
        Some(libc::EADDRNOTAVAIL) => (
            format!(
                "out of local ports to {addr} at {} connections; use --workers (each binds its own 127.0.0.x source address)",
                shared.sockets.load(Ordering::Relaxed)
            ),
            true,
        ),
        _ => (format!("cannot connect to {addr}: {e}"), false),
    }
}

/// A connection that failed before its handshake completed.
fn fail_setup(conn: &mut Conn, ctx: &mut Ctx<'_>, msg: String, fatal: bool) {
    let shared = ctx.shared;
    if conn.was_open {
        // A reconnection: the run goes on; the subscriber stays down.
        ctx.tally.resume.reconnect_failed += 1;
        ctx.tally
            .first_problem
            .get_or_insert_with(|| format!("reconnecting: {msg}"));
    } else {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        shared.record_error(msg, fatal);
    }
    ctx.pending = ctx.pending.saturating_sub(1);
    drop_socket(conn, shared);
}

/// An open connection that ended before the run did.
fn lost_conn(conn: &mut Conn, ctx: &mut Ctx<'_>, why: String) {
    let shared = ctx.shared;
    if matches!(
        conn.state,
        State::Connecting { .. } | State::Handshaking { .. }
    ) {
        fail_setup(conn, ctx, why, false);
        return;
    }
    if matches!(conn.state, State::Open) && shared.phase() < phase::CLOSE {
        ctx.tally.closed_by_server += 1;
        if ctx.tally.first_problem.is_none() {
            ctx.tally.first_problem = Some(why);
        }
    }
    if matches!(conn.state, State::Open | State::Closing) {
        shared.open_now.fetch_sub(1, Ordering::Relaxed);
        if let Job::Subscriber { topic, .. } = conn.job
            && let Some(n) = shared.topic_open.get(topic as usize)
        {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
    stop_publisher(conn, shared);
    drop_socket(conn, shared);
}

fn drop_socket(conn: &mut Conn, shared: &Shared) {
    if conn.sock.take().is_some() {
        shared.sockets.fetch_sub(1, Ordering::Relaxed);
    }
    conn.state = State::Closed;
    conn.pending = Vec::new();
    conn.out = Vec::new();
    conn.out_pos = 0;
}

fn stop_publisher(conn: &mut Conn, shared: &Shared) {
    if let Job::Publisher {
        id, seq, stopped, ..
    } = &mut conn.job
        && !*stopped
        && conn.was_open
    {
        *stopped = true;
        if let Some(slot) = shared.pub_final.get(*id as usize) {
            slot.store(*seq, Ordering::Release);
        }
        shared.pubs_stopped.fetch_add(1, Ordering::AcqRel);
    }
}

/// Writes as much of `out` as the socket takes.
fn flush(conn: &mut Conn) -> io::Result<()> {
    let Some(sock) = conn.sock.as_mut() else {
        return Ok(());
    };
    while conn.out_pos < conn.out.len() {
        match sock.write(&conn.out[conn.out_pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.out.clear();
    conn.out_pos = 0;
    Ok(())
}

/// Reads everything available into the thread's buffer and processes it.
fn read_conn(key: usize, conn: &mut Conn, rbuf: &mut Vec<u8>, ctx: &mut Ctx<'_>) {
    let mut filled = conn.pending.len();
    if rbuf.len() < filled + READ_BUF {
        rbuf.resize(filled + READ_BUF, 0);
    }
    rbuf[..filled].copy_from_slice(&conn.pending);
    conn.pending.clear();
    loop {
        let Some(sock) = conn.sock.as_mut() else {
            return;
        };
        let space = rbuf.len() - filled;
        let (n, eof) = match sock.read(&mut rbuf[filled..]) {
            Ok(0) => (0, true),
            Ok(n) => (n, false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let why = format!("connection reset: {e}");
                lost_conn(conn, ctx, why);
                return;
            }
        };
        filled += n;
        let now = clock::now_ns();
        let (consumed, need) = match process(key, conn, &rbuf[..filled], eof, ctx, now) {
            Ok(p) => p,
            Err(why) => {
                lost_conn(conn, ctx, why);
                return;
            }
        };
        rbuf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if conn.sock.is_none() {
            return;
        }
        if eof {
            let why = match conn.state {
                State::Closing => {
                    // Our close was answered: a clean end.
                    drop_socket(conn, ctx.shared);
                    ctx.shared.open_now.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                _ => "server closed the connection without a close frame".to_owned(),
            };
            lost_conn(conn, ctx, why);
            return;
        }
        if need > rbuf.len() {
            rbuf.resize(need.max(rbuf.len() * 2), 0);
        } else if filled == rbuf.len() {
            rbuf.resize(rbuf.len() * 2, 0);
        }
        if n < space {
            // A short read emptied the socket; the next arrival raises a new edge.
            break;
        }
    }
    conn.pending.extend_from_slice(&rbuf[..filled]);
    if conn.out_pos < conn.out.len() {
        ctx.dirty.push(key);
    }
}

/// Processes buffered input; returns (bytes consumed, bytes the next frame needs from
/// its start).
fn process(
    key: usize,
    conn: &mut Conn,
    data: &[u8],
    eof: bool,
    ctx: &mut Ctx<'_>,
    now: u64,
) -> Result<(usize, usize), String> {
    let mut start = 0;
    if let State::Handshaking { accept, .. } = &conn.state {
        let offered = offered(&conn.job, &ctx.shared.settings);
        match handshake::check_response(data, accept, eof, offered) {
            Ok(None) => return Ok((0, 0)),
            Ok(Some(n)) => {
                start = n;
                opened(conn, ctx, now);
            }
            Err(e) => {
                let msg = format!("{} {e}", ctx.shared.settings.target.addr);
                let msg = msg.replacen(' ', ": ", 1);
                fail_setup(
                    conn,
                    ctx,
                    msg,
                    matches!(
                        e,
                        handshake::HandshakeError::Refused { .. }
                            | handshake::HandshakeError::NoSubprotocol(_)
                    ),
                );
                return Ok((data.len(), 0));
            }
        }
    }
    let closing = matches!(conn.state, State::Closing);
    let frames = &mut conn.frames;
    let job = &mut conn.job;
    let out = &mut conn.out;
    let mut close: Option<(Option<u16>, String)> = None;
    let result = frame::read_frames(&data[start..], frames, |ev| match ev {
        Event::Message {
            opcode: op,
            head,
            len,
        } => {
            on_message(key, job, ctx, op == opcode::TEXT, (head, len), now);
            true
        }
        Event::Ping(p) => {
            let key = ctx.rng.mask_key();
            frame::encode_into(out, opcode::PONG, p, key);
            true
        }
        Event::Pong => true,
        Event::Close(code, reason) => {
            close = Some((code, String::from_utf8_lossy(reason).into_owned()));
            false
        }
    });
    let progress = match result {
        Ok(p) => p,
        Err(e) => return Err(format!("protocol error from the server: {e}")),
    };
    if let Some((code, reason)) = close {
        if closing {
            // The answer to our close.
            drop_socket(conn, ctx.shared);
            ctx.shared.open_now.fetch_sub(1, Ordering::Relaxed);
            return Ok((data.len(), 0));
        }
        let mut payload = Vec::with_capacity(2);
        if let Some(c) = code {
            payload.extend_from_slice(&c.to_be_bytes());
        }
        let mask = ctx.rng.mask_key();
        frame::encode_into(&mut conn.out, opcode::CLOSE, &payload, mask);
        let _ = flush(conn);
        let why = match code {
            Some(c) if reason.is_empty() => format!("server closed the connection ({c})"),
            Some(c) => format!("server closed the connection ({c} {reason})"),
            None => "server closed the connection".to_owned(),
        };
        lost_conn(conn, ctx, why);
        return Ok((data.len(), 0));
    }
    // `need` counts from the next frame's start, which compaction moves to offset 0.
    Ok((start + progress.consumed, progress.need))
}

/// The handshake completed.
fn opened(conn: &mut Conn, ctx: &mut Ctx<'_>, now: u64) {
    let shared = ctx.shared;
    let again = conn.was_open;
    conn.state = State::Open;
    conn.was_open = true;
    ctx.pending = ctx.pending.saturating_sub(1);
    let open = shared.open_now.fetch_add(1, Ordering::Relaxed) + 1;
    shared.peak_open.fetch_max(open, Ordering::Relaxed);
    if !again {
        shared.connected.fetch_add(1, Ordering::Relaxed);
    }
    match &mut conn.job {
        Job::Subscriber {
            topic,
            streams,
            rejoin,
            ..
        } => {
            if let Some(n) = shared.topic_open.get(*topic as usize) {
                n.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(r) = rejoin {
                r.handle_open(now, &mut ctx.tally.resume);
            }
            if again {
                // A reconnection keeps its streams: the run goes on across it.
                return;
            }
            shared.subscribers.fetch_add(1, Ordering::Relaxed);
            *streams = shared
                .settings
                .publisher_topics
                .iter()
                .enumerate()
                .filter(|&(_, t)| t == topic)
                .map(|(p, _)| (p as u32, Tracker::default()))
                .collect();
        }
        Job::Publisher { .. } => {
            shared.publishers.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    // Release the request buffer (most connections never write again).
    if conn.out_pos >= conn.out.len() {
        conn.out = Vec::new();
        conn.out_pos = 0;
    }
}

/// A data message for connection `key`, whose job is `job`.
fn on_message(
    key: usize,
    job: &mut Job,
    ctx: &mut Ctx<'_>,
    text: bool,
    msg: (&[u8], u64),
    now: u64,
) {
    let (head, len) = msg;
    match job {
        Job::Subscriber {
            topic,
            streams,
            v1,
            rejoin,
        } => {
            let head = match v1 {
                None => head,
                // Trusted (`--trust-envelopes`): a binary envelope is only stripped;
                // anything else is checked in full.
                Some(v1) => match (!text && ctx.shared.settings.trust_envelopes)
                    .then(|| envelope::strip_binary(head))
                    .flatten()
                {
                    Some(data) => {
                        ctx.tally.v1.envelopes += 1;
                        data
                    }
                    None => match open_envelope(v1, rejoin, *topic, ctx, text, head, len) {
                        Some(data) => data,
                        None => return,
                    },
                },
            };
            if let Some(r) = rejoin {
                r.handle_message(now, &mut ctx.tally.resume);
            }
            let Some(stamp) = Stamp::decode(head, text) else {
                ctx.tally.malformed += 1;
                return;
            };
            let Some((_, tracker)) = streams
                .iter_mut()
                .find(|(p, _)| *p == u32::from(stamp.publisher))
            else {
                ctx.tally.malformed += 1;
                return;
            };
            let arrival = tracker.record(stamp.seq, &mut ctx.counts);
            if stamp.seq == 0 && arrival != Arrival::Duplicate {
                ctx.tally.first_delivered += 1;
                ctx.tally
                    .first_latency
                    .record(now.saturating_sub(stamp.ts_ns));
            }
            if let Some(r) = rejoin
                && arrival != Arrival::Duplicate
            {
                r.handle_fresh(stamp.ts_ns, &mut ctx.tally.resume);
            }
            ctx.tally.delivered += 1;
            ctx.live_delivered += 1;
            let timed = ctx.shared.settings.latency_every.hits(stamp.seq);
            if ctx.shared.settings.live_latency && timed {
                ctx.window.record(now.saturating_sub(stamp.ts_ns));
            }
            if let Some(n) = ctx.delivered_by_pub.get_mut(usize::from(stamp.publisher)) {
                *n += 1;
            }
            if stamp.ts_ns >= ctx.t1 && stamp.ts_ns < ctx.t2 {
                ctx.tally.measured += 1;
                if timed {
                    ctx.tally.latency.record(now.saturating_sub(stamp.ts_ns));
                }
            }
        }
        Job::Echo { inflight, .. } => {
            let Some(stamp) = Stamp::decode(head, text) else {
                ctx.tally.malformed += 1;
                return;
            };
            *inflight = inflight.saturating_sub(1);
            if ctx.shared.settings.echo_interval_ns.is_none() {
                ctx.echo_ready.push(key);
            }
            ctx.tally.delivered += 1;
            ctx.live_delivered += 1;
            if stamp.ts_ns >= ctx.t1 && stamp.ts_ns < ctx.t2 {
                ctx.tally.measured += 1;
                ctx.tally.latency.record(now.saturating_sub(stamp.ts_ns));
            }
        }
        Job::Publisher { .. } | Job::Idle => {}
    }
}

/// Checks a `ringcast.v1` frame of a subscriber of topic index `topic`; returns the
/// payload inside a data envelope of its topic, `None` for anything else (handled here).
fn open_envelope<'m>(
    v1: &mut Checker,
    rejoin: &mut Option<Box<Rejoin>>,
    topic: u32,
    ctx: &mut Ctx<'_>,
    text: bool,
    head: &'m [u8],
    len: u64,
) -> Option<&'m [u8]> {
    if !text && let Some((verdict, seq, data)) = v1.handle_binary(head, &mut ctx.tally.v1) {
        // The common case: a binary envelope of the subscriber's topic.
        if verdict == (Verdict::Subscribed { first: true }) {
            note_first_seq(ctx, topic, seq);
        }
        return Some(data);
    }
    let problem = match envelope::parse(text, head, head.len() as u64 == len) {
        Frame::Data {
            topic: name,
            seq,
            data,
        } => match v1.handle_data(name, seq, &mut ctx.tally.v1) {
            Verdict::Subscribed { first } => {
                if first {
                    note_first_seq(ctx, topic, seq);
                }
                return Some(data);
            }
            Verdict::Foreign => format!(
                "an envelope of topic {:?}, not subscribed",
                String::from_utf8_lossy(name)
            ),
        },
        Frame::Op(op) => {
            // A resuming subscriber names its numbering back when it reconnects.
            if let (Op::Epoch { epoch, .. } | Op::Reset { epoch, .. }, Some(r)) = (&op, rejoin) {
                r.set_epoch(epoch);
            }
            v1.handle_op(op, &mut ctx.tally.v1)?
        }
        Frame::Malformed(why) => {
            ctx.tally.v1.malformed += 1;
            why.to_owned()
        }
    };
    ctx.tally.first_problem.get_or_insert(problem);
    None
}

/// A subscriber's first envelope of topic index `topic` had `seq`: the topic's first
/// number in the run is the lowest any subscriber saw first.
fn note_first_seq(ctx: &Ctx<'_>, topic: u32, seq: u64) {
    if let Some(f) = ctx.shared.topic_first_seq.get(topic as usize) {
        f.fetch_min(seq, Ordering::Relaxed);
    }
}

/// Appends one stamped, masked data message to `out`.
fn encode_message(out: &mut Vec<u8>, ctx: &mut Ctx<'_>, stamp: Stamp) {
    let text = ctx.shared.settings.text;
    let op = if text { opcode::TEXT } else { opcode::BINARY };
    let key = ctx.rng.mask_key();
    let len = ctx.template.len();
    out.reserve(frame::header_len(len) + len);
    frame::header_into(out, op, len, key);
    let start = out.len();
    out.extend_from_slice(&ctx.template);
    stamp.encode_into(&mut out[start..], text);
    frame::apply_mask(&mut out[start..], key);
}

/// A publisher's turn; returns how soon it wants the next one (`None`: no opinion).
fn publish(conn: &mut Conn, ctx: &mut Ctx<'_>, now: u64, t2: u64) -> Option<Duration> {
    if !matches!(conn.state, State::Open) {
        return None;
    }
    let shared = ctx.shared;
    let settings = &shared.settings;
    if now >= t2 {
        stop_publisher(conn, shared);
        return None;
    }
    let Job::Publisher {
        id,
        topic,
        seq,
        next_due,
        ..
    } = &mut conn.job
    else {
        return None;
    };
    if conn.out_pos < conn.out.len() {
        // Socket full: wait for writability.
        return None;
    }
    let subs = shared
        .topic_open
        .get(*topic as usize)
        .map_or(0, |n| n.load(Ordering::Relaxed));
    let delivered = shared
        .pub_delivered
        .get(*id as usize)
        .map_or(0, |n| n.load(Ordering::Relaxed));
    let mut sent = 0;
    let mut wait = None;
    while sent < MAX_BATCH.min(settings.window.max(1)) && conn.out.len() < MAX_OUT {
        if let Some(iv) = settings.publish_interval_ns {
            if now < *next_due {
                wait = Some(Duration::from_nanos(*next_due - now));
                break;
            }
            *next_due += iv;
        }
        if subs > 0
            && (*seq).saturating_mul(subs).saturating_sub(delivered)
                >= settings.window.saturating_mul(subs)
        {
            // Ahead of the subscribers: let them catch up.
            wait = Some(Duration::from_micros(500));
            if let Some(iv) = settings.publish_interval_ns {
                *next_due -= iv;
            }
            break;
        }
        let ts = clock::now_ns();
        let stamp = Stamp {
            publisher: *id as u16,
            seq: *seq,
            ts_ns: ts,
        };
        encode_message(&mut conn.out, ctx, stamp);
        if ts >= ctx.t1 && ts < t2 {
            ctx.tally.published_measured += 1;
        }
        *seq += 1;
        sent += 1;
    }
    ctx.tally.published += sent;
    ctx.live_published += sent;
    if settings.publish_interval_ns.is_none() && wait.is_none() && conn.out.len() < MAX_OUT {
        wait = Some(Duration::ZERO);
    } else if settings.publish_interval_ns.is_none() && wait.is_none() {
        // Batch full: flush, and come back at once if the socket takes it.
        wait = Some(Duration::ZERO);
    }
    wait
}

/// One echo message from a closed-loop client.
fn echo_send(conn: &mut Conn, ctx: &mut Ctx<'_>, now: u64) {
    let Job::Echo {
        id, seq, inflight, ..
    } = &mut conn.job
    else {
        return;
    };
    let stamp = Stamp {
        publisher: *id as u16,
        seq: *seq,
        ts_ns: now,
    };
    *seq += 1;
    *inflight += 1;
    if now >= ctx.t1 && now < ctx.t2 {
        ctx.tally.published_measured += 1;
    }
    ctx.tally.published += 1;
    ctx.live_published += 1;
    encode_message(&mut conn.out, ctx, stamp);
}

/// A paced echo client's turn.
fn echo_paced(conn: &mut Conn, ctx: &mut Ctx<'_>, now: u64, t2: u64) -> Option<Duration> {
    if !matches!(conn.state, State::Open) || now >= t2 {
        return None;
    }
    let iv = ctx.shared.settings.echo_interval_ns?;
    let Job::Echo { next_due, .. } = &mut conn.job else {
        return None;
    };
    let mut n = 0;
    while now >= *next_due && n < MAX_BATCH {
        *next_due += iv;
        n += 1;
    }
    let wait = Duration::from_nanos(next_due.saturating_sub(now));
    for _ in 0..n {
        echo_send(conn, ctx, clock::now_ns());
    }
    Some(wait)
}

/// Reads and discards until EOF; returns whether EOF (or an error) was reached.
fn drain_to_eof(conn: &mut Conn, rbuf: &mut [u8]) -> bool {
    let Some(sock) = conn.sock.as_mut() else {
        return true;
    };
    loop {
        match sock.read(rbuf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
