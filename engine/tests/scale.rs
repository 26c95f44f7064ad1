//! One server process holding more WebSocket connections than its `ulimit -n`: the io_uring
//! backend accepts into direct descriptors (a registered file table per reactor, each as
//! large as `RLIMIT_NOFILE`), so connections never use the process fd table; the epoll
//! backend under the same limit runs out of descriptors (EMFILE), backs off, and logs it.
//!
//! The server is the `ringcast` binary under `ulimit -n LIMIT` (20000, or the hard limit if
//! lower), with 2 reactors. The clients are this test binary run again as child processes
//! (`scale_client`), since every process has the same cap: each opens its share of the
//! connections from its own loopback source address (127.0.0.N, so the ephemeral ports of one
//! address are not exhausted), completes every handshake, reports, and holds them all until
//! its stdin closes.
//!
//! `RINGCAST_SCALE_CONNS` (default LIMIT + 1000), `RINGCAST_SCALE_THREADS` (default 2) and
//! `RINGCAST_BIN` (default: the debug binary) change the run; `scripts/scale.sh` runs it
//! with the release binary and 39000 connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Connections per client process (each process has the same fd cap as the server).
const PER_CLIENT: usize = 8000;
/// How long a client waits for one handshake response before it stops opening more.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(4);
const CLIENT_ENV: &str = "RINGCAST_SCALE_CLIENT";

/// The two scenarios run one after the other: each loads both cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The fd limit the server runs under: 20000, or the hard limit if it is lower.
fn limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into `rl`, a valid rlimit struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut rl) };
    assert_eq!(rc, 0, "getrlimit");
    rl.rlim_max.min(20_000)
}

struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(backend: &str, threads: usize) -> Self {
        let bin = std::env::var("RINGCAST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringcast").to_owned());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {} && exec \"{bin}\" echo --backend {backend} --threads {threads} \
                 --listen 127.0.0.1:0 --no-pin --handshake-timeout 60s --idle-timeout 0",
                limit()
            ))
            .env("RUST_LOG", "ringcast=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("server log");
            if let Some(rest) = line.split("ws://").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("address")
                    .parse()
                    .expect("socket address");
            }
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Self { child, addr, log }
    }

    /// Descriptors open in the server process.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client process and what it reported.
struct Clients {
    children: Vec<(Child, BufReader<ChildStdout>)>,
}

impl Clients {
    /// Starts enough client processes for `total` connections, with source addresses
    /// from 127.0.0.`first_ip` on.
    fn start(addr: SocketAddr, total: usize, first_ip: u8) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let n = total.div_ceil(PER_CLIENT);
        let children = (0..n)
            .map(|i| {
                let count = total / n + usize::from(i < total % n);
                let ip = first_ip + i as u8;
                let mut child = Command::new(&exe)
                    .args(["--exact", "scale_client", "--nocapture", "--test-threads=1"])
                    .env(CLIENT_ENV, format!("{addr} {count} 127.0.0.{ip}"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn client process");
                let out = BufReader::new(child.stdout.take().expect("stdout"));
                (child, out)
            })
            .collect();
        Self { children }
    }

    /// Waits for every client's report; returns the handshakes completed and the first
    /// failure seen.
    fn wait(&mut self) -> (usize, Option<String>) {
        let mut ok = 0;
        let mut failure = None;
        for (_, out) in &mut self.children {
            let report = out
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.split_once("SCALE ").map(|(_, r)| r.to_owned()))
                .expect("client report");
            let mut parts = report.splitn(2, ' ');
            ok += parts
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            if let Some(why) = parts.next() {
                failure.get_or_insert_with(|| why.to_owned());
            }
        }
        (ok, failure)
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            // Closing stdin tells the client to exit (and close its connections).
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// Not a test of its own: the client side, run by the tests below as a child process.
#[test]
fn scale_client() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let mut parts = spec.split(' ');
    let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let count: usize = parts.next().unwrap().parse().unwrap();
    let source: std::net::IpAddr = parts.next().unwrap().parse().unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut held = Vec::with_capacity(count);
    let mut failure = None;
    for _ in 0..count {
        match handshake(addr, source, request.as_bytes()) {
            Ok(s) => held.push(s),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    match &failure {
        None => println!("SCALE {}", held.len()),
        Some(e) => println!("SCALE {} {e}", held.len()),
    }
    std::io::stdout().flush().unwrap();
    // Hold every connection until the parent closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}

fn handshake(
    addr: SocketAddr,
    source: std::net::IpAddr,
    request: &[u8],
) -> Result<TcpStream, String> {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::AsRawFd;
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
    // Choose the port at connect time (per destination), not at bind time: a bind to port 0
    // scans for a port unused by any destination, which slows down as thousands are taken.
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) on a socket we own, reading a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_BIND_ADDRESS_NO_PORT");
    s.bind(&SocketAddr::new(source, 0).into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    s.connect_timeout(&addr.into(), HANDSHAKE_TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).unwrap();
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => return Err("closed before the response".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no response: {e}")),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("refused: {}", String::from_utf8_lossy(&head)));
    }
    Ok(s)
}

/// One echo on a fresh connection (the server still serves).
fn echo(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) =
        tungstenite::client(format!("ws://{addr}/"), stream).map_err(|e| e.to_string())?;
    ws.send(tungstenite::Message::text("one more"))
        .map_err(|e| e.to_string())?;
    match ws.read() {
        Ok(m) if m == tungstenite::Message::text("one more") => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn conns() -> usize {
    env_usize("RINGCAST_SCALE_CONNS").unwrap_or(limit() as usize + 1000)
}

fn threads() -> usize {
    env_usize("RINGCAST_SCALE_THREADS").unwrap_or(2)
}

#[test]
fn uring_holds_more_connections_than_the_fd_limit() {
    if ringcast::reactor::skip_without_uring("uring_holds_more_connections_than_the_fd_limit") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (total, limit) = (conns(), limit());
    let server = Server::start("uring", threads());
    let t0 = Instant::now();
    let mut clients = Clients::start(server.addr, total, 2);
    let (ok, failure) = clients.wait();
    let took = t0.elapsed();
    assert_eq!(
        ok,
        total,
        "only {ok} of {total} handshakes completed ({failure:?}); server log:\n{}",
        server.log()
    );
    // Every connection is held at once, none of them in the fd table.
    let fds = server.fds();
    echo(server.addr).expect("the server still serves");
    println!(
        "io_uring: one process held {ok} WebSocket connections under `ulimit -n {limit}` \
         with {} reactors ({fds} fds open; handshakes took {took:.1?})",
        threads()
    );
    assert!(ok as u64 > limit);
    assert!(fds < 100, "{fds} descriptors open");
}

#[test]
fn epoll_runs_out_of_descriptors_under_the_same_limit() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (total, limit) = (conns(), limit());
    let server = Server::start("epoll", threads());
    let mut clients = Clients::start(server.addr, total, 12);
    let (ok, failure) = clients.wait();
    let log = server.log();
    println!("epoll: {ok} of {total} handshakes under `ulimit -n {limit}`, then: {failure:?}");
    assert!((ok as u64) < limit, "{ok} handshakes completed");
    assert!(failure.is_some());
    assert!(
        log.contains("Too many open files") && log.contains("pausing accepts"),
        "no EMFILE back-off logged:\n{log}"
    );
}
