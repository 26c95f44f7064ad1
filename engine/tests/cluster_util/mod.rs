//! Shared helpers of the cluster tests: a real broker process (`nats-server -js`) on a free
//! port of 127.0.0.1 in a temporary directory, killed (by its pid) when dropped and
//! restartable on the same port and store; ringcast nodes (in-process engines, each with
//! its own reactors and its own bridge: they meet only through the broker); a foreign
//! publisher speaking the broker's protocol directly; `ringcast.v1` subscribers and their
//! envelopes.
//!
//! A missing broker binary skips the test with a printed reason, except under `CI=true`,
//! where it fails it (`.ci/run` installs the packages).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::EngineHandle;
use ringcast::server::Backend;
use ringcast::server::cluster::{ClusterConfig, ClusterStats};
use serde_json::Value;
use tungstenite::Message;

use crate::fanout_util::{TIMEOUT, Ws, builder, connect, next_data, start, try_connect_with};

pub(crate) mod port;

/// The request header of a `ringcast.v1` subscriber.
pub(crate) const V1: &[(&str, &str)] = &[("Sec-WebSocket-Protocol", "ringcast.v1")];

/// A `ringcast.v1` subscriber on `path` (`/sub/TOPICS[?since=N]`) of `node`.
pub(crate) fn v1(node: &EngineHandle, path: &str) -> Ws {
    try_connect_with(addr(node), path, V1).unwrap_or_else(|(s, b)| panic!("{path}: {s} {b}"))
}

/// A `ringcast.v1` frame: an envelope (topic, seq, data as text or binary bytes), or a
/// protocol message (`gap`, `error`, …).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Got {
    Msg(String, u64, Vec<u8>),
    Op(Value),
}

/// The next envelope or protocol message, heartbeats and the `epoch` messages that start
/// subscriptions skipped.
pub(crate) fn next(ws: &mut Ws) -> Got {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "only heartbeats for too long");
        let got = next_any(ws);
        match &got {
            Got::Op(v) if v["op"] == "heartbeat" || v["op"] == "epoch" => {}
            _ => return got,
        }
    }
}

/// The next frame.
pub(crate) fn next_any(ws: &mut Ws) -> Got {
    match next_data(ws) {
        Message::Text(t) => {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON envelope");
            if v.get("op").is_some() {
                return Got::Op(v);
            }
            let data = match &v["data"] {
                Value::String(s) => s.clone().into_bytes(),
                d => d.to_string().into_bytes(),
            };
            Got::Msg(
                v["topic"].as_str().unwrap().into(),
                v["seq"].as_u64().unwrap(),
                data,
            )
        }
        Message::Binary(b) => {
            assert_eq!(b[0], 1, "binary envelope");
            let n = usize::from(b[1]);
            let topic = String::from_utf8(b[2..2 + n].to_vec()).unwrap();
            let seq = u64::from_be_bytes(b[2 + n..10 + n].try_into().unwrap());
            Got::Msg(topic, seq, b[10 + n..].to_vec())
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The next envelope (topic, seq, data), heartbeats skipped; panics on a protocol message.
pub(crate) fn msg(ws: &mut Ws) -> (String, u64, Vec<u8>) {
    match next(ws) {
        Got::Msg(t, s, d) => (t, s, d),
        Got::Op(v) => panic!("expected a message, got {v}"),
    }
}

/// Waits until every node is connected and subscribed on the broker to `n` topics.
pub(crate) fn wait_subscribed(nodes: &[&EngineHandle], n: u64) {
    for node in nodes {
        wait_cluster(node, "broker subscriptions", |s| {
            s.connected && s.subscriptions == n
        });
    }
}

/// Whether `binary` can run here; if not, skips (prints why past libtest's capture) or,
/// under `CI=true`, fails.
pub(crate) fn have(binary: &str, test: &str) -> bool {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {binary} is not installed, and CI=true (apt-get install nats-server redis-server)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {binary} is not installed (apt-get install nats-server redis-server)"
    );
    false
}

/// Sends `signal` (`STOP`, `CONT`) to the broker process `child` of this test, by pid;
/// after `STOP`, waits until every thread of it has stopped (a signal is delivered to
/// each thread as it next runs, not when `kill` returns).
fn signal(child: Option<&Child>, signal: &str) {
    let pid = child.expect("broker running").id().to_string();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
    if signal != "STOP" {
        return;
    }
    let all_stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|t| {
            // `pid (comm) STATE …`: the state follows the last ')'.
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                st.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
        })
    };
    crate::fanout_util::wait_for("the broker to stop", all_stopped);
}

/// Nothing arrives on `ws` for `quiet` (a broker that is paused cannot deliver; this
/// only checks that nothing comes from elsewhere meanwhile).
pub(crate) fn nothing_within(ws: &mut Ws, quiet: Duration) {
    ws.get_ref().set_read_timeout(Some(quiet)).unwrap();
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
    ws.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
}

/// A temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> Self {
        let mut p = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        p.push(format!("ringcast-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `nats-server -js` of this test.
pub(crate) struct Nats {
    pub(crate) port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// A configuration file to start with (account limits), instead of flags alone.
    config: Option<PathBuf>,
    /// More `nats-server` arguments.
    args: Vec<String>,
}

impl Nats {
    /// Starts a server on a free port; waits until it answers.
    pub(crate) fn start() -> Self {
        let mut n = Self::stopped();
        n.restart();
        n
    }

    /// Starts a server with more arguments (`["--user", "u", "--pass", "p"]`, say).
    pub(crate) fn start_with_args(args: &[&str]) -> Self {
        let mut n = Self::stopped();
        n.args = args.iter().map(|a| (*a).to_owned()).collect();
        n.restart();
        n
    }

    /// Starts a server whose (only) account may hold at most `max_streams` JetStream
    /// streams, as an operator limits a shared broker; waits until it answers.
    pub(crate) fn start_with_max_streams(max_streams: u32) -> Self {
        let mut n = Self::stopped();
        let file = n.dir.0.join("nats.conf");
        let store = n.dir.0.join("js");
        let text = format!(
            "jetstream {{ store_dir: {store:?} }}\n\
             accounts {{ A: {{ jetstream: {{ max_streams: {max_streams} }}, \
             users: [ {{ user: a, password: a }} ] }} }}\n\
             no_auth_user: a\n"
        );
        std::fs::write(&file, text).expect("nats config");
        n.config = Some(file);
        n.restart();
        n
    }

    /// A server on `port` that is not started yet (see [`restart`](Self::restart)).
    pub(crate) fn stopped() -> Self {
        Self {
            port: port::free_port(),
            dir: TempDir::new("nats"),
            child: None,
            config: None,
            args: Vec::new(),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and JetStream store; waits until it answers.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("nats-server");
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()]);
        match &self.config {
            Some(file) => cmd.arg("-c").arg(file),
            None => cmd.arg("-sd").arg(&self.dir.0),
        };
        cmd.args(&self.args);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut line = String::new();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL, by pid) and waits for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub(crate) fn pause(&self) {
        signal(self.child.as_ref(), "STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub(crate) fn resume(&self) {
        signal(self.child.as_ref(), "CONT");
    }

    /// A client connection as another program's: greeted, `CONNECT` sent.
    fn client(&self) -> (TcpStream, BufReader<TcpStream>) {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to nats");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut info = String::new();
        r.read_line(&mut info).unwrap();
        (&s).write_all(b"CONNECT {\"verbose\":false}\r\n").unwrap();
        (s, r)
    }

    /// Publishes `payload` on `subject` as another program would (no ringcast header).
    pub(crate) fn publish(&self, subject: &str, payload: &[u8]) {
        let (s, mut r) = self.client();
        let mut line = String::new();
        let mut w = &s;
        w.write_all(format!("PUB {subject} {}\r\n", payload.len()).as_bytes())
            .unwrap();
        w.write_all(payload).unwrap();
        w.write_all(b"\r\nPING\r\n").unwrap();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "nats closed");
            if line.starts_with("PONG") {
                return;
            }
            assert!(!line.starts_with("-ERR"), "{line}");
        }
    }
}

impl Nats {
    /// A request as another program would make it (a JetStream API call, say); returns
    /// the answer's payload.
    pub(crate) fn request(&self, subject: &str, payload: &[u8]) -> String {
        let (s, mut r) = self.client();
        let mut line = String::new();
        let mut w = &s;
        w.write_all(b"SUB _INBOX.test 1\r\n").unwrap();
        w.write_all(format!("PUB {subject} _INBOX.test {}\r\n", payload.len()).as_bytes())
            .unwrap();
        w.write_all(payload).unwrap();
        w.write_all(b"\r\n").unwrap();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "nats closed");
            if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest.split_whitespace().last().unwrap().parse().unwrap();
                let mut body = vec![0; len + 2];
                std::io::Read::read_exact(&mut r, &mut body).unwrap();
                return String::from_utf8_lossy(&body[..len]).into_owned();
            }
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A ringcast node of the cluster at `url`: broadcast handler, two reactors on `backend`,
/// node id `id`, a short linger.
pub(crate) fn node(backend: Backend, url: &str, id: &str) -> EngineHandle {
    let cluster = ClusterConfig::new(url)
        .and_then(|c| c.node_id(id))
        .expect("cluster config")
        .linger(Duration::from_millis(200));
    start(builder(backend).cluster(Some(cluster)))
}

/// The node's cluster counters.
pub(crate) fn cstats(node: &EngineHandle) -> ClusterStats {
    node.cluster_stats().expect("in a cluster")
}

/// Polls the node's cluster counters until `cond` holds; panics after [`TIMEOUT`] with
/// the last ones seen.
pub(crate) fn wait_cluster(
    node: &EngineHandle,
    what: &str,
    mut cond: impl FnMut(&ClusterStats) -> bool,
) -> ClusterStats {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = cstats(node);
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; cluster counters: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The address of a node.
pub(crate) fn addr(node: &EngineHandle) -> SocketAddr {
    node.local_addr()
}

/// A TCP relay between nodes and the broker that the test can cut (every connection
/// through it reset, new ones refused) and restore: one node loses the broker while the
/// others keep it.
pub(crate) struct Relay {
    pub(crate) port: u16,
    state: std::sync::Arc<std::sync::Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    cut: bool,
    conns: Vec<TcpStream>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` (a free port) to 127.0.0.1:`to`.
    pub(crate) fn start(to: u16) -> Self {
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<RelayState>> = Arc::default();
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if st.lock().unwrap().cut {
                    drop(client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                {
                    let mut s = st.lock().unwrap();
                    s.conns.push(client.try_clone().unwrap());
                    s.conns.push(upstream.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Self { port, state }
    }

    /// The relay's address as a NATS URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The relay's address as a Redis URL.
    pub(crate) fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Resets every relayed connection and refuses new ones until [`restore`](Self::restore).
    pub(crate) fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.cut = true;
        for c in s.conns.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays again.
    pub(crate) fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

/// A `redis-server` of this test (no persistence), killed by pid when dropped.
pub(crate) struct Redis {
    pub(crate) port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments (`--requirepass`, say).
    args: Vec<String>,
}

impl Redis {
    pub(crate) fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a server with more arguments (`["--requirepass", "pw"]`, say).
    pub(crate) fn start_with_args(args: &[&str]) -> Self {
        let mut r = Self {
            port: port::free_port(),
            dir: TempDir::new("redis"),
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        r.restart();
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port; waits until it answers PING.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir.0)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut line = String::new();
                // (With a password required, the refusal says it is up too.)
                if s.write_all(b"PING\r\n").is_ok()
                    && BufReader::new(s).read_line(&mut line).is_ok()
                    && (line.starts_with("+PONG") || line.starts_with("-NOAUTH"))
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub(crate) fn pause(&self) {
        signal(self.child.as_ref(), "STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub(crate) fn resume(&self) {
        signal(self.child.as_ref(), "CONT");
    }

    /// Runs one command (`CONFIG SET …`, say); returns the first line of the answer.
    pub(crate) fn command(&self, args: &[&str]) -> String {
        self.commands(&[args]).pop().unwrap()
    }

    /// Runs commands on one connection (`AUTH` first, say); returns the first line of
    /// each answer.
    pub(crate) fn commands(&self, commands: &[&[&str]]) -> Vec<String> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut cmd = String::new();
        for args in commands {
            cmd.push_str(&format!("*{}\r\n", args.len()));
            for a in *args {
                cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
        }
        (&s).write_all(cmd.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        commands
            .iter()
            .map(|_| {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                line
            })
            .collect()
    }

    /// `PUBLISH channel payload` as another program would.
    pub(crate) fn publish(&self, channel: &str, payload: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut cmd = format!(
            "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
            channel.len(),
            payload.len()
        )
        .into_bytes();
        cmd.extend_from_slice(payload);
        cmd.extend_from_slice(b"\r\n");
        s.write_all(&cmd).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert!(line.starts_with(':'), "{line}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The scenario of `plain_subscribers_get_local_publications_at_once` (both brokers): a
/// publication on node A reaches A's plain subscribers while the broker is frozen (so not
/// through it); A's and B's `ringcast.v1` subscribers and B's plain ones get it once the
/// broker goes on, numbered alike; A's plain subscribers do not get it a second time.
pub(crate) fn local_publication_at_once(
    backend: Backend,
    url: &str,
    pause: impl Fn(),
    resume: impl Fn(),
) {
    let (a, b) = (
        node(backend, url, &format!("la-{backend:?}")),
        node(backend, url, &format!("lb-{backend:?}")),
    );
    let (mut plain_a, mut v1_a) = (connect(addr(&a), "/sub/q"), v1(&a, "/sub/q"));
    let (mut plain_b, mut v1_b) = (connect(addr(&b), "/sub/q"), v1(&b, "/sub/q"));
    wait_subscribed(&[&a, &b], 1);
    let text = |ws: &mut Ws| match next_data(ws) {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    };
    // Through the broker once, so that it knows the topic.
    let _ = a.publish("q", "0");
    for ws in [&mut plain_a, &mut plain_b] {
        assert_eq!(text(ws), "0");
    }
    for ws in [&mut v1_a, &mut v1_b] {
        assert_eq!(msg(ws), ("q".into(), 1, b"0".to_vec()));
    }

    pause();
    let r = a.publish("q", "1");
    assert_eq!(r.seq, 0, "numbered by the broker, later");
    assert_eq!(text(&mut plain_a), "1", "A's plain subscriber, at once");
    nothing_within(&mut v1_a, Duration::from_millis(300));
    nothing_within(&mut plain_b, Duration::from_millis(50));
    resume();
    for ws in [&mut v1_a, &mut v1_b] {
        assert_eq!(msg(ws), ("q".into(), 2, b"1".to_vec()));
    }
    assert_eq!(text(&mut plain_b), "1");

    // No second delivery to A's plain subscriber when it came back from the broker.
    let _ = a.publish("q", "2");
    assert_eq!(text(&mut plain_a), "2");
    assert_eq!(text(&mut plain_b), "2");
    for ws in [&mut v1_a, &mut v1_b] {
        assert_eq!(msg(ws), ("q".into(), 3, b"2".to_vec()));
    }
    let s = cstats(&a);
    assert_eq!((s.sent, s.received_own, s.dropped_to_broker), (3, 3, 0));
}

/// The scenario of `a_second_node_with_the_same_id_stops` (both brokers): node A runs
/// with id `dup-…`; node B is started with the same id; B stops, saying why, and A goes on
/// (connected, never reconnected, delivering its own publications once).
pub(crate) fn same_id_scenario(backend: Backend, url: &str) {
    let id = format!("dup-{backend:?}");
    let a = node(backend, url, &id);
    let mut plain = connect(addr(&a), "/sub/t");
    let mut sub = v1(&a, "/sub/t");
    wait_cluster(&a, "A subscribed", |s| s.connected && s.subscriptions == 1);
    let b = node(backend, url, &id);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(b.wait());
    });
    let ended = rx.recv_timeout(TIMEOUT).expect("the second node stops");
    let why = ended.expect_err("with an error").to_string();
    assert!(
        why.contains(&format!("another running node uses node id '{id}'")),
        "{why}"
    );
    let mut publisher = connect(addr(&a), "/pub/t");
    publisher.send(Message::text("still here")).unwrap();
    assert_eq!(next_data(&mut plain), Message::text("still here"));
    assert_eq!(msg(&mut sub), ("t".into(), 1, b"still here".to_vec()));
    let s = cstats(&a);
    assert_eq!((s.connected, s.reconnects), (true, 0), "{s:#?}");
}

/// The scenario of `a_broker_that_wants_credentials` (both brokers): a node given `url`
/// (with credentials) logs in, follows `topic` (new on the broker) and numbers a
/// publication through the broker; its stats show the URL as `shown`, the secret as `***`.
pub(crate) fn credentials_scenario(backend: Backend, url: &str, shown: &str, topic: &str) {
    let n = node(backend, url, &format!("cred-{backend:?}"));
    let mut sub = v1(&n, &format!("/sub/{topic}"));
    let s = wait_cluster(&n, "logged in and subscribed", |s| {
        s.connected && s.subscriptions == 1
    });
    assert_eq!(s.url, shown);
    let mut publisher = connect(addr(&n), &format!("/pub/{topic}"));
    publisher.send(Message::text("through")).unwrap();
    assert_eq!(msg(&mut sub), (topic.into(), 1, b"through".to_vec()));
    let s = wait_cluster(&n, "its publication back", |s| s.received_own == 1);
    assert_eq!((s.dropped_to_broker, s.reconnects), (0, 0), "{s:#?}");
}

/// The scenario of `a_publication_*_refuses_is_delivered_on_its_node` (both brokers): a
/// publication the broker refuses (`refuse` makes it, `allow` ends it) is delivered on
/// its node, numbered there and counted, without a reconnection; after `allow` the next
/// goes through the broker again, numbered past the node's own.
pub(crate) fn refused_publication_scenario(
    backend: Backend,
    url: &str,
    refuse: impl FnOnce(),
    allow: impl FnOnce(),
) {
    let a = node(backend, url, &format!("refused-{backend:?}"));
    let mut sub = v1(&a, "/sub/t");
    let mut plain = connect(addr(&a), "/sub/t");
    wait_subscribed(&[&a], 1);
    let mut publisher = connect(addr(&a), "/pub/t");
    let mut send = |text: &str| publisher.send(Message::text(text)).unwrap();
    send("one");
    assert_eq!(msg(&mut sub), ("t".into(), 1, b"one".to_vec()));
    refuse();
    send("two");
    assert_eq!(msg(&mut sub), ("t".into(), 2, b"two".to_vec()));
    let s = wait_cluster(&a, "the refusal counted", |s| s.refused == 1);
    assert_eq!(
        (s.dropped_to_broker, s.connected, s.reconnects),
        (1, true, 0),
        "{s:#?}"
    );
    allow();
    send("three");
    assert_eq!(msg(&mut sub), ("t".into(), 3, b"three".to_vec()));
    for text in ["one", "two", "three"] {
        assert_eq!(next_data(&mut plain), Message::text(text));
    }
    // (Redis answers the script on another connection than the message.)
    let s = wait_cluster(&a, "two publications numbered by the broker", |s| {
        s.acked == 2
    });
    assert_eq!(s.refused, 1, "{s:#?}");
}
