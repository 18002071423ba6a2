use chrono::{DateTime, Utc};
use orderflow_domain::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who and what caused an event; stored as `events.metadata` and carried in Kafka headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// UUID v7, unique per event: the consumers' dedupe key across republishing.
    pub event_id: Uuid,
    /// Shared by everything one user action set off, across services.
    pub correlation_id: Uuid,
    /// The event or command that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The command that appended the event (the Idempotency-Key when the client sent one,
    /// prefixed with the length and value of its token subject).
    pub command_id: String,
    /// Who asked: a token's `sub`, or the name of the process acting on its own (`saga`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The roles the actor's token carried when it asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_roles: Vec<String>,
}

/// An event ready to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i16,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn from_domain<E: DomainEvent>(event: &E) -> Self {
        Self {
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: event.to_payload(),
        }
    }
}

/// A committed event as read back from the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub position: i64,
    /// The writing transaction's id: with `position`, the gap-safe cursor.
    pub tx_id: i64,
    pub stream_id: Uuid,
    pub stream_type: String,
    pub version: i32,
    pub event_type: String,
    pub schema_version: i16,
    pub payload: serde_json::Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Decode (and upcast) into the aggregate's event type.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, crate::StoreError> {
        E::from_stored(&self.event_type, self.schema_version, self.payload.clone()).map_err(
            |source| crate::StoreError::Decode {
                stream_id: self.stream_id,
                position: self.position,
                source,
            },
        )
    }
}

/// The columns every read selects, in [`StoredEvent`]'s field order.
pub(crate) const COLUMNS: &str = "position, tx_id::text::bigint as tx_id, stream_id, stream_type, \
     version, event_type, schema_version, payload, metadata, recorded_at";

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for StoredEvent {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let metadata: sqlx::types::Json<EventMetadata> = row.try_get("metadata")?;
        Ok(Self {
            position: row.try_get("position")?,
            tx_id: row.try_get("tx_id")?,
            stream_id: row.try_get("stream_id")?,
            stream_type: row.try_get("stream_type")?,
            version: row.try_get("version")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload: row.try_get("payload")?,
            metadata: metadata.0,
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}
