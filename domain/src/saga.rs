//! The fulfilment saga: what happens to an order once it is placed, as a pure state machine.
//!
//! Steps, in order: reserve stock for every line (all lines at once, all or nothing),
//! authorize the total with the payment provider, then complete (confirm the order, commit
//! the reservations, capture the payment). A business refusal, a user's cancellation or a
//! missed deadline compensates in reverse: void the authorization, release the
//! reservations, cancel the order with a [`Reason`].
//!
//! The saga is an aggregate (stream type `saga`, id [`saga_id`]): its inputs are commands,
//! its transitions are events. [`Saga::actions`] says what must be done next in the current
//! state; the orchestrator does it and feeds the result back as the next input. Because the
//! actions follow from the state alone, a restarted orchestrator redoes exactly what was not
//! yet recorded, and each action's [`Action::key`] makes doing it twice harmless.
//!
//! Failure classes: a business refusal (out of stock, declined) compensates at once; a
//! transient failure of a forward step (reserve, authorize) is retried until the step's
//! deadline, which then compensates (`timeout`, or `payment_unavailable` when the provider
//! kept failing); completing and compensating never give up on their own: each failure is
//! counted, and at `max_attempts` the saga is parked as [`SagaStatus::Stuck`] until an
//! operator resumes it.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{domain_event, Aggregate};
use crate::{DomainError, Money};

const SAGA_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_772d_7361_6761_0001);
const PAYMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_772d_7061_796d_0001);

/// The saga stream of an order: derived, so every instance finds the same one.
pub fn saga_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&SAGA_NAMESPACE, order_id.as_bytes())
}

/// The payment stream of an order.
pub fn payment_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&PAYMENT_NAMESPACE, order_id.as_bytes())
}

/// The key of the saga's authorize call, which capture and void refer to.
pub fn authorize_key(saga_id: Uuid) -> String {
    format!("saga:{saga_id}:authorize")
}

/// Why a saga cancelled its order; also the order's cancellation reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    OutOfStock,
    PaymentDeclined,
    PaymentUnavailable,
    Timeout,
    CancelledByUser,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Self::OutOfStock,
        Self::PaymentDeclined,
        Self::PaymentUnavailable,
        Self::Timeout,
        Self::CancelledByUser,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentUnavailable => "payment_unavailable",
            Self::Timeout => "timeout",
            Self::CancelledByUser => "cancelled_by_user",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a saga is. `Confirmed` and `Cancelled` are final; `Stuck` waits for an operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    #[default]
    Running,
    Compensating,
    Confirmed,
    Cancelled,
    Stuck,
}

impl SagaStatus {
    pub const ALL: [SagaStatus; 5] = [
        Self::Running,
        Self::Compensating,
        Self::Confirmed,
        Self::Cancelled,
        Self::Stuck,
    ];

    /// As stored in `sagas.state` and shown everywhere.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Compensating => "COMPENSATING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Stuck => "STUCK",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(input.trim()))
    }

    pub const fn is_final(self) -> bool {
        matches!(self, Self::Confirmed | Self::Cancelled)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The saga's steps, in the order they run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    #[default]
    Reserve,
    Authorize,
    Complete,
    Compensate,
}

impl Step {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Authorize => "authorize",
            Self::Complete => "complete",
            Self::Compensate => "compensate",
        }
    }

    /// Reserve and authorize run against a deadline; completing and compensating cannot be
    /// given up (the order is confirmed, or effects must be undone), so they count attempts.
    pub const fn has_deadline(self) -> bool {
        matches!(self, Self::Reserve | Self::Authorize)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step went, for the step list operators read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Running,
    Done,
    Failed,
    Stuck,
}

/// One step's record: when it ran, how often it failed, and why it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub name: Step,
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
}

/// One line to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaLine {
    pub product_id: Uuid,
    pub quantity: u32,
}

/// Something the orchestrator must do; its result is the saga's next input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Action {
    Reserve {
        product_id: Uuid,
        quantity: u32,
    },
    Authorize {
        amount: Money,
    },
    ConfirmOrder {},
    CommitReservation {
        product_id: Uuid,
    },
    Capture {
        amount: Money,
    },
    /// Voids whatever the authorize call (by its key) may have authorized, known or not.
    Void {},
    Release {
        product_id: Uuid,
    },
    CancelOrder {
        reason: Reason,
    },
}

impl Action {
    /// The command id / idempotency key of this action for `saga_id`. Each action is taken
    /// at most once per saga, so retries, redeliveries and restarts send the same key and
    /// the store or the provider answers them with the first result.
    pub fn key(&self, saga_id: Uuid) -> String {
        match self {
            Self::Reserve { product_id, .. } => format!("saga:{saga_id}:reserve:{product_id}"),
            Self::Authorize { .. } => authorize_key(saga_id),
            Self::ConfirmOrder {} => format!("saga:{saga_id}:confirm"),
            Self::CommitReservation { product_id } => {
                format!("saga:{saga_id}:commit:{product_id}")
            }
            Self::Capture { .. } => format!("saga:{saga_id}:capture"),
            Self::Void {} => format!("saga:{saga_id}:void"),
            Self::Release { product_id } => format!("saga:{saga_id}:release:{product_id}"),
            Self::CancelOrder { .. } => format!("saga:{saga_id}:cancel"),
        }
    }

    /// Short name for logs and events.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Reserve { .. } => "reserve",
            Self::Authorize { .. } => "authorize",
            Self::ConfirmOrder {} => "confirm_order",
            Self::CommitReservation { .. } => "commit_reservation",
            Self::Capture { .. } => "capture",
            Self::Void {} => "void",
            Self::Release { .. } => "release",
            Self::CancelOrder { .. } => "cancel_order",
        }
    }
}

/// The saga's inputs: its start, the results of its actions, a user's cancellation, a
/// deadline, and an operator's resume. Every input says when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaCommand {
    Start {
        order_id: Uuid,
        user_id: Uuid,
        total: Money,
        lines: Vec<SagaLine>,
        step_timeout_ms: u64,
        max_attempts: u32,
        at: DateTime<Utc>,
    },
    Reserved {
        product_id: Uuid,
        at: DateTime<Utc>,
    },
    OutOfStock {
        product_id: Uuid,
        detail: String,
        at: DateTime<Utc>,
    },
    Authorized {
        authorization_id: String,
        at: DateTime<Utc>,
    },
    Declined {
        detail: String,
        at: DateTime<Utc>,
    },
    OrderConfirmed {
        at: DateTime<Utc>,
    },
    ReservationCommitted {
        product_id: Uuid,
        at: DateTime<Utc>,
    },
    Captured {
        at: DateTime<Utc>,
    },
    Voided {
        at: DateTime<Utc>,
    },
    Released {
        product_id: Uuid,
        at: DateTime<Utc>,
    },
    OrderCancelled {
        at: DateTime<Utc>,
    },
    /// The user cancelled the order while the saga ran.
    CancelledByUser {
        at: DateTime<Utc>,
    },
    /// `action` failed in a way worth retrying at `retry_at`.
    ActionFailed {
        action: Action,
        error: String,
        retry_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The deadline of `step` was seen to have passed at `at`.
    DeadlinePassed {
        step: Step,
        at: DateTime<Utc>,
    },
    /// An operator resumes a stuck saga.
    Resume {
        at: DateTime<Utc>,
    },
}

impl SagaCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Start { .. } => "Start",
            Self::Reserved { .. } => "Reserved",
            Self::OutOfStock { .. } => "OutOfStock",
            Self::Authorized { .. } => "Authorized",
            Self::Declined { .. } => "Declined",
            Self::OrderConfirmed { .. } => "OrderConfirmed",
            Self::ReservationCommitted { .. } => "ReservationCommitted",
            Self::Captured { .. } => "Captured",
            Self::Voided { .. } => "Voided",
            Self::Released { .. } => "Released",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::CancelledByUser { .. } => "CancelledByUser",
            Self::ActionFailed { .. } => "ActionFailed",
            Self::DeadlinePassed { .. } => "DeadlinePassed",
            Self::Resume { .. } => "Resume",
        }
    }

    fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Start { at, .. }
            | Self::Reserved { at, .. }
            | Self::OutOfStock { at, .. }
            | Self::Authorized { at, .. }
            | Self::Declined { at, .. }
            | Self::OrderConfirmed { at }
            | Self::ReservationCommitted { at, .. }
            | Self::Captured { at }
            | Self::Voided { at }
            | Self::Released { at, .. }
            | Self::OrderCancelled { at }
            | Self::CancelledByUser { at }
            | Self::ActionFailed { at, .. }
            | Self::DeadlinePassed { at, .. }
            | Self::Resume { at } => *at,
        }
    }
}

domain_event! {
    /// Every transition of a saga; prefixed so a merged timeline reads unambiguously.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum SagaEvent {
        SagaStarted {
            order_id: Uuid,
            user_id: Uuid,
            total: Money,
            lines: Vec<SagaLine>,
            step_timeout_ms: u64,
            max_attempts: u32,
            at: DateTime<Utc>,
        },
        SagaLineReserved {
            product_id: Uuid,
            at: DateTime<Utc>,
        },
        SagaPaymentAuthorized {
            authorization_id: String,
            at: DateTime<Utc>,
        },
        SagaOrderConfirmed {
            at: DateTime<Utc>,
        },
        SagaReservationCommitted {
            product_id: Uuid,
            at: DateTime<Utc>,
        },
        SagaPaymentCaptured {
            at: DateTime<Utc>,
        },
        SagaConfirmed {
            at: DateTime<Utc>,
        },
        SagaCompensationStarted {
            reason: Reason,
            detail: String,
            at: DateTime<Utc>,
        },
        SagaPaymentVoided {
            at: DateTime<Utc>,
        },
        SagaLineReleased {
            product_id: Uuid,
            at: DateTime<Utc>,
        },
        SagaOrderCancelled {
            at: DateTime<Utc>,
        },
        SagaCancelled {
            reason: Reason,
            at: DateTime<Utc>,
        },
        SagaAttemptFailed {
            action: Action,
            error: String,
            retry_at: DateTime<Utc>,
            at: DateTime<Utc>,
        },
        SagaStuck {
            error: String,
            at: DateTime<Utc>,
        },
        SagaResumed {
            at: DateTime<Utc>,
        },
        /// A late or duplicate input, recorded so its arrival is visible, and not applied.
        SagaInputIgnored {
            input: String,
            detail: String,
            at: DateTime<Utc>,
        },
    }
}

/// What the saga was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub total: Money,
    pub lines: Vec<SagaLine>,
    pub step_timeout: Duration,
    pub max_attempts: u32,
}

/// A saga's state; empty until started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saga {
    plan: Option<Plan>,
    status: SagaStatus,
    step: Step,
    reason: Option<Reason>,
    /// The last failure, or why the saga compensates or is stuck.
    detail: Option<String>,
    attempts: u32,
    deadline: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    reserved: BTreeSet<Uuid>,
    /// Lines whose reservation may have happened without being recorded.
    reserve_in_doubt: BTreeSet<Uuid>,
    authorization_id: Option<String>,
    /// The authorize call may have succeeded without the answer being recorded.
    authorize_in_doubt: bool,
    order_confirmed: bool,
    committed: BTreeSet<Uuid>,
    captured: bool,
    voided: bool,
    released: BTreeSet<Uuid>,
    order_cancelled: bool,
    steps: Vec<StepRecord>,
    ignored: u32,
}

impl Saga {
    pub fn exists(&self) -> bool {
        self.plan.is_some()
    }

    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    pub fn status(&self) -> SagaStatus {
        self.status
    }

    pub fn step(&self) -> Step {
        self.step
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Failures of the current step since it last made progress.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the current step gives up; only reserve and authorize have one.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline
    }

    /// When a failed action is due to be tried again.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        self.retry_at
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.finished_at
    }

    pub fn steps(&self) -> &[StepRecord] {
        &self.steps
    }

    pub fn authorization_id(&self) -> Option<&str> {
        self.authorization_id.as_deref()
    }

    /// Whether a user's cancellation still stops the saga: running, order not yet confirmed.
    pub fn cancellable(&self) -> bool {
        self.status == SagaStatus::Running && (self.step.has_deadline() || !self.order_confirmed)
    }

    /// Inputs recorded as late or duplicate.
    pub fn ignored(&self) -> u32 {
        self.ignored
    }

    /// What must be done next, in order; empty when the saga waits for nothing it can do
    /// (not started, finished, or stuck). [`Saga::independent`] says whether they may run
    /// at once.
    pub fn actions(&self) -> Vec<Action> {
        let Some(plan) = &self.plan else {
            return Vec::new();
        };
        match (self.status, self.step) {
            (SagaStatus::Running, Step::Reserve) => plan
                .lines
                .iter()
                .filter(|line| !self.reserved.contains(&line.product_id))
                .map(|line| Action::Reserve {
                    product_id: line.product_id,
                    quantity: line.quantity,
                })
                .collect(),
            (SagaStatus::Running, Step::Authorize) => {
                vec![Action::Authorize { amount: plan.total }]
            }
            (SagaStatus::Running, Step::Complete) => {
                if !self.order_confirmed {
                    return vec![Action::ConfirmOrder {}];
                }
                let mut actions: Vec<Action> = plan
                    .lines
                    .iter()
                    .filter(|line| !self.committed.contains(&line.product_id))
                    .map(|line| Action::CommitReservation {
                        product_id: line.product_id,
                    })
                    .collect();
                if self.authorization_id.is_some() && !self.captured {
                    actions.push(Action::Capture { amount: plan.total });
                }
                actions
            }
            (SagaStatus::Compensating, _) => {
                let mut actions = Vec::new();
                if (self.authorization_id.is_some() || self.authorize_in_doubt) && !self.voided {
                    actions.push(Action::Void {});
                }
                for line in plan.lines.iter().rev() {
                    let held = self.reserved.contains(&line.product_id)
                        || self.reserve_in_doubt.contains(&line.product_id);
                    if held && !self.released.contains(&line.product_id) {
                        actions.push(Action::Release {
                            product_id: line.product_id,
                        });
                    }
                }
                if !self.order_cancelled {
                    let reason = self.reason.unwrap_or(Reason::Timeout);
                    actions.push(Action::CancelOrder { reason });
                }
                actions
            }
            _ => Vec::new(),
        }
    }

    /// Whether the pending actions may run at the same time (their results fed together):
    /// the reservations of every line, and, once the order is confirmed, the commits and
    /// the capture. Everything else (confirming, compensating in reverse) runs in order.
    pub fn independent(&self) -> bool {
        self.status == SagaStatus::Running
            && (self.step == Step::Reserve || (self.step == Step::Complete && self.order_confirmed))
    }

    fn running(&self, step: Step) -> bool {
        self.status == SagaStatus::Running && self.step == step
    }

    fn compensating(&self) -> bool {
        self.status == SagaStatus::Compensating
    }

    fn ignore(input: &SagaCommand, detail: impl Into<String>) -> Vec<SagaEvent> {
        vec![SagaEvent::SagaInputIgnored {
            input: input.name().to_owned(),
            detail: detail.into(),
            at: input.at(),
        }]
    }

    /// `events`, followed by the saga's end when they leave nothing to do.
    fn then_finish(&self, mut events: Vec<SagaEvent>, at: DateTime<Utc>) -> Vec<SagaEvent> {
        let mut next = self.clone();
        for event in &events {
            next.apply(event);
        }
        if next.actions().is_empty() {
            match next.status {
                SagaStatus::Running if next.step == Step::Complete => {
                    events.push(SagaEvent::SagaConfirmed { at });
                }
                SagaStatus::Compensating => events.push(SagaEvent::SagaCancelled {
                    reason: next.reason.unwrap_or(Reason::Timeout),
                    at,
                }),
                _ => {}
            }
        }
        events
    }

    fn compensate(&self, reason: Reason, detail: String, at: DateTime<Utc>) -> Vec<SagaEvent> {
        self.then_finish(
            vec![SagaEvent::SagaCompensationStarted { reason, detail, at }],
            at,
        )
    }

    fn decide(&self, input: SagaCommand) -> Result<Vec<SagaEvent>, DomainError> {
        use SagaCommand as In;
        if let In::Resume { at } = input {
            return match self.status {
                SagaStatus::Stuck => Ok(vec![SagaEvent::SagaResumed { at }]),
                status => Err(DomainError::SagaNotStuck { status }),
            };
        }
        if self.status.is_final() {
            let detail = format!("the saga is {}", self.status);
            return Ok(Self::ignore(&input, detail));
        }
        let events = match input {
            In::Start { .. } | In::Resume { .. } => unreachable!("handled above"),
            In::Reserved { product_id, at } => {
                let in_plan = self.plan.as_ref().is_some_and(|plan| {
                    plan.lines.iter().any(|line| line.product_id == product_id)
                });
                let open = (self.running(Step::Reserve) || self.compensating())
                    && !self.reserved.contains(&product_id)
                    && !self.released.contains(&product_id);
                if !(in_plan && open) {
                    return Ok(Self::ignore(&input, "not waiting for this reservation"));
                }
                // Recorded while compensating too: a reservation that happened must be released.
                self.then_finish(vec![SagaEvent::SagaLineReserved { product_id, at }], at)
            }
            In::OutOfStock {
                product_id,
                ref detail,
                at,
            } => {
                let pending = self.actions().iter().any(
                    |action| matches!(action, Action::Reserve { product_id: p, .. } if *p == product_id),
                );
                if !self.running(Step::Reserve) || !pending {
                    return Ok(Self::ignore(&input, "not reserving this line"));
                }
                self.compensate(Reason::OutOfStock, detail.clone(), at)
            }
            In::Authorized {
                ref authorization_id,
                at,
            } => {
                let waiting = self.running(Step::Authorize)
                    || (self.compensating() && self.authorize_in_doubt && !self.voided);
                if !waiting || self.authorization_id.is_some() {
                    return Ok(Self::ignore(&input, "not waiting for an authorization"));
                }
                let authorization_id = authorization_id.clone();
                self.then_finish(
                    vec![SagaEvent::SagaPaymentAuthorized {
                        authorization_id,
                        at,
                    }],
                    at,
                )
            }
            In::Declined { ref detail, at } => {
                if !self.running(Step::Authorize) {
                    return Ok(Self::ignore(&input, "not authorizing"));
                }
                self.compensate(Reason::PaymentDeclined, detail.clone(), at)
            }
            In::OrderConfirmed { at } => {
                if !self.running(Step::Complete) || self.order_confirmed {
                    return Ok(Self::ignore(&input, "not confirming the order"));
                }
                self.then_finish(vec![SagaEvent::SagaOrderConfirmed { at }], at)
            }
            In::ReservationCommitted { product_id, at } => {
                let pending = self
                    .actions()
                    .contains(&Action::CommitReservation { product_id });
                if !self.running(Step::Complete) || !pending {
                    return Ok(Self::ignore(&input, "not committing this reservation"));
                }
                self.then_finish(
                    vec![SagaEvent::SagaReservationCommitted { product_id, at }],
                    at,
                )
            }
            In::Captured { at } => {
                let pending = self
                    .actions()
                    .iter()
                    .any(|action| matches!(action, Action::Capture { .. }));
                if !self.running(Step::Complete) || !pending {
                    return Ok(Self::ignore(&input, "not capturing"));
                }
                self.then_finish(vec![SagaEvent::SagaPaymentCaptured { at }], at)
            }
            In::Voided { at } => {
                if !self.actions().contains(&Action::Void {}) {
                    return Ok(Self::ignore(&input, "not voiding"));
                }
                self.then_finish(vec![SagaEvent::SagaPaymentVoided { at }], at)
            }
            In::Released { product_id, at } => {
                if !self.actions().contains(&Action::Release { product_id }) {
                    return Ok(Self::ignore(&input, "not releasing this reservation"));
                }
                self.then_finish(vec![SagaEvent::SagaLineReleased { product_id, at }], at)
            }
            In::OrderCancelled { at } => {
                let pending = self
                    .actions()
                    .iter()
                    .any(|action| matches!(action, Action::CancelOrder { .. }));
                if !pending {
                    return Ok(Self::ignore(&input, "not cancelling the order"));
                }
                self.then_finish(vec![SagaEvent::SagaOrderCancelled { at }], at)
            }
            In::CancelledByUser { at } => {
                if !self.cancellable() {
                    return Ok(Self::ignore(&input, "too late to cancel"));
                }
                self.compensate(
                    Reason::CancelledByUser,
                    "the order was cancelled".into(),
                    at,
                )
            }
            In::ActionFailed {
                ref action,
                ref error,
                retry_at,
                at,
            } => {
                if !self.actions().contains(action) {
                    return Ok(Self::ignore(&input, "the action is no longer pending"));
                }
                let mut events = vec![SagaEvent::SagaAttemptFailed {
                    action: action.clone(),
                    error: error.clone(),
                    retry_at,
                    at,
                }];
                let max_attempts = self.plan.as_ref().map_or(1, |plan| plan.max_attempts);
                if !self.step.has_deadline() && self.attempts + 1 >= max_attempts {
                    events.push(SagaEvent::SagaStuck {
                        error: format!(
                            "{} failed {} times: {error}",
                            action.name(),
                            self.attempts + 1
                        ),
                        at,
                    });
                }
                events
            }
            In::DeadlinePassed { step, at } => {
                let due = self.running(step)
                    && step.has_deadline()
                    && self.deadline.is_some_and(|deadline| at >= deadline);
                if !due {
                    return Ok(Self::ignore(
                        &input,
                        format!("no deadline of {step} is due"),
                    ));
                }
                let (reason, detail) = if step == Step::Authorize && self.attempts > 0 {
                    let last = self.detail.clone().unwrap_or_default();
                    (
                        Reason::PaymentUnavailable,
                        format!("the payment provider kept failing: {last}"),
                    )
                } else {
                    (
                        Reason::Timeout,
                        format!("the {step} step missed its deadline"),
                    )
                };
                self.compensate(reason, detail, at)
            }
        };
        Ok(events)
    }

    fn current_record(&mut self) -> Option<&mut StepRecord> {
        self.steps
            .last_mut()
            .filter(|record| record.finished_at.is_none())
    }

    fn close_step(&mut self, status: StepStatus, at: DateTime<Utc>, detail: Option<String>) {
        if let Some(record) = self.current_record() {
            record.status = status;
            record.finished_at = Some(at);
            if detail.is_some() {
                record.detail = detail;
            }
        }
    }

    fn enter(&mut self, step: Step, at: DateTime<Utc>) {
        self.close_step(StepStatus::Done, at, None);
        self.step = step;
        self.attempts = 0;
        self.retry_at = None;
        self.deadline = match (&self.plan, step.has_deadline()) {
            (Some(plan), true) => Some(at + plan.step_timeout),
            _ => None,
        };
        self.steps.push(StepRecord {
            name: step,
            status: StepStatus::Running,
            attempts: 0,
            started_at: at,
            finished_at: None,
            detail: None,
        });
    }

    /// Progress in the current step: failures so far no longer count towards giving up.
    fn progressed(&mut self) {
        self.attempts = 0;
        self.retry_at = None;
    }

    fn all_reserved(&self) -> bool {
        self.plan.as_ref().is_some_and(|plan| {
            plan.lines
                .iter()
                .all(|line| self.reserved.contains(&line.product_id))
        })
    }
}

impl Aggregate for Saga {
    const STREAM_TYPE: &'static str = "saga";
    type Command = SagaCommand;
    type Event = SagaEvent;

    fn handle(&self, command: SagaCommand) -> Result<Vec<SagaEvent>, DomainError> {
        if let SagaCommand::Start {
            order_id,
            user_id,
            total,
            lines,
            step_timeout_ms,
            max_attempts,
            at,
        } = command
        {
            if self.exists() {
                let input = SagaCommand::Start {
                    order_id,
                    user_id,
                    total,
                    lines,
                    step_timeout_ms,
                    max_attempts,
                    at,
                };
                return Ok(Self::ignore(&input, "the saga has already started"));
            }
            if lines.is_empty() {
                return Err(DomainError::OrderEmpty);
            }
            return Ok(vec![SagaEvent::SagaStarted {
                order_id,
                user_id,
                total,
                lines,
                step_timeout_ms,
                max_attempts: max_attempts.max(1),
                at,
            }]);
        }
        if !self.exists() {
            return Err(DomainError::NotFound {
                stream_type: Self::STREAM_TYPE,
            });
        }
        self.decide(command)
    }

    fn apply(&mut self, event: &SagaEvent) {
        match event {
            SagaEvent::SagaStarted {
                order_id,
                user_id,
                total,
                lines,
                step_timeout_ms,
                max_attempts,
                at,
            } => {
                let step_timeout =
                    Duration::milliseconds(i64::try_from(*step_timeout_ms).unwrap_or(i64::MAX));
                self.plan = Some(Plan {
                    order_id: *order_id,
                    user_id: *user_id,
                    total: *total,
                    lines: lines.clone(),
                    step_timeout,
                    max_attempts: *max_attempts,
                });
                self.status = SagaStatus::Running;
                self.started_at = Some(*at);
                self.enter(Step::Reserve, *at);
            }
            SagaEvent::SagaLineReserved { product_id, at } => {
                self.reserved.insert(*product_id);
                self.reserve_in_doubt.remove(product_id);
                self.progressed();
                if self.running(Step::Reserve) && self.all_reserved() {
                    let paid = self
                        .plan
                        .as_ref()
                        .is_some_and(|plan| plan.total.is_positive());
                    self.enter(
                        if paid {
                            Step::Authorize
                        } else {
                            Step::Complete
                        },
                        *at,
                    );
                }
            }
            SagaEvent::SagaPaymentAuthorized {
                authorization_id,
                at,
            } => {
                self.authorization_id = Some(authorization_id.clone());
                self.authorize_in_doubt = false;
                self.progressed();
                if self.running(Step::Authorize) {
                    self.enter(Step::Complete, *at);
                }
            }
            SagaEvent::SagaOrderConfirmed { .. } => {
                self.order_confirmed = true;
                self.progressed();
            }
            SagaEvent::SagaReservationCommitted { product_id, .. } => {
                self.committed.insert(*product_id);
                self.progressed();
            }
            SagaEvent::SagaPaymentCaptured { .. } => {
                self.captured = true;
                self.progressed();
            }
            SagaEvent::SagaConfirmed { at } => {
                self.close_step(StepStatus::Done, *at, None);
                self.status = SagaStatus::Confirmed;
                self.finished_at = Some(*at);
                self.deadline = None;
                self.retry_at = None;
            }
            SagaEvent::SagaCompensationStarted { reason, detail, at } => {
                if self.step == Step::Reserve {
                    // Every line not recorded as reserved may have been (an answer lost
                    // with a crash or a timeout); releasing one that was not is a no-op.
                    self.reserve_in_doubt = self.plan.as_ref().map_or_else(BTreeSet::new, |plan| {
                        plan.lines
                            .iter()
                            .map(|line| line.product_id)
                            .filter(|product_id| !self.reserved.contains(product_id))
                            .collect()
                    });
                }
                if self.step == Step::Authorize && *reason != Reason::PaymentDeclined {
                    self.authorize_in_doubt = self.authorization_id.is_none();
                }
                if *reason == Reason::CancelledByUser {
                    self.order_cancelled = true;
                }
                self.close_step(StepStatus::Failed, *at, Some(detail.clone()));
                self.status = SagaStatus::Compensating;
                self.reason = Some(*reason);
                self.detail = Some(detail.clone());
                self.enter(Step::Compensate, *at);
            }
            SagaEvent::SagaPaymentVoided { .. } => {
                self.voided = true;
                self.authorize_in_doubt = false;
                self.progressed();
            }
            SagaEvent::SagaLineReleased { product_id, .. } => {
                self.released.insert(*product_id);
                self.progressed();
            }
            SagaEvent::SagaOrderCancelled { .. } => {
                self.order_cancelled = true;
                self.progressed();
            }
            SagaEvent::SagaCancelled { reason, at } => {
                self.close_step(StepStatus::Done, *at, None);
                self.status = SagaStatus::Cancelled;
                self.reason = Some(*reason);
                self.finished_at = Some(*at);
                self.deadline = None;
                self.retry_at = None;
            }
            SagaEvent::SagaAttemptFailed {
                error, retry_at, ..
            } => {
                self.attempts += 1;
                self.retry_at = Some(*retry_at);
                self.detail = Some(error.clone());
                let attempts = self.attempts;
                if let Some(record) = self.current_record() {
                    record.attempts = attempts;
                    record.detail = Some(error.clone());
                }
            }
            SagaEvent::SagaStuck { error, .. } => {
                self.status = SagaStatus::Stuck;
                self.detail = Some(error.clone());
                self.retry_at = None;
                if let Some(record) = self.current_record() {
                    record.status = StepStatus::Stuck;
                    record.detail = Some(error.clone());
                }
            }
            SagaEvent::SagaResumed { .. } => {
                self.status = if self.step == Step::Compensate {
                    SagaStatus::Compensating
                } else {
                    SagaStatus::Running
                };
                self.progressed();
                if let Some(record) = self.current_record() {
                    record.status = StepStatus::Running;
                }
            }
            SagaEvent::SagaInputIgnored { .. } => self.ignored += 1,
        }
    }
}

#[cfg(test)]
#[path = "saga_tests.rs"]
mod tests;
