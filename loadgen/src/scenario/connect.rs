//! `loadgen connect`: N idle connections — how fast they open, how many stay open, and
//! what each costs the server (its RSS) and the kernel (slab and TCP buffers, both ends).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{
    Failure, Layout, connect_phase, print_json, procs, progress_enabled, serve_as_worker, settings,
    start, timed_phase,
};
use crate::cli::ConnectArgs;
use crate::clock;
use crate::cost::{self, Cost};
use crate::report::{Table, thousands};
use crate::run::{ConnPlan, Role};

/// How long the server settles after the last handshake before the memory is read.
const SETTLE: Duration = Duration::from_millis(200);

/// `loadgen connect`; returns the exit code.
pub(crate) fn connect(args: &ConnectArgs) -> Result<i32, Failure> {
    let common = &args.common;
    clock::init(common.clock_base);
    if args.connections == 0 {
        return Err("--connections must be at least 1".to_owned());
    }
    let p = procs(common, args.connections)?;
    let path: Arc<str> = Arc::from(p.target.path(&args.path));
    let plan_path = Arc::clone(&path);
    let layout = Layout::plain(args.connections, move |_| ConnPlan {
        node: 0,
        path: Arc::clone(&plan_path),
        role: Role::Idle,
    });
    let s = settings(common, &p, &layout, 16, false, None, None, 1, args.rate);
    if p.spec.is_some() {
        return serve_as_worker(s, &layout, &p);
    }
    let before = cost::sample(common.server_pid)?;
    let mut backend = start(&p, s, &layout)?;
    let summary = connect_phase(common, backend.as_mut(), args.connections);
    if summary.connected == 0 || summary.fatal {
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
    if summary.failed > 0 && !common.json {
        eprintln!(
            "loadgen: {} connections failed ({})",
            summary.failed,
            summary.first_error.as_deref().unwrap_or("?")
        );
    }
    let t0 = clock::now_ns();
    let t2 = t0 + args.hold.as_nanos() as u64;
    backend.go(t0, t0, t2);
    // Let the server settle before the first reading.
    std::thread::sleep(SETTLE.min(args.hold));
    let open = cost::sample(common.server_pid)?.cost_since(&before, summary.connected);
    timed_phase(
        common,
        backend.as_mut(),
        (t0, t2),
        progress_enabled(common, args.hold),
        "idle",
        None,
    );
    // Workers report their last counts with their stop.
    let _ = backend.wait_stopped(Duration::from_secs(1));
    let (_, _, open_after_hold) = backend.live();
    let after = cost::sample(common.server_pid)?;
    let _ = backend.drain(&[], Duration::from_millis(10));
    let tally = backend.finish()?;
    let report = json!({
        "scenario": "connect",
        "url": common.url,
        "connections": args.connections,
        "connected": summary.connected,
        "connect_errors": summary.failed,
        "first_connect_error": summary.first_error,
        "connect_s": clock::secs(summary.elapsed_ns),
        "conn_per_sec": summary.rate(),
        "peak_concurrent": summary.peak_open,
        "hold_s": args.hold.as_secs_f64(),
        "open_after_hold": open_after_hold,
        "closed_by_server": tally.closed_by_server,
        "first_problem": tally.first_problem,
        "server_rss_before_kib": before.rss_kib(),
        "server_rss_open_kib": open.server_rss_kib,
        "server_rss_after_kib": after.rss_kib(),
        "server_bytes_per_conn": open.server_rss_per_conn,
        "memory": open,
        "threads": p.threads,
        "workers": p.workers,
    });
    if common.json {
        print_json(&report);
        return Ok(0);
    }
    let mut t = Table::default();
    t.row(
        "scenario",
        format!("connect · {} connections to {}", args.connections, path),
    )
    .row(
        "connected",
        format!(
            "{} in {:.2} s ({} conn/s), {} failed",
            summary.connected,
            clock::secs(summary.elapsed_ns),
            thousands(summary.rate()),
            summary.failed
        ),
    )
    .row("peak concurrent", summary.peak_open)
    .row(
        "after hold",
        format!(
            "{} open after {:.1} s",
            open_after_hold,
            args.hold.as_secs_f64()
        ),
    );
    if let (Some(b), Some(a)) = (before.rss_kib(), open.server_rss_kib) {
        t.row(
            "server RSS",
            format!(
                "{:.1} MiB before, {:.1} MiB open, {} after hold",
                b as f64 / 1024.0,
                a as f64 / 1024.0,
                after
                    .rss_kib()
                    .map_or("?".to_owned(), |r| format!("{:.1} MiB", r as f64 / 1024.0))
            ),
        );
    }
    memory_rows(&mut t, &open);
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
    print!("{}", t.render());
    Ok(0)
}

/// The rows of a report that say what each connection costs.
pub(super) fn memory_rows(t: &mut Table, c: &Cost) {
    if let Some(b) = c.server_rss_per_conn {
        t.row("bytes/conn", format!("{b:.0} (server RSS)"));
    }
    t.row(
        "kernel/conn",
        format!(
            "{:.0} B, both ends ({:.0} B slab; {} sockets opened)",
            c.kernel_per_conn, c.slab_per_conn, c.sockets
        ),
    );
}
