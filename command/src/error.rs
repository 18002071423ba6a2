//! [`ApiError`]: every way a command request can fail, mapped to a status and a JSON body.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orderflow_domain::product::Product;
use orderflow_domain::user::User;
use orderflow_domain::{Aggregate, DomainError, ErrorKind};
use orderflow_store::claims::ClaimScope;
use orderflow_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::write::WriteError;

const CONCURRENCY_CONFLICT: &str = "CONCURRENCY_CONFLICT";

/// The failure of one request. `{"error": {"code", "message"}}` is always the body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed: syntax, types, missing or unknown fields, headers.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// No token, or one that does not verify: 401 with a `WWW-Authenticate` challenge.
    #[error(transparent)]
    Unauthenticated(orderflow_store::auth::AuthError),
    /// Authenticated, but this is not theirs to do.
    #[error("{0}")]
    Forbidden(String),
    /// A business rule said no.
    #[error(transparent)]
    Rule(#[from] DomainError),
    /// Well-formed, but refers to something that cannot be used (an unknown product, ...).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// `If-Match` named another version than the stream's current one.
    #[error("the stream is at version {current}, not {expected}")]
    VersionMismatch { expected: i32, current: i32 },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The database cannot be reached right now: 503 with `Retry-After`, nothing written.
    #[error("the database is unavailable; retry shortly")]
    Unavailable,
    /// Another writer appended to `stream_id` first.
    #[error("stream {stream_id} was changed concurrently; retry")]
    StreamConflict { stream_id: uuid::Uuid },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Machine-readable, stable: `SCREAMING_SNAKE_CASE`.
    pub code: String,
    pub message: String,
    /// On version mismatches: the stream's version now, to retry against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i32>,
}

/// The cause chain of a 5xx, handed to the logging middleware through response extensions
/// so that `into_response` stays free of side effects.
#[derive(Debug, Clone)]
pub struct UnexpectedError(pub Arc<anyhow::Error>);

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound {
            code: "NOT_FOUND",
            message: format!("{what} {id} does not exist"),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::Unauthenticated(err) => (StatusCode::UNAUTHORIZED, err.code()),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::Rule(rule) if rule.kind() == ErrorKind::NotFound => {
                (StatusCode::NOT_FOUND, "NOT_FOUND")
            }
            Self::Rule(rule) => (StatusCode::UNPROCESSABLE_ENTITY, rule.code()),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::VersionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, "VERSION_MISMATCH"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::StreamConflict { .. } => (StatusCode::CONFLICT, CONCURRENCY_CONFLICT),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE"),
            Self::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Rule(rule) => Self::Rule(rule),
            WriteError::NotFound {
                stream_type,
                stream_id,
            } => Self::not_found(stream_type, stream_id),
            WriteError::UnknownReference {
                stream_type,
                stream_id,
            } => Self::Unprocessable {
                code: if stream_type == User::STREAM_TYPE {
                    "UNKNOWN_USER"
                } else if stream_type == Product::STREAM_TYPE {
                    "UNKNOWN_PRODUCT"
                } else {
                    "UNKNOWN_REFERENCE"
                },
                message: format!("{stream_type} {stream_id} does not exist"),
            },
            WriteError::VersionMismatch { expected, current } => {
                Self::VersionMismatch { expected, current }
            }
            WriteError::Conflict { stream_id } => Self::StreamConflict { stream_id },
            WriteError::Raced | WriteError::Superseded => Self::Conflict {
                code: CONCURRENCY_CONFLICT,
                message: err.to_string(),
            },
            WriteError::Taken { scope, value } => Self::taken(scope, &value),
            WriteError::CommandIdReused => Self::Unprocessable {
                code: "IDEMPOTENCY_KEY_REUSED",
                message: "this Idempotency-Key was already used for a different request".into(),
            },
            WriteError::StoredResponse(_) => {
                Self::Unexpected(anyhow::Error::new(err).context("idempotency"))
            }
            WriteError::Broken(_) => {
                Self::Unexpected(anyhow::Error::new(err).context("event store"))
            }
            WriteError::Store(store) => store.into(),
        }
    }
}

impl ApiError {
    fn taken(scope: ClaimScope, value: &str) -> Self {
        Self::Conflict {
            code: match scope {
                ClaimScope::Email => "EMAIL_TAKEN",
                ClaimScope::Sku => "SKU_TAKEN",
            },
            message: format!("{scope} {value:?} is already taken"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { stream_id, .. } => Self::StreamConflict { stream_id },
            StoreError::Raced(_) => Self::Conflict {
                code: CONCURRENCY_CONFLICT,
                message: "the command raced another one; retry".into(),
            },
            StoreError::Taken { scope, value } => Self::taken(scope, &value),
            StoreError::WrongStreamType {
                stream_id,
                expected,
                ..
            } => Self::not_found(expected, stream_id),
            StoreError::Unavailable(_) => Self::Unavailable,
            other => Self::Unexpected(anyhow::Error::new(other).context("event store")),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::from(StoreError::from(err))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(message),
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("MALFORMED_JSON", message),
            JsonRejection::JsonDataError(_) => Self::bad_request("INVALID_BODY", message),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge(message)
            }
            _ => Self::bad_request("INVALID_BODY", message),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("INVALID_PATH", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("INVALID_QUERY", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let current_version = match &self {
            Self::VersionMismatch { current, .. } => Some(*current),
            _ => None,
        };
        let message = match &self {
            Self::Unexpected(_) => "internal error; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                current_version,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Self::Unavailable = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if let Self::Unauthenticated(err) = &self {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, err.challenge());
        }
        if let Self::Unexpected(err) = self {
            response
                .extensions_mut()
                .insert(UnexpectedError(Arc::new(err)));
        }
        response
    }
}
