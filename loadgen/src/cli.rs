//! Command-line surface: one subcommand per scenario, shared connection options.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for WebSocket broadcast servers: fan-out throughput and latency,
/// connection scale, echo round trips. Targets loopback (127.0.0.0/8) only.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, args_override_self = true)]
pub(crate) struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Subscribers on /sub[/TOPIC], publishers on /pub[/TOPIC]: delivered messages per
    /// second, loss, reordering, duplicates and end-to-end latency.
    Fanout(FanoutArgs),
    /// Open N idle connections: set-up rate, peak concurrency, server memory per
    /// connection.
    Connect(ConnectArgs),
    /// Round-trip latency and throughput against an echo server.
    Echo(EchoArgs),
    /// ringcast.v1 subscribers that keep dropping their connections and resuming with
    /// ?since=: time to resume, messages replayed, gaps announced, losses, duplicates.
    Resume(ResumeArgs),
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommonArgs {
    /// Server URL, ws://HOST:PORT[/BASE]; HOST must be in 127.0.0.0/8 or localhost.
    /// A BASE path prefixes every request path. Repeated (the nodes of a cluster):
    /// subscribers take the servers in turn, publishers use the first (or --pub-url).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub(crate) url: Vec<String>,
    /// Server of the publishers (fanout, resume), when it is not the first --url; the
    /// subscribers then take every --url in turn.
    #[arg(long)]
    pub(crate) pub_url: Option<String>,
    /// Reactor threads (default: the cores this process may run on).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Pin reactor thread i to CPU LIST[i % len] (e.g. 1, or 1,3, or 2-5).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub(crate) pin_cpus: Option<CpuList>,
    /// Worker processes: auto (one per 15000 connections when one process's open-files
    /// limit is not enough), 0 (everything in this process), or a count. Worker w binds
    /// its sockets to 127.0.0.(2+w).
    #[arg(long, default_value = "auto", value_parser = parse_workers)]
    pub(crate) workers: Workers,
    /// Handshakes kept in flight at once, the whole run (shared by its threads and
    /// worker processes).
    #[arg(long, default_value_t = 1024)]
    pub(crate) max_pending: usize,
    /// Connection attempts per second, the whole run (all worker processes together);
    /// default: as fast as --max-pending allows.
    #[arg(long, value_parser = parse_positive, value_name = "PER_SEC")]
    pub(crate) connect_rate: Option<f64>,
    /// PID of the server: report its resident memory (VmRSS) and the kernel's (slab
    /// caches, TCP buffers) before and once every connection is open, and each per
    /// connection.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,
    /// Print a progress line to stderr every 5 s (for logs and pipes; on a terminal a
    /// progress bar is drawn anyway).
    #[arg(long)]
    pub(crate) progress: bool,
    /// Time a connection has for TCP connect plus WebSocket handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) handshake_timeout: Duration,
    /// Print exactly one JSON object (no table, no progress bar).
    #[arg(long)]
    pub(crate) json: bool,
    /// Internal: this process is worker W of N (`W/N`), driven over stdin/stdout.
    #[arg(long, hide = true, value_parser = parse_worker_spec)]
    pub(crate) worker: Option<WorkerSpec>,
    /// Internal: the run clock's base (CLOCK_MONOTONIC ns), shared with the parent.
    #[arg(long, hide = true)]
    pub(crate) clock_base: Option<u64>,
}

/// `loadgen fanout`.
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// Common options.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Subscriber connections, spread round-robin over the topics.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Topics t0, t1, …; with 1 topic (and no --topic-names) the plain /sub and /pub
    /// paths are used.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: u32,
    /// Explicit topic names (comma-separated); overrides --topics.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub(crate) topic_names: Option<Vec<String>>,
    /// Publisher connections (default: one per topic); publisher p sends to topic
    /// p % topics.
    #[arg(long)]
    pub(crate) publishers: Option<u32>,
    /// Total messages per second across publishers, or `max` (as fast as the server
    /// takes them, within --window).
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub(crate) rate: Rate,
    /// Payload bytes per message (at least 16: sequence number and send timestamp).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=(64 << 20)))]
    pub(crate) size: u64,
    /// Send text messages (default: binary).
    #[arg(long)]
    pub(crate) text: bool,
    /// Measured publishing time (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Publishing time before measuring starts (excluded from rates and latency).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Messages a publisher may run ahead of the average of its subscribers: bounds
    /// what is queued under --rate max (latency there is about window / msg/s; more
    /// window, more batching, more throughput). Default: 256, or 1 MiB of payload per
    /// subscriber if less. Applies to paced runs too.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) window: Option<u64>,
    /// Record the latency of every Nth message of each publisher (sequence numbers
    /// divisible by N), at every subscriber: a saturated run spends less of the client's
    /// CPU on its histogram. Loss, order and duplicate checks still see every message, and
    /// the first publication's latency is always recorded.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) latency_every: u64,
    /// After publishing stops, wait for the last messages until this long passes with
    /// none arriving (at most 30 times as long in all); what is still missing is lost.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) drain: Duration,
    /// What subscribers speak: `plain` (payloads as published) or `ringcast.v1`
    /// (offered as the WebSocket subprotocol; every envelope's topic and sequence number
    /// is checked, announced gaps are not losses). Publishers are plain either way.
    #[arg(long, value_enum, default_value_t = Protocol::Plain)]
    pub(crate) protocol: Protocol,
    /// Under ringcast.v1, strip binary envelopes without checking their topics and
    /// sequence numbers. Deliveries are still checked per publisher as in plain mode
    /// (loss, order, duplicates, latency): only the client's own envelope bookkeeping is
    /// left out. For measuring what envelopes cost the server when this client is what
    /// limits the loop (see the README's "Market data").
    #[arg(long)]
    pub(crate) trust_envelopes: bool,
    /// Exit non-zero if anything was lost (under ringcast.v1: lost without a gap
    /// announcing it), reordered or duplicated, a connection failed or the server closed
    /// one.
    #[arg(long)]
    pub(crate) expect_all: bool,
    /// While publishing (warm-up included), write the delivery latency of each second to
    /// this CSV file: `unix_s,delivered,p50_us,p99_us,max_us`, one line a second, each
    /// line flushed (for a sampler that reads it live, as scripts/soak.sh does). Needs
    /// every connection in this process (--workers 0 or a run that fits the fd limit).
    #[arg(long, value_name = "PATH")]
    pub(crate) lag_log: Option<std::path::PathBuf>,
}

/// `loadgen resume`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ResumeArgs {
    /// Common options.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Subscriber connections (ringcast.v1), spread round-robin over the topics.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub(crate) subscribers: usize,
    /// Topics t0, t1, ….
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) topics: u32,
    /// Publisher connections (default: one per topic); publisher p sends to topic
    /// p % topics.
    #[arg(long)]
    pub(crate) publishers: Option<u32>,
    /// Total messages per second across publishers (paced, never throttled by
    /// subscribers).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_positive)]
    pub(crate) rate: f64,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=(1 << 20)))]
    pub(crate) size: u64,
    /// Send text messages (default: binary).
    #[arg(long)]
    pub(crate) text: bool,
    /// Publishing time; subscribers drop and resume during it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Time between churn rounds.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) reconnect_every: Duration,
    /// Share of the subscribers that reset their connection each round (in turn) and
    /// reconnect with ?since=LAST_SEQ_SEEN; 0 for none.
    #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
    pub(crate) reconnect_fraction: f64,
    /// Time after publishing starts when every subscriber resets and reconnects at once
    /// (a reconnect storm).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) storm_at: Option<Duration>,
    /// Reconnect to the next --url (round robin) instead of the same one: every resume
    /// lands on another node of a cluster. Needs at least two --url.
    #[arg(long)]
    pub(crate) rejoin_elsewhere: bool,
    /// After publishing stops, wait for the last messages until this long passes with
    /// none arriving (at most 30 times as long in all).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) drain: Duration,
    /// Exit non-zero on any loss no gap announced, duplicate, out-of-order delivery,
    /// failed connection or reconnection, or connection the server closed.
    #[arg(long)]
    pub(crate) expect_all: bool,
}

/// `loadgen connect`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// Common options.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) connections: usize,
    /// Connection attempts per second; the same as --connect-rate.
    #[arg(long, value_parser = parse_positive)]
    pub(crate) rate: Option<f64>,
    /// How long to hold the connections idle once all are open.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) hold: Duration,
    /// Request path (default: /sub, after the URL's base path).
    #[arg(long, default_value = "/sub")]
    pub(crate) path: String,
}

/// `loadgen echo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct EchoArgs {
    /// Common options.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Connections, each with one message in flight (or paced with --rate).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub(crate) connections: usize,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=(64 << 20)))]
    pub(crate) size: u64,
    /// Send text messages (default: binary).
    #[arg(long)]
    pub(crate) text: bool,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Time before measuring starts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Total messages per second across connections (open loop); default: closed
    /// loop, one message in flight per connection.
    #[arg(long, value_parser = parse_positive)]
    pub(crate) rate: Option<f64>,
    /// Request path (default: /, after the URL's base path).
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// After sending stops, wait for outstanding echoes until this long passes with
    /// none arriving.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) drain: Duration,
    /// Exit non-zero if an echo went missing or a connection failed.
    #[arg(long)]
    pub(crate) expect_all: bool,
}

/// What subscribers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// Payloads as published.
    Plain,
    /// The `ringcast.v1` subprotocol: envelopes with topic and sequence number.
    #[value(name = "ringcast.v1")]
    V1,
}

impl Protocol {
    /// The subprotocol a subscriber offers, if any.
    pub(crate) fn offer(self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::V1 => Some(crate::envelope::PROTOCOL),
        }
    }

    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        self.offer().unwrap_or("plain")
    }
}

/// A publish rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rate {
    /// As fast as the server takes messages.
    Max,
    /// Messages per second.
    PerSec(f64),
}

/// `--workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workers {
    /// Decide from the connection count and the open-files limit.
    Auto,
    /// This many worker processes (0: none).
    Count(usize),
}

/// `--worker W/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerSpec {
    /// This worker's index.
    pub(crate) index: usize,
    /// Workers in the run.
    pub(crate) count: usize,
}

/// A CPU list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuList(pub(crate) Vec<usize>);

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        other => return Err(format!("unknown duration unit '{other}' (use ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `max` or a positive number of messages per second.
pub(crate) fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    parse_positive(s).map(Rate::PerSec)
}

/// Parses a positive, finite number.
pub(crate) fn parse_positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// Parses a fraction in [0, 1].
pub(crate) fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a fraction between 0 and 1")),
    }
}

/// Parses `auto` or a count.
pub(crate) fn parse_workers(s: &str) -> Result<Workers, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Workers::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if n <= 250 => Ok(Workers::Count(n)),
        Ok(_) => Err("at most 250 workers (one 127.0.0.x source address each)".to_owned()),
        Err(_) => Err(format!("'{s}' is neither 'auto' nor a number")),
    }
}

/// Parses `W/N`.
pub(crate) fn parse_worker_spec(s: &str) -> Result<WorkerSpec, String> {
    let (w, n) = s.split_once('/').ok_or("expected W/N")?;
    let index: usize = w.parse().map_err(|_| "bad worker index")?;
    let count: usize = n.parse().map_err(|_| "bad worker count")?;
    if index >= count {
        return Err("worker index out of range".to_owned());
    }
    Ok(WorkerSpec { index, count })
}

/// Parses `1`, `1,3`, `2-5` or combinations.
pub(crate) fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("'{part}' is not a CPU number or range (e.g. 1, 1,3, 2-5)");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("empty CPU list".to_owned());
    }
    Ok(CpuList(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn rates_workers_cpus() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("2000"), Ok(Rate::PerSec(2000.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-5").is_err());
        assert_eq!(parse_workers("auto"), Ok(Workers::Auto));
        assert_eq!(parse_workers("3"), Ok(Workers::Count(3)));
        assert!(parse_workers("x").is_err());
        assert_eq!(
            parse_worker_spec("1/4"),
            Ok(WorkerSpec { index: 1, count: 4 })
        );
        assert!(parse_worker_spec("4/4").is_err());
        assert_eq!(parse_cpus("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpus("1,3-5"), Ok(CpuList(vec![1, 3, 4, 5])));
        assert!(parse_cpus("a").is_err());
        assert!(parse_cpus("5-2").is_err());
    }

    #[test]
    fn cli_parses_and_names_bad_flags() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "fanout",
            "--subscribers",
            "10",
            "--rate",
            "max",
            "--threads",
            "2",
            "--threads",
            "1",
        ])
        .expect("parses");
        let Command::Fanout(f) = cli.command else {
            panic!("fanout");
        };
        assert_eq!(f.subscribers, 10);
        assert_eq!(
            f.common.threads,
            Some(1),
            "later flags override earlier ones"
        );
        let err = Cli::try_parse_from(["loadgen", "fanout", "--size", "8"]).expect_err("too small");
        assert!(err.to_string().contains("--size"), "{err}");
        let err =
            Cli::try_parse_from(["loadgen", "fanout", "--rate", "fast"]).expect_err("bad rate");
        assert!(err.to_string().contains("--rate"), "{err}");
        assert_eq!(f.protocol, Protocol::Plain);
        let cli = Cli::try_parse_from(["loadgen", "fanout", "--protocol", "ringcast.v1"])
            .expect("parses");
        let Command::Fanout(f) = cli.command else {
            panic!("fanout");
        };
        assert_eq!(f.protocol.offer(), Some("ringcast.v1"));
        let err = Cli::try_parse_from(["loadgen", "fanout", "--protocol", "v2"])
            .expect_err("unknown protocol");
        assert!(err.to_string().contains("ringcast.v1"), "{err}");
    }

    #[test]
    fn resume_defaults_and_fractions() {
        let cli = Cli::try_parse_from(["loadgen", "resume"]).expect("parses");
        let Command::Resume(r) = cli.command else {
            panic!("resume");
        };
        assert_eq!((r.subscribers, r.topics, r.rate), (10_000, 5, 1000.0));
        assert_eq!(r.reconnect_every, Duration::from_secs(2));
        assert_eq!(r.reconnect_fraction, 0.1);
        assert_eq!(r.storm_at, None);
        let cli = Cli::try_parse_from(["loadgen", "resume", "--storm-at", "10s"]).expect("parses");
        let Command::Resume(r) = cli.command else {
            panic!("resume");
        };
        assert_eq!(r.storm_at, Some(Duration::from_secs(10)));
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
    }
}
