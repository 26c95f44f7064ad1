//! A synthetic market-data feed, so a new user sees live data at once (`serve --demo`).
//!
//! Each tick publishes one JSON quote per symbol to the topic named after the symbol:
//! `{"symbol":"BTC-USD","seq":42,"ts_us":1700000000000000,"bid":64001.25,"ask":64002.75}`,
//! prices moving in a deterministic random walk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fanout::Fanout;
use crate::fanout::topic::TopicName;
use crate::protocol::frame::OpCode;

/// The symbols of the demo feed when none are given.
pub const DEFAULT_SYMBOLS: &[&str] = &["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "AAPL"];

/// A running demo feed; dropping it stops the feed.
#[derive(Debug)]
pub struct DemoFeed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DemoFeed {
    /// Publishes `rate` ticks per second (every symbol each tick) through `fanout`.
    ///
    /// # Panics
    /// If the thread cannot be spawned.
    pub fn start(fanout: Fanout, symbols: &[String], rate: f64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let topics: Vec<TopicName> = symbols.iter().map(|s| TopicName::new(s)).collect();
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let thread = std::thread::Builder::new()
            .name("ringcast-demo".into())
            .spawn(move || run(&fanout, &topics, period, &flag))
            .expect("spawn demo feed thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DemoFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(fanout: &Fanout, topics: &[TopicName], period: Duration, stop: &AtomicBool) {
    let mut prices: Vec<f64> = (0..topics.len()).map(|i| 100.0 * (i + 1) as f64).collect();
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        seq += 1;
        let ts_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        for (topic, price) in topics.iter().zip(&mut prices) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let step = ((rng % 2001) as f64 - 1000.0) / 100_000.0;
            *price = (*price * (1.0 + step)).max(0.01);
            let spread = *price * 0.0002;
            let quote = format!(
                r#"{{"symbol":"{topic}","seq":{seq},"ts_us":{ts_us},"bid":{:.4},"ask":{:.4}}}"#,
                *price - spread / 2.0,
                *price + spread / 2.0
            );
            let _ = fanout.publish(topic, OpCode::Text, quote.as_bytes());
        }
        next = (next + period).max(Instant::now());
        // Sleep in short steps so a stop is seen promptly.
        while Instant::now() < next && !stop.load(Ordering::Acquire) {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
        }
    }
}
