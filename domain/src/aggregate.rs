//! The two traits the event store and the command layer are written against: an
//! [`Aggregate`] decides and evolves, a [`DomainEvent`] knows how it is stored.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::DomainError;

/// An event as the store sees it: a stable name, a schema version and a JSON payload.
pub trait DomainEvent: Sized + Clone + std::fmt::Debug + PartialEq {
    /// Stable name stored in events.event_type, e.g. "OrderCreated".
    fn event_type(&self) -> &'static str;
    /// Current schema version written for this event type (start at 1).
    fn schema_version(&self) -> i16;
    /// The event's data as JSON (fields only, no type tag), stored in events.payload.
    fn to_payload(&self) -> Value;
    /// Rebuild from stored parts; upcasting of older schema versions happens here.
    fn from_stored(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<Self, DecodeError>;
}

/// A stored event that this version of the domain cannot read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("{event_type} has no schema version {version}")]
    UnsupportedSchemaVersion { event_type: String, version: i16 },
    #[error("malformed event payload")]
    Payload(#[source] serde_json::Error),
}

/// A consistency boundary: one event stream, one state, decisions made against that state only.
pub trait Aggregate: Default + Clone + std::fmt::Debug {
    /// e.g. "order", "user", "product", "payment" (stored in events.stream_type and used as
    /// Kafka topic name part).
    const STREAM_TYPE: &'static str;
    type Command;
    type Event: DomainEvent;

    /// Decide: pure, synchronous; anything needed is already in the command.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    /// Evolve: never fails, because events are facts that already happened.
    fn apply(&mut self, event: &Self::Event);

    /// Convenience: fold events from default.
    fn from_events<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// The `data` half of an event enum that serde writes as `{"type": <variant>, "data": {...}}`.
pub(crate) fn payload_of<E: Serialize>(event: &E) -> Value {
    serde_json::to_value(event)
        .ok()
        .and_then(|mut tagged| tagged.get_mut("data").map(Value::take))
        .expect("event enums are tagged with \"type\" and carry their fields in \"data\"")
}

/// Rebuilds a `{"type", "data"}`-tagged event enum whose variants are named in `known`.
pub(crate) fn decode<E: DeserializeOwned>(
    known: &[&str],
    event_type: &str,
    payload: Value,
) -> Result<E, DecodeError> {
    if !known.contains(&event_type) {
        return Err(DecodeError::UnknownEventType(event_type.to_owned()));
    }
    serde_json::from_value(json!({ "type": event_type, "data": payload }))
        .map_err(DecodeError::Payload)
}

/// The error for a version we cannot read, unless the type itself is the problem.
pub(crate) fn unsupported(known: &[&str], event_type: &str, version: i16) -> DecodeError {
    if known.contains(&event_type) {
        DecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_owned(),
            version,
        }
    } else {
        DecodeError::UnknownEventType(event_type.to_owned())
    }
}
