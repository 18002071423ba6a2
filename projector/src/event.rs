//! Stored events decoded (and upcast, by the domain) into the domain's event types, with
//! the envelope fields the projections use.

use std::borrow::Cow;
use std::error::Error;

use chrono::{DateTime, Utc};
use orderflow_domain::order::{Order, OrderEvent};
use orderflow_domain::payment::{Payment, PaymentEvent};
use orderflow_domain::product::{Product, ProductEvent};
use orderflow_domain::user::{User, UserEvent};
use orderflow_domain::{Aggregate, DomainEvent};
use orderflow_store::StoredEvent;
use uuid::Uuid;

/// What happened, as one of the domain's event enums.
#[derive(Debug, Clone)]
pub enum Payload {
    Order(OrderEvent),
    User(UserEvent),
    Product(ProductEvent),
    Payment(PaymentEvent),
}

/// A decoded event and where it sits in its stream.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub position: i64,
    pub stream_id: Uuid,
    pub version: i32,
    pub recorded_at: DateTime<Utc>,
    pub payload: Payload,
}

/// A stored event the projections cannot read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnreadableEvent {
    #[error("no projection reads {0:?} streams")]
    StreamType(String),
    #[error("cannot decode {event_type} v{schema_version} of {stream_type} stream")]
    Payload {
        event_type: String,
        schema_version: i16,
        stream_type: String,
        #[source]
        source: orderflow_domain::DecodeError,
    },
}

/// Decodes by stream type; an owned event gives up its payload instead of copying it.
pub(crate) fn decode(event: Cow<'_, StoredEvent>) -> Result<Envelope, UnreadableEvent> {
    let (head, payload) = match event {
        Cow::Borrowed(event) => (Head::of(event), event.payload.clone()),
        Cow::Owned(mut event) => (Head::of(&event), event.payload.take()),
    };
    let payload = match head.stream_type.as_str() {
        Order::STREAM_TYPE => Payload::Order(head.decode(payload)?),
        User::STREAM_TYPE => Payload::User(head.decode(payload)?),
        Product::STREAM_TYPE => Payload::Product(head.decode(payload)?),
        Payment::STREAM_TYPE => Payload::Payment(head.decode(payload)?),
        other => return Err(UnreadableEvent::StreamType(other.to_owned())),
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

    fn decode<E: DomainEvent>(&self, payload: serde_json::Value) -> Result<E, UnreadableEvent> {
        E::from_stored(&self.event_type, self.schema_version, payload).map_err(|source| {
            UnreadableEvent::Payload {
                event_type: self.event_type.clone(),
                schema_version: self.schema_version,
                stream_type: self.stream_type.clone(),
                source,
            }
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
