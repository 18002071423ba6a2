//! Trimming and length rules shared by the free-text fields of several aggregates, the
//! [`Name`] they produce, and `parsed_string!`, which gives each parsed text value
//! ([`Name`], [`crate::Email`], [`crate::Sku`]) the same string-like surface.

use crate::DomainError;

/// Longest name a user or product may have, in characters.
pub(crate) const MAX_NAME: usize = 200;
/// Longest reason for a cancellation, decline or void, in characters.
pub(crate) const MAX_REASON: usize = 500;

/// `input` trimmed, if that leaves 1 to `max_chars` characters and no control characters
/// (a NUL cannot even be stored in PostgreSQL text; the others only hide in logs and UIs).
pub(crate) fn bounded(input: &str, max_chars: usize) -> Option<String> {
    let trimmed = input.trim();
    (!trimmed.is_empty()
        && trimmed.chars().count() <= max_chars
        && !trimmed.chars().any(char::is_control))
    .then(|| trimmed.to_owned())
}

/// Why something was cancelled, declined or voided, trimmed.
pub(crate) fn reason(input: &str) -> Result<String, DomainError> {
    bounded(input, MAX_REASON).ok_or(DomainError::InvalidReason { max: MAX_REASON })
}

/// Implements, for a `struct $name(String)` whose `$name::parse(&str) -> Result<Self,
/// DomainError>` is the only way in: `as_str`, `Display`, `AsRef<str>`, `TryFrom<String>`,
/// `TryFrom<&str>`, `FromStr`, `From<$name> for String`, serde as a plain string that is
/// parsed when read, and `deserialize_stored` for event fields, which reads the string as
/// stored.
macro_rules! parsed_string {
    ($name:ident) => {
        impl $name {
            /// The parsed (normalized) text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl $name {
            /// Reads the value an event stored, without parsing it again: events are facts,
            /// so a rule tightened later must not make history unreadable. Event fields use
            /// it through `#[serde(deserialize_with = "...")]`.
            pub(crate) fn deserialize_stored<'de, D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                <String as ::serde::Deserialize>::deserialize(deserializer).map(Self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::DomainError;

            fn try_from(input: String) -> Result<Self, Self::Error> {
                Self::parse(&input)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $crate::DomainError;

            fn try_from(input: &str) -> Result<Self, Self::Error> {
                Self::parse(input)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::DomainError;

            fn from_str(input: &str) -> Result<Self, Self::Err> {
                Self::parse(input)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let input = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                Self::parse(&input).map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use parsed_string;

/// A user or product name: trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Longest name, in characters.
    pub const MAX_LEN: usize = MAX_NAME;

    /// Trims `input` and checks its length and characters.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        bounded(input, MAX_NAME)
            .map(Self)
            .ok_or(DomainError::InvalidName { max: MAX_NAME })
    }
}

parsed_string!(Name);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_is_trimmed_and_counted_in_characters_not_bytes() {
        assert_eq!(bounded("  Ada  ", 3).as_deref(), Some("Ada"));
        assert_eq!(bounded("ééé", 3).as_deref(), Some("ééé"));
        assert_eq!(bounded("éééé", 3), None);
        assert_eq!(bounded(" \t\n ", 3), None);
        assert_eq!(bounded("", 3), None);
        assert_eq!(bounded("A\u{0}a", 3), None);
        assert_eq!(bounded("A\u{7}", 3), None);
    }

    #[test]
    fn a_name_is_stored_as_a_plain_string_and_parsed_again_when_read() {
        let name = Name::parse("  Zoë Lovelace ").unwrap();
        assert_eq!(name.as_str(), "Zoë Lovelace");
        assert_eq!(serde_json::to_value(&name).unwrap(), json!("Zoë Lovelace"));
        let read: Name = serde_json::from_value(json!("Zoë Lovelace")).unwrap();
        assert_eq!(read, name);
        assert!(serde_json::from_value::<Name>(json!("  ")).is_err());
        assert!(serde_json::from_value::<Name>(json!(42)).is_err());
    }

    #[test]
    fn names_parse_through_every_conversion_alike() {
        let parsed = Name::parse(" Ada ").unwrap();
        assert_eq!(Name::try_from(" Ada ".to_owned()), Ok(parsed.clone()));
        assert_eq!(Name::try_from(" Ada "), Ok(parsed.clone()));
        assert_eq!(" Ada ".parse::<Name>(), Ok(parsed.clone()));
        assert_eq!(parsed.to_string(), "Ada");
        assert_eq!(String::from(parsed), "Ada");
        let error = Name::parse(&"x".repeat(201)).unwrap_err();
        assert_eq!(error.code(), "INVALID_NAME");
    }
}
