//! A free port for a process a test starts (a broker, a server), shared by the engine's
//! cluster tests and loadgen's (which include this file by path).

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;

/// Lowest port tried.
const FLOOR: u16 = 10_000;

/// A port of 127.0.0.1 nothing listens on, below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): no outgoing connection takes it as its source port,
/// neither another test's between this pick and the broker's bind (or while a broker is
/// down for a restart on it) nor a readiness probe connecting to itself (a probe of an
/// ephemeral port nothing listens on yet can meet itself in a simultaneous open, and
/// then holds the port). Ports are tried from a random start, so tests running at once
/// pick apart. An ephemeral port when the range leaves no room below it.
pub(crate) fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if let Some(span) = low.checked_sub(FLOOR).filter(|&n| n >= 1_000) {
        let start = (RandomState::new().hash_one(std::process::id()) % u64::from(span)) as u16;
        for i in 0..span {
            let port = FLOOR + (start + i) % span;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
