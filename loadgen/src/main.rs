//! `loadgen`: the ringcast load generator.
//!
//! The fan-out, connection-scale and echo scenarios arrive with their own issue; this
//! first version only establishes the binary and its command-line surface.

use clap::Parser;

/// Load generator for WebSocket broadcast servers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
    eprintln!("loadgen: no scenario is implemented yet (see the benchmark issue)");
    std::process::exit(2);
}
