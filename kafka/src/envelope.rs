//! The record format: key = stream id, value = the event's JSON payload, and every other
//! field of the stored event as a UTF-8 header, so `kcat -J` shows a whole event.

use chrono::{DateTime, Utc};
use orderflow_store::{EventMetadata, StoredEvent};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use uuid::Uuid;

pub const EVENT_ID: &str = "event_id";
pub const EVENT_TYPE: &str = "event_type";
pub const STREAM_TYPE: &str = "stream_type";
pub const STREAM_ID: &str = "stream_id";
pub const VERSION: &str = "version";
pub const POSITION: &str = "position";
pub const TX_ID: &str = "tx_id";
pub const SCHEMA_VERSION: &str = "schema_version";
pub const CORRELATION_ID: &str = "correlation_id";
pub const CAUSATION_ID: &str = "causation_id";
pub const COMMAND_ID: &str = "command_id";
pub const ACTOR: &str = "actor";
/// The actor's roles, comma-separated.
pub const ACTOR_ROLES: &str = "actor_roles";
pub const RECORDED_AT: &str = "recorded_at";

/// A record that is not one of our events.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {header} is malformed: {value:?}")]
    Malformed { header: &'static str, value: String },
    #[error("the payload is not JSON")]
    Payload(#[source] serde_json::Error),
    #[error("the record has no payload")]
    NoPayload,
}

/// Headers carrying everything but the payload.
pub fn headers(event: &StoredEvent) -> OwnedHeaders {
    let meta = &event.metadata;
    let mut fields: Vec<(&str, String)> = vec![
        (EVENT_ID, meta.event_id.to_string()),
        (EVENT_TYPE, event.event_type.clone()),
        (STREAM_TYPE, event.stream_type.clone()),
        (STREAM_ID, event.stream_id.to_string()),
        (VERSION, event.version.to_string()),
        (POSITION, event.position.to_string()),
        (TX_ID, event.tx_id.to_string()),
        (SCHEMA_VERSION, event.schema_version.to_string()),
        (CORRELATION_ID, meta.correlation_id.to_string()),
        (COMMAND_ID, meta.command_id.clone()),
        (RECORDED_AT, event.recorded_at.to_rfc3339()),
    ];
    if let Some(causation) = meta.causation_id {
        fields.push((CAUSATION_ID, causation.to_string()));
    }
    if let Some(actor) = &meta.actor {
        fields.push((ACTOR, actor.clone()));
    }
    if !meta.actor_roles.is_empty() {
        fields.push((ACTOR_ROLES, meta.actor_roles.join(",")));
    }
    fields.iter().fold(
        OwnedHeaders::new_with_capacity(fields.len()),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}

/// The stored event a record carries.
pub fn decode<M: Message>(message: &M) -> Result<StoredEvent, EnvelopeError> {
    let payload = message.payload().ok_or(EnvelopeError::NoPayload)?;
    let payload: serde_json::Value =
        serde_json::from_slice(payload).map_err(EnvelopeError::Payload)?;
    let headers = message.headers();
    let text = |name: &'static str| -> Option<String> {
        let headers = headers?;
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let required = |name: &'static str| text(name).ok_or(EnvelopeError::Missing(name));
    fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, EnvelopeError> {
        value.parse().map_err(|_| EnvelopeError::Malformed {
            header: name,
            value,
        })
    }
    let causation_id = text(CAUSATION_ID)
        .map(|v| parse::<Uuid>(CAUSATION_ID, v))
        .transpose()?;
    let recorded_at = required(RECORDED_AT)?;
    let recorded_at = DateTime::parse_from_rfc3339(&recorded_at)
        .map_err(|_| EnvelopeError::Malformed {
            header: RECORDED_AT,
            value: recorded_at.clone(),
        })?
        .with_timezone(&Utc);
    Ok(StoredEvent {
        position: parse(POSITION, required(POSITION)?)?,
        tx_id: parse(TX_ID, required(TX_ID)?)?,
        stream_id: parse(STREAM_ID, required(STREAM_ID)?)?,
        stream_type: required(STREAM_TYPE)?,
        version: parse(VERSION, required(VERSION)?)?,
        event_type: required(EVENT_TYPE)?,
        schema_version: parse(SCHEMA_VERSION, required(SCHEMA_VERSION)?)?,
        payload,
        metadata: EventMetadata {
            event_id: parse(EVENT_ID, required(EVENT_ID)?)?,
            correlation_id: parse(CORRELATION_ID, required(CORRELATION_ID)?)?,
            causation_id,
            command_id: required(COMMAND_ID)?,
            actor: text(ACTOR),
            actor_roles: text(ACTOR_ROLES)
                .map(|roles| roles.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
        },
        recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    #[test]
    fn an_event_survives_the_envelope() {
        let event = StoredEvent {
            position: 42,
            tx_id: 777,
            stream_id: Uuid::now_v7(),
            stream_type: "order".into(),
            version: 3,
            event_type: "ItemAdded".into(),
            schema_version: 1,
            payload: serde_json::json!({"quantity": 2}),
            metadata: EventMetadata {
                event_id: Uuid::now_v7(),
                correlation_id: Uuid::now_v7(),
                causation_id: Some(Uuid::now_v7()),
                command_id: "key-1".into(),
                actor: Some("0195f3a0-0000-7000-8000-000000000001".into()),
                actor_roles: vec!["customer".into(), "admin".into()],
            },
            recorded_at: DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let message = OwnedMessage::new(
            Some(serde_json::to_vec(&event.payload).unwrap()),
            Some(event.stream_id.to_string().into_bytes()),
            "orderflow.order.events".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers(&event)),
        );
        assert_eq!(decode(&message).unwrap(), event);
    }

    #[test]
    fn a_record_without_our_headers_is_rejected() {
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        assert!(matches!(decode(&message), Err(EnvelopeError::Missing(_))));
        let garbage = OwnedMessage::new(
            Some(b"not json".to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        assert!(matches!(decode(&garbage), Err(EnvelopeError::Payload(_))));
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        const NAMES: [&str; 14] = [
            EVENT_ID,
            EVENT_TYPE,
            STREAM_TYPE,
            STREAM_ID,
            VERSION,
            POSITION,
            TX_ID,
            SCHEMA_VERSION,
            CORRELATION_ID,
            CAUSATION_ID,
            COMMAND_ID,
            ACTOR,
            ACTOR_ROLES,
            RECORDED_AT,
        ];

        fn record(
            payload: Option<Vec<u8>>,
            headers: Vec<(String, Option<Vec<u8>>)>,
        ) -> OwnedMessage {
            let headers = headers.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            });
            OwnedMessage::new(
                payload,
                None,
                "orderflow.order.events".into(),
                Timestamp::NotAvailable,
                0,
                0,
                Some(headers),
            )
        }

        fn header() -> impl Strategy<Value = (String, Option<Vec<u8>>)> {
            (
                prop_oneof![
                    prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned),
                    "[a-z_]{0,12}",
                ],
                prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            /// Random payloads and headers: decoded or refused, never a panic.
            #[test]
            fn random_records_never_panic(
                payload in prop::option::of(prop::collection::vec(any::<u8>(), 0..128)),
                headers in prop::collection::vec(header(), 0..20),
            ) {
                let _ = decode(&record(payload, headers));
            }

            /// A real record with one header's value replaced by random bytes (or dropped):
            /// refused with an error or decoded, never a panic.
            #[test]
            fn mutated_records_never_panic(
                which in 0usize..NAMES.len(),
                value in prop::option::of(prop::collection::vec(any::<u8>(), 0..48)),
            ) {
                let event = StoredEvent {
                    position: 7,
                    tx_id: 9,
                    stream_id: Uuid::nil(),
                    stream_type: "order".into(),
                    version: 1,
                    event_type: "OrderCreated".into(),
                    schema_version: 1,
                    payload: serde_json::json!({"currency": "EUR"}),
                    metadata: EventMetadata {
                        event_id: Uuid::nil(),
                        correlation_id: Uuid::nil(),
                        causation_id: None,
                        command_id: "k".into(),
                        actor: Some("a".into()),
                        actor_roles: vec!["admin".into()],
                    },
                    recorded_at: DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
                        .unwrap()
                        .with_timezone(&Utc),
                };
                let good = headers(&event);
                let mut fields: Vec<(String, Option<Vec<u8>>)> = good
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect();
                match fields.iter_mut().find(|(key, _)| key == NAMES[which]) {
                    Some(field) => field.1 = value,
                    None => fields.push((NAMES[which].to_owned(), value)),
                }
                let payload = serde_json::to_vec(&event.payload).unwrap();
                let _ = decode(&record(Some(payload), fields));
            }
        }
    }
}
