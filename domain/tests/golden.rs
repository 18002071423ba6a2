//! Golden stored events: for every event type and schema version, a payload as it is stored
//! (`tests/golden/<EventType>.v<version>.json`, written by the code that introduced the
//! version) must decode to the expected event, and an event at its current version must
//! re-encode to exactly that JSON. Changing an event's shape without an upcaster breaks this.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orderflow_domain::order::{OrderEvent, OrderLine};
use orderflow_domain::payment::PaymentEvent;
use orderflow_domain::product::ProductEvent;
use orderflow_domain::user::UserEvent;
use orderflow_domain::{Currency, DomainEvent, Email, Money, Name, Sku};
use serde_json::{Map, Value};
use uuid::Uuid;

const ORDER: Uuid = Uuid::from_u128(0x0190a6c2_1d2e_7f3a_9b4c_5d6e7f8a9b0c);
const USER: Uuid = Uuid::from_u128(0x0190a6c2_0000_7000_8000_000000000001);
const MUG: Uuid = Uuid::from_u128(0x0190a6c2_0000_7000_8000_0000000000aa);

fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::EUR)
}

fn name(input: &str) -> Name {
    Name::parse(input).unwrap()
}

fn user_events() -> Vec<(i16, UserEvent)> {
    vec![
        (
            1,
            UserEvent::UserRegistered {
                name: name("Zoë Lovelace"),
                email: Email::parse("ada.l+shop@mail.example.org").unwrap(),
            },
        ),
        (
            1,
            UserEvent::UserRenamed {
                name: name("Ada King"),
            },
        ),
        (
            1,
            UserEvent::UserEmailChanged {
                email: Email::parse("ada@analytical.engine").unwrap(),
            },
        ),
    ]
}

fn product_events() -> Vec<(i16, ProductEvent)> {
    vec![
        (
            1,
            ProductEvent::ProductCreated {
                sku: Sku::parse("MUG-01_B.2").unwrap(),
                name: name("Coffee mug"),
                price: eur(1299),
                initial_stock: 10,
            },
        ),
        (
            1,
            ProductEvent::PriceChanged {
                previous_price: eur(1299),
                price: eur(999),
            },
        ),
        (1, ProductEvent::Restocked { quantity: 5 }),
        (
            1,
            ProductEvent::StockReserved {
                order_id: ORDER,
                quantity: 4,
            },
        ),
        (
            1,
            ProductEvent::ReservationReleased {
                order_id: ORDER,
                quantity: 4,
            },
        ),
        (
            1,
            ProductEvent::ReservationCommitted {
                order_id: ORDER,
                quantity: 4,
            },
        ),
    ]
}

fn order_events() -> Vec<(i16, OrderEvent)> {
    vec![
        (
            1,
            OrderEvent::OrderCreated {
                user_id: USER,
                currency: Currency::EUR,
            },
        ),
        (
            1,
            OrderEvent::ItemAdded {
                product_id: MUG,
                product_name: "Coffee mug".into(),
                unit_price: eur(1000),
                quantity: 2,
            },
        ),
        (
            1,
            OrderEvent::QuantityUpdated {
                product_id: MUG,
                previous_quantity: 2,
                quantity: 5,
            },
        ),
        (1, OrderEvent::ItemRemoved { product_id: MUG }),
        (
            1,
            OrderEvent::OrderPlaced {
                total: eur(5000),
                lines: vec![OrderLine {
                    product_id: MUG,
                    product_name: "Coffee mug".into(),
                    unit_price: eur(1000),
                    quantity: 5,
                }],
            },
        ),
        (1, OrderEvent::OrderConfirmed {}),
        (
            1,
            OrderEvent::OrderCancelled {
                reason: "changed my mind".into(),
            },
        ),
    ]
}

fn payment_events() -> Vec<(i16, PaymentEvent)> {
    vec![
        (
            1,
            PaymentEvent::PaymentAuthorized {
                order_id: ORDER,
                amount: eur(5000),
                authorization_id: "auth-1".into(),
            },
        ),
        (
            1,
            PaymentEvent::PaymentDeclined {
                order_id: ORDER,
                amount: eur(5000),
                reason: "card expired".into(),
            },
        ),
        (1, PaymentEvent::PaymentCaptured { amount: eur(5000) }),
        (
            1,
            PaymentEvent::PaymentVoided {
                reason: "order cancelled".into(),
            },
        ),
    ]
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn file_name(event_type: &str, version: i16) -> String {
    format!("{event_type}.v{version}.json")
}

/// Objects with their keys sorted, so the comparison does not depend on whether
/// serde_json's `preserve_order` feature happens to be enabled in this build.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut sorted: Vec<_> = fields.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            let fields: Map<_, _> = sorted
                .into_iter()
                .map(|(key, value)| (key.clone(), canonical(value)))
                .collect();
            Value::Object(fields)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn encode(payload: &Value) -> String {
    serde_json::to_string_pretty(&canonical(payload)).unwrap() + "\n"
}

/// Checks every fixture of `E` and returns the file names it covered.
fn check<E: DomainEvent>(cases: Vec<(i16, E)>) -> BTreeSet<String> {
    let mut covered = BTreeSet::new();
    let mut current_types = BTreeSet::new();
    for (version, expected) in cases {
        let event_type = expected.event_type();
        let file = file_name(event_type, version);
        let stored = std::fs::read_to_string(golden_dir().join(&file))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        let payload: Value = serde_json::from_str(&stored).unwrap();
        let decoded = E::from_stored(event_type, version, payload)
            .unwrap_or_else(|error| panic!("{file} does not decode: {error}"));
        assert_eq!(decoded, expected, "{file}");
        if version == expected.schema_version() {
            assert_eq!(encode(&expected.to_payload()), stored, "{file} re-encoded");
            current_types.insert(event_type);
        }
        covered.insert(file);
    }
    let all: BTreeSet<_> = E::EVENT_TYPES.iter().copied().collect();
    assert_eq!(
        current_types, all,
        "every event type has a fixture at its current version"
    );
    covered
}

#[test]
fn every_stored_event_fixture_decodes_and_current_ones_re_encode_byte_identically() {
    let mut covered = check(user_events());
    covered.extend(check(product_events()));
    covered.extend(check(order_events()));
    covered.extend(check(payment_events()));
    let files: BTreeSet<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, covered, "every fixture file is checked");
}
