//! A reactor that ends on its own (an I/O error its loop cannot go on from, or a panic: a
//! bug, or a handler that panicked) takes the engine down with it. Its connections are
//! gone, and a node that ran on with the rest would look healthy while refusing or
//! dropping a share of its clients; stopped, [`EngineHandle::wait`] returns the error
//! and `ringcast serve` exits non-zero, for a supervisor to restart it.
//!
//! [`EngineHandle::wait`]: crate::EngineHandle::wait

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::waker::Waker;

/// Held by a reactor thread for as long as it runs; stops every reactor if the thread
/// ends while armed (unwinding from a panic included).
pub(crate) struct StopAllOnFailure {
    index: usize,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    armed: bool,
}

impl StopAllOnFailure {
    /// The guard of reactor `index`, which stops the reactors woken by `wakers`.
    pub(crate) fn new(index: usize, stop: Arc<AtomicBool>, wakers: Vec<Arc<Waker>>) -> Self {
        Self {
            index,
            stop,
            wakers,
            armed: true,
        }
    }

    /// The reactor never started: its starter reports that and stops the others.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// The reactor's loop returned: only an error stops the others (a clean return
    /// follows a stop that every reactor has seen already).
    pub(crate) fn returned<T, E>(mut self, result: &Result<T, E>) {
        self.armed = result.is_err();
    }
}

impl Drop for StopAllOnFailure {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Stop first: logging may fail (a closed stderr), stopping may not.
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
        let how = if std::thread::panicking() {
            "panicked"
        } else {
            "failed"
        };
        tracing::error!(
            "reactor {} {how}: stopping every reactor (the engine cannot serve its \
             connections)",
            self.index
        );
    }
}
