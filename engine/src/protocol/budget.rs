//! A memory budget that many connections share: the bytes of the large messages they are
//! assembling, together.
//!
//! Each connection may assemble up to [`MessageBudget::FREE`] bytes of a message on its
//! own; past that, what it holds is taken from the budget it shares with the others (a
//! server's), and given back when the message is complete or the connection ends. A peer
//! whose message would take the budget past its size is closed with 1013 "Try Again
//! Later": many connections that each start a message near `max_message` and never finish
//! it cannot hold more than the budget between them.

#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of partly received large messages that a group of connections may hold together.
/// Clones share the same count. See the module docs.
#[derive(Clone)]
pub struct MessageBudget(Arc<Inner>);

struct Inner {
    max: usize,
    used: AtomicUsize,
}

impl MessageBudget {
    /// Bytes of a message each connection assembles without drawing on the budget.
    pub const FREE: usize = 64 << 10;

    /// A budget of `max` bytes, none used.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Inner {
            max,
            used: AtomicUsize::new(0),
        }))
    }

    /// Its size.
    pub fn max(&self) -> usize {
        self.0.max
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit.
    pub(crate) fn take(&self, n: usize) -> bool {
        let before = self.0.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) <= self.0.max {
            return true;
        }
        self.0.used.fetch_sub(n, Ordering::Relaxed);
        false
    }

    /// Gives back `n` bytes taken before.
    pub(crate) fn give(&self, n: usize) {
        self.0.used.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for MessageBudget {
    /// 256 MiB.
    fn default() -> Self {
        Self::new(256 << 20)
    }
}

/// Budgets are equal when their sizes are (whatever they hold now).
impl PartialEq for MessageBudget {
    fn eq(&self, other: &Self) -> bool {
        self.max() == other.max()
    }
}

impl Eq for MessageBudget {}

impl fmt::Debug for MessageBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBudget")
            .field("max", &self.max())
            .field("used", &self.used())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_fits_and_shares_the_count() {
        let a = MessageBudget::new(100);
        let b = a.clone();
        assert!(a.take(60));
        assert!(!b.take(41), "60 + 41 is over 100");
        assert_eq!(a.used(), 60, "a refused take leaves nothing behind");
        assert!(b.take(40));
        a.give(60);
        b.give(40);
        assert_eq!(b.used(), 0);
        assert_eq!(MessageBudget::new(100), b, "equal by size");
    }
}
