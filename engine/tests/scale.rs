//! One server process holding more WebSocket connections than twice its `ulimit -n`, with
//! two reactors: on io_uring each reactor opens as many rings as its connections need,
//! each ring with a table of `ulimit -n` direct descriptors (the kernel's cap on one), so
//! connections never use the process fd table and two reactors hold more than two tables'
//! worth; one publication then reaches every one of them, across all the rings. The epoll
//! backend under the same limit runs out of descriptors (EMFILE), backs off, and logs it.
//!
//! The server is the `ringcast` binary under `ulimit -n LIMIT` (4096, or the hard limit if
//! lower), with 2 reactors. The clients are this test binary run again as child processes
//! (`scale_client`), since every process has an fd cap too: each opens its share of the
//! subscribers from its own loopback source address (127.0.0.N, so the ephemeral ports of
//! one address are not exhausted), completes every handshake, reports, then on command
//! reads one message from every connection and reports again, and holds them all until
//! its stdin closes.
//!
//! `RINGCAST_SCALE_NOFILE` (default 4096), `RINGCAST_SCALE_CONNS` (default 2 × LIMIT +
//! 1000), `RINGCAST_SCALE_THREADS` (default 2) and `RINGCAST_BIN` (default: the debug
//! binary) change the run. `scripts/scale.sh` is the full-size version (250 000
//! subscribers and up, with loadgen).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a client waits for one handshake response, or one message, before it gives
/// up on the rest.
const IO_TIMEOUT: Duration = Duration::from_secs(4);
const CLIENT_ENV: &str = "RINGCAST_SCALE_CLIENT";
/// The topic the subscribers subscribe to and the one message published on it.
const TOPIC: &str = "scale";
const MESSAGE: &str = "to every ring";

/// The two scenarios run one after the other: each loads both cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn rlimit() -> libc::rlimit {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into `rl`, a valid rlimit struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut rl) };
    assert_eq!(rc, 0, "getrlimit");
    rl
}

/// The fd limit the server runs under: 4096, or the hard limit if it is lower.
fn limit() -> u64 {
    let want = env_usize("RINGCAST_SCALE_NOFILE").unwrap_or(4096) as u64;
    rlimit().rlim_max.min(want)
}

/// Connections per client process: as many as its own (raised) fd limit allows.
fn per_client() -> usize {
    (rlimit().rlim_max.saturating_sub(100) as usize).clamp(100, 8000)
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
                "ulimit -n {} && exec \"{bin}\" serve --backend {backend} --threads {threads} \
                 --listen 127.0.0.1:0 --no-pin --handshake-timeout 60s --idle-timeout 0",
                limit()
            ))
            .env("RUST_LOG", "ringcast=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut log = Vec::new();
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
            log.push(line);
        };
        let log = Arc::new(Mutex::new(log));
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

/// A client process: its command pipe and its report lines.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Client {
    /// The next line starting with `tag`: a count, and the first failure if any.
    fn report(&mut self, tag: &str) -> (usize, Option<String>) {
        let report = (&mut self.out)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once(tag).map(|(_, r)| r.to_owned()))
            .expect("client report");
        let mut parts = report.splitn(2, ' ');
        let n = parts
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        (n, parts.next().map(str::to_owned))
    }
}

/// The client processes of a run.
struct Clients(Vec<Client>);

impl Clients {
    /// Starts enough client processes for `total` connections to `path`, with source
    /// addresses from 127.0.0.`first_ip` on.
    fn start(addr: SocketAddr, path: &str, total: usize, first_ip: u8) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let n = total.div_ceil(per_client());
        let clients = (0..n)
            .map(|i| {
                let count = total / n + usize::from(i < total % n);
                let ip = first_ip + i as u8;
                let mut child = Command::new(&exe)
                    .args(["--exact", "scale_client", "--nocapture", "--test-threads=1"])
                    .env(CLIENT_ENV, format!("{addr} {path} {count} 127.0.0.{ip}"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn client process");
                let out = BufReader::new(child.stdout.take().expect("stdout"));
                let stdin = child.stdin.take();
                Client { child, stdin, out }
            })
            .collect();
        Self(clients)
    }

    /// Sums every client's next `tag` report; returns the total and the first failure.
    fn sum(&mut self, tag: &str) -> (usize, Option<String>) {
        let mut ok = 0;
        let mut failure = None;
        for c in &mut self.0 {
            let (n, why) = c.report(tag);
            ok += n;
            if let Some(why) = why {
                failure.get_or_insert(why);
            }
        }
        (ok, failure)
    }

    /// Tells every client to read one message from each of its connections.
    fn read_one_each(&mut self) {
        for c in &mut self.0 {
            let stdin = c.stdin.as_mut().expect("client stdin");
            stdin.write_all(b"read\n").expect("command a client");
            stdin.flush().expect("command a client");
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // Closing stdin tells the client to exit (and close its connections).
            drop(c.stdin.take());
            let _ = c.child.wait();
        }
    }
}

/// Not a test of its own: the client side, run by the tests below as a child process.
#[test]
fn scale_client() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        return;
    };
    raise_fd_limit();
    let mut parts = spec.split(' ');
    let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let path = parts.next().unwrap().to_owned();
    let count: usize = parts.next().unwrap().parse().unwrap();
    let source: std::net::IpAddr = parts.next().unwrap().parse().unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
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
    report("SCALE", held.len(), failure.as_deref());
    // Commands until the parent closes our stdin.
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        if line == "read" {
            let mut got = 0;
            let mut failure = None;
            for s in &mut held {
                match read_text(s) {
                    Ok(m) if m == MESSAGE => got += 1,
                    Ok(m) => failure = Some(format!("unexpected message {m:?}")),
                    Err(e) => failure = Some(format!("no message: {e}")),
                }
                if failure.is_some() {
                    break;
                }
            }
            report("GOT", got, failure.as_deref());
        }
    }
    drop(held);
}

/// One report line for the parent: `TAG count [failure]`.
fn report(tag: &str, n: usize, failure: Option<&str>) {
    match failure {
        None => println!("{tag} {n}"),
        Some(e) => println!("{tag} {n} {e}"),
    }
    std::io::stdout().flush().unwrap();
}

/// The client's soft fd limit up to its hard limit.
fn raise_fd_limit() {
    let mut rl = rlimit();
    rl.rlim_cur = rl.rlim_max;
    // SAFETY: setrlimit(2) reads a valid rlimit struct; raising the soft limit to the
    // hard limit needs no privilege.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const rl) };
    assert_eq!(rc, 0, "setrlimit");
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
    s.connect_timeout(&addr.into(), IO_TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    // Byte by byte up to the end of the head: nothing after it may be taken (the first
    // frame follows on the same connection).
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err("closed before the response".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no response: {e}")),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("refused: {}", String::from_utf8_lossy(&head)));
    }
    Ok(s)
}

/// One unfragmented text frame from the server (unmasked, under 126 bytes).
fn read_text(s: &mut TcpStream) -> Result<String, String> {
    let mut header = [0u8; 2];
    s.read_exact(&mut header).map_err(|e| e.to_string())?;
    if header[0] != 0x81 || header[1] >= 126 {
        return Err(format!("unexpected frame header {header:02x?}"));
    }
    let mut payload = vec![0; usize::from(header[1])];
    s.read_exact(&mut payload).map_err(|e| e.to_string())?;
    String::from_utf8(payload).map_err(|e| e.to_string())
}

/// Publishes `MESSAGE` to `TOPIC` through a publisher connection.
fn publish(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/pub/{TOPIC}"), stream)
        .map_err(|e| e.to_string())?;
    ws.send(tungstenite::Message::text(MESSAGE))
        .map_err(|e| e.to_string())?;
    // The publisher stays open until the message was handed on: a close after it.
    ws.close(None).map_err(|e| e.to_string())?;
    while ws.read().is_ok() {}
    Ok(())
}

fn conns() -> usize {
    env_usize("RINGCAST_SCALE_CONNS").unwrap_or(2 * limit() as usize + 1000)
}

fn threads() -> usize {
    env_usize("RINGCAST_SCALE_THREADS").unwrap_or(2)
}

#[test]
fn uring_holds_more_than_twice_the_fd_limit_with_two_reactors_and_reaches_them_all() {
    if ringcast::reactor::skip_without_uring("uring_holds_more_than_twice_the_fd_limit") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (total, limit, threads) = (conns(), limit(), threads());
    let server = Server::start("uring", threads);
    let t0 = Instant::now();
    let mut clients = Clients::start(server.addr, &format!("/sub/{TOPIC}"), total, 2);
    let (ok, failure) = clients.sum("SCALE ");
    let took = t0.elapsed();
    assert_eq!(
        ok,
        total,
        "only {ok} of {total} handshakes completed ({failure:?}); server log:\n{}",
        server.log()
    );
    // Every connection is held at once, none of them in the fd table: the process holds
    // its listeners, eventfds and one descriptor per ring.
    let fds = server.fds();
    assert!(fds < 100, "{fds} descriptors open");
    // Each ring's table holds at most `limit`: some reactor opened several.
    assert!(ok as u64 > threads as u64 * limit);
    publish(server.addr).expect("publish");
    clients.read_one_each();
    let (got, failure) = clients.sum("GOT ");
    assert_eq!(
        got, total,
        "{got} of {total} subscribers got the message ({failure:?})"
    );
    let log = server.log();
    assert!(
        log.contains(&format!("direct descriptors = {}", limit * 64)),
        "no capacity logged:\n{log}"
    );
    println!(
        "io_uring: one process held {ok} subscribers under `ulimit -n {limit}` with {threads} \
         reactors ({fds} fds open; handshakes took {took:.1?}), and one publication reached \
         them all"
    );
}

#[test]
fn epoll_runs_out_of_descriptors_under_the_same_limit() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (total, limit) = (conns(), limit());
    let server = Server::start("epoll", threads());
    let mut clients = Clients::start(server.addr, &format!("/sub/{TOPIC}"), total, 40);
    let (ok, failure) = clients.sum("SCALE ");
    let log = server.log();
    println!("epoll: {ok} of {total} handshakes under `ulimit -n {limit}`, then: {failure:?}");
    assert!((ok as u64) < limit, "{ok} handshakes completed");
    assert!(failure.is_some());
    assert!(
        log.contains("Too many open files") && log.contains("pausing accepts"),
        "no EMFILE back-off logged:\n{log}"
    );
}
