//! What happens to a subscriber whose out-queue passes its limit (a slow consumer).

use std::fmt;
use std::str::FromStr;

/// The slow-consumer policy, applied when a connection's queued bytes pass its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// Close the connection with 1008 "slow consumer" (queued frames that have not
    /// started to go out are discarded so the close frame is next), then drop it.
    #[default]
    Close,
    /// Discard the oldest queued messages until the queue is within its limit.
    DropOldest,
    /// Market-data mode: keep only the latest queued message of each topic; if that is
    /// still over the limit, discard the oldest.
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
