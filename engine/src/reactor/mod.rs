//! Reactors: one thread per core, each owning its listener and its connections.
//!
//! Every reactor binds its own `SO_REUSEPORT` listener on the same address, so the kernel
//! spreads new connections across them and no connection ever moves between threads: a
//! connection's socket, session, cursors and topic logs are touched by one thread
//! only. Publications reach a reactor through its inbox ([`crate::fanout::ring`]).
//!
//! The backend moves bytes: `epoll` (readiness, `mio`) or `uring` (completions,
//! io_uring), each a `core::Driver` under the same generic loop (`core::run`),
//! monomorphised per backend; `session` holds what does not depend on either.

pub mod config;
pub(crate) mod core;
#[allow(unsafe_code)] // libc calls (sendmsg) and the `msghdr` it is given
pub(crate) mod epoll;
mod failure;
pub mod handler;
pub(crate) mod listener;
pub(crate) mod pin;
pub(crate) mod session;
pub mod stats;
#[allow(unsafe_code)] // `Send` for the `iovec` array handed to the kernel
pub(crate) mod sys;
#[allow(unsafe_code)] // SQEs point at memory the kernel uses; buffer rings, raw msghdrs
pub(crate) mod uring;
#[allow(unsafe_code)] // eventfd(2) and adopting its descriptor
pub(crate) mod waker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use self::config::{Backend, Config};
use self::stats::Counters;
use self::waker::Waker;
use crate::fanout::Fanout;
use crate::fanout::ring::{self, InboxRx};

/// What a reactor shares with the engine handle and the other reactors.
pub(crate) struct Shared {
    /// The reactor's index (its core, when pinned).
    pub(crate) index: usize,
    pub(crate) config: Arc<Config>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Reactors that stopped taking client messages (the shutdown's first step).
    pub(crate) quiesced: Arc<core::shutdown::Quiesced>,
    pub(crate) inbox: InboxRx,
    pub(crate) fanout: Fanout,
    pub(crate) stats: Arc<Counters>,
    /// The whole server's connection counts.
    pub(crate) admission: Arc<core::admit::Admission>,
}

/// The running reactor threads and what stops them.
pub(crate) struct Reactors {
    pub(crate) local_addr: SocketAddr,
    pub(crate) threads: Vec<JoinHandle<io::Result<()>>>,
    pub(crate) wakers: Vec<Arc<Waker>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) fanout: Fanout,
    pub(crate) stats: Vec<Arc<Counters>>,
    /// The backend in use (never `Auto`).
    pub(crate) backend: Backend,
    /// Why `Auto` chose epoll, when it did.
    pub(crate) fallback: Option<String>,
}

/// Resolves `Auto`: io_uring if the probe passes, else epoll with the reason.
fn choose(backend: Backend) -> io::Result<(Backend, Option<String>)> {
    match backend {
        Backend::Epoll => Ok((Backend::Epoll, None)),
        Backend::Uring => match uring::probe() {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(why) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring backend unavailable: {why}"),
            )),
        },
        Backend::Auto => match uring::probe() {
            Ok(()) => {
                tracing::info!(
                    "backend: io_uring (auto: the kernel supports every operation used)"
                );
                Ok((Backend::Uring, None))
            }
            Err(why) => {
                tracing::info!("backend: epoll (auto: io_uring unavailable: {why})");
                Ok((Backend::Epoll, Some(why)))
            }
        },
    }
}

/// For tests of the io_uring backend: whether to skip `test` because io_uring cannot be
/// used here. A skip is printed to the process's standard error directly (past the test
/// harness's capture, so it is seen), and under `CI=true`, where our machines support
/// io_uring, it panics instead: an io_uring test never passes silently.
///
/// # Panics
/// Under `CI=true` when io_uring is unavailable.
#[doc(hidden)]
pub fn skip_without_uring(test: &str) -> bool {
    let Err(why) = uring::probe() else {
        return false;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: io_uring unavailable under CI=true: {why}"
    );
    use io::Write;
    let _ = writeln!(io::stderr(), "SKIPPED {test}: io_uring unavailable: {why}");
    true
}

/// Whether io_uring can be used here, and if not why (for tests and diagnostics).
pub(crate) fn probe_uring() -> Result<(), String> {
    uring::probe()
}

/// Binds the listeners (all before any thread starts, so a bind error is returned to the
/// caller) and starts one reactor thread per listener.
pub(crate) fn start(
    config: Config,
    relay: Option<Arc<dyn crate::fanout::Relay>>,
) -> io::Result<Reactors> {
    let (backend, fallback) = choose(config.backend)?;
    let n = config.reactor_count();
    let listeners = listener::bind_all(config.listen, n, config.backlog, config.sndbuf)?;
    let local_addr = listeners[0].local_addr()?;
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let cores = if config.pin { pin::cores() } else { Vec::new() };

    let mut polls = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    let mut txs = Vec::with_capacity(n);
    let mut rxs = Vec::with_capacity(n);
    for _ in 0..n {
        let (poll, waker) = match backend {
            Backend::Uring => (None, Waker::eventfd()?),
            _ => {
                let (poll, waker) = epoll::Epoll::poll()?;
                (Some(poll), waker)
            }
        };
        let waker = Arc::new(waker);
        let (tx, rx) = ring::inbox(config.inbox_capacity, Arc::clone(&waker) as _);
        polls.push(poll);
        wakers.push(waker);
        txs.push(tx);
        rxs.push(rx);
    }
    let fanout = Fanout::with_relay(txs, relay);
    let stats: Vec<Arc<Counters>> = (0..n).map(|_| Arc::default()).collect();
    let admission = Arc::new(core::admit::Admission::default());
    let quiesced = Arc::new(core::shutdown::Quiesced::new(n));

    let mut threads = Vec::with_capacity(n);
    // io_uring instances are created on their own thread (they are not `Send`); each
    // reports whether it started, so that a failure is returned from here.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut expected = 0;
    let parts = polls.into_iter().zip(listeners).zip(rxs).enumerate();
    for (i, ((poll, listener), inbox)) in parts {
        let shared = Shared {
            index: i,
            config: Arc::clone(&config),
            stop: Arc::clone(&stop),
            quiesced: Arc::clone(&quiesced),
            inbox,
            fanout: fanout.clone(),
            stats: Arc::clone(&stats[i]),
            admission: Arc::clone(&admission),
        };
        let core_id = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let driver = match poll {
            Some(poll) => Start::Epoll(epoll::Epoll::new(poll, listener)?),
            None => {
                expected += 1;
                Start::Uring(listener, Arc::clone(&wakers[i]))
            }
        };
        let ready = ready_tx.clone();
        let guard = failure::StopAllOnFailure::new(i, Arc::clone(&stop), wakers.clone());
        let params = uring::Params {
            backlog: config.backlog,
            recv_bufs: config.uring_recv_buffers,
            peer_addrs: config.max_conns_per_ip.is_some(),
            max_rings: config.uring_rings,
            max_conns: config.max_conns,
        };
        let t = std::thread::Builder::new()
            .name(format!("ringcast-reactor-{i}"))
            .spawn(move || {
                // Every event of this thread carries `reactor=i`. An error-level span is
                // enabled whenever any event is, so the field is there under any filter.
                let _span = tracing::error_span!("reactor", reactor = i).entered();
                if let Some(core_id) = core_id {
                    pin::pin_current(core_id, i);
                }
                let result = match driver {
                    Start::Epoll(d) => core::run(core::Core::new(shared), d),
                    Start::Uring(listener, waker) => {
                        match uring::Uring::new(listener, waker, params, i) {
                            Ok(d) => {
                                let _ = ready.send(Ok(()));
                                core::run(core::Core::new(shared), d)
                            }
                            Err(e) => {
                                let msg = format!("io_uring reactor {i}: {e}");
                                let _ = ready.send(Err(io::Error::new(e.kind(), msg)));
                                // `start` returns it and stops the others.
                                guard.disarm();
                                return Err(e);
                            }
                        }
                    }
                };
                guard.returned(&result);
                result
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..expected {
        let failed = match ready_rx.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => io::Error::other("a reactor thread exited while starting"),
        };
        stop.store(true, Ordering::Release);
        for w in &wakers {
            let _ = w.wake();
        }
        for t in threads {
            let _ = t.join();
        }
        return Err(failed);
    }
    Ok(Reactors {
        local_addr,
        threads,
        wakers,
        stop,
        fanout,
        stats,
        backend,
        fallback,
    })
}

/// What a reactor thread starts with.
enum Start {
    Epoll(epoll::Epoll),
    /// The io_uring driver is built on the reactor thread itself.
    Uring(std::net::TcpListener, Arc<Waker>),
}
