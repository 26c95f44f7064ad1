//! Reactors: one thread per core, each owning its listener and its connections.
//!
//! Every reactor binds its own `SO_REUSEPORT` listener on the same address, so the kernel
//! spreads new connections across them and no connection ever moves between threads: a
//! connection's socket, session and out-queue are touched by one thread only. The backend
//! (`epoll` here) moves bytes; [`session`] holds what does not depend on it.

pub(crate) mod epoll;
pub(crate) mod listener;
pub(crate) mod pin;
pub(crate) mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use crate::server::config::{Backend, Config};

/// The running reactor threads and what stops them.
pub(crate) struct Reactors {
    pub(crate) local_addr: SocketAddr,
    pub(crate) threads: Vec<JoinHandle<io::Result<()>>>,
    pub(crate) wakers: Vec<Arc<mio::Waker>>,
    pub(crate) stop: Arc<AtomicBool>,
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
    let mut threads = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    for (i, l) in listeners.into_iter().enumerate() {
        let reactor = match config.backend {
            Backend::Epoll => epoll::Reactor::new(l, Arc::clone(&config), Arc::clone(&stop))?,
        };
        let (reactor, waker) = reactor;
        wakers.push(Arc::new(waker));
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
    })
}
