//! Trimming and length rules shared by the free-text fields of several aggregates.

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

/// A user or product name, trimmed.
pub(crate) fn name(input: &str) -> Result<String, DomainError> {
    bounded(input, MAX_NAME).ok_or(DomainError::InvalidName { max: MAX_NAME })
}

/// Why something was cancelled, declined or voided, trimmed.
pub(crate) fn reason(input: &str) -> Result<String, DomainError> {
    bounded(input, MAX_REASON).ok_or(DomainError::InvalidReason { max: MAX_REASON })
}

#[cfg(test)]
mod tests {
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
}
