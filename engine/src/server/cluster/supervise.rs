//! The bridge's connection loop, the same for every broker: connect (retrying with
//! back-off and jitter, logging the outage once), serve until the connection is lost or
//! the bridge stops, then fall back to local delivery and reconnect. What the node follows
//! ([`Follow`], from the interest changes: [`note_interest`]) lives here too, across
//! connections.
//!
//! Its threads are watched: a reader that ends, even by a panic, reports its connection
//! lost ([`spawn_reader`]); the bridge thread itself that panics ([`guarded`]) stops the
//! engine, as a reactor that panics does — a node whose bridge is gone would look healthy
//! while its publications reach no one, not even its own subscribers.

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::stats::bump;
use super::{Control, Outbound, REORDER_WAIT, Shared, deliver_queued_locally, now_us};
use crate::fanout::TopicName;

/// Longest wait for the broker: connecting, its greeting, an answer to a request.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection back-off: first and longest wait (each with up to 50 % jitter).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One topic the node follows (or lingers on).
#[derive(Debug)]
pub(super) struct Follow {
    /// The node has subscribers to it.
    pub(super) wanted: bool,
    /// When to unsubscribe (no subscribers since).
    pub(super) linger_until: Option<Instant>,
    /// The subscription on the current connection.
    pub(super) sid: Option<u64>,
    /// Subscribed before on some connection (a later subscription recovers, it does not
    /// jump).
    pub(super) followed: bool,
}

/// Waits `wait` while disconnected: follows interest, delivers what was queued locally.
/// `false`: stop.
pub(super) fn idle(
    shared: &Shared,
    out_rx: &Receiver<Outbound>,
    control: &Receiver<Control>,
    follows: &mut HashMap<TopicName, Follow>,
    wait: Duration,
) -> bool {
    let until = Instant::now() + wait;
    loop {
        deliver_queued_locally(shared, out_rx);
        shared.forget_unnumbered(Instant::now());
        let left = until.saturating_duration_since(Instant::now());
        match control.recv_timeout(left) {
            Ok(Control::Stop) => return false,
            Ok(Control::Interest) => {
                note_interest(follows, shared);
            }
            Ok(Control::Lost(..) | Control::Pong | Control::Announce) => {}
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Takes the node's interest changes ([`Shared::take_interest`]) into `follows`; returns
/// the topics to bring the broker's subscriptions in line with. A topic left that was
/// not followed (joined and left before the bridge looked) is nothing to do.
pub(super) fn note_interest(
    follows: &mut HashMap<TopicName, Follow>,
    s: &Shared,
) -> Vec<TopicName> {
    let mut changed = Vec::new();
    for (t, on) in s.take_interest() {
        if !on && !follows.contains_key(t.as_str()) {
            continue;
        }
        let f = follows.entry(t.clone()).or_insert(Follow {
            wanted: false,
            linger_until: None,
            sid: None,
            followed: false,
        });
        f.wanted = on;
        f.linger_until = (!on).then(|| Instant::now() + s.config.linger);
        changed.push(t);
    }
    changed
}

/// `BACKOFF_MIN · 2^attempt`, at most `BACKOFF_MAX`, less up to half of it at random.
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_MAX);
    let jitter = (now_us() ^ u64::from(std::process::id()).rotate_left(17)) % 1000;
    base.mul_f64(1.0 - jitter as f64 / 2000.0)
}

/// Why the bridge thread died, and what stops the engine when it does.
#[derive(Default)]
pub(crate) struct Failure {
    why: Option<String>,
    stop: Option<Box<dyn Fn() + Send>>,
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failure").field("why", &self.why).finish()
    }
}

fn failure_of(shared: &Shared) -> MutexGuard<'_, Failure> {
    shared
        .failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Runs the bridge thread's `run`; if it panics, the node is marked disconnected (its
/// publishers stop queueing for a broker no one writes to), the panic is kept for
/// [`failure`], and the engine is stopped ([`on_failure`]).
pub(super) fn guarded(shared: &Shared, run: impl FnOnce()) {
    let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(run)) else {
        return;
    };
    shared.counters.connected.store(false, Ordering::Release);
    let why = format!(
        "cluster bridge panicked: {}",
        crate::server::panic_message(payload.as_ref())
    );
    tracing::error!("{why}: stopping the engine (its publications would reach no one)");
    fail(shared, why);
}

/// Stops the engine for `why` (kept for [`failure`]; the first reason stands).
pub(super) fn fail(shared: &Shared, why: String) {
    let mut f = failure_of(shared);
    f.why.get_or_insert(why);
    if let Some(stop) = f.stop.take() {
        stop();
    }
}

/// Has `stop` called when the bridge thread dies, or at once if it has.
pub(super) fn on_failure(shared: &Shared, stop: Box<dyn Fn() + Send>) {
    let mut f = failure_of(shared);
    if f.why.is_some() {
        stop();
    } else {
        f.stop = Some(stop);
    }
}

/// Why the bridge thread died, if it did.
pub(super) fn failure(shared: &Shared) -> Option<String> {
    failure_of(shared).why.clone()
}

/// Starts a reader thread of connection `number`: `read` reads until the connection ends
/// and says why, which goes to the bridge as [`Control::Lost`]. A reader that panics is
/// reported the same way, so that a bug in reading costs a reconnection, not a node that
/// believes itself connected and receives nothing.
pub(super) fn spawn_reader(
    name: &str,
    shared: Arc<Shared>,
    number: u64,
    read: impl FnOnce(&Shared) -> io::Error + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut report = ReportLoss {
                shared,
                number,
                why: None,
            };
            report.why = Some(read(&report.shared).to_string());
        })
}

/// Tells the bridge that connection `number` is lost when dropped: with the reader's
/// reason, or while unwinding from its panic.
struct ReportLoss {
    shared: Arc<Shared>,
    number: u64,
    why: Option<String>,
}

impl Drop for ReportLoss {
    fn drop(&mut self) {
        let why = self
            .why
            .take()
            .unwrap_or_else(|| "its reader panicked".to_owned());
        let _ = self.shared.control_tx.send(Control::Lost(self.number, why));
    }
}

/// One connection to the broker, as the loop sees it.
pub(super) trait Link {
    /// Serves the connection until it is lost (`Err`) or the bridge stops (`Ok`).
    fn serve(
        &mut self,
        shared: &Shared,
        out_rx: &Receiver<Outbound>,
        control: &Receiver<Control>,
        follows: &mut HashMap<TopicName, Follow>,
    ) -> io::Result<()>;

    /// Shuts the connection down and joins its reader threads.
    fn close(&mut self);
}

/// Runs the bridge over the links `connect` opens, until the bridge stops.
pub(super) fn supervise<L: Link>(
    shared: &Arc<Shared>,
    out_rx: &Receiver<Outbound>,
    control: &Receiver<Control>,
    mut connect: impl FnMut() -> io::Result<L>,
) {
    let mut follows: HashMap<TopicName, Follow> = HashMap::new();
    let mut attempt = 0u32;
    let mut connected_before = false;
    let mut logged_down = false;
    while !shared.stop.load(Ordering::Acquire) {
        let mut link = match connect() {
            Ok(l) => l,
            Err(e) => {
                note_error(shared, format!("cannot reach: {e}"));
                if !logged_down {
                    tracing::warn!(
                        "cluster: cannot reach {}: {e}; serving local traffic, retrying",
                        shared.config.url
                    );
                    logged_down = true;
                }
                let wait = backoff(attempt);
                attempt = attempt.saturating_add(1);
                if !idle(shared, out_rx, control, &mut follows, wait) {
                    return;
                }
                continue;
            }
        };
        logged_down = false;
        if connected_before {
            bump(&shared.counters.reconnects);
        }
        connected_before = true;
        shared.counters.connected.store(true, Ordering::Release);
        tracing::info!(
            "cluster: connected to {} as node {}",
            shared.config.url,
            shared.config.node_id
        );
        let up = Instant::now();
        let why = link.serve(shared, out_rx, control, &mut follows);
        shared.counters.connected.store(false, Ordering::Release);
        shared.counters.subscriptions.store(0, Ordering::Relaxed);
        link.close();
        for f in follows.values_mut() {
            f.sid = None;
        }
        deliver_queued_locally(shared, out_rx);
        shared.abandon_starts();
        shared.release_held(Instant::now() + REORDER_WAIT);
        match why {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    "cluster: lost {}: {e}; serving local traffic, reconnecting",
                    shared.config.url
                );
                note_error(shared, format!("lost: {e}"));
            }
        }
        // A connection that served a while starts the back-off afresh; one lost at once
        // (a broker that takes connections and then fails them) waits as if refused,
        // rather than reconnecting in a tight loop.
        if up.elapsed() >= STABLE {
            attempt = 0;
        } else {
            let wait = backoff(attempt);
            attempt = attempt.saturating_add(1);
            if !idle(shared, out_rx, control, &mut follows, wait) {
                return;
            }
        }
    }
}

/// Keeps `why` as the node's latest broker error ([`ClusterStats::last_error`]).
///
/// [`ClusterStats::last_error`]: super::ClusterStats::last_error
fn note_error(shared: &Shared, why: String) {
    *shared
        .counters
        .last_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(why);
}

/// How long a connection must have served for a loss to count as a new outage (the
/// back-off starts again from its shortest wait).
const STABLE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    /// A link the broker fails as soon as it is made.
    struct Doomed;

    impl Link for Doomed {
        fn serve(
            &mut self,
            _: &Shared,
            _: &Receiver<Outbound>,
            _: &Receiver<Control>,
            _: &mut HashMap<TopicName, Follow>,
        ) -> io::Result<()> {
            Err(io::Error::other("refused after connecting"))
        }

        fn close(&mut self) {}
    }

    #[test]
    fn a_link_lost_at_once_waits_out_the_backoff() {
        let (out_tx, out_rx) = crossbeam_channel::bounded(1);
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let config = super::super::ClusterConfig::new("nats://127.0.0.1:1").unwrap();
        let shared = Arc::new(Shared::new(config, out_tx, control_tx.clone()));
        let s = Arc::clone(&shared);
        // Stops the bridge half a second on (a bound on the run, not a synchronisation).
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            s.stop.store(true, Ordering::Release);
            let _ = control_tx.send(Control::Stop);
        });
        let mut connects = 0u32;
        supervise(&shared, &out_rx, &control_rx, || {
            connects += 1;
            Ok(Doomed)
        });
        stopper.join().unwrap();
        // 50–100 ms, then 100–200 ms, 200–400 ms…: a handful; without the back-off, a
        // tight loop of thousands.
        assert!(
            (1..=20).contains(&connects),
            "{connects} connections in 0.5 s"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_ceiling() {
        assert!(backoff(0) <= BACKOFF_MIN && backoff(0) >= BACKOFF_MIN / 2);
        assert!(backoff(30) <= BACKOFF_MAX && backoff(30) >= BACKOFF_MAX / 2);
    }
}
