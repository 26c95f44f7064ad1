//! A market-data ticker: synthetic quotes published to one topic per symbol, with a
//! custom handler that only lets clients subscribe to known symbols.
//!
//! ```sh
//! cargo run --release -p ringcast --example ticker
//! python3 -m websockets ws://127.0.0.1:9003/quotes/BTC-USD,ETH-USD
//! ```
//!
//! Clients may send `add SOL-USD` or `drop ETH-USD` to change their symbols; the handler
//! checks them against the symbol list. Stop with Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringcast::Engine;
use ringcast::server::{Client, Handler, Message, Upgrade, UpgradeRequest};

const SYMBOLS: &[&str] = &["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD"];

/// Accepts `/quotes/SYM[,SYM…]` for known symbols; control messages add or drop symbols.
struct Quotes;

impl Handler for Quotes {
    fn on_upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let Some(list) = req.path.strip_prefix("/quotes/") else {
            return Upgrade::Reject {
                status: 404,
                reason: "subscribe at /quotes/SYMBOL[,SYMBOL…]".into(),
            };
        };
        let topics: Vec<String> = list.split(',').map(str::to_owned).collect();
        if let Some(bad) = topics.iter().find(|t| !SYMBOLS.contains(&t.as_str())) {
            return Upgrade::Reject {
                status: 400,
                reason: format!("unknown symbol {bad}; known: {}", SYMBOLS.join(",")),
            };
        }
        Upgrade::subscribe(topics)
    }

    fn on_message(&self, client: &mut Client<'_>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        match text.split_once(' ') {
            Some(("add", sym)) if SYMBOLS.contains(&sym) => {
                let _ = client.subscribe(sym);
                client.send_text(&format!("added {sym}"));
            }
            Some(("drop", sym)) => {
                client.unsubscribe(sym);
                client.send_text(&format!("dropped {sym}"));
            }
            _ => client.send_text("commands: 'add SYMBOL', 'drop SYMBOL'"),
        }
    }
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
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        for (i, topic) in topics.iter().enumerate() {
            // A deterministic wiggle; real feeds come from an exchange.
            price[i] *= 1.0 + ((seq as f64 * (i + 1) as f64).sin() * 0.0005);
            let quote = format!(
                r#"{{"symbol":"{topic}","seq":{seq},"t_ms":{},"px":{:.5}}}"#,
                start.elapsed().as_millis(),
                price[i]
            );
            let _ = fanout.publish(topic, ringcast::protocol::OpCode::Text, quote.as_bytes());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    handle.shutdown();
    Ok(())
}
