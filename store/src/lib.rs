//! The PostgreSQL event store shared by the write side, the relay and the projectors.
//!
//! Appends are optimistic (`unique (stream_id, version)`), reads are either per stream or
//! global in commit order with a gap-safe cursor, and the appending statement can claim
//! values unique across streams and record an idempotent command's response.
//!
//! # Layout
//! - [`event`]: the stored event, the event to append and its metadata.
//! - [`append`]: loading a stream for a decision and appending with an expected version;
//!   [`Write`], one command's whole write (events, claims, idempotency record) as one statement.
//! - [`reader`]: the gap-safe global reader (`(tx_id, position)` cursor).
//! - [`signal`]: the `LISTEN`/`NOTIFY` wake-up of the relay after appends.
//! - [`snapshot`]: snapshots of long streams, so loading them costs the same however long
//!   they grow.
//! - [`claims`]: values unique across streams (email, sku), claimed by a [`Write`].
//! - [`idempotency`]: stored responses of idempotent commands.
//! - [`lookup`]: lookups by a list of keys whose cached plans stay index lookups.
//! - [`config`]: [`DatabaseArgs`], the flags every role shares.
//! - [`health`]: the `/health` and `/ready` answers every service gives.
//! - [`telemetry`]: the process's Prometheus metrics, HTTP latency per route, and the
//!   reasons a role is not ready.
//! - [`error`]: the [`StoreError`] every operation returns.

pub mod append;
pub mod auth;
pub mod claims;
pub mod config;
pub mod edge;
pub mod error;
pub mod event;
pub mod health;
pub mod idempotency;
pub mod lookup;
pub mod reader;
pub mod signal;
pub mod snapshot;
pub mod telemetry;

pub use append::{
    append, load, load_after, load_events, AppendOutcome, Loaded, Record, Write, Written,
};
pub use config::DatabaseArgs;
pub use error::StoreError;
pub use event::{EventMetadata, NewEvent, StoredEvent};
pub use reader::{read_after, read_snapshot_after, read_stream, Cursor};

/// The migrations of every crate's tables, embedded so `orderflow migrate` needs no files.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A unique violation (SQLSTATE 23505) names the constraint it broke; that name is the fact.
pub fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Some(db.constraint().unwrap_or(""))
        }
        _ => None,
    }
}
