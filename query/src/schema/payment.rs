//! `Payment` (a row of `payment_view`): what became of an order's payment.

use async_graphql::{Enum, Object, Result, ID};
use chrono::{DateTime, Utc};

use super::from_db;
use super::money::MoneyView;
use crate::db::PaymentRow;

/// Where an order's payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum PaymentStatus {
    /// The provider holds the amount; it is captured or voided next.
    Authorized,
    /// The provider refused; final.
    Declined,
    /// The amount was taken; final.
    Captured,
    /// The authorization was released; final.
    Voided,
}

impl PaymentStatus {
    const ALL: [Self; 4] = [
        Self::Authorized,
        Self::Declined,
        Self::Captured,
        Self::Voided,
    ];

    /// The value of `payment_view.status`.
    const fn as_db(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Declined => "declined",
            Self::Captured => "captured",
            Self::Voided => "voided",
        }
    }
}

/// An order's payment as the projector last applied its stream.
#[derive(Debug, Clone)]
pub(crate) struct Payment(pub(crate) PaymentRow);

/// An order's payment as the projector last applied its stream.
#[Object]
impl Payment {
    /// The payment's stream id, derived from the order's id.
    async fn payment_id(&self) -> ID {
        ID(self.0.payment_id.to_string())
    }

    async fn status(&self) -> Result<PaymentStatus> {
        Ok(from_db(
            &PaymentStatus::ALL,
            PaymentStatus::as_db,
            "payment status",
            &self.0.status,
        )?)
    }

    /// The amount authorized or declined (and, once captured, taken).
    async fn amount(&self) -> Result<MoneyView> {
        Ok(MoneyView::from_parts(
            self.0.amount_minor,
            &self.0.currency,
        )?)
    }

    /// The provider's reference for the authorization; null for a declined payment.
    async fn authorization_id(&self) -> Option<&str> {
        self.0.authorization_id.as_deref()
    }

    /// Why the provider declined; null unless declined.
    async fn decline_reason(&self) -> Option<&str> {
        self.0.decline_reason.as_deref()
    }

    /// Why the authorization was voided; null unless voided.
    async fn void_reason(&self) -> Option<&str> {
        self.0.void_reason.as_deref()
    }

    async fn authorized_at(&self) -> Option<DateTime<Utc>> {
        self.0.authorized_at
    }

    async fn declined_at(&self) -> Option<DateTime<Utc>> {
        self.0.declined_at
    }

    async fn captured_at(&self) -> Option<DateTime<Utc>> {
        self.0.captured_at
    }

    async fn voided_at(&self) -> Option<DateTime<Utc>> {
        self.0.voided_at
    }

    /// The version of the payment's stream this view reflects.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// When the last event this view reflects was recorded.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}
