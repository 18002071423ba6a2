use uuid::Uuid;

/// Everything the event store can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream first.
    #[error("stream {stream_id} was changed concurrently (expected version {expected})")]
    Conflict { stream_id: Uuid, expected: i32 },
    /// A value unique across streams is already claimed by another stream.
    #[error("{scope} {value:?} is already taken")]
    Taken {
        scope: crate::claims::ClaimScope,
        value: String,
    },
    /// The idempotency key was recorded by another command first (a concurrent retry).
    #[error("idempotency key {key:?} was recorded concurrently")]
    KeyRecorded { key: String },
    /// Two commands waited on each other's rows (e.g. swapping emails) or failed to
    /// serialize; deciding again resolves it.
    #[error("the command raced another one")]
    Raced(#[source] sqlx::Error),
    /// The stream exists but holds another type of aggregate.
    #[error("stream {stream_id} is a {actual}, not a {expected}")]
    WrongStreamType {
        stream_id: Uuid,
        expected: &'static str,
        actual: String,
    },
    /// A stored event no longer decodes into the domain's types.
    #[error("event {position} of stream {stream_id} cannot be decoded")]
    Decode {
        stream_id: Uuid,
        position: i64,
        #[source]
        source: orderflow_domain::DecodeError,
    },
    #[error("a snapshot cannot be serialized")]
    Snapshot(#[source] serde_json::Error),
    /// PostgreSQL cannot be reached, or is shutting down or starting: the request may
    /// succeed if retried shortly.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
            {
                Self::Raced(err)
            }
            _ if unavailable(&err) => Self::Unavailable(err),
            _ => Self::Database(err),
        }
    }
}

/// Whether `err` says the database cannot serve right now, rather than that the statement
/// is wrong: no connection (refused, reset, pool timed out or closed), or a server that is
/// shutting down, starting, or out of connections (SQLSTATE class 08, 57P01-57P03, 53300).
/// Not a TLS error: this build has no TLS, so a URL asking for it never connects.
pub fn unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}
