//! Connection limits, the same for both backends: the whole server's open connections
//! (`max_conns`), those of one address (`max_conns_per_ip`), and each reactor's
//! connections still in their handshake (`max_pending_handshakes`). The drivers report
//! each accepted socket (and its peer address when they have it) to [`Core::insert`](
//! super::Core::insert); a connection over a limit gets a session that answers `503`
//! with `Retry-After: 1` at once and closes, without reading the request.
//!
//! The whole-server counts are shared by the reactors and touched only at accept and
//! close, never on the per-message path: an atomic for the total, a mutex-guarded map
//! for the addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::config::Config;
use super::super::stats::Counters;

/// Counts the whole server shares: one per engine, given to every reactor.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Admitted connections open (refused ones are not counted).
    open: AtomicUsize,
    /// Admitted connections open per address (kept only under `max_conns_per_ip`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// What an admitted connection holds, given back when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The address counted in the per-address map.
    pub(crate) ip: Option<IpAddr>,
}

/// Why a connection was refused: the limit it hit, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Server(usize),
    PerIp(usize),
    Handshakes(usize),
}

impl Refusal {
    /// The response body.
    pub(crate) fn reason(self) -> String {
        match self {
            Self::Server(n) => format!("server at its connection limit ({n})"),
            Self::PerIp(n) => format!("too many connections from this address ({n})"),
            Self::Handshakes(n) => format!("too many handshakes in progress ({n})"),
        }
    }

    /// Counts the refusal.
    pub(crate) fn count(self, stats: &Counters) {
        let c = match self {
            Self::Server(_) => &stats.refused_conns,
            Self::PerIp(_) => &stats.refused_per_ip,
            Self::Handshakes(_) => &stats.refused_handshakes,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// Admits a connection from `peer` (if known) while the reactor has `handshakes`
    /// connections in their handshake, or says which limit it is over. Without a peer
    /// address the per-address limit is not applied.
    pub(crate) fn admit(
        &self,
        config: &Config,
        peer: Option<IpAddr>,
        handshakes: usize,
    ) -> Result<Ticket, Refusal> {
        if let Some(max) = config.max_pending_handshakes {
            if handshakes >= max {
                return Err(Refusal::Handshakes(max));
            }
        }
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = config.max_conns {
            if open >= max {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::Server(max));
            }
        }
        let ip = match (config.max_conns_per_ip, peer) {
            (Some(max), Some(ip)) => {
                let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                let n = map.entry(ip).or_insert(0);
                if *n >= max {
                    drop(map);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::PerIp(max));
                }
                *n += 1;
                Some(ip)
            }
            _ => None,
        };
        Ok(Ticket { ip })
    }

    /// Gives back what an admitted connection held.
    pub(crate) fn release(&self, ticket: Ticket) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = ticket.ip {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_and_release() {
        let config = Config {
            max_conns: Some(3),
            max_conns_per_ip: Some(2),
            max_pending_handshakes: Some(5),
            ..Config::default()
        };
        let a = Admission::default();
        let one: IpAddr = [127, 0, 0, 1].into();
        let two: IpAddr = [127, 0, 0, 2].into();
        let t1 = a.admit(&config, Some(one), 0).unwrap();
        let _t2 = a.admit(&config, Some(one), 0).unwrap();
        assert_eq!(a.admit(&config, Some(one), 0), Err(Refusal::PerIp(2)));
        let t3 = a.admit(&config, Some(two), 0).unwrap();
        assert_eq!(a.admit(&config, Some(two), 0), Err(Refusal::Server(3)));
        assert_eq!(a.admit(&config, None, 5), Err(Refusal::Handshakes(5)));
        a.release(t1);
        a.admit(&config, Some(one), 0).unwrap();
        a.release(t3);
        assert_eq!(a.per_ip.lock().unwrap().get(&two), None);
        assert_eq!(a.open.load(Ordering::Relaxed), 2);
    }
}
