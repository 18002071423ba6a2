//! Projector: folds events into the Postgres read models the query service serves
//! (`order_view`, `user_view`, `product_view`, `payment_view`), live from the Kafka consumer
//! loop through [`engine::apply_records`], or from scratch out of the event store through
//! [`replay`].
//!
//! A projection is one implementation of [`Projection`]: its name, the stream types it
//! consumes, its [`Tables`] (live and shadow), its advisory-lock id and the [`Rows`] it folds
//! a batch into. Each owns its view, one private helper table (facts from other streams it
//! needs, so cross-stream arrival order never matters) and a checkpoint table (`stream_id`,
//! `version`); none reads another's tables, so each is rebuilt on its own. All SQL is
//! written against [`Tables`], so the same code fills the live tables or the shadow copies.
//! The engine, the worker and the replay know projections only through the trait and
//! [`PROJECTIONS`], the list every projection is registered in.
//!
//! A batch is folded in memory: rows are loaded once per table, every event is decoded and
//! applied (or rejected on its own), and changed rows are written back with one multi-row
//! `unnest` upsert per table. A replay runs the same fold over large pages of the store.
//!
//! # Layout
//!
//! - [`projection`]: the [`Projection`] and [`Rows`] traits, [`find`] by name, [`Tables`].
//! - [`engine`]: [`apply_batch`], and for the live worker [`engine::begin_batch`] and
//!   [`engine::apply_records`] (records checked against the store); checkpoints, gap
//!   filling, rejection, the shared fold.
//! - [`replay`]: [`replay`] into shadow tables, the catch-up and the swap.
//! - [`verify`]: [`verify`], a fold into temporary tables compared with the live ones.
//! - [`error`]: [`ProjectionError`], [`Rejected`] and [`Refusal`].
//! - [`worker`]: the live Kafka consumer loop, one consumer group per projection.
//! - [`config`]: the flags of `orderflow projector` and `orderflow replay`.
//! - [`event`]: stored events decoded into the domain's event types ([`event::Envelope`]).
//! - `order_view`, `user_view`, `product_view`, `payment_view` (private): one projection
//!   each ([`OrderView`], [`UserView`], [`ProductView`], [`PaymentView`]): its rows, how an
//!   event changes them and how they are loaded and written.
//! - `cache` (private): the rows of one table a batch works on.

pub mod config;
pub mod engine;
pub mod error;
pub mod event;
pub mod projection;
pub mod replay;
pub mod verify;
pub mod worker;

mod cache;
mod order_view;
mod payment_view;
mod product_view;
mod user_view;

pub use engine::apply_batch;
pub use error::{ProjectionError, Refusal, Rejected};
pub use order_view::OrderView;
pub use payment_view::PaymentView;
pub use product_view::ProductView;
pub use projection::{find, Projection, Rows, Tables, UnknownProjection};
pub use replay::{replay, ReplayOptions, ReplayReport};
pub use user_view::UserView;
pub use verify::{verify, VerifyOptions, VerifyReport};

/// Every projection, in the order `all` runs them.
pub const PROJECTIONS: &[&dyn Projection] = &[&OrderView, &UserView, &ProductView, &PaymentView];
