//! The settings of `ringcast serve`, as an operator writes them: a TOML file
//! (`ringcast.toml`), `RINGCAST_*` environment variables, and the binary's flags.
//!
//! Each key is named like its flag (`max-message` is `--max-message` and
//! `RINGCAST_MAX_MESSAGE`); the exceptions are the repeatable flags, whose keys are lists
//! (`protocols` for `--protocol`, `allowed-origins` for `--allow-origin`), and `pin` and
//! `metrics`, which `--no-pin` and `--no-metrics` set to false. Sizes are bytes or text with a unit (`"64KiB"`, `"16MiB"`),
//! durations seconds or text with a unit (`"500ms"`, `"10s"`, `"2m"`). Precedence, lowest
//! first: the defaults ([`Settings::default`], also [`Settings::DEFAULT_TOML`], which
//! `ringcast config default` prints), the file, the environment, the flags (applied by the
//! binary on the fields). An unknown key or a value of the wrong form is an error naming
//! the key and its line, or the variable ([`SettingsError`]).
//!
//! The same type builds an engine from Rust:
//!
//! ```
//! use ringcast::server::Settings;
//!
//! let mut settings = Settings::from_toml_str(
//!     r#"
//!     listen = "127.0.0.1:0"    # port 0: any free port
//!     max-message = "1MiB"
//!     slow-consumer = "conflate"
//!     "#,
//! )?;
//! settings.threads = 1;
//! let handle = settings.builder().start()?;
//! assert_eq!(handle.stats().reactors.len(), 1);
//! handle.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod layer;
mod value;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

pub use error::SettingsError;
pub use value::{parse_duration, parse_rate, parse_size};

use super::cluster::{ClusterConfig, ClusterError};
use super::demo::{DEFAULT_SYMBOLS, DemoFeed};
use super::{Backend, Broadcast, Engine, EngineBuilder, EngineHandle, HttpEndpoints};
use crate::fanout::{History, SlowConsumer, TopicRules};
use crate::protocol::MessageBudget;
use crate::protocol::conn::Limits;
use crate::protocol::envelope;
use crate::protocol::handshake::{DEFAULT_MAX_HEAD_LEN, HandshakeConfig};
use crate::reactor::config::{check_inbox, check_topic_len};

/// Everything `ringcast serve` can be told, with the defaults of
/// [`DEFAULT_TOML`](Self::DEFAULT_TOML). See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct Settings {
    /// Address to listen on; every reactor binds it with `SO_REUSEPORT`.
    #[serde(deserialize_with = "value::address")]
    pub listen: SocketAddr,
    /// Reactor threads (0: one per core).
    #[serde(deserialize_with = "value::count::deserialize")]
    pub threads: usize,
    /// Pin reactor threads to cores.
    pub pin: bool,
    /// I/O backend.
    #[serde(deserialize_with = "value::parsed")]
    pub backend: Backend,
    /// io_uring: most rings per reactor, each holding `RLIMIT_NOFILE` connections.
    #[serde(deserialize_with = "value::count::deserialize")]
    pub uring_rings: usize,
    /// Largest message accepted (all fragments), in bytes; over it: close 1009.
    #[serde(deserialize_with = "value::size::deserialize")]
    pub max_message: usize,
    /// Largest single frame accepted; `None`: `max_message`.
    #[serde(deserialize_with = "value::size::option")]
    pub max_frame: Option<usize>,
    /// Most fragments in one message; over it: close 1008. `None`: no limit.
    #[serde(deserialize_with = "value::count::option")]
    pub max_fragments: Option<u32>,
    /// Bytes of large messages in progress (past 64 KiB of each) that all connections
    /// may hold together; past it: close 1013.
    #[serde(deserialize_with = "value::size::deserialize")]
    pub message_memory: usize,
    /// Largest HTTP request head of the opening handshake; over it: 431.
    #[serde(deserialize_with = "value::size::deserialize")]
    pub max_head: usize,
    /// Time a client has to complete the opening handshake.
    #[serde(deserialize_with = "value::duration::deserialize")]
    pub handshake_timeout: Duration,
    /// Time allowed for the closing handshake and the peer's TCP close.
    #[serde(deserialize_with = "value::duration::deserialize")]
    pub close_timeout: Duration,
    /// Ping after this long without input, close 1001 after as long again; zero disables.
    #[serde(deserialize_with = "value::duration::deserialize")]
    pub idle_timeout: Duration,
    /// Subprotocols the server speaks, in order of preference.
    #[serde(deserialize_with = "value::list")]
    pub protocols: Vec<String>,
    /// Origins browsers may upgrade from; empty: any.
    #[serde(deserialize_with = "value::list")]
    pub allowed_origins: Vec<String>,
    /// How far (bytes) a subscriber may fall behind, over all its topics together, before
    /// the slow-consumer policy acts;
    /// also the limit of a connection's queued replies.
    #[serde(deserialize_with = "value::size::deserialize")]
    pub max_lag: usize,
    /// `SO_SNDBUF` of client sockets; 0 leaves kernel autotuning.
    #[serde(deserialize_with = "value::size::deserialize")]
    pub sndbuf: usize,
    /// Most connections open at once, whole server. `None`: no limit.
    #[serde(deserialize_with = "value::count::option")]
    pub max_conns: Option<usize>,
    /// Most connections open at once from one IP address. `None`: no limit.
    #[serde(deserialize_with = "value::count::option")]
    pub max_conns_per_ip: Option<usize>,
    /// Most connections in their opening handshake at once, per reactor. `None`: no limit.
    #[serde(deserialize_with = "value::count::option")]
    pub max_pending_handshakes: Option<usize>,
    /// Token publishers must present; `None`: anyone may publish.
    #[serde(deserialize_with = "value::some_string")]
    pub publish_token: Option<String>,
    /// What to do with a subscriber whose lag passes `max_lag`.
    #[serde(deserialize_with = "value::parsed")]
    pub slow_consumer: SlowConsumer,
    /// Longest topic name, in bytes.
    #[serde(deserialize_with = "value::count::deserialize")]
    pub max_topic_len: usize,
    /// Most topics one connection may subscribe to.
    #[serde(deserialize_with = "value::count::deserialize")]
    pub max_topics: usize,
    /// Publications each reactor's inbox holds.
    #[serde(deserialize_with = "value::count::deserialize")]
    pub inbox: usize,
    /// Messages of each topic kept for `ringcast.v1` snapshots and resumes (0: none).
    #[serde(deserialize_with = "value::count::deserialize")]
    pub history: usize,
    /// Most bytes of each topic's history, per reactor.
    #[serde(deserialize_with = "value::size::deserialize")]
    pub history_bytes: usize,
    /// A topic without subscribers and publications this long forgets its history.
    #[serde(deserialize_with = "value::duration::deserialize")]
    pub history_ttl: Duration,
    /// Most topics each reactor keeps a history of (besides topics with subscribers).
    #[serde(deserialize_with = "value::count::deserialize")]
    pub history_topics: usize,
    /// Most bytes of history each reactor keeps over all its topics together.
    #[serde(deserialize_with = "value::size::deserialize")]
    pub history_memory: usize,
    /// How often `ringcast.v1` subscribers get a heartbeat; zero disables.
    #[serde(deserialize_with = "value::duration::deserialize")]
    pub heartbeat: Duration,
    /// The cluster's broker: `nats://[user:password@|token@]host:port` or
    /// `redis://[[user]:password@]host:port[/db]` (credentials percent-encoded); `None`: a
    /// node on its own. See [`cluster`](super::cluster).
    #[serde(deserialize_with = "value::some_string")]
    pub cluster: Option<String>,
    /// Broker subject prefix: topic `T` is `{cluster-prefix}T`.
    pub cluster_prefix: String,
    /// This node's id in the cluster; `None`: random (logged at start).
    #[serde(deserialize_with = "value::some_string")]
    pub node_id: Option<String>,
    /// Publish the synthetic market-data feed ([`start_demo`](Self::start_demo)).
    pub demo: bool,
    /// Demo ticks per second.
    #[serde(deserialize_with = "value::rate")]
    pub demo_rate: f64,
    /// Demo symbols, each a topic.
    #[serde(deserialize_with = "value::list")]
    pub demo_symbols: Vec<String>,
    /// Serve `GET /metrics` (Prometheus text) and `GET /stats` (JSON).
    pub metrics: bool,
    /// Token `/metrics` and `/stats` require (`Authorization: Bearer TOKEN`); `None`: open.
    #[serde(deserialize_with = "value::some_string")]
    pub metrics_token: Option<String>,
    /// Serve the demo page at `GET /` (also on with `demo`).
    pub ui: bool,
    /// On SIGTERM or SIGINT, how long `/readyz` answers 503 while everything is still
    /// served, before connections are closed. Read by the binary
    /// ([`EngineHandle::drain`] does the same from Rust).
    #[serde(deserialize_with = "value::duration::deserialize")]
    pub drain_delay: Duration,
    /// Log filter (tracing `EnvFilter` syntax). Read by the binary; an embedder sets up its
    /// own subscriber.
    pub log: String,
    /// Log format. Read by the binary.
    #[serde(deserialize_with = "value::parsed")]
    pub log_format: LogFormat,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = Limits::default();
        let topics = TopicRules::default();
        let history = History::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            threads: 0,
            pin: true,
            backend: Backend::Auto,
            uring_rings: crate::reactor::config::DEFAULT_URING_RINGS,
            max_message: limits.max_message,
            max_frame: None,
            max_fragments: limits.max_fragments,
            message_memory: limits.message_budget.max(),
            max_head: DEFAULT_MAX_HEAD_LEN,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: limits.close_timeout,
            idle_timeout: limits.idle_timeout.unwrap_or(Duration::ZERO),
            protocols: Vec::new(),
            allowed_origins: Vec::new(),
            max_lag: 4 << 20,
            sndbuf: 128 << 10,
            max_conns: None,
            max_conns_per_ip: None,
            max_pending_handshakes: None,
            publish_token: None,
            slow_consumer: SlowConsumer::Close,
            max_topic_len: topics.max_name_len,
            max_topics: topics.max_per_connection,
            inbox: crate::fanout::ring::DEFAULT_INBOX_CAPACITY,
            history: history.messages,
            history_bytes: history.bytes,
            history_ttl: history.idle_ttl,
            history_topics: history.topics,
            history_memory: history.memory,
            heartbeat: Duration::from_secs(5),
            cluster: None,
            cluster_prefix: super::cluster::DEFAULT_PREFIX.to_owned(),
            node_id: None,
            demo: false,
            demo_rate: 2.0,
            demo_symbols: DEFAULT_SYMBOLS.iter().map(|s| (*s).to_owned()).collect(),
            metrics: true,
            metrics_token: None,
            ui: false,
            drain_delay: Duration::from_secs(2),
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

impl Settings {
    /// A settings file holding every key at its default, each with a comment: what
    /// `ringcast config default` prints. It reads back as [`Settings::default`].
    pub const DEFAULT_TOML: &'static str = include_str!("settings/default.toml");

    /// Reads a TOML document over the defaults.
    ///
    /// # Errors
    /// Invalid TOML, an unknown key, or a value not of its key's form (the error names the
    /// key and its line); values that do not fit together ([`check`](Self::check)).
    pub fn from_toml_str(text: &str) -> Result<Self, SettingsError> {
        let file = layer::file_entries(text, None)?;
        let settings = layer::read(file, Vec::new(), None)?;
        settings.check()?;
        Ok(settings)
    }

    /// Reads the file at `path` (if any) over the defaults, then the `RINGCAST_*` variables
    /// among `env` over the file. Variables that name no key are left alone.
    ///
    /// ```
    /// let env = [("RINGCAST_MAX_TOPICS".to_owned(), "8".to_owned())];
    /// let settings = ringcast::server::Settings::load(None, env)?;
    /// assert_eq!(settings.max_topics, 8);
    /// # Ok::<(), ringcast::server::SettingsError>(())
    /// ```
    ///
    /// # Errors
    /// As [`from_toml_str`](Self::from_toml_str), naming the file; a variable whose value
    /// is not of its key's form, naming the variable; a file that cannot be read.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| SettingsError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let file = layer::file_entries(&text, path)?;
        let settings = layer::read(file, layer::env_entries(env), path)?;
        settings.check()?;
        Ok(settings)
    }

    /// Every key, in the order of the fields.
    pub fn keys() -> &'static [&'static str] {
        keys()
    }

    /// The environment variable that sets `key`: `max-message` → `RINGCAST_MAX_MESSAGE`.
    pub fn env_var(key: &str) -> String {
        format!(
            "{}{}",
            layer::ENV_PREFIX,
            key.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// The key a `RINGCAST_*` variable sets, if it names one.
    pub fn key_of_env_var(var: &str) -> Option<String> {
        layer::env_key(var)
    }

    /// Checks what each value's form cannot: the demo rate's range, tokens that are not
    /// empty, `inbox` within 1..=[`MAX_INBOX_CAPACITY`](crate::fanout::ring::MAX_INBOX_CAPACITY),
    /// `max-topic-len` within 1..=[`MAX_TOPIC_LEN`](crate::fanout::MAX_TOPIC_LEN), and, with the demo on, that its symbols are valid topic
    /// names under it.
    ///
    /// # Errors
    /// The key whose value does not fit, and why.
    pub fn check(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, message: String| SettingsError::Invalid {
            key: key.to_owned(),
            message,
        };
        value::check_rate(self.demo_rate).map_err(|m| invalid("demo-rate", m))?;
        for (key, token) in [
            ("publish-token", &self.publish_token),
            ("metrics-token", &self.metrics_token),
        ] {
            if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(invalid(
                    key,
                    "an empty token would let no one in (leave the key out to need none)"
                        .to_owned(),
                ));
            }
        }
        check_inbox(self.inbox).map_err(|e| invalid("inbox", e))?;
        if self.message_memory.saturating_add(MessageBudget::FREE) < self.max_message {
            return Err(invalid(
                "message-memory",
                format!(
                    "{} bytes hold no message of max-message ({} bytes): give it at least \
                     max-message less 64 KiB",
                    self.message_memory, self.max_message
                ),
            ));
        }
        check_topic_len(self.max_topic_len).map_err(|e| invalid("max-topic-len", e))?;
        self.cluster_config().map_err(|e| {
            let key = match e {
                ClusterError::NodeId(_) => "node-id",
                ClusterError::Prefix(_) => "cluster-prefix",
                _ => "cluster",
            };
            invalid(key, e.to_string())
        })?;
        if self.demo {
            let rules = self.topic_rules();
            for s in &self.demo_symbols {
                rules
                    .check(s)
                    .map_err(|e| invalid("demo-symbols", format!("'{s}': {e}")))?;
            }
        }
        Ok(())
    }

    /// The cluster these settings join, if any (a random node id unless `node-id`).
    ///
    /// # Errors
    /// A bad `cluster` URL, `cluster-prefix` or `node-id`.
    pub fn cluster_config(&self) -> Result<Option<ClusterConfig>, ClusterError> {
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let mut c = ClusterConfig::new(url)?.prefix(&self.cluster_prefix)?;
        if let Some(id) = &self.node_id {
            c = c.node_id(id)?;
        }
        Ok(Some(c.history(self.history.max(1) as u64)))
    }

    /// The topic rules these settings make.
    pub fn topic_rules(&self) -> TopicRules {
        TopicRules {
            max_name_len: self.max_topic_len,
            max_per_connection: self.max_topics,
        }
    }

    /// An engine builder with these settings and the [`Broadcast`] handler (what
    /// `ringcast serve` runs); replace the handler to serve something else.
    pub fn builder(&self) -> EngineBuilder {
        let rules = self.topic_rules();
        Engine::builder()
            .listen(self.listen)
            .threads(self.threads)
            .pin(self.pin)
            .backend(self.backend)
            .uring_rings(self.uring_rings)
            .handshake(HandshakeConfig {
                max_head_len: self.max_head,
                protocols: self.protocols(),
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
                message_budget: MessageBudget::new(self.message_memory),
            })
            .max_lag_bytes(self.max_lag)
            .sndbuf(self.sndbuf)
            .max_conns(self.max_conns)
            .max_conns_per_ip(self.max_conns_per_ip)
            .max_pending_handshakes(self.max_pending_handshakes)
            .handler(Broadcast {
                publish_token: self.publish_token.clone(),
                rules: rules.clone(),
            })
            .topics(rules)
            .slow_consumer(self.slow_consumer)
            .inbox_capacity(self.inbox)
            .history(History {
                messages: self.history,
                bytes: self.history_bytes,
                idle_ttl: self.history_ttl,
                topics: self.history_topics,
                memory: self.history_memory,
            })
            .heartbeat((!self.heartbeat.is_zero()).then_some(self.heartbeat))
            .http(self.http_endpoints())
            .cluster(self.cluster_config().ok().flatten())
    }

    /// The plain HTTP endpoints these settings serve: the demo page with `ui` or `demo`.
    pub fn http_endpoints(&self) -> HttpEndpoints {
        HttpEndpoints {
            metrics: self.metrics,
            metrics_token: self.metrics_token.clone(),
            ui: self.ui || self.demo,
        }
    }

    /// The subprotocols spoken: those listed, then `ringcast.v1` (always spoken).
    fn protocols(&self) -> Vec<String> {
        let mut p = self.protocols.clone();
        if !p.iter().any(|p| p == envelope::PROTOCOL) {
            p.push(envelope::PROTOCOL.to_owned());
        }
        p
    }

    /// Starts the demo feed on `handle` when `demo` is on.
    pub fn start_demo(&self, handle: &EngineHandle) -> Option<DemoFeed> {
        self.demo
            .then(|| DemoFeed::start(handle.fanout(), &self.demo_symbols, self.demo_rate))
    }
}

/// How the binary writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// One line of text per event, fields as `key=value`; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, fields as members.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format '{other}' (use text or json)")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The keys, as serde's derive names the fields (read once, by asking it).
fn keys() -> &'static [&'static str] {
    static KEYS: OnceLock<&'static [&'static str]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut probe = FieldProbe(&[]);
        let _ = Settings::deserialize(&mut probe);
        probe.0
    })
}

/// A deserializer that only notes the field names a struct asks for.
struct FieldProbe(&'static [&'static str]);

impl<'de> serde::Deserializer<'de> for &mut FieldProbe {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(serde::de::Error::custom("field probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests;
