//! Integers in JSON as JSON Schema counts them: `2` and `2.0` are the same integer (a number
//! with no fractional part), so a body that a schema validator calls valid is read as such.
//! Use with `#[serde(deserialize_with = "crate::integral::deserialize")]` on integer fields.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// An integer of type `T`, from a JSON integer or a float with no fractional part, within
/// `T`'s range.
pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_any(Integral(PhantomData))
}

struct Integral<T>(PhantomData<T>);

impl<T: TryFrom<i128>> Integral<T> {
    fn fit<E: de::Error>(value: i128) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::custom(format!("{value} is out of range")))
    }
}

impl<'de, T: TryFrom<i128>> Visitor<'de> for Integral<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        Self::fit(value.into())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        Self::fit(value.into())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        // Beyond 2^63 no float is an exact i64 or u32 anyway; the range check refuses it.
        if value.fract() == 0.0 && value.abs() < 1e19 {
            Self::fit(value as i128)
        } else {
            Err(E::invalid_type(de::Unexpected::Float(value), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::deserialize")]
        n: u32,
    }

    fn n(json: &str) -> Result<u32, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_count_as_integers_and_ranges_hold() {
        assert_eq!(n(r#"{"n": 3}"#), Ok(3));
        assert_eq!(n(r#"{"n": 3.0}"#), Ok(3));
        assert_eq!(n(r#"{"n": 4294967295}"#), Ok(u32::MAX));
        assert!(n(r#"{"n": 4294967296}"#).is_err());
        assert!(n(r#"{"n": -1}"#).is_err());
        assert!(n(r#"{"n": 2.5}"#).is_err());
        assert!(n(r#"{"n": 1e300}"#).is_err());
        assert!(n(r#"{"n": "3"}"#).is_err());
    }
}
