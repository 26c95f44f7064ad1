//! One node id, one process: two running nodes with the same id (a copied `--node-id`)
//! would take each other's publications for their own (so plain subscribers would miss
//! them) and, on NATS, each other's JetStream answers and acks (their inboxes are named
//! after the id). So on every connection a node announces its claim on its id on
//! `_rcnode.<id>`: when it started and a random token. A node that hears another claim
//! on its id answers with its own if it is the older; the newer one (the later start, or
//! at the same microsecond the higher token) stops with an error naming the id, and the
//! older one goes on. One announcement per connection and one answer per newcomer: no
//! traffic otherwise.

use std::hash::{BuildHasher, Hasher};

use super::now_us;

/// The subject (NATS) or channel (Redis) where the nodes of id `node` announce themselves.
pub(crate) fn subject(node: &str) -> String {
    format!("_rcnode.{node}")
}

/// A process's claim on its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// When this process's bridge started (µs since the Unix epoch).
    started_us: u64,
    /// Tells processes started in the same microsecond apart.
    token: u64,
}

/// What another announcement on this node's id means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Ours (every node hears its own), or not a claim.
    Nothing,
    /// A newer process with our id: it must hear from us (it stops then).
    Newer,
    /// An older process with our id: this one must stop.
    Older,
}

impl Claim {
    /// This process's claim, made now.
    pub(crate) fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self {
            started_us: now_us(),
            token: h.finish(),
        }
    }

    /// The announcement: `hello <started µs> <token>`.
    pub(crate) fn announcement(&self) -> String {
        format!("hello {} {}", self.started_us, self.token)
    }

    /// What announcement `msg` on this node's id means for this process.
    pub(crate) fn hear(&self, msg: &[u8]) -> Heard {
        let Some(other) = parse(msg) else {
            return Heard::Nothing;
        };
        let key = |c: &Self| (c.started_us, c.token);
        match key(&other).cmp(&key(self)) {
            std::cmp::Ordering::Equal => Heard::Nothing,
            std::cmp::Ordering::Greater => Heard::Newer,
            std::cmp::Ordering::Less => Heard::Older,
        }
    }
}

fn parse(msg: &[u8]) -> Option<Claim> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut words = text.split_ascii_whitespace();
    if words.next()? != "hello" {
        return None;
    }
    let started_us = words.next()?.parse().ok()?;
    let token = words.next()?.parse().ok()?;
    Some(Claim { started_us, token })
}

/// Why a node stops when an older one holds its id.
pub(crate) fn conflict(node: &str) -> String {
    format!(
        "cluster: another running node uses node id '{node}' (it started first); node ids \
         must be unique among the nodes of a broker (--node-id, or leave it out for a random one)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newer_claim_gives_way() {
        let old = Claim {
            started_us: 10,
            token: 5,
        };
        let new = Claim {
            started_us: 11,
            token: 1,
        };
        assert_eq!(old.hear(new.announcement().as_bytes()), Heard::Newer);
        assert_eq!(new.hear(old.announcement().as_bytes()), Heard::Older);
        assert_eq!(old.hear(old.announcement().as_bytes()), Heard::Nothing);
        // The same microsecond: the token decides, the same way on both sides.
        let twin = Claim {
            started_us: 10,
            token: 6,
        };
        assert_eq!(old.hear(twin.announcement().as_bytes()), Heard::Newer);
        assert_eq!(twin.hear(old.announcement().as_bytes()), Heard::Older);
        for junk in [
            &b""[..],
            b"hello",
            b"hello 1",
            b"hello x 2",
            b"bye 1 2",
            b"\xff",
        ] {
            assert_eq!(old.hear(junk), Heard::Nothing);
        }
        assert_ne!(Claim::new().token, Claim::new().token);
    }
}
