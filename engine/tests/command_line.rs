//! The tests of the `ringcast` command: each starts the binary (built with the `cli`
//! feature) as a child process and checks what a user of it sees: flags, the config file,
//! logs, signals, draining, a cluster node. One test binary, as for `integration.rs`.

mod binary;
mod cluster_util;
mod fanout_util;
mod util;

mod cluster_binary;
mod config_file;
mod drain_under_load;
mod http_drain;
mod log_format;
mod server_binary;
