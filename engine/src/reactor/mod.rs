//! Reactors: one thread per core, each owning its listener and its connections.
//!
//! Every reactor binds its own `SO_REUSEPORT` listener on the same address, so the kernel
//! spreads new connections across them and no connection ever moves between threads: a
//! connection's socket, session, subscriptions and out-queue are touched by one thread
//! only. Publications reach a reactor through its inbox ([`crate::fanout::ring`]). The
//! backend (`epoll` here) moves bytes; [`session`] holds what does not depend on it.

pub(crate) mod epoll;
pub(crate) mod listener;
pub(crate) mod pin;
pub(crate) mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use crate::fanout::Fanout;
use crate::fanout::ring::{self, InboxRx};
use crate::server::config::{Backend, Config};
use crate::server::stats::Counters;

/// What a reactor shares with the engine handle and the other reactors.
pub(crate) struct Shared {
    /// The reactor's index (its core, when pinned).
    pub(crate) index: usize,
    pub(crate) config: Arc<Config>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) inbox: InboxRx,
    pub(crate) fanout: Fanout,
    pub(crate) stats: Arc<Counters>,
}

/// The running reactor threads and what stops them.
pub(crate) struct Reactors {
    pub(crate) local_addr: SocketAddr,
    pub(crate) threads: Vec<JoinHandle<io::Result<()>>>,
    pub(crate) wakers: Vec<Arc<mio::Waker>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) fanout: Fanout,
    pub(crate) stats: Vec<Arc<Counters>>,
}

/// Binds the listeners (all before any thread starts, so a bind error is returned to the
/// caller) and starts one reactor thread per listener.
pub(crate) fn start(config: Config) -> io::Result<Reactors> {
    let n = config.reactor_count();
    let listeners = listener::bind_all(config.listen, n, config.backlog)?;
    let local_addr = listeners[0].local_addr()?;
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let cores = if config.pin { pin::cores() } else { Vec::new() };

    let mut polls = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    let mut txs = Vec::with_capacity(n);
    let mut rxs = Vec::with_capacity(n);
    for _ in 0..n {
        let (poll, waker) = match config.backend {
            Backend::Epoll => epoll::Reactor::poll()?,
        };
        let waker = Arc::new(waker);
        let (tx, rx) = ring::inbox(config.inbox_capacity, Arc::clone(&waker));
        polls.push(poll);
        wakers.push(waker);
        txs.push(tx);
        rxs.push(rx);
    }
    let fanout = Fanout::new(txs);
    let stats: Vec<Arc<Counters>> = (0..n).map(|_| Arc::default()).collect();

    let mut threads = Vec::with_capacity(n);
    let parts = polls.into_iter().zip(listeners).zip(rxs).enumerate();
    for (i, ((poll, listener), inbox)) in parts {
        let shared = Shared {
            index: i,
            config: Arc::clone(&config),
            stop: Arc::clone(&stop),
            inbox,
            fanout: fanout.clone(),
            stats: Arc::clone(&stats[i]),
        };
        let reactor = epoll::Reactor::new(poll, listener, shared)?;
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let t = std::thread::Builder::new()
            .name(format!("ringcast-reactor-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    pin::pin_current(core, i);
                }
                reactor.run()
            })?;
        threads.push(t);
    }
    Ok(Reactors {
        local_addr,
        threads,
        wakers,
        stop,
        fanout,
        stats,
    })
}
