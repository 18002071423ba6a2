//! Extractors whose rejections are [`ApiError`]s, and the command headers.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use uuid::Uuid;

use orderflow_store::auth::{Authenticated, Caller, Scope};

use crate::error::ApiError;
use crate::write::{Dedupe, Meta};

/// `axum::Json` with JSON error bodies (400 / 413 / 415 instead of plain text).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with JSON error bodies.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with JSON error bodies.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

pub const CORRELATION_ID: &str = "x-correlation-id";

/// The request's correlation id, parsed once by the correlation middleware and kept in the
/// request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct CorrelationId(pub Uuid);
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What a command request says about itself beyond its body.
#[derive(Debug, Clone)]
pub struct CommandHeaders {
    /// From `X-Correlation-Id` (a new one when the client sent none).
    pub correlation_id: Uuid,
    /// From `Idempotency-Key`: a retry with the same key gets the first response back.
    pub idempotency_key: Option<String>,
    /// From `If-Match`: the stream version the client decided on.
    pub if_match: Option<i32>,
    /// Method and path: with the body, what a repeated Idempotency-Key must match.
    target: String,
    /// Who asks, as authenticated (the route's [`crate::access`] extractor refused
    /// whoever may not ask).
    caller: Caller,
}

impl CommandHeaders {
    /// What the write path needs to know about this request. The fingerprint (a hash of
    /// method, path and `body`) is only computed when there is an Idempotency-Key to hold
    /// it to.
    ///
    /// The caller becomes the events' actor. A customer's command only reaches their own
    /// streams, and anyone without a scope (anonymous registration) reaches no existing
    /// stream. Idempotency keys are the caller's own: two subjects using one key never
    /// meet.
    pub fn meta(&self, body: &impl serde::Serialize, success: StatusCode) -> Meta {
        let principal = self.caller.principal();
        let owner = match self.caller.scope() {
            Some(Scope::All) => None,
            Some(Scope::User(user)) => Some(user),
            None => Some(Uuid::nil()),
        };
        Meta {
            correlation_id: self.correlation_id,
            causation_id: None,
            actor: principal.map(|p| p.sub.clone()),
            actor_roles: principal.map(|p| p.roles()).unwrap_or_default(),
            owner,
            expected_version: self.if_match,
            dedupe: self.idempotency_key.as_ref().map(|key| Dedupe {
                // Length-prefixed, so no subject and key can spell another pair (nor the
                // saga's reserved prefix).
                command_id: match (&self.caller, principal) {
                    (_, Some(p)) => format!("{}:{}:{key}", p.sub.len(), p.sub),
                    // Anonymous callers share a namespace of their own (a subject is
                    // never empty).
                    (Caller::Anonymous, None) => format!("0::{key}"),
                    (_, None) => key.clone(),
                },
                fingerprint: crate::exec::fingerprint(&self.target, body),
                status: success.as_u16() as i16,
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CommandHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let target = format!("{} {}", parts.method, parts.uri.path());
        let correlation_id = parts
            .extensions
            .get::<CorrelationId>()
            .map_or_else(Uuid::now_v7, |id| id.0);
        let caller = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(Ok(caller))) => caller.clone(),
            _ => Caller::Anonymous,
        };
        from_headers(&parts.headers, correlation_id, target, caller)
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map(str::trim).map_err(|_| {
                ApiError::bad_request("INVALID_HEADER", format!("{name} is not visible ASCII"))
            })
        })
        .transpose()
}

fn from_headers(
    headers: &HeaderMap,
    correlation_id: Uuid,
    target: String,
    caller: Caller,
) -> Result<CommandHeaders, ApiError> {
    let idempotency_key = match header(headers, IDEMPOTENCY_KEY)? {
        Some(key)
            if key.is_empty()
                || key.len() > 255
                || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            return Err(ApiError::bad_request(
                "INVALID_HEADER",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ))
        }
        // The saga's command ids live under this prefix; a client key there could answer
        // (and so block) one of the saga's commands.
        Some(key) if key.starts_with(orderflow_store::idempotency::RESERVED_PREFIX) => {
            return Err(ApiError::bad_request(
                "INVALID_HEADER",
                "Idempotency-Key must not start with \"saga:\"",
            ))
        }
        other => other.map(str::to_owned),
    };
    let if_match = header(headers, "if-match")?
        .map(parse_if_match)
        .transpose()?
        .flatten();
    Ok(CommandHeaders {
        correlation_id,
        idempotency_key,
        if_match,
        target,
        caller,
    })
}

/// The client's `X-Correlation-Id`, a new one when it sent none.
pub fn correlation_id(headers: &HeaderMap) -> Result<Uuid, ApiError> {
    match header(headers, CORRELATION_ID)? {
        None => Ok(Uuid::now_v7()),
        Some(value) => Uuid::parse_str(value).map_err(|_| {
            ApiError::bad_request("INVALID_HEADER", "X-Correlation-Id must be a UUID")
        }),
    }
}

/// `3`, `"3"` and `W/"3"` name version 3 (up to nine digits); `*` asks for no particular
/// version. The OpenAPI document declares exactly this grammar ([`IF_MATCH_PATTERN`]).
fn parse_if_match(value: &str) -> Result<Option<i32>, ApiError> {
    if value == "*" {
        return Ok(None);
    }
    let quoted = value
        .strip_prefix("W/")
        .unwrap_or(value)
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'));
    let digits = match quoted {
        Some(digits) => digits,
        None if !value.starts_with("W/") => value,
        None => "",
    };
    if (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(digits.parse().ok());
    }
    Err(ApiError::bad_request(
        "INVALID_HEADER",
        "If-Match must be a stream version such as \"3\" (up to nine digits), or *",
    ))
}

/// What `If-Match` may hold (see [`parse_if_match`]).
pub const IF_MATCH_PATTERN: &str = r#"^(\*|(W/)?"[0-9]{1,9}"|[0-9]{1,9})$"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_bare_quoted_and_weak_versions() {
        assert_eq!(parse_if_match("3").unwrap(), Some(3));
        assert_eq!(parse_if_match("\"3\"").unwrap(), Some(3));
        assert_eq!(parse_if_match("W/\"3\"").unwrap(), Some(3));
        assert_eq!(parse_if_match("*").unwrap(), None);
        assert!(parse_if_match("abc").is_err());
        assert!(parse_if_match("-1").is_err());
    }

    #[test]
    fn if_match_refuses_what_its_documented_pattern_refuses() {
        assert_eq!(parse_if_match("000000007").unwrap(), Some(7));
        assert_eq!(
            parse_if_match("W/\"999999999\"").unwrap(),
            Some(999_999_999)
        );
        for refused in [
            "",
            "W/3",
            "\"\"3",
            "\"3",
            "3\"",
            "1234567890",
            "+3",
            " 3",
            "W/",
            "**",
        ] {
            assert!(parse_if_match(refused).is_err(), "{refused:?}");
        }
    }
}
