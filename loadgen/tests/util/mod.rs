//! Helpers of loadgen's integration tests: an in-process ringcast server and a bounded run
//! of the `loadgen` binary.

// Each test file uses a different subset.
#![allow(dead_code)]

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::{Engine, EngineHandle};

pub(crate) mod raw;

// The engine's cluster tests pick their brokers' ports the same way.
#[path = "../../../engine/tests/cluster_util/port.rs"]
pub(crate) mod port;

/// Longest a loadgen run may take in a test.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A broadcast server (`/sub…`, `/pub…`) on an ephemeral loopback port.
pub(crate) fn broadcast_server() -> EngineHandle {
    Engine::builder()
        .listen(loopback0())
        .threads(1)
        .pin(false)
        .handler(ringcast::server::Broadcast::default())
        .start()
        .expect("start the broadcast server")
}

/// An echo server (paths `/` and `/echo`) on an ephemeral loopback port.
pub(crate) fn echo_server() -> EngineHandle {
    Engine::builder()
        .listen(loopback0())
        .threads(1)
        .pin(false)
        .start()
        .expect("start the echo server")
}

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `ws://ADDR`.
pub(crate) fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}")
}

/// What a loadgen run left behind.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Exit code (`None`: killed by a signal).
    pub(crate) code: Option<i32>,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Outcome {
    /// The one JSON object of a `--json` run.
    pub(crate) fn json(&self) -> serde_json::Value {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one JSON line expected, got {:?} (stderr {})",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON {e}: {}", lines[0]))
    }
}

/// Runs `loadgen ARGS`, killing it after [`RUN_LIMIT`].
pub(crate) fn loadgen(args: &[&str]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}

/// A field as u64.
pub(crate) fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count in {v}"))
}
