//! Projector: folds events into the Postgres read models the query service serves
//! (`order_view`, `user_view`, `product_view`), live from the Kafka consumer loop through
//! [`apply_batch`], or from scratch out of the event store through [`replay`].
//!
//! Each projection owns its view, one private helper table (facts from other streams it
//! needs, so cross-stream arrival order never matters) and a checkpoint table (`stream_id`,
//! `version`); none reads another's tables, so each is rebuilt on its own. All SQL is
//! written against [`Tables`], the names of one projection's tables, live or shadow.
//!
//! A batch is folded in memory: rows are loaded once per table, every event is decoded and
//! applied (or rejected on its own), and changed rows are written back with one multi-row
//! `unnest` upsert per table. A replay runs the same fold over large pages of the store.
//!
//! # Layout
//!
//! - [`projection`]: [`Projection`], the streams each consumes, and its [`Tables`].
//! - [`engine`]: [`apply_batch`]; checkpoints, gap filling, rejection, the shared fold.
//! - [`replay`]: [`replay`] into shadow tables, the catch-up and the swap.
//! - [`error`]: [`ProjectionError`] and [`Rejected`].
//! - [`worker`]: the live Kafka consumer loop, one consumer group per projection.
//! - [`config`]: the flags of `orderflow projector` and `orderflow replay`.
//! - `order_view`, `user_view`, `product_view` (private): each projection's rows, how an
//!   event changes them and how they are loaded and written.
//! - `event` (private): stored events decoded into the domain's event types.
//! - `cache` (private): the rows of one table a batch works on.

pub mod config;
pub mod engine;
pub mod error;
pub mod projection;
pub mod replay;
pub mod worker;

mod cache;
mod event;
mod order_view;
mod product_view;
mod user_view;

pub use engine::apply_batch;
pub use error::{ProjectionError, Rejected};
pub use projection::{Projection, Tables, UnknownProjection};
pub use replay::{replay, ReplayOptions, ReplayReport};
