//! The HTTP side of a command: headers into [`Meta`], the [`Writer`]'s answer into a
//! response. Everything else happens in [`crate::write`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::CommandHeaders;
use crate::startup::AppState;
use crate::write::{Command, Executed};

#[cfg(doc)]
use crate::write::{Meta, Writer};

/// The answer to every successful write.
pub use crate::write::Outcome as WriteResponse;

/// Run `command` for a request whose body was `body`, answering `success` when it is new.
pub async fn run<C: Command>(
    state: &AppState,
    headers: &CommandHeaders,
    body: &impl Serialize,
    success: StatusCode,
    command: C,
) -> Result<Response, ApiError> {
    let meta = headers.meta(body, success);
    Ok(match state.writer.execute(&meta, &command).await? {
        Executed::New(outcome) => respond(success, outcome, false),
        Executed::Replayed { outcome, status } => {
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            respond(status, outcome, true)
        }
    })
}

fn respond(status: StatusCode, written: WriteResponse, replayed: bool) -> Response {
    let mut response = (status, Json(written)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", written.version)).expect("digits are ASCII"),
    );
    if status == StatusCode::CREATED {
        let location = format!("/api/streams/{}/events", written.stream_id);
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).expect("a path is ASCII"),
        );
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// A stable identity of a request (`"METHOD /path"` and its body) for `Idempotency-Key`
/// checks.
pub fn fingerprint(target: &str, body: &impl Serialize) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(target.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(body).expect("request bodies serialize"));
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
