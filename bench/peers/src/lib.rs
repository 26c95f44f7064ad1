//! Shared bits of the comparison peers: command line, request routing, tokio runtime and
//! shutdown signal. Each binary in `src/bin/` is one peer; see `README.md`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;

/// Command line shared by every peer.
#[derive(Debug, Parser)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Worker threads (tokio peers; 1 = current-thread runtime, like one ringcast reactor).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What a request path asks for. Only the default topic exists: `/sub` and `/pub`
/// (a query string is ignored); any other path is refused with 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives every published message.
    Subscriber,
    /// Every data message it sends is broadcast to all subscribers.
    Publisher,
}

impl Role {
    /// Classifies a request target such as `/sub?x=1`.
    pub fn from_target(target: &str) -> Option<Role> {
        let path = target.split('?').next().unwrap_or("");
        match path {
            "/sub" => Some(Role::Subscriber),
            "/pub" => Some(Role::Publisher),
            _ => None,
        }
    }
}

/// Broadcast channel capacity of the tokio peers (messages a subscriber may fall behind
/// before it skips ahead).
pub const CHANNEL_CAPACITY: usize = 1024;

/// Messages skipped by lagging subscribers (tokio peers), reported at exit.
pub static LAGGED: AtomicU64 = AtomicU64::new(0);

/// Records that a subscriber skipped `n` messages.
pub fn add_lag(n: u64) {
    LAGGED.fetch_add(n, Ordering::Relaxed);
}

/// Builds the tokio runtime for `threads` workers: current-thread for 1, else multi-thread.
#[cfg(feature = "tokio-peers")]
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Resolves on the first SIGINT or SIGTERM.
#[cfg(feature = "tokio-peers")]
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Prints the exit summary line of a tokio peer.
pub fn report_exit(name: &str) {
    eprintln!(
        "{name}: shutting down; subscribers skipped {} lagged messages",
        LAGGED.load(Ordering::Relaxed)
    );
}
