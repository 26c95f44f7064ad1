//! What happens to a subscriber that falls behind (a slow consumer): cursor arithmetic.
//!
//! A subscription's lag is `head - cursor` in its topic's log. When a subscriber whose last
//! write is still pending (its socket is full) lags more than the limit (`max_lag`), or one
//! still has more than the limit pending from before the batch being delivered — so a
//! burst larger than the limit does not count against healthy subscribers, who get it in
//! the same turn — the policy acts on the cursor alone — nothing is copied
//! or cut per subscriber: `close` detaches it, `drop-oldest` moves it forward to the oldest
//! frame within three quarters of the limit, `conflate` to the topic's latest frame.
//!
//! The limit is a connection's, over all its topics: the reactor passes a subscription
//! what its connection's other topics leave of it (counted once the subscription holds
//! more than an equal share of the limit, which some topic of a connection over it does),
//! so one connection pins its topics' logs by at most the limit in all once it is judged,
//! and never by more than twice it: what its unjudged topics hold is within an equal
//! share each. A lag counts the records of its frames too (24 bytes each) once it is
//! far enough behind for them to matter: a lag of 2-byte frames would otherwise pin 13
//! times its size. It does not count the rest of the frame a subscriber is part way
//! through: that one is being written, and a single message larger than the limit
//! (allowed up to `max_message`) would otherwise close every subscriber it goes to as
//! soon as anything followed it. So a connection also holds, besides the above, the one
//! frame per topic it is in the middle of.

use super::log::TopicLog;
use super::outbox::{Outbox, Skipped};

use std::fmt;
use std::str::FromStr;

/// The slow-consumer policy, applied when a subscription's lag passes its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// Close the connection with 1008 "slow consumer" (pending messages are not sent; a
    /// frame already started is finished, then the close frame goes out), then drop it.
    #[default]
    Close,
    /// Skip the oldest pending messages of the topic, down to three quarters of the limit
    /// (always keeping the newest).
    DropOldest,
    /// Market-data mode: skip to the latest message of the topic.
    Conflate,
}

impl FromStr for SlowConsumer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "close" => Ok(Self::Close),
            "drop-oldest" => Ok(Self::DropOldest),
            "conflate" => Ok(Self::Conflate),
            other => Err(format!(
                "unknown slow-consumer policy '{other}' (use close, drop-oldest or conflate)"
            )),
        }
    }
}

impl fmt::Display for SlowConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Close => "close",
            Self::DropOldest => "drop-oldest",
            Self::Conflate => "conflate",
        })
    }
}

/// What a policy did to one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acted {
    /// Within the limit: nothing.
    Nothing,
    /// The connection must be closed (1008).
    Close,
    /// Messages skipped by drop-oldest.
    Dropped(Skipped),
    /// Messages skipped by conflate.
    Conflated(Skipped),
}

impl SlowConsumer {
    /// Applies the policy to subscription `i` of `outbox` (on `log`) if what it has
    /// pending up to position `until` (the head, or where the batch being delivered began)
    /// is over `max_lag` bytes.
    pub(crate) fn apply(
        self,
        outbox: &mut Outbox,
        i: usize,
        log: &TopicLog,
        until: u64,
        max_lag: u64,
    ) -> Acted {
        let cursor = outbox.subs()[i].cursor;
        if until.saturating_sub(cursor) <= max_lag {
            return Acted::Nothing;
        }
        // The frame it is part way through is on its way: only what follows counts, so a
        // message larger than the limit does not make every subscriber slow.
        if until.saturating_sub(log.frame_end(cursor)) <= max_lag {
            return Acted::Nothing;
        }
        let latest = log.latest_frame().unwrap_or(log.head());
        match self {
            Self::Close => Acted::Close,
            Self::DropOldest => {
                let keep = max_lag - max_lag / 4;
                let oldest = log.frame_at_or_after(log.head().saturating_sub(keep));
                // A newest frame larger than the window is still delivered.
                let to = if oldest == log.head() { latest } else { oldest };
                Acted::Dropped(outbox.skip(log, i, to))
            }
            Self::Conflate => Acted::Conflated(outbox.skip(log, i, latest)),
        }
    }
}
