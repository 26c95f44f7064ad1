//! A market-data ticker: synthetic quotes published to one topic per symbol, with a
//! custom handler that only lets clients subscribe to known symbols, and that lets
//! `ringcast.v1` clients start with the latest quote or resume where they left off.
//!
//! ```sh
//! cargo run --release -p ringcast --example ticker
//! # plain: the quotes as published
//! python3 -m websockets ws://127.0.0.1:9003/quotes/BTC-USD,ETH-USD
//! # ringcast.v1 (Sec-WebSocket-Protocol: ringcast.v1): envelopes with topic and seq;
//! # ?snapshot=1 starts with the latest quote of each symbol, ?since=SEQ resumes after SEQ
//! # (a {"op":"gap",…} first if some are no longer held); &epoch=E (one symbol) names the
//! # numbering SEQ belongs to, from the {"op":"epoch",…} that started the subscription: if
//! # the ticker restarted since, a {"op":"reset",…} says so
//! ```
//!
//! Clients may send `add SOL-USD`, `add SOL-USD since 120 [epoch E]` (v1) or `drop ETH-USD`;
//! the handler checks them against the symbol list. Stop with Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringcast::Engine;
use ringcast::fanout::{Epoch, Start};
use ringcast::server::{Client, Handler, Message, Upgrade, UpgradeRequest};

const SYMBOLS: &[&str] = &["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD"];

/// Accepts `/quotes/SYM[,SYM…][?since=SEQ | ?snapshot=1]` for known symbols; control
/// messages add or drop symbols.
struct Quotes;

impl Handler for Quotes {
    fn on_upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let Some(list) = req.path.strip_prefix("/quotes/") else {
            return reject(404, "subscribe at /quotes/SYMBOL[,SYMBOL…]".into());
        };
        let topics: Vec<String> = list.split(',').map(str::to_owned).collect();
        if let Some(bad) = topics.iter().find(|t| !SYMBOLS.contains(&t.as_str())) {
            return reject(
                400,
                format!("unknown symbol {bad}; known: {}", SYMBOLS.join(",")),
            );
        }
        // Starting in the past needs the envelopes' sequence numbers: ringcast.v1 only.
        let epoch = req.query_param("epoch");
        let start = match (req.query_param("since"), req.query_param("snapshot")) {
            (Some(s), _) => match (s.parse(), epoch.as_deref().map(Epoch::parse)) {
                (Ok(seq), None) => Start::Since(seq),
                (Ok(since), Some(Some(epoch))) if topics.len() == 1 => {
                    Start::Resume { since, epoch }
                }
                (Ok(_), Some(_)) => {
                    return reject(400, "epoch: 16 hex digits, one symbol".into());
                }
                (Err(_), _) => return reject(400, format!("since must be a number, not {s}")),
            },
            (None, Some(_)) => Start::Snapshot,
            (None, None) => Start::Live,
        };
        if start != Start::Live && !req.is_v1() {
            return reject(
                400,
                "since/snapshot need Sec-WebSocket-Protocol: ringcast.v1".into(),
            );
        }
        Upgrade::Accept {
            topics,
            publish_to: None,
            start,
        }
    }

    fn on_message(&self, client: &mut Client<'_>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let words: Vec<&str> = text.split_whitespace().collect();
        match words[..] {
            ["add", sym] if SYMBOLS.contains(&sym) => {
                let _ = client.subscribe(sym);
                client.send_text(&format!("added {sym}"));
            }
            ["add", sym, "since", seq, ref rest @ ..] if SYMBOLS.contains(&sym) => {
                let start = match (seq.parse(), rest) {
                    (Ok(since), []) => Ok(Start::Since(since)),
                    (Ok(since), ["epoch", e]) => Epoch::parse(e)
                        .map(|epoch| Start::Resume { since, epoch })
                        .ok_or("epoch takes 16 hex digits"),
                    (Ok(_), _) => Err("add SYMBOL since SEQ [epoch E]"),
                    (Err(_), _) => Err("since takes a sequence number"),
                };
                match start.map(|s| client.subscribe_from(sym, s)) {
                    Ok(Ok(_)) => client.send_text(&format!("added {sym} after #{seq}")),
                    Ok(Err(e)) => client.send_text(&format!("cannot add {sym}: {e}")),
                    Err(why) => client.send_text(why),
                }
            }
            ["drop", sym] => {
                client.unsubscribe(sym);
                client.send_text(&format!("dropped {sym}"));
            }
            _ => client.send_text("commands: 'add SYMBOL [since SEQ [epoch E]]', 'drop SYMBOL'"),
        }
    }
}

fn reject(status: u16, reason: String) -> Upgrade {
    Upgrade::Reject { status, reason }
}

fn main() -> std::io::Result<()> {
    let handle = Engine::builder()
        .listen("127.0.0.1:9003".parse().expect("address"))
        .handler(Quotes)
        .start()?;
    println!(
        "quotes on ws://{}/quotes/BTC-USD,ETH-USD",
        handle.local_addr()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag)?;

    let fanout = handle.fanout();
    let topics: Vec<_> = SYMBOLS
        .iter()
        .map(|s| ringcast::fanout::TopicName::new(s))
        .collect();
    let mut price = [64_000.0, 3_100.0, 150.0, 1.08];
    let start = Instant::now();
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick += 1;
        for (i, topic) in topics.iter().enumerate() {
            // A deterministic wiggle; real feeds come from an exchange.
            price[i] *= 1.0 + ((tick as f64 * (i + 1) as f64).sin() * 0.0005);
            let quote = format!(
                r#"{{"symbol":"{topic}","t_ms":{},"px":{:.5}}}"#,
                start.elapsed().as_millis(),
                price[i]
            );
            // The engine numbers each topic's messages; v1 clients see it in the envelope
            // and resume from it.
            let p = fanout.publish(topic, ringcast::protocol::OpCode::Text, quote.as_bytes());
            if tick % 100 == 0 {
                println!("{topic} #{}: {quote}", p.seq);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    handle.shutdown();
    Ok(())
}
