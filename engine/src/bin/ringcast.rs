//! The `ringcast` server binary.
//!
//! `ringcast serve` runs the broadcast server and `ringcast echo` the echo server the
//! conformance suites expect; `ringcast config default` prints a settings file with every
//! default. Every flag has a default; `ringcast serve --help` lists them. `serve` also
//! reads a settings file (`--config`) and `RINGCAST_*` variables, under its flags.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ringcast::EngineBuilder;
use ringcast::fanout::SlowConsumer;
use ringcast::reactor::config::DEFAULT_URING_RINGS;
use ringcast::server::demo::{DEFAULT_SYMBOLS, DemoFeed};
use ringcast::server::settings::{parse_duration, parse_rate, parse_size};
use ringcast::server::{Backend, Echo, LogFormat, Settings};

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
    /// Log format: text (one line per event, `key=value` fields; colours only when stderr
    /// is a terminal and NO_COLOR is unset) or json (one JSON object per line).
    #[arg(long, global = true, default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the flags does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Echo every message back with its type, on paths `/` and `/echo` (the mode
    /// WebSocket conformance suites such as Autobahn use).
    Echo(ServerArgs),
    /// Broadcast: subscribers on /sub or /sub/TOPIC[,TOPIC…], publishers on /pub or
    /// /pub/TOPIC; every message a publisher sends reaches every subscriber of the topic.
    ///
    /// Plain HTTP on the same port (GET or HEAD; one request per connection):
    /// /healthz (200 while serving), /readyz (200, or 503 while draining after SIGTERM or
    /// SIGINT), /metrics (Prometheus text; --metrics-token, --no-metrics), /stats (JSON),
    /// /ringcast.js (the browser client), / (the demo page, with --demo or --ui).
    ///
    /// Settings come from the defaults, then the file given with --config, then
    /// RINGCAST_* environment variables (RINGCAST_MAX_MESSAGE for --max-message; lists
    /// comma-separated), then these flags: each overrides the ones before it.
    /// `ringcast config default` prints a file with every key.
    Serve(ServeArgs),
    /// Settings files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a settings file (TOML) with every key of `serve` at its default, each
    /// explained; it reads back as the defaults.
    Default,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Settings file (TOML; `ringcast config default` prints one). RINGCAST_* variables
    /// override it, and flags override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    /// Publishers must present this token (Authorization: Bearer TOKEN, or ?token=TOKEN);
    /// without it anyone may publish. Prefer RINGCAST_PUBLISH_TOKEN or the file: a flag is
    /// visible to other users of the machine.
    #[arg(long)]
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
    /// Most topics each reactor keeps a history of, besides topics with subscribers there
    /// (and all of them together to --history-memory).
    #[arg(long, default_value_t = 4096)]
    history_topics: usize,
    /// Most bytes of history each reactor keeps over all its topics together; while
    /// more topics are held than fit at --history-bytes each, each keeps an equal share.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    history_memory: usize,
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
    /// Join a cluster through this broker:
    /// nats://[USER:PASSWORD@|TOKEN@]HOST:PORT[,HOST:PORT…] (nats-server -js; the servers
    /// tried in turn) or redis://[[USER]:PASSWORD@]HOST:PORT[/DB], credentials
    /// percent-encoded (shown as *** in logs and stats). A publication on any node reaches
    /// the subscribers of every node, numbered alike. With credentials, prefer
    /// RINGCAST_CLUSTER or the file: a flag is visible to every user in `ps`.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// Broker subject prefix: topic T is the subject PREFIX + T.
    #[arg(long, value_name = "PREFIX", default_value = "ringcast.")]
    cluster_prefix: String,
    /// This node's id in the cluster (default: random, logged at start).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Do not serve /metrics and /stats; they answer 404 (key: metrics = false).
    #[arg(long)]
    no_metrics: bool,
    /// /metrics and /stats require this token (Authorization: Bearer TOKEN), else 401.
    /// Prefer RINGCAST_METRICS_TOKEN or the file: a flag is visible to other users.
    #[arg(long, value_name = "TOKEN")]
    metrics_token: Option<String>,
    /// Serve the demo page at / (--demo serves it too).
    #[arg(long)]
    ui: bool,
    /// On SIGTERM or SIGINT, /readyz answers 503 for this long while everything is still
    /// served (a load balancer stops sending new clients), then every connection is
    /// closed with 1001; a second signal cuts it short. 0 closes at once.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drain_delay: Duration,
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
    /// Do not pin reactor threads to cores (key: pin = false).
    #[arg(long)]
    no_pin: bool,
    /// I/O backend: uring (io_uring; fails if the kernel refuses it), epoll, or auto
    /// (io_uring when the kernel allows it, else epoll; the log says which and why).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// io_uring: most rings per reactor thread, each holding as many connections as
    /// `ulimit -n` (the kernel's cap on a ring's table of direct descriptors); rings
    /// beyond the first open only as the others fill.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_URING_RINGS)]
    uring_rings: usize,
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
    /// Bytes of large messages in progress (past the first 64 KiB of each) that all
    /// connections may hold together; a message that would take more: close 1013 "Try
    /// Again Later".
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    message_memory: usize,
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
    /// A subprotocol the server speaks (repeat, in order of preference; key: protocols);
    /// ringcast.v1 is always spoken too, after those given.
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Accept browser upgrades only from this Origin (repeat; default: any origin; key:
    /// allowed-origins).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// How far (bytes) a subscriber may fall behind, over all its topics together (the rest
    /// of a message it is part way through not counted), before the slow-consumer policy
    /// acts; also the limit of a connection's queued replies (echoes), past which its
    /// input is not read until they drain.
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

/// The flags given on the command line: these, and only these, override the file and
/// the environment (a flag's default must not).
struct Given<'a>(Option<&'a ArgMatches>);

impl Given<'_> {
    fn set<T: Clone>(&self, id: &str, field: &mut T, value: &T) {
        let given = self
            .0
            .is_none_or(|m| m.value_source(id) == Some(ValueSource::CommandLine));
        if given {
            *field = value.clone();
        }
    }
}

impl ServerArgs {
    fn apply(&self, s: &mut Settings, given: &Given<'_>) {
        if let Some(addr) = self.listen {
            s.listen = addr;
        }
        if self.no_pin {
            s.pin = false;
        }
        given.set("threads", &mut s.threads, &self.threads);
        given.set("backend", &mut s.backend, &self.backend);
        given.set("uring_rings", &mut s.uring_rings, &self.uring_rings);
        given.set("max_message", &mut s.max_message, &self.max_message);
        given.set("max_frame", &mut s.max_frame, &self.max_frame);
        given.set("max_fragments", &mut s.max_fragments, &self.max_fragments);
        given.set(
            "message_memory",
            &mut s.message_memory,
            &self.message_memory,
        );
        given.set("max_head", &mut s.max_head, &self.max_head);
        given.set(
            "handshake_timeout",
            &mut s.handshake_timeout,
            &self.handshake_timeout,
        );
        given.set("close_timeout", &mut s.close_timeout, &self.close_timeout);
        given.set("idle_timeout", &mut s.idle_timeout, &self.idle_timeout);
        given.set("protocols", &mut s.protocols, &self.protocols);
        given.set(
            "allowed_origins",
            &mut s.allowed_origins,
            &self.allowed_origins,
        );
        given.set("max_lag", &mut s.max_lag, &self.max_lag);
        given.set("sndbuf", &mut s.sndbuf, &self.sndbuf);
        given.set("max_conns", &mut s.max_conns, &self.max_conns);
        given.set(
            "max_conns_per_ip",
            &mut s.max_conns_per_ip,
            &self.max_conns_per_ip,
        );
        given.set(
            "max_pending_handshakes",
            &mut s.max_pending_handshakes,
            &self.max_pending_handshakes,
        );
    }
}

impl ServeArgs {
    fn apply(&self, s: &mut Settings, given: &Given<'_>) {
        self.server.apply(s, given);
        if self.demo {
            s.demo = true;
        }
        given.set("publish_token", &mut s.publish_token, &self.publish_token);
        given.set("slow_consumer", &mut s.slow_consumer, &self.slow_consumer);
        given.set("max_topic_len", &mut s.max_topic_len, &self.max_topic_len);
        given.set("max_topics", &mut s.max_topics, &self.max_topics);
        given.set("inbox", &mut s.inbox, &self.inbox);
        given.set("history", &mut s.history, &self.history);
        given.set("history_bytes", &mut s.history_bytes, &self.history_bytes);
        given.set("history_ttl", &mut s.history_ttl, &self.history_ttl);
        given.set(
            "history_topics",
            &mut s.history_topics,
            &self.history_topics,
        );
        given.set(
            "history_memory",
            &mut s.history_memory,
            &self.history_memory,
        );
        given.set("heartbeat", &mut s.heartbeat, &self.heartbeat);
        given.set("cluster", &mut s.cluster, &self.cluster);
        given.set(
            "cluster_prefix",
            &mut s.cluster_prefix,
            &self.cluster_prefix,
        );
        given.set("node_id", &mut s.node_id, &self.node_id);
        given.set("demo_rate", &mut s.demo_rate, &self.demo_rate);
        given.set("demo_symbols", &mut s.demo_symbols, &self.demo_symbols);
        if self.no_metrics {
            s.metrics = false;
        }
        given.set("metrics_token", &mut s.metrics_token, &self.metrics_token);
        if self.ui {
            s.ui = true;
        }
        given.set("drain_delay", &mut s.drain_delay, &self.drain_delay);
    }
}

impl Cli {
    /// The global flags (log filter and format).
    fn apply(&self, s: &mut Settings, given: &Given<'_>) {
        given.set("log", &mut s.log, &self.log);
        given.set("log_format", &mut s.log_format, &self.log_format);
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = matches.subcommand().map(|(_, m)| m);
    let settings = match &cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{}", Settings::DEFAULT_TOML);
            return ExitCode::SUCCESS;
        }
        Command::Echo(args) => {
            // Echo takes flags only: no file, no environment.
            let mut s = Settings::default();
            s.listen = SocketAddr::from(([127, 0, 0, 1], 9001));
            // No load balancer drains a conformance-suite server.
            s.drain_delay = Duration::ZERO;
            args.apply(&mut s, &Given(sub));
            Ok(s)
        }
        Command::Serve(args) => ringcast_env().and_then(|env| {
            let mut s = Settings::load(args.config.as_deref(), env).map_err(|e| e.to_string())?;
            args.apply(&mut s, &Given(sub));
            Ok(s)
        }),
    };
    let mut settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringcast: {e}");
            return ExitCode::from(2);
        }
    };
    cli.apply(&mut settings, &Given(Some(&matches)));
    if let Err(e) = settings.check() {
        eprintln!("ringcast: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = init_logs(&settings.log, settings.log_format) {
        eprintln!("ringcast: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Echo(_) => run(settings.builder().handler(Echo), "echo", &settings, false),
        _ => {
            warn_unknown_vars();
            run(settings.builder(), "serve", &settings, true)
        }
    }
}

/// The `RINGCAST_*` variables; one whose value is not UTF-8 is an error naming it.
fn ringcast_env() -> Result<Vec<(String, String)>, String> {
    std::env::vars_os()
        .filter_map(|(var, value)| {
            let var = var.into_string().ok()?;
            var.starts_with("RINGCAST_").then(|| {
                value
                    .into_string()
                    .map(|v| (var.clone(), v))
                    .map_err(|_| format!("{var}: the value is not UTF-8"))
            })
        })
        .collect()
}

/// A `RINGCAST_*` variable that names no key is most likely a typo: say so.
fn warn_unknown_vars() {
    // Read by the engine itself, not a key.
    const ENGINE_VARS: &[&str] = &["RINGCAST_URING"];
    for (var, _) in ringcast_env().unwrap_or_default() {
        if Settings::key_of_env_var(&var).is_none() && !ENGINE_VARS.contains(&var.as_str()) {
            tracing::warn!(var, "{var} names no setting; ignored");
        }
    }
}

/// Logs to stderr, one line per event: text (ANSI colours only on a terminal, so files
/// and journald get plain lines) or JSON.
fn init_logs(filter: &str, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .map_err(|e| format!("invalid log filter '{filter}': {e}"))?;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        // Otherwise a failed write is reported with `eprintln!`, which panics when stderr
        // is gone (a closed pipe), killing the reactor or signal thread that logged.
        .log_internal_errors(false);
    match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        _ => fmt.init(),
    }
    Ok(())
}

/// Runs the engine until a signal: the first one drains (not ready for `drain_delay`, a
/// second signal cuts it short), then every connection is closed.
fn run(builder: EngineBuilder, mode: &str, settings: &Settings, serve: bool) -> ExitCode {
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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if tx.send(sig).is_err() {
                break;
            }
        }
    });
    let drain = settings.drain_delay;
    std::thread::spawn(move || {
        let Ok(sig) = rx.recv() else {
            return;
        };
        // Each step acts before it logs: a log that cannot be written must not stop it.
        if !drain.is_zero() {
            trigger.set_ready(false);
            tracing::info!(
                signal = sig,
                "draining: /readyz answers 503 for {drain:?}, then connections close \
                 (a second signal: at once)"
            );
            let _ = rx.recv_timeout(drain);
        }
        trigger.trigger();
        tracing::info!(signal = sig, "shutting down on a signal");
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
    let http = settings.http_endpoints();
    if http.metrics {
        tracing::info!("metrics on http://{}/metrics", handle.local_addr());
    }
    if http.ui {
        tracing::info!("demo page on http://{}/", handle.local_addr());
    }
    let _feed: Option<DemoFeed> = serve.then_some(settings).and_then(|s| {
        let feed = s.start_demo(&handle)?;
        tracing::info!(
            "demo feed: {} ticks/s on topics {}; try ws://{}/sub/{}",
            s.demo_rate,
            s.demo_symbols.join(","),
            handle.local_addr(),
            s.demo_symbols.join(",")
        );
        Some(feed)
    });
    match handle.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}

fn parse_policy(s: &str) -> Result<SlowConsumer, String> {
    s.parse()
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn settings_from(args: &[&str], given_only: bool) -> Settings {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let sub = matches.subcommand().map(|(_, m)| m);
        let (given, global) = if given_only {
            (Given(sub), Given(Some(&matches)))
        } else {
            (Given(None), Given(None))
        };
        let mut s = Settings::default();
        match &cli.command {
            Command::Serve(a) => a.apply(&mut s, &given),
            _ => panic!("serve only"),
        }
        cli.apply(&mut s, &global);
        s
    }

    /// The flags' defaults shown by --help are the settings' defaults.
    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        assert_eq!(
            settings_from(&["ringcast", "serve"], false),
            Settings::default()
        );
    }

    /// Every key has a flag that sets it, found by its id.
    #[test]
    fn every_flag_overrides_its_key() {
        let args = concat!(
            "ringcast --log debug --log-format json serve --listen 127.0.0.1:1 ",
            "--threads 3 --no-pin --backend epoll --uring-rings 2 --max-message 1KiB --max-frame ",
            "2KiB --max-fragments 4 --message-memory 22MiB --max-head 3KiB --handshake-timeout 1s ",
            "--close-timeout 2s --idle-timeout 3s --protocol p --allow-origin o ",
            "--max-lag 4KiB --sndbuf 5KiB --max-conns 6 --max-conns-per-ip 7 ",
            "--max-pending-handshakes 8 --publish-token t --slow-consumer conflate ",
            "--max-topic-len 9 --max-topics 10 --inbox 11 --demo --demo-rate 12 ",
            "--history 13 --history-bytes 14KiB --history-ttl 15s --heartbeat 16s ",
            "--history-topics 17 --history-memory 21MiB --cluster nats://127.0.0.1:19 --cluster-prefix md. ",
            "--node-id n20 ",
            "--demo-symbols A,B --no-metrics --metrics-token m --ui --drain-delay 18s",
        );
        let args: Vec<&str> = args.split_whitespace().collect();
        let s = settings_from(&args, true);
        let d = Settings::default();
        // Field by field, so that a key no flag reaches is named.
        let same: Vec<&str> = [
            ("listen", s.listen == d.listen),
            ("threads", s.threads == d.threads),
            ("pin", s.pin == d.pin),
            ("backend", s.backend == d.backend),
            ("uring-rings", s.uring_rings == d.uring_rings),
            ("max-message", s.max_message == d.max_message),
            ("max-frame", s.max_frame == d.max_frame),
            ("max-fragments", s.max_fragments == d.max_fragments),
            ("message-memory", s.message_memory == d.message_memory),
            ("max-head", s.max_head == d.max_head),
            (
                "handshake-timeout",
                s.handshake_timeout == d.handshake_timeout,
            ),
            ("close-timeout", s.close_timeout == d.close_timeout),
            ("idle-timeout", s.idle_timeout == d.idle_timeout),
            ("protocols", s.protocols == d.protocols),
            ("allowed-origins", s.allowed_origins == d.allowed_origins),
            ("max-lag", s.max_lag == d.max_lag),
            ("sndbuf", s.sndbuf == d.sndbuf),
            ("max-conns", s.max_conns == d.max_conns),
            ("max-conns-per-ip", s.max_conns_per_ip == d.max_conns_per_ip),
            (
                "max-pending-handshakes",
                s.max_pending_handshakes == d.max_pending_handshakes,
            ),
            ("publish-token", s.publish_token == d.publish_token),
            ("slow-consumer", s.slow_consumer == d.slow_consumer),
            ("max-topic-len", s.max_topic_len == d.max_topic_len),
            ("max-topics", s.max_topics == d.max_topics),
            ("inbox", s.inbox == d.inbox),
            ("history", s.history == d.history),
            ("history-bytes", s.history_bytes == d.history_bytes),
            ("history-ttl", s.history_ttl == d.history_ttl),
            ("history-topics", s.history_topics == d.history_topics),
            ("history-memory", s.history_memory == d.history_memory),
            ("heartbeat", s.heartbeat == d.heartbeat),
            ("cluster", s.cluster == d.cluster),
            ("cluster-prefix", s.cluster_prefix == d.cluster_prefix),
            ("node-id", s.node_id == d.node_id),
            ("demo", s.demo == d.demo),
            ("demo-rate", s.demo_rate == d.demo_rate),
            ("demo-symbols", s.demo_symbols == d.demo_symbols),
            ("metrics", s.metrics == d.metrics),
            ("metrics-token", s.metrics_token == d.metrics_token),
            ("ui", s.ui == d.ui),
            ("drain-delay", s.drain_delay == d.drain_delay),
            ("log", s.log == d.log),
            ("log-format", s.log_format == d.log_format),
        ]
        .into_iter()
        .filter_map(|(k, same)| same.then_some(k))
        .collect();
        assert!(same.is_empty(), "flags did not set {same:?}");
        // The list above covers every key.
        assert_eq!(Settings::keys().len(), 43);
    }
}
