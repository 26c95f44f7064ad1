//! `loadgen fanout` against an in-process ringcast broadcast server: every published
//! message reaches every subscriber, and the report says so.

use crate::util;

use util::{broadcast_server, loadgen, u, url};

#[test]
fn every_message_reaches_every_subscriber() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let out = loadgen(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "200",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--warmup",
        "0.5s",
        "--threads",
        "2",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["scenario"], "fanout");
    assert_eq!(u(&r, "subscribers"), 200);
    assert_eq!(u(&r, "size"), 64);
    let published = u(&r, "published");
    assert!(
        published > 2000,
        "paced at 2000/s for 2.5 s, published {published}"
    );
    assert!(published < 6000, "pacing overshot: {published}");
    assert_eq!(u(&r, "delivered"), published * 200);
    assert_eq!(u(&r, "expected"), published * 200);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(u(&r, "connect_errors"), 0);
    let rate = r["deliveries_per_sec"].as_f64().expect("rate");
    assert!(
        rate > 200_000.0 && rate < 600_000.0,
        "about 2000 × 200 deliveries/s, got {rate}"
    );
    let lat = &r["lat_us"];
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(lat[key].as_f64().expect(key) > 0.0, "{key} in {lat}");
    }
    assert!(lat["p50"].as_f64() <= lat["max"].as_f64());
    server.shutdown();
}

#[test]
fn topics_text_and_several_publishers() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let out = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "60",
        "--topics",
        "3",
        "--publishers",
        "6",
        "--text",
        "--size",
        "100",
        "--rate",
        "600",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r, "topics"), 3);
    assert_eq!(u(&r, "publishers"), 6);
    // Each topic has 20 subscribers; each message goes to its topic's subscribers only.
    assert_eq!(u(&r, "delivered"), u(&r, "published") * 20);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "malformed"), 0);
    server.shutdown();
}

#[test]
fn max_rate_is_bounded_and_lossless() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let out = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "50",
        "--rate",
        "max",
        "--window",
        "16",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["rate"], "max");
    assert_eq!(u(&r, "window"), 16);
    assert!(u(&r, "published") > 100);
    assert_eq!(u(&r, "delivered"), u(&r, "published") * 50);
    assert_eq!(u(&r, "lost"), 0);
    server.shutdown();
}

#[test]
fn worker_processes_aggregate_into_one_report() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let out = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "120",
        "--topics",
        "2",
        "--workers",
        "2",
        "--rate",
        "400",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--threads",
        "2",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r, "workers"), 2);
    assert_eq!(u(&r, "subscribers_connected"), 120);
    assert_eq!(u(&r, "delivered"), u(&r, "published") * 60);
    assert_eq!(u(&r, "lost"), 0);
    assert!(r["lat_us"]["p99"].as_f64().expect("p99") > 0.0);
    // Latency samples from both workers: every measured delivery was recorded.
    assert_eq!(u(&r, "lat_samples"), u(&r, "measured_deliveries"));
    server.shutdown();
}

#[test]
fn human_table_by_default() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let out = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "10",
        "--rate",
        "100",
        "--duration",
        "0.5s",
        "--warmup",
        "0s",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    for key in ["deliveries/s", "lost / ooo / dup", "latency", "p99.9"] {
        assert!(
            out.stdout.contains(key),
            "{key} missing from:\n{}",
            out.stdout
        );
    }
    server.shutdown();
}

#[test]
fn the_lag_log_has_a_line_per_second_of_publishing() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let path = std::env::temp_dir().join(format!("loadgen-lag-{}.csv", std::process::id()));
    let out = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "50",
        "--rate",
        "1000",
        "--duration",
        "3s",
        "--warmup",
        "0.5s",
        "--threads",
        "1",
        "--expect-all",
        "--json",
        "--lag-log",
        path.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let text = std::fs::read_to_string(&path).expect("the lag log");
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("unix_s,delivered,p50_us,p99_us,max_us"));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|f| f.parse().expect(l)).collect())
        .collect();
    // 3.5 s of publishing: a line at 1, 2 and 3 s (the last partial second has none).
    assert!((2..=4).contains(&rows.len()), "{text}");
    let mut logged = 0.0;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), 5, "{text}");
        assert!(r[1] > 0.0, "line {i} has no deliveries: {text}");
        assert!(r[2] <= r[3] && r[3] <= r[4], "p50 ≤ p99 ≤ max: {text}");
        if i > 0 {
            assert!(r[0] > rows[i - 1][0], "time goes on: {text}");
        }
        logged += r[1];
    }
    // About 50 000 deliveries a second; the lines hold most of them.
    let delivered = u(&out.json(), "delivered") as f64;
    assert!(
        logged <= delivered && logged >= delivered * 0.4,
        "{logged} logged of {delivered}: {text}"
    );
    server.shutdown();
}

#[test]
fn latency_every_times_every_nth_message_and_checks_them_all() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let subs = 50;
    let out = loadgen(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        &subs.to_string(),
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--latency-every",
        "8",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r, "latency_every"), 8);
    // Every delivery is still counted and checked ...
    let published = u(&r, "published");
    assert_eq!(u(&r, "delivered"), published * subs);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    // ... and the measured messages whose number is a multiple of 8 are timed, at every
    // subscriber: of M consecutive messages, M/8 rounded either way.
    let measured = u(&r, "measured_deliveries");
    assert_eq!(measured % subs, 0, "whole messages are measured");
    let m = measured / subs;
    assert!(m > 500, "about 1000 messages measured, got {m}");
    let timed = u(&r, "lat_samples");
    assert!(
        timed >= m / 8 * subs && timed <= m.div_ceil(8) * subs,
        "{timed} latencies timed of {m} messages × {subs} subscribers"
    );
    server.shutdown();
}

#[test]
fn latency_every_must_be_at_least_one() {
    let out = loadgen(&[
        "fanout",
        "--url",
        "ws://127.0.0.1:9/",
        "--latency-every",
        "0",
    ]);
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("--latency-every"), "{}", out.stderr);
}
