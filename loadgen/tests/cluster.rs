//! `loadgen resume --rejoin-elsewhere` against three ringcast nodes meeting through a real
//! `nats-server -js` (started on a free port, killed by pid): every subscriber that
//! resets comes back on another node with `?since=` and misses nothing unannounced, gets
//! nothing twice. A missing `nats-server` skips the test, except under `CI=true`, where it
//! fails (`.ci/run` installs it).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::server::cluster::ClusterConfig;
use ringcast::{Engine, EngineHandle};

use crate::util;

use util::{loadgen, u, url};

/// A `nats-server -js` of this test, in its own directory; killed by pid when dropped.
struct Nats {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Nats {
    /// Starts one on a free port; `None` (the test skips) when there is no `nats-server`
    /// outside CI.
    fn start() -> Option<Self> {
        let port = util::port::free_port();
        let dir = std::env::temp_dir().join(format!("loadgen-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nats store directory");
        let spawned = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "nats-server cannot run ({e}), and CI=true (apt-get install nats-server)"
                );
                let _ = writeln!(std::io::stderr(), "SKIPPED: nats-server cannot run: {e}");
                return None;
            }
        };
        let nats = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return Some(nats);
                }
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broadcast node of the cluster at `nats`.
fn node(nats: &Nats, id: &str) -> EngineHandle {
    let cluster = ClusterConfig::new(&format!("nats://127.0.0.1:{}", nats.port))
        .and_then(|c| c.node_id(id))
        .expect("cluster config");
    Engine::builder()
        .listen(([127, 0, 0, 1], 0).into())
        .threads(1)
        .pin(false)
        .handler(ringcast::server::Broadcast::default())
        .cluster(Some(cluster))
        .start()
        .expect("start a node")
}

#[test]
fn resumes_on_another_node_lose_nothing() {
    let Some(nats) = Nats::start() else {
        return;
    };
    let nodes = [node(&nats, "n1"), node(&nats, "n2"), node(&nats, "n3")];
    let urls: Vec<String> = nodes.iter().map(|n| url(n.local_addr())).collect();
    let mut args = vec!["resume"];
    for u in &urls {
        args.extend(["--url", u]);
    }
    args.extend([
        "-n",
        "300",
        "--topics",
        "2",
        "--rate",
        "300",
        "--duration",
        "3s",
        "--reconnect-every",
        "0.5s",
        "--reconnect-fraction",
        "0.2",
        "--storm-at",
        "1.7s",
        "--rejoin-elsewhere",
        "--threads",
        "1",
        "--drain",
        "2s",
        "--expect-all",
        "--json",
    ]);
    let out = loadgen(&args);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r, "subscribers_connected"), 300);
    // Five rounds (0.5 … 2.5 s) of 20 % of 300, and the storm, each on another node. A
    // subscriber still reconnecting when a round or the storm comes is not reset again (on
    // a slow machine the round after the storm finds some so): the first round takes its
    // whole share, the others and the storm at most theirs. Every reset reconnected.
    let (rounds, storm) = (u(&r, "reconnects"), u(&r, "storm_reconnects"));
    assert!((60..=5 * 60).contains(&rounds), "{r}");
    assert!((300 - 2 * 60..=300).contains(&storm), "{r}");
    assert_eq!(u(&r, "reconnected"), rounds + storm, "{r}");
    assert_eq!(u(&r, "reconnect_failed"), 0);
    assert_eq!(u(&r, "unresumed"), 0);
    assert!(u(&r, "replayed") > 0, "{r}");
    assert_eq!(u(&r, "unannounced_lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    // Every node follows both topics throughout (its history holds what the resets cut
    // off): nothing had to be announced as a gap.
    assert_eq!(u(&r, "gap_announced"), 0, "{r}");
    assert_eq!(u(&r, "lost"), 0);
    let published = u(&r, "published");
    assert_eq!(u(&r, "delivered"), published * 150);
    for n in &nodes {
        let c = n.cluster_stats().expect("in a cluster");
        assert_eq!((c.missed, c.dropped_to_broker), (0, 0), "{c:#?}");
    }
}
