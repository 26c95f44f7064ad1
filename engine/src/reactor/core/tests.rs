//! The core driven through a fake driver: sockets are byte vectors that take as many bytes
//! per write as a test allows, so fan-out, slow consumers and closing are checked
//! deterministically, without I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::deliver::FLUSH_BUDGET;
use super::*;
use crate::fanout::ring::{self, Wake};
use crate::fanout::topic::{Form, History, Start};
use crate::fanout::{SlowConsumer, TopicName};
use crate::protocol::frame::{Decoded, OpCode, decode};
use crate::reactor::config::SharedHandler;
use crate::reactor::handler::{Client, Handler, Message, Upgrade, UpgradeRequest};

#[derive(Debug)]
struct NoWake;

impl Wake for NoWake {
    fn wake(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Subscribes `/TOPIC[,TOPIC…][?since=N]`; publishes a client's binary messages to topic
/// `t`.
struct Subs;

impl Handler for Subs {
    fn on_upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let start = match req.query.and_then(|q| q.strip_prefix("since=")) {
            Some(n) => Start::Since(n.parse().unwrap()),
            None => Start::Live,
        };
        Upgrade::Accept {
            topics: req.path[1..].split(',').map(str::to_owned).collect(),
            publish_to: None,
            start,
        }
    }

    fn on_message(&self, client: &mut Client<'_>, msg: Message<'_>) {
        if let Message::Binary(data) = msg {
            let _ = client.publish(&TopicName::new("t"), OpCode::Binary, data);
        }
    }
}

/// A socket: what was written, and how many more bytes it takes.
#[derive(Debug, Default)]
struct Sock {
    out: Vec<u8>,
    /// Writes that took bytes.
    writes: usize,
    room: usize,
    blocked: bool,
    shut: bool,
}

#[derive(Default)]
struct Fake {
    released: Vec<usize>,
}

impl Driver for Fake {
    type Io = Sock;

    fn write_blocked(&self, io: &Sock) -> bool {
        io.blocked
    }
    /// As epoll's: [`Rig::drain`] is the writable edge, and writes everything.
    fn flush_after_write(&mut self, _: &Sock) {}
    fn wait(&mut self, _: &mut Core<Sock>, _: Duration) -> io::Result<()> {
        Ok(())
    }
    fn has_pending(&self) -> bool {
        false
    }
    fn has_deferred(&self) -> bool {
        false
    }
    fn resume(&mut self, _: &mut Core<Sock>, _: Instant) {}
    fn maintain(&mut self, _: &mut Core<Sock>, _: Instant) {}

    fn flush(&mut self, core: &mut Core<Sock>, key: usize, now: Instant) {
        let Core { conns, topics, .. } = &mut *core;
        let Some(c) = conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let before = c.io.out.len();
        let out = &mut c.io.out;
        c.session.outbox.gather(topics, c.io.room, |b, _| {
            out.extend_from_slice(b);
            true
        });
        let n = c.io.out.len() - before;
        c.io.room -= n;
        c.io.writes += usize::from(n > 0);
        let w = c.session.outbox.advance(topics, n);
        c.io.blocked = !c.session.outbox.is_empty(topics);
        core.note_written(w, n);
        if core.after_write(key, now) == Step::ShutdownWrite {
            core.conns[key].io.shut = true;
        }
    }

    fn release(&mut self, key: usize, _: Sock) {
        self.released.push(key);
    }
    fn stop_accepting(&mut self) {}
    fn finish(&mut self, _: &mut Core<Sock>) {}
}

struct Rig {
    core: Core<Sock>,
    fake: Fake,
    fanout: Fanout,
    now: Instant,
}

impl Rig {
    fn new(policy: SlowConsumer, max_lag: usize) -> Self {
        Self::with(policy, max_lag, |_| {})
    }

    /// A rig whose config `adjust` changes first.
    fn with(policy: SlowConsumer, max_lag: usize, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            handler: SharedHandler(Arc::new(Subs)),
            slow_consumer: policy,
            max_lag_bytes: max_lag,
            // Plain subscribers only: no v1 logs kept beside theirs.
            history: History {
                messages: 0,
                ..History::default()
            },
            ..Config::default()
        };
        adjust(&mut config);
        let (tx, rx) = ring::inbox(1 << 16, Arc::new(NoWake));
        let fanout = Fanout::new(vec![tx]);
        let core = Core::new(crate::reactor::Shared {
            index: 0,
            config: Arc::new(config),
            stop: Arc::new(AtomicBool::new(false)),
            quiesced: Arc::new(Quiesced::new(1)),
            inbox: rx,
            fanout: fanout.clone(),
            stats: Arc::default(),
            admission: Arc::default(),
        });
        Self {
            core,
            fake: Fake::default(),
            fanout,
            now: Instant::now(),
        }
    }

    /// A subscriber to `path` whose socket takes `room` bytes; returns its key with the
    /// handshake answer read.
    fn subscriber(&mut self, path: &str, room: usize) -> usize {
        self.subscriber_with(path, room, "")
    }

    /// A subscriber whose request carries the header lines `extra` too.
    fn subscriber_with(&mut self, path: &str, room: usize, extra: &str) -> usize {
        let key = self.request(path, extra);
        self.fake.flush(&mut self.core, key, self.now);
        let io = &mut self.core.conns[key].io;
        assert!(
            io.out.starts_with(b"HTTP/1.1 101"),
            "{:?}",
            String::from_utf8_lossy(&io.out)
        );
        io.out.clear();
        io.writes = 0;
        io.room = room;
        key
    }

    /// A connection whose upgrade request for `path` (with the header lines `extra`) was
    /// read, nothing written yet; returns its key.
    fn request(&mut self, path: &str, extra: &str) -> usize {
        let key = self
            .core
            .insert(
                Sock {
                    room: usize::MAX,
                    ..Sock::default()
                },
                None,
                self.now,
            )
            .0;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes();
        self.core.feed(key, &mut req, self.now);
        key
    }

    fn publish(&self, topic: &str, seq: u32, len: usize) {
        let mut p = vec![0u8; len.max(4)];
        p[..4].copy_from_slice(&seq.to_be_bytes());
        let r = self
            .fanout
            .publish(&TopicName::new(topic), OpCode::Binary, &p);
        assert!(r.is_complete());
    }

    /// One timer tick later: the clock moves a [`TICK`] and the core runs its tick.
    fn step(&mut self) {
        self.now += TICK;
        self.core.tick(&mut self.fake, self.now);
        self.core.publish_out();
    }

    /// Ticks until connection `key` is released; returns how long after `since` that was
    /// (at most 2 s of ticks).
    fn step_until_released(&mut self, key: usize, since: Instant) -> Duration {
        while !self.fake.released.contains(&key) {
            assert!(self.now < since + Duration::from_secs(2), "not dropped");
            self.step();
        }
        self.now - since
    }

    fn deliver(&mut self) {
        self.core.deliver(&mut self.fake, self.now);
        self.core.publish_out();
    }

    /// Lets `key`'s socket take `room` more bytes and flushes it.
    fn drain(&mut self, key: usize, room: usize) {
        let io = &mut self.core.conns[key].io;
        io.room = room;
        io.blocked = false;
        self.fake.flush(&mut self.core, key, self.now);
    }

    /// The frames written to `key` so far: (opcode, first 4 payload bytes as a number).
    fn frames(&self, key: usize) -> Vec<(OpCode, u32)> {
        let mut rest = &self.core.conns[key].io.out[..];
        let mut v = Vec::new();
        while let Ok(Decoded::Header(h, n)) = decode(rest) {
            let end = n + h.len as usize;
            assert!(end <= rest.len(), "a cut frame");
            let p = &rest[n..end];
            let seq = if p.len() >= 4 && h.opcode == OpCode::Binary {
                u32::from_be_bytes(p[..4].try_into().unwrap())
            } else {
                0
            };
            v.push((h.opcode, seq));
            rest = &rest[end..];
        }
        v
    }

    fn seqs(&self, key: usize) -> Vec<u32> {
        self.frames(key)
            .into_iter()
            .filter(|f| f.0 == OpCode::Binary)
            .map(|f| f.1)
            .collect()
    }
}

#[test]
fn a_long_fan_out_is_written_a_slice_per_turn_with_what_came_meanwhile() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let n = FLUSH_BUDGET * 2 + 10;
    let keys: Vec<usize> = (0..n).map(|_| r.subscriber("/t", usize::MAX)).collect();
    r.publish("t", 1, 8);
    r.deliver();
    // A topic's subscribers are visited from the last to subscribe to the first.
    let (rest, first) = keys.split_at(n - FLUSH_BUDGET);
    assert!(first.iter().all(|&k| r.seqs(k) == [1]));
    assert!(rest.iter().all(|&k| r.seqs(k).is_empty()));
    // Published before the next turn: the rest of the list gets it in the same write as
    // the first message; the first slice, after them.
    r.publish("t", 2, 8);
    let mut turns = 1;
    while keys.iter().any(|&k| r.seqs(k).len() < 2) {
        // Work is left (a pass, or subscribers to visit once it ended): the reactor's
        // loop must not sleep on it.
        assert!(r.core.has_deliveries());
        r.deliver();
        turns += 1;
        assert!(turns <= 4, "a slice of {FLUSH_BUDGET} per turn");
    }
    for &k in &keys {
        assert_eq!(r.seqs(k), [1, 2]);
    }
    assert!(rest.iter().all(|&k| r.core.conns[k].io.writes == 1));
    assert!(first.iter().all(|&k| r.core.conns[k].io.writes == 2));
}

#[test]
fn a_subscriber_with_nothing_pending_still_joins_the_next_pass() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let n = FLUSH_BUDGET * 2 + 10;
    let keys: Vec<usize> = (0..n).map(|_| r.subscriber("/t", usize::MAX)).collect();
    // A topic's subscribers are visited from the last to subscribe to the first.
    let (rest, first) = keys.split_at(n - FLUSH_BUDGET);
    r.publish("t", 1, 8);
    r.deliver();
    // Message 2 comes while the pass is under way: the rest of the list takes it with 1
    // and has nothing pending when the next pass is drawn up; the first slice has 2.
    r.publish("t", 2, 8);
    while rest.iter().any(|&k| r.seqs(k).len() < 2) {
        r.deliver();
    }
    r.deliver(); // the next pass: its first slice writes 2
    assert!(first.iter().all(|&k| r.seqs(k) == [1, 2]));
    // Published before that pass reaches the rest: it goes out in this pass, in the two
    // slices left of it, not in a pass after it.
    r.publish("t", 3, 8);
    r.deliver();
    r.deliver();
    for &k in rest {
        assert_eq!(r.seqs(k), [1, 2, 3]);
        assert_eq!(r.core.conns[k].io.writes, 2);
    }
    assert!(first.iter().all(|&k| r.seqs(k) == [1, 2]));
    while first.iter().any(|&k| r.seqs(k).len() < 3) {
        assert!(r.core.has_deliveries());
        r.deliver();
    }
}

#[test]
fn a_batch_reaches_every_subscriber_in_order() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let a = r.subscriber("/t", usize::MAX);
    let b = r.subscriber("/t,u", usize::MAX);
    for i in 0..500 {
        r.publish(if i % 5 == 0 { "u" } else { "t" }, i, 40);
    }
    r.deliver();
    let t: Vec<u32> = (0..500).filter(|i| i % 5 != 0).collect();
    assert_eq!(r.seqs(a), t);
    let bs = r.seqs(b);
    assert_eq!(bs.len(), 500);
    let bt: Vec<u32> = bs.iter().copied().filter(|i| i % 5 != 0).collect();
    assert_eq!(bt, t, "in publish order within a topic");
    let s = r.core.stats.snapshot();
    assert_eq!(
        s.frames_out,
        2 + 400 + 500,
        "two handshake answers, then messages"
    );
    assert_eq!(s.publications, 500);
}

#[test]
fn a_subscriber_joining_mid_stream_starts_at_the_head() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let a = r.subscriber("/t", 0);
    for i in 0..10 {
        r.publish("t", i, 40);
    }
    r.deliver();
    let b = r.subscriber("/t", usize::MAX);
    r.publish("t", 10, 40);
    r.deliver();
    assert_eq!(r.seqs(b), [10]);
    r.drain(a, usize::MAX);
    assert_eq!(r.seqs(a), (0..=10).collect::<Vec<_>>());
}

#[test]
fn a_stalled_subscriber_is_closed_after_its_frame_in_progress() {
    let mut r = Rig::new(SlowConsumer::Close, 10_000);
    let healthy = r.subscriber("/t", usize::MAX);
    let stalled = r.subscriber("/t", 150);
    // Each batch is as large as the limit: a healthy subscriber takes it in its turn; the
    // stalled one, whose write is still pending, is past the limit at the second.
    for round in 0..3 {
        for i in 0..100 {
            r.publish("t", round * 100 + i, 98);
        }
        r.deliver();
        assert_eq!(r.core.stats.snapshot().slow_closed, u64::from(round >= 1));
    }
    assert_eq!(r.core.topics.subscriptions(), 1);
    r.drain(stalled, usize::MAX);
    let f = r.frames(stalled);
    assert_eq!(f[..2], [(OpCode::Binary, 0), (OpCode::Binary, 1)], "{f:?}");
    assert_eq!(f[2].0, OpCode::Close);
    assert_eq!(f.len(), 3);
    assert!(
        r.core.conns[stalled].io.shut,
        "half-closed after the close frame"
    );
    assert_eq!(r.seqs(healthy).len(), 300);
}

#[test]
fn conflate_and_drop_oldest_count_what_was_skipped() {
    for policy in [SlowConsumer::Conflate, SlowConsumer::DropOldest] {
        let mut r = Rig::new(policy, 2000);
        let s = r.subscriber("/t", 0);
        for round in 0..20 {
            for i in 0..10 {
                r.publish("t", round * 10 + i, 96);
            }
            r.deliver();
        }
        r.drain(s, usize::MAX);
        let got = r.seqs(s);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*got.last().unwrap(), 199, "the newest is delivered");
        let st = r.core.stats.snapshot();
        let skipped = st.slow_conflated_frames + st.slow_dropped_frames;
        assert_eq!(skipped as usize + got.len(), 200, "{policy}: {got:?}");
        // At most the limit from before a batch, plus the batch (10 × 100 B).
        assert!(st.lag_high_water <= 2000 + 1000, "{st:?}");
    }
}

#[test]
fn shutdown_sends_what_is_pending_then_1001() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let s = r.subscriber("/t", 0);
    for i in 0..50 {
        r.publish("t", i, 40);
    }
    r.deliver();
    r.core.begin_shutdown(&mut r.fake, r.now);
    // Published after the close: not sent.
    r.publish("t", 50, 40);
    r.deliver();
    r.drain(s, usize::MAX);
    let f = r.frames(s);
    assert_eq!(f.len(), 51, "{f:?}");
    assert_eq!(f[50].0, OpCode::Close);
    assert_eq!(r.seqs(s), (0..50).collect::<Vec<_>>());
}

/// A client's masked binary frame carrying `seq` (4 bytes, big-endian).
fn client_frame(seq: u32) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let mut f = vec![0x82, 0x84];
    f.extend_from_slice(&key);
    f.extend(seq.to_be_bytes().iter().zip(key).map(|(b, k)| b ^ k));
    f
}

#[test]
fn shutdown_takes_no_client_message_then_delivers_the_inbox_before_1001() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let s = r.subscriber("/t", usize::MAX);
    let p = r.subscriber("/x", usize::MAX);
    r.core.feed(p, &mut client_frame(1), r.now);
    // The first step: what clients send from now on is read and discarded.
    r.core.stop_taking();
    r.core.feed(p, &mut client_frame(2), r.now);
    assert!(r.core.quiesced.all(), "the only reactor has stopped taking");
    // Still in the inbox when the second step begins (another reactor's client's, or the
    // API's): delivered before the close.
    r.publish("t", 3, 4);
    r.core.close_all(&mut r.fake, r.now);
    r.drain(s, usize::MAX);
    let f = r.frames(s);
    assert_eq!(r.seqs(s), [1, 3], "{f:?}");
    assert_eq!(f.last().unwrap().0, OpCode::Close, "{f:?}");
    assert_eq!(r.core.stats.snapshot().messages_in, 2, "both were read");
}

#[test]
fn memory_stays_flat_over_a_long_run() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let a = r.subscriber("/t", usize::MAX);
    let mut live = Vec::new();
    for round in 0..400 {
        for i in 0..100 {
            r.publish("t", round * 100 + i, 500);
        }
        r.deliver();
        r.core.conns[a].io.out.clear();
        r.core.conns[a].io.room = usize::MAX;
        r.core.tick(&mut r.fake, r.now);
        live.push(r.core.topics.pool().live());
    }
    // 20 MB went through; the log holds a round (until the next round's visit trims it)
    // in a chunk or two, reused from the pool.
    assert!(live.iter().all(|&l| l <= 4), "{live:?}");
    assert!(live[1..].iter().all(|&l| l <= 2), "{live:?}");
    assert_eq!(r.core.stats.snapshot().frames_out, 1 + 40_000);
    assert!(r.core.topics.pool().free_bytes() <= 2 << 20);
    r.core.remove(&mut r.fake, a);
    assert_eq!(r.fake.released, [a]);
    assert_eq!(r.core.topics.len(), 0);
}

#[test]
fn the_tick_trims_a_topic_once_quiet_and_leaves_a_busy_one_to_delivery() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    // Its socket takes nothing during delivery, so each delivery's trim stops at its cursor.
    let a = r.subscriber("/t", 0);
    let mut seq = 0;
    for round in 0..5 {
        for _ in 0..100 {
            r.publish("t", seq, 4000);
            seq += 1;
        }
        r.deliver();
        // Its socket drains outside delivery (a writable edge, a send's completion).
        r.drain(a, usize::MAX);
        r.core.conns[a].io.room = 0;
        assert!(r.core.conns[a].session.outbox.is_empty(&r.core.topics));
        let held = r.core.topics.pool().live();
        assert!(held > 1, "round {round}: {held} chunks");
        // Published to since the last tick: the tick leaves the log to the next visit.
        r.step();
        assert_eq!(r.core.topics.pool().live(), held, "round {round}");
    }
    // Quiet since the last tick: the next one trims it past the cursor.
    let held = r.core.topics.pool().live();
    r.step();
    assert!(r.core.topics.pool().live() < held);
    assert!(r.core.topics.pool().live() <= 1);
}

#[test]
fn a_delivery_trims_the_log_past_what_it_wrote() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let a = r.subscriber("/t", usize::MAX);
    let b = r.subscriber("/t", usize::MAX);
    for seq in 0..100 {
        r.publish("t", seq, 4000);
    }
    r.deliver();
    assert_eq!(r.seqs(a).len(), 100);
    assert_eq!(r.seqs(b).len(), 100);
    // Both took everything in this pass: the pass's trim keeps only the chunk being
    // written to.
    assert_eq!(r.core.topics.pool().live(), 1);
}

/// Connections that go while a pass visits their topic move others within its subscriber
/// list: none of those left is skipped.
#[test]
fn leaving_during_a_pass_skips_no_one() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let n = FLUSH_BUDGET + 40;
    let keys: Vec<usize> = (0..n).map(|_| r.subscriber("/t", usize::MAX)).collect();
    r.publish("t", 1, 8);
    r.deliver();
    // The first slice visited the last FLUSH_BUDGET to subscribe. Some of those leave,
    // and some of the 40 still to visit (each removal moves the last in the list into
    // its place).
    let gone: Vec<usize> = [0, 3, 39, 40, 100, n - 1]
        .iter()
        .map(|&i| keys[i])
        .collect();
    for &k in &gone {
        r.core.remove(&mut r.fake, k);
    }
    while r.core.has_deliveries() {
        r.deliver();
    }
    for &k in keys.iter().filter(|k| !gone.contains(k)) {
        assert_eq!(r.seqs(k), [1], "subscriber {k}");
    }
}

/// One who resumes while a pass is visiting its topic joins behind the visits: its replay
/// must survive the trim that ends them.
#[test]
fn a_resume_during_a_pass_keeps_its_replay_through_the_pass_trim() {
    const V1: &str = "Sec-WebSocket-Protocol: ringcast.v1\r\n";
    let mut r = Rig::with(SlowConsumer::Close, 1 << 20, |c| {
        c.history = History {
            messages: 2,
            ..History::default()
        };
    });
    let n = FLUSH_BUDGET + 10;
    let keys: Vec<usize> = (0..n)
        .map(|_| r.subscriber_with("/t", usize::MAX, V1))
        .collect();
    // Over several chunks, so that a trim can free some.
    for seq in 0..10 {
        r.publish("t", seq, 8000);
    }
    r.deliver();
    assert!(r.core.has_deliveries(), "the pass is under way");
    // It resumes after seq 1 and its socket takes only the handshake answer and the
    // control messages: its replay (seq 2 to 10) waits in the log.
    let late = r.request("/t?since=1", V1);
    r.core.conns[late].io.room = r.core.conns[late].session.outbox.own_bytes();
    r.fake.flush(&mut r.core, late, r.now);
    assert!(r.core.conns[late].io.blocked);
    r.core.conns[late].io.out.clear();
    while r.core.has_deliveries() {
        r.deliver();
    }
    for &k in &keys {
        assert_eq!(
            r.frames(k).iter().filter(|f| f.0 == OpCode::Binary).count(),
            10
        );
    }
    // Every visited subscriber took all ten; the history keeps two; the late one's
    // cursor kept the rest.
    r.drain(late, usize::MAX);
    let replayed = r.frames(late).into_iter().filter(|f| f.0 == OpCode::Binary);
    assert_eq!(replayed.count(), 9, "seq 2 to 10");
}

#[test]
fn the_read_gate_holds_back_replies_over_the_limit() {
    let mut r = Rig::new(SlowConsumer::Close, 100);
    let a = r.subscriber("/t", 0);
    assert_eq!(r.core.gate(a), Gate::Open);
    for _ in 0..5 {
        r.core.conns[a]
            .session
            .outbox
            .push(crate::protocol::encode::frame(OpCode::Text, &[b'x'; 40]));
    }
    assert_eq!(r.core.gate(a), Gate::Closed);
    r.drain(a, usize::MAX);
    assert_eq!(r.core.gate(a), Gate::Open);
    assert_eq!(r.core.stats.snapshot().messages_in, 0);
    let _ = Ordering::Relaxed;
}

#[test]
fn a_topic_forgotten_between_absorb_and_delivery_is_skipped() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let plain = r.subscriber("/t", usize::MAX);
    r.publish("t", 1, 40);
    // A v1 subscription takes the inbox into the logs at once: "t" waits for delivery.
    let v1 = r.subscriber_with("/u", usize::MAX, "Sec-WebSocket-Protocol: ringcast.v1\r\n");
    assert_eq!(r.core.topics.turn.len(), 1);
    // Its only subscriber leaves before the delivery: the topic is forgotten.
    r.core.remove(&mut r.fake, plain);
    assert_eq!(r.core.topics.id("t", Form::Plain), None);
    r.deliver();
    assert!(r.core.topics.turn.is_empty());
    r.publish("u", 2, 40);
    r.deliver();
    assert_eq!(r.frames(v1).len(), 1, "the v1 subscriber gets its envelope");
}

/// An idle connection's timers are not run every tick: at most every
/// [`TIMER_RECHECK`] ticks, and at the tick its deadline falls in (the 30 s keep-alive
/// ping leaves at the first tick at or past it); input brings them back to the next tick.
#[test]
fn idle_timers_run_at_their_deadline_not_every_tick() {
    let mut r = Rig::new(SlowConsumer::Close, 1 << 20);
    let a = r.subscriber("/t", usize::MAX);
    let start = r.now;
    r.step();
    let t = r.core.ticks;
    assert_eq!(r.core.timers_at[a], t + TIMER_RECHECK, "run, then 1 s on");
    for _ in 1..TIMER_RECHECK {
        r.step();
        assert_eq!(r.core.timers_at[a], t + TIMER_RECHECK, "skipped");
    }
    r.step();
    assert_eq!(r.core.timers_at[a], t + 2 * TIMER_RECHECK, "run again");
    // Input: the next tick runs them.
    let mut pong = vec![0x8A, 0x80, 1, 2, 3, 4];
    r.core.feed(a, &mut pong, r.now);
    assert_eq!(r.core.timers_at[a], 0);
    r.step();
    assert_eq!(r.core.timers_at[a], r.core.ticks + TIMER_RECHECK);
    // The ping: 30 s after the last input, at the first tick at or past it.
    let input = r.now - TICK;
    let idle = Duration::from_secs(30);
    let mut pinged = None;
    while r.now < start + Duration::from_secs(40) && pinged.is_none() {
        r.step();
        if r.frames(a).iter().any(|f| f.0 == OpCode::Ping) {
            pinged = Some(r.now);
        }
    }
    let at = pinged.expect("a keep-alive ping within 40 s") - input;
    assert!(
        at >= idle && at < idle + TICK,
        "pinged {at:?} after the last input"
    );
    // A handshake that never completes is dropped at the first tick past its deadline.
    let h = r.core.insert(Sock::default(), None, r.now).0;
    let deadline = r.now + r.core.config.handshake_timeout;
    while !r.fake.released.contains(&h) {
        assert!(r.now < deadline + Duration::from_secs(1), "not dropped");
        r.step();
    }
    assert!(
        r.now >= deadline && r.now < deadline + TICK,
        "dropped at {:?}",
        r.now - deadline
    );
}

/// A slow consumer's close brings its timers to the next tick: a stalled one is dropped
/// at the first tick past its close deadline (300 ms here), not when its timers would next
/// have run for its 30 s idle timer (1 s later).
#[test]
fn a_slow_consumer_close_runs_its_deadline_on_time() {
    let close_timeout = Duration::from_millis(300);
    let mut r = Rig::with(SlowConsumer::Close, 10_000, |c| {
        c.limits.close_timeout = close_timeout;
    });
    let stalled = r.subscriber("/t", 0);
    r.step();
    assert_eq!(r.core.timers_at[stalled], r.core.ticks + TIMER_RECHECK);
    // Past the limit at the second batch (the first is its write still pending).
    for round in 0..2 {
        for i in 0..100 {
            r.publish("t", round * 100 + i, 98);
        }
        r.deliver();
    }
    assert_eq!(r.core.stats.snapshot().slow_closed, 1);
    let closed = r.now;
    let at = r.step_until_released(stalled, closed);
    assert!(
        at >= close_timeout && at < close_timeout + TICK,
        "dropped {at:?} after the close"
    );
}

/// A close whose answer is written late lingers for its own deadline from that write: a
/// client that stalled with data pending and then sent a close is half-closed once the
/// backlog and the answer are out, and dropped at the first tick past the linger deadline
/// (300 ms after that write), neither at the deadline its draining had (300 ms after the
/// close began) nor a timer recheck later.
#[test]
fn a_close_answered_late_lingers_until_its_own_deadline() {
    let close_timeout = Duration::from_millis(300);
    let mut r = Rig::with(SlowConsumer::Close, 1 << 20, |c| {
        c.limits.close_timeout = close_timeout;
    });
    let a = r.subscriber("/t", 0);
    for i in 0..10 {
        r.publish("t", i, 100);
    }
    r.deliver();
    r.step();
    // The client's close (masked, code 1000) while its socket takes nothing.
    let mut close = vec![0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8];
    r.core.feed(a, &mut close, r.now);
    r.step();
    r.step();
    // The socket takes everything 200 ms into the draining.
    r.now += Duration::from_millis(200) - 2 * TICK;
    r.core.conns[a].io.room = usize::MAX;
    r.fake.flush(&mut r.core, a, r.now);
    assert!(r.core.conns[a].io.shut, "half-closed once drained");
    assert_eq!(r.seqs(a), (0..10).collect::<Vec<_>>());
    assert_eq!(r.frames(a).last().map(|f| f.0), Some(OpCode::Close));
    let written = r.now;
    let at = r.step_until_released(a, written);
    assert!(
        at >= close_timeout && at < close_timeout + TICK,
        "dropped {at:?} after the answer was written"
    );
}
