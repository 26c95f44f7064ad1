//! `loadgen resume`: `ringcast.v1` subscribers at a fixed publishing rate, a share of them
//! resetting their connections every few seconds (and optionally all at once, a storm)
//! and resuming with `?since=`. See [`crate::resume`] for what is timed and counted.

use std::time::Duration;

use serde_json::json;

use super::{
    Failure, connect_phase, expect, lat_json, print_json, procs, progress_enabled, report_failures,
    serve_as_worker, settings, start, timed_phase, topic_layout, v1_rows,
};
use crate::cli::{Protocol, ResumeArgs};
use crate::clock;
use crate::report::{Table, latency_line, thousands};
use crate::resume::Plan;

/// Publishers keep their rate whatever the subscribers do: resuming is the server's job.
const NO_WINDOW: u64 = u64::MAX / 4;

/// `loadgen resume`; returns the exit code.
pub(crate) fn resume(args: &ResumeArgs) -> Result<i32, Failure> {
    let common = &args.common;
    clock::init(common.clock_base);
    check(args)?;
    let publishers = args.publishers.unwrap_or(args.topics) as usize;
    let p = procs(common, args.subscribers + publishers)?;
    let names = (0..args.topics).map(|i| format!("t{i}")).collect();
    let nodes = p.sub_targets.len();
    let layout = topic_layout(names, false, args.subscribers, publishers, &p.target, nodes)?;
    let interval = ((publishers as f64) * 1e9 / args.rate).max(1.0) as u64;
    let mut s = settings(
        common,
        &p,
        &layout,
        args.size as usize,
        args.text,
        Some(interval),
        None,
        NO_WINDOW,
        None,
    );
    s.protocol = Protocol::V1;
    s.rejoin = Some(Plan {
        every_ns: args.reconnect_every.as_nanos() as u64,
        fraction: args.reconnect_fraction,
        storm_at_ns: args.storm_at.map(|d| d.as_nanos() as u64),
        elsewhere: args.rejoin_elsewhere,
    });
    if p.spec.is_some() {
        return serve_as_worker(s, &layout, &p);
    }
    let mut backend = start(&p, s, &layout)?;
    let summary = connect_phase(common, backend.as_mut(), layout.total());
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
    let t0 = clock::now_ns() + 20_000_000;
    let t2 = t0 + args.duration.as_nanos() as u64;
    backend.go(t0, t0, t2);
    timed_phase(
        common,
        backend.as_mut(),
        (t0, t2),
        progress_enabled(common, args.duration),
        "delivered",
        None,
    );
    let finals = backend.wait_stopped(Duration::from_secs(5));
    let drained = backend.drain(&finals, args.drain);
    let tally = backend.finish()?;
    let r = &tally.resume;
    let v1 = &tally.v1;
    let mut failures = Vec::new();
    if args.expect_all {
        expect(
            &mut failures,
            tally.published == 0,
            "nothing was published".into(),
        );
        failures.extend(v1.failures());
        for (n, what) in [
            (tally.duplicates, "duplicate payloads"),
            (tally.out_of_order, "payloads out of order"),
            (summary.failed, "connections failed"),
            (r.reconnect_failed, "reconnections failed"),
            (tally.closed_by_server, "connections closed by the server"),
        ] {
            expect(&mut failures, n > 0, format!("{n} {what}"));
        }
    }
    let resume_lat = r.resume.summary();
    let storm_lat = r.storm_resume.summary();
    let mut report = json!({
        "scenario": "resume",
        "url": common.url,
        "protocol": Protocol::V1.name(),
        "subscribers": args.subscribers,
        "subscribers_connected": summary.subscribers,
        "publishers": publishers,
        "topics": args.topics,
        "size": args.size,
        "text": args.text,
        "rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "reconnect_every_s": args.reconnect_every.as_secs_f64(),
        "reconnect_fraction": args.reconnect_fraction,
        "storm_at_s": args.storm_at.map(|d| d.as_secs_f64()),
        "threads": p.threads,
        "workers": p.workers,
        "published": tally.published,
        "expected": tally.expected,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "gap_announced": v1.announced,
        "unannounced_lost": v1.unannounced,
        "duplicates": tally.duplicates.max(v1.duplicates),
        "out_of_order": tally.out_of_order.max(v1.out_of_order),
        "malformed": tally.malformed,
    });
    // One json! of every field is past the macro's recursion limit.
    let more = json!({
        "reconnects": r.drops,
        "storm_reconnects": r.storm_drops,
        "reconnected": r.reconnected,
        "reconnect_failed": r.reconnect_failed,
        "unresumed": r.unresumed,
        "replayed": r.replayed,
        "resume_us": lat_json(&resume_lat),
        "resume_samples": r.resume.count(),
        "storm_resume_us": lat_json(&storm_lat),
        "storm_resume_samples": r.storm_resume.count(),
        "lat_us": lat_json(&tally.latency.summary()),
        "v1": v1,
        "drained": drained,
        "connect_errors": summary.failed,
        "first_connect_error": summary.first_error,
        "closed_by_server": tally.closed_by_server,
        "first_problem": tally.first_problem,
        "connect_s": clock::secs(summary.elapsed_ns),
        "ok": failures.is_empty(),
        "failures": failures,
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (report.as_object_mut(), more) {
        obj.extend(more);
    }
    if common.json {
        print_json(&report);
    } else {
        let mut t = Table::default();
        t.row(
            "scenario",
            format!(
                "resume · {} subscribers · {} topics · {} publishers · {} B {} · ringcast.v1",
                summary.subscribers,
                args.topics,
                publishers,
                args.size,
                if args.text { "text" } else { "binary" }
            ),
        )
        .row(
            "rate",
            format!(
                "{} msg/s for {:.1} s",
                thousands(args.rate),
                args.duration.as_secs_f64()
            ),
        )
        .row(
            "churn",
            format!(
                "{:.0} % every {:.1} s: {} resets",
                args.reconnect_fraction * 100.0,
                args.reconnect_every.as_secs_f64(),
                r.drops
            ),
        );
        if let Some(at) = args.storm_at {
            t.row(
                "storm",
                format!("at {:.1} s: {} resets", at.as_secs_f64(), r.storm_drops),
            );
        }
        t.row(
            "reconnected",
            format!(
                "{} ({} failed, {} never resumed)",
                r.reconnected, r.reconnect_failed, r.unresumed
            ),
        )
        .row("time to resume", latency_line(&resume_lat));
        if args.storm_at.is_some() {
            t.row("storm resume", latency_line(&storm_lat));
        }
        t.row("replayed", r.replayed)
            .row(
                "published",
                format!(
                    "{} (expected deliveries {})",
                    tally.published, tally.expected
                ),
            )
            .row("delivered", tally.delivered)
            .row("latency", latency_line(&tally.latency.summary()));
        v1_rows(&mut t, v1);
        if let Some(why) = &tally.first_problem {
            t.row("first problem", why);
        }
        if !drained {
            t.row("drain", "timed out: the missing tail counts as lost");
        }
        print!("{}", t.render());
    }
    Ok(report_failures(&failures))
}

/// Refuses arguments that make no run.
fn check(args: &ResumeArgs) -> Result<(), Failure> {
    if args.subscribers == 0 {
        return Err("--subscribers must be at least 1".to_owned());
    }
    if args.duration.is_zero() {
        return Err("--duration must be more than 0".to_owned());
    }
    if args.rejoin_elsewhere && args.common.url.len() < 2 {
        return Err(
            "--rejoin-elsewhere needs at least two --url (the nodes to move between)".into(),
        );
    }
    if args.reconnect_fraction > 0.0 && args.reconnect_every.is_zero() {
        return Err("--reconnect-every must be more than 0".to_owned());
    }
    if let Some(at) = args.storm_at
        && at >= args.duration
    {
        return Err(format!(
            "--storm-at {at:?} is not within --duration {:?}",
            args.duration
        ));
    }
    Ok(())
}
