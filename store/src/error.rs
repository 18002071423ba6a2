use uuid::Uuid;

/// Everything the event store can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream first.
    #[error("stream {stream_id} was changed concurrently (expected version {expected})")]
    Conflict { stream_id: Uuid, expected: i32 },
    /// A value unique across streams is already claimed by another stream.
    #[error("{scope} {value:?} is already taken")]
    Taken { scope: String, value: String },
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
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
