//! Readiness: what `/readyz` reports, and what the HTTP endpoints know of the running
//! engine.
//!
//! An engine is ready once started and until it drains: [`EngineHandle::drain`]
//! (or [`ShutdownTrigger::set_ready`]) turns it not-ready while every connection is still
//! served, so a load balancer stops sending new clients before the connections are closed.
//!
//! [`EngineHandle::drain`]: super::EngineHandle::drain
//! [`ShutdownTrigger::set_ready`]: super::ShutdownTrigger::set_ready

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::cluster::{ClusterStats, Probe};
use super::config::Backend;
use super::stats::Stats;
use crate::reactor::stats::Counters;

/// Shared by the engine handle (and its triggers) and the HTTP endpoints.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Not ready, by request (draining) or because shutdown began.
    not_ready: AtomicBool,
    /// Set once the reactors run.
    engine: OnceLock<Running>,
    /// The cluster bridge's counters, in a cluster.
    cluster: OnceLock<Probe>,
}

/// What the endpoints read of a running engine.
#[derive(Debug)]
struct Running {
    counters: Vec<Arc<Counters>>,
    backend: Backend,
}

impl State {
    /// The reactors run, with these counters, on `backend`.
    pub(crate) fn started(&self, counters: Vec<Arc<Counters>>, backend: Backend) {
        let _ = self.engine.set(Running { counters, backend });
    }

    /// The node is in a cluster, whose counters `probe` reads.
    pub(crate) fn clustered(&self, probe: Probe) {
        let _ = self.cluster.set(probe);
    }

    /// The cluster bridge's counters, in a cluster.
    pub(crate) fn cluster(&self) -> Option<ClusterStats> {
        self.cluster.get().map(Probe::stats)
    }

    /// Whether `/readyz` answers 200: started, and not draining.
    pub(crate) fn is_ready(&self) -> bool {
        self.engine.get().is_some() && !self.not_ready.load(Ordering::Acquire)
    }

    /// Turns readiness off (draining) or back on.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.not_ready.store(!ready, Ordering::Release);
    }

    /// A snapshot of every reactor's counters (and the cluster bridge's) and the backend,
    /// once started.
    pub(crate) fn snapshot(&self) -> Option<(Stats, Backend)> {
        let e = self.engine.get()?;
        let reactors = e.counters.iter().map(|c| c.snapshot()).collect();
        let cluster = self.cluster();
        Some((Stats { reactors, cluster }, e.backend))
    }
}
