//! The node's counters: each reactor's ([`ReactorStats`], kept by the reactors, see
//! `reactor::stats`) and a snapshot of all of them with the cluster bridge's ([`Stats`]).

pub use crate::reactor::stats::{LAG_BUCKETS, LagHistogram, ReactorStats};

use super::cluster::ClusterStats;

/// A snapshot of every reactor's counters, and of the cluster bridge's in a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// One entry per reactor, in reactor order.
    pub reactors: Vec<ReactorStats>,
    /// The cluster bridge's counters (`None`: the node is not in a
    /// [cluster](crate::EngineBuilder::cluster)); the same as
    /// [`EngineHandle::cluster_stats`](crate::EngineHandle::cluster_stats).
    pub cluster: Option<ClusterStats>,
}

impl Stats {
    /// The counters summed over all reactors (the high-water mark is the largest).
    pub fn total(&self) -> ReactorStats {
        let mut t = ReactorStats::default();
        for r in &self.reactors {
            let hw = t.lag_high_water.max(r.lag_high_water);
            t.add(r);
            t.lag_high_water = hw;
        }
        t
    }
}
