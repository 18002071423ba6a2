//! Stored events decoded (and upcast, by the domain) into the domain's event types, with
//! the envelope fields the projections use.

use std::borrow::Cow;
use std::error::Error;

use chrono::{DateTime, Utc};
use orderflow_domain::order::{Order, OrderEvent};
use orderflow_domain::product::{Product, ProductEvent};
use orderflow_domain::user::{User, UserEvent};
use orderflow_domain::{Aggregate, DomainEvent};
use orderflow_store::StoredEvent;
use uuid::Uuid;

/// What happened, as one of the domain's event enums.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Order(OrderEvent),
    User(UserEvent),
    Product(ProductEvent),
}

/// A decoded event and where it sits in its stream.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) position: i64,
    pub(crate) stream_id: Uuid,
    pub(crate) version: i32,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) payload: Payload,
}

/// Decodes by stream type; an owned event gives up its payload instead of copying it.
pub(crate) fn decode(event: Cow<'_, StoredEvent>) -> Result<Envelope, String> {
    let (head, payload) = match event {
        Cow::Borrowed(event) => (Head::of(event), event.payload.clone()),
        Cow::Owned(mut event) => (Head::of(&event), event.payload.take()),
    };
    let payload = match head.stream_type.as_str() {
        Order::STREAM_TYPE => Payload::Order(head.decode(payload)?),
        User::STREAM_TYPE => Payload::User(head.decode(payload)?),
        Product::STREAM_TYPE => Payload::Product(head.decode(payload)?),
        other => return Err(format!("no projection reads {other:?} streams")),
    };
    Ok(Envelope {
        position: head.position,
        stream_id: head.stream_id,
        version: head.version,
        recorded_at: head.recorded_at,
        payload,
    })
}

struct Head {
    position: i64,
    stream_id: Uuid,
    stream_type: String,
    version: i32,
    event_type: String,
    schema_version: i16,
    recorded_at: DateTime<Utc>,
}

impl Head {
    fn of(event: &StoredEvent) -> Self {
        Self {
            position: event.position,
            stream_id: event.stream_id,
            stream_type: event.stream_type.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
        }
    }

    fn decode<E: DomainEvent>(&self, payload: serde_json::Value) -> Result<E, String> {
        E::from_stored(&self.event_type, self.schema_version, payload).map_err(|err| {
            format!(
                "cannot decode {} v{} of {} stream: {}",
                self.event_type,
                self.schema_version,
                self.stream_type,
                chain(&err)
            )
        })
    }
}

/// An error and its sources, one line: what a dead-letter record needs to be understood.
pub(crate) fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
