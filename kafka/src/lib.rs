//! Kafka plumbing shared by the relay and the projectors: where events go
//! (topics), how they travel (the envelope: JSON payload plus headers any client can read),
//! an idempotent batching producer, at-least-once consumers and dead letters.
//!
//! # Layout
//! - [`config`]: the `--kafka-*` flags every role flattens in.
//! - [`topics`]: topic names and creating them at start.
//! - [`envelope`]: a stored event as a Kafka record and back.
//! - [`producer`]: the idempotent publisher the relay uses.
//! - [`readback`]: reading a topic back from its start (what `orderflow verify` checks).
//! - [`consumer`]: batched consumption with offsets committed after the work is durable.
//! - [`dlq`]: dead-letter records carrying the original plus the error.
//! - [`lag`]: the consumer-lag monitor (offsets, lag in records and seconds, Burrow-style
//!   status, time to drain) behind `/metrics`, `/ops`, GraphQL and `orderflow lag`.
//! - [`backoff`]: doubling pauses for loops that retry the broker or the database.
//! - `testing` (feature `testing`, for tests): topics of a test's own on a shared broker,
//!   deleted afterwards.

pub mod backoff;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod envelope;
pub mod lag;
pub mod producer;
pub mod readback;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topics;

pub use backoff::Backoff;
pub use config::KafkaArgs;
pub use envelope::{decode, EnvelopeError};
pub use producer::EventPublisher;
