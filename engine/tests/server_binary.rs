//! The `ringcast` binary as a user runs it: its command line, its signals, and the reactor
//! under resource exhaustion (a tiny fd limit: it keeps serving, backs off instead of
//! spinning on EMFILE, and accepts again once fds free up).

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringcast::server::Backend;

/// Whether the io_uring variant must be skipped here (printed; a failure under `CI=true`).
fn skip(backend: Backend) -> bool {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    backend == Backend::Uring && ringcast::reactor::skip_without_uring(&test)
}

/// The server binary under a shell-imposed `ulimit -n`, with its address parsed from
/// the startup log line.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The startup line (`... listening on ws://ADDR (N reactors, BACKEND)`).
    banner: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(nofile: u32, args: &str) -> Self {
        Self::start_with_env(nofile, args, &[])
    }

    fn start_with_env(nofile: u32, args: &str, env: &[(&str, &str)]) -> Self {
        let bin = env!("CARGO_BIN_EXE_ringcast");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"{bin}\" {args} --listen 127.0.0.1:0 --threads 1 --no-pin"
            ))
            .env("RUST_LOG", "ringcast=info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut early = Vec::new();
        let (addr, banner) = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("read server log");
            if let Some(rest) = line.split("ws://").nth(1) {
                let addr = rest.split_whitespace().next().expect("address");
                break (addr.parse().expect("socket address"), line.clone());
            }
            early.push(line);
        };
        // Keep draining the log so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(early));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            addr,
            banner,
            log,
        }
    }

    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc stat");
        // Fields after the command name: state is field 3; utime and stime are 14 and 15.
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One echo through an independent client; `Err` says which step failed.
fn echo_round_trip(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    ws.send(tungstenite::Message::text("still here"))
        .map_err(|e| format!("send: {e}"))?;
    match ws.read() {
        Ok(m) if m == tungstenite::Message::text("still here") => Ok(()),
        other => Err(format!("echo: {other:?}")),
    }
}

/// Out of descriptors, each backend backs off and recovers: epoll on EMFILE from
/// `accept(2)`, io_uring when its direct descriptor table (sized by the same `ulimit -n`)
/// is full and it may open no other ring (`--uring-rings 1`).
fn accept_backs_off_on_emfile_and_recovers(backend: Backend) {
    if skip(backend) {
        return;
    }
    let server = Server::start(64, &format!("echo --backend {backend} --uring-rings 1"));
    echo_round_trip(server.addr).expect("echo before exhaustion");

    // Far more connections than the server has descriptors for: the kernel completes
    // them all in the backlog, the server accepts until EMFILE.
    let mut clients: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(server.addr).expect("connect into the backlog"))
        .collect();

    // While the backlog stays full, the server must not spin on accept: measure its CPU
    // over one second (a busy loop burns ~100 ticks; back-off a handful).
    let t0 = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - t0;
    assert!(
        used < 50,
        "server used {used} CPU ticks in 1 s while out of fds"
    );

    // Free descriptors: the server sees EOF on the connections it accepted and drops them,
    // then accepts again. A new client is served within a generous bound.
    clients.drain(..100);
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = echo_round_trip(server.addr) {
        assert!(
            Instant::now() < deadline,
            "server never recovered from EMFILE: {e}"
        );
    }
    let log = server.log.lock().unwrap().join("\n");
    let exhausted = match backend {
        Backend::Uring => "direct descriptor tables full",
        _ => "Too many open files",
    };
    assert!(
        log.contains(exhausted) && log.contains("pausing accepts"),
        "no back-off logged:\n{log}"
    );
    // The clients still held were accepted meanwhile or are still queued; none of them
    // got a reset from a crashed server.
    let mut buf = [0u8; 1];
    for c in &mut clients {
        c.set_nonblocking(true).unwrap();
        match c.read(&mut buf) {
            Ok(0) => panic!("server closed a connection it should still hold"),
            Ok(_) => panic!("server sent bytes before any request"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
    }
}

fn sigterm_closes_clients_with_1001_and_exits_0(backend: Backend) {
    if skip(backend) {
        return;
    }
    // No drain delay: this is the close itself (tests/http_drain.rs drains).
    let mut server = Server::start(1024, &format!("serve --backend {backend} --drain-delay 0s"));
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) =
        tungstenite::client(format!("ws://{}/sub/a,b", server.addr), stream).expect("handshake");
    // Wait until the server has the subscriber (a published message reaches it).
    let pub_stream = TcpStream::connect(server.addr).expect("connect publisher");
    let (mut publisher, _) =
        tungstenite::client(format!("ws://{}/pub/a", server.addr), pub_stream).expect("pub");
    publisher.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hello"));

    // SAFETY: kill(2) on the pid of a child this test spawned and still owns.
    let rc = unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    match ws.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    // Send the close reply, so the server does not wait out its close timeout.
    let _ = ws.flush();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn help_explains_every_flag_and_bad_flags_are_named() {
    let bin = env!("CARGO_BIN_EXE_ringcast");
    let help = Command::new(bin)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--threads",
        "--max-message",
        "--publish-token",
        "--slow-consumer",
        "--demo",
        "--sndbuf",
        "--ui",
        "--no-metrics",
        "--metrics-token",
        "--drain-delay",
        // The plain HTTP endpoints.
        "/healthz",
        "/readyz",
        "/metrics",
        "/stats",
        "/ringcast.js",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
    let bad = Command::new(bin)
        .args(["serve", "--slow-consumer", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--slow-consumer") && err.contains("close, drop-oldest or conflate"),
        "{err}"
    );
    let bad = Command::new(bin)
        .args(["echo", "--max-message", "lots"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--max-message"));
    let busy = Command::new(bin)
        .args(["echo", "--listen", "203.0.113.1:1"])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("cannot listen on 203.0.113.1:1"));
}

/// A second server on an address the first serves exits 1 naming the address, instead of
/// joining it through `SO_REUSEPORT` (which would split clients between two processes).
#[test]
fn a_port_in_use_is_an_error() {
    let first = Server::start(1024, "serve");
    let bin = env!("CARGO_BIN_EXE_ringcast");
    let second = Command::new(bin)
        .args(["serve", "--listen", &first.addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("address in use: {}", first.addr)),
        "{err}"
    );
    // The first one still serves.
    subscribe_once(first.addr);
}

/// A subscriber connects to `addr` and is accepted.
fn subscribe_once(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tungstenite::client(format!("ws://{addr}/sub/a"), stream).expect("handshake");
}

#[test]
fn auto_falls_back_to_epoll_and_says_why() {
    let server = Server::start_with_env(1024, "echo", &[("RINGCAST_URING", "off")]);
    echo_round_trip(server.addr).expect("echo on the fallback backend");
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("backend: epoll (auto: io_uring unavailable: disabled by RINGCAST_URING=off)"),
        "no fallback line:\n{log}"
    );
    // The startup line names the backend too (read before the log thread started).
    let bin = env!("CARGO_BIN_EXE_ringcast");
    let forced = Command::new(bin)
        .args(["echo", "--backend", "uring", "--listen", "127.0.0.1:0"])
        .env("RINGCAST_URING", "off")
        .output()
        .unwrap();
    assert_eq!(forced.status.code(), Some(1));
    let err = String::from_utf8_lossy(&forced.stderr);
    assert!(
        err.contains("io_uring backend unavailable: disabled by RINGCAST_URING=off"),
        "{err}"
    );
}

#[test]
fn auto_picks_io_uring_where_the_kernel_allows_it() {
    let expect = if ringcast::server::probe_uring().is_ok() {
        "io_uring)"
    } else {
        "epoll)"
    };
    let server = Server::start(1024, "echo");
    echo_round_trip(server.addr).expect("echo");
    assert!(server.banner.ends_with(expect), "{}", server.banner);
}

mod accept_backs_off_on_emfile_and_recovers {
    #[test]
    fn epoll() {
        super::accept_backs_off_on_emfile_and_recovers(super::Backend::Epoll);
    }
    #[test]
    fn uring() {
        super::accept_backs_off_on_emfile_and_recovers(super::Backend::Uring);
    }
}

mod sigterm_closes_clients_with_1001_and_exits_0 {
    #[test]
    fn epoll() {
        super::sigterm_closes_clients_with_1001_and_exits_0(super::Backend::Epoll);
    }
    #[test]
    fn uring() {
        super::sigterm_closes_clients_with_1001_and_exits_0(super::Backend::Uring);
    }
}
