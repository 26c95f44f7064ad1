//! Fan-out delivery at scale: thousands of subscribers on a few topics; every subscriber of a
//! topic receives every message of it exactly once and in publish order, subscribers of other
//! topics receive none. Order is promised within a topic, not across topics (a write carries
//! each topic's pending run in turn), so a subscriber of two topics is checked per topic. Published through the embedding API and through `/pub` WebSocket
//! publishers, as text and as binary. The `frames_out` counter matches what clients received.

use crate::fanout_util;
use crate::util;

use std::net::SocketAddr;

use fanout_util::{Ws, builder, connect, connect_many, start, wait_publications};
use ringcast::EngineHandle;
use ringcast::server::Backend;
use tungstenite::Message;

/// Messages per data topic per round.
const PER_TOPIC: usize = 100;
/// Reader threads.
const READERS: usize = 4;

/// A group of subscribers sharing a path.
struct Group {
    path: &'static str,
    topics: &'static [u8],
}

const GROUPS: [Group; 4] = [
    Group {
        path: "/sub/A",
        topics: b"A",
    },
    Group {
        path: "/sub/B",
        topics: b"B",
    },
    Group {
        path: "/sub/A,B",
        topics: b"AB",
    },
    // Subscribes to a topic nobody publishes data to: receives only the round markers.
    Group {
        path: "/sub/C",
        topics: b"C",
    },
];

/// A received (or expected) message: binary?, payload.
type Msg = (bool, Vec<u8>);

/// The payload of message `seq` of `topic`: text `A:17`, or binary bytes that are not UTF-8.
fn payload(topic: u8, seq: usize, binary: bool) -> Msg {
    if binary {
        let mut p = vec![0xFF, topic];
        p.extend_from_slice(&(seq as u32).to_le_bytes());
        (true, p)
    } else {
        (false, format!("{}:{seq}", topic as char).into_bytes())
    }
}

fn topic_of(m: &Msg) -> u8 {
    if m.0 { m.1[1] } else { m.1[0] }
}

fn marker(topic: u8, round: usize) -> Msg {
    (false, format!("{}:mark{round}", topic as char).into_bytes())
}

fn show(m: &Msg) -> String {
    if m.0 {
        format!("binary {:02x?}", m.1)
    } else {
        format!("text {:?}", String::from_utf8_lossy(&m.1))
    }
}

struct Sub {
    ws: Ws,
    group: usize,
}

/// How a round publishes its data messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `EngineHandle::publish` / `publish_binary`, alternating A and B from one thread: the
    /// global order is fixed, so subscribers of both topics must see exactly it.
    Embedded,
    /// One `/pub/A` and one `/pub/B` WebSocket publisher: order is fixed per topic only.
    Socket,
}

/// Fields drop in order: clients first, so that the engine's shutdown finds them gone.
struct Harness {
    subs: Vec<Sub>,
    publishers: Option<(Ws, Ws)>,
    /// Publications each reactor has taken so far.
    publications: u64,
    /// Messages all clients have received so far.
    received: u64,
    round: usize,
    handle: EngineHandle,
}

impl Harness {
    fn new(backend: Backend, counts: [usize; 4]) -> Self {
        let handle = start(builder(backend));
        let addr = handle.local_addr();
        let mut subs = Vec::new();
        for (group, (g, &n)) in GROUPS.iter().zip(&counts).enumerate() {
            subs.extend(
                connect_many(addr, g.path, n)
                    .into_iter()
                    .map(|ws| Sub { ws, group }),
            );
        }
        assert_eq!(handle.stats().total().accepted, subs.len() as u64);
        Self {
            handle,
            subs,
            publishers: None,
            publications: 0,
            received: 0,
            round: 0,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Publishes `PER_TOPIC` messages to A and B (interleaved), then, once every reactor
    /// has taken them, one marker to each of A, B and C; checks what every subscriber got.
    fn round(&mut self, via: Via, binary: bool) {
        let data: Vec<Msg> = (0..PER_TOPIC)
            .flat_map(|i| [payload(b'A', i, binary), payload(b'B', i, binary)])
            .collect();
        match via {
            Via::Embedded => {
                for m in &data {
                    let topic = (topic_of(m) as char).to_string();
                    let r = if binary {
                        self.handle.publish_binary(&topic, &m.1)
                    } else {
                        self.handle
                            .publish(&topic, std::str::from_utf8(&m.1).unwrap())
                    };
                    assert!(r.is_complete(), "publish dropped: {r:?}");
                }
            }
            Via::Socket => {
                let addr = self.addr();
                let (pa, pb) = self
                    .publishers
                    .get_or_insert_with(|| (connect(addr, "/pub/A"), connect(addr, "/pub/B")));
                for m in &data {
                    let ws = if topic_of(m) == b'A' {
                        &mut *pa
                    } else {
                        &mut *pb
                    };
                    let msg = if binary {
                        Message::binary(m.1.clone())
                    } else {
                        Message::text(String::from_utf8(m.1.clone()).unwrap())
                    };
                    ws.send(msg).expect("publisher send");
                }
            }
        }
        // Every reactor has queued the data (or dropped it as unsubscribed) before the
        // markers enter its inbox, so a stray or duplicate frame would come before them.
        self.publications += data.len() as u64;
        wait_publications(&self.handle, self.publications);
        let round = self.round;
        for t in [b'A', b'B', b'C'] {
            let m = marker(t, round);
            let r = self
                .handle
                .publish(&(t as char).to_string(), std::str::from_utf8(&m.1).unwrap());
            assert!(r.is_complete(), "marker dropped: {r:?}");
        }
        self.publications += 3;

        let expected: Vec<Vec<Msg>> = GROUPS
            .iter()
            .map(|g| {
                data.iter()
                    .filter(|m| g.topics.contains(&topic_of(m)))
                    .cloned()
                    .chain(g.topics.iter().map(|&t| marker(t, round)))
                    .collect()
            })
            .collect();
        let chunk = self.subs.len().div_ceil(READERS);
        let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
            let readers: Vec<_> = self
                .subs
                .chunks_mut(chunk)
                .map(|subs| {
                    let expected = &expected;
                    s.spawn(move || {
                        let mut n = 0;
                        for (i, sub) in subs.iter_mut().enumerate() {
                            let want = &expected[sub.group];
                            let path = GROUPS[sub.group].path;
                            let ends = &want[want.len() - GROUPS[sub.group].topics.len()..];
                            let got = read_until(&mut sub.ws, ends, want.len())
                                .map_err(|e| format!("{path} #{i}: {e}"))?;
                            check(&got, want).map_err(|e| format!("{path} #{i}: {e}"))?;
                            n += got.len() as u64;
                        }
                        Ok(n)
                    })
                })
                .collect();
            readers
                .into_iter()
                .map(|r| r.join().expect("reader thread"))
                .collect()
        });
        for r in results {
            match r {
                Ok(n) => self.received += n,
                Err(e) => panic!("round {round} ({via:?}, binary: {binary}): {e}"),
            }
        }
        self.round += 1;
    }

    /// Every frame written is a handshake response or a message a client received.
    fn check_frames_out(&self) {
        let publishers = if self.publishers.is_some() { 2 } else { 0 };
        let want = (self.subs.len() + publishers) as u64 + self.received;
        let t = fanout_util::wait_stats(&self.handle, "frames_out to settle", |t| {
            t.frames_out >= want
        });
        assert_eq!(
            t.frames_out,
            want,
            "frames_out: {} handshakes + {} messages received",
            self.subs.len() + publishers,
            self.received
        );
        assert_eq!(t.ring_dropped, 0);
        assert_eq!(
            t.slow_closed + t.slow_dropped_frames + t.slow_conflated_frames,
            0
        );
        // Writes coalesce: each carries a connection's pending frames, so there are
        // fewer writes than frames (and some).
        assert!(
            t.writes > 0 && t.writes < t.frames_out,
            "writes {} for {} frames",
            t.writes,
            t.frames_out
        );
        assert_eq!(t.connections, (self.subs.len() + publishers) as u64);
    }
}

/// Reads until every marker in `ends` (each topic's last message, which always comes) has
/// arrived or one message more than expected, so that a missing message shows as a
/// mismatch rather than a read timeout.
fn read_until(ws: &mut Ws, ends: &[Msg], expected: usize) -> Result<Vec<Msg>, String> {
    let mut got: Vec<Msg> = Vec::with_capacity(expected);
    let mut seen = 0;
    while seen < ends.len() && got.len() <= expected {
        let m = match ws.read() {
            Ok(Message::Text(t)) => (false, t.as_bytes().to_vec()),
            Ok(Message::Binary(b)) => (true, b.to_vec()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => return Err(format!("message {}: unexpected {other:?}", got.len())),
            Err(e) => return Err(format!("message {}: read failed: {e}", got.len())),
        };
        seen += usize::from(ends.contains(&m));
        got.push(m);
    }
    Ok(got)
}

/// Per topic, what arrived must be exactly what was published to it, in order, ending with
/// the topic's marker.
fn check(got: &[Msg], want: &[Msg]) -> Result<(), String> {
    let mut topics: Vec<u8> = want.iter().map(topic_of).collect();
    topics.sort_unstable();
    topics.dedup();
    for t in topics {
        let g: Vec<&Msg> = got.iter().filter(|m| topic_of(m) == t).collect();
        let w: Vec<&Msg> = want.iter().filter(|m| topic_of(m) == t).collect();
        if let Some(i) = g.iter().zip(&w).position(|(a, b)| a != b) {
            return Err(format!(
                "topic {}: message {i}: got {}, expected {}",
                t as char,
                show(g[i]),
                show(w[i])
            ));
        }
        if g.len() != w.len() {
            return Err(format!(
                "topic {}: {} messages, expected {}",
                t as char,
                g.len(),
                w.len()
            ));
        }
    }
    if got.len() != want.len() {
        return Err(format!("{} messages, expected {}", got.len(), want.len()));
    }
    Ok(())
}

fn embedded_publish_reaches_every_subscriber_once_in_order(backend: Backend) {
    let mut h = Harness::new(backend, [800, 700, 400, 100]);
    h.round(Via::Embedded, false);
    h.round(Via::Embedded, true);
    h.check_frames_out();
}

fn websocket_publishers_reach_every_subscriber_once_in_order(backend: Backend) {
    let mut h = Harness::new(backend, [800, 700, 400, 100]);
    h.round(Via::Socket, false);
    h.round(Via::Socket, true);
    h.check_frames_out();
}

util::for_each_backend!(
    embedded_publish_reaches_every_subscriber_once_in_order,
    websocket_publishers_reach_every_subscriber_once_in_order,
);
