//! Payments: the outcome of asking a payment provider for an order's money. Authorization
//! and decline start a payment; an authorized payment is then captured or voided, once.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{domain_event, Aggregate};
use crate::{text, DomainError, Money};

/// Longest provider authorization id, in characters.
pub const MAX_AUTHORIZATION_ID_LEN: usize = 200;

/// Where a payment is; `Pending` means nothing has been recorded yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    #[default]
    Pending,
    Authorized,
    Declined,
    Captured,
    Voided,
}

impl PaymentStatus {
    /// The name used in JSON and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Declined => "declined",
            Self::Captured => "captured",
            Self::Voided => "voided",
        }
    }

    /// Declined, captured and voided payments never change again.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Declined | Self::Captured | Self::Voided)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can be asked of a payment; the provider's answer arrives in the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    Authorize {
        order_id: Uuid,
        amount: Money,
        authorization_id: String,
    },
    Decline {
        order_id: Uuid,
        amount: Money,
        reason: String,
    },
    Capture,
    Void {
        reason: String,
    },
}

domain_event! {
    /// What happened to a payment.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum PaymentEvent {
        PaymentAuthorized {
            order_id: Uuid,
            amount: Money,
            authorization_id: String,
        },
        PaymentDeclined {
            order_id: Uuid,
            amount: Money,
            reason: String,
        },
        PaymentCaptured {
            amount: Money,
        },
        PaymentVoided {
            reason: String,
        },
    }
}

/// A payment's current state; `Pending` with nothing else until authorized or declined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payment {
    status: PaymentStatus,
    order_id: Option<Uuid>,
    amount: Option<Money>,
    authorization_id: Option<String>,
}

impl Payment {
    /// Whether the stream has been started by an authorization or a decline.
    pub fn exists(&self) -> bool {
        self.status != PaymentStatus::Pending
    }

    /// What may happen next: only an authorized payment is captured or voided.
    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    /// The order being paid for; `None` before the first event.
    pub fn order_id(&self) -> Option<Uuid> {
        self.order_id
    }

    /// What was authorized or declined; `None` before the first event.
    pub fn amount(&self) -> Option<Money> {
        self.amount
    }

    /// The provider's reference, needed to capture or void with it.
    pub fn authorization_id(&self) -> Option<&str> {
        self.authorization_id.as_deref()
    }

    fn start(&self, amount: Money) -> Result<(), DomainError> {
        if self.exists() {
            return Err(DomainError::AlreadyExists {
                stream_type: Self::STREAM_TYPE,
            });
        }
        if !amount.is_positive() {
            return Err(DomainError::AmountNotPositive { amount });
        }
        Ok(())
    }

    fn authorized_amount(&self) -> Result<Money, DomainError> {
        match (self.status, self.amount) {
            (PaymentStatus::Pending, _) => Err(DomainError::NotFound {
                stream_type: Self::STREAM_TYPE,
            }),
            (PaymentStatus::Authorized, Some(amount)) => Ok(amount),
            (status, _) => Err(DomainError::PaymentNotAuthorized { status }),
        }
    }
}

impl Aggregate for Payment {
    const STREAM_TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;

    fn handle(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, DomainError> {
        let event = match command {
            PaymentCommand::Authorize {
                order_id,
                amount,
                authorization_id,
            } => {
                self.start(amount)?;
                let authorization_id = text::bounded(&authorization_id, MAX_AUTHORIZATION_ID_LEN)
                    .ok_or(DomainError::InvalidAuthorizationId {
                    max: MAX_AUTHORIZATION_ID_LEN,
                })?;
                PaymentEvent::PaymentAuthorized {
                    order_id,
                    amount,
                    authorization_id,
                }
            }
            PaymentCommand::Decline {
                order_id,
                amount,
                reason,
            } => {
                self.start(amount)?;
                PaymentEvent::PaymentDeclined {
                    order_id,
                    amount,
                    reason: text::reason(&reason)?,
                }
            }
            PaymentCommand::Capture => PaymentEvent::PaymentCaptured {
                amount: self.authorized_amount()?,
            },
            PaymentCommand::Void { reason } => {
                self.authorized_amount()?;
                PaymentEvent::PaymentVoided {
                    reason: text::reason(&reason)?,
                }
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::PaymentAuthorized {
                order_id,
                amount,
                authorization_id,
            } => {
                self.status = PaymentStatus::Authorized;
                self.order_id = Some(*order_id);
                self.amount = Some(*amount);
                self.authorization_id = Some(authorization_id.clone());
            }
            PaymentEvent::PaymentDeclined {
                order_id, amount, ..
            } => {
                self.status = PaymentStatus::Declined;
                self.order_id = Some(*order_id);
                self.amount = Some(*amount);
            }
            PaymentEvent::PaymentCaptured { .. } => self.status = PaymentStatus::Captured,
            PaymentEvent::PaymentVoided { .. } => self.status = PaymentStatus::Voided,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{assert_round_trip, given};
    use crate::Currency;
    use crate::DomainEvent;

    const ORDER: Uuid = Uuid::from_u128(1);

    fn eur(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::EUR)
    }

    fn authorize(amount: Money, authorization_id: &str) -> PaymentCommand {
        PaymentCommand::Authorize {
            order_id: ORDER,
            amount,
            authorization_id: authorization_id.into(),
        }
    }

    fn decline(amount: Money, reason: &str) -> PaymentCommand {
        PaymentCommand::Decline {
            order_id: ORDER,
            amount,
            reason: reason.into(),
        }
    }

    fn void(reason: &str) -> PaymentCommand {
        PaymentCommand::Void {
            reason: reason.into(),
        }
    }

    fn authorized() -> PaymentEvent {
        PaymentEvent::PaymentAuthorized {
            order_id: ORDER,
            amount: eur(2500),
            authorization_id: "auth-1".into(),
        }
    }

    fn declined() -> PaymentEvent {
        PaymentEvent::PaymentDeclined {
            order_id: ORDER,
            amount: eur(2500),
            reason: "insufficient funds".into(),
        }
    }

    fn captured() -> PaymentEvent {
        PaymentEvent::PaymentCaptured { amount: eur(2500) }
    }

    fn voided() -> PaymentEvent {
        PaymentEvent::PaymentVoided {
            reason: "order cancelled".into(),
        }
    }

    /// A history for each status other than pending and authorized.
    fn finished() -> [Vec<PaymentEvent>; 3] {
        [
            vec![declined()],
            vec![authorized(), captured()],
            vec![authorized(), voided()],
        ]
    }

    #[test]
    fn authorizing_records_the_order_amount_and_provider_reference() {
        let payment = given::<Payment>(vec![])
            .when(authorize(eur(2500), " auth-1 "))
            .then_expect(vec![authorized()]);
        assert!(payment.exists());
        assert_eq!(payment.status(), PaymentStatus::Authorized);
        assert_eq!(payment.order_id(), Some(ORDER));
        assert_eq!(payment.amount(), Some(eur(2500)));
        assert_eq!(payment.authorization_id(), Some("auth-1"));
    }

    #[test]
    fn authorizing_an_existing_payment_is_rejected() {
        for history in [vec![authorized()], vec![declined()]] {
            given::<Payment>(history)
                .when(authorize(eur(2500), "auth-2"))
                .then_error("ALREADY_EXISTS");
        }
    }

    #[test]
    fn authorizing_nothing_or_a_negative_amount_is_rejected() {
        for amount in [eur(0), eur(-1)] {
            given::<Payment>(vec![])
                .when(authorize(amount, "auth-1"))
                .then_error("AMOUNT_NOT_POSITIVE");
        }
    }

    #[test]
    fn authorizing_without_an_authorization_id_is_rejected() {
        given::<Payment>(vec![])
            .when(authorize(eur(1), "  "))
            .then_error("INVALID_AUTHORIZATION_ID");
        given::<Payment>(vec![])
            .when(authorize(eur(1), &"a".repeat(MAX_AUTHORIZATION_ID_LEN + 1)))
            .then_error("INVALID_AUTHORIZATION_ID");
    }

    #[test]
    fn declining_records_the_order_amount_and_trimmed_reason() {
        let payment = given::<Payment>(vec![])
            .when(decline(eur(2500), " insufficient funds "))
            .then_expect(vec![declined()]);
        assert_eq!(payment.status(), PaymentStatus::Declined);
        assert!(payment.status().is_final());
    }

    #[test]
    fn declining_an_existing_payment_is_rejected() {
        for history in [vec![authorized()], vec![declined()]] {
            given::<Payment>(history)
                .when(decline(eur(2500), "no"))
                .then_error("ALREADY_EXISTS");
        }
    }

    #[test]
    fn declining_nothing_or_a_negative_amount_is_rejected() {
        for amount in [eur(0), eur(-1)] {
            given::<Payment>(vec![])
                .when(decline(amount, "no"))
                .then_error("AMOUNT_NOT_POSITIVE");
        }
    }

    #[test]
    fn declining_without_a_reason_is_rejected() {
        given::<Payment>(vec![])
            .when(decline(eur(1), ""))
            .then_error("INVALID_REASON");
    }

    #[test]
    fn capturing_takes_the_authorized_amount() {
        let payment = given::<Payment>(vec![authorized()])
            .when(PaymentCommand::Capture)
            .then_expect(vec![captured()]);
        assert_eq!(payment.status(), PaymentStatus::Captured);
    }

    #[test]
    fn capturing_a_payment_that_is_not_authorized_is_rejected() {
        for history in finished() {
            given::<Payment>(history)
                .when(PaymentCommand::Capture)
                .then_error("PAYMENT_NOT_AUTHORIZED");
        }
    }

    #[test]
    fn capturing_a_missing_payment_is_not_found() {
        given::<Payment>(vec![])
            .when(PaymentCommand::Capture)
            .then_error("NOT_FOUND");
    }

    #[test]
    fn voiding_releases_an_authorization_with_a_reason() {
        let payment = given::<Payment>(vec![authorized()])
            .when(void(" order cancelled "))
            .then_expect(vec![voided()]);
        assert_eq!(payment.status(), PaymentStatus::Voided);
    }

    #[test]
    fn voiding_a_payment_that_is_not_authorized_is_rejected() {
        for history in finished() {
            given::<Payment>(history)
                .when(void("again"))
                .then_error("PAYMENT_NOT_AUTHORIZED");
        }
    }

    #[test]
    fn voiding_a_missing_payment_is_not_found() {
        given::<Payment>(vec![])
            .when(void("nothing"))
            .then_error("NOT_FOUND");
    }

    #[test]
    fn voiding_without_a_reason_is_rejected() {
        given::<Payment>(vec![authorized()])
            .when(void(" "))
            .then_error("INVALID_REASON");
    }

    #[test]
    fn every_payment_event_survives_storage_under_a_stable_name() {
        let events = [authorized(), declined(), captured(), voided()];
        let names = [
            "PaymentAuthorized",
            "PaymentDeclined",
            "PaymentCaptured",
            "PaymentVoided",
        ];
        assert_round_trip(&events, &names);
        assert_eq!(PaymentEvent::EVENT_TYPES, names);
        assert_eq!(
            authorized().to_payload(),
            json!({
                "orderId": ORDER,
                "amount": {"amountMinor": 2500, "currency": "EUR"},
                "authorizationId": "auth-1",
            })
        );
        assert_eq!(
            serde_json::to_value(PaymentStatus::Authorized).unwrap(),
            json!("authorized")
        );
    }
}
