//! [`DomainError`]: every way a command can break a business rule, with a stable code.

use uuid::Uuid;

use crate::order::OrderStatus;
use crate::payment::PaymentStatus;
use crate::saga::SagaStatus;
use crate::{Currency, Money, MoneyError};

/// One error type for every broken business rule; the HTTP layer answers 422 with
/// [`DomainError::code`] (404 for [`ErrorKind::NotFound`]) and `Display` as the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("this {stream_type} already exists")]
    AlreadyExists { stream_type: &'static str },
    #[error("this {stream_type} does not exist")]
    NotFound { stream_type: &'static str },
    #[error("invalid email address: {reason}")]
    InvalidEmail { reason: &'static str },
    #[error("a name must be 1 to {max} characters after trimming")]
    InvalidName { max: usize },
    #[error("a SKU must be 1 to {max} characters of A-Z, 0-9, '-', '_' and '.'")]
    InvalidSku { max: usize },
    #[error("a reason must be 1 to {max} characters after trimming")]
    InvalidReason { max: usize },
    #[error("an authorization id must be 1 to {max} characters after trimming")]
    InvalidAuthorizationId { max: usize },
    #[error("quantity must be between 1 and {max}, got {quantity}")]
    QuantityOutOfRange { quantity: u64, max: u64 },
    #[error("quantity must be at least 1; remove the item to drop it from the order")]
    QuantityZero,
    #[error("a price cannot be negative, got {price}")]
    PriceNegative { price: Money },
    #[error("a price can be at most {max} minor units, got {price}")]
    PriceTooLarge { price: Money, max: i64 },
    #[error("the amount must be positive, got {amount}")]
    AmountNotPositive { amount: Money },
    #[error("unknown currency code {0:?}")]
    UnknownCurrency(String),
    #[error("currency mismatch: expected {expected}, got {actual}")]
    CurrencyMismatch {
        expected: Currency,
        actual: Currency,
    },
    #[error("the amount is too large to represent")]
    MoneyOverflow,
    #[error("only {available} in stock, {requested} requested")]
    InsufficientStock { requested: u32, available: u64 },
    #[error("order {order_id} already has a reservation on this product")]
    ReservationExists { order_id: Uuid },
    #[error("order {order_id} has no open reservation on this product")]
    ReservationNotFound { order_id: Uuid },
    #[error("product {product_id} is not in the order")]
    ItemNotInOrder { product_id: Uuid },
    #[error("an order can have at most {max} lines")]
    TooManyLines { max: usize },
    #[error("the order is {status}; only draft orders can be changed or placed")]
    OrderNotDraft { status: OrderStatus },
    #[error("an empty order cannot be placed")]
    OrderEmpty,
    #[error("the order is still a draft; only placed orders can be confirmed")]
    OrderNotPlaced,
    #[error("the order is {status} and can no longer change")]
    OrderClosed { status: OrderStatus },
    #[error("the payment is {status}; only authorized payments can be captured or voided")]
    PaymentNotAuthorized { status: PaymentStatus },
    #[error("the saga is {status}; only a stuck saga can be resumed")]
    SagaNotStuck { status: SagaStatus },
}

/// The class of a [`DomainError`], for callers that answer differently per class without
/// comparing codes as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The stream the command addresses has never been created.
    NotFound,
    /// A value (email, name, SKU, reason, currency, ...) does not parse.
    InvalidValue,
    /// The value parsed, but the aggregate's current state refuses the command.
    Rule,
}

impl DomainError {
    /// Which class of failure this is; [`DomainError::code`] says exactly which one.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::InvalidEmail { .. }
            | Self::InvalidName { .. }
            | Self::InvalidSku { .. }
            | Self::InvalidReason { .. }
            | Self::InvalidAuthorizationId { .. }
            | Self::UnknownCurrency(_) => ErrorKind::InvalidValue,
            Self::AlreadyExists { .. }
            | Self::QuantityOutOfRange { .. }
            | Self::QuantityZero
            | Self::PriceNegative { .. }
            | Self::PriceTooLarge { .. }
            | Self::AmountNotPositive { .. }
            | Self::CurrencyMismatch { .. }
            | Self::MoneyOverflow
            | Self::InsufficientStock { .. }
            | Self::ReservationExists { .. }
            | Self::ReservationNotFound { .. }
            | Self::ItemNotInOrder { .. }
            | Self::TooManyLines { .. }
            | Self::OrderNotDraft { .. }
            | Self::OrderEmpty
            | Self::OrderNotPlaced
            | Self::OrderClosed { .. }
            | Self::PaymentNotAuthorized { .. }
            | Self::SagaNotStuck { .. } => ErrorKind::Rule,
        }
    }

    /// Machine-readable and stable: clients branch on this, never on the message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists { .. } => "ALREADY_EXISTS",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::InvalidEmail { .. } => "INVALID_EMAIL",
            Self::InvalidName { .. } => "INVALID_NAME",
            Self::InvalidSku { .. } => "INVALID_SKU",
            Self::InvalidReason { .. } => "INVALID_REASON",
            Self::InvalidAuthorizationId { .. } => "INVALID_AUTHORIZATION_ID",
            Self::QuantityOutOfRange { .. } | Self::QuantityZero => "QUANTITY_OUT_OF_RANGE",
            Self::PriceNegative { .. } => "PRICE_NEGATIVE",
            Self::PriceTooLarge { .. } => "PRICE_TOO_LARGE",
            Self::AmountNotPositive { .. } => "AMOUNT_NOT_POSITIVE",
            Self::UnknownCurrency(_) => "UNKNOWN_CURRENCY",
            Self::CurrencyMismatch { .. } => "CURRENCY_MISMATCH",
            Self::MoneyOverflow => "MONEY_OVERFLOW",
            Self::InsufficientStock { .. } => "INSUFFICIENT_STOCK",
            Self::ReservationExists { .. } => "RESERVATION_EXISTS",
            Self::ReservationNotFound { .. } => "RESERVATION_NOT_FOUND",
            Self::ItemNotInOrder { .. } => "ITEM_NOT_IN_ORDER",
            Self::TooManyLines { .. } => "TOO_MANY_LINES",
            Self::OrderNotDraft { .. } => "ORDER_NOT_DRAFT",
            Self::OrderEmpty => "ORDER_EMPTY",
            Self::OrderNotPlaced => "ORDER_NOT_PLACED",
            Self::OrderClosed { .. } => "ORDER_CLOSED",
            Self::PaymentNotAuthorized { .. } => "PAYMENT_NOT_AUTHORIZED",
            Self::SagaNotStuck { .. } => "SAGA_NOT_STUCK",
        }
    }
}

impl From<MoneyError> for DomainError {
    fn from(error: MoneyError) -> Self {
        match error {
            MoneyError::UnknownCurrency(code) => Self::UnknownCurrency(code),
            MoneyError::CurrencyMismatch { expected, actual } => {
                Self::CurrencyMismatch { expected, actual }
            }
            MoneyError::Overflow => Self::MoneyOverflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_errors_keep_their_meaning_as_domain_errors() {
        let mismatch = MoneyError::CurrencyMismatch {
            expected: Currency::EUR,
            actual: Currency::USD,
        };
        assert_eq!(DomainError::from(mismatch).code(), "CURRENCY_MISMATCH");
        assert_eq!(
            DomainError::from(MoneyError::Overflow).code(),
            "MONEY_OVERFLOW"
        );
        let unknown = DomainError::from(MoneyError::UnknownCurrency("XYZ".into()));
        assert_eq!(unknown.code(), "UNKNOWN_CURRENCY");
    }

    #[test]
    fn only_a_missing_stream_is_of_the_not_found_kind() {
        let missing = DomainError::NotFound {
            stream_type: "user",
        };
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert_eq!(missing.code(), "NOT_FOUND");
        let invalid = DomainError::InvalidEmail {
            reason: "it is empty",
        };
        assert_eq!(invalid.kind(), ErrorKind::InvalidValue);
        assert_eq!(DomainError::OrderEmpty.kind(), ErrorKind::Rule);
        let exists = DomainError::AlreadyExists {
            stream_type: "user",
        };
        assert_eq!(exists.kind(), ErrorKind::Rule);
    }

    #[test]
    fn messages_name_the_offending_values() {
        let error = DomainError::InsufficientStock {
            requested: 5,
            available: 2,
        };
        assert_eq!(error.to_string(), "only 2 in stock, 5 requested");
        let error = DomainError::OrderClosed {
            status: OrderStatus::Cancelled,
        };
        assert_eq!(
            error.to_string(),
            "the order is cancelled and can no longer change"
        );
        let error = DomainError::NotFound {
            stream_type: "order",
        };
        assert_eq!(error.to_string(), "this order does not exist");
    }
}
