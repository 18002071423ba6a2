//! Money as the API shows it, `{amountMinor, currency, formatted}`, and `Long`, the scalar
//! for amounts that do not fit GraphQL's 32-bit `Int`.

use async_graphql::{InputValueError, InputValueResult, Object, Scalar, ScalarType, Value};
use orderflow_domain::{Currency, Money};

use crate::error::QueryError;

/// A 64-bit signed integer, written as a JSON number (exact up to 2^53 in JavaScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Long(pub i64);

/// A 64-bit signed integer, written as a JSON number (exact up to 2^53 in JavaScript).
#[Scalar(name = "Long")]
impl ScalarType for Long {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(number) => number
                .as_i64()
                .map(Long)
                .ok_or_else(|| InputValueError::custom("a Long is a 64-bit integer")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// An exact amount: integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MoneyView(pub(crate) Money);

impl MoneyView {
    /// Money from a read model's columns; an unknown currency there is our bug.
    pub(crate) fn from_parts(amount_minor: i64, currency: &str) -> Result<Self, QueryError> {
        let currency = Currency::parse(currency).map_err(QueryError::internal)?;
        Ok(Self(Money::new(amount_minor, currency)))
    }
}

/// An exact amount of money.
#[Object(name = "Money")]
impl MoneyView {
    /// The amount in the currency's minor units (cents for EUR, yen for JPY).
    async fn amount_minor(&self) -> Long {
        Long(self.0.amount_minor)
    }

    /// The ISO 4217 code, e.g. `EUR`.
    async fn currency(&self) -> &'static str {
        self.0.currency.code()
    }

    /// The amount with its currency's decimals and code, e.g. `12.34 EUR`.
    async fn formatted(&self) -> String {
        self.0.to_string()
    }
}
