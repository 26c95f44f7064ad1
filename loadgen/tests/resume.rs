//! `loadgen resume` and `fanout --protocol ringcast.v1` against an in-process ringcast
//! broadcast server: subscribers that reset their connections come back with `?since=` and
//! miss nothing, or are told what they missed, and the report says so.

use std::time::Duration;

use ringcast::Engine;
use ringcast::fanout::History;

use crate::util;

use util::{broadcast_server, loadgen, u, url};

#[test]
fn resets_and_a_storm_lose_nothing() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    let out = loadgen(&[
        "resume",
        "--url",
        &url,
        "-n",
        "200",
        "--topics",
        "2",
        "--rate",
        "400",
        "--duration",
        "2s",
        "--reconnect-every",
        "0.5s",
        "--reconnect-fraction",
        "0.2",
        "--storm-at",
        "1.2s",
        "--threads",
        "2",
        "--drain",
        "1s",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["scenario"], "resume");
    assert_eq!(r["protocol"], "ringcast.v1");
    assert_eq!(u(&r, "subscribers_connected"), 200);
    // Three rounds (0.5, 1.0, 1.5 s) of 20 % of each thread's 100 subscribers, and the
    // storm. A subscriber still reconnecting when a round or the storm comes is not reset
    // again (on a slow machine the round after the storm finds some so): the first round
    // takes its whole share, the others and the storm at most theirs. Every reset
    // reconnected and resumed.
    let (rounds, storm) = (u(&r, "reconnects"), u(&r, "storm_reconnects"));
    assert!((2 * 20..=3 * 2 * 20).contains(&rounds), "{r}");
    assert!((200 - 2 * 2 * 20..=200).contains(&storm), "{r}");
    assert_eq!(u(&r, "reconnected"), rounds + storm);
    assert_eq!(u(&r, "reconnect_failed"), 0);
    assert_eq!(u(&r, "unresumed"), 0);
    assert_eq!(u(&r, "resume_samples"), rounds);
    assert_eq!(u(&r, "storm_resume_samples"), storm);
    for key in ["resume_us", "storm_resume_us"] {
        let p99 = r[key]["p99"].as_f64().expect("p99");
        assert!(p99 > 0.0 && p99 < 2e6, "{key} p99 {p99} µs");
    }
    // Whatever the resets cut off came back by replay (the history holds it all).
    assert!(u(&r, "replayed") > 0, "{r}");
    assert_eq!(u(&r, "gap_announced"), 0);
    assert_eq!(u(&r, "unannounced_lost"), 0);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    let published = u(&r, "published");
    assert!(published > 400, "2 s at 400/s, published {published}");
    assert_eq!(u(&r, "expected"), published * 100);
    assert_eq!(u(&r, "delivered"), published * 100);
    assert_eq!(u(&r["v1"], "envelopes"), published * 100);
    server.shutdown();
}

#[test]
fn fanout_checks_every_envelope() {
    let server = broadcast_server();
    let url = url(server.local_addr());
    for (text, trust) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut args = vec![
            "fanout",
            "--url",
            &url,
            "-n",
            "40",
            "--topics",
            "2",
            "--protocol",
            "ringcast.v1",
            "--rate",
            "400",
            "--duration",
            "0.5s",
            "--warmup",
            "0s",
            "--expect-all",
            "--json",
        ];
        if text {
            args.push("--text");
        }
        if trust {
            args.push("--trust-envelopes");
        }
        let out = loadgen(&args);
        assert_eq!(out.code, Some(0), "text {text}, stderr: {}", out.stderr);
        let r = out.json();
        assert_eq!(r["trust_envelopes"], trust);
        let published = u(&r, "published");
        assert!(published > 100, "published {published}");
        assert_eq!(u(&r, "delivered"), published * 20);
        assert_eq!(u(&r, "lost"), 0);
        assert_eq!(u(&r, "malformed"), 0);
        let v1 = &r["v1"];
        // Trusted, binary envelopes are counted and stripped: the payloads inside still
        // pass the publisher checks above. Text ones are checked either way.
        assert_eq!(u(v1, "envelopes"), published * 20);
        for key in [
            "unannounced",
            "duplicates",
            "out_of_order",
            "malformed",
            "errors",
        ] {
            assert_eq!(u(v1, key), 0, "{key} in {v1}");
        }
    }
    server.shutdown();
}

#[test]
fn a_short_history_announces_gaps_and_they_are_not_losses() {
    // Two messages of history: a storm reconnecting one subscriber at a time
    // (--max-pending 1) misses more than that for all but the first few.
    let server = Engine::builder()
        .listen(([127, 0, 0, 1], 0).into())
        .threads(1)
        .pin(false)
        .handler(ringcast::server::Broadcast::default())
        .history(History {
            messages: 2,
            bytes: 1 << 20,
            idle_ttl: Duration::from_secs(60),
            ..History::default()
        })
        .start()
        .expect("start the broadcast server");
    let url = url(server.local_addr());
    let out = loadgen(&[
        "resume",
        "--url",
        &url,
        "-n",
        "100",
        "--topics",
        "1",
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--reconnect-fraction",
        "0",
        "--storm-at",
        "0.3s",
        "--max-pending",
        "1",
        "--threads",
        "1",
        "--drain",
        "1s",
        "--expect-all",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let r = out.json();
    assert_eq!(u(&r, "reconnects"), 0);
    assert_eq!(u(&r, "storm_reconnects"), 100);
    assert_eq!(u(&r, "storm_resume_samples"), 100);
    let v1 = &r["v1"];
    let announced = u(v1, "announced");
    assert!(u(v1, "gap_messages") > 0 && announced > 0, "{v1}");
    assert_eq!(u(v1, "bad_gaps"), 0);
    // What the gaps announced is exactly what the payload streams miss.
    assert_eq!(u(&r, "lost"), announced);
    assert_eq!(u(&r, "unannounced_lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(
        u(&r, "delivered") + announced,
        u(&r, "published") * 100,
        "every message delivered or announced missing"
    );
    server.shutdown();
}
