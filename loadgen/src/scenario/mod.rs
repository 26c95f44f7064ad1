//! The scenarios: what they plan, how they drive a [`Backend`], what they report.
//! `resume` lives in its own file; the helpers here serve all of them.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{CommonArgs, EchoArgs, FanoutArgs, Protocol, Rate, WorkerSpec, Workers};
use crate::clock;
use crate::cost;
use crate::driver::{self, Backend, Local};
use crate::envelope::V1Tally;
use crate::limits;
use crate::payload::MAX_PUBLISHERS;
use crate::progress::Progress;
use crate::report::{ConnectSummary, LatencySummary, Table, Tally, latency_line, thousands};
use crate::run::{ConnPlan, Role, Run, Settings};
use crate::sample::Sampler;
use crate::target::Target;

mod connect;
mod resume;

pub(crate) use connect::connect;
pub(crate) use resume::resume;

/// Exit code: the run completed but broke an `--expect-all` expectation.
pub(crate) const EXIT_EXPECTATION: i32 = 3;
/// Runs at least this long get a progress bar.
const PROGRESS_MIN: Duration = Duration::from_secs(3);

/// A failure that ends a scenario before it reports: the message for the user.
pub(crate) type Failure = String;

/// Everything a process needs to know about the connections of a run. The plans of the
/// many connections (subscribers, echo or idle ones) are made only for the process that
/// opens them: a worker of a million-connection run holds its share, not the run.
struct Layout {
    /// Connections other than publishers, in the whole run.
    others: usize,
    /// The plan of the `i`-th of those.
    other: Box<dyn Fn(usize) -> ConnPlan>,
    /// The publishers' plans.
    publishers: Vec<ConnPlan>,
    publisher_topics: Vec<u32>,
    topics: usize,
    /// Topic names by index (empty for plain `/sub` and scenarios without topics).
    topic_names: Vec<Arc<str>>,
}

impl Layout {
    /// Connections in the run.
    fn total(&self) -> usize {
        self.others + self.publishers.len()
    }

    /// Worker `spec`'s share (everything when `None`): connections `i` with
    /// `i * count / others == index`, publishers by `id % count`.
    fn share(&self, spec: Option<WorkerSpec>) -> Vec<ConnPlan> {
        let n = self.others;
        let (lo, hi) = spec.map_or((0, n), |s| {
            (s.index * n / s.count, (s.index + 1) * n / s.count)
        });
        let mut out: Vec<ConnPlan> = (lo..hi).map(&self.other).collect();
        out.extend(
            self.publishers
                .iter()
                .filter(|p| match (p.role, spec) {
                    (Role::Publisher { id, .. }, Some(s)) => id as usize % s.count == s.index,
                    _ => true,
                })
                .cloned(),
        );
        out
    }

    /// A layout of `n` connections other than publishers, `other(i)` the plan of the
    /// `i`-th, and no topics.
    fn plain(n: usize, other: impl Fn(usize) -> ConnPlan + 'static) -> Self {
        Self {
            others: n,
            other: Box::new(other),
            publishers: Vec::new(),
            publisher_topics: Vec::new(),
            topics: 0,
            topic_names: Vec::new(),
        }
    }
}

/// Threads, workers and the rest of the process layout decided from the common flags.
struct Procs {
    target: Target,
    /// Every `--url` when there are several servers (see [`Settings::sub_targets`]).
    sub_targets: Vec<Target>,
    /// Worker processes (0: run here).
    workers: usize,
    /// Threads per process.
    threads: usize,
    pin: Vec<usize>,
    spec: Option<WorkerSpec>,
}

fn procs(common: &CommonArgs, connections: usize) -> Result<Procs, Failure> {
    let parse = |u: &String| Target::parse(u).map_err(|e| e.to_string());
    let urls = common
        .url
        .iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    let target = match &common.pub_url {
        Some(u) => parse(u)?,
        None => urls.first().cloned().ok_or("--url is required")?,
    };
    let sub_targets = if urls.len() > 1 || common.pub_url.is_some() {
        urls
    } else {
        Vec::new()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = common.threads.unwrap_or(cores).max(1);
    if common.worker.is_some() {
        return Ok(Procs {
            target,
            sub_targets,
            workers: 0,
            threads,
            pin: common
                .pin_cpus
                .as_ref()
                .map(|c| c.0.clone())
                .unwrap_or_default(),
            spec: common.worker,
        });
    }
    limits::raise_nofile();
    let per_process = limits::connections_per_process() as usize;
    let workers = match common.workers {
        Workers::Count(n) => n,
        Workers::Auto if connections <= per_process => 0,
        Workers::Auto => connections.div_ceil(limits::connections_per_worker().max(1) as usize),
    };
    Ok(Procs {
        target,
        sub_targets,
        workers,
        threads,
        pin: common
            .pin_cpus
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default(),
        spec: None,
    })
}

/// Settings for this process.
#[allow(clippy::too_many_arguments)]
fn settings(
    common: &CommonArgs,
    p: &Procs,
    layout: &Layout,
    size: usize,
    text: bool,
    publish_interval_ns: Option<u64>,
    echo_interval_ns: Option<u64>,
    window: u64,
    connect_rate: Option<f64>,
) -> Settings {
    let processes = p.spec.map_or(1, |s| s.count);
    let threads_total = (p.threads * processes) as f64;
    Settings {
        target: p.target.clone(),
        sub_targets: p.sub_targets.clone(),
        source_ip: p.spec.map(|s| Ipv4Addr::new(127, 0, 0, 2 + s.index as u8)),
        size,
        text,
        publish_interval_ns,
        echo_interval_ns,
        window,
        connect_interval_ns: connect_rate
            .or(common.connect_rate)
            .map(|r| (threads_total * 1e9 / r).max(1.0) as u64),
        // The whole run's handshakes in flight, shared by every thread of every process:
        // a run split over fifty workers must not queue fifty times the server's backlog.
        max_pending: (common.max_pending as f64 / threads_total).ceil().max(1.0) as usize,
        handshake_timeout: common.handshake_timeout,
        publisher_topics: layout.publisher_topics.clone(),
        topics: layout.topics,
        topic_names: layout.topic_names.clone(),
        protocol: Protocol::Plain,
        trust_envelopes: false,
        rejoin: None,
        total_connections: layout.total() as u64,
        live_latency: false,
        latency_every: Sampler::every(1),
    }
}

/// Starts the connections: here, or in worker processes.
fn start(p: &Procs, settings: Settings, layout: &Layout) -> Result<Box<dyn Backend>, Failure> {
    if p.workers == 0 {
        probe_all(p)?;
        let run = Run::start(settings, layout.share(None), p.threads, &p.pin)
            .map_err(|e| format!("cannot start reactor threads: {e}"))?;
        return Ok(Box::new(Local(run)));
    }
    if p.workers > 250 {
        return Err("at most 250 workers (one 127.0.0.x source address each)".to_owned());
    }
    probe_all(p)?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let child_threads = p.threads.div_ceil(p.workers).max(1);
    let w = driver::Workers::spawn(&args, p.workers, child_threads, clock::base())?;
    Ok(Box::new(w))
}

/// [`probe`] of every server.
fn probe_all(p: &Procs) -> Result<(), Failure> {
    p.sub_targets.iter().try_for_each(probe)?;
    probe(&p.target)
}

/// One blocking connect, so that "no server" is said at once and plainly.
fn probe(target: &Target) -> Result<(), Failure> {
    match std::net::TcpStream::connect_timeout(&target.addr, Duration::from_secs(3)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!(
            "cannot connect to {}: connection refused — is the server running?",
            target.addr
        )),
        Err(e) => Err(format!("cannot connect to {}: {e}", target.addr)),
    }
}

/// Runs this process as worker `spec` of a parent; returns the exit code.
fn serve_as_worker(settings: Settings, layout: &Layout, p: &Procs) -> Result<i32, Failure> {
    let run = Run::start(settings, layout.share(p.spec), p.threads, &p.pin)
        .map_err(|e| format!("cannot start reactor threads: {e}"))?;
    Ok(driver::serve_parent(run))
}

/// Whether a timed phase of `total` shows progress: a bar on a terminal unless the
/// output is JSON, lines with `--progress`.
fn progress_enabled(common: &CommonArgs, total: Duration) -> bool {
    !common.json && total >= PROGRESS_MIN
}

/// Waits for connections, with progress on big runs.
fn connect_phase(common: &CommonArgs, backend: &mut dyn Backend, planned: usize) -> ConnectSummary {
    let mut p = Progress::new(
        !common.json && planned >= 2000,
        common.progress && common.worker.is_none(),
        planned as u64,
        "connecting {bar:30} {pos}/{len} {msg}",
    );
    let summary =
        backend.wait_connected(&mut |done, failed| p.connecting(done, failed, planned as u64));
    p.finish();
    summary
}

/// `fanout --lag-log`: the delivery latency of each second, a CSV line each.
#[derive(Debug)]
struct LagLog {
    file: std::fs::File,
    last: Instant,
}

impl LagLog {
    fn create(path: &std::path::Path) -> Result<Self, Failure> {
        let mut file = std::fs::File::create(path)
            .map_err(|e| format!("--lag-log {}: {e}", path.display()))?;
        let _ = file.write_all(b"unix_s,delivered,p50_us,p99_us,max_us\n");
        Ok(Self {
            file,
            last: Instant::now(),
        })
    }

    /// Once a second: a line for the deliveries since the last one.
    fn sample(&mut self, backend: &mut dyn Backend) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let Some(w) = backend.take_lag_window() else {
            return;
        };
        let l = w.summary();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = format!("{unix:.1},{},{},{},{}\n", w.count(), l.p50, l.p99, l.max);
        let _ = self.file.write_all(line.as_bytes());
    }
}

/// Sleeps until `t2` (run clock), with a live-rate progress bar (or lines) if enabled,
/// and a line of `lag` a second if given.
fn timed_phase(
    common: &CommonArgs,
    backend: &mut dyn Backend,
    (t0, t2): (u64, u64),
    show: bool,
    label: &str,
    mut lag: Option<&mut LagLog>,
) {
    let mut p = Progress::new(
        show,
        common.progress && common.worker.is_none(),
        (t2 - t0) / 1_000_000,
        "{spinner} {elapsed_precise} {bar:30} {percent:>3}% {msg}",
    );
    let mut last = (Instant::now(), backend.live());
    loop {
        let now = clock::now_ns();
        if now >= t2 {
            break;
        }
        std::thread::sleep(Duration::from_nanos(t2 - now).min(Duration::from_millis(250)));
        let live = backend.live();
        let dt = last.0.elapsed().as_secs_f64().max(1e-3);
        let d = (live.0 - last.1.0) as f64 / dt;
        let sent = (live.1 - last.1.1) as f64 / dt;
        let msg = format!(
            "{label} {}/s · sent {}/s · open {} · {label} in all {}",
            thousands(d),
            thousands(sent),
            live.2,
            thousands(live.0 as f64)
        );
        p.running(clock::now_ns().saturating_sub(t0) / 1_000_000, live.0, &msg);
        last = (Instant::now(), live);
        if let Some(log) = lag.as_deref_mut() {
            log.sample(backend);
        }
    }
    p.finish();
}

fn lat_json(l: &LatencySummary) -> serde_json::Value {
    json!({ "p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max, "mean": l.mean })
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

/// Reports a failure in the requested format; returns exit code 1.
pub(crate) fn fail(scenario: &str, json: bool, msg: &str) -> i32 {
    eprintln!("loadgen: {msg}");
    if json {
        print_json(&json!({ "scenario": scenario, "error": msg }));
    }
    1
}

/// Builds the plans of a fan-out run.
fn fanout_layout(args: &FanoutArgs, p: &Procs) -> Result<Layout, Failure> {
    let names: Vec<String> = match &args.topic_names {
        Some(n) if n.is_empty() => return Err("--topic-names is empty".to_owned()),
        Some(n) => n.clone(),
        None => (0..args.topics).map(|i| format!("t{i}")).collect(),
    };
    // Envelopes name their topic, so ringcast.v1 subscribers always subscribe by name.
    let plain = args.topic_names.is_none() && names.len() == 1 && args.protocol == Protocol::Plain;
    let publishers = args.publishers.unwrap_or(names.len() as u32) as usize;
    let nodes = p.sub_targets.len();
    topic_layout(names, plain, args.subscribers, publishers, &p.target, nodes)
}

/// Subscriber `i` on topic `i % T` (on server `i % nodes` of several), then publisher `p`
/// on topic `p % T`; `plain` uses the bare `/sub` and `/pub` paths (one unnamed topic).
fn topic_layout(
    names: Vec<String>,
    plain: bool,
    subscribers: usize,
    publishers: usize,
    target: &Target,
    nodes: usize,
) -> Result<Layout, Failure> {
    let topics = names.len();
    if publishers < topics {
        return Err(format!(
            "--publishers {publishers} is fewer than the {topics} topics: every topic needs a publisher"
        ));
    }
    if publishers > MAX_PUBLISHERS as usize {
        return Err(format!("--publishers is limited to {MAX_PUBLISHERS}"));
    }
    if subscribers == 0 {
        return Err("--subscribers must be at least 1".to_owned());
    }
    let path = |kind: &str, t: usize| -> Arc<str> {
        if plain {
            Arc::from(target.path(&format!("/{kind}")))
        } else {
            Arc::from(target.path(&format!("/{kind}/{}", names[t])))
        }
    };
    let sub_paths: Vec<Arc<str>> = (0..topics).map(|t| path("sub", t)).collect();
    let pub_paths: Vec<Arc<str>> = (0..topics).map(|t| path("pub", t)).collect();
    let other = move |i: usize| ConnPlan {
        node: if nodes == 0 { 0 } else { 1 + i % nodes },
        path: Arc::clone(&sub_paths[i % topics]),
        role: Role::Subscriber {
            topic: (i % topics) as u32,
        },
    };
    let publisher_topics: Vec<u32> = (0..publishers).map(|p| (p % topics) as u32).collect();
    let publishers = publisher_topics
        .iter()
        .enumerate()
        .map(|(p, &t)| ConnPlan {
            node: 0,
            path: Arc::clone(&pub_paths[t as usize]),
            role: Role::Publisher {
                id: p as u32,
                topic: t,
            },
        })
        .collect();
    Ok(Layout {
        others: subscribers,
        other: Box::new(other),
        publishers,
        publisher_topics,
        topics,
        topic_names: if plain {
            Vec::new()
        } else {
            names.iter().map(|n| Arc::from(n.as_str())).collect()
        },
    })
}

/// `loadgen fanout`; returns the exit code.
pub(crate) fn fanout(args: &FanoutArgs) -> Result<i32, Failure> {
    let common = &args.common;
    clock::init(common.clock_base);
    let p = procs(
        common,
        args.subscribers + args.publishers.unwrap_or(args.topics) as usize,
    )?;
    let layout = fanout_layout(args, &p)?;
    let publishers = layout.publisher_topics.len();
    let interval = match args.rate {
        Rate::Max => None,
        Rate::PerSec(r) => Some(((publishers as f64) * 1e9 / r).max(1.0) as u64),
    };
    if args.trust_envelopes && args.protocol != Protocol::V1 {
        return Err(
            "--trust-envelopes needs --protocol ringcast.v1 (plain payloads have no \
                    envelope to trust)"
                .to_owned(),
        );
    }
    let window = args.window.unwrap_or_else(|| default_window(args.size));
    let mut s = settings(
        common,
        &p,
        &layout,
        args.size as usize,
        args.text,
        interval,
        None,
        window,
        None,
    );
    s.protocol = args.protocol;
    s.trust_envelopes = args.trust_envelopes;
    s.latency_every = Sampler::every(args.latency_every);
    if p.spec.is_some() {
        return serve_as_worker(s, &layout, &p);
    }
    let mut lag_log = match &args.lag_log {
        Some(_) if p.workers != 0 => {
            return Err(format!(
                "--lag-log needs every connection in this process, not in {} workers \
                 (--workers 0, or fewer connections)",
                p.workers
            ));
        }
        Some(path) => Some(LagLog::create(path)?),
        None => None,
    };
    s.live_latency = lag_log.is_some();
    let before = cost::sample(common.server_pid)?;
    let mut backend = start(&p, s, &layout)?;
    let summary = connect_phase(common, backend.as_mut(), layout.total());
    let open = cost::sample(common.server_pid)?.cost_since(&before, summary.connected);
    if summary.fatal || summary.subscribers == 0 || summary.publishers < publishers as u64 {
        let why = summary
            .first_error
            .clone()
            .unwrap_or_else(|| "connections failed".to_owned());
        let _ = backend.finish();
        return Err(format!(
            "{why} ({} of {} subscribers and {} of {publishers} publishers connected)",
            summary.subscribers, args.subscribers, summary.publishers
        ));
    }
    if summary.failed > 0 && !common.json {
        eprintln!(
            "loadgen: {} connections failed ({}); running with {} subscribers",
            summary.failed,
            summary.first_error.as_deref().unwrap_or("?"),
            summary.subscribers
        );
    }
    let t0 = clock::now_ns() + 20_000_000;
    let t1 = t0 + args.warmup.as_nanos() as u64;
    let t2 = t1 + args.duration.as_nanos() as u64;
    let running = cost::sample(common.server_pid)?;
    backend.go(t0, t1, t2);
    timed_phase(
        common,
        backend.as_mut(),
        (t0, t2),
        progress_enabled(common, args.warmup + args.duration),
        "delivered",
        lag_log.as_mut(),
    );
    let finals = backend.wait_stopped(Duration::from_secs(5));
    let drained = backend.drain(&finals, args.drain);
    let run_cpu = cost::sample(common.server_pid)?.cpu_since(&running);
    let tally = backend.finish()?;
    let secs = args.duration.as_secs_f64().max(1e-9);
    let lat = tally.latency.summary();
    let first = tally.first_latency.summary();
    let first_lost = tally.first_expected.saturating_sub(tally.first_delivered);
    let mut failures = Vec::new();
    if args.expect_all {
        expect(
            &mut failures,
            tally.published == 0,
            "nothing was published".into(),
        );
        match args.protocol {
            Protocol::Plain => expect(
                &mut failures,
                tally.lost > 0,
                format!("{} messages lost", tally.lost),
            ),
            // Announced gaps are the protocol working: only the rest fails a run.
            Protocol::V1 => failures.extend(tally.v1.failures()),
        }
        expect(
            &mut failures,
            tally.out_of_order > 0,
            format!("{} messages out of order", tally.out_of_order),
        );
        expect(
            &mut failures,
            tally.duplicates > 0,
            format!("{} duplicates", tally.duplicates),
        );
        expect(
            &mut failures,
            summary.failed > 0,
            format!("{} connections failed", summary.failed),
        );
        expect(
            &mut failures,
            tally.closed_by_server > 0,
            format!("the server closed {} connections", tally.closed_by_server),
        );
    }
    let report = json!({
        "scenario": "fanout",
        "url": common.url,
        "protocol": args.protocol.name(),
        "trust_envelopes": args.trust_envelopes,
        "subscribers": args.subscribers,
        "subscribers_connected": summary.subscribers,
        "publishers": publishers,
        "topics": layout.topics,
        "size": args.size,
        "text": args.text,
        "rate": match args.rate { Rate::Max => json!("max"), Rate::PerSec(r) => json!(r) },
        "window": window,
        "latency_every": args.latency_every,
        "warmup_s": args.warmup.as_secs_f64(),
        "duration_s": secs,
        "threads": p.threads,
        "workers": p.workers,
        "published": tally.published,
        "published_per_sec": tally.published_measured as f64 / secs,
        "expected": tally.expected,
        "delivered": tally.delivered,
        "deliveries_per_sec": tally.measured as f64 / secs,
        "measured_deliveries": tally.measured,
        "lost": tally.lost,
        "out_of_order": tally.out_of_order,
        "duplicates": tally.duplicates,
        "malformed": tally.malformed,
        "drained": drained,
        "connect_errors": summary.failed,
        "first_connect_error": summary.first_error,
        "closed_by_server": tally.closed_by_server,
        "first_problem": tally.first_problem,
        "connect_s": clock::secs(summary.elapsed_ns),
        "conn_per_sec": summary.rate(),
        "lat_us": lat_json(&lat),
        "lat_samples": tally.latency.count(),
        "first_publish": {
            "delivered": tally.first_delivered,
            "expected": tally.first_expected,
            "lost": first_lost,
            "lat_us": lat_json(&first),
        },
        "memory": common.server_pid.map(|_| open),
        "server_cpu_s": run_cpu,
        "server_cpu_us_per_delivery": run_cpu.map(|s| s * 1e6 / tally.delivered.max(1) as f64),
        "v1": (args.protocol == Protocol::V1).then(|| json!(tally.v1)),
        "ok": failures.is_empty(),
        "failures": failures,
    });
    if common.json {
        print_json(&report);
    } else {
        let mut t = Table::default();
        t.row(
            "scenario",
            format!(
                "fanout · {} subscribers · {} topics · {} publishers · {} B {} · {}",
                summary.subscribers,
                layout.topics,
                publishers,
                args.size,
                if args.text { "text" } else { "binary" },
                args.protocol.name(),
            ) + if args.trust_envelopes {
                " (binary envelopes stripped, not checked)"
            } else {
                ""
            },
        )
        .row(
            "rate",
            match args.rate {
                Rate::Max => format!("max (window {window})"),
                Rate::PerSec(r) => format!("{} msg/s", thousands(r)),
            },
        )
        .row(
            "time",
            format!(
                "{:.1} s warm-up + {:.1} s measured",
                args.warmup.as_secs_f64(),
                secs
            ),
        )
        .row(
            "connect",
            format!(
                "{} in {:.2} s ({} conn/s), {} failed",
                summary.connected,
                clock::secs(summary.elapsed_ns),
                thousands(summary.rate()),
                summary.failed
            ),
        )
        .row("deliveries/s", thousands(tally.measured as f64 / secs))
        .row(
            "published/s",
            thousands(tally.published_measured as f64 / secs),
        )
        .row(
            "published",
            format!(
                "{} (expected deliveries {})",
                tally.published, tally.expected
            ),
        )
        .row("delivered", tally.delivered)
        .row(
            "lost / ooo / dup",
            format!(
                "{} / {} / {}",
                tally.lost, tally.out_of_order, tally.duplicates
            ),
        )
        .row("latency", latency_line(&lat))
        .row(
            "first publish",
            format!(
                "{} of {} deliveries ({first_lost} lost) · {}",
                tally.first_delivered,
                tally.first_expected,
                latency_line(&first)
            ),
        );
        if common.server_pid.is_some() {
            connect::memory_rows(&mut t, &open);
        }
        if let Some(s) = run_cpu {
            t.row(
                "server CPU",
                format!(
                    "{s:.1} s from the first publication to the end of the drain ({:.2} µs per delivery)",
                    s * 1e6 / tally.delivered.max(1) as f64
                ),
            );
        }
        if args.protocol == Protocol::V1 {
            v1_rows(&mut t, &tally.v1);
        }
        if tally.closed_by_server > 0 {
            t.row(
                "closed by server",
                format!(
                    "{} ({})",
                    tally.closed_by_server,
                    tally.first_problem.as_deref().unwrap_or("")
                ),
            );
        }
        if !drained {
            t.row("drain", "timed out: the missing tail counts as lost");
        }
        print!("{}", t.render());
    }
    Ok(report_failures(&failures))
}

/// The `ringcast.v1` rows of a report table.
fn v1_rows(t: &mut Table, v: &V1Tally) {
    t.row(
        "envelopes",
        format!(
            "{} · {} heartbeats · {} other ops",
            v.envelopes, v.heartbeats, v.other_ops
        ),
    )
    .row(
        "gaps",
        format!(
            "{} announcing {} messages missing",
            v.gap_messages, v.announced
        ),
    )
    .row(
        "v1 unannounced / dup / ooo",
        format!("{} / {} / {}", v.unannounced, v.duplicates, v.out_of_order),
    );
    let odd = v.wrong_topic + v.malformed + v.bad_gaps + v.errors + v.resets;
    if odd > 0 {
        t.row(
            "v1 problems",
            format!(
                "{} wrong topic · {} malformed · {} bad gaps · {} errors · {} resets",
                v.wrong_topic, v.malformed, v.bad_gaps, v.errors, v.resets
            ),
        );
    }
}

/// The default publisher window for `size`-byte payloads: 256 messages, or 1 MiB of
/// payload per subscriber if that is fewer (at least 4).
fn default_window(size: u64) -> u64 {
    ((1 << 20) / size.max(1)).clamp(4, 256)
}

fn expect(failures: &mut Vec<String>, bad: bool, msg: String) {
    if bad {
        failures.push(msg);
    }
}

fn report_failures(failures: &[String]) -> i32 {
    if failures.is_empty() {
        return 0;
    }
    eprintln!("loadgen: expectation failed: {}", failures.join("; "));
    EXIT_EXPECTATION
}

/// `loadgen echo`; returns the exit code.
pub(crate) fn echo(args: &EchoArgs) -> Result<i32, Failure> {
    let common = &args.common;
    clock::init(common.clock_base);
    if args.connections == 0 {
        return Err("--connections must be at least 1".to_owned());
    }
    let p = procs(common, args.connections)?;
    let path: Arc<str> = Arc::from(p.target.path(&args.path));
    let layout = Layout::plain(args.connections, move |i| ConnPlan {
        node: 0,
        path: Arc::clone(&path),
        role: Role::Echo { id: i as u32 },
    });
    let interval = args
        .rate
        .map(|r| ((args.connections as f64) * 1e9 / r).max(1.0) as u64);
    let s = settings(
        common,
        &p,
        &layout,
        args.size as usize,
        args.text,
        None,
        interval,
        1,
        None,
    );
    if p.spec.is_some() {
        return serve_as_worker(s, &layout, &p);
    }
    let mut backend = start(&p, s, &layout)?;
    let summary = connect_phase(common, backend.as_mut(), args.connections);
    if summary.fatal || summary.connected == 0 {
        let why = summary
            .first_error
            .clone()
            .unwrap_or_else(|| "no connection succeeded".to_owned());
        let _ = backend.finish();
        return Err(format!(
            "{why} ({} of {} connections open)",
            summary.connected, args.connections
        ));
    }
    let t0 = clock::now_ns() + 20_000_000;
    let t1 = t0 + args.warmup.as_nanos() as u64;
    let t2 = t1 + args.duration.as_nanos() as u64;
    backend.go(t0, t1, t2);
    timed_phase(
        common,
        backend.as_mut(),
        (t0, t2),
        progress_enabled(common, args.warmup + args.duration),
        "echoes",
        None,
    );
    let _ = backend.wait_stopped(Duration::from_secs(2));
    let drained = backend.drain(&[], args.drain);
    let tally: Tally = backend.finish()?;
    let secs = args.duration.as_secs_f64().max(1e-9);
    let lat = tally.latency.summary();
    let mut failures = Vec::new();
    if args.expect_all {
        expect(
            &mut failures,
            tally.published == 0,
            "nothing was sent".into(),
        );
        expect(
            &mut failures,
            tally.lost > 0,
            format!("{} echoes missing", tally.lost),
        );
        expect(
            &mut failures,
            summary.failed > 0,
            format!("{} connections failed", summary.failed),
        );
        expect(
            &mut failures,
            tally.closed_by_server > 0,
            format!("the server closed {} connections", tally.closed_by_server),
        );
    }
    let rtt_per_sec = tally.measured as f64 / secs;
    let report = json!({
        "scenario": "echo",
        "url": common.url,
        "connections": args.connections,
        "connected": summary.connected,
        "size": args.size,
        "text": args.text,
        "rate": args.rate,
        "warmup_s": args.warmup.as_secs_f64(),
        "duration_s": secs,
        "threads": p.threads,
        "workers": p.workers,
        "sent": tally.published,
        "received": tally.delivered,
        "lost": tally.lost,
        "round_trips_per_sec": rtt_per_sec,
        "bytes_per_sec": rtt_per_sec * args.size as f64,
        "drained": drained,
        "connect_errors": summary.failed,
        "closed_by_server": tally.closed_by_server,
        "first_problem": tally.first_problem,
        "lat_us": lat_json(&lat),
        "ok": failures.is_empty(),
        "failures": failures,
    });
    if common.json {
        print_json(&report);
    } else {
        let mut t = Table::default();
        t.row(
            "scenario",
            format!(
                "echo · {} connections · {} B · {}",
                summary.connected,
                args.size,
                args.rate.map_or("closed loop".to_owned(), |r| format!(
                    "{} msg/s",
                    thousands(r)
                ))
            ),
        )
        .row("round trips/s", thousands(rtt_per_sec))
        .row(
            "throughput",
            format!("{:.1} MB/s each way", rtt_per_sec * args.size as f64 / 1e6),
        )
        .row(
            "sent / received",
            format!(
                "{} / {} ({} missing)",
                tally.published, tally.delivered, tally.lost
            ),
        )
        .row("round trip", latency_line(&lat));
        print!("{}", t.render());
    }
    Ok(report_failures(&failures))
}
