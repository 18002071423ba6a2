//! The write side: a REST API whose commands are decided by the domain's aggregates and
//! appended to the event store, with idempotency keys and optimistic concurrency.
//!
//! # Layout
//! - [`startup`]: state, router and middleware, the server.
//! - [`config`]: the flags of `orderflow command`.
//! - [`exec`]: the write pipeline (idempotency, transaction, retries, response).
//! - [`extract`]: extractors with JSON rejections and the command headers.
//! - [`error`]: [`error::ApiError`] and the error body.
//! - [`users`], [`products`], [`orders`]: the command routes.
//! - [`relay`]: the outbox relay publishing committed events to Kafka.
//! - [`streams`]: reading a stream back; [`health`]: liveness and readiness;
//!   [`openapi`]: the API description.

pub mod config;
pub mod error;
pub mod exec;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod products;
pub mod relay;
pub mod startup;
pub mod streams;
pub mod users;
