//! A synthetic market-data feed, so a new user sees live data at once (`serve --demo`).
//!
//! Each tick publishes one JSON quote per symbol to the topic named after the symbol:
//! `{"symbol":"BTC-USD","seq":42,"ts_us":1700000000000000,"bid":95001.25,"ask":95003.10}`.
//! `seq` counts ticks, `ts_us` is the wall clock at the tick (the browser demo measures
//! latency from it). Prices follow a deterministic random walk pulled back towards each
//! symbol's level, so a feed left running for days still looks like its market.

use std::fmt::Write as _;
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
        let quotes = Quotes::new(symbols);
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let thread = std::thread::Builder::new()
            .name("ringcast-demo".into())
            .spawn(move || run(&fanout, quotes, period, &flag))
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

fn run(fanout: &Fanout, mut quotes: Quotes, period: Duration, stop: &AtomicBool) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let ts_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        quotes.tick(ts_us, |topic, quote| {
            let _ = fanout.publish(topic, OpCode::Text, quote.as_bytes());
        });
        next = (next + period).max(Instant::now());
        // Sleep in short steps so a stop is seen promptly.
        while Instant::now() < next && !stop.load(Ordering::Acquire) {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
        }
    }
}

/// How a symbol trades: the level its price reverts to, how far it moves in a tick, its
/// spread, and its price increment.
#[derive(Debug, Clone, Copy)]
struct Instrument {
    /// Mid price the walk is pulled towards.
    level: f64,
    /// Largest move of the log price in one tick.
    step: f64,
    /// Spread as a fraction of the price (at least one increment).
    spread: f64,
    /// Price increment; quotes are whole multiples of it.
    increment: f64,
    /// Decimals that show one increment.
    decimals: usize,
}

impl Instrument {
    /// Market-like figures (late 2025 levels) for the default symbols; anything else gets a
    /// plain 100·(i+1) with equity-like moves.
    fn of(symbol: &str, index: usize) -> Self {
        let (level, step, spread, decimals) = match symbol {
            "BTC-USD" => (95_000.0, 0.000_4, 0.000_02, 2),
            "ETH-USD" => (3_200.0, 0.000_5, 0.000_05, 2),
            "SOL-USD" => (170.0, 0.000_6, 0.000_1, 2),
            "EUR-USD" => (1.10, 0.000_05, 0.000_01, 5),
            "AAPL" => (230.0, 0.000_2, 0.000_05, 2),
            _ => (100.0 * (index + 1) as f64, 0.000_3, 0.000_1, 2),
        };
        Self {
            level,
            step,
            spread,
            increment: 10f64.powi(-(decimals as i32)),
            decimals,
        }
    }
}

/// Mean reversion per tick: the walk's spread settles near `step`·√(1/(6·PULL)), about
/// 9·step (BTC: ±0.4 %), however long the feed runs.
const PULL: f64 = 0.002;

/// The quotes of every symbol, tick by tick; no clock and no I/O, so tests drive it.
#[derive(Debug)]
struct Quotes {
    /// Topic, how it trades, and its log price relative to the level.
    symbols: Vec<(TopicName, Instrument, f64)>,
    /// xorshift64 state: the same feed every run.
    rng: u64,
    seq: u64,
    buf: String,
}

impl Quotes {
    fn new(symbols: &[String]) -> Self {
        let symbols = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (TopicName::new(s), Instrument::of(s, i), 0.0))
            .collect();
        Self {
            symbols,
            rng: 0x9E37_79B9_7F4A_7C15,
            seq: 0,
            buf: String::with_capacity(128),
        }
    }

    /// Moves every price one step and hands each symbol's quote, stamped `ts_us`, to `emit`.
    fn tick(&mut self, ts_us: u128, mut emit: impl FnMut(&TopicName, &str)) {
        self.seq += 1;
        for (topic, ins, x) in &mut self.symbols {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            // Uniform in [-1, 1].
            let u = (self.rng >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
            *x = *x * (1.0 - PULL) + ins.step * u;
            let mid = ins.level * x.exp();
            let spread = (mid * ins.spread / ins.increment).round().max(1.0) * ins.increment;
            let bid = ((mid - spread / 2.0) / ins.increment).round() * ins.increment;
            let ask = bid + spread;
            self.buf.clear();
            let _ = write!(
                self.buf,
                r#"{{"symbol":"{topic}","seq":{},"ts_us":{ts_us},"bid":{bid:.d$},"ask":{ask:.d$}}}"#,
                self.seq,
                d = ins.decimals
            );
            emit(topic, &self.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Quote {
        symbol: String,
        seq: u64,
        ts_us: u64,
        bid: f64,
        ask: f64,
    }

    fn symbols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Six hours at the default 2 ticks/s: every quote well formed, every price near its
    /// market, bid below ask by a sensible spread.
    #[test]
    fn default_symbols_quote_near_their_markets() {
        let mut quotes = Quotes::new(&symbols(DEFAULT_SYMBOLS));
        let ranges = [
            ("BTC-USD", 90_000.0, 100_000.0, 50.0),
            ("ETH-USD", 2_900.0, 3_500.0, 5.0),
            ("SOL-USD", 150.0, 200.0, 0.5),
            ("EUR-USD", 1.05, 1.15, 0.001),
            ("AAPL", 215.0, 245.0, 0.5),
        ];
        let mut seen = 0;
        for tick in 1..=43_200u64 {
            let mut i = 0;
            quotes.tick(1_700_000_000_000_000 + u128::from(tick), |topic, text| {
                let q: Quote = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
                let (symbol, lo, hi, max_spread) = ranges[i];
                assert_eq!((topic.as_str(), q.symbol.as_str()), (symbol, symbol));
                assert_eq!(q.seq, tick);
                assert_eq!(q.ts_us, 1_700_000_000_000_000 + tick);
                assert!(lo < q.bid && q.ask < hi, "{text}");
                assert!(q.bid < q.ask && q.ask - q.bid < max_spread, "{text}");
                i += 1;
                seen += 1;
            });
            assert_eq!(i, DEFAULT_SYMBOLS.len());
        }
        assert_eq!(seen, 43_200 * DEFAULT_SYMBOLS.len());
    }

    #[test]
    fn quotes_show_the_increment_and_move() {
        let mut quotes = Quotes::new(&symbols(&["EUR-USD", "BTC-USD"]));
        let mut first = Vec::new();
        quotes.tick(0, |_, text| first.push(text.to_owned()));
        assert!(first[0].contains(r#""bid":1.1"#), "{}", first[0]);
        let decimals = |text: &str, field: &str| {
            let rest = &text[text.find(field).unwrap() + field.len()..];
            let num = &rest[..rest.find([',', '}']).unwrap()];
            num.split('.').nth(1).map_or(0, str::len)
        };
        assert_eq!(decimals(&first[0], r#""bid":"#), 5);
        assert_eq!(decimals(&first[1], r#""ask":"#), 2);
        let mut bids = Vec::new();
        for _ in 0..10 {
            quotes.tick(0, |topic, text| {
                if topic.as_str() == "BTC-USD" {
                    bids.push(serde_json::from_str::<Quote>(text).unwrap().bid);
                }
            });
        }
        bids.dedup();
        assert!(bids.len() > 5, "BTC barely moves: {bids:?}");
    }

    #[test]
    fn other_symbols_get_a_price_too() {
        let mut quotes = Quotes::new(&symbols(&["X", "Y"]));
        let mut got = Vec::new();
        quotes.tick(5, |topic, text| {
            got.push((
                topic.to_string(),
                serde_json::from_str::<Quote>(text).unwrap(),
            ));
        });
        assert_eq!(got.len(), 2);
        for (i, (topic, q)) in got.iter().enumerate() {
            assert_eq!(topic, &q.symbol);
            let level = 100.0 * (i + 1) as f64;
            assert!((q.bid - level).abs() < 1.0 && q.bid < q.ask, "{q:?}");
        }
    }
}
