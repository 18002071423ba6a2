//! Exact money: integer minor units tagged with a currency, so amounts never pass through
//! floats and arithmetic fails loudly instead of wrapping or mixing currencies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The codes we accept and their minor units: a closed list, so a typo never becomes a currency.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PLN", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TRY", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// An ISO 4217 currency from the built-in list; only [`Currency::parse`] makes one, so
/// holding a `Currency` means the code is known.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

impl Currency {
    /// Euro, for code and tests that need a currency without parsing one.
    pub const EUR: Self = Self::known("EUR", 2);
    /// US dollar.
    pub const USD: Self = Self::known("USD", 2);
    /// Pound sterling.
    pub const GBP: Self = Self::known("GBP", 2);
    /// Japanese yen: no minor unit.
    pub const JPY: Self = Self::known("JPY", 0);

    const fn known(code: &'static str, minor_units: u8) -> Self {
        Self { code, minor_units }
    }

    /// Every code [`Currency::parse`] accepts (in uppercase; any letter case parses).
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|&(code, _)| code)
    }

    /// Accepts any letter case (`"eur"`) and normalizes to the uppercase code.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(code))
            .map(|&(code, minor_units)| Self::known(code, minor_units))
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    /// The three-letter uppercase code, as stored and shown.
    pub const fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point: what one `amount_minor` is worth (cents, fils, none).
    pub const fn minor_units(self) -> u8 {
        self.minor_units
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Currency").field(&self.code).finish()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code)
    }
}

/// Written as the bare code, `"EUR"`.
impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

/// Read with [`Currency::parse`], so unknown codes fail deserialization.
impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount in the currency's minor units (cents for EUR, yen for JPY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Money {
    #[serde(deserialize_with = "crate::integral::deserialize")]
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    /// `Money::new(1234, Currency::EUR)` is 12.34 EUR.
    pub const fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    /// The starting point of a sum.
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// Prices may be zero but not negative.
    pub const fn is_negative(self) -> bool {
        self.amount_minor < 0
    }

    /// Payments must move something.
    pub const fn is_positive(self) -> bool {
        self.amount_minor > 0
    }

    /// Fails unless `self` is in `expected`, naming both currencies.
    pub fn ensure_currency(self, expected: Currency) -> Result<(), MoneyError> {
        if self.currency == expected {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                expected,
                actual: self.currency,
            })
        }
    }

    /// Sum in one currency; adding another currency or overflowing is an error.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        other.ensure_currency(self.currency)?;
        let amount = self.amount_minor.checked_add(other.amount_minor);
        self.with_amount(amount)
    }

    /// Difference in one currency; same failure modes as [`Money::checked_add`].
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        other.ensure_currency(self.currency)?;
        let amount = self.amount_minor.checked_sub(other.amount_minor);
        self.with_amount(amount)
    }

    /// Price times quantity; takes `u32` quantities as well as signed factors.
    pub fn checked_mul(self, factor: impl Into<i64>) -> Result<Money, MoneyError> {
        let amount = self.amount_minor.checked_mul(factor.into());
        self.with_amount(amount)
    }

    fn with_amount(self, amount_minor: Option<i64>) -> Result<Money, MoneyError> {
        amount_minor
            .map(|amount_minor| Money::new(amount_minor, self.currency))
            .ok_or(MoneyError::Overflow)
    }
}

/// "12.34 EUR", "1200 JPY", "-1.234 KWD": exact, whatever the currency's minor units.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let amount = self.amount_minor.unsigned_abs();
        let digits = u32::from(self.currency.minor_units);
        if digits == 0 {
            return write!(f, "{sign}{amount} {}", self.currency);
        }
        let scale = 10_u64.pow(digits);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            amount / scale,
            amount % scale,
            self.currency,
            width = digits as usize
        )
    }
}

/// Why money could not be made or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code {0:?}")]
    UnknownCurrency(String),
    #[error("currency mismatch: expected {expected}, got {actual}")]
    CurrencyMismatch {
        expected: Currency,
        actual: Currency,
    },
    #[error("the amount is too large to represent")]
    Overflow,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eur(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::EUR)
    }

    #[test]
    fn currency_codes_are_parsed_in_any_case_and_normalized() {
        assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
        assert_eq!(Currency::parse("eur"), Ok(Currency::EUR));
        assert_eq!("uSd".parse::<Currency>(), Ok(Currency::USD));
        assert_eq!(Currency::parse("kwd").unwrap().code(), "KWD");
    }

    #[test]
    fn unknown_or_malformed_currency_codes_are_rejected() {
        for code in ["", "EU", "EURO", "XYZ", " EUR", "E1R", "€"] {
            assert_eq!(
                Currency::parse(code),
                Err(MoneyError::UnknownCurrency(code.to_owned())),
                "{code:?}"
            );
        }
    }

    #[test]
    fn the_built_in_list_holds_unique_three_letter_uppercase_codes() {
        for (i, (code, _)) in CURRENCIES.iter().enumerate() {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(CURRENCIES[i + 1..].iter().all(|(other, _)| other != code));
        }
        let required = "USD EUR GBP JPY CHF CAD AUD SEK NOK DKK PLN CZK INR CNY BRL MXN ZAR \
                        NZD SGD HKD KRW KWD BHD";
        for code in required.split_whitespace() {
            assert!(Currency::parse(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        let units = |code| Currency::parse(code).unwrap().minor_units();
        assert_eq!((units("JPY"), units("KRW")), (0, 0));
        assert_eq!((units("KWD"), units("BHD")), (3, 3));
        assert_eq!((units("EUR"), units("USD"), units("GBP")), (2, 2, 2));
    }

    #[test]
    fn currency_constants_agree_with_the_list() {
        for currency in [Currency::EUR, Currency::USD, Currency::GBP, Currency::JPY] {
            assert_eq!(Currency::parse(currency.code()), Ok(currency));
        }
    }

    #[test]
    fn currencies_serialize_as_their_code_and_reject_unknown_codes() {
        assert_eq!(serde_json::to_value(Currency::EUR).unwrap(), json!("EUR"));
        assert_eq!(
            serde_json::from_value::<Currency>(json!("gbp")).unwrap(),
            Currency::GBP
        );
        assert!(serde_json::from_value::<Currency>(json!("XXX")).is_err());
        assert!(serde_json::from_value::<Currency>(json!(978)).is_err());
    }

    #[test]
    fn money_serializes_as_amount_minor_and_currency() {
        let value = serde_json::to_value(eur(1234)).unwrap();
        assert_eq!(value, json!({"amountMinor": 1234, "currency": "EUR"}));
        assert_eq!(serde_json::from_value::<Money>(value).unwrap(), eur(1234));
        let unknown = json!({"amountMinor": 1, "currency": "ABC"});
        assert!(serde_json::from_value::<Money>(unknown).is_err());
    }

    #[test]
    fn adding_money_in_one_currency_sums_the_amounts() {
        assert_eq!(eur(150).checked_add(eur(-50)), Ok(eur(100)));
        assert_eq!(eur(150).checked_sub(eur(200)), Ok(eur(-50)));
    }

    #[test]
    fn arithmetic_across_currencies_is_a_mismatch() {
        let mismatch = Err(MoneyError::CurrencyMismatch {
            expected: Currency::EUR,
            actual: Currency::USD,
        });
        let usd = Money::new(1, Currency::USD);
        assert_eq!(eur(1).checked_add(usd), mismatch);
        assert_eq!(eur(1).checked_sub(usd), mismatch);
        assert_eq!(usd.ensure_currency(Currency::EUR), mismatch.map(|_| ()));
    }

    #[test]
    fn overflow_is_an_error_never_a_wrap() {
        assert_eq!(eur(i64::MAX).checked_add(eur(1)), Err(MoneyError::Overflow));
        assert_eq!(eur(i64::MIN).checked_sub(eur(1)), Err(MoneyError::Overflow));
        assert_eq!(eur(i64::MAX).checked_mul(2_u32), Err(MoneyError::Overflow));
        assert_eq!(eur(i64::MIN).checked_mul(-1_i64), Err(MoneyError::Overflow));
    }

    #[test]
    fn multiplying_scales_the_amount() {
        assert_eq!(eur(250).checked_mul(4_u32), Ok(eur(1000)));
        assert_eq!(eur(250).checked_mul(-2_i64), Ok(eur(-500)));
        assert_eq!(eur(250).checked_mul(0_u32), Ok(eur(0)));
    }

    #[test]
    fn money_displays_with_the_currency_s_minor_units() {
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(eur(1234).to_string(), "12.34 EUR");
        assert_eq!(eur(5).to_string(), "0.05 EUR");
        assert_eq!(eur(0).to_string(), "0.00 EUR");
        assert_eq!(eur(-1234).to_string(), "-12.34 EUR");
        assert_eq!(eur(-5).to_string(), "-0.05 EUR");
        assert_eq!(Money::new(1200, Currency::JPY).to_string(), "1200 JPY");
        assert_eq!(Money::new(-1200, Currency::JPY).to_string(), "-1200 JPY");
        assert_eq!(Money::new(1234, kwd).to_string(), "1.234 KWD");
        assert_eq!(Money::new(-7, kwd).to_string(), "-0.007 KWD");
        assert_eq!(eur(i64::MIN).to_string(), "-92233720368547758.08 EUR");
    }

    #[test]
    fn signs_are_reported_for_rules_on_prices_and_payments() {
        assert!(eur(-1).is_negative() && !eur(0).is_negative());
        assert!(eur(1).is_positive() && !eur(0).is_positive());
    }
}
