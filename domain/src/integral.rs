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

/// 2^53: every integer below it has a float of its own, and no other integer rounds to it.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

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
        // From 2^53 on a float no longer holds every integer: `9007199254740993.0` arrives
        // as ...992, indistinguishable from it. Such a number is refused rather than read as
        // another amount; integers written as integers have no such limit.
        if value.fract() == 0.0 && value.abs() < MAX_EXACT {
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

    #[derive(Debug, Deserialize)]
    struct Wide {
        #[serde(deserialize_with = "super::deserialize")]
        n: i64,
    }

    #[test]
    fn floats_past_two_to_the_53_are_refused_not_rounded() {
        let wide = |json: &str| serde_json::from_str::<Wide>(json).map(|w| w.n);
        assert_eq!(wide(r#"{"n": 9007199254740991.0}"#).unwrap(), (1 << 53) - 1);
        assert!(wide(r#"{"n": 9007199254740992.0}"#).is_err());
        assert!(wide(r#"{"n": 9007199254740993.0}"#).is_err());
        assert_eq!(wide(r#"{"n": 9007199254740993}"#).unwrap(), (1 << 53) + 1);
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
        assert!(n(r#"{"n": -0.0}"#) == Ok(0));
        assert!(n(r#"{"n": "3"}"#).is_err());
    }
}
