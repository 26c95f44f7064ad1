//! The subscriber's side of the `ringcast.v1` subprotocol: every frame parsed, every
//! topic's sequence numbers checked.
//!
//! ```text
//!  text:    {"topic":"BTC-USD","seq":42,"data":D}   D: the published text if it is JSON,
//!                                                    else a JSON string of it
//!  binary:  0x01 | topic length (u8) | topic | seq (u64 big-endian) | payload
//!  ops:     {"op":"gap","topic":T,"from":F,"to":L}   {"op":"heartbeat","seq":{T:S,…}}
//!           {"op":"epoch","topic":T,"epoch":E}        {"op":"reset","topic":T,"epoch":E}
//!           {"op":"subscribed","topics":[…]}          {"op":"error","error":"…"}
//!           (other ops are counted and ignored)
//! ```
//!
//! Data envelopes, one per delivered message, are parsed by hand: the server writes their
//! keys in this order, so [`parse`] costs a few compares and one number, no allocation.
//! Op messages are rare (a gap, a heartbeat every few seconds, replies) and go through
//! `serde_json`.
//!
//! A [`Checker`] holds one subscriber's topics. A topic's next expected sequence number is
//! set by its first envelope (or by `since` on a resume); after that a higher number is an
//! unannounced loss, a lower one a duplicate or a late arrival, and a `gap` moves the
//! expected number past the announced range without counting it lost
//! ([`Tracker::skip_to`]). The `epoch` that starts each subscription is parsed here and kept
//! by the resume scenario (named back on a resume, `resume.rs`); a `reset` (the server lost
//! the topic's numbering: restarted, or forgot it) is a failure of the run, after which the
//! topic's numbers start afresh.
//!
//! Nothing here panics on server bytes: a frame that does not parse is
//! [`Frame::Malformed`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::SmallVec;

use crate::sequence::{Arrival, Counts, Tracker};

/// The subprotocol a subscriber offers in `Sec-WebSocket-Protocol`.
pub(crate) const PROTOCOL: &str = "ringcast.v1";
/// First byte of a binary envelope (its format version).
const BINARY_TAG: u8 = 0x01;
/// A text envelope up to its topic.
const TEXT_PREFIX: &[u8] = b"{\"topic\":\"";
/// From the end of the topic to the sequence number.
const SEQ_KEY: &[u8] = b"\",\"seq\":";
/// From the end of the sequence number to the data.
const DATA_KEY: &[u8] = b",\"data\":";
/// Digits of the largest u64.
const MAX_DIGITS: usize = 20;

/// One server frame of a `ringcast.v1` connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A publication.
    Data {
        /// Topic name.
        topic: &'a [u8],
        /// Its sequence number in the topic.
        seq: u64,
        /// The payload: binary bytes, the JSON text of a JSON publication, or the
        /// content of the JSON string a non-JSON text was wrapped in (still escaped:
        /// loadgen's stamps never need escaping). Only its head when the message was
        /// fragmented.
        data: &'a [u8],
    },
    /// A protocol message.
    Op(Op),
    /// Neither: what is wrong with it.
    Malformed(&'static str),
}

/// A protocol message (`{"op":…}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Messages `from..=to` of `topic` will not be delivered.
    Gap {
        /// Topic name.
        topic: String,
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// The latest sequence numbers sent, per topic.
    Heartbeat,
    /// The numbering a subscription's sequence numbers belong to.
    Epoch {
        /// Topic name.
        topic: String,
        /// Its epoch (16 hex digits).
        epoch: String,
    },
    /// A resume named another numbering than the topic's current one, `epoch`.
    Reset {
        /// Topic name.
        topic: String,
        /// The current epoch.
        epoch: String,
    },
    /// The answer to a subscribe request.
    Subscribed,
    /// A refused request.
    Error(String),
    /// An op this loadgen does not know: ignored.
    Other,
}

/// The payload of a binary envelope (`0x01`, topic length, topic, seq), its topic and
/// sequence number unchecked (`--trust-envelopes`); `None` if `msg` is no binary
/// envelope or too short to hold its head.
#[inline]
pub(crate) fn strip_binary(msg: &[u8]) -> Option<&[u8]> {
    match msg {
        [BINARY_TAG, n, ..] => msg.get(2 + usize::from(*n) + 8..),
        _ => None,
    }
}

/// Parses a complete message, or the head of a fragmented one (`whole` false: the closing
/// brace of a text envelope is then not checked).
pub(crate) fn parse(text: bool, msg: &[u8], whole: bool) -> Frame<'_> {
    if !text {
        return parse_binary(msg);
    }
    match msg.strip_prefix(TEXT_PREFIX) {
        Some(rest) => parse_text(rest, whole).unwrap_or_else(Frame::Malformed),
        None => parse_op(msg),
    }
}

fn parse_binary(msg: &[u8]) -> Frame<'_> {
    let [tag, len, rest @ ..] = msg else {
        return Frame::Malformed("binary frame shorter than an envelope header");
    };
    if *tag != BINARY_TAG {
        return Frame::Malformed("binary frame without the 0x01 envelope tag");
    }
    let len = usize::from(*len);
    let (Some(topic), Some(seq)) = (
        rest.get(..len),
        rest.get(len..len + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok()),
    ) else {
        return Frame::Malformed("binary envelope shorter than its topic and seq");
    };
    Frame::Data {
        topic,
        seq: u64::from_be_bytes(seq),
        data: &rest[len + 8..],
    }
}

/// `rest` follows `{"topic":"`.
fn parse_text(rest: &[u8], whole: bool) -> Result<Frame<'_>, &'static str> {
    let end = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .ok_or("text envelope with an unterminated topic")?;
    let (topic, rest) = rest.split_at(end);
    let rest = rest
        .strip_prefix(SEQ_KEY)
        .ok_or("text envelope without \"seq\" after its topic (or an escaped topic)")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_DIGITS {
        return Err("text envelope seq is not a number");
    }
    let seq = rest[..digits]
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or("text envelope seq over 2^64")?;
    let mut data = rest[digits..]
        .strip_prefix(DATA_KEY)
        .ok_or("text envelope without \"data\" after its seq")?;
    if whole {
        data = data
            .strip_suffix(b"}")
            .ok_or("text envelope does not end with '}'")?;
    }
    if let Some(s) = data.strip_prefix(b"\"") {
        data = match (whole, s.strip_suffix(b"\"")) {
            (false, _) => s,
            (true, Some(s)) => s,
            (true, None) => return Err("text envelope data string is not terminated"),
        };
    }
    Ok(Frame::Data { topic, seq, data })
}

fn parse_op(msg: &[u8]) -> Frame<'_> {
    let Ok(v) = serde_json::from_slice::<Value>(msg) else {
        return Frame::Malformed("text frame is neither an envelope nor JSON");
    };
    let Some(op) = v.get("op").and_then(Value::as_str) else {
        return Frame::Malformed("JSON text frame without an \"op\"");
    };
    Frame::Op(match op {
        "gap" => match (
            v.get("topic").and_then(Value::as_str),
            v.get("from").and_then(Value::as_u64),
            v.get("to").and_then(Value::as_u64),
        ) {
            (Some(topic), Some(from), Some(to)) if from <= to && to < u64::MAX => Op::Gap {
                topic: topic.to_owned(),
                from,
                to,
            },
            _ => {
                return Frame::Malformed(
                    "a gap needs a topic and from ≤ to < 18446744073709551615",
                );
            }
        },
        "heartbeat" => Op::Heartbeat,
        "epoch" | "reset" => match (
            v.get("topic").and_then(Value::as_str),
            v.get("epoch").and_then(Value::as_str),
        ) {
            (Some(topic), Some(epoch)) => {
                let (topic, epoch) = (topic.to_owned(), epoch.to_owned());
                if op == "epoch" {
                    Op::Epoch { topic, epoch }
                } else {
                    Op::Reset { topic, epoch }
                }
            }
            _ => return Frame::Malformed("an epoch or reset needs a topic and an epoch"),
        },
        "subscribed" => Op::Subscribed,
        "error" => Op::Error(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no reason)")
                .to_owned(),
        ),
        _ => Op::Other,
    })
}

/// What the envelopes of a run showed; sums under [`V1Tally::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct V1Tally {
    /// Data envelopes received.
    pub(crate) envelopes: u64,
    /// `gap` messages received.
    pub(crate) gap_messages: u64,
    /// Messages those gaps announced missing (beyond what had arrived).
    pub(crate) announced: u64,
    /// Messages lost without a gap announcing them: per subscriber, the payload streams'
    /// losses (the missing tail included) beyond the announced count, or the topic
    /// sequence holes if more.
    pub(crate) unannounced: u64,
    /// Topic sequence numbers skipped without a gap and never filled.
    pub(crate) seq_holes: u64,
    /// Envelopes whose sequence number had been seen (or announced missing) before.
    pub(crate) duplicates: u64,
    /// Envelopes filling an earlier hole.
    pub(crate) out_of_order: u64,
    /// Envelopes or gaps of a topic the subscriber did not subscribe.
    pub(crate) wrong_topic: u64,
    /// Frames that are neither an envelope nor an op message.
    pub(crate) malformed: u64,
    /// Gaps that did not start at the next expected number (an overlap or a hole).
    pub(crate) bad_gaps: u64,
    /// Heartbeats received.
    pub(crate) heartbeats: u64,
    /// `reset` messages received: a resume found the topic's numbering gone.
    pub(crate) resets: u64,
    /// `subscribed` replies received.
    pub(crate) subscribed: u64,
    /// `error` messages received.
    pub(crate) errors: u64,
    /// Ops of other kinds (ignored).
    pub(crate) other_ops: u64,
}

impl V1Tally {
    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.envelopes = self.envelopes.saturating_add(other.envelopes);
        self.gap_messages = self.gap_messages.saturating_add(other.gap_messages);
        self.announced = self.announced.saturating_add(other.announced);
        self.unannounced = self.unannounced.saturating_add(other.unannounced);
        self.seq_holes = self.seq_holes.saturating_add(other.seq_holes);
        self.duplicates = self.duplicates.saturating_add(other.duplicates);
        self.out_of_order = self.out_of_order.saturating_add(other.out_of_order);
        self.wrong_topic = self.wrong_topic.saturating_add(other.wrong_topic);
        self.malformed = self.malformed.saturating_add(other.malformed);
        self.bad_gaps = self.bad_gaps.saturating_add(other.bad_gaps);
        self.heartbeats = self.heartbeats.saturating_add(other.heartbeats);
        self.resets = self.resets.saturating_add(other.resets);
        self.subscribed = self.subscribed.saturating_add(other.subscribed);
        self.errors = self.errors.saturating_add(other.errors);
        self.other_ops = self.other_ops.saturating_add(other.other_ops);
    }

    /// The breaches of the contract `--expect-all` fails a run on, worded for the user.
    pub(crate) fn failures(&self) -> Vec<String> {
        [
            (
                self.unannounced,
                "messages lost without a gap announcing them",
            ),
            (self.duplicates, "duplicate envelopes"),
            (self.out_of_order, "envelopes out of order"),
            (self.wrong_topic, "envelopes of topics not subscribed"),
            (self.malformed, "malformed frames"),
            (self.bad_gaps, "gaps not starting at the next expected seq"),
            (self.errors, "error messages from the server"),
            (
                self.resets,
                "resets (the server lost a topic's numbering: restarted, or forgot it)",
            ),
        ]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect()
    }
}

/// `a == b` for topic names, inline: names are short, and a call into `memcmp` per
/// envelope was a tenth of the subscriber's user time.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// What [`Checker::handle_data`] made of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Of a subscribed topic; `first` when it started the topic's sequence.
    Subscribed {
        /// The topic's first envelope (or gap) on this subscriber.
        first: bool,
    },
    /// Of a topic the subscriber did not subscribe (its payload is not accounted).
    Foreign,
}

/// One subscriber's topics and their sequence numbers, across reconnections.
#[derive(Debug, Clone)]
pub(crate) struct Checker {
    /// Held inline for one topic (every loadgen subscriber has one): the check of an
    /// envelope then touches no memory outside the connection's own.
    topics: SmallVec<[TopicSeq; 1]>,
    /// The topic of the last envelope, compared first (a subscriber's envelopes mostly
    /// come in runs of one topic).
    last: usize,
    /// Messages announced missing, for [`Checker::finish`].
    announced: u64,
    /// The binary envelope head of a one-topic subscriber with a short topic name.
    head: Option<BinaryHead>,
}

/// `0x01 | topic length | topic` of one topic, as the low bytes of a little-endian u64
/// (topic names up to 6 bytes): a binary envelope of that topic is recognised with one
/// load, a mask and a compare, not a parse and a name search.
#[derive(Debug, Clone, Copy)]
struct BinaryHead {
    word: u64,
    mask: u64,
    /// Bytes of the head (2 + the name's length); the seq follows.
    len: usize,
}

impl BinaryHead {
    fn of(name: &str) -> Option<Self> {
        let len = 2 + name.len();
        if len > 8 {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[0] = BINARY_TAG;
        bytes[1] = name.len() as u8;
        bytes[2..len].copy_from_slice(name.as_bytes());
        Some(Self {
            word: u64::from_le_bytes(bytes),
            mask: u64::MAX >> (8 * (8 - len)),
            len,
        })
    }
}

#[derive(Debug, Clone)]
struct TopicSeq {
    name: Arc<str>,
    /// `None` until the first envelope or gap (or a resume point).
    seq: Option<Tracker>,
}

impl Checker {
    /// A subscriber of `topics`.
    pub(crate) fn new(topics: impl IntoIterator<Item = Arc<str>>) -> Self {
        let topics: SmallVec<[TopicSeq; 1]> = topics
            .into_iter()
            .map(|name| TopicSeq { name, seq: None })
            .collect();
        let head = match topics.as_slice() {
            [only] => BinaryHead::of(&only.name),
            _ => None,
        };
        Self {
            topics,
            last: 0,
            announced: 0,
            head,
        }
    }

    /// A binary frame that is an envelope of this subscriber's only topic, checked as
    /// [`Checker::handle_data`] would after [`parse`]: its verdict, seq and payload. `None`
    /// when the frame is anything else (or the topic has no [`BinaryHead`]): the caller
    /// then parses it in full.
    #[inline]
    pub(crate) fn handle_binary<'m>(
        &mut self,
        msg: &'m [u8],
        t: &mut V1Tally,
    ) -> Option<(Verdict, u64, &'m [u8])> {
        let head = self.head?;
        let word = u64::from_le_bytes(msg.get(..8)?.try_into().ok()?);
        if word & head.mask != head.word {
            return None;
        }
        let seq = msg.get(head.len..head.len + 8)?;
        let seq = u64::from_be_bytes(seq.try_into().ok()?);
        t.envelopes += 1;
        Some((self.record(0, seq, t), seq, &msg[head.len + 8..]))
    }

    /// Checks envelope `seq` of `topic`.
    pub(crate) fn handle_data(&mut self, topic: &[u8], seq: u64, t: &mut V1Tally) -> Verdict {
        t.envelopes += 1;
        let hit = match self.topics.get(self.last) {
            Some(x) if same_bytes(x.name.as_bytes(), topic) => Some(self.last),
            _ => self
                .topics
                .iter()
                .position(|x| same_bytes(x.name.as_bytes(), topic)),
        };
        let Some(i) = hit else {
            t.wrong_topic += 1;
            return Verdict::Foreign;
        };
        self.record(i, seq, t)
    }

    /// Envelope `seq` of topic `i`.
    #[inline]
    fn record(&mut self, i: usize, seq: u64, t: &mut V1Tally) -> Verdict {
        self.last = i;
        let ts = &mut self.topics[i];
        let first = ts.seq.is_none();
        let tracker = ts.seq.get_or_insert_with(|| Tracker::starting_at(seq));
        match tracker.record(seq, &mut Counts::default()) {
            Arrival::Duplicate => t.duplicates += 1,
            Arrival::OutOfOrder => t.out_of_order += 1,
            // A hole stays in the tracker's losses until it is filled.
            Arrival::InOrder | Arrival::Gap(_) => {}
        }
        Verdict::Subscribed { first }
    }

    /// Handles an op message; returns a problem worth reporting (an `error` op).
    pub(crate) fn handle_op(&mut self, op: Op, t: &mut V1Tally) -> Option<String> {
        match op {
            Op::Gap { topic, from, to } => self.handle_gap(&topic, from, to, t),
            Op::Heartbeat => t.heartbeats += 1,
            Op::Epoch { topic, .. } => {
                if !self.topics.iter().any(|x| *x.name == topic) {
                    t.wrong_topic += 1;
                }
            }
            Op::Reset { topic, .. } => {
                t.resets += 1;
                match self.topics.iter_mut().find(|x| *x.name == topic) {
                    // The new numbering starts with what follows; the payload streams
                    // still count what was lost.
                    Some(ts) => ts.seq = None,
                    None => t.wrong_topic += 1,
                }
                return Some(format!(
                    "the server reset topic {topic:?}: its numbering was lost (restarted, or forgot the topic)"
                ));
            }
            Op::Subscribed => t.subscribed += 1,
            Op::Error(e) => {
                t.errors += 1;
                return Some(format!("the server sent an error: {e}"));
            }
            Op::Other => t.other_ops += 1,
        }
        None
    }

    fn handle_gap(&mut self, topic: &str, from: u64, to: u64, t: &mut V1Tally) {
        t.gap_messages += 1;
        let Some(ts) = self.topics.iter_mut().find(|x| &*x.name == topic) else {
            t.wrong_topic += 1;
            return;
        };
        let tracker = ts.seq.get_or_insert_with(|| Tracker::starting_at(from));
        if from != tracker.next() {
            t.bad_gaps += 1;
        }
        // Numbers before the gap that never came were not announced: lost.
        tracker.lose_to(from);
        let passed = tracker.skip_to(to + 1);
        self.announced = self.announced.saturating_add(passed);
        t.announced = t.announced.saturating_add(passed);
    }

    /// The last sequence number of topic `i` this subscriber has seen or had announced
    /// missing: what it resumes after. `None` before its first envelope.
    pub(crate) fn last_seq(&self, i: usize) -> Option<u64> {
        let tracker = self.topics.get(i)?.seq.as_ref()?;
        Some(tracker.next().saturating_sub(1))
    }

    /// Sets topic `i` to expect `next` first, unless it has started already.
    pub(crate) fn expect_first(&mut self, i: usize, next: u64) {
        if let Some(ts) = self.topics.get_mut(i) {
            ts.seq.get_or_insert_with(|| Tracker::starting_at(next));
        }
    }

    /// At the end of the run: `stamp_lost` is what this subscriber's payload streams lost
    /// (the missing tail included); what gaps did not announce of it is unannounced.
    pub(crate) fn finish(&self, stamp_lost: u64, t: &mut V1Tally) {
        let holes: u64 = self
            .topics
            .iter()
            .filter_map(|x| x.seq.as_ref())
            .map(Tracker::lost)
            .fold(0u64, u64::saturating_add);
        t.seq_holes = t.seq_holes.saturating_add(holes);
        t.unannounced = t
            .unannounced
            .saturating_add(stamp_lost.saturating_sub(self.announced).max(holes));
    }
}

#[cfg(test)]
mod tests;
