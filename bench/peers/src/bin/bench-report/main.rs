//! `bench-report`: turns the raw runs of `scripts/bench.sh` into the results files.
//!
//! Input: the run's `meta.json` (machine, commit, mode, implementations, scenarios, the
//! commands) and `runs.jsonl` (one line per loadgen run: its JSON report, exit code, and
//! CPU-time samples of the server and loadgen processes). Output, beside `--out PREFIX`:
//!
//! - `PREFIX.json`: the meta, every run with its derived metrics, and the medians;
//! - `PREFIX.md`: the window matrix (ringcast against the `raw-batch` ceiling at 16, 64
//!   and 256 messages in flight), one table per other scenario, ratios, problems, the
//!   exact commands;
//! - `PREFIX-throughput.svg`, `PREFIX-latency.svg`: bar charts per implementation.
//!
//! CPU use is the server's (and loadgen's) `utime + stime` delta over the measured window
//! (after connect and warm-up, for the run's duration), interpolated between samples
//! taken every ~100 ms: a server near 100 % is the bottleneck, as it should be; one well
//! under it while loadgen is near 100 % means loadgen was.
//!
//! The pipeline: [`model`] reads the inputs, [`stats`] takes the medians per scenario and
//! implementation, [`ratio`] compares implementations; [`json`], [`markdown`] and
//! [`chart`] write the outputs.

mod chart;
mod format;
mod json;
mod markdown;
mod model;
mod ratio;
mod stats;

use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::Value;

type Res<T> = Result<T, Box<dyn Error>>;

/// Results files (JSON, markdown, SVG charts) from the raw runs of `scripts/bench.sh`.
#[derive(Debug, Parser)]
#[command(name = "bench-report")]
struct Cli {
    /// The run's meta.json (machine, commit, implementations, scenarios).
    #[arg(long)]
    meta: PathBuf,
    /// One JSON object per line, one line per loadgen run.
    #[arg(long)]
    runs: PathBuf,
    /// Output prefix: PREFIX.json, PREFIX.md, PREFIX-throughput.svg, PREFIX-latency.svg.
    #[arg(long)]
    out: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("bench-report: {e}");
        std::process::exit(1);
    }
}

/// Reads the inputs, summarises them and writes the four results files.
fn run(cli: &Cli) -> Res<()> {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&cli.meta)?)?;
    let text = std::fs::read_to_string(&cli.runs)?;
    let scenarios = model::scenarios(&meta)?;
    let impls = model::impls(&meta)?;
    let runs = model::runs(&text)?;
    let cells = stats::summarize(&scenarios, &impls, &runs);
    let prefix = cli.out.to_string_lossy().into_owned();
    let stem = cli
        .out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ratios = ratio::ratios(&scenarios, &impls, &cells);

    let text = json::results(&meta, &runs, &cells, &ratios)?;
    std::fs::write(format!("{prefix}.json"), text)?;
    let md = markdown::markdown(&meta, &scenarios, &impls, &runs, &cells, &ratios, &stem);
    std::fs::write(format!("{prefix}.md"), md)?;
    chart::throughput(
        Path::new(&format!("{prefix}-throughput.svg")),
        &meta,
        &scenarios,
        &impls,
        &cells,
    )?;
    chart::latency(
        Path::new(&format!("{prefix}-latency.svg")),
        &meta,
        &scenarios,
        &impls,
        &cells,
    )?;
    eprintln!("bench-report: wrote {prefix}.{{json,md}}, {prefix}-{{throughput,latency}}.svg");
    Ok(())
}
