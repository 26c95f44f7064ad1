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

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{Value, json};

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

/// Metrics whose median the summary reports; `true` when higher is better.
const METRICS: &[(&str, bool)] = &[
    ("deliveries_per_sec", true),
    ("published_per_sec", true),
    ("lost", false),
    ("out_of_order", false),
    ("duplicates", false),
    ("closed_by_server", false),
    ("p50_us", false),
    ("p90_us", false),
    ("p99_us", false),
    ("p999_us", false),
    ("max_us", false),
    ("server_cpu", false),
    ("loadgen_cpu", false),
    ("cpu0_others", false),
    ("cpu1_others", false),
    ("conn_per_sec", true),
    ("bytes_per_conn", false),
    ("connected", true),
    ("connect_errors", false),
    ("server_hwm_kib", false),
];

/// A scenario as `scripts/bench.sh` describes it.
#[derive(Debug, Clone)]
struct Scenario {
    id: String,
    label: String,
    /// `fanout` or `connect`.
    kind: String,
    /// Target messages per second; `None` for `--rate max`.
    rate: Option<f64>,
    /// A cell of the window matrix: (subscribers, loadgen `--window`).
    matrix: Option<(u64, u64)>,
}

/// One loadgen run, with what is derived from it.
#[derive(Debug)]
struct Run {
    imp: String,
    scenario: String,
    rep: u64,
    /// `ok`, or why not.
    status: String,
    /// Numbers usable for medians (empty when loadgen produced no report).
    metrics: BTreeMap<String, f64>,
    /// loadgen stopped waiting for the last messages: what was still in flight counts
    /// as lost.
    undrained: bool,
    raw: Value,
}

/// Medians of one implementation in one scenario.
#[derive(Debug, Default)]
struct Cell {
    runs: usize,
    ok: usize,
    measured: usize,
    undrained: usize,
    median: BTreeMap<String, f64>,
    problems: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("bench-report: {e}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Res<()> {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&cli.meta)?)?;
    let text = std::fs::read_to_string(&cli.runs)?;
    let scenarios = scenarios(&meta)?;
    let impls: Vec<String> = meta["impls"]
        .as_array()
        .ok_or("meta.impls is missing")?
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect();
    let mut runs = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let raw: Value =
            serde_json::from_str(line).map_err(|e| format!("runs line {}: {e}", n + 1))?;
        runs.push(derive(raw));
    }
    let cells = summarize(&scenarios, &impls, &runs);
    let prefix = cli.out.to_string_lossy().into_owned();
    let stem = cli
        .out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();

    let summary: Vec<Value> = cells
        .iter()
        .map(|((s, i), c)| {
            json!({
                "scenario": s, "impl": i, "runs": c.runs, "ok": c.ok, "measured": c.measured,
                "median": c.median, "problems": c.problems,
            })
        })
        .collect();
    let ratios = ratios(&scenarios, &impls, &cells);
    let ratio_json: Vec<Value> = ratios
        .iter()
        .map(|r| {
            json!({
                "scenario": r.scenario, "metric": r.metric, "subject": r.subject,
                "versus": r.versus, "ratio": r.value,
            })
        })
        .collect();
    // The raw CPU samples stay in the work directory; the results keep what was derived
    // from them.
    let run_json: Vec<Value> = runs
        .iter()
        .map(|r| {
            let mut v = r.raw.clone();
            if let Some(o) = v.as_object_mut() {
                let n = o.remove("samples").and_then(|s| s.as_array().map(Vec::len));
                o.insert("cpu_samples".into(), json!(n));
                if let Some(t) = o.get("server_log_tail").and_then(Value::as_str) {
                    let t = strip_ansi(t);
                    o.insert("server_log_tail".into(), json!(t));
                }
                o.insert("status".into(), json!(r.status));
                o.insert("derived".into(), json!(r.metrics));
            }
            v
        })
        .collect();
    // Pretty at the top, one line per summary cell, ratio and run: small and diffable.
    let lines = |items: &[Value]| -> Res<String> {
        let l: Result<Vec<String>, _> = items.iter().map(serde_json::to_string).collect();
        Ok(format!("[\n    {}\n  ]", l?.join(",\n    ")))
    };
    let text = format!(
        "{{\n  \"meta\": {},\n  \"summary\": {},\n  \"ratios\": {},\n  \"runs\": {}\n}}\n",
        serde_json::to_string_pretty(&meta)?.replace('\n', "\n  "),
        lines(&summary)?,
        lines(&ratio_json)?,
        lines(&run_json)?
    );
    serde_json::from_str::<Value>(&text)?; // well-formed by construction; checked anyway
    std::fs::write(format!("{prefix}.json"), text)?;
    let md = markdown(&meta, &scenarios, &impls, &runs, &cells, &ratios, &stem);
    std::fs::write(format!("{prefix}.md"), md)?;
    throughput_chart(
        Path::new(&format!("{prefix}-throughput.svg")),
        &meta,
        &scenarios,
        &impls,
        &cells,
    )?;
    latency_chart(
        Path::new(&format!("{prefix}-latency.svg")),
        &meta,
        &scenarios,
        &impls,
        &cells,
    )?;
    eprintln!("bench-report: wrote {prefix}.{{json,md}}, {prefix}-{{throughput,latency}}.svg");
    Ok(())
}

fn scenarios(meta: &Value) -> Res<Vec<Scenario>> {
    let list = meta["scenarios"]
        .as_array()
        .ok_or("meta.scenarios is missing")?;
    Ok(list
        .iter()
        .map(|s| Scenario {
            id: s["id"].as_str().unwrap_or("?").to_owned(),
            label: s["label"].as_str().unwrap_or("?").to_owned(),
            kind: s["kind"].as_str().unwrap_or("fanout").to_owned(),
            rate: s["rate"].as_f64(),
            matrix: s["matrix"]["subscribers"]
                .as_u64()
                .zip(s["matrix"]["window"].as_u64()),
        })
        .collect())
}

/// Status and metrics of one raw run.
fn derive(raw: Value) -> Run {
    let imp = raw["impl"].as_str().unwrap_or("?").to_owned();
    let scenario = raw["scenario"].as_str().unwrap_or("?").to_owned();
    let rep = raw["rep"].as_u64().unwrap_or(0);
    let exit = raw["exit_code"].as_i64().unwrap_or(-1);
    let lg = &raw["loadgen"];
    let mut m = BTreeMap::new();
    let status = if let Some(s) = raw["status"].as_str().filter(|s| *s != "ran") {
        // Set by the script: the server did not start, loadgen timed out, ...
        let detail = raw["error"].as_str().unwrap_or("");
        format!("{s}{}{detail}", if detail.is_empty() { "" } else { ": " })
    } else if !lg.is_object() {
        format!(
            "failed (exit {exit}, no report): {}",
            raw["error"].as_str().unwrap_or("")
        )
    } else if let Some(e) = lg["error"].as_str() {
        format!("failed (exit {exit}): {e}")
    } else {
        match exit {
            // `connect` has no --expect-all: idle connections must all open and stay open.
            0 if lg["scenario"] == "connect" => {
                let n = |k: &str| lg[k].as_u64().unwrap_or(0);
                let mut f = Vec::new();
                if n("connect_errors") > 0 {
                    f.push(format!("{} connections failed", n("connect_errors")));
                }
                if n("closed_by_server") > 0 {
                    f.push(format!("the server closed {}", n("closed_by_server")));
                }
                if n("open_after_hold") < n("connected") {
                    f.push(format!(
                        "{} of {} open after the hold",
                        n("open_after_hold"),
                        n("connected")
                    ));
                }
                if f.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("expectation failed: {}", f.join("; "))
                }
            }
            0 => "ok".to_owned(),
            3 => {
                let f: Vec<&str> = lg["failures"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                format!("expectation failed: {}", f.join("; "))
            }
            _ => format!("failed (exit {exit})"),
        }
    };
    if lg.is_object() && lg.get("error").is_none() {
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.insert(k.to_owned(), v);
            }
        };
        for k in [
            "deliveries_per_sec",
            "published_per_sec",
            "lost",
            "out_of_order",
            "duplicates",
            "closed_by_server",
            "conn_per_sec",
            "connected",
            "connect_errors",
        ] {
            put(k, lg[k].as_f64());
        }
        put("bytes_per_conn", lg["server_bytes_per_conn"].as_f64());
        if lg["lat_samples"].as_u64().unwrap_or(0) > 0 {
            for (k, j) in [
                ("p50_us", "p50"),
                ("p90_us", "p90"),
                ("p99_us", "p99"),
                ("p999_us", "p999"),
                ("max_us", "max"),
            ] {
                put(k, lg["lat_us"][j].as_f64());
            }
        }
        put("server_hwm_kib", raw["server_hwm_kib"].as_f64());
        // The measured window: after connect (+20 ms start delay) and warm-up for the
        // run's duration; for connect runs, the set-up phase.
        let t0 = raw["t_start"].as_f64().unwrap_or(0.0);
        let connect_s = lg["connect_s"].as_f64().unwrap_or(0.0);
        let (from, to) = if lg["scenario"] == "connect" {
            (t0, t0 + connect_s)
        } else {
            let start = t0 + connect_s + 0.02 + lg["warmup_s"].as_f64().unwrap_or(0.0);
            (start, start + lg["duration_s"].as_f64().unwrap_or(0.0))
        };
        let tck = raw["clk_tck"].as_f64().unwrap_or(100.0);
        if let Some(samples) = raw["samples"].as_array() {
            let pts = |col: usize| -> Vec<(f64, f64)> {
                samples
                    .iter()
                    .filter_map(|s| {
                        let t = s.get(0)?.as_f64()?;
                        let v = s.get(col)?.as_f64()?;
                        (v >= 0.0).then_some((t, v / tck))
                    })
                    .collect()
            };
            let srv = cpu_share(&pts(1), from, to);
            let lgc = cpu_share(&pts(2), from, to);
            put("server_cpu", srv);
            put("loadgen_cpu", lgc);
            // What else ran on the two CPUs: their busy time beyond the server's (CPU 0)
            // or loadgen's (CPU 1), plus time the hypervisor stole.
            let others = |own: Option<f64>, busy: usize, steal: usize| {
                let b = cpu_share(&pts(busy), from, to)?;
                let st = cpu_share(&pts(steal), from, to).unwrap_or(0.0);
                Some((b - own?).max(0.0) + st)
            };
            put("cpu0_others", others(srv, 3, 4));
            put("cpu1_others", others(lgc, 5, 6));
        }
    }
    Run {
        imp,
        scenario,
        rep,
        status,
        metrics: m,
        undrained: lg["drained"] == false,
        raw,
    }
}

/// CPU seconds per wall second over `[from, to]`, from cumulative (time, cpu-seconds)
/// samples, linearly interpolated; the window is clipped to the samples.
fn cpu_share(pts: &[(f64, f64)], from: f64, to: f64) -> Option<f64> {
    let (first, last) = (pts.first()?, pts.last()?);
    let (a, b) = (from.max(first.0), to.min(last.0));
    if b - a < 0.05 {
        return None;
    }
    let at = |t: f64| -> f64 {
        let i = pts.partition_point(|p| p.0 <= t);
        match (i.checked_sub(1).and_then(|j| pts.get(j)), pts.get(i)) {
            (Some(p), Some(q)) if q.0 > p.0 => p.1 + (q.1 - p.1) * (t - p.0) / (q.0 - p.0),
            (Some(p), _) => p.1,
            (None, Some(q)) => q.1,
            (None, None) => 0.0,
        }
    };
    Some((at(b) - at(a)) / (b - a))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn summarize(
    scenarios: &[Scenario],
    impls: &[String],
    runs: &[Run],
) -> BTreeMap<(String, String), Cell> {
    let mut cells = BTreeMap::new();
    for s in scenarios {
        for i in impls {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.scenario == s.id && &r.imp == i)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let measured: Vec<&&Run> = mine.iter().filter(|r| !r.metrics.is_empty()).collect();
            let mut cell = Cell {
                runs: mine.len(),
                ok: mine.iter().filter(|r| r.status == "ok").count(),
                measured: measured.len(),
                undrained: mine.iter().filter(|r| r.undrained).count(),
                ..Cell::default()
            };
            for (k, _) in METRICS {
                let vals: Vec<f64> = measured
                    .iter()
                    .filter_map(|r| r.metrics.get(*k).copied())
                    .collect();
                if let Some(v) = median(vals) {
                    cell.median.insert((*k).to_owned(), v);
                }
            }
            for r in mine.iter().filter(|r| r.status != "ok") {
                cell.problems.push(format!("rep {}: {}", r.rep, r.status));
            }
            cells.insert((s.id.clone(), i.clone()), cell);
        }
    }
    cells
}

/// The implementation the window matrix measures ringcast against: one contiguous write
/// per subscriber per turn, the best a coalescing server can do on loopback.
const CEILING: &str = "raw-batch";

/// "`subject` is `value`× better than `versus`" on `metric` (higher-is-better metrics:
/// subject ÷ versus; lower-is-better: versus ÷ subject).
#[derive(Debug)]
struct Ratio {
    scenario: String,
    metric: &'static str,
    subject: String,
    versus: String,
    value: f64,
}

/// The headline metric of a scenario: deliveries/s under `--rate max`, p99 at a fixed
/// rate, connections/s and bytes per connection for connect runs.
fn headline(s: &Scenario) -> Vec<&'static str> {
    match (s.kind.as_str(), s.rate) {
        ("connect", _) => vec!["conn_per_sec", "bytes_per_conn"],
        (_, None) => vec!["deliveries_per_sec", "p99_us"],
        (_, Some(_)) => vec!["p50_us", "p99_us"],
    }
}

fn higher_is_better(metric: &str) -> bool {
    METRICS
        .iter()
        .find(|(k, _)| *k == metric)
        .is_some_and(|(_, h)| *h)
}

fn ratios(
    scenarios: &[Scenario],
    impls: &[String],
    cells: &BTreeMap<(String, String), Cell>,
) -> Vec<Ratio> {
    let mut out = Vec::new();
    let pairs: Vec<(String, String)> = {
        let mut p = Vec::new();
        if impls.iter().any(|i| i == "ringcast-epoll") {
            for i in impls.iter().filter(|i| !i.starts_with("ringcast-")) {
                p.push(("ringcast-epoll".to_owned(), i.clone()));
            }
        }
        if impls.iter().any(|i| i == "ringcast-uring") {
            if impls.iter().any(|i| i == CEILING) {
                p.push(("ringcast-uring".to_owned(), CEILING.to_owned()));
            }
            if impls.iter().any(|i| i == "ringcast-epoll") {
                p.push(("ringcast-uring".to_owned(), "ringcast-epoll".to_owned()));
            }
        }
        p
    };
    for s in scenarios {
        for metric in headline(s) {
            for (a, b) in &pairs {
                let get = |i: &str| {
                    cells
                        .get(&(s.id.clone(), i.to_owned()))
                        .and_then(|c| c.median.get(metric).copied())
                };
                if let (Some(x), Some(y)) = (get(a), get(b)) {
                    let value = if higher_is_better(metric) {
                        x / y
                    } else {
                        y / x
                    };
                    if value.is_finite() {
                        out.push(Ratio {
                            scenario: s.id.clone(),
                            metric,
                            subject: a.clone(),
                            versus: b.clone(),
                            value,
                        });
                    }
                }
            }
        }
    }
    out
}

/// `1234567.8` as `1,234,568`.
fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn us(v: f64) -> String {
    if v >= 100.0 {
        thousands(v)
    } else {
        format!("{v:.1}")
    }
}

fn pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

fn metric_name(m: &str) -> &'static str {
    match m {
        "deliveries_per_sec" => "deliveries/s",
        "p50_us" => "p50 latency",
        "p99_us" => "p99 latency",
        "conn_per_sec" => "connections/s",
        "bytes_per_conn" => "bytes/connection",
        _ => "?",
    }
}

/// Who limited a run: the server (≥ 90 % CPU); CPU 0, shared (server plus other
/// processes or hypervisor steal ≥ 90 %); loadgen (≥ 90 %); or none of them (a paced run
/// that kept its rate, or one bound by the publisher window).
fn bottleneck(s: &Scenario, m: &BTreeMap<String, f64>) -> String {
    let Some(srv) = m.get("server_cpu").copied() else {
        return "?".to_owned();
    };
    let others = m.get("cpu0_others").copied().unwrap_or(0.0);
    let lg = m.get("loadgen_cpu").copied().unwrap_or(0.0);
    let kept_rate = match (s.rate, m.get("published_per_sec")) {
        (Some(r), Some(p)) => *p >= 0.95 * r,
        _ => false,
    };
    if srv >= 0.9 {
        "server".to_owned()
    } else if srv + others >= 0.9 {
        "**CPU 0 shared**".to_owned()
    } else if lg >= 0.9 {
        "**loadgen**".to_owned()
    } else if kept_rate {
        "– (paced)".to_owned()
    } else {
        "neither".to_owned()
    }
}

fn status_cell(c: &Cell) -> String {
    if c.ok == c.runs {
        format!("{}/{}", c.ok, c.runs)
    } else {
        format!("**{}/{}** †", c.ok, c.runs)
    }
}

/// The cells after the implementation's name in a fan-out table row: deliveries/s,
/// published/s, p50, p99, p99.9, lost, server CPU, CPU 0 others, loadgen CPU, bottleneck,
/// runs ok.
fn fanout_cells(sc: &Scenario, c: &Cell) -> String {
    let g = |k: &str| c.median.get(k).copied();
    [
        opt(g("deliveries_per_sec"), thousands),
        opt(g("published_per_sec"), thousands),
        opt(g("p50_us"), us),
        opt(g("p99_us"), us),
        opt(g("p999_us"), us),
        opt(g("lost"), thousands) + if c.undrained > 0 { " ‡" } else { "" },
        opt(g("server_cpu"), pct),
        opt(g("cpu0_others"), pct),
        opt(g("loadgen_cpu"), pct),
        if c.measured > 0 {
            bottleneck(sc, &c.median)
        } else {
            "–".to_owned()
        },
        status_cell(c),
    ]
    .join(" | ")
}

/// The window matrix: deliveries/s of each implementation per (subscribers, messages in
/// flight), ringcast's backends as a share of the `raw-batch` ceiling, io_uring against
/// epoll; then the details of every cell (latency, loss, CPU, bottleneck).
fn window_matrix(
    md: &mut String,
    scenarios: &[Scenario],
    impls: &[String],
    cells: &BTreeMap<(String, String), Cell>,
) {
    let rows: Vec<(&Scenario, u64, u64)> = scenarios
        .iter()
        .filter_map(|s| s.matrix.map(|(n, w)| (s, n, w)))
        .collect();
    let cols: Vec<&String> = impls
        .iter()
        .filter(|i| {
            rows.iter()
                .any(|(s, _, _)| cells.contains_key(&(s.id.clone(), (*i).clone())))
        })
        .collect();
    if cols.is_empty() {
        return;
    }
    let has = |i: &str| cols.iter().any(|c| *c == i);
    let ratio_cols: Vec<(&str, &str, &str)> = [
        ("ringcast-epoll", CEILING, "ringcast-epoll / raw-batch"),
        ("ringcast-uring", CEILING, "ringcast-uring / raw-batch"),
        ("ringcast-uring", "ringcast-epoll", "uring / epoll"),
    ]
    .into_iter()
    .filter(|(a, b, _)| has(a) && has(b))
    .collect();
    let _ = writeln!(
        md,
        "## Window matrix: ringcast against the `raw-batch` ceiling\n"
    );
    let _ = writeln!(
        md,
        "Fan-out throughput (deliveries/s, medians; 64 B, `--rate max`) at 16, 64 and 256 \
         messages in flight (loadgen `--window`). **`raw-batch` is the ceiling**: the best a \
         coalescing server can do on loopback. It appends each publication once to one \
         shared byte log, and after each poll turn gives every subscriber one contiguous \
         `write` of everything it is owed: one syscall per subscriber per turn, no \
         per-message work per subscriber. A ratio to it is the share of the ceiling reached \
         (1 = at the ceiling). `raw-writev`, where present, is a secondary reference (one \
         slice per frame). § the server was not the bottleneck (small windows are bound by \
         the round trip; or loadgen, or a shared CPU 0): that server could have done more, so \
         the figure understates it. † a run failed or an \
         expectation did not hold; ‡ the drain timed out. See the details below.\n"
    );
    let mut head = "| subscribers | in flight |".to_owned();
    let mut rule = "|--:|--:|".to_owned();
    for i in &cols {
        if i.as_str() == CEILING {
            let _ = write!(head, " {i} (ceiling) |");
        } else {
            let _ = write!(head, " {i} |");
        }
        rule.push_str("--:|");
    }
    for (_, _, name) in &ratio_cols {
        let _ = write!(head, " {name} |");
        rule.push_str("--:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for (s, n, w) in &rows {
        let value = |i: &str| {
            cells
                .get(&(s.id.clone(), i.to_owned()))
                .and_then(|c| c.median.get("deliveries_per_sec").copied())
        };
        let mut line = format!("| {} | {w} |", thousands(*n as f64));
        for i in &cols {
            let cell = match cells.get(&(s.id.clone(), (*i).clone())) {
                None => "–".to_owned(),
                Some(c) => {
                    let mut v = opt(value(i), thousands);
                    if c.measured > 0 && bottleneck(s, &c.median) != "server" {
                        v.push_str(" §");
                    }
                    if c.ok < c.runs {
                        v.push_str(" †");
                    }
                    if c.undrained > 0 {
                        v.push_str(" ‡");
                    }
                    v
                }
            };
            let _ = write!(line, " {cell} |");
        }
        for (a, b, _) in &ratio_cols {
            let r = match (value(a), value(b)) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
                _ => "–".to_owned(),
            };
            let _ = write!(line, " {r} |");
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(md, "\nDetails:\n");
    let _ = writeln!(
        md,
        "| subscribers | in flight | implementation | deliveries/s | published/s | p50 µs | p99 µs | p99.9 µs | lost | server CPU | CPU 0 others | loadgen CPU | bottleneck | runs ok |"
    );
    let _ = writeln!(
        md,
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|"
    );
    for (s, n, w) in &rows {
        for i in &cols {
            if let Some(c) = cells.get(&(s.id.clone(), (*i).clone())) {
                let _ = writeln!(
                    md,
                    "| {} | {w} | {i} | {} |",
                    thousands(*n as f64),
                    fanout_cells(s, c)
                );
            }
        }
    }
    md.push('\n');
}

fn markdown(
    meta: &Value,
    scenarios: &[Scenario],
    impls: &[String],
    runs: &[Run],
    cells: &BTreeMap<(String, String), Cell>,
    ratios: &[Ratio],
    stem: &str,
) -> String {
    let mut md = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let m = &meta["machine"];
    let g = &meta["git"];
    let _ = writeln!(md, "# Broadcast benchmark {}\n", s(&meta["date"]));
    let _ = writeln!(
        md,
        "- **Mode** {} · {} repetition(s), medians · fan-out measured for {} s after {} s warm-up",
        s(&meta["mode"]),
        meta["reps"],
        meta["duration_s"],
        meta["warmup_s"]
    );
    let _ = writeln!(
        md,
        "- **Commit** `{}`{} · **backends** {}",
        s(&g["commit"]),
        if g["dirty"] == true {
            " (dirty work tree)"
        } else {
            ""
        },
        s(&meta["backends"])
    );
    let _ = writeln!(
        md,
        "- **Machine** {} · {} cores · kernel {} · `ulimit -n` {}",
        s(&m["cpu"]),
        m["cores"],
        s(&m["kernel"]),
        s(&m["nofile"])
    );
    let _ = writeln!(md, "- **Placement** {}", s(&meta["placement"]));
    let _ = writeln!(
        md,
        "- **Charts** [`{stem}-throughput.svg`]({stem}-throughput.svg), [`{stem}-latency.svg`]({stem}-latency.svg); raw runs in [`{stem}.json`]({stem}.json)\n"
    );
    let _ = writeln!(
        md,
        "*Server CPU*: its utime+stime over the measured window ÷ wall time (one core = \
         100 %); *CPU 0 others*: what other processes and hypervisor steal took of the \
         server's CPU meanwhile. *Bottleneck*: `server` when it is ≥ 90 % busy (what a \
         throughput run should show); `CPU 0 shared` when it is not but others filled the \
         CPU (a noisy run); `loadgen` when loadgen is ≥ 90 % busy instead. Latency is end to \
         end (publisher send → subscriber receive), µs. *Runs ok* under n/n: a run failed \
         or an expectation (`--expect-all`: nothing lost, reordered, duplicated or closed) \
         did not hold; see *Problems*.\n"
    );
    window_matrix(&mut md, scenarios, impls, cells);

    for sc in scenarios.iter().filter(|s| s.matrix.is_none()) {
        let present: Vec<&String> = impls
            .iter()
            .filter(|i| cells.contains_key(&(sc.id.clone(), (*i).clone())))
            .collect();
        let _ = writeln!(md, "## {}\n", sc.label);
        if present.is_empty() {
            let note = meta["skipped"][&sc.id].as_str().unwrap_or("not run");
            let _ = writeln!(md, "Skipped: {note}\n");
            continue;
        }
        if sc.kind == "connect" {
            let _ = writeln!(
                md,
                "| implementation | connections/s | bytes/connection (RSS) | peak RSS MiB | server CPU (set-up) | CPU 0 others | loadgen CPU | runs ok |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|:-:|");
            for i in present {
                let c = &cells[&(sc.id.clone(), i.clone())];
                let g = |k: &str| c.median.get(k).copied();
                let _ = writeln!(
                    md,
                    "| {i} | {} | {} | {} | {} | {} | {} | {} |",
                    opt(g("conn_per_sec"), thousands),
                    opt(g("bytes_per_conn"), thousands),
                    opt(g("server_hwm_kib"), |v| format!("{:.1}", v / 1024.0)),
                    opt(g("server_cpu"), pct),
                    opt(g("cpu0_others"), pct),
                    opt(g("loadgen_cpu"), pct),
                    status_cell(c)
                );
            }
        } else {
            let _ = writeln!(
                md,
                "| implementation | deliveries/s | published/s | p50 µs | p99 µs | p99.9 µs | lost | server CPU | CPU 0 others | loadgen CPU | bottleneck | runs ok |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|");
            for i in present {
                let c = &cells[&(sc.id.clone(), i.clone())];
                let _ = writeln!(md, "| {i} | {} |", fanout_cells(sc, c));
            }
        }
        md.push('\n');
    }

    // The window matrix has its own ratio columns (above).
    let ratios: Vec<&Ratio> = ratios
        .iter()
        .filter(|r| {
            scenarios
                .iter()
                .any(|s| s.id == r.scenario && s.matrix.is_none())
        })
        .collect();
    if !ratios.is_empty() {
        let cols: Vec<(String, String)> = {
            let mut v: Vec<(String, String)> = Vec::new();
            for r in &ratios {
                let k = (r.subject.clone(), r.versus.clone());
                if !v.contains(&k) {
                    v.push(k);
                }
            }
            v
        };
        let _ = writeln!(md, "## Ratios\n");
        let _ = writeln!(
            md,
            "Medians; every ratio is oriented so that **> 1 means the first-named is better** \
             (more deliveries or connections per second; lower latency or memory).\n"
        );
        let mut head = "| scenario | metric |".to_owned();
        let mut rule = "|---|---|".to_owned();
        for (a, b) in &cols {
            let _ = write!(head, " {a} vs {b} |");
            rule.push_str("--:|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for sc in scenarios.iter().filter(|s| s.matrix.is_none()) {
            for metric in headline(sc) {
                let row: Vec<String> = cols
                    .iter()
                    .map(|(a, b)| {
                        ratios
                            .iter()
                            .find(|r| {
                                r.scenario == sc.id
                                    && r.metric == metric
                                    && &r.subject == a
                                    && &r.versus == b
                            })
                            .map_or_else(|| "–".to_owned(), |r| format!("{:.2}×", r.value))
                    })
                    .collect();
                if row.iter().all(|c| c == "–") {
                    continue;
                }
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    sc.label,
                    metric_name(metric),
                    row.join(" | ")
                );
            }
        }
        md.push('\n');
    }

    let problems: Vec<&Run> = runs.iter().filter(|r| r.status != "ok").collect();
    let _ = writeln!(md, "## Problems\n");
    if problems.is_empty() {
        let _ = writeln!(md, "None: every run exited 0 and met its expectations.\n");
    } else {
        for r in problems {
            let label = scenarios
                .iter()
                .find(|s| s.id == r.scenario)
                .map_or(r.scenario.as_str(), |s| s.label.as_str());
            let _ = writeln!(
                md,
                "- † {} · {} · rep {}: {}",
                r.imp,
                label,
                r.rep,
                r.status.replace('\n', " ")
            );
        }
        md.push('\n');
    }
    let undrained: Vec<&Run> = runs.iter().filter(|r| r.undrained).collect();
    if !undrained.is_empty() {
        let _ = writeln!(
            md,
            "‡ loadgen's drain timed out (messages were still arriving when it gave up), so \
             the late tail counts as lost in:\n"
        );
        for r in undrained {
            let _ = writeln!(md, "- {} · {} · rep {}", r.imp, r.scenario, r.rep);
        }
        md.push('\n');
    }
    let lagged: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let t = r.raw["server_log_tail"].as_str()?;
            let line = t.lines().rev().find(|l| l.contains("lagged"))?;
            // "... subscribers skipped N lagged messages": only N > 0 is news.
            let n: u64 = line
                .split_whitespace()
                .skip_while(|w| *w != "skipped")
                .nth(1)?
                .parse()
                .ok()?;
            (n > 0).then(|| {
                format!(
                    "- {} · {} · rep {}: `{}`",
                    r.imp,
                    r.scenario,
                    r.rep,
                    line.trim()
                )
            })
        })
        .collect();
    if !lagged.is_empty() {
        let _ = writeln!(
            md,
            "Tokio peers drop messages for lagging subscribers by design (broadcast channel \
             of 1024); they run without `--expect-all`, and their loss is in the *lost* \
             column. Their exit lines:\n"
        );
        for l in lagged {
            let _ = writeln!(md, "{l}");
        }
        md.push('\n');
    }
    if let Some(notes) = meta["notes"].as_array().filter(|n| !n.is_empty()) {
        let _ = writeln!(md, "## Notes\n");
        for n in notes.iter().filter_map(Value::as_str) {
            let _ = writeln!(md, "- {n}");
        }
        md.push('\n');
    }

    let _ = writeln!(md, "## Commands\n\n```sh");
    if let Some(b) = meta["build"].as_array() {
        for c in b.iter().filter_map(Value::as_str) {
            let _ = writeln!(md, "{c}");
        }
    }
    let _ = writeln!(md, "# servers (PORT: a free port; a fresh server per run)");
    if let Some(list) = meta["impls"].as_array() {
        for i in list {
            let _ = writeln!(md, "{}", s(&i["cmd"]));
        }
    }
    let templates: Vec<&str> = meta["impls"]
        .as_array()
        .map(|l| l.iter().filter_map(|i| i["cmd"].as_str()).collect())
        .unwrap_or_default();
    let mut seen = Vec::new();
    for r in runs {
        if seen.contains(&r.scenario) {
            continue;
        }
        seen.push(r.scenario.clone());
        // The run's own port and server pid, as placeholders.
        let generic = |key: &str| -> Option<String> {
            let mut c = r.raw[key].as_str()?.to_owned();
            if let Some(p) = r.raw["port"].as_u64() {
                c = c.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:PORT");
            }
            if let Some(p) = r.raw["server_pid"].as_u64() {
                c = c.replace(&format!("--server-pid {p}"), "--server-pid PID");
            }
            Some(c)
        };
        let label = scenarios
            .iter()
            .find(|s| s.id == r.scenario)
            .map_or(r.scenario.as_str(), |s| s.label.as_str());
        let _ = writeln!(md, "# {label}");
        if let Some(c) = generic("server_cmd").filter(|c| !templates.contains(&c.as_str())) {
            let _ = writeln!(md, "{c}");
        }
        if let Some(c) = generic("loadgen_cmd") {
            let _ = writeln!(md, "{c}");
        }
    }
    let _ = writeln!(md, "```");
    md
}

/// The fixed colour of an implementation (fallback palette for others).
fn color(name: &str, idx: usize) -> RGBColor {
    match name {
        "ringcast-epoll" => RGBColor(0x1f, 0x77, 0xb4),
        "ringcast-uring" => RGBColor(0x17, 0xbe, 0xcf),
        "raw-batch" => RGBColor(0x33, 0x33, 0x33),
        "raw-writev" => RGBColor(0xaa, 0xaa, 0xaa),
        "peer-tungstenite" => RGBColor(0xff, 0x7f, 0x0e),
        "peer-fastws" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => [
            RGBColor(0xd6, 0x27, 0x28),
            RGBColor(0x94, 0x67, 0xbd),
            RGBColor(0x8c, 0x56, 0x4b),
        ][idx % 3],
    }
}

fn subtitle(meta: &Value) -> String {
    format!(
        "{} · {} cores · kernel {} · commit {}{} · {} mode, median of {}",
        meta["machine"]["cpu"].as_str().unwrap_or("?"),
        meta["machine"]["cores"],
        meta["machine"]["kernel"].as_str().unwrap_or("?"),
        meta["git"]["commit"].as_str().unwrap_or("?"),
        if meta["git"]["dirty"] == true {
            "+dirty"
        } else {
            ""
        },
        meta["mode"].as_str().unwrap_or("?"),
        meta["reps"]
    )
}

/// An empty chart that says why it is empty.
fn empty_chart(path: &Path, title: &str, why: &str) -> Res<()> {
    let root = SVGBackend::new(path, (900, 200)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(title, (20, 30), ("sans-serif", 22)))?;
    root.draw(&Text::new(why, (20, 80), ("sans-serif", 16)))?;
    root.present()?;
    Ok(())
}

/// Deliveries/s per implementation, grouped by `--rate max` scenario.
fn throughput_chart(
    path: &Path,
    meta: &Value,
    scenarios: &[Scenario],
    impls: &[String],
    cells: &BTreeMap<(String, String), Cell>,
) -> Res<()> {
    let groups: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| s.kind == "fanout" && s.rate.is_none())
        .filter(|s| {
            impls
                .iter()
                .any(|i| cells.contains_key(&(s.id.clone(), i.clone())))
        })
        .collect();
    let title = "Fan-out throughput (deliveries/s, --rate max)";
    if groups.is_empty() {
        return empty_chart(path, title, "no --rate max scenario ran");
    }
    let value = |s: &Scenario, i: &String| {
        cells
            .get(&(s.id.clone(), i.clone()))
            .and_then(|c| c.median.get("deliveries_per_sec").copied())
    };
    let ymax = groups
        .iter()
        .flat_map(|s| impls.iter().filter_map(|i| value(s, i)))
        .fold(0.0f64, f64::max)
        .max(1.0)
        / 1e6
        * 1.4;
    let root = SVGBackend::new(path, (200 + 260 * groups.len() as u32, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, body) = root.split_vertically(24);
    top.draw(&Text::new(subtitle(meta), (10, 4), ("sans-serif", 12)))?;
    let n = groups.len();
    let centers: Vec<i32> = (0..n as i32).map(|g| g * X + X / 2).collect();
    let names: Vec<String> = groups.iter().map(|s| short_label(s)).collect();
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0..X * n as i32).with_key_points(centers), 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| names.get((*x / X) as usize).cloned().unwrap_or_default())
        .x_label_style(("sans-serif", 14))
        .y_desc("million deliveries / s")
        .y_label_style(("sans-serif", 12))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    let k = impls.len() as f64;
    let w = 0.8 / k;
    let label_style =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, imp) in impls.iter().enumerate() {
        let c = color(imp, j);
        let bars: Vec<(f64, f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(g, s)| {
                value(s, imp).map(|v| {
                    (
                        g as f64 + 0.1 + w * j as f64,
                        g as f64 + 0.1 + w * (j as f64 + 1.0),
                        v / 1e6,
                    )
                })
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, x1, y)| {
                Rectangle::new([(xk(x0), 0.0), (xk(x1 - w * 0.08), y)], c.filled())
            }))?
            .label(imp.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        chart.draw_series(bars.iter().map(|&(x0, x1, y)| {
            Text::new(
                format!("{y:.2}"),
                (xk((x0 + x1) / 2.0), y),
                label_style.clone(),
            )
        }))?;
        // Implementations that ran a scenario but measured nothing.
        chart.draw_series(groups.iter().enumerate().filter_map(|(g, s)| {
            let ran = cells.contains_key(&(s.id.clone(), imp.clone()));
            (ran && value(s, imp).is_none()).then(|| {
                let x = g as f64 + 0.1 + w * (j as f64 + 0.5);
                Text::new("failed", (xk(x), 0.0), label_style.clone())
            })
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

/// p50 and p99 latency per implementation, one panel per fixed-rate scenario, log scale.
fn latency_chart(
    path: &Path,
    meta: &Value,
    scenarios: &[Scenario],
    impls: &[String],
    cells: &BTreeMap<(String, String), Cell>,
) -> Res<()> {
    let panels: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| s.kind == "fanout" && s.rate.is_some())
        .filter(|s| {
            impls
                .iter()
                .any(|i| cells.contains_key(&(s.id.clone(), i.clone())))
        })
        .collect();
    let title = "End-to-end latency at a fixed rate (µs, log scale; solid p50, pale p99)";
    if panels.is_empty() {
        return empty_chart(path, title, "no fixed-rate scenario ran");
    }
    let get = |s: &Scenario, i: &String, k: &str| {
        cells
            .get(&(s.id.clone(), i.clone()))
            .and_then(|c| c.median.get(k).copied())
    };
    let width = 120 + (80 + 110 * impls.len() as u32) * panels.len() as u32;
    let root = SVGBackend::new(path, (width.max(700), 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, body) = root.split_vertically(24);
    top.draw(&Text::new(subtitle(meta), (10, 4), ("sans-serif", 12)))?;
    let areas = body.split_evenly((1, panels.len()));
    let label_style =
        TextStyle::from(("sans-serif", 10).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (area, s) in areas.iter().zip(&panels) {
        let vals: Vec<f64> = impls
            .iter()
            .flat_map(|i| [get(s, i, "p50_us"), get(s, i, "p99_us")])
            .flatten()
            .filter(|v| *v > 0.0)
            .collect();
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(0.0f64, f64::max);
        let (lo, hi) = if vals.is_empty() {
            (1.0, 1000.0)
        } else {
            (
                10f64.powf(lo.log10().floor()),
                10f64.powf((hi * 1.15).log10().ceil()),
            )
        };
        let present: Vec<&String> = impls
            .iter()
            .filter(|i| cells.contains_key(&(s.id.clone(), (*i).clone())))
            .collect();
        let n = present.len();
        let centers: Vec<i32> = (0..n as i32).map(|g| g * X + X / 2).collect();
        let names: Vec<String> = present.iter().map(|i| (*i).clone()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(&s.label, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(72)
            .build_cartesian_2d(
                (0..X * n as i32).with_key_points(centers),
                (lo..hi).log_scale(),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| names.get((*x / X) as usize).cloned().unwrap_or_default())
            .x_label_style(("sans-serif", 11))
            .y_desc("µs")
            .y_label_style(("sans-serif", 11))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    thousands(*y)
                } else {
                    format!("{y}")
                }
            })
            .draw()?;
        for (g, imp) in present.iter().enumerate() {
            let j = impls.iter().position(|i| i == *imp).unwrap_or(g);
            let c = color(imp, j);
            let x = g as f64;
            let mut any = false;
            for (k, key, fill) in [(0.0, "p50_us", c.mix(1.0)), (1.0, "p99_us", c.mix(0.4))] {
                if let Some(v) = get(s, imp, key) {
                    any = true;
                    let (x0, x1) = (x + 0.15 + 0.35 * k, x + 0.15 + 0.35 * (k + 1.0) - 0.03);
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(xk(x0), lo), (xk(x1), v.max(lo))],
                        fill.filled(),
                    )))?;
                    chart.draw_series(std::iter::once(Text::new(
                        us(v),
                        (xk((x0 + x1) / 2.0), v.max(lo)),
                        label_style.clone(),
                    )))?;
                }
            }
            if !any {
                chart.draw_series(std::iter::once(Text::new(
                    "failed",
                    (xk(x + 0.5), lo),
                    label_style.clone(),
                )))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// Chart x units per scenario group (integer coordinates: plotters formats their labels).
const X: i32 = 1000;

/// A fractional group position in chart x units.
fn xk(v: f64) -> i32 {
    (v * f64::from(X)).round() as i32
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), as loggers write them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A chart axis label: the scenario's subscriber count and payload size (for a window
/// matrix cell, its subscribers and window).
fn short_label(s: &Scenario) -> String {
    if let Some((n, w)) = s.matrix {
        let n = if n % 1000 == 0 {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        };
        return format!("{n} × window {w}");
    }
    s.label
        .split(',')
        .next()
        .unwrap_or(&s.label)
        .trim()
        .to_owned()
}
