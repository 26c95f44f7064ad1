//! The NATS bridge: the client protocol over one TCP connection, spoken by two threads
//! (this module's `run`, the writer, which owns the connection; and a reader per
//! connection), and JetStream to number each topic's messages.
//!
//! **Numbering.** Each topic `T` has a JetStream stream of its own (`RC_<hex of the
//! subject>`, file storage, `max_msgs` = the broker history, discard old) over the subject
//! `{prefix}T`, with **RePublish** to `_rcseq.{prefix}T`. The stream's sequence is then the
//! topic's sequence: 1, +1 for every message the stream stores, whoever published it (a
//! node, or `nats pub ringcast.T …`), and the server republishes each stored message, in
//! store order, with its number in the `Nats-Sequence` header. Nodes subscribe to the
//! republished subject only: what they deliver is exactly what the stream stored, in its
//! order, with its number, so every node delivers a message with the same `seq`.
//!
//! **Publishing.** A node publishes to `{prefix}T` with an ack inbox of its own per
//! publication, after making sure the topic's stream exists (`STREAM.CREATE`, once per
//! topic and connection). The ack is not waited for; the publication is kept until it
//! comes, and one JetStream refuses (an error, or no stream: `503` no responders) is
//! delivered on this node only ([`Shared::refused`]) rather than lost for everyone. Its
//! own messages come back republished like everyone's, and that is their one delivery on
//! this node (origin = this node: counted as own).
//!
//! **Refusals.** JetStream may refuse a topic's stream (an account's `max_streams` or
//! storage limit) or not answer in time. That costs the topic, not the connection: the
//! topic is served on this node only (local numbers, as with the broker unreachable),
//! counted in `streams_refused`, and tried again [`STREAM_RETRY`] later; the warning is
//! logged at most every [`STREAM_RETRY`] too, however many topics are refused.
//!
//! **Interest.** `SUB _rcseq.{prefix}T` while the node has subscribers to `T`; `UNSUB`
//! after the linger. At the first subscription the node learns the stream's last number
//! and moves its counter there ([`Fanout::advance`](crate::fanout::Fanout::advance)), so
//! that a subscriber is not told of a gap it never had.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::stats::bump;
use super::supervise::{Follow, IO_TIMEOUT, Link, note_interest, spawn_reader, supervise};
use super::{Broker, Control, Credentials, Outbound, RefusalLog, Shared, identity};
use crate::fanout::TopicName;

/// Most topics whose stream a connection remembers as made (one round trip each to
/// learn again): touching ever new names must not grow the set without end.
const MAX_KNOWN_STREAMS: usize = 64 * 1024;
/// How long a topic whose stream was refused is served on this node only before the
/// broker is asked again (and the least time between two warnings about refusals).
pub(super) const STREAM_RETRY: Duration = Duration::from_secs(10);
/// Where JetStream requests are answered: `_INBOX.<node>.<n>` (n = request number, or
/// `ack` for publication acks).
fn inbox_root(node: &str) -> String {
    format!("_INBOX.rc.{node}.")
}

/// The subject a topic's publications go to.
fn subject(prefix: &str, topic: &str) -> String {
    format!("{prefix}{topic}")
}

/// The subject the stream republishes a topic's numbered messages to.
fn seq_root(prefix: &str) -> String {
    format!("_rcseq.{prefix}")
}

/// The name of a topic's stream.
fn stream_name(subject: &str) -> String {
    let mut s = String::with_capacity(3 + 2 * subject.len());
    s.push_str("RC_");
    for b in subject.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Answers to JetStream requests, routed by the reader to the waiting writer.
type Pending = Arc<Mutex<HashMap<u64, Sender<Vec<u8>>>>>;
/// What the reader tells the writer of its publications' acks (shared by one
/// connection's two threads).
#[derive(Debug, Default)]
struct Acks {
    /// Publications sent and not acked yet, by number (their ack subject is `…ack<n>`),
    /// and their bytes.
    kept: Mutex<(HashMap<u64, Outbound>, usize)>,
    /// Topics a publication found without a stream (deleted on the broker), made again
    /// before the topic's next publication: set before that publication is delivered
    /// here, so nothing the node publishes after seeing it races the news.
    gone: Mutex<Vec<TopicName>>,
    any_gone: AtomicBool,
}
type Unacked = Arc<Acks>;
/// Most publications, and bytes of them, kept for their ack; past either (a broker that
/// stopped acking) the rest are sent unkept: a refusal of theirs is counted, not
/// delivered here.
const MAX_UNACKED: usize = 64 * 1024;
const MAX_UNACKED_BYTES: usize = 64 << 20;

/// One connection's writer side.
struct Conn {
    out: BufWriter<TcpStream>,
    /// `_INBOX.rc.<node>.`
    inbox: String,
    number: u64,
    next_sid: u64,
    next_request: u64,
    /// Topics whose stream is known to exist on this connection.
    streams: HashSet<TopicName>,
    /// Topics whose stream was refused, until when they are not asked for again.
    refused: HashMap<TopicName, Instant>,
    /// When refusals were last logged, and how many came since.
    refusals_logged: Option<Instant>,
    refusals_unlogged: u64,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Where the reader routes JetStream answers (shared across connections).
    pending: Pending,
    /// This connection's publications waiting for their ack.
    unacked: Unacked,
    next_ack: u64,
    /// A publication's `PUB`, encoded (reused).
    scratch: Vec<u8>,
}

/// The writer thread: connects (retrying with back-off and jitter), keeps the broker
/// subscribed to the topics the node follows, sends publications; returns on stop.
pub(crate) fn run(shared: &Arc<Shared>, out_rx: &Receiver<Outbound>, control: &Receiver<Control>) {
    let Broker::Nats { servers, auth } = shared.config.broker.clone() else {
        return;
    };
    let pending: Pending = Arc::default();
    let mut connections = 0u64;
    // The server to try first: the one after the last connected to, so that a server
    // lost is not the first tried again.
    let mut next = 0;
    supervise(shared, out_rx, control, || {
        let mut failures = Vec::new();
        for i in 0..servers.len() {
            let at = (next + i) % servers.len();
            let (host, port) = &servers[at];
            match connect(host, *port, &shared.config.node_id, auth.as_ref()) {
                Ok(stream) => {
                    next = at + 1;
                    connections += 1;
                    if servers.len() > 1 {
                        tracing::info!("cluster: connected through NATS server {host}:{port}");
                    }
                    return start_reader(shared, stream, connections, &pending);
                }
                Err(e) if servers.len() == 1 => return Err(e),
                Err(e) => failures.push(format!("{host}:{port}: {e}")),
            }
        }
        Err(io::Error::other(failures.join("; ")))
    });
}

/// Connects and greets: `INFO` in, `CONNECT` and `PING` out, `PONG` in.
fn connect(host: &str, port: u16, node: &str, auth: Option<&Credentials>) -> io::Result<TcpStream> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    Read::take(&mut r, MAX_LINE).read_line(&mut line)?;
    if !line.starts_with("INFO ") {
        let head: String = line.chars().take(80).collect();
        return Err(io::Error::other(format!("not a NATS server: {head:?}")));
    }
    let info: serde_json::Value = serde_json::from_str(&line[5..]).unwrap_or_default();
    if info.get("jetstream").and_then(serde_json::Value::as_bool) != Some(true) {
        return Err(io::Error::other(
            "JetStream is not enabled (nats-server -js)",
        ));
    }
    let mut connect = serde_json::json!({
        "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
        "protocol": 1, "name": format!("ringcast-{node}"), "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
    });
    // A refusal comes back as `-ERR 'Authorization Violation'`, below.
    match auth {
        Some(Credentials::Password { user, password }) => {
            connect["user"] = user.as_str().into();
            connect["pass"] = password.as_str().into();
        }
        Some(Credentials::Token(token)) => connect["auth_token"] = token.as_str().into(),
        None => {}
    }
    let mut w = &stream;
    w.write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())?;
    loop {
        line.clear();
        if Read::take(&mut r, MAX_LINE).read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match line.trim_end() {
            "PONG" => break,
            l if l.starts_with("-ERR") => return Err(io::Error::other(l.to_owned())),
            _ => {}
        }
    }
    if !r.buffer().is_empty() {
        return Err(io::Error::other("unexpected data after PONG"));
    }
    stream.set_read_timeout(None)?;
    Ok(stream)
}

fn start_reader(
    shared: &Arc<Shared>,
    stream: TcpStream,
    number: u64,
    p: &Pending,
) -> io::Result<Conn> {
    let rs = stream.try_clone()?;
    let pending = Arc::clone(p);
    let unacked: Unacked = Arc::default();
    let u = Arc::clone(&unacked);
    let reader = spawn_reader(
        "ringcast-cluster-rx",
        Arc::clone(shared),
        number,
        move |s| read_loop(s, rs, &pending, &u),
    )?;
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    let root = inbox_root(&shared.config.node_id);
    write!(out, "SUB {root}* 1\r\n")?;
    // This node's claim on its id, and what others with the same id announce.
    write!(
        out,
        "SUB {} 2\r\n",
        identity::subject(&shared.config.node_id)
    )?;
    let mut conn = Conn {
        out,
        inbox: root,
        number,
        next_sid: 3,
        next_request: 0,
        streams: HashSet::new(),
        refused: HashMap::new(),
        refusals_logged: None,
        refusals_unlogged: 0,
        reader: Some(reader),
        pending: Arc::clone(p),
        unacked,
        next_ack: 0,
        scratch: Vec::new(),
    };
    announce(shared, &mut conn)?;
    conn.out.flush()?;
    Ok(conn)
}

/// Announces this process's claim on its node id ([`identity`]).
fn announce(shared: &Shared, conn: &mut Conn) -> io::Result<()> {
    let hello = shared.claim.announcement();
    let subject = identity::subject(&shared.config.node_id);
    write!(conn.out, "PUB {subject} {}\r\n{hello}\r\n", hello.len())
}

/// Serves one connection until it is lost (`Err`) or the bridge stops (`Ok`).
fn serve(
    shared: &Shared,
    conn: &mut Conn,
    out_rx: &Receiver<Outbound>,
    control: &Receiver<Control>,
    follows: &mut HashMap<TopicName, Follow>,
    pending: &Pending,
) -> io::Result<()> {
    // Every topic followed before is subscribed again (recovering what the stream holds).
    let topics: Vec<TopicName> = follows.keys().cloned().collect();
    if sync_follows(shared, conn, control, follows, topics, pending)? {
        return Ok(());
    }
    conn.out.flush()?;
    let tick = super::REORDER_WAIT / 2;
    loop {
        select! {
            recv(out_rx) -> o => match o {
                Ok(o) => publish(shared, conn, o, pending)?,
                Err(_) => return Ok(()),
            },
            recv(control) -> c => match c {
                Ok(Control::Stop) | Err(_) => return Ok(()),
                Ok(Control::Lost(n, why)) if n == conn.number => {
                    return Err(io::Error::other(why));
                }
                Ok(Control::Lost(..)) => {}
                Ok(Control::Pong) => conn.out.write_all(b"PONG\r\n")?,
                Ok(Control::Announce) => announce(shared, conn)?,
                Ok(Control::Interest) => {
                    let changed = note_interest(follows, shared);
                    if sync_follows(shared, conn, control, follows, changed, pending)? {
                        return Ok(());
                    }
                }
            },
            default(tick) => {}
        }
        // Everything already queued goes out in the same write.
        for _ in 0..4096 {
            match out_rx.try_recv() {
                Ok(o) => publish(shared, conn, o, pending)?,
                Err(_) => break,
            }
        }
        let now = Instant::now();
        shared.release_held(now);
        shared.forget_unnumbered(now);
        let mut expired: Vec<TopicName> = follows
            .iter()
            .filter(|(_, f)| !f.wanted && f.linger_until.is_some_and(|u| u <= now))
            .map(|(t, _)| t.clone())
            .collect();
        expired.extend(refusals_due(conn, follows));
        if sync_follows(shared, conn, control, follows, expired, pending)? {
            return Ok(());
        }
        conn.out.flush()?;
    }
}

/// Makes the broker subscriptions of `topics` match the node's interest; returns whether
/// the bridge was told to stop meanwhile. A new subscription goes out at once; then each
/// topic's stream is made sure of and its state asked, one request at a time (JetStream
/// creates a stream in about 2.5 ms on the 2-core VM, one after another), and interest
/// that arrives in between (subscribers come in bursts: a client subscribing to many
/// topics, many clients at once) is subscribed before the next request. So a subscription
/// is in place within a round trip however many topics wait for their streams, and what
/// it receives meanwhile is held, not lost.
fn sync_follows(
    shared: &Shared,
    conn: &mut Conn,
    control: &Receiver<Control>,
    follows: &mut HashMap<TopicName, Follow>,
    topics: Vec<TopicName>,
    pending: &Pending,
) -> io::Result<bool> {
    let mut started = std::collections::VecDeque::new();
    let mut stop = false;
    subscribe_all(shared, conn, follows, topics, &mut started, pending)?;
    loop {
        // Interest that came meanwhile, subscribed before the next stream request.
        let mut more = Vec::new();
        for c in control.try_iter() {
            match c {
                Control::Interest => more.extend(note_interest(follows, shared)),
                Control::Pong => conn.out.write_all(b"PONG\r\n")?,
                Control::Announce => announce(shared, conn)?,
                Control::Lost(n, why) if n == conn.number => return Err(io::Error::other(why)),
                Control::Lost(..) => {}
                Control::Stop => stop = true,
            }
        }
        subscribe_all(shared, conn, follows, more, &mut started, pending)?;
        let Some((t, sid, followed)) = started.pop_front() else {
            return Ok(stop);
        };
        let t = &t;
        let last = match ensure_stream(shared, conn, t, pending)? {
            Ok(last) => last,
            Err(why) => {
                // Served here only for a while: unsubscribed, and what waited goes out.
                write!(conn.out, "UNSUB {sid}\r\n")?;
                if let Some(f) = follows.get_mut(t) {
                    f.sid = None;
                }
                refuse(shared, conn, t, &why);
                shared.abandon_start(t);
                continue;
            }
        };
        if followed {
            // Followed before (a reconnection): what the stream holds past this node's
            // last is fetched, and delivered before what is live.
            recover(shared, conn, t, last, pending)?;
        }
        // The first time, numbers before now are not this node's subscribers' loss.
        shared.started(t, last, !followed);
        bump(&shared.counters.subscriptions);
        if let Some(f) = follows.get_mut(t) {
            f.sid = Some(sid);
            f.followed = true;
        }
        // The topics started earlier in a long batch are not kept waiting for it.
        shared.release_held(Instant::now());
    }
}

/// [`subscribe`] for each of `topics`; the new subscriptions join `started` (their streams
/// are asked for next).
fn subscribe_all(
    shared: &Shared,
    conn: &mut Conn,
    follows: &mut HashMap<TopicName, Follow>,
    topics: Vec<TopicName>,
    started: &mut std::collections::VecDeque<(TopicName, u64, bool)>,
    pending: &Pending,
) -> io::Result<()> {
    for t in topics {
        if let Some((sid, followed)) = subscribe(shared, conn, follows, &t, pending)? {
            started.push_back((t, sid, followed));
        }
    }
    conn.out.flush()
}

/// Subscribes to `t` if the node wants it and is not subscribed (returns the new
/// subscription's id and whether the topic was followed before; its deliveries wait
/// until its stream's state is known), or unsubscribes from it if the node no longer
/// wants it and the linger has passed.
fn subscribe(
    shared: &Shared,
    conn: &mut Conn,
    follows: &mut HashMap<TopicName, Follow>,
    t: &TopicName,
    pending: &Pending,
) -> io::Result<Option<(u64, bool)>> {
    let Some(f) = follows.get_mut(t) else {
        return Ok(None);
    };
    let lingering = f.linger_until.is_some_and(|u| u > Instant::now());
    if f.wanted || lingering {
        if f.sid.is_some() || conn.refused.contains_key(t.as_str()) {
            // Subscribed, or refused a while ago (asked again at the retry).
            return Ok(None);
        }
        // Subscribed first: the stream's state answered after it covers everything the
        // subscription does not.
        let sid = conn.next_sid;
        conn.next_sid += 1;
        // Taken now, so that the topic is not subscribed twice in one batch.
        f.sid = Some(sid);
        shared.begin(t);
        let prefix = &shared.config.prefix;
        write!(conn.out, "SUB {}{} {sid}\r\n", seq_root(prefix), t.as_str())?;
        return Ok(Some((sid, f.followed)));
    } else if let Some(f) = follows.remove(t) {
        if let Some(sid) = f.sid {
            write!(conn.out, "UNSUB {sid}\r\n")?;
            // A message to this node's own inbox comes back once the broker has taken
            // the UNSUB: only then is the topic counted as unsubscribed.
            let own = format!("{}{}", conn.inbox, conn.next_request);
            request(conn, &own, b"", pending)?;
            shared
                .counters
                .subscriptions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
    Ok(None)
}

/// After a reconnection, fetches from the topic's stream what this node missed, up to
/// the stream's last number `last` at subscription (what the stream no longer holds is
/// announced as a gap by the next delivery).
fn recover(
    shared: &Shared,
    conn: &mut Conn,
    t: &TopicName,
    last: u64,
    pending: &Pending,
) -> io::Result<()> {
    let Some(fanout) = shared.fanout.get() else {
        return Ok(());
    };
    let have = fanout.last_seq(t.as_str());
    let offset = shared.local_seq(t, 0);
    let subject = subject(&shared.config.prefix, t.as_str());
    let name = stream_name(&subject);
    let from =
        (have.saturating_sub(offset) + 1).max(last.saturating_sub(shared.config.history) + 1);
    for seq in from..=last {
        let body = serde_json::json!({ "seq": seq }).to_string();
        let api = format!("$JS.API.STREAM.MSG.GET.{name}");
        let Some(answer) = request(conn, &api, body.as_bytes(), pending)? else {
            break;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&answer) else {
            break;
        };
        let Some(data) = v
            .pointer("/message/data")
            .and_then(serde_json::Value::as_str)
        else {
            continue; // deleted or no longer held: the next delivery announces the gap
        };
        let Ok(bytes) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data)
        else {
            continue;
        };
        shared.receive(t, &bytes, Some(seq));
    }
    Ok(())
}

/// Sends a JetStream API request and waits for its answer (`None`: none in time).
fn request(
    conn: &mut Conn,
    subject: &str,
    body: &[u8],
    pending: &Pending,
) -> io::Result<Option<Vec<u8>>> {
    let n = conn.next_request;
    conn.next_request += 1;
    let (tx, rx) = crossbeam_channel::bounded(1);
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(n, tx);
    write!(
        conn.out,
        "PUB {subject} {}{n} {}\r\n",
        conn.inbox,
        body.len()
    )?;
    conn.out.write_all(body)?;
    conn.out.write_all(b"\r\n")?;
    conn.out.flush()?;
    let answer = rx.recv_timeout(IO_TIMEOUT).ok();
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&n);
    Ok(answer)
}

/// Notes that the broker would not number topic `t`: counted, logged (at most every
/// [`STREAM_RETRY`]), and not asked for again before then.
fn refuse(shared: &Shared, conn: &mut Conn, t: &TopicName, why: &str) {
    let now = Instant::now();
    bump(&shared.counters.streams_refused);
    conn.refused.insert(t.clone(), now + STREAM_RETRY);
    conn.refusals_unlogged += 1;
    if conn
        .refusals_logged
        .is_none_or(|at| now.duration_since(at) >= STREAM_RETRY)
    {
        tracing::warn!(
            "cluster: {why}; the topic is served on this node only, asked again in {}s \
             ({} refusal(s) since the last warning)",
            STREAM_RETRY.as_secs(),
            conn.refusals_unlogged
        );
        conn.refusals_logged = Some(now);
        conn.refusals_unlogged = 0;
    }
}

/// The topics whose refusal has passed: forgotten, and those still followed returned (to
/// be subscribed again).
fn refusals_due(conn: &mut Conn, follows: &HashMap<TopicName, Follow>) -> Vec<TopicName> {
    let now = Instant::now();
    let mut due = Vec::new();
    conn.refused.retain(|t, until| {
        let keep = *until > now;
        if !keep && follows.get(t.as_str()).is_some_and(|f| f.wanted) {
            due.push(t.clone());
        }
        keep
    });
    due
}

/// Makes sure the topic's stream exists (once per connection); returns its last number,
/// or (inside) why the broker will not number the topic: JetStream refused the stream or
/// did not answer. The outer error is the connection's.
fn ensure_stream(
    shared: &Shared,
    conn: &mut Conn,
    t: &TopicName,
    pending: &Pending,
) -> io::Result<Result<u64, String>> {
    let prefix = &shared.config.prefix;
    let subject = subject(prefix, t.as_str());
    let name = stream_name(&subject);
    let config = serde_json::json!({
        "name": name,
        "subjects": [subject],
        "storage": "file",
        "max_msgs": shared.config.history,
        "discard": "old",
        "num_replicas": 1,
        "republish": { "src": subject, "dest": format!("{}{}", seq_root(prefix), t.as_str()) },
    });
    let create = format!("$JS.API.STREAM.CREATE.{name}");
    let mut answer = request(conn, &create, config.to_string().as_bytes(), pending)?;
    let parsed = |a: &Option<Vec<u8>>| -> Option<serde_json::Value> {
        a.as_deref().and_then(|a| serde_json::from_slice(a).ok())
    };
    let mut v = parsed(&answer);
    if v.as_ref().is_none_or(|v| v.get("error").is_some()) {
        // It exists with another configuration (another node's history), or the create
        // was not answered: ask for its state.
        if let Some(e) = v.as_ref().and_then(|v| v.get("error")) {
            tracing::debug!("cluster: stream {name}: {e}");
        }
        answer = request(conn, &format!("$JS.API.STREAM.INFO.{name}"), b"", pending)?;
        v = parsed(&answer);
    }
    let last = v
        .as_ref()
        .and_then(|v| v.pointer("/state/last_seq"))
        .and_then(serde_json::Value::as_u64);
    Ok(match last {
        Some(last) => {
            if conn.streams.len() >= MAX_KNOWN_STREAMS {
                // Forgotten all at once: each is asked for again at its next use.
                conn.streams.clear();
            }
            conn.streams.insert(t.clone());
            Ok(last)
        }
        None => Err(format!(
            "JetStream did not create stream {name} for topic {t}: {}",
            answer.map_or("no answer".into(), |a| String::from_utf8_lossy(&a)
                .into_owned())
        )),
    })
}

/// Sends a local publication to its topic's subject (its stream made first if need be).
fn publish(shared: &Shared, conn: &mut Conn, o: Outbound, pending: &Pending) -> io::Result<()> {
    if conn.unacked.any_gone.swap(false, Ordering::Acquire) {
        let gone = std::mem::take(
            &mut *conn
                .unacked
                .gone
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in gone {
            conn.streams.remove(t.as_str());
        }
    }
    if !conn.streams.contains(o.topic.as_str()) {
        // The broker is there but will not number this topic (now, or a while ago and
        // not asked again yet): it is delivered here only.
        let refused = match conn.refused.get(o.topic.as_str()) {
            Some(_) => true,
            None => match ensure_stream(shared, conn, &o.topic, pending)? {
                Ok(_) => false,
                Err(why) => {
                    refuse(shared, conn, &o.topic, &why);
                    true
                }
            },
        };
        if refused {
            shared.deliver_here(&o);
            return Ok(());
        }
    }
    let subject = subject(&shared.config.prefix, o.topic.as_str());
    let n = conn.next_ack;
    conn.next_ack += 1;
    // Encoded first, kept for its ack, then written: the ack cannot come before the
    // publication is kept, and the map is not held across I/O.
    conn.scratch.clear();
    write!(
        conn.scratch,
        "PUB {subject} {}ack{n} {}\r\n",
        conn.inbox,
        o.body.len()
    )?;
    conn.scratch.extend_from_slice(&o.body);
    conn.scratch.extend_from_slice(b"\r\n");
    {
        let mut unacked = conn
            .unacked
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (kept, bytes) = &mut *unacked;
        if kept.len() < MAX_UNACKED && *bytes + o.body.len() <= MAX_UNACKED_BYTES {
            *bytes += o.body.len();
            kept.insert(n, o);
        }
    }
    conn.out.write_all(&conn.scratch)?;
    bump(&shared.counters.sent);
    Ok(())
}

/// Largest message a NATS server sends (its `max_payload` cannot be set higher): a
/// size above it in a `MSG` line is a broken stream, not a buffer to allocate.
const MAX_MESSAGE: usize = 64 << 20;
/// Longest protocol line taken (`MSG` lines hold a subject and sizes; `INFO` a few KiB of
/// JSON): a longer one is a broken stream, not a buffer to grow without end.
const MAX_LINE: u64 = 64 << 10;

/// Reads the connection until it ends: numbered messages are delivered, API answers
/// routed to the writer, pings answered through it.
fn read_loop(
    shared: &Shared,
    stream: TcpStream,
    pending: &Pending,
    unacked: &Unacked,
) -> io::Error {
    let mut refusals = RefusalLog::default();
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let inbox = inbox_root(&shared.config.node_id);
    let seqs = seq_root(&shared.config.prefix);
    let claims = identity::subject(&shared.config.node_id);
    let mut line = Vec::new();
    let mut body = Vec::new();
    loop {
        line.clear();
        match Read::take(&mut r, MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => return io::ErrorKind::UnexpectedEof.into(),
            Ok(n) if line.last() != Some(&b'\n') => {
                return if n as u64 >= MAX_LINE {
                    io::Error::other(format!("protocol line over {MAX_LINE} bytes"))
                } else {
                    io::ErrorKind::UnexpectedEof.into()
                };
            }
            Ok(_) => {}
            Err(e) => return e,
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            return io::Error::other("protocol line not UTF-8");
        };
        let mut words = text.split_ascii_whitespace();
        let op = words.next().unwrap_or("");
        let (subject, sizes): (&str, Vec<&str>) = match op {
            "MSG" | "HMSG" => {
                let w: Vec<&str> = words.collect();
                match w.first() {
                    Some(s) => (s, w[1..].to_vec()),
                    None => return io::Error::other(format!("bad {op} line")),
                }
            }
            "PING" => {
                let _ = shared.control_tx.send(Control::Pong);
                continue;
            }
            "-ERR" => {
                tracing::warn!("cluster: broker error: {}", text.trim_end());
                continue;
            }
            _ => continue, // PONG, +OK, INFO
        };
        // MSG <subject> <sid> [reply] <#bytes>; HMSG <subject> <sid> [reply] <#hdr> <#total>
        let (hdr_len, total) = if op == "HMSG" {
            let n = sizes.len();
            match (sizes.get(n.wrapping_sub(2)), sizes.last()) {
                (Some(h), Some(t)) if n >= 3 => (h.parse().ok(), t.parse().ok()),
                _ => (None, None),
            }
        } else {
            (Some(0usize), sizes.last().and_then(|t| t.parse().ok()))
        };
        let (Some(hdr_len), Some(total)) = (hdr_len, total) else {
            return io::Error::other(format!("bad {op} line"));
        };
        let total: usize = total;
        if hdr_len > total {
            return io::Error::other(format!("bad {op} line"));
        }
        if total > MAX_MESSAGE {
            return io::Error::other(format!(
                "{op} of {total} bytes, over the {} MiB a NATS server can send",
                MAX_MESSAGE >> 20
            ));
        }
        body.resize(total + 2, 0);
        if let Err(e) = r.read_exact(&mut body) {
            return e;
        }
        let (headers, payload) = body[..total].split_at(hdr_len);
        if subject == claims {
            shared.hear_claim(payload);
        } else if let Some(t) = subject.strip_prefix(seqs.as_str()) {
            let seq = header(headers, "Nats-Sequence").and_then(|v| v.parse().ok());
            shared.receive(&TopicName::new(t), payload, Some(seq.unwrap_or(0)));
        } else if let Some(rest) = subject.strip_prefix(inbox.as_str()) {
            if let Some(n) = rest.strip_prefix("ack").and_then(|n| n.parse::<u64>().ok()) {
                // An error answer, or no stream took it (`NATS/1.0 503`: no responders).
                let refused = payload.windows(7).any(|w| w == b"\"error\"")
                    || headers.starts_with(b"NATS/1.0 503");
                let o = {
                    let mut kept = unacked.kept.lock().unwrap_or_else(PoisonError::into_inner);
                    let (kept, bytes) = &mut *kept;
                    let o = kept.remove(&n);
                    *bytes -= o.as_ref().map_or(0, |o| o.body.len());
                    o
                };
                match (refused, o) {
                    (false, _) => bump(&shared.counters.acked),
                    (true, Some(o)) => {
                        if headers.starts_with(b"NATS/1.0 503") {
                            unacked
                                .gone
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(o.topic.clone());
                            unacked.any_gone.store(true, Ordering::Release);
                        }
                        let why = if payload.is_empty() {
                            String::from_utf8_lossy(headers).trim_end().to_owned()
                        } else {
                            String::from_utf8_lossy(payload).into_owned()
                        };
                        shared.refused(&o, &why, &mut refusals);
                    }
                    (true, None) => bump(&shared.counters.refused),
                }
            } else if let Ok(n) = rest.parse::<u64>() {
                let tx = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&n);
                if let Some(tx) = tx {
                    let _ = tx.try_send(payload.to_vec());
                }
            }
        }
    }
}

/// A header's value in a `NATS/1.0` header block.
fn header<'a>(block: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(block).ok()?;
    text.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Link for Conn {
    fn serve(
        &mut self,
        shared: &Shared,
        out_rx: &Receiver<Outbound>,
        control: &Receiver<Control>,
        follows: &mut HashMap<TopicName, Follow>,
    ) -> io::Result<()> {
        let pending = Arc::clone(&self.pending);
        serve(shared, self, out_rx, control, follows, &pending)
    }

    fn close(&mut self) {
        let _ = self.out.get_ref().shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(stream_name("ringcast.a"), "RC_72696e67636173742e61");
        assert_eq!(seq_root("ringcast."), "_rcseq.ringcast.");
        let block = b"NATS/1.0\r\nNats-Stream: X\r\nNats-Sequence: 42\r\n\r\n";
        assert_eq!(header(block, "nats-sequence"), Some("42"));
        assert_eq!(header(block, "Nats-Subject"), None);
    }
}
