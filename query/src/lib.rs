//! The GraphQL query service: composed order, user and product views over the projectors'
//! read models, with read-your-writes (`minVersion` for an order, `X-Min-Position` for the
//! views a read reads), subscriptions to order changes, and
//! a playground that works offline.
//!
//! Reads only: `order_view`, `user_view`, `product_view` and `payment_view` (owned by the
//! projector), `sagas` (owned by the saga orchestrator) and, from the event store, an
//! order's stream and its timeline (its saga's, payment's and reservations' events too).
//! Composition across views goes through one batching loader, so a page costs a constant
//! number of statements however many items it has.
//!
//! # Layout
//! - [`config`]: [`QueryArgs`](config::QueryArgs), the flags of `orderflow query`, and
//!   [`QueryOptions`](config::QueryOptions), the limits the service enforces.
//! - [`startup`]: [`QueryService`], its routes and [`serve`].
//! - `schema` (private): the GraphQL types and resolvers; [`schema_sdl`] prints the schema.
//! - `db` (private): every SQL statement, counted; `loaders` (private): the batched reads.
//! - `freshness` (private): the one `LISTEN order_view_changed` connection and the poller
//!   behind `minVersion` and `orderUpdated`.
//! - [`progress`]: how far each view has applied in event-log positions, and the
//!   `X-Min-Position` wait (read-your-writes across views).
//! - `limits` (private): depth, complexity and time limits, and error codes.
//! - [`error`]: the `extensions.code` values ([`error::code`]).
//! - [`playground`]: the GraphiQL page and its embedded assets.

pub mod config;
pub mod error;
pub mod ops;
pub mod playground;
pub mod progress;
pub mod startup;

mod db;
mod freshness;
mod limits;
mod loaders;
mod schema;

pub use config::{QueryArgs, QueryOptions};
pub use freshness::ORDER_VIEW_CHANGED;
pub use schema::money::Long;
pub use schema::sdl as schema_sdl;
pub use startup::{router, serve, QueryService};
