//! The Redis bridge: RESP over two TCP connections (commands, and pub/sub), spoken by the
//! writer thread (this module's `run`) and a reader per connection.
//!
//! **Numbering.** One Lua script, loaded once per connection and run with `EVALSHA`,
//! increments the topic's counter (`{prefix}seq:{T}`) and publishes the message on
//! `{prefix}T` with the number written into its header, atomically: Redis runs a script
//! alone, so the counter's order is the channel's order, and every node receives the
//! same number with each message. A message published on the channel by another program
//! (`PUBLISH ringcast.T …`) carries no number: each node gives it its own next one (see
//! the README: its numbers then shift on that node).
//!
//! **Interest.** `SUBSCRIBE {prefix}T` while the node has subscribers to `T`, then `GET`
//! of the counter (after the subscription is confirmed): the node starts after it.
//! `UNSUBSCRIBE` after the linger. Pub/sub keeps no history: a node that was disconnected
//! announces what it missed as a gap (counted as missed), it cannot recover it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, select};

use super::stats::bump;
use super::supervise::{Follow, IO_TIMEOUT, Link, note_interest, spawn_reader, supervise};
use super::{Broker, Control, Credentials, Outbound, RefusalLog, Shared, identity};
use crate::fanout::TopicName;

/// Increments the counter `KEYS[1]`, writes the number into the header of `ARGV[2]`
/// (bytes 5 to 12, big-endian) and publishes it on `ARGV[1]`; returns the number.
const SCRIPT: &str = "local n = redis.call('INCR', KEYS[1]) \
local b = ARGV[2] \
local s = '' \
local v = n \
for i = 1, 8 do s = string.char(v % 256) .. s; v = math.floor(v / 256) end \
redis.call('PUBLISH', ARGV[1], string.sub(b, 1, 4) .. s .. string.sub(b, 13)) \
return n";

/// A RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Self>),
}

/// Longest RESP line (a type byte with a length, or a status) a server sends; a longer
/// one is a broken stream, not a buffer to grow without end.
const MAX_LINE: u64 = 64 << 10;
/// Deepest nesting of arrays taken (replies and pub/sub messages nest at most two deep):
/// a deeper one is a broken stream, not a recursion to overflow the stack with.
const MAX_DEPTH: usize = 8;

/// Reads one RESP value.
fn read_value(r: &mut impl BufRead) -> io::Result<Value> {
    read_nested(r, 0)
}

fn read_nested(r: &mut impl BufRead, depth: usize) -> io::Result<Value> {
    let bad = || io::Error::other("bad RESP");
    if depth > MAX_DEPTH {
        return Err(bad());
    }
    let mut line = Vec::new();
    if Read::take(&mut *r, MAX_LINE).read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() as u64 >= MAX_LINE {
            bad()
        } else {
            io::ErrorKind::UnexpectedEof.into()
        });
    }
    let text = std::str::from_utf8(line.get(1..line.len().saturating_sub(2)).ok_or_else(bad)?)
        .map_err(|_| bad())?;
    let n = || text.parse::<i64>().map_err(|_| bad());
    Ok(match line.first() {
        Some(b'+') => Value::Simple(text.to_owned()),
        Some(b'-') => Value::Error(text.to_owned()),
        Some(b':') => Value::Int(n()?),
        Some(b'$') => match n()? {
            -1 => Value::Bulk(None),
            len if (0..=512 << 20).contains(&len) => {
                let mut b = vec![0; len as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(len as usize);
                Value::Bulk(Some(b))
            }
            _ => return Err(bad()),
        },
        Some(b'*') => match n()? {
            -1 => Value::Array(Vec::new()),
            len if (0..=1 << 20).contains(&len) => {
                let mut v = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    v.push(read_nested(r, depth + 1)?);
                }
                Value::Array(v)
            }
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    })
}

/// Writes a command as an array of bulk strings.
fn command(out: &mut impl Write, args: &[&[u8]]) -> io::Result<()> {
    write!(out, "*{}\r\n", args.len())?;
    for a in args {
        write!(out, "${}\r\n", a.len())?;
        out.write_all(a)?;
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// What the command connection's next reply answers.
enum Expect {
    /// A publication's script: the number, or an error (then the publication, kept until
    /// the answer, is delivered on this node).
    Publish(Outbound),
    /// A request waiting for its answer.
    Reply(Sender<Value>),
}

type Expected = Arc<Mutex<VecDeque<Expect>>>;
/// Subscription confirmations by channel, waited for by the writer.
type Confirms = Arc<Mutex<HashMap<Vec<u8>, Sender<()>>>>;

struct Conn {
    cmd: BufWriter<TcpStream>,
    sub: BufWriter<TcpStream>,
    sha: Vec<u8>,
    expected: Expected,
    confirms: Confirms,
    number: u64,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// A publication's command, encoded (reused).
    scratch: Vec<u8>,
}

impl Conn {
    /// Sends a command on the command connection and waits for its reply.
    fn request(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        lock(&self.expected).push_back(Expect::Reply(tx));
        command(&mut self.cmd, args)?;
        self.cmd.flush()?;
        rx.recv_timeout(IO_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer from Redis"))
    }

    /// `SUBSCRIBE` or `UNSUBSCRIBE` `channel`, waiting for the confirmation.
    fn pubsub(&mut self, verb: &str, channel: &[u8]) -> io::Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        lock(&self.confirms).insert(channel.to_vec(), tx);
        command(&mut self.sub, &[verb.as_bytes(), channel])?;
        self.sub.flush()?;
        rx.recv_timeout(IO_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "Redis did not confirm"))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn channel(prefix: &str, topic: &str) -> String {
    format!("{prefix}{topic}")
}

fn counter(prefix: &str, topic: &str) -> String {
    format!("{prefix}seq:{topic}")
}

/// The writer thread: as [`super::nats::run`], over Redis.
pub(crate) fn run(shared: &Arc<Shared>, out_rx: &Receiver<Outbound>, control: &Receiver<Control>) {
    let Broker::Redis {
        host,
        port,
        db,
        auth,
    } = shared.config.broker.clone()
    else {
        return;
    };
    let at = Address {
        host,
        port,
        db,
        auth,
    };
    // Every attempt gets its own number, so that a lost connection's late reports are
    // told from the current one's.
    let mut attempts = 0u64;
    supervise(shared, out_rx, control, || {
        attempts += 1;
        connect(shared, &at, attempts)
    });
}

/// Where the broker is and how to log in.
struct Address {
    host: String,
    port: u16,
    db: u32,
    auth: Option<Credentials>,
}

/// Opens one connection: logged in (`AUTH`), answering (`PING`), on its database
/// (`SELECT`); the first refusal is the error (`WRONGPASS …`, `NOAUTH …`).
fn open(at: &Address) -> io::Result<TcpStream> {
    let (host, port, db) = (at.host.as_str(), at.port, at.db);
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = &s;
    let mut sent = 0;
    match &at.auth {
        Some(Credentials::Password { user, password }) if user.is_empty() => {
            command(&mut w, &[b"AUTH", password.as_bytes()])?;
            sent += 1;
        }
        Some(Credentials::Password { user, password }) => {
            command(&mut w, &[b"AUTH", user.as_bytes(), password.as_bytes()])?;
            sent += 1;
        }
        // Refused when the URL is parsed.
        Some(Credentials::Token(_)) | None => {}
    }
    command(&mut w, &[b"PING"])?;
    sent += 1;
    if db != 0 {
        command(&mut w, &[b"SELECT", db.to_string().as_bytes()])?;
        sent += 1;
    }
    let mut refused = None;
    for _ in 0..sent {
        if let Value::Error(e) = read_value(&mut r)? {
            refused.get_or_insert(e);
        }
    }
    if let Some(e) = refused {
        return Err(io::Error::other(format!(
            "Redis refused the connection: {e}"
        )));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

fn connect(shared: &Arc<Shared>, at: &Address, number: u64) -> io::Result<Conn> {
    let cmd = open(at)?;
    let sub = open(at)?;
    // The script, loaded (SCRIPT LOAD) on this connection before any publication.
    let mut r = BufReader::new(cmd.try_clone()?);
    command(&mut &cmd, &[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()])?;
    cmd.set_read_timeout(Some(IO_TIMEOUT))?;
    let sha = match read_value(&mut r)? {
        Value::Bulk(Some(sha)) => sha,
        other => return Err(io::Error::other(format!("SCRIPT LOAD answered {other:?}"))),
    };
    cmd.set_read_timeout(None)?;
    let expected: Expected = Arc::default();
    let confirms: Confirms = Arc::default();
    let mut readers = Vec::new();
    let e = Arc::clone(&expected);
    readers.push(spawn_reader(
        "ringcast-cluster-cmd",
        Arc::clone(shared),
        number,
        move |s| read_replies(s, r, &e),
    )?);
    let c = Arc::clone(&confirms);
    let sr = BufReader::with_capacity(256 * 1024, sub.try_clone()?);
    readers.push(spawn_reader(
        "ringcast-cluster-rx",
        Arc::clone(shared),
        number,
        move |s| read_messages(s, sr, &c),
    )?);
    let mut conn = Conn {
        cmd: BufWriter::with_capacity(64 * 1024, cmd),
        sub: BufWriter::new(sub),
        sha,
        expected,
        confirms,
        number,
        readers,
        scratch: Vec::new(),
    };
    // This node's claim on its id, and what others with the same id announce.
    conn.pubsub(
        "SUBSCRIBE",
        identity::subject(&shared.config.node_id).as_bytes(),
    )?;
    announce(shared, &mut conn)?;
    Ok(conn)
}

/// Announces this process's claim on its node id ([`identity`]).
fn announce(shared: &Shared, conn: &mut Conn) -> io::Result<()> {
    let channel = identity::subject(&shared.config.node_id);
    let hello = shared.claim.announcement();
    conn.request(&[b"PUBLISH", channel.as_bytes(), hello.as_bytes()])
        .map(drop)
}

fn serve(
    shared: &Shared,
    conn: &mut Conn,
    out_rx: &Receiver<Outbound>,
    control: &Receiver<Control>,
    follows: &mut HashMap<TopicName, Follow>,
) -> io::Result<()> {
    let topics: Vec<TopicName> = follows.keys().cloned().collect();
    for t in topics {
        sync_follow(shared, conn, follows, &t)?;
    }
    let tick = super::REORDER_WAIT / 2;
    loop {
        select! {
            recv(out_rx) -> o => match o {
                Ok(o) => publish(shared, conn, o)?,
                Err(_) => return Ok(()),
            },
            recv(control) -> c => match c {
                Ok(Control::Stop) | Err(_) => return Ok(()),
                Ok(Control::Lost(n, why)) if n == conn.number => {
                    return Err(io::Error::other(why));
                }
                Ok(Control::Lost(..) | Control::Pong) => {}
                Ok(Control::Announce) => announce(shared, conn)?,
                Ok(Control::Interest) => {
                    for t in note_interest(follows, shared) {
                        sync_follow(shared, conn, follows, &t)?;
                    }
                }
            },
            default(tick) => {}
        }
        for _ in 0..4096 {
            match out_rx.try_recv() {
                Ok(o) => publish(shared, conn, o)?,
                Err(_) => break,
            }
        }
        let now = Instant::now();
        shared.release_held(now);
        shared.forget_unnumbered(now);
        let expired: Vec<TopicName> = follows
            .iter()
            .filter(|(_, f)| !f.wanted && f.linger_until.is_some_and(|u| u <= now))
            .map(|(t, _)| t.clone())
            .collect();
        for t in expired {
            sync_follow(shared, conn, follows, &t)?;
        }
        conn.cmd.flush()?;
    }
}

fn sync_follow(
    shared: &Shared,
    conn: &mut Conn,
    follows: &mut HashMap<TopicName, Follow>,
    t: &TopicName,
) -> io::Result<()> {
    let Some(f) = follows.get(t) else {
        return Ok(());
    };
    let prefix = &shared.config.prefix;
    let ch = channel(prefix, t.as_str());
    let lingering = f.linger_until.is_some_and(|u| u > Instant::now());
    if f.wanted || lingering {
        if f.sid.is_some() {
            return Ok(());
        }
        let followed = f.followed;
        shared.begin(t);
        conn.pubsub("SUBSCRIBE", ch.as_bytes())?;
        let key = counter(prefix, t.as_str());
        let last = match conn.request(&[b"GET", key.as_bytes()])? {
            Value::Bulk(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        // A subscription again (after a reconnection): pub/sub kept nothing, the next
        // message announces the gap.
        shared.started(t, last, !followed);
        bump(&shared.counters.subscriptions);
        if let Some(f) = follows.get_mut(t) {
            f.sid = Some(0);
            f.followed = true;
        }
    } else if let Some(f) = follows.remove(t) {
        if f.sid.is_some() {
            conn.pubsub("UNSUBSCRIBE", ch.as_bytes())?;
            shared
                .counters
                .subscriptions
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn publish(shared: &Shared, conn: &mut Conn, o: Outbound) -> io::Result<()> {
    let prefix = &shared.config.prefix;
    let key = counter(prefix, o.topic.as_str());
    let ch = channel(prefix, o.topic.as_str());
    // Encoded first, queued for its answer, then written: the publication moves into the
    // queue before its answer can come, and the queue is not held across I/O.
    conn.scratch.clear();
    command(
        &mut conn.scratch,
        &[
            b"EVALSHA",
            &conn.sha,
            b"1",
            key.as_bytes(),
            ch.as_bytes(),
            &o.body,
        ],
    )?;
    lock(&conn.expected).push_back(Expect::Publish(o));
    conn.cmd.write_all(&conn.scratch)?;
    bump(&shared.counters.sent);
    Ok(())
}

/// Reads the command connection's replies, in order.
fn read_replies(shared: &Shared, mut r: BufReader<TcpStream>, expected: &Expected) -> io::Error {
    let mut log = RefusalLog::default();
    loop {
        let v = match read_value(&mut r) {
            Ok(v) => v,
            Err(e) => return e,
        };
        match lock(expected).pop_front() {
            Some(Expect::Publish(o)) => match v {
                Value::Int(_) => bump(&shared.counters.acked),
                // E.g. `OOM command not allowed when used memory > 'maxmemory'`.
                other => shared.refused(&o, &format!("{other:?}"), &mut log),
            },
            Some(Expect::Reply(tx)) => {
                let _ = tx.try_send(v);
            }
            None => return io::Error::other("a Redis reply nobody asked for"),
        }
    }
}

/// Reads the pub/sub connection: messages are delivered, confirmations handed over.
fn read_messages(shared: &Shared, mut r: BufReader<TcpStream>, confirms: &Confirms) -> io::Error {
    let prefix = shared.config.prefix.as_bytes();
    let claims = identity::subject(&shared.config.node_id);
    loop {
        let v = match read_value(&mut r) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let Value::Array(parts) = v else {
            continue;
        };
        match parts.as_slice() {
            [
                Value::Bulk(Some(kind)),
                Value::Bulk(Some(ch)),
                Value::Bulk(Some(body)),
            ] if kind == b"message" => {
                if ch == claims.as_bytes() {
                    shared.hear_claim(body);
                    continue;
                }
                let Some(topic) = ch.strip_prefix(prefix) else {
                    continue;
                };
                let Ok(topic) = std::str::from_utf8(topic) else {
                    continue;
                };
                shared.receive(&TopicName::new(topic), body, None);
            }
            [Value::Bulk(Some(kind)), Value::Bulk(Some(ch)), _]
                if kind == b"subscribe" || kind == b"unsubscribe" =>
            {
                if let Some(tx) = lock(confirms).remove(ch) {
                    let _ = tx.try_send(());
                }
            }
            _ => {}
        }
    }
}

impl Link for Conn {
    fn serve(
        &mut self,
        shared: &Shared,
        out_rx: &Receiver<Outbound>,
        control: &Receiver<Control>,
        follows: &mut HashMap<TopicName, Follow>,
    ) -> io::Result<()> {
        serve(shared, self, out_rx, control, follows)
    }

    fn close(&mut self) {
        let _ = self.cmd.get_ref().shutdown(Shutdown::Both);
        let _ = self.sub.get_ref().shutdown(Shutdown::Both);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_values() {
        let mut r = &b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n"[..];
        assert_eq!(read_value(&mut r).unwrap(), Value::Simple("OK".into()));
        assert_eq!(read_value(&mut r).unwrap(), Value::Error("ERR x".into()));
        assert_eq!(read_value(&mut r).unwrap(), Value::Int(42));
        assert_eq!(
            read_value(&mut r).unwrap(),
            Value::Bulk(Some(b"abc".to_vec()))
        );
        assert_eq!(read_value(&mut r).unwrap(), Value::Bulk(None));
        assert_eq!(
            read_value(&mut r).unwrap(),
            Value::Array(vec![Value::Bulk(Some(b"a".to_vec())), Value::Int(1)])
        );
        assert!(read_value(&mut r).is_err());
        let mut out = Vec::new();
        command(&mut out, &[b"GET", b"k"]).unwrap();
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut bad = &b"?\r\n"[..];
        assert!(read_value(&mut bad).is_err());
    }

    #[test]
    fn a_broken_stream_is_an_error_not_a_crash() {
        // Arrays nested as deep as taken, and one deeper: refused, not recursed into
        // until the stack overflows (a million levels would).
        let nested = |levels: usize| {
            let mut s = "*1\r\n".repeat(levels).into_bytes();
            s.extend_from_slice(b":1\r\n");
            s
        };
        assert!(read_value(&mut &nested(MAX_DEPTH)[..]).is_ok());
        assert!(read_value(&mut &nested(MAX_DEPTH + 1)[..]).is_err());
        assert!(read_value(&mut &nested(1_000_000)[..]).is_err());
        // A line without end: refused at the limit, not buffered whole.
        let mut endless = Read::take(io::repeat(b'+'), 1 << 30);
        let mut r = BufReader::new(&mut endless);
        assert!(read_value(&mut r).is_err());
        // Lengths over what Redis sends.
        for s in [&b"$536870913\r\n"[..], b"*1048577\r\n", b"$-2\r\n"] {
            assert!(read_value(&mut &s[..]).is_err());
        }
    }
}
