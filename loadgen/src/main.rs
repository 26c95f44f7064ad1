//! `loadgen`: the ringcast load generator.
//!
//! Four scenarios against any RFC 6455 server on loopback: `fanout` (subscribers and
//! publishers on `/sub` and `/pub`, the broadcast contract; subscribers may speak the
//! `ringcast.v1` subprotocol), `connect` (idle connection scale and server memory), `echo`
//! (round trips) and `resume` (`ringcast.v1` subscribers that reset their connections and
//! resume with `?since=`). See `loadgen --help`.
//!
//! ```text
//!  scenario (fanout/connect/echo/resume)   plans connections, drives phases, reports
//!     │ Backend
//!     ├─ Local: Run ── reactor threads (mio/epoll, one read buffer each)
//!     │                  └─ per connection: handshake → frames → role
//!     │                       (subscriber: seq/latency accounting; publisher: paced,
//!     │                        windowed sends; echo: round trips; idle)
//!     └─ Workers: child `loadgen --worker w/N` processes (own 127.0.0.(2+w) source
//!                 address), JSON lines on stdout, commands on stdin; tallies merged
//! ```
//! Payloads carry a 16-byte stamp (publisher, sequence number, send time on a clock all
//! processes share); latency is measured end to end from it.
//!
//! Exit codes: 0 success, 1 the run could not be made (no server, refused handshake,
//! bad arguments past clap), 2 usage errors (clap), 3 an `--expect-all` expectation
//! failed.

#![forbid(unsafe_code)]
// The fan-out report is one `serde_json::json!` literal with more fields than the macro's
// default recursion limit allows.
#![recursion_limit = "256"]

mod cli;
mod clock;
mod cost;
mod driver;
mod envelope;
mod frame;
mod handshake;
mod limits;
mod payload;
mod progress;
mod reactor;
mod report;
mod resume;
mod rng;
mod run;
mod sample;
mod scenario;
mod sequence;
mod target;

use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let (name, json, result) = match &cli.command {
        Command::Fanout(a) => ("fanout", a.common.json, scenario::fanout(a)),
        Command::Connect(a) => ("connect", a.common.json, scenario::connect(a)),
        Command::Echo(a) => ("echo", a.common.json, scenario::echo(a)),
        Command::Resume(a) => ("resume", a.common.json, scenario::resume(a)),
    };
    let code = match result {
        Ok(code) => code,
        Err(msg) => scenario::fail(name, json, &msg),
    };
    std::process::exit(code);
}
