//! The engine's integration tests: real servers on loopback sockets, spoken to by real
//! clients (tungstenite, raw sockets), brokers (NATS, Redis) and child processes. One test
//! binary for all of them: each file of this directory is a module here, so the shared
//! helpers are compiled once and the binary linked once, not once per file. The tests that
//! start the `ringcast` binary itself are in `command_line.rs`; `scale.rs`, which loads
//! the whole machine, is a binary of its own, so that `cargo test` runs it alone.

mod cluster_util;
mod fanout_util;
mod util;

mod backend_choice;
mod cluster_broken_broker;
mod cluster_nats;
mod cluster_redis;
mod conn_limits;
mod engine_faults;
mod fanout_delivery;
mod fanout_logs;
mod fanout_server;
mod fanout_slow_consumer;
mod fanout_topics;
mod http_endpoints;
mod interop;
mod many_at_once;
mod market_data;
mod rfc6455_close;
mod rfc6455_fragmentation;
mod rfc6455_framing;
mod rfc6455_handshake;
mod rfc6455_limits;
mod rfc6455_misc;
mod rfc6455_ping;
mod rfc6455_utf8;
mod writes_in_flight;
