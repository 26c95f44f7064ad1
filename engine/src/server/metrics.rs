//! The engine's numbers for operators: Prometheus text (`GET /metrics`) and the demo page's
//! small JSON object (`GET /stats`).
//!
//! Both are read from a [`Stats`] snapshot when asked for: nothing is registered or
//! updated on the message path, and the reactors' counters stay what they are (relaxed
//! atomics, one writer each). The text is encoded by `prometheus-client` in the Prometheus
//! text format 0.0.4; names are `ringcast_*`, with the unit in the name (`_bytes`) and
//! `_total` on counters. A figure kept per reactor carries a `reactor="i"` label, so a
//! query sums it (`sum(rate(ringcast_frames_sent_total[1m]))`). [`METRICS`] lists every
//! family; the README's table is the same list.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::{Registry, Unit};

use super::cluster::ClusterStats;
use super::cluster::stats::LATENCY_BUCKETS_US;
use super::config::Backend;
use super::stats::{LAG_BUCKETS, ReactorStats, Stats};

/// The `Content-Type` of `/metrics`: Prometheus text, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric family `/metrics` exposes: name (as exposed, suffixes included), type, and
/// meaning. Labels: `reactor` on all but the first two; the others are named in the text.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "ringcast_info",
        "gauge",
        "Always 1; labels name the backend in use (`uring` or `epoll`) and the version",
    ),
    (
        "ringcast_ready",
        "gauge",
        "1 while `/readyz` answers 200, 0 while starting or draining",
    ),
    (
        "ringcast_connections",
        "gauge",
        "Connections open, by `state`: `handshake` (reading the request), `open` \
         (WebSocket), `closing` (flushing or waiting for the peer's close)",
    ),
    (
        "ringcast_connections_accepted_total",
        "counter",
        "Connections accepted (those refused by a limit included)",
    ),
    (
        "ringcast_connections_refused_total",
        "counter",
        "Connections answered 503 by a connection limit, by `limit`: `server` \
         (--max-conns), `per-ip` (--max-conns-per-ip), `handshakes` \
         (--max-pending-handshakes)",
    ),
    (
        "ringcast_upgrades_total",
        "counter",
        "Connections upgraded to WebSocket",
    ),
    (
        "ringcast_handshake_rejections_total",
        "counter",
        "Requests refused, by `status`: 400, 401, 403, 404, 405, 426, 431 or `other`",
    ),
    (
        "ringcast_handshake_timeouts_total",
        "counter",
        "Connections dropped because their request head was not complete in time",
    ),
    (
        "ringcast_http_requests_total",
        "counter",
        "Plain HTTP requests (no `Upgrade`) answered by an endpoint, whatever the status",
    ),
    (
        "ringcast_subscriptions",
        "gauge",
        "Subscriptions (connection × topic)",
    ),
    (
        "ringcast_topics",
        "gauge",
        "Topics the reactor holds: with subscribers, or kept for their history",
    ),
    (
        "ringcast_messages_received_total",
        "counter",
        "Messages received from clients",
    ),
    (
        "ringcast_publications_total",
        "counter",
        "Publications taken from the reactor's inbox into its topic logs (every reactor \
         takes every publication)",
    ),
    (
        "ringcast_frames_sent_total",
        "counter",
        "Frames written (deliveries): published messages, and each connection's own \
         frames (handshake and HTTP responses, replies, control frames)",
    ),
    (
        "ringcast_sent_bytes_total",
        "counter",
        "Bytes written to sockets",
    ),
    (
        "ringcast_writes_total",
        "counter",
        "Writes made: send/sendmsg calls (epoll) or send SQEs (io_uring)",
    ),
    (
        "ringcast_slow_consumer_actions_total",
        "counter",
        "Slow-consumer policy actions, by `policy`: `close` counts connections closed \
         (1008), `drop-oldest` and `conflate` count messages skipped",
    ),
    (
        "ringcast_inbox_dropped_publications_total",
        "counter",
        "Publications the reactor missed because its inbox was full",
    ),
    (
        "ringcast_inbox_lag_publications",
        "gauge",
        "Publications waiting in the reactor's inbox when it last drained it",
    ),
    (
        "ringcast_lag_high_water_bytes",
        "gauge",
        "Largest backlog of one connection seen at delivery (high-water mark)",
    ),
    (
        "ringcast_topic_log_bytes",
        "gauge",
        "Bytes of topic-log chunks alive (logs, sends in flight, history)",
    ),
    (
        "ringcast_delivery_lag_bytes",
        "histogram",
        "Backlog of a subscriber (bytes it has not been sent) each time delivery visits \
         it: once per subscriber per publish batch; buckets 1 KiB to 16 MiB, ×4",
    ),
    (
        "ringcast_cluster_connected",
        "gauge",
        "In a cluster: 1 while connected to the broker",
    ),
    (
        "ringcast_cluster_reconnects_total",
        "counter",
        "In a cluster: connections to the broker made after the first",
    ),
    (
        "ringcast_cluster_messages_total",
        "counter",
        "In a cluster: messages by `direction`: `out` (sent to the broker), `in` (from it), \
         and `origin` on `in`: `own` (this node's, their one delivery here), `remote` \
         (another node's), `foreign` (another program's)",
    ),
    (
        "ringcast_cluster_dropped_to_broker_total",
        "counter",
        "In a cluster: local publications the broker could not take (unreachable, queue \
         full), delivered on this node only",
    ),
    (
        "ringcast_cluster_missed_total",
        "counter",
        "In a cluster: sequence numbers skipped on receipt (lost, e.g. while disconnected; \
         announced to ringcast.v1 subscribers as a gap)",
    ),
    (
        "ringcast_cluster_malformed_total",
        "counter",
        "In a cluster: messages from the broker dropped unread (a ringcast header that does \
         not decode, or a topic name over 255 bytes)",
    ),
    (
        "ringcast_cluster_subscriptions",
        "gauge",
        "In a cluster: topics subscribed on the broker",
    ),
    (
        "ringcast_cluster_latency_seconds",
        "histogram",
        "In a cluster: publishing node's send to delivery here, for other nodes' messages",
    ),
    (
        "ringcast_cluster_streams_refused_total",
        "counter",
        "In a cluster: times the broker would not number a topic (JetStream refused or did \
         not answer the creation of its stream); the topic is served on this node only \
         meanwhile",
    ),
    (
        "ringcast_v1_resumes_total",
        "counter",
        "ringcast.v1 subscriptions started with `since`, by `outcome`: `resumed` (in the \
         topic's current numbering, or naming no epoch), `reset` (naming another epoch: the \
         server restarted or forgot the topic; answered with a reset)",
    ),
    (
        "ringcast_history_bytes",
        "gauge",
        "Bytes the reactor's ringcast.v1 topic logs hold (their history and what their \
         subscribers have pending), large frames included: within --history-memory, give \
         or take a chunk per topic",
    ),
];

/// The Prometheus text of a scrape: `stats` (the cluster families from
/// [`Stats::cluster`]), the backend in use, and readiness.
pub(crate) fn encode(stats: Stats, backend: Backend, ready: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        stats,
        backend,
        ready,
    }));
    let mut out = String::with_capacity(16 << 10);
    // Writing to a `String` cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// The JSON object of `/stats`, for the demo page: exactly the keys `backend`,
/// `reactors`, `connections`, `subscriptions`, `topics`, `publications`, `deliveries`,
/// `bytes_out`.
///
/// `publications` counts each publication once (the most any reactor took in or dropped:
/// every reactor receives every publication); `topics` is the most any reactor holds (a
/// topic with subscribers on several reactors is held by each); the rest are sums.
pub(crate) fn stats_json(stats: &Stats, backend: Backend) -> String {
    let total = stats.total();
    let most = |f: fn(&ReactorStats) -> u64| stats.reactors.iter().map(f).max().unwrap_or(0);
    let mut json = serde_json::json!({
        "backend": backend.name(),
        "reactors": stats.reactors.len(),
        "connections": total.connections,
        "subscriptions": total.subscriptions,
        "topics": most(|r| r.topics),
        "publications": most(|r| r.publications + r.ring_dropped),
        "deliveries": total.frames_out,
        "bytes_out": total.bytes_out,
    });
    if let Some(c) = &stats.cluster {
        json["cluster"] = serde_json::json!({
            "url": c.url,
            "node_id": c.node_id,
            "connected": c.connected,
            "last_error": c.last_error,
            "reconnects": c.reconnects,
            "sent": c.sent,
            "received_remote": c.received_remote,
            "received_own": c.received_own,
            "received_foreign": c.received_foreign,
            "dropped_to_broker": c.dropped_to_broker,
            "missed": c.missed,
            "malformed": c.malformed,
            "streams_refused": c.streams_refused,
            "subscriptions": c.subscriptions,
            "latency_p50_us": c.latency_quantile_us(0.5),
            "latency_p99_us": c.latency_quantile_us(0.99),
        });
    }
    json.to_string()
}

/// One scrape's figures, encoded when the registry asks.
#[derive(Debug)]
struct Scrape {
    stats: Stats,
    backend: Backend,
    ready: bool,
}

/// A per-reactor figure.
type Figure = fn(&ReactorStats) -> u64;

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let rs = &self.stats.reactors;
        let version = env!("CARGO_PKG_VERSION");
        let info = prometheus_client::metrics::info::Info::new([
            ("backend", self.backend.name()),
            ("version", version),
        ]);
        let m = e.encode_descriptor("ringcast", help(0), None, MetricType::Info)?;
        info.encode(m)?;
        let mut m = e.encode_descriptor("ringcast_ready", help(1), None, MetricType::Gauge)?;
        m.encode_gauge(&u64::from(self.ready))?;

        let states: [(&str, Figure); 3] = [
            ("handshake", |r| r.handshaking),
            ("open", |r| {
                r.connections.saturating_sub(r.handshaking + r.closing)
            }),
            ("closing", |r| r.closing),
        ];
        labelled(
            &mut e,
            "ringcast_connections",
            2,
            None,
            gauge(),
            rs,
            "state",
            &states,
        )?;
        counter(&mut e, "ringcast_connections_accepted", 3, rs, |r| {
            r.accepted
        })?;
        let limits: [(&str, Figure); 3] = [
            ("server", |r| r.refused_conns),
            ("per-ip", |r| r.refused_per_ip),
            ("handshakes", |r| r.refused_handshakes),
        ];
        let refused = "ringcast_connections_refused";
        labelled(
            &mut e,
            refused,
            4,
            None,
            MetricType::Counter,
            rs,
            "limit",
            &limits,
        )?;
        counter(&mut e, "ringcast_upgrades", 5, rs, |r| r.upgrades)?;
        let statuses: [(&str, Figure); 8] = [
            ("400", |r| r.rejected_400),
            ("401", |r| r.rejected_401),
            ("403", |r| r.rejected_403),
            ("404", |r| r.rejected_404),
            ("405", |r| r.rejected_405),
            ("426", |r| r.rejected_426),
            ("431", |r| r.rejected_431),
            ("other", |r| r.rejected_other),
        ];
        let rejections = "ringcast_handshake_rejections";
        labelled(
            &mut e,
            rejections,
            6,
            None,
            MetricType::Counter,
            rs,
            "status",
            &statuses,
        )?;
        counter(&mut e, "ringcast_handshake_timeouts", 7, rs, |r| {
            r.handshake_timeouts
        })?;
        counter(&mut e, "ringcast_http_requests", 8, rs, |r| r.http_requests)?;
        per_reactor(
            &mut e,
            "ringcast_subscriptions",
            9,
            None,
            gauge(),
            rs,
            |r| r.subscriptions,
        )?;
        per_reactor(&mut e, "ringcast_topics", 10, None, gauge(), rs, |r| {
            r.topics
        })?;
        counter(&mut e, "ringcast_messages_received", 11, rs, |r| {
            r.messages_in
        })?;
        counter(&mut e, "ringcast_publications", 12, rs, |r| r.publications)?;
        counter(&mut e, "ringcast_frames_sent", 13, rs, |r| r.frames_out)?;
        let bytes = Unit::Bytes;
        let c = MetricType::Counter;
        per_reactor(&mut e, "ringcast_sent", 14, Some(&bytes), c, rs, |r| {
            r.bytes_out
        })?;
        counter(&mut e, "ringcast_writes", 15, rs, |r| r.writes)?;
        let policies: [(&str, Figure); 3] = [
            ("close", |r| r.slow_closed),
            ("drop-oldest", |r| r.slow_dropped_frames),
            ("conflate", |r| r.slow_conflated_frames),
        ];
        let slow = "ringcast_slow_consumer_actions";
        labelled(&mut e, slow, 16, None, c, rs, "policy", &policies)?;
        counter(&mut e, "ringcast_inbox_dropped_publications", 17, rs, |r| {
            r.ring_dropped
        })?;
        per_reactor(
            &mut e,
            "ringcast_inbox_lag_publications",
            18,
            None,
            gauge(),
            rs,
            |r| r.ring_lag,
        )?;
        let name = "ringcast_lag_high_water";
        per_reactor(&mut e, name, 19, Some(&bytes), gauge(), rs, |r| {
            r.lag_high_water
        })?;
        per_reactor(
            &mut e,
            "ringcast_topic_log",
            20,
            Some(&bytes),
            gauge(),
            rs,
            |r| r.log_bytes,
        )?;

        let ty = MetricType::Histogram;
        let mut m = e.encode_descriptor("ringcast_delivery_lag", help(21), Some(&bytes), ty)?;
        for (i, r) in rs.iter().enumerate() {
            let labels = [("reactor", i.to_string())];
            let h = &r.delivery_lag;
            let bounds = LAG_BUCKETS.iter().map(|&b| b as f64).chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(h.buckets).collect();
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum as f64,
                h.count(),
                &buckets,
                None,
            )?;
        }
        let outcomes: [(&str, Figure); 2] =
            [("resumed", |r| r.v1_resumes), ("reset", |r| r.v1_resets)];
        let resumes = "ringcast_v1_resumes";
        labelled(&mut e, resumes, 31, None, c, rs, "outcome", &outcomes)?;
        per_reactor(
            &mut e,
            "ringcast_history",
            32,
            Some(&bytes),
            gauge(),
            rs,
            |r| r.history_bytes,
        )?;
        if let Some(c) = &self.stats.cluster {
            encode_cluster(&mut e, c)?;
        }
        Ok(())
    }
}

/// The cluster families ([`METRICS`] entries 22 to 30).
fn encode_cluster(e: &mut DescriptorEncoder<'_>, c: &ClusterStats) -> fmt::Result {
    let name = |i: usize| METRICS[i].0;
    let plain = |n: &'static str| n.strip_suffix("_total").unwrap_or(n);
    let mut m = e.encode_descriptor(name(22), help(22), None, gauge())?;
    m.encode_gauge(&u64::from(c.connected))?;
    let ctr = MetricType::Counter;
    let one = |e: &mut DescriptorEncoder<'_>, i: usize, v: u64| -> fmt::Result {
        let mut m = e.encode_descriptor(plain(name(i)), help(i), None, ctr)?;
        m.encode_counter::<NoLabelSet, _, u64>(&v, None::<&Exemplar<_, u64>>)
    };
    one(e, 23, c.reconnects)?;
    let mut m = e.encode_descriptor(plain(name(24)), help(24), None, ctr)?;
    let series = [
        ("out", "own", c.sent),
        ("in", "own", c.received_own),
        ("in", "remote", c.received_remote),
        ("in", "foreign", c.received_foreign),
    ];
    for (direction, origin, v) in series {
        let labels = [("direction", direction), ("origin", origin)];
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None::<&Exemplar<_, u64>>)?;
    }
    one(e, 25, c.dropped_to_broker)?;
    one(e, 26, c.missed)?;
    one(e, 27, c.malformed)?;
    let mut m = e.encode_descriptor(name(28), help(28), None, gauge())?;
    m.encode_gauge(&c.subscriptions)?;
    let secs = Unit::Seconds;
    let hist = MetricType::Histogram;
    let mut m = e.encode_descriptor("ringcast_cluster_latency", help(29), Some(&secs), hist)?;
    let bounds = LATENCY_BUCKETS_US
        .iter()
        .map(|&b| b as f64 / 1e6)
        .chain([f64::INFINITY]);
    let mut buckets = Vec::new();
    let mut sum = 0.0;
    for (bound, &n) in bounds.zip(&c.latency_us) {
        buckets.push((bound, n));
        // The sum is not kept: each bucket counts at its upper bound (an over-estimate).
        if bound.is_finite() {
            sum += bound * n as f64;
        }
    }
    let count = c.latency_us.iter().sum();
    m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    one(e, 30, c.streams_refused)
}

fn gauge() -> MetricType {
    MetricType::Gauge
}

/// The help text of [`METRICS`] entry `i`.
fn help(i: usize) -> &'static str {
    METRICS[i].2
}

/// A counter per reactor (`name` without `_total`).
fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    i: usize,
    rs: &[ReactorStats],
    value: Figure,
) -> fmt::Result {
    per_reactor(e, name, i, None, MetricType::Counter, rs, value)
}

/// A counter or gauge with one series per reactor.
fn per_reactor(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    i: usize,
    unit: Option<&Unit>,
    ty: MetricType,
    rs: &[ReactorStats],
    value: Figure,
) -> fmt::Result {
    labelled(e, name, i, unit, ty, rs, "", &[("", value)])
}

/// A counter or gauge with one series per reactor and value of `values` (labelled `key`
/// = its name; no second label when `key` is empty).
#[allow(clippy::too_many_arguments)] // one call per family, each naming what it is
fn labelled(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    i: usize,
    unit: Option<&Unit>,
    ty: MetricType,
    rs: &[ReactorStats],
    key: &str,
    values: &[(&str, Figure)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help(i), unit, ty)?;
    for (reactor, r) in rs.iter().enumerate() {
        for (label, value) in values {
            let mut labels = vec![("reactor", reactor.to_string())];
            if !key.is_empty() {
                labels.push((key, (*label).to_owned()));
            }
            let mut f = m.encode_family(&labels)?;
            let v = value(r);
            match ty {
                MetricType::Counter => {
                    f.encode_counter::<NoLabelSet, _, u64>(&v, None::<&Exemplar<_, u64>>)?;
                }
                _ => f.encode_gauge(&v)?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_listed_and_parses() {
        let mut r = ReactorStats {
            connections: 5,
            handshaking: 1,
            closing: 1,
            frames_out: 42,
            ..ReactorStats::default()
        };
        r.delivery_lag.buckets[0] = 3;
        r.delivery_lag.buckets[8] = 1;
        r.delivery_lag.sum = 100 + (32 << 20);
        let mut stats = Stats {
            reactors: vec![r, ReactorStats::default()],
            cluster: None,
        };
        let mut cluster = ClusterStats {
            connected: true,
            sent: 7,
            latency_us: vec![0; LATENCY_BUCKETS_US.len() + 1],
            ..ClusterStats::default()
        };
        cluster.latency_us[0] = 2;
        let plain = stats.clone();
        stats.cluster = Some(cluster);
        let text = encode(stats, Backend::Uring, true);
        for (name, ty, _) in METRICS {
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family}"))
                    || text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
            assert!(text.contains(&format!(" {ty}\n")), "{ty}");
        }
        assert!(
            text.contains("ringcast_info{backend=\"uring\",version=\""),
            "{text}"
        );
        assert!(
            text.contains("ringcast_connections{reactor=\"0\",state=\"open\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ringcast_frames_sent_total{reactor=\"0\"} 42\n"),
            "{text}"
        );
        assert!(
            text.contains("ringcast_delivery_lag_bytes_bucket{reactor=\"0\",le=\"1024\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ringcast_delivery_lag_bytes_bucket{reactor=\"0\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("parses");
        assert!(scrape.samples.len() > 50);

        let json: serde_json::Value =
            serde_json::from_str(&stats_json(&plain, Backend::Epoll)).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = [
            "backend",
            "reactors",
            "connections",
            "subscriptions",
            "topics",
            "publications",
            "deliveries",
            "bytes_out",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(json["backend"], "epoll");
        assert_eq!(json["deliveries"], 42);
        assert!(
            text.contains("ringcast_cluster_messages_total{direction=\"out\",origin=\"own\"} 7\n")
        );
        assert!(
            text.contains("ringcast_cluster_latency_seconds_bucket{le=\"5e-05\"} 2\n")
                || text.contains("ringcast_cluster_latency_seconds_bucket{le=\"0.00005\"} 2\n"),
            "{text}"
        );
    }
}
