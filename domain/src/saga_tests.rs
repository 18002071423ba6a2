use chrono::TimeZone;

use super::*;
use crate::testing::{assert_round_trip, given};
use crate::{Currency, DomainEvent};

const ORDER: Uuid = Uuid::from_u128(1);
const USER: Uuid = Uuid::from_u128(2);
const MUG: Uuid = Uuid::from_u128(10);
const CUP: Uuid = Uuid::from_u128(11);
const PAN: Uuid = Uuid::from_u128(12);
const TIMEOUT_MS: u64 = 30_000;
const MAX_ATTEMPTS: u32 = 3;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::EUR)
}

fn line(product_id: Uuid, quantity: u32) -> SagaLine {
    SagaLine {
        product_id,
        quantity,
    }
}

fn started_with(total: Money, lines: &[SagaLine]) -> SagaEvent {
    SagaEvent::SagaStarted {
        order_id: ORDER,
        user_id: USER,
        total,
        lines: lines.to_vec(),
        step_timeout_ms: TIMEOUT_MS,
        max_attempts: MAX_ATTEMPTS,
        at: t(0),
    }
}

/// Three lines: a mug, two cups and a pan; 50.00 EUR.
fn started() -> SagaEvent {
    started_with(eur(5000), &[line(MUG, 1), line(CUP, 2), line(PAN, 1)])
}

fn reserved(product_id: Uuid, at: i64) -> SagaEvent {
    SagaEvent::SagaLineReserved {
        product_id,
        at: t(at),
    }
}

fn all_reserved() -> Vec<SagaEvent> {
    vec![
        started(),
        reserved(MUG, 1),
        reserved(CUP, 2),
        reserved(PAN, 3),
    ]
}

fn authorized() -> Vec<SagaEvent> {
    let mut history = all_reserved();
    history.push(SagaEvent::SagaPaymentAuthorized {
        authorization_id: "auth-1".into(),
        at: t(4),
    });
    history
}

fn compensating(history: Vec<SagaEvent>, reason: Reason) -> Vec<SagaEvent> {
    let mut history = history;
    history.push(SagaEvent::SagaCompensationStarted {
        reason,
        detail: "because".into(),
        at: t(5),
    });
    history
}

fn saga(history: &[SagaEvent]) -> Saga {
    Saga::from_events(history)
}

fn failed(action: Action, at: i64) -> SagaCommand {
    SagaCommand::ActionFailed {
        action,
        error: "provider unreachable".into(),
        retry_at: t(at + 1),
        at: t(at),
    }
}

#[test]
fn a_started_saga_reserves_all_its_lines_at_once_against_a_deadline() {
    let state = given::<Saga>(vec![])
        .when(SagaCommand::Start {
            order_id: ORDER,
            user_id: USER,
            total: eur(5000),
            lines: vec![line(MUG, 1), line(CUP, 2), line(PAN, 1)],
            step_timeout_ms: TIMEOUT_MS,
            max_attempts: MAX_ATTEMPTS,
            at: t(0),
        })
        .then_expect(vec![started()]);
    assert_eq!(state.status(), SagaStatus::Running);
    assert_eq!(state.step(), Step::Reserve);
    assert_eq!(state.deadline(), Some(t(30)));
    assert!(state.independent());
    assert_eq!(
        state.actions(),
        [
            Action::Reserve {
                product_id: MUG,
                quantity: 1
            },
            Action::Reserve {
                product_id: CUP,
                quantity: 2
            },
            Action::Reserve {
                product_id: PAN,
                quantity: 1
            },
        ]
    );
    let state = saga(&[started(), reserved(MUG, 1)]);
    assert_eq!(
        state.actions(),
        [
            Action::Reserve {
                product_id: CUP,
                quantity: 2
            },
            Action::Reserve {
                product_id: PAN,
                quantity: 1
            },
        ]
    );
}

#[test]
fn the_happy_path_reserves_authorizes_confirms_commits_and_captures() {
    let state = given::<Saga>(vec![started(), reserved(MUG, 1), reserved(CUP, 2)])
        .when(SagaCommand::Reserved {
            product_id: PAN,
            at: t(3),
        })
        .then_expect(vec![reserved(PAN, 3)]);
    assert_eq!(state.step(), Step::Authorize);
    assert_eq!(state.deadline(), Some(t(33)), "a new deadline per step");
    assert_eq!(state.actions(), [Action::Authorize { amount: eur(5000) }]);

    let state = given::<Saga>(all_reserved())
        .when(SagaCommand::Authorized {
            authorization_id: "auth-1".into(),
            at: t(4),
        })
        .then_expect(vec![SagaEvent::SagaPaymentAuthorized {
            authorization_id: "auth-1".into(),
            at: t(4),
        }]);
    assert_eq!(state.step(), Step::Complete);
    assert_eq!(state.deadline(), None, "completing is never given up");
    assert_eq!(state.actions(), [Action::ConfirmOrder {}]);

    let mut history = authorized();
    history.push(SagaEvent::SagaOrderConfirmed { at: t(5) });
    assert_eq!(
        saga(&history).actions(),
        [
            Action::CommitReservation { product_id: MUG },
            Action::CommitReservation { product_id: CUP },
            Action::CommitReservation { product_id: PAN },
            Action::Capture { amount: eur(5000) },
        ]
    );
    for product_id in [MUG, CUP, PAN] {
        history.push(SagaEvent::SagaReservationCommitted {
            product_id,
            at: t(6),
        });
    }
    let state = given::<Saga>(history)
        .when(SagaCommand::Captured { at: t(7) })
        .then_expect(vec![
            SagaEvent::SagaPaymentCaptured { at: t(7) },
            SagaEvent::SagaConfirmed { at: t(7) },
        ]);
    assert_eq!(state.status(), SagaStatus::Confirmed);
    assert_eq!(state.finished_at(), Some(t(7)));
    assert!(state.actions().is_empty());
    let names: Vec<_> = state.steps().iter().map(|s| (s.name, s.status)).collect();
    assert_eq!(
        names,
        [
            (Step::Reserve, StepStatus::Done),
            (Step::Authorize, StepStatus::Done),
            (Step::Complete, StepStatus::Done),
        ]
    );
}

#[test]
fn an_order_that_costs_nothing_skips_the_payment() {
    let history = vec![started_with(eur(0), &[line(MUG, 1)]), reserved(MUG, 1)];
    let state = saga(&history);
    assert_eq!(state.step(), Step::Complete);
    let mut history = history;
    history.push(SagaEvent::SagaOrderConfirmed { at: t(2) });
    given::<Saga>(history)
        .when(SagaCommand::ReservationCommitted {
            product_id: MUG,
            at: t(3),
        })
        .then_expect(vec![
            SagaEvent::SagaReservationCommitted {
                product_id: MUG,
                at: t(3),
            },
            SagaEvent::SagaConfirmed { at: t(3) },
        ]);
}

#[test]
fn out_of_stock_on_the_second_line_releases_the_first_and_cancels_the_order() {
    let state = given::<Saga>(vec![started(), reserved(MUG, 1)])
        .when(SagaCommand::OutOfStock {
            product_id: CUP,
            detail: "only 1 in stock, 2 requested".into(),
            at: t(2),
        })
        .then_expect(vec![SagaEvent::SagaCompensationStarted {
            reason: Reason::OutOfStock,
            detail: "only 1 in stock, 2 requested".into(),
            at: t(2),
        }]);
    assert_eq!(state.status(), SagaStatus::Compensating);
    assert_eq!(
        state.actions(),
        [
            Action::Release { product_id: PAN },
            Action::Release { product_id: CUP },
            Action::Release { product_id: MUG },
            Action::CancelOrder {
                reason: Reason::OutOfStock
            },
        ],
        "lines not recorded as reserved may have been; nothing was authorized"
    );
    assert!(!state.independent(), "compensation runs in reverse order");
    let history = vec![
        started(),
        reserved(MUG, 1),
        SagaEvent::SagaCompensationStarted {
            reason: Reason::OutOfStock,
            detail: "x".into(),
            at: t(2),
        },
        SagaEvent::SagaLineReleased {
            product_id: PAN,
            at: t(3),
        },
        SagaEvent::SagaLineReleased {
            product_id: CUP,
            at: t(3),
        },
        SagaEvent::SagaLineReleased {
            product_id: MUG,
            at: t(3),
        },
    ];
    let state = given::<Saga>(history)
        .when(SagaCommand::OrderCancelled { at: t(4) })
        .then_expect(vec![
            SagaEvent::SagaOrderCancelled { at: t(4) },
            SagaEvent::SagaCancelled {
                reason: Reason::OutOfStock,
                at: t(4),
            },
        ]);
    assert_eq!(state.status(), SagaStatus::Cancelled);
    assert_eq!(state.reason(), Some(Reason::OutOfStock));
    let steps: Vec<_> = state.steps().iter().map(|s| (s.name, s.status)).collect();
    assert_eq!(
        steps,
        [
            (Step::Reserve, StepStatus::Failed),
            (Step::Compensate, StepStatus::Done)
        ]
    );
}

#[test]
fn a_declined_payment_releases_every_line_in_reverse_and_voids_nothing() {
    let state = given::<Saga>(all_reserved())
        .when(SagaCommand::Declined {
            detail: "insufficient funds".into(),
            at: t(4),
        })
        .then_expect(vec![SagaEvent::SagaCompensationStarted {
            reason: Reason::PaymentDeclined,
            detail: "insufficient funds".into(),
            at: t(4),
        }]);
    assert_eq!(
        state.actions(),
        [
            Action::Release { product_id: PAN },
            Action::Release { product_id: CUP },
            Action::Release { product_id: MUG },
            Action::CancelOrder {
                reason: Reason::PaymentDeclined
            },
        ]
    );
}

#[test]
fn a_missed_authorize_deadline_voids_whatever_the_call_may_have_authorized() {
    let state = given::<Saga>(all_reserved())
        .when(SagaCommand::DeadlinePassed {
            step: Step::Authorize,
            at: t(40),
        })
        .then_expect(vec![SagaEvent::SagaCompensationStarted {
            reason: Reason::Timeout,
            detail: "the authorize step missed its deadline".into(),
            at: t(40),
        }]);
    assert_eq!(state.actions()[0], Action::Void {});
    assert_eq!(state.reason(), Some(Reason::Timeout));
}

#[test]
fn a_provider_that_kept_failing_until_the_deadline_is_payment_unavailable() {
    let mut history = all_reserved();
    history.push(SagaEvent::SagaAttemptFailed {
        action: Action::Authorize { amount: eur(5000) },
        error: "circuit open".into(),
        retry_at: t(10),
        at: t(9),
    });
    let state = given::<Saga>(history)
        .when(SagaCommand::DeadlinePassed {
            step: Step::Authorize,
            at: t(40),
        })
        .then_expect(vec![SagaEvent::SagaCompensationStarted {
            reason: Reason::PaymentUnavailable,
            detail: "the payment provider kept failing: circuit open".into(),
            at: t(40),
        }]);
    assert_eq!(state.reason(), Some(Reason::PaymentUnavailable));
}

#[test]
fn a_missed_reserve_deadline_releases_every_line_that_was_in_flight() {
    let state = given::<Saga>(vec![started(), reserved(MUG, 1)])
        .when(SagaCommand::DeadlinePassed {
            step: Step::Reserve,
            at: t(31),
        })
        .then_expect(vec![SagaEvent::SagaCompensationStarted {
            reason: Reason::Timeout,
            detail: "the reserve step missed its deadline".into(),
            at: t(31),
        }]);
    assert_eq!(
        state.actions(),
        [
            Action::Release { product_id: PAN },
            Action::Release { product_id: CUP },
            Action::Release { product_id: MUG },
            Action::CancelOrder {
                reason: Reason::Timeout
            },
        ]
    );
}

#[test]
fn a_deadline_that_is_not_due_or_of_another_step_is_recorded_and_ignored() {
    let early = given::<Saga>(vec![started()])
        .when(SagaCommand::DeadlinePassed {
            step: Step::Reserve,
            at: t(29),
        })
        .then_expect(vec![SagaEvent::SagaInputIgnored {
            input: "DeadlinePassed".into(),
            detail: "no deadline of reserve is due".into(),
            at: t(29),
        }]);
    assert_eq!(early.status(), SagaStatus::Running);
    assert_eq!(early.ignored(), 1);
    let stale = given::<Saga>(authorized())
        .when(SagaCommand::DeadlinePassed {
            step: Step::Authorize,
            at: t(100),
        })
        .then_expect(vec![SagaEvent::SagaInputIgnored {
            input: "DeadlinePassed".into(),
            detail: "no deadline of authorize is due".into(),
            at: t(100),
        }]);
    assert_eq!(stale.step(), Step::Complete);
}

#[test]
fn a_user_cancelling_mid_saga_compensates_what_was_done_without_cancelling_again() {
    let state = given::<Saga>(authorized())
        .when(SagaCommand::CancelledByUser { at: t(5) })
        .then_expect(vec![SagaEvent::SagaCompensationStarted {
            reason: Reason::CancelledByUser,
            detail: "the order was cancelled".into(),
            at: t(5),
        }]);
    assert_eq!(
        state.actions(),
        [
            Action::Void {},
            Action::Release { product_id: PAN },
            Action::Release { product_id: CUP },
            Action::Release { product_id: MUG },
        ],
        "the order is already cancelled"
    );
    let mut history = compensating(authorized(), Reason::CancelledByUser);
    history.push(SagaEvent::SagaPaymentVoided { at: t(6) });
    history.push(SagaEvent::SagaLineReleased {
        product_id: PAN,
        at: t(6),
    });
    history.push(SagaEvent::SagaLineReleased {
        product_id: CUP,
        at: t(6),
    });
    let state = given::<Saga>(history)
        .when(SagaCommand::Released {
            product_id: MUG,
            at: t(7),
        })
        .then_expect(vec![
            SagaEvent::SagaLineReleased {
                product_id: MUG,
                at: t(7),
            },
            SagaEvent::SagaCancelled {
                reason: Reason::CancelledByUser,
                at: t(7),
            },
        ]);
    assert_eq!(state.status(), SagaStatus::Cancelled);
}

#[test]
fn a_cancellation_after_the_order_was_confirmed_is_too_late() {
    let mut history = authorized();
    history.push(SagaEvent::SagaOrderConfirmed { at: t(5) });
    let state = given::<Saga>(history)
        .when(SagaCommand::CancelledByUser { at: t(6) })
        .then_expect(vec![SagaEvent::SagaInputIgnored {
            input: "CancelledByUser".into(),
            detail: "too late to cancel".into(),
            at: t(6),
        }]);
    assert_eq!(state.status(), SagaStatus::Running);
}

#[test]
fn a_compensation_that_fails_is_retried_and_then_succeeds() {
    let history = compensating(authorized(), Reason::PaymentDeclined);
    let state = given::<Saga>(history.clone())
        .when(failed(Action::Void {}, 6))
        .then_expect(vec![SagaEvent::SagaAttemptFailed {
            action: Action::Void {},
            error: "provider unreachable".into(),
            retry_at: t(7),
            at: t(6),
        }]);
    assert_eq!(state.attempts(), 1);
    assert_eq!(state.retry_at(), Some(t(7)));
    assert_eq!(state.actions()[0], Action::Void {}, "still to do");
    let mut history = history;
    history.push(SagaEvent::SagaAttemptFailed {
        action: Action::Void {},
        error: "x".into(),
        retry_at: t(7),
        at: t(6),
    });
    let state = given::<Saga>(history)
        .when(SagaCommand::Voided { at: t(8) })
        .then_expect(vec![SagaEvent::SagaPaymentVoided { at: t(8) }]);
    assert_eq!(state.attempts(), 0, "progress resets the count");
    assert_eq!(state.retry_at(), None);
}

#[test]
fn a_compensation_that_keeps_failing_parks_the_saga_until_resumed() {
    let mut history = compensating(authorized(), Reason::PaymentDeclined);
    for attempt in 1..MAX_ATTEMPTS {
        history.push(SagaEvent::SagaAttemptFailed {
            action: Action::Void {},
            error: "down".into(),
            retry_at: t(10),
            at: t(9),
        });
        assert_eq!(saga(&history).attempts(), attempt);
    }
    let state = given::<Saga>(history.clone())
        .when(failed(Action::Void {}, 20))
        .then_expect(vec![
            SagaEvent::SagaAttemptFailed {
                action: Action::Void {},
                error: "provider unreachable".into(),
                retry_at: t(21),
                at: t(20),
            },
            SagaEvent::SagaStuck {
                error: "void failed 3 times: provider unreachable".into(),
                at: t(20),
            },
        ]);
    assert_eq!(state.status(), SagaStatus::Stuck);
    assert!(state.actions().is_empty(), "nothing runs until resumed");
    assert_eq!(state.steps().last().unwrap().status, StepStatus::Stuck);

    let mut stuck = history;
    stuck.push(SagaEvent::SagaAttemptFailed {
        action: Action::Void {},
        error: "x".into(),
        retry_at: t(21),
        at: t(20),
    });
    stuck.push(SagaEvent::SagaStuck {
        error: "x".into(),
        at: t(20),
    });
    given::<Saga>(stuck.clone())
        .when(SagaCommand::Voided { at: t(21) })
        .then_expect(vec![SagaEvent::SagaInputIgnored {
            input: "Voided".into(),
            detail: "not voiding".into(),
            at: t(21),
        }]);
    let state = given::<Saga>(stuck)
        .when(SagaCommand::Resume { at: t(30) })
        .then_expect(vec![SagaEvent::SagaResumed { at: t(30) }]);
    assert_eq!(state.status(), SagaStatus::Compensating);
    assert_eq!(state.attempts(), 0);
    assert_eq!(state.actions()[0], Action::Void {});
}

#[test]
fn completing_counts_failures_too_and_only_forward_steps_have_deadlines() {
    let mut history = authorized();
    history.push(SagaEvent::SagaOrderConfirmed { at: t(5) });
    for _ in 1..MAX_ATTEMPTS {
        history.push(SagaEvent::SagaAttemptFailed {
            action: Action::CommitReservation { product_id: MUG },
            error: "db down".into(),
            retry_at: t(6),
            at: t(5),
        });
    }
    let state = saga(&history);
    assert_eq!(state.status(), SagaStatus::Running);
    let state = given::<Saga>(history)
        .when(failed(Action::CommitReservation { product_id: MUG }, 7))
        .then_expect(vec![
            SagaEvent::SagaAttemptFailed {
                action: Action::CommitReservation { product_id: MUG },
                error: "provider unreachable".into(),
                retry_at: t(8),
                at: t(7),
            },
            SagaEvent::SagaStuck {
                error: "commit_reservation failed 3 times: provider unreachable".into(),
                at: t(7),
            },
        ]);
    assert_eq!(state.status(), SagaStatus::Stuck);

    let mut history = all_reserved();
    for _ in 0..10 {
        history.push(SagaEvent::SagaAttemptFailed {
            action: Action::Authorize { amount: eur(5000) },
            error: "503".into(),
            retry_at: t(6),
            at: t(5),
        });
    }
    assert_eq!(
        saga(&history).status(),
        SagaStatus::Running,
        "authorize retries until its deadline, however often"
    );
}

#[test]
fn late_and_duplicate_inputs_are_recorded_and_never_applied_to_the_current_step() {
    let ignored = |input: &str, detail: &str, at: i64| {
        vec![SagaEvent::SagaInputIgnored {
            input: input.into(),
            detail: detail.into(),
            at: t(at),
        }]
    };
    given::<Saga>(vec![started(), reserved(MUG, 1)])
        .when(SagaCommand::Reserved {
            product_id: MUG,
            at: t(2),
        })
        .then_expect(ignored("Reserved", "not waiting for this reservation", 2));
    given::<Saga>(vec![started()])
        .when(SagaCommand::Authorized {
            authorization_id: "early".into(),
            at: t(2),
        })
        .then_expect(ignored("Authorized", "not waiting for an authorization", 2));
    given::<Saga>(all_reserved())
        .when(SagaCommand::OutOfStock {
            product_id: MUG,
            detail: "late".into(),
            at: t(5),
        })
        .then_expect(ignored("OutOfStock", "not reserving this line", 5));
    given::<Saga>(vec![started(), reserved(MUG, 1)])
        .when(SagaCommand::OutOfStock {
            product_id: MUG,
            detail: "late".into(),
            at: t(2),
        })
        .then_expect(ignored("OutOfStock", "not reserving this line", 2));
    given::<Saga>(authorized())
        .when(SagaCommand::Declined {
            detail: "late".into(),
            at: t(5),
        })
        .then_expect(ignored("Declined", "not authorizing", 5));
    given::<Saga>(all_reserved())
        .when(failed(
            Action::Reserve {
                product_id: MUG,
                quantity: 1,
            },
            5,
        ))
        .then_expect(ignored(
            "ActionFailed",
            "the action is no longer pending",
            5,
        ));
    let mut finished = compensating(all_reserved(), Reason::PaymentDeclined);
    for product_id in [PAN, CUP, MUG] {
        finished.push(SagaEvent::SagaLineReleased {
            product_id,
            at: t(6),
        });
    }
    finished.push(SagaEvent::SagaOrderCancelled { at: t(6) });
    finished.push(SagaEvent::SagaCancelled {
        reason: Reason::PaymentDeclined,
        at: t(6),
    });
    let state = given::<Saga>(finished.clone())
        .when(SagaCommand::Authorized {
            authorization_id: "late".into(),
            at: t(9),
        })
        .then_expect(ignored("Authorized", "the saga is CANCELLED", 9));
    assert_eq!(state.status(), SagaStatus::Cancelled);
    assert_eq!(state.authorization_id(), None);
    given::<Saga>(finished)
        .when(SagaCommand::CancelledByUser { at: t(9) })
        .then_expect(ignored("CancelledByUser", "the saga is CANCELLED", 9));
    given::<Saga>(vec![started()])
        .when(SagaCommand::Start {
            order_id: ORDER,
            user_id: USER,
            total: eur(1),
            lines: vec![line(MUG, 1)],
            step_timeout_ms: 1,
            max_attempts: 1,
            at: t(1),
        })
        .then_expect(ignored("Start", "the saga has already started", 1));
}

#[test]
fn an_authorization_that_lands_after_compensation_began_is_recorded_and_voided() {
    let history = compensating(all_reserved(), Reason::Timeout);
    let before = saga(&history);
    assert_eq!(
        before.actions()[0],
        Action::Void {},
        "voided by key, in doubt"
    );
    let state = given::<Saga>(history)
        .when(SagaCommand::Authorized {
            authorization_id: "auth-late".into(),
            at: t(6),
        })
        .then_expect(vec![SagaEvent::SagaPaymentAuthorized {
            authorization_id: "auth-late".into(),
            at: t(6),
        }]);
    assert_eq!(state.status(), SagaStatus::Compensating);
    assert_eq!(state.authorization_id(), Some("auth-late"));
    assert_eq!(state.actions()[0], Action::Void {});
}

#[test]
fn inputs_before_the_start_and_resumes_of_a_healthy_saga_are_refused() {
    given::<Saga>(vec![])
        .when(SagaCommand::Reserved {
            product_id: MUG,
            at: t(1),
        })
        .then_error("NOT_FOUND");
    given::<Saga>(vec![started()])
        .when(SagaCommand::Resume { at: t(1) })
        .then_error("SAGA_NOT_STUCK");
    given::<Saga>(vec![])
        .when(SagaCommand::Start {
            order_id: ORDER,
            user_id: USER,
            total: eur(1),
            lines: vec![],
            step_timeout_ms: 1,
            max_attempts: 1,
            at: t(0),
        })
        .then_error("ORDER_EMPTY");
}

#[test]
fn action_keys_are_deterministic_per_saga_and_distinct_per_action() {
    let id = saga_id(ORDER);
    assert_eq!(id, saga_id(ORDER));
    assert_ne!(id, saga_id(USER));
    assert_ne!(id, payment_id(ORDER));
    let actions = [
        Action::Reserve {
            product_id: MUG,
            quantity: 1,
        },
        Action::Reserve {
            product_id: CUP,
            quantity: 1,
        },
        Action::Authorize { amount: eur(1) },
        Action::ConfirmOrder {},
        Action::CommitReservation { product_id: MUG },
        Action::Capture { amount: eur(1) },
        Action::Void {},
        Action::Release { product_id: MUG },
        Action::CancelOrder {
            reason: Reason::Timeout,
        },
    ];
    let keys: BTreeSet<String> = actions.iter().map(|action| action.key(id)).collect();
    assert_eq!(keys.len(), actions.len());
    assert_eq!(
        Action::Void {}.key(id),
        format!("saga:{id}:void"),
        "the same key on every attempt"
    );
}

#[test]
fn every_saga_event_survives_storage() {
    let events = vec![
        started(),
        reserved(MUG, 1),
        SagaEvent::SagaPaymentAuthorized {
            authorization_id: "a".into(),
            at: t(1),
        },
        SagaEvent::SagaOrderConfirmed { at: t(1) },
        SagaEvent::SagaReservationCommitted {
            product_id: MUG,
            at: t(1),
        },
        SagaEvent::SagaPaymentCaptured { at: t(1) },
        SagaEvent::SagaConfirmed { at: t(1) },
        SagaEvent::SagaCompensationStarted {
            reason: Reason::OutOfStock,
            detail: "d".into(),
            at: t(1),
        },
        SagaEvent::SagaPaymentVoided { at: t(1) },
        SagaEvent::SagaLineReleased {
            product_id: MUG,
            at: t(1),
        },
        SagaEvent::SagaOrderCancelled { at: t(1) },
        SagaEvent::SagaCancelled {
            reason: Reason::Timeout,
            at: t(1),
        },
        SagaEvent::SagaAttemptFailed {
            action: Action::Release { product_id: MUG },
            error: "e".into(),
            retry_at: t(2),
            at: t(1),
        },
        SagaEvent::SagaStuck {
            error: "e".into(),
            at: t(1),
        },
        SagaEvent::SagaResumed { at: t(1) },
        SagaEvent::SagaInputIgnored {
            input: "Voided".into(),
            detail: "d".into(),
            at: t(1),
        },
    ];
    assert_round_trip(&events, SagaEvent::EVENT_TYPES);
    assert_eq!(
        serde_json::to_value(Reason::PaymentUnavailable).unwrap(),
        "payment_unavailable"
    );
    assert_eq!(serde_json::to_value(SagaStatus::Stuck).unwrap(), "STUCK");
    assert_eq!(SagaStatus::parse("stuck"), Some(SagaStatus::Stuck));
    for reason in Reason::ALL {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            reason.as_str(),
            "one spelling"
        );
    }
}
