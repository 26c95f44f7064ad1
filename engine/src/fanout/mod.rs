//! Fan-out: frames encoded once, the rings that carry them to the reactors, the topic
//! registries and the per-connection out-queues.
//!
//! ```text
//!  publish ─► encode (once, Bytes) ─► ring: one inbox per reactor ─► reactor: topic's
//!  subscribers ─► each out-queue gets a clone (refcount bump) ─► one writev per socket
//! ```

pub mod encode;
pub mod outq;
pub mod policy;
pub mod ring;
pub mod topic;

pub use outq::OutQueue;
pub use policy::SlowConsumer;
pub use ring::{Fanout, Publication, Published};
pub use topic::{DEFAULT_TOPIC, TopicError, TopicName, TopicRules};
