//! The orderflow domain: aggregates that decide which events a command produces and fold
//! events back into state. No I/O, no clocks: whatever a decision needs arrives in the
//! command, so every business rule is testable with plain values.
//!
//! # Layout
//!
//! - [`money`]: exact amounts in minor units with validated ISO 4217 currencies.
//! - [`aggregate`]: the [`Aggregate`] and [`DomainEvent`] traits the store and command
//!   layer are written against, the `domain_event!` macro that implements the latter from an
//!   enum's variant list, [`Upcaster`] steps that lift older stored payloads on read, and
//!   [`DecodeError`] for stored events.
//! - [`error`]: [`DomainError`], one variant per broken rule, each with a stable code and an
//!   [`ErrorKind`] to branch on.
//! - [`user`], [`product`], [`order`], [`payment`]: the aggregates, each with its commands,
//!   events and state.
//! - [`saga`]: the fulfilment saga, a pure state machine from a placed order to a
//!   confirmed or cancelled one, with the actions each state calls for.
//! - `text` (private): trimming and length rules shared by names and reasons, and [`Name`].
//!   [`Name`], [`Email`] and [`Sku`] are parsed (normalized and checked) once, at the edge,
//!   and carried as types by commands and events; each serializes as a plain string.

pub mod aggregate;
pub mod error;
pub mod integral;
pub mod money;
pub mod order;
pub mod payment;
pub mod product;
pub mod saga;
pub mod user;

mod text;

#[cfg(test)]
mod testing;

pub use aggregate::{Aggregate, DecodeError, DomainEvent, Snapshot, Upcaster};
pub use error::{DomainError, ErrorKind};
pub use money::{Currency, Money, MoneyError};
pub use product::Sku;
pub use text::Name;
pub use user::Email;
