//! `Saga` (a row of `sagas`, which the saga orchestrator keeps in step with the saga's
//! stream) with its steps and its order, and the sagas connection.

use async_graphql::{Context, Enum, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::connection::{saga_cursor, Page, PageInfo};
use super::order::Order;
use super::{from_db, services};
use crate::db::{SagaCursor, SagaRow, SagaStepRow};
use crate::error::QueryError;
use crate::loaders::OrderKey;

/// Where a fulfilment saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum SagaState {
    /// Moving forward: reserving stock, authorizing the payment or completing.
    Running,
    /// Undoing what was done (void, release, cancel) after a refusal, a cancellation or a
    /// missed deadline.
    Compensating,
    /// Finished: the order is confirmed, its stock committed and its payment captured.
    Confirmed,
    /// Finished: the order is cancelled and whatever was reserved or authorized is undone.
    Cancelled,
    /// Parked after completing or compensating failed too often; waits for an operator.
    Stuck,
}

impl SagaState {
    const ALL: [Self; 5] = [
        Self::Running,
        Self::Compensating,
        Self::Confirmed,
        Self::Cancelled,
        Self::Stuck,
    ];

    /// The value of `sagas.state`.
    pub(crate) const fn as_db(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Compensating => "COMPENSATING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Stuck => "STUCK",
        }
    }
}

/// A step of the fulfilment saga, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum SagaStep {
    /// Reserve stock for every line, all lines at once (all or nothing).
    Reserve,
    /// Authorize the order's total with the payment provider.
    Authorize,
    /// Confirm the order, commit the reservations, capture the payment.
    Complete,
    /// Void the authorization, release the reservations, cancel the order.
    Compensate,
}

impl SagaStep {
    const ALL: [Self; 4] = [
        Self::Reserve,
        Self::Authorize,
        Self::Complete,
        Self::Compensate,
    ];

    /// The value of `sagas.step` and of a step record's `name`.
    const fn as_db(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Authorize => "authorize",
            Self::Complete => "complete",
            Self::Compensate => "compensate",
        }
    }
}

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum SagaStepStatus {
    Running,
    Done,
    /// Ended by a refusal, a user's cancellation or a missed deadline; the saga compensates.
    Failed,
    /// Failed too often; the saga is parked.
    Stuck,
}

impl SagaStepStatus {
    const ALL: [Self; 4] = [Self::Running, Self::Done, Self::Failed, Self::Stuck];

    /// The value of a step record's `status`.
    const fn as_db(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
            Self::Stuck => "STUCK",
        }
    }
}

/// Why a saga cancelled its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum SagaReason {
    /// A line could not be reserved.
    OutOfStock,
    /// The payment provider declined the payment.
    PaymentDeclined,
    /// The payment provider kept failing until the authorization's deadline.
    PaymentUnavailable,
    /// A forward step did not finish before its deadline.
    Timeout,
    /// The user cancelled the order while the saga ran.
    CancelledByUser,
}

impl SagaReason {
    const ALL: [Self; 5] = [
        Self::OutOfStock,
        Self::PaymentDeclined,
        Self::PaymentUnavailable,
        Self::Timeout,
        Self::CancelledByUser,
    ];

    /// The value of `sagas.reason`.
    const fn as_db(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentUnavailable => "payment_unavailable",
            Self::Timeout => "timeout",
            Self::CancelledByUser => "cancelled_by_user",
        }
    }
}

/// An order's fulfilment saga as the orchestrator last recorded it: it may lag the saga's
/// stream (see `Order.timeline`) by the time an orchestrator takes to mirror a step.
#[derive(Debug, Clone)]
pub(crate) struct Saga(pub(crate) SagaRow);

/// An order's fulfilment saga as the orchestrator last recorded it: it may lag the saga's
/// stream (see `Order.timeline`) by the time an orchestrator takes to mirror a step.
#[Object]
impl Saga {
    /// The saga's stream id, derived from the order's id.
    async fn saga_id(&self) -> ID {
        ID(self.0.saga_id.to_string())
    }

    async fn order_id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }

    /// The order as its view is now; null until the order is projected.
    async fn order(&self, ctx: &Context<'_>) -> Result<Option<Order>> {
        let loader = &services(ctx).loader;
        let row = loader
            .load_one(OrderKey(self.0.order_id))
            .await
            .map_err(QueryError::from)?;
        Ok(row.map(Order))
    }

    async fn state(&self) -> Result<SagaState> {
        Ok(from_db(
            &SagaState::ALL,
            SagaState::as_db,
            "saga state",
            &self.0.state,
        )?)
    }

    /// The step the saga is at (or ended at).
    async fn step(&self) -> Result<SagaStep> {
        Ok(from_db(
            &SagaStep::ALL,
            SagaStep::as_db,
            "saga step",
            &self.0.step,
        )?)
    }

    /// Why the order was cancelled; null unless the saga compensates or cancelled it.
    async fn reason(&self) -> Result<Option<SagaReason>> {
        let reason = self.0.reason.as_deref();
        Ok(reason
            .map(|reason| from_db(&SagaReason::ALL, SagaReason::as_db, "saga reason", reason))
            .transpose()?)
    }

    /// The last failure, or why the saga compensates or is stuck.
    async fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// Failures of the current step since it last made progress.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }

    /// When the current step gives up (reserve and authorize only); null otherwise.
    async fn deadline(&self) -> Option<DateTime<Utc>> {
        self.0.deadline
    }

    /// The version of the saga's stream this record mirrors; 0 until the saga has started.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// When the saga started; null until the orchestrator has started it.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    /// When the saga confirmed or cancelled its order; null while it is not finished.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }

    /// When the orchestrator took up the placed order: the order of the `sagas` list.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When the orchestrator last wrote this record.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// The steps run so far, in the order they started.
    async fn steps(&self) -> Result<Vec<SagaStepRecord>> {
        Ok(self
            .0
            .steps
            .iter()
            .map(SagaStepRecord::from_row)
            .collect::<Result<_, _>>()?)
    }
}

/// One step's record: when it ran, how often it failed, and how it ended.
#[derive(Debug, Clone, SimpleObject)]
pub(crate) struct SagaStepRecord {
    pub(crate) name: SagaStep,
    pub(crate) status: SagaStepStatus,
    /// Failed attempts since the step last made progress.
    pub(crate) attempts: i32,
    pub(crate) started_at: DateTime<Utc>,
    /// Null while the step runs.
    pub(crate) finished_at: Option<DateTime<Utc>>,
    /// The step's last failure, or why it failed; null if nothing went wrong.
    pub(crate) detail: Option<String>,
}

impl SagaStepRecord {
    fn from_row(row: &SagaStepRow) -> Result<Self, QueryError> {
        Ok(Self {
            name: from_db(&SagaStep::ALL, SagaStep::as_db, "saga step", &row.name)?,
            status: from_db(
                &SagaStepStatus::ALL,
                SagaStepStatus::as_db,
                "saga step status",
                &row.status,
            )?,
            attempts: i32::try_from(row.attempts).unwrap_or(i32::MAX),
            started_at: row.started_at,
            finished_at: row.finished_at,
            detail: row.detail.clone(),
        })
    }
}

/// A page of sagas, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct SagaConnection {
    pub(crate) page: Page<Saga>,
    pub(crate) state: Option<SagaState>,
}

impl SagaConnection {
    pub(crate) fn new(
        rows: Vec<SagaRow>,
        size: i64,
        after: bool,
        state: Option<SagaState>,
    ) -> Self {
        Self {
            page: Page::new(
                rows,
                size,
                after,
                |row| {
                    saga_cursor(SagaCursor {
                        created_at: row.created_at,
                        saga_id: row.saga_id,
                    })
                },
                Saga,
            ),
            state,
        }
    }
}

/// A saga and where it is in the list.
#[derive(Debug, Clone, SimpleObject)]
pub(crate) struct SagaEdge {
    pub(crate) cursor: String,
    pub(crate) node: Saga,
}

/// A page of sagas, oldest first.
#[Object]
impl SagaConnection {
    async fn edges(&self) -> Vec<SagaEdge> {
        self.page.edges(|cursor, node| SagaEdge { cursor, node })
    }

    async fn nodes(&self) -> Vec<Saga> {
        self.page.nodes()
    }

    async fn page_info(&self) -> PageInfo {
        self.page.page_info()
    }

    /// Sagas in the requested state (or all of them), on every page.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let db = &services(ctx).db;
        Ok(db
            .count_sagas(self.state.map(SagaState::as_db))
            .await
            .map_err(QueryError::from)?)
    }
}
