//! The `ringcast` binary as an operator runs it: a command with a clean environment (no
//! `RINGCAST_*` or `RUST_LOG` from the test's own), and a running server whose stderr is
//! read line by line, waited on with a deadline rather than a sleep.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long a test waits for a log line before failing.
const DEADLINE: Duration = Duration::from_secs(20);

/// `ringcast ARGS` (split at whitespace), with none of the test environment's settings
/// variables. The binary is the one cargo built with the tests, or the one
/// `RINGCAST_TEST_BIN` names (e.g. `target/release/ringcast`, to test a release server
/// from a debug test build).
pub(crate) fn ringcast(args: &str) -> Command {
    let bin = std::env::var_os("RINGCAST_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ringcast").into());
    let mut cmd = Command::new(bin);
    cmd.args(args.split_whitespace())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("RINGCAST_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// A file in a directory of its own, removed with it.
pub(crate) struct TempFile {
    dir: PathBuf,
    pub(crate) path: PathBuf,
}

impl TempFile {
    /// `name` holding `text`, in a directory named after the test.
    pub(crate) fn new(name: &str, text: &str) -> Self {
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let dir = std::env::temp_dir().join(format!("ringcast-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a temporary file");
        Self { dir, path }
    }

    pub(crate) fn arg(&self) -> &str {
        self.path.to_str().expect("UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server started from a command, its address read from the startup line.
pub(crate) struct Running {
    child: Child,
    lines: Receiver<String>,
    /// Every stderr line read so far.
    pub(crate) log: Vec<String>,
    pub(crate) addr: SocketAddr,
    /// The startup line (`... listening on ws://ADDR (N reactors, BACKEND)`).
    pub(crate) banner: String,
}

impl Running {
    pub(crate) fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        // Keep draining, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self {
            child,
            lines,
            log: Vec::new(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            banner: String::new(),
        };
        let banner = running.wait_for(|l| l.contains("listening on ws://"));
        let rest = banner.split("ws://").nth(1).expect("address");
        let addr = rest
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .expect("address");
        running.addr = addr.parse().expect("socket address");
        running.banner = banner;
        running
    }

    /// Reads stderr until a line matches; returns it.
    ///
    /// # Panics
    /// When the server exits or the deadline passes first, showing the log so far.
    pub(crate) fn wait_for(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no such log line ({e:?}); log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }
}

impl Running {
    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (within the deadline) for the server to exit; returns its status, with the
    /// rest of its log read into [`log`](Self::log).
    ///
    /// # Panics
    /// When it is still running at the deadline.
    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        // Its stderr closes when it exits: the log ends then.
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.log.push(line);
        }
        if Instant::now() >= deadline {
            panic!("still running; log:\n{}", self.log.join("\n"));
        }
        // Exiting (its stderr is closed): reap it.
        self.child.wait().expect("wait")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
