//! The two traits the event store and the command layer are written against: an
//! [`Aggregate`] decides and evolves, a [`DomainEvent`] knows how it is stored. Event enums
//! are declared with `domain_event!`, which writes each event type's name once and derives
//! the rest; [`Upcaster`]s lift payloads stored under older schema versions on read.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::DomainError;

/// An event as the store sees it: a stable name, a schema version and a JSON payload.
///
/// Implemented by `domain_event!`, which supplies [`DomainEvent::EVENT_TYPES`] and
/// [`DomainEvent::event_type`] from the enum's variants; the other methods follow from the
/// enum's serde form (`{"type": <variant>, "data": {...}}`) and its [`DomainEvent::UPCASTERS`].
pub trait DomainEvent:
    Serialize + DeserializeOwned + Sized + Clone + std::fmt::Debug + PartialEq
{
    /// Every `event_type` this enum writes, in declaration order, for consumers that filter
    /// by name.
    const EVENT_TYPES: &'static [&'static str];

    /// How older stored payloads are lifted to the current shape. An event type's current
    /// schema version is 1 plus the number of upcasters naming it.
    const UPCASTERS: &'static [Upcaster] = &[];

    /// Stable name stored in events.event_type, e.g. "OrderCreated".
    fn event_type(&self) -> &'static str;

    /// Current schema version written for this event type.
    fn schema_version(&self) -> i16 {
        current_version(Self::UPCASTERS, self.event_type())
    }

    /// The event's data as JSON (fields only, no type tag), stored in events.payload.
    fn to_payload(&self) -> Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut tagged| tagged.get_mut("data").map(Value::take))
            .expect("event enums are tagged with \"type\" and carry their fields in \"data\"")
    }

    /// Rebuild from stored parts, upcasting a payload of an older schema version first.
    fn from_stored(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<Self, DecodeError> {
        let Some(event_type) = Self::EVENT_TYPES.iter().find(|known| **known == event_type) else {
            return Err(DecodeError::UnknownEventType(event_type.to_owned()));
        };
        let payload = upcast(Self::UPCASTERS, event_type, schema_version, payload)?;
        serde_json::from_value(json!({ "type": event_type, "data": payload }))
            .map_err(DecodeError::Payload)
    }
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
    #[error("cannot upcast {event_type} from schema version {from_version}: {reason}")]
    Upcast {
        event_type: &'static str,
        from_version: i16,
        reason: String,
    },
}

/// One step of an event type's schema history: a pure function that lifts a payload stored
/// as `from_version` of `event_type` to `from_version + 1`.
///
/// An event type's upcasters must start at version 1 and have no gaps, which
/// `domain_event!` checks when the crate compiles.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: i16,
    pub upcast: fn(Value) -> Result<Value, DecodeError>,
}

/// 1 plus the number of upcasters for `event_type`: every version before it has a step up.
pub fn current_version(upcasters: &[Upcaster], event_type: &str) -> i16 {
    let steps = upcasters
        .iter()
        .filter(|step| step.event_type == event_type)
        .count();
    1 + i16::try_from(steps).expect("fewer than i16::MAX schema versions")
}

/// Lifts `payload`, stored as `version` of `event_type`, through each step to the current
/// version; versions below 1 or above the current one are unsupported.
pub fn upcast(
    upcasters: &[Upcaster],
    event_type: &'static str,
    version: i16,
    mut payload: Value,
) -> Result<Value, DecodeError> {
    let unsupported = || DecodeError::UnsupportedSchemaVersion {
        event_type: event_type.to_owned(),
        version,
    };
    let current = current_version(upcasters, event_type);
    if !(1..=current).contains(&version) {
        return Err(unsupported());
    }
    for from_version in version..current {
        let step = upcasters
            .iter()
            .find(|step| step.event_type == event_type && step.from_version == from_version)
            .ok_or_else(unsupported)?;
        payload = (step.upcast)(payload)?;
    }
    Ok(payload)
}

/// Whether every upcaster names one of `event_types` and each type's steps are exactly
/// `1..=n` with no duplicates; `const` so `domain_event!` can refuse a broken chain at
/// compile time.
pub const fn upcasters_are_chained(upcasters: &[Upcaster], event_types: &[&str]) -> bool {
    let mut i = 0;
    while i < upcasters.len() {
        let step = &upcasters[i];
        if !contains(event_types, step.event_type) {
            return false;
        }
        let mut same_type = 0;
        let mut same_step = 0;
        let mut j = 0;
        while j < upcasters.len() {
            if str_eq(upcasters[j].event_type, step.event_type) {
                same_type += 1;
                if upcasters[j].from_version == step.from_version {
                    same_step += 1;
                }
            }
            j += 1;
        }
        if step.from_version < 1 || step.from_version > same_type || same_step != 1 {
            return false;
        }
        i += 1;
    }
    true
}

const fn contains(names: &[&str], name: &str) -> bool {
    let mut i = 0;
    while i < names.len() {
        if str_eq(names[i], name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares an event enum and implements [`DomainEvent`] for it from its variant list, so
/// each event type's name is written once. The enum is serialized as
/// `{"type": <variant>, "data": {<camelCase fields>}}`; every variant has named fields
/// (`{}` for none). An optional `upcasters = <&'static [Upcaster]>;` after the enum gives
/// its schema history.
macro_rules! domain_event {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident { $($fields:tt)* }
            ),* $(,)?
        }
        $(upcasters = $upcasters:expr;)?
    ) => {
        $(#[$meta])*
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        #[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                $variant { $($fields)* },
            )*
        }

        impl $crate::aggregate::DomainEvent for $name {
            const EVENT_TYPES: &'static [&'static str] = &[$(stringify!($variant)),*];
            $(const UPCASTERS: &'static [$crate::aggregate::Upcaster] = $upcasters;)?

            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)*
                }
            }
        }

        const _: () = assert!(
            $crate::aggregate::upcasters_are_chained(
                <$name as $crate::aggregate::DomainEvent>::UPCASTERS,
                <$name as $crate::aggregate::DomainEvent>::EVENT_TYPES,
            ),
            concat!(
                "the upcasters of ",
                stringify!($name),
                " must name its event types and run from version 1 without gaps"
            ),
        );
    };
}

pub(crate) use domain_event;

/// An aggregate whose state can be stored as a snapshot, so a long stream loads from its
/// latest snapshot plus the events after it instead of from its first event.
pub trait Snapshot: Aggregate + Serialize + DeserializeOwned {
    /// The snapshot's shape; bump it whenever the state's fields change. A stored snapshot
    /// of another format is ignored (and replaced) instead of being misread.
    const SNAPSHOT_FORMAT: i16;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// v1 stored one `name`; v2 split it in two.
    fn split_name(mut payload: Value) -> Result<Value, DecodeError> {
        let failed = |reason: &str| DecodeError::Upcast {
            event_type: "Greeted",
            from_version: 1,
            reason: reason.to_owned(),
        };
        let name = payload
            .get_mut("name")
            .map(Value::take)
            .ok_or_else(|| failed("no name"))?;
        let name = name
            .as_str()
            .ok_or_else(|| failed("the name is not a string"))?;
        let (given, family) = name.split_once(' ').unwrap_or((name, ""));
        Ok(json!({"givenName": given, "familyName": family}))
    }

    /// v3 added a greeting, which every earlier event said implicitly.
    fn add_greeting(mut payload: Value) -> Result<Value, DecodeError> {
        if let Some(fields) = payload.as_object_mut() {
            fields.insert("greeting".into(), json!("Hello"));
        }
        Ok(payload)
    }

    domain_event! {
        #[derive(Debug, Clone, PartialEq, Eq)]
        enum TestEvent {
            Greeted {
                given_name: String,
                family_name: String,
                greeting: String,
            },
            Waved {},
        }
        upcasters = &[
            Upcaster { event_type: "Greeted", from_version: 1, upcast: split_name },
            Upcaster { event_type: "Greeted", from_version: 2, upcast: add_greeting },
        ];
    }

    fn greeted(greeting: &str) -> TestEvent {
        TestEvent::Greeted {
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            greeting: greeting.into(),
        }
    }

    fn step(event_type: &'static str, from_version: i16) -> Upcaster {
        Upcaster {
            event_type,
            from_version,
            upcast: Ok,
        }
    }

    #[test]
    fn the_variant_list_gives_names_and_versions() {
        assert_eq!(TestEvent::EVENT_TYPES, ["Greeted", "Waved"]);
        assert_eq!(greeted("Hi").event_type(), "Greeted");
        assert_eq!(greeted("Hi").schema_version(), 3);
        assert_eq!(TestEvent::Waved {}.schema_version(), 1);
        assert_eq!(TestEvent::Waved {}.to_payload(), json!({}));
    }

    #[test]
    fn an_event_is_written_and_read_at_its_current_version() {
        let event = greeted("Hi");
        let payload = event.to_payload();
        assert_eq!(
            payload,
            json!({"givenName": "Ada", "familyName": "Lovelace", "greeting": "Hi"})
        );
        let decoded = TestEvent::from_stored("Greeted", 3, payload).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn older_payloads_are_upcast_through_every_step_to_the_current_version() {
        let v1 = json!({"name": "Ada Lovelace"});
        assert_eq!(
            TestEvent::from_stored("Greeted", 1, v1).unwrap(),
            greeted("Hello")
        );
        let v2 = json!({"givenName": "Ada", "familyName": "Lovelace"});
        assert_eq!(
            TestEvent::from_stored("Greeted", 2, v2).unwrap(),
            greeted("Hello")
        );
    }

    #[test]
    fn versions_outside_the_history_are_unsupported() {
        for (event_type, version) in [("Greeted", 0), ("Greeted", 4), ("Waved", 2), ("Waved", -1)] {
            let error = TestEvent::from_stored(event_type, version, json!({})).unwrap_err();
            assert!(
                matches!(&error, DecodeError::UnsupportedSchemaVersion { event_type: t, version: v }
                    if t == event_type && *v == version),
                "{error:?}"
            );
        }
        let error = TestEvent::from_stored("Jumped", 1, json!({})).unwrap_err();
        assert!(matches!(error, DecodeError::UnknownEventType(t) if t == "Jumped"));
    }

    #[test]
    fn a_failing_upcaster_reports_the_step() {
        let error = TestEvent::from_stored("Greeted", 1, json!({"nom": "Ada"})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot upcast Greeted from schema version 1: no name"
        );
        let error = TestEvent::from_stored("Greeted", 2, json!({"givenName": 1})).unwrap_err();
        assert!(matches!(error, DecodeError::Payload(_)), "{error:?}");
    }

    #[test]
    fn a_chain_must_name_known_types_and_start_at_1_without_gaps_or_repeats() {
        let types = ["Greeted", "Waved"];
        assert!(upcasters_are_chained(&[], &types));
        assert!(upcasters_are_chained(TestEvent::UPCASTERS, &types));
        assert!(upcasters_are_chained(
            &[step("Waved", 1), step("Greeted", 1), step("Waved", 2)],
            &types
        ));
        assert!(!upcasters_are_chained(&[step("Greeted", 2)], &types));
        assert!(!upcasters_are_chained(&[step("Greeted", 0)], &types));
        assert!(!upcasters_are_chained(
            &[step("Greeted", 1), step("Greeted", 1)],
            &types
        ));
        assert!(!upcasters_are_chained(&[step("Jumped", 1)], &types));
    }
}
