//! Stored events as the store or a broker might hand them over, damaged: random and mutated
//! payloads, unknown types and schema versions. Decoding (upcasters included) refuses them
//! with an error and never panics.

use orderflow_domain::order::OrderEvent;
use orderflow_domain::payment::PaymentEvent;
use orderflow_domain::product::ProductEvent;
use orderflow_domain::saga::SagaEvent;
use orderflow_domain::user::UserEvent;
use orderflow_domain::DomainEvent;
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9a-f-]{36}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("userId".to_owned()),
                    Just("productId".to_owned()),
                    Just("quantity".to_owned()),
                    Just("currency".to_owned()),
                    Just("amountMinor".to_owned()),
                    Just("price".to_owned()),
                    Just("lines".to_owned()),
                    Just("orderId".to_owned()),
                    "[a-zA-Z]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Decode `payload` as every aggregate's events under each of their types.
fn decode_everywhere(event_type: &str, version: i16, payload: &Value) {
    fn each<E: DomainEvent>(event_type: &str, version: i16, payload: &Value) {
        for known in E::EVENT_TYPES.iter().copied().chain([event_type]) {
            let _ = E::from_stored(known, version, payload.clone());
        }
    }
    each::<OrderEvent>(event_type, version, payload);
    each::<UserEvent>(event_type, version, payload);
    each::<ProductEvent>(event_type, version, payload);
    each::<PaymentEvent>(event_type, version, payload);
    each::<SagaEvent>(event_type, version, payload);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_payloads_types_and_versions_never_panic(
        event_type in ".{0,20}", version in any::<i16>(), payload in json()
    ) {
        decode_everywhere(&event_type, version, &payload);
    }

    /// A real event's payload with one field replaced by anything: an error or an event,
    /// never a panic; unchanged, it decodes back to itself.
    #[test]
    fn mutated_real_payloads_never_panic(field in 0usize..8, value in json(), version in -2i16..4) {
        let event = OrderEvent::OrderCreated {
            user_id: uuid::Uuid::nil(),
            currency: "EUR".parse().unwrap(),
        };
        let payload = event.to_payload();
        prop_assert_eq!(
            OrderEvent::from_stored("OrderCreated", 1, payload.clone()).unwrap(),
            event
        );
        let mut mutated = payload;
        if let Value::Object(map) = &mut mutated {
            let keys: Vec<String> = map.keys().cloned().collect();
            match keys.get(field) {
                Some(key) => { map.insert(key.clone(), value); }
                None => { map.insert(format!("extra{field}"), value); }
            }
        }
        decode_everywhere("OrderCreated", version, &mutated);
    }
}
