//! Shared helpers of the fan-out integration tests (`tests/fanout_*.rs`): an in-process
//! broadcast engine on an ephemeral port, `tungstenite` clients (blocking, over
//! `std::net::TcpStream`), stalled clients with a tiny receive buffer, and bounded polling of
//! the engine's counters.
//!
//! Nothing here sleeps to synchronise: a test waits for something it can observe (a frame, an
//! ack, a counter), and every wait is bounded by [`TIMEOUT`].

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod flood;

use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ringcast::server::{Backend, Broadcast, ReactorStats};
use ringcast::{Engine, EngineBuilder, EngineHandle};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::{HandshakeError, Message, WebSocket};

/// Bound of every wait: generous, a test only waits this long when something is wrong.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// A client connection.
pub(crate) type Ws = WebSocket<TcpStream>;

/// The broadcast handler without a publish token, with default topic rules.
pub(crate) fn broadcast() -> Broadcast {
    Broadcast {
        publish_token: None,
        rules: Default::default(),
    }
}

/// A builder for 127.0.0.1:0, two reactors, the broadcast handler, on `backend`.
pub(crate) fn builder(backend: Backend) -> EngineBuilder {
    Engine::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .backend(backend)
        .threads(2)
        .handler(broadcast())
}

/// Held while a test measures the process's memory (a flood), and while an engine starts:
/// an engine starting meanwhile (an io_uring one commits megabytes of receive buffers) would
/// count as the flood's growth.
static MEMORY: Mutex<()> = Mutex::new(());

/// The process's memory is this caller's to measure until the guard drops.
pub(crate) fn measuring_memory() -> MutexGuard<'static, ()> {
    MEMORY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts `builder` (never while a test measures memory).
pub(crate) fn start(builder: EngineBuilder) -> EngineHandle {
    let _memory = measuring_memory();
    builder.start().expect("engine starts")
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    prepare(&s);
    s
}

fn prepare(s: &TcpStream) {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
}

/// Opens a WebSocket on `path` (which may carry a query), with extra request headers;
/// `Err((status, body))` when the server refuses the upgrade.
pub(crate) fn try_connect_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    handshake(tcp(addr), addr, path, headers)
}

fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("valid request");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("handshake on {path} failed: {e}"),
    }
}

/// Opens a WebSocket on `path`; panics if refused.
pub(crate) fn connect(addr: SocketAddr, path: &str) -> Ws {
    try_connect_with(addr, path, &[])
        .unwrap_or_else(|(status, body)| panic!("{path}: refused with {status}: {body}"))
}

/// Opens `n` WebSockets on `path`, from a few threads (handshakes are round trips).
pub(crate) fn connect_many(addr: SocketAddr, path: &str, n: usize) -> Vec<Ws> {
    const THREADS: usize = 4;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let count = n / THREADS + usize::from(t < n % THREADS);
                s.spawn(move || (0..count).map(|_| connect(addr, path)).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("connect thread"))
            .collect()
    })
}

/// A subscriber that completes the handshake and then never reads: its receive buffer is
/// tiny, so the server's send buffer fills after a few KiB and its lag grows from there.
pub(crate) fn connect_stalled(addr: SocketAddr, path: &str) -> Ws {
    connect_stalled_with(addr, path, &[])
}

/// A connection with a 4 KiB receive buffer that the test does not read from yet, with
/// extra request headers.
pub(crate) fn connect_stalled_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).expect("connect");
    let s: TcpStream = s.into();
    prepare(&s);
    handshake(s, addr, path, headers)
        .unwrap_or_else(|(status, body)| panic!("{path}: refused with {status}: {body}"))
}

/// The next message that is not a Ping or Pong (tungstenite answers pings itself).
pub(crate) fn next_data(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(m) => return m,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// The next text message; panics on anything else.
pub(crate) fn next_text(ws: &mut Ws) -> String {
    match next_data(ws) {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Sends a text message.
pub(crate) fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

/// Polls `cond` until it holds; panics after [`TIMEOUT`], naming `what`.
pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls the summed counters until `cond` holds; panics after [`TIMEOUT`] with the last
/// counters seen.
pub(crate) fn wait_stats(
    handle: &EngineHandle,
    what: &str,
    mut cond: impl FnMut(&ReactorStats) -> bool,
) -> ReactorStats {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let t = handle.stats().total();
        if cond(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; counters: {t:#?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until every reactor has taken `n` publications from its inbox.
pub(crate) fn wait_publications(handle: &EngineHandle, n: u64) {
    wait_for(&format!("every reactor to take {n} publications"), || {
        handle.stats().reactors.iter().all(|r| r.publications >= n)
    });
    let s = handle.stats();
    assert!(
        s.reactors.iter().all(|r| r.publications == n),
        "more publications than published: {s:#?}"
    );
}

/// Resident memory of this process (the engine runs in it), in KiB.
pub(crate) fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}
