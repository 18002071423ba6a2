//! [`ProjectionError`]: what fails a whole batch or replay, and [`Rejected`]: one event that
//! could not be applied while the rest of its batch was.

use std::time::Duration;

use orderflow_store::StoreError;
use uuid::Uuid;

use crate::Projection;

/// A failure of the whole call: the caller rolls back and retries (or gives up on a replay).
/// Per-event problems are never this type; they come back as [`Rejected`].
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A delivered event is ahead of its checkpoint and the store does not (yet) hold every
    /// version in between; a later retry finds them.
    #[error("stream {stream_id} needs versions {from}..={to} from the event store, which returned {found}")]
    MissingEvents {
        stream_id: Uuid,
        from: i32,
        to: i32,
        found: usize,
    },
    /// Two replays of one projection would swap over each other.
    #[error("a replay of {0} is already running")]
    ReplayRunning(Projection),
    /// A replay's swap could not lock the live tables in time, attempt after attempt: a long
    /// query or transaction holds them. The shadow tables were left unswapped.
    #[error(
        "the replay of {projection} gave up swapping in after {attempts} attempts to lock its \
         live tables within {timeout:?}: a long-running query or transaction holds them"
    )]
    SwapLockTimeout {
        projection: Projection,
        attempts: u32,
        timeout: Duration,
    },
}

impl ProjectionError {
    /// An error the database raised about the data written (SQLSTATE class 22 or 23): the
    /// fault of one event's content, not of the connection or the schema.
    pub(crate) fn is_data_error(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
            _ => false,
        }
    }
}

/// An event that was skipped because it cannot be decoded or applied; its stream's
/// checkpoint still moves past it, so later events of the stream apply. The caller sends it
/// to the dead-letter topic. It may be an event the batch did not contain: one read from
/// the store to fill a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub position: i64,
    pub stream_id: Uuid,
    pub version: i32,
    pub error: String,
}
