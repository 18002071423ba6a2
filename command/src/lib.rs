//! The write side: a REST API whose commands are decided by the domain's aggregates and
//! appended to the event store, with idempotency keys and optimistic concurrency.
//!
//! # Layout
//! - [`startup`]: state, router and middleware, the server.
//! - [`config`]: the flags of `orderflow command`.
//! - [`write`]: the write path without HTTP: load, decide, append, idempotency, retries.
//! - [`cache`]: recently written aggregates, so a command needs no read.
//! - [`exec`]: a command request's headers into the write path, its outcome into a response.
//! - [`access`]: who asks ([`access::Authed`]) and what customers and admins may do.
//! - [`extract`]: extractors with JSON rejections and the command headers.
//! - [`error`]: [`error::ApiError`] and the error body.
//! - [`users`], [`products`], [`orders`]: the command routes.
//! - [`relay`]: the outbox relay publishing committed events to Kafka.
//! - [`saga`]: the saga orchestrator (intake, driver, payment gateway port) and
//!   [`sagas`]: its REST routes.
//! - [`streams`]: reading a stream back; [`health`]: liveness and readiness;
//!   [`openapi`]: the API description.

pub mod access;
pub mod cache;
pub mod config;
pub mod error;
pub mod exec;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod products;
pub mod relay;
pub mod saga;
pub mod sagas;
pub mod startup;
pub mod streams;
pub mod users;
pub mod write;
