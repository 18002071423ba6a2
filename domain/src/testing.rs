//! Given / when / then for aggregates: a history of events, one command, and the events
//! or the error code it must produce.

use crate::{Aggregate, DomainError, DomainEvent};

/// Start from the state these events build.
pub(crate) fn given<A: Aggregate>(history: Vec<A::Event>) -> Given<A> {
    Given {
        state: A::from_events(&history),
    }
}

pub(crate) struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    pub(crate) fn when(self, command: A::Command) -> Then<A> {
        let outcome = self.state.handle(command);
        Then {
            state: self.state,
            outcome,
        }
    }

    /// A command parsed from raw input: a parse error is the outcome without the aggregate
    /// deciding anything, as when the HTTP layer refuses the request body.
    pub(crate) fn when_parsed(self, command: Result<A::Command, DomainError>) -> Then<A> {
        match command {
            Ok(command) => self.when(command),
            Err(error) => Then {
                state: self.state,
                outcome: Err(error),
            },
        }
    }
}

pub(crate) struct Then<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the decision and returns the state after it, for checks on accessors.
    #[track_caller]
    pub(crate) fn then_expect(self, expected: Vec<A::Event>) -> A {
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected);
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => panic!("expected {expected:?}, got {} ({error})", error.code()),
        }
    }

    #[track_caller]
    pub(crate) fn then_error(self, code: &str) {
        match self.outcome {
            Err(error) => assert_eq!(error.code(), code, "{error}"),
            Ok(events) => panic!("expected error {code}, got {events:?}"),
        }
    }
}

/// Every event survives storage unchanged, and the names in `expected_types` (one per
/// event, in order) are the ones written to the store.
#[track_caller]
pub(crate) fn assert_round_trip<E: DomainEvent>(events: &[E], expected_types: &[&str]) {
    let types: Vec<_> = events.iter().map(E::event_type).collect();
    assert_eq!(types, expected_types);
    for event in events {
        let payload = event.to_payload();
        assert!(payload.is_object(), "{payload}");
        assert!(payload.get("type").is_none(), "{payload}");
        let decoded = E::from_stored(event.event_type(), event.schema_version(), payload);
        assert_eq!(decoded.as_ref().ok(), Some(event), "{decoded:?}");
    }
}
