//! [`ProjectionError`]: what fails a whole batch or replay; [`Rejected`]: one event that
//! could not be applied while the rest of its batch was; [`Refusal`]: why a projection
//! would not fold an event.

use std::time::Duration;

use orderflow_domain::payment::PaymentStatus;
use orderflow_domain::{Money, MoneyError};
use orderflow_store::StoreError;
use uuid::Uuid;

use crate::event::{chain, UnreadableEvent};
use crate::Projection;

/// A failure of the whole call: the caller rolls back and retries (or gives up on a replay).
/// Per-event problems are never this type; they come back as [`Rejected`].
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A delivered event is ahead of its checkpoint and the store does not (yet) hold every
    /// version in between; a later retry finds them.
    #[error("stream {stream_id} needs versions {from}..={to} from the event store, which returned {found}")]
    MissingEvents {
        stream_id: Uuid,
        from: i32,
        to: i32,
        found: usize,
    },
    /// Two replays of one projection would swap over each other.
    #[error("a replay of {0} is already running")]
    ReplayRunning(&'static dyn Projection),
    /// A replay's swap could not lock the live tables in time, attempt after attempt: a long
    /// query or transaction holds them. The shadow tables were left unswapped.
    #[error(
        "the replay of {projection} gave up swapping in after {attempts} attempts to lock its \
         live tables within {timeout:?}: a long-running query or transaction holds them"
    )]
    SwapLockTimeout {
        projection: &'static dyn Projection,
        attempts: u32,
        timeout: Duration,
    },
}

impl ProjectionError {
    /// An error the database raised about the data written (SQLSTATE class 22 or 23): the
    /// fault of one event's content, not of the connection or the schema.
    pub(crate) fn is_data_error(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
            _ => false,
        }
    }
}

/// An event that was skipped because it cannot be decoded or applied; its stream's
/// checkpoint still moves past it, so later events of the stream apply. The caller sends it
/// to the dead-letter topic. It may be an event the batch did not contain: one read from
/// the store to fill a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub position: i64,
    pub stream_id: Uuid,
    pub version: i32,
    /// Why, with every cause on one line: the dead letter's error header.
    pub error: String,
}

impl Rejected {
    pub(crate) fn new(position: i64, stream_id: Uuid, version: i32, why: Rejection) -> Self {
        Self {
            position,
            stream_id,
            version,
            error: chain(&why),
        }
    }
}

/// Why an event was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejection {
    #[error(transparent)]
    Unreadable(#[from] UnreadableEvent),
    #[error("cannot apply")]
    Refused(#[from] Refusal),
    /// Applied alone, the event made the database raise a data error.
    #[error("the read model refused the event")]
    Database(#[source] ProjectionError),
}

/// Why a projection folds an event into nothing: the event contradicts what the projection
/// already holds of its streams.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the order was already created")]
    OrderAlreadyCreated,
    #[error("the order's OrderCreated was never applied")]
    OrderNotCreated,
    #[error("the order was already placed")]
    OrderAlreadyPlaced,
    #[error("the order's OrderPlaced was never applied")]
    OrderNotPlaced,
    #[error("product {0} is already in the order")]
    ItemAlreadyInOrder(Uuid),
    #[error("product {0} is not in the order")]
    ItemNotInOrder(Uuid),
    #[error("line total of {quantity} x {unit_price}")]
    LineTotal {
        quantity: u32,
        unit_price: Money,
        #[source]
        source: MoneyError,
    },
    #[error("line of {product_id}")]
    LineOfProduct {
        product_id: Uuid,
        #[source]
        source: MoneyError,
    },
    #[error("the order total overflows")]
    OrderTotalOverflows,
    #[error("the user was already registered")]
    UserAlreadyRegistered,
    #[error("the user's UserRegistered was never applied")]
    UserNotRegistered,
    #[error("{total} spent in {currency} overflows")]
    SpentOverflows { total: i64, currency: String },
    #[error("the product was already created")]
    ProductAlreadyCreated,
    #[error("the product's ProductCreated was never applied")]
    ProductNotCreated,
    #[error("revenue of product {0} overflows")]
    RevenueOverflows(Uuid),
    #[error("the payment was already authorized or declined")]
    PaymentAlreadyStarted,
    #[error("the payment's PaymentAuthorized or PaymentDeclined was never applied")]
    PaymentNotStarted,
    #[error("the payment is {0}, not authorized")]
    PaymentNotAuthorized(PaymentStatus),
    /// Payment streams are found by order ([`orderflow_domain::saga::payment_id`]); a stream
    /// under any other id would show as the order's payment beside the real one.
    #[error("the stream is not the payment stream of order {0}")]
    PaymentOfAnotherOrder(Uuid),
}

/// A row a projection loaded holds a value this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("{column} holds an unknown value {value:?}")]
struct UnknownValue {
    column: &'static str,
    value: String,
}

/// The error to load a row with when `column` (`table.column`) holds `value`, unknown.
pub(crate) fn unknown_value(column: &'static str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(UnknownValue {
        column,
        value: value.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use orderflow_domain::Currency;

    use super::*;

    fn rejected(why: Rejection) -> String {
        Rejected::new(1, Uuid::nil(), 1, why).error
    }

    #[test]
    fn a_dead_letter_names_the_refusal_and_its_cause_on_one_line() {
        let unit_price = Money::new(i64::MAX, Currency::EUR);
        let refusal = Refusal::LineTotal {
            quantity: 2,
            unit_price,
            source: MoneyError::Overflow,
        };
        assert_eq!(
            rejected(refusal.into()),
            format!(
                "cannot apply: line total of 2 x {unit_price}: the amount is too large to represent"
            )
        );
        assert_eq!(
            rejected(Refusal::OrderNotCreated.into()),
            "cannot apply: the order's OrderCreated was never applied"
        );
    }

    #[test]
    fn a_dead_letter_says_which_stream_type_no_projection_reads() {
        let why = UnreadableEvent::StreamType("saga".into());
        assert_eq!(rejected(why.into()), "no projection reads \"saga\" streams");
    }

    #[test]
    fn a_dead_letter_says_what_could_not_be_decoded_and_why() {
        let why = UnreadableEvent::Payload {
            event_type: "ItemAdded".into(),
            schema_version: 9,
            stream_type: "order".into(),
            source: orderflow_domain::DecodeError::UnsupportedSchemaVersion {
                event_type: "ItemAdded".into(),
                version: 9,
            },
        };
        assert_eq!(
            rejected(why.into()),
            "cannot decode ItemAdded v9 of order stream: ItemAdded has no schema version 9"
        );
    }
}
