//! [`QueryError`]: what a resolver can fail with, each variant carrying the stable
//! `extensions.code` clients branch on, and the codes the service gives every other error.

use std::sync::Arc;

use async_graphql::ErrorExtensionValues;
use uuid::Uuid;

/// The `extensions.code` of every error the service answers with.
pub mod code {
    /// An argument is malformed or out of range (a non-UUID id, `first` above the cap, a
    /// cursor from elsewhere, a variable of the wrong type).
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// `minVersion` (or `X-Min-Position`) was not reached within the configured wait.
    pub const STALE: &str = "STALE";
    /// The query ran longer than the configured query timeout.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// A `minVersion` wait or a subscription was refused: the process already watches as
    /// many orders as it is configured to.
    pub const TOO_MANY_WATCHES: &str = "TOO_MANY_WATCHES";
    /// Something failed on our side; the cause is logged, not returned.
    pub const INTERNAL: &str = "INTERNAL";
    /// The query's complexity is above the configured limit.
    pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// The query nests fields deeper than the configured limit.
    pub const QUERY_TOO_DEEP: &str = "QUERY_TOO_DEEP";
    /// The document is not GraphQL.
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The document does not fit the schema (unknown field, missing argument, ...).
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// A persisted-query request named a hash this process does not know: send the
    /// document with it (Apollo's convention).
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    /// The HTTP request carries no GraphQL request (bad JSON, wrong content type).
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// No bearer token, or one that does not verify (HTTP 401).
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The token has expired (HTTP 401, or the end of a subscription).
    pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
    /// The token is good but its roles do not allow this field.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Too many requests from one token subject or client IP (HTTP 429, with Retry-After).
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// Too many requests in flight (HTTP 503, with Retry-After).
    pub const OVERLOADED: &str = "OVERLOADED";
}

/// A resolver's failure. Converted into a GraphQL error with `extensions.code`; internal
/// causes travel as the error's `source` so the logging extension can report them.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    BadUserInput(String),
    #[error("order {order_id} has not reached version {min_version} within {waited_ms} ms")]
    Stale {
        order_id: Uuid,
        min_version: i32,
        /// The version the read model had when the wait ended; `None` if it had no such order.
        current_version: Option<i32>,
        waited_ms: u128,
    },
    #[error(
        "the views this read needs have not applied every event up to position \
         {min_position} within {waited_ms} ms; {relay}"
    )]
    StaleViews {
        min_position: i64,
        /// The views still behind, with how far each has applied.
        views: Vec<crate::progress::ViewProgress>,
        waited_ms: u128,
        /// Where the relay stands, in words.
        relay: String,
        /// The position the relay's cursor is at, if it has one.
        relay_position: Option<i64>,
    },
    #[error(
        "too many minVersion reads and subscriptions are waiting (at most {limit}); retry later"
    )]
    TooManyWatches { limit: usize },
    #[error(transparent)]
    Unauthenticated(orderflow_store::auth::AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error")]
    Internal(#[source] Arc<anyhow::Error>),
}

impl QueryError {
    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput(message.into())
    }

    pub(crate) fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(Arc::new(err.into()))
    }
}

impl From<sqlx::Error> for QueryError {
    fn from(err: sqlx::Error) -> Self {
        // SQLSTATE class 22 (data exception): a value from the query that PostgreSQL cannot
        // take, such as a timestamp out of range or a NUL in a search.
        match &err {
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => {
                Self::bad_input(format!(
                    "a value in the query is out of range: {}",
                    db.message()
                ))
            }
            _ => Self::internal(err),
        }
    }
}

impl From<Arc<sqlx::Error>> for QueryError {
    fn from(err: Arc<sqlx::Error>) -> Self {
        Self::internal(anyhow::Error::new(err).context("loading a batch"))
    }
}

impl From<QueryError> for async_graphql::Error {
    fn from(err: QueryError) -> Self {
        let mut extensions = ErrorExtensionValues::default();
        let message = err.to_string();
        let source = match err {
            QueryError::BadUserInput(_) => {
                extensions.set("code", code::BAD_USER_INPUT);
                None
            }
            QueryError::Stale {
                min_version,
                current_version,
                ..
            } => {
                extensions.set("code", code::STALE);
                extensions.set("minVersion", min_version);
                extensions.set("currentVersion", current_version);
                None
            }
            QueryError::StaleViews {
                min_position,
                views,
                relay_position,
                ..
            } => {
                crate::progress::stale_extensions(
                    &mut extensions,
                    min_position,
                    relay_position,
                    &views,
                );
                None
            }
            QueryError::TooManyWatches { .. } => {
                extensions.set("code", code::TOO_MANY_WATCHES);
                None
            }
            QueryError::Unauthenticated(err) => {
                extensions.set("code", err.code());
                None
            }
            QueryError::Forbidden(_) => {
                extensions.set("code", code::FORBIDDEN);
                None
            }
            QueryError::Internal(cause) => {
                extensions.set("code", code::INTERNAL);
                Some(cause as Arc<dyn std::any::Any + Send + Sync>)
            }
        };
        async_graphql::Error {
            message,
            source,
            extensions: Some(extensions),
        }
    }
}

/// An error raised outside resolvers (limits, timeout, transport), with its code.
pub(crate) fn server_error(code: &str, message: impl Into<String>) -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(message, None);
    set_code(&mut error, code);
    error
}

/// The error's `extensions.code`, if it has one.
pub(crate) fn code_of(error: &async_graphql::ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code),
        _ => None,
    }
}

/// Give `error` a code unless it already has one.
pub(crate) fn set_code(error: &mut async_graphql::ServerError, code: &str) {
    if code_of(error).is_none() {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}
