//! Outbound frames and the queues they wait in.
//!
//! A frame is encoded once into a [`bytes::Bytes`] ([`encode`]); every queue that
//! holds it holds a clone of the same buffer (a refcount bump, never a copy).

pub mod encode;
pub mod outq;

pub use outq::OutQueue;
