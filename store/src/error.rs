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
            _ => Self::Database(err),
        }
    }
}
