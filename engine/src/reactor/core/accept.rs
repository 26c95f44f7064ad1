//! Accept back-off, the same for both backends: when the process (or a ring's descriptor
//! table) runs out of descriptors, accepting pauses for [`ACCEPT_BACKOFF`] and is retried,
//! logged once per episode rather than once per attempt.

use std::io;
use std::time::{Duration, Instant};

/// How long accepting pauses after EMFILE/ENFILE.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether an accept error means the process is out of descriptors or memory for them
/// (rather than a problem of one pending connection).
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The accept back-off state of one reactor.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    paused_until: Option<Instant>,
    /// Out of descriptors, and no accept succeeded since (logged once).
    exhausted: bool,
}

impl Backoff {
    /// Accepting is paused.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// An accept failed with `e` at `now` while `open` connections were open. Returns
    /// whether accepting paused (descriptor exhaustion; logged once per episode, naming
    /// `hint`); other errors concern one pending connection and are only logged at debug.
    pub(crate) fn failed(&mut self, e: &io::Error, now: Instant, open: usize, hint: &str) -> bool {
        if !is_exhaustion(e) {
            tracing::debug!(error = %e, "accept: {e}");
            return false;
        }
        if !self.exhausted {
            self.exhausted = true;
            tracing::warn!(
                error = %e,
                open,
                "accept: {e}; pausing accepts, retrying every {ACCEPT_BACKOFF:?} \
                 ({open} connections open; {hint})"
            );
        }
        self.paused_until = Some(now + ACCEPT_BACKOFF);
        true
    }

    /// Accepting cannot go on for want of room (a full descriptor table); logged once.
    pub(crate) fn full(&mut self, what: &str) {
        if !self.exhausted {
            self.exhausted = true;
            tracing::warn!("accept: {what}; pausing accepts until connections close");
        }
    }

    /// A connection was accepted while `open` were open.
    pub(crate) fn accepted(&mut self, open: usize) {
        if self.exhausted {
            self.exhausted = false;
            tracing::info!(open, "accepting again ({open} connections open)");
        }
    }

    /// Ends a pause whose time has come; returns whether it did.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_on_exhaustion_only() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let reset = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert!(!b.failed(&reset, now, 1, "hint"));
        assert!(!b.is_paused());
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(b.failed(&emfile, now, 1, "hint"));
        assert!(b.is_paused());
        assert!(!b.expire(now));
        assert!(b.expire(now + ACCEPT_BACKOFF));
        assert!(!b.is_paused());
        b.accepted(2);
        assert!(!b.exhausted);
    }
}
