//! Minimal embedding: a push tier inside your own process.
//!
//! Starts ringcast with the broadcast handler, publishes a few messages from the
//! application thread to subscribers of `/sub/news`, prints the counters, shuts down.
//!
//! ```sh
//! cargo run --release -p ringcast --example embed
//! # in another terminal, within 30 s:
//! python3 -m websockets ws://127.0.0.1:9002/sub/news
//! ```

use std::time::Duration;

use ringcast::Engine;
use ringcast::server::Broadcast;

fn main() -> std::io::Result<()> {
    let handle = Engine::builder()
        .listen("127.0.0.1:9002".parse().expect("address"))
        .threads(1)
        .handler(Broadcast::default())
        .start()?;
    println!("subscribe at ws://{}/sub/news", handle.local_addr());
    for i in 0..30 {
        let published = handle.publish("news", &format!("headline {i}"));
        assert!(published.is_complete(), "a reactor inbox was full");
        std::thread::sleep(Duration::from_secs(1));
    }
    let total = handle.stats().total();
    println!(
        "{} subscriptions, {} frames out, {} bytes out",
        total.subscriptions, total.frames_out, total.bytes_out
    );
    handle.shutdown();
    Ok(())
}
