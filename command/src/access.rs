//! Who asks, and what they may do: the [`Authed`] and [`MaybeAuthed`] extractors read the
//! caller that [`orderflow_store::auth::authenticate`] verified; handlers ask them for a
//! [`Scope`] or for an admin.
//!
//! The rules: customers register themselves, create orders for themselves, change, place
//! and cancel their own orders and read their own user's and orders' streams; admins do
//! everything. A customer asking for something of someone else's hears "not found", as
//! for something that does not exist.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use orderflow_store::auth::{AuthError, Authenticated, Caller, Scope};

use crate::error::ApiError;

/// A caller with a valid token (or any caller while authentication is off) who may act
/// as a customer or an admin: 401 without a token, 403 with a token that has neither role.
#[derive(Debug, Clone)]
pub struct Authed {
    pub caller: Caller,
    pub scope: Scope,
}

impl Authed {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::All => Ok(()),
            Scope::User(_) => Err(ApiError::forbidden("this needs the admin role")),
        }
    }

    /// 403 unless `user` is the caller (or the caller an admin): for ids named in a
    /// request's body, which say nothing about what exists.
    pub fn require_user(&self, user: uuid::Uuid) -> Result<(), ApiError> {
        match self.scope.covers(user) {
            true => Ok(()),
            false => Err(ApiError::forbidden("customers act only for themselves")),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let MaybeAuthed(caller) = MaybeAuthed::from_request_parts(parts, _state).await?;
        if caller == Caller::Anonymous {
            return Err(ApiError::Unauthenticated(AuthError::Missing));
        }
        let scope = caller.scope().ok_or_else(|| {
            ApiError::forbidden("the token carries neither the customer nor the admin role")
        })?;
        Ok(Self { caller, scope })
    }
}

/// The caller of a route that also answers without a token (registration): anonymous is
/// allowed, a token that does not verify is not.
#[derive(Debug, Clone)]
pub struct MaybeAuthed(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuthed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(Ok(caller))) => Ok(Self(caller.clone())),
            Some(Authenticated(Err(err))) => Err(ApiError::Unauthenticated(err.clone())),
            // The router always authenticates; a request that skipped it is nobody.
            None => Ok(Self(Caller::Anonymous)),
        }
    }
}
