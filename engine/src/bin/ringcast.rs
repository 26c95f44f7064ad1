//! The `ringcast` server binary.
//!
//! `ringcast echo` runs the echo server the conformance suites expect. Every flag has a
//! default; `ringcast echo --help` lists them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringcast::fanout::{History, SlowConsumer, TopicRules};
use ringcast::protocol::conn::Limits;
use ringcast::protocol::handshake::HandshakeConfig;
use ringcast::server::demo::{DEFAULT_SYMBOLS, DemoFeed};
use ringcast::server::{Backend, Broadcast};
use ringcast::{Engine, EngineBuilder};

/// ringcast: a WebSocket broadcast engine.
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`, `ringcast=debug`); the
    /// `RUST_LOG` variable overrides it.
    #[arg(long, global = true, default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo every message back with its type, on paths `/` and `/echo` (the mode
    /// WebSocket conformance suites such as Autobahn use).
    Echo(ServerArgs),
    /// Broadcast: subscribers on /sub or /sub/TOPIC[,TOPIC…], publishers on /pub or
    /// /pub/TOPIC; every message a publisher sends reaches every subscriber of the topic.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Publishers must present this token (Authorization: Bearer TOKEN, or ?token=TOKEN);
    /// without it anyone may publish.
    #[arg(long, env = "RINGCAST_PUBLISH_TOKEN")]
    publish_token: Option<String>,
    /// What to do with a subscriber whose lag passes --max-lag: close (1008 "slow
    /// consumer"), drop-oldest (skip its oldest messages), or conflate (skip to the latest
    /// message of the topic).
    #[arg(long, default_value = "close", value_parser = parse_policy)]
    slow_consumer: SlowConsumer,
    /// Longest topic name, in bytes (names use A-Z a-z 0-9 - _ . : @).
    #[arg(long, default_value_t = 64)]
    max_topic_len: usize,
    /// Most topics one connection may subscribe to.
    #[arg(long, default_value_t = 64)]
    max_topics: usize,
    /// Publications each reactor's inbox holds; past it publishes to that reactor are
    /// dropped and counted (ring_dropped).
    #[arg(long, default_value_t = 65536)]
    inbox: usize,
    /// Messages of each topic kept for ringcast.v1 snapshots and resumes (?since=SEQ);
    /// 0 disables history.
    #[arg(long, default_value_t = 1024)]
    history: usize,
    /// Most bytes of each topic's history (per reactor); the first of --history and
    /// --history-bytes binds.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    history_bytes: usize,
    /// A topic without subscribers and publications for this long forgets its history.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    history_ttl: Duration,
    /// How often ringcast.v1 subscribers get {"op":"heartbeat","seq":{…}} with the
    /// latest sequence number of each of their topics; 0 disables.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Publish a synthetic market-data feed (JSON quotes to one topic per symbol).
    #[arg(long)]
    demo: bool,
    /// Demo ticks per second (each tick quotes every symbol).
    #[arg(long, default_value_t = 2.0, value_parser = parse_rate)]
    demo_rate: f64,
    /// Demo symbols (comma-separated); each is a topic.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SYMBOLS.iter().map(|s| s.to_string()))]
    demo_symbols: Vec<String>,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address to listen on; every reactor binds it with SO_REUSEPORT
    /// [default: 127.0.0.1:9001 for echo, 127.0.0.1:8080 for serve].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Reactor threads, each pinned to a core (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Do not pin reactor threads to cores.
    #[arg(long)]
    no_pin: bool,
    /// I/O backend: uring (io_uring; fails if the kernel refuses it), epoll, or auto
    /// (io_uring when the kernel allows it, else epoll; the log says which and why).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Largest message accepted (all fragments), e.g. 16MiB, 64KiB, 1000; over it the
    /// connection is closed with 1009.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_message: usize,
    /// Largest single frame accepted; over it: close 1009. Defaults to --max-message.
    #[arg(long, value_parser = parse_size)]
    max_frame: Option<usize>,
    /// Most fragments in one message; over it: close 1008 (default: no limit).
    #[arg(long)]
    max_fragments: Option<u32>,
    /// Largest HTTP request head of the opening handshake; over it: 431.
    #[arg(long, default_value = "8KiB", value_parser = parse_size)]
    max_head: usize,
    /// Time a client has to complete the opening handshake (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Time allowed for the closing handshake and the peer's TCP close.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// Send a ping after this long without input; close 1001 after as long again
    /// (0 disables).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// A subprotocol the server speaks (repeat, in order of preference).
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Accept browser upgrades only from this Origin (repeat; default: any origin).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// How far (bytes) a subscriber may fall behind a topic before the slow-consumer
    /// policy acts; also the limit of a connection's queued replies (echoes), past which
    /// its input is not read until they drain.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    max_lag: usize,
    /// SO_SNDBUF of client sockets (the kernel doubles it); caps what a stalled client
    /// pins in kernel memory. 0 leaves kernel autotuning.
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    sndbuf: usize,
    /// Most connections open at once (whole server, handshakes included); one more is
    /// answered 503 with Retry-After (default: no limit).
    #[arg(long, value_name = "N")]
    max_conns: Option<usize>,
    /// Most connections open at once from one IP address (whole server); one more is
    /// answered 503 (default: no limit; on io_uring, makes accepts one-shot).
    #[arg(long, value_name = "N")]
    max_conns_per_ip: Option<usize>,
    /// Most connections in their opening handshake at once, per reactor thread; one more
    /// is answered 503 (default: no limit).
    #[arg(long, value_name = "N")]
    max_pending_handshakes: Option<usize>,
}

impl ServerArgs {
    fn builder(&self, default_port: u16) -> EngineBuilder {
        Engine::builder()
            .listen(
                self.listen
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], default_port))),
            )
            .threads(self.threads)
            .pin(!self.no_pin)
            .backend(self.backend)
            .handshake(HandshakeConfig {
                max_head_len: self.max_head,
                protocols: self.protocols.clone(),
                allowed_origins: (!self.allowed_origins.is_empty())
                    .then(|| self.allowed_origins.clone()),
            })
            .handshake_timeout(self.handshake_timeout)
            .limits(Limits {
                max_message: self.max_message,
                max_frame: self.max_frame.unwrap_or(self.max_message),
                max_fragments: self.max_fragments,
                close_timeout: self.close_timeout,
                idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            })
            .max_lag_bytes(self.max_lag)
            .sndbuf(self.sndbuf)
            .max_conns(self.max_conns)
            .max_conns_per_ip(self.max_conns_per_ip)
            .max_pending_handshakes(self.max_pending_handshakes)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ringcast: invalid --log filter '{}': {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Echo(args) => run(args.builder(9001), "echo", None),
        Command::Serve(args) => {
            let rules = TopicRules {
                max_name_len: args.max_topic_len,
                max_per_connection: args.max_topics,
            };
            for s in args
                .demo
                .then_some(&args.demo_symbols)
                .into_iter()
                .flatten()
            {
                if let Err(e) = rules.check(s) {
                    eprintln!("ringcast: --demo-symbols: '{s}': {e}");
                    return ExitCode::from(2);
                }
            }
            let builder = args
                .server
                .builder(8080)
                .handler(Broadcast {
                    publish_token: args.publish_token.clone(),
                    rules: rules.clone(),
                })
                .topics(rules)
                .slow_consumer(args.slow_consumer)
                .inbox_capacity(args.inbox)
                .history(History {
                    messages: args.history,
                    bytes: args.history_bytes,
                    idle_ttl: args.history_ttl,
                })
                .heartbeat((!args.heartbeat.is_zero()).then_some(args.heartbeat));
            let demo = args
                .demo
                .then(|| (args.demo_symbols.clone(), args.demo_rate));
            run(builder, "serve", demo)
        }
    }
}

fn run(builder: EngineBuilder, mode: &str, demo: Option<(Vec<String>, f64)>) -> ExitCode {
    let threads = builder.config().reactor_count();
    let handle = match builder.start() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ringcast: {e}");
            return ExitCode::from(1);
        }
    };
    let trigger = handle.shutdown_trigger();
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringcast: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!("signal {sig}: shutting down");
            trigger.trigger();
        }
    });
    tracing::info!(
        "ringcast {mode} listening on ws://{} ({threads} reactor{}, {})",
        handle.local_addr(),
        if threads == 1 { "" } else { "s" },
        match handle.backend() {
            Backend::Uring => "io_uring",
            _ => "epoll",
        }
    );
    let _feed = demo.map(|(symbols, rate)| {
        tracing::info!(
            "demo feed: {rate} ticks/s on topics {}; try ws://{}/sub/{}",
            symbols.join(","),
            handle.local_addr(),
            symbols.join(",")
        );
        DemoFeed::start(handle.fanout(), &symbols, rate)
    });
    match handle.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: {e}");
            ExitCode::from(1)
        }
    }
}

/// Parses a byte size: a number with an optional unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB;
/// all powers of 1024).
fn parse_size(s: &str) -> Result<usize, String> {
    let (n, unit) = number_and_unit(s, "a size (examples: 1000, 64KiB, 16MiB)")?;
    let n = usize::try_from(n).map_err(|_| format!("'{s}' is too large"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Splits `12unit` into the number and the unit; `what` names the expected form.
fn number_and_unit<'a>(s: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n = num.parse().map_err(|_| format!("'{s}' is not {what}"))?;
    Ok((n, unit))
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}

fn parse_policy(s: &str) -> Result<SlowConsumer, String> {
    s.parse()
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() && r <= 1_000_000.0 => Ok(r),
        _ => Err(format!(
            "'{s}' is not a rate between 0 and 1000000 per second"
        )),
    }
}

/// Parses a duration: a number with a unit (ms, s, m), or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s, "a duration (examples: 10s, 500ms, 2m)")?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        other => Err(format!("unknown duration unit '{other}' (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5TB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("10h").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
