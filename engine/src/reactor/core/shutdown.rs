//! Shutdown in two steps, so that every subscriber gets the same last message.
//!
//! A publication from a WebSocket client is read on one reactor and handed to every
//! reactor's inbox. Were each reactor to close its connections as soon as it saw the stop,
//! a reactor still reading a publisher would go on publishing to reactors that had already
//! sent their subscribers `1001`: subscribers on different reactors would end at different
//! messages, and what a publisher sent last would reach some of them only.
//!
//! So a reactor that sees the stop first stops taking client messages (from then on they
//! are read, and discarded: none reaches the handler) and says so on [`Quiesced`]. Once
//! every reactor has (or [`STOP_WAIT`] has passed, so that one stuck or failed reactor
//! cannot hold the shutdown up), no client publication can reach an inbox any more: each
//! reactor takes all its inbox holds into its logs, delivers it, and then closes every
//! connection with `1001` after what it has pending. Publications from the embedding API
//! or a broker bridge that arrive after that point are not delivered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Core, Driver};

/// Longest a stopping reactor waits for the others to stop taking client messages.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(2);

/// How many of the server's reactors have stopped taking client messages.
#[derive(Debug)]
pub(crate) struct Quiesced {
    count: AtomicUsize,
    reactors: usize,
}

impl Quiesced {
    /// None of `reactors` yet.
    pub(crate) fn new(reactors: usize) -> Self {
        Self {
            count: AtomicUsize::new(0),
            reactors,
        }
    }

    /// This reactor has stopped taking client messages: every publication it made
    /// happened before (release).
    fn arrive(&self) {
        self.count.fetch_add(1, Ordering::Release);
    }

    /// Whether every reactor has: then every client publication is in the inboxes
    /// (acquire).
    pub(crate) fn all(&self) -> bool {
        self.count.load(Ordering::Acquire) >= self.reactors
    }
}

impl<T> Core<T> {
    /// The first step: client messages are discarded from now on.
    pub(crate) fn stop_taking(&mut self) {
        if self.taking {
            self.taking = false;
            self.quiesced.arrive();
        }
    }

    /// The second step: delivers everything the inbox holds, then closes every
    /// connection with `1001` after what it has pending.
    pub(crate) fn close_all<D: Driver<Io = T>>(&mut self, driver: &mut D, now: Instant) {
        self.absorb(usize::MAX);
        self.deliver(driver, now);
        self.begin_shutdown(driver, now);
    }
}
