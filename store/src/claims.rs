//! Values unique across streams (a user's email, a product's SKU), claimed and released by
//! the appending statement itself ([`crate::Write`]), so that two concurrent registrations
//! of one email end as one success and one [`crate::StoreError::Taken`].

use std::fmt;

/// What kind of value is unique; stored as `unique_claims.scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimScope {
    Email,
    Sku,
}

impl ClaimScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sku => "sku",
        }
    }
}

impl fmt::Display for ClaimScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value to claim for, or release from, the stream being appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub scope: ClaimScope,
    /// Normalised: the form uniqueness is decided on.
    pub value: String,
}
