//! Fan-out: the rings that carry publications to the reactors, and in each reactor the
//! topic logs, the subscriptions (cursors) and the slow-consumer policies.
//!
//! ```text
//!  publish ─► encode once (Bytes) ─► ring: one inbox per reactor ─► reactor: append to
//!  the topic's log (one memcpy) ─► mark its subscribers dirty ─► each dirty connection:
//!  log[cursor..head] of each topic + own frames ─► one writev / one send SQE
//! ```
//!
//! Per subscriber and message there is no allocation, refcount or copy: a subscriber is a
//! cursor, and a write carries a topic's whole pending run as one slice (two at a chunk
//! edge).

#[doc(hidden)]
pub mod bench;
#[allow(unsafe_code)] // raw allocation and slices of the shared, append-only chunk
pub(crate) mod chunk;
pub(crate) mod log;
pub(crate) mod outbox;
pub mod policy;
pub mod relay;
pub mod ring;
pub(crate) mod sequence;
pub mod topic;

pub use policy::SlowConsumer;
pub use relay::Relay;
pub use ring::{Fanout, Publication, Published, Wake};
pub use sequence::Epoch;
pub use topic::{
    DEFAULT_TOPIC, Form, History, MAX_TOPIC_LEN, Start, TopicError, TopicName, TopicRules,
};
