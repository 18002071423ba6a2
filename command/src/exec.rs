//! The write pipeline every command goes through: idempotency, one transaction for
//! load → decide → claim → append, retries on lost races, and the response.

use std::future::Future;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orderflow_domain::Aggregate;
use orderflow_store::idempotency::{self, StoredResponse};
use orderflow_store::{EventMetadata, Loaded, NewEvent};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::CommandHeaders;
use crate::startup::AppState;

/// How often a command without `If-Match` is re-decided after losing a race for its stream.
const MAX_ATTEMPTS: u32 = 5;

/// The answer to every successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteResponse {
    pub stream_id: Uuid,
    /// The stream's version after the command (unchanged when the command was a no-op).
    pub version: i32,
    /// Global position of the stream's last event.
    pub position: Option<i64>,
}

/// What one attempt of a command knows: the metadata its events carry and the version the
/// client expects.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub metadata: EventMetadata,
    pub if_match: Option<i32>,
}

impl CommandContext {
    /// Hold the client to its `If-Match`.
    pub fn expect_version(&self, current: i32) -> Result<(), ApiError> {
        match self.if_match {
            Some(expected) if expected != current => {
                Err(ApiError::VersionMismatch { expected, current })
            }
            _ => Ok(()),
        }
    }

    /// Append what `decided` returned to a stream loaded in this transaction.
    pub async fn append<A: Aggregate>(
        &self,
        tx: &mut PgConnection,
        stream_id: Uuid,
        loaded: &Loaded<A>,
        decided: Vec<A::Event>,
    ) -> Result<WriteResponse, ApiError> {
        if decided.is_empty() {
            return Ok(WriteResponse {
                stream_id,
                version: loaded.version,
                position: loaded.last_position,
            });
        }
        let events: Vec<NewEvent> = decided.iter().map(NewEvent::from_domain).collect();
        let outcome = orderflow_store::append(
            tx,
            stream_id,
            A::STREAM_TYPE,
            loaded.version,
            &events,
            &self.metadata,
        )
        .await?;
        Ok(WriteResponse {
            stream_id,
            version: outcome.version,
            position: Some(outcome.last_position),
        })
    }

    /// The common shape: load one aggregate, check `If-Match`, decide, append.
    pub async fn decide<A: Aggregate>(
        &self,
        tx: &mut PgConnection,
        stream_id: Uuid,
        command: A::Command,
    ) -> Result<WriteResponse, ApiError> {
        let loaded = orderflow_store::load::<A>(tx, stream_id).await?;
        self.expect_version(loaded.version)?;
        let decided = loaded.state.handle(command)?;
        self.append(tx, stream_id, &loaded, decided).await
    }
}

/// One command: everything it does happens in `tx` and is rolled back if it fails.
pub trait WriteCommand: Send + Sync {
    fn execute(
        &self,
        tx: &mut PgConnection,
        ctx: &CommandContext,
    ) -> impl Future<Output = Result<WriteResponse, ApiError>> + Send;
}

/// Run `command` for a request, honouring `Idempotency-Key` and `If-Match`.
///
/// `fingerprint` identifies the request (method, path, body) so that reusing a key for
/// another request is refused rather than answered with an unrelated response.
pub async fn run<C: WriteCommand>(
    state: &AppState,
    headers: &CommandHeaders,
    fingerprint: String,
    success: StatusCode,
    command: C,
) -> Result<Response, ApiError> {
    let key = headers.idempotency_key.as_deref();
    if let Some(key) = key {
        if let Some(stored) = idempotency::find(&state.pool, key).await? {
            return replay(stored, &fingerprint);
        }
    }
    let ctx = CommandContext {
        metadata: EventMetadata {
            event_id: Uuid::nil(),
            correlation_id: headers.correlation_id,
            causation_id: None,
            command_id: key.map_or_else(|| Uuid::now_v7().to_string(), str::to_owned),
            actor: None,
        },
        if_match: headers.if_match,
    };
    let mut attempt = 1;
    loop {
        let mut tx = state.pool.begin().await?;
        let error = match command.execute(&mut tx, &ctx).await {
            Ok(written) => {
                let Some(key) = key else {
                    tx.commit().await?;
                    return Ok(respond(success, &written, false));
                };
                let stored = StoredResponse {
                    fingerprint: fingerprint.clone(),
                    status: success.as_u16() as i16,
                    response: serde_json::to_value(written).expect("response serializes"),
                };
                if idempotency::record(&mut tx, key, &stored).await? {
                    tx.commit().await?;
                    return Ok(respond(success, &written, false));
                }
                // A concurrent retry with the same key committed first: answer as it did.
                tx.rollback().await?;
                let stored = idempotency::find(&state.pool, key).await?.ok_or_else(|| {
                    anyhow::anyhow!("idempotency key {key:?} vanished after a conflict")
                })?;
                return replay(stored, &fingerprint);
            }
            Err(error) => error,
        };
        tx.rollback().await?;
        if let (ApiError::Conflict { .. } | ApiError::StreamConflict { .. }, Some(key)) =
            (&error, key)
        {
            // The race (for the stream or for a unique value) may have been lost to a
            // retry of this very request: answer as it did.
            if let Some(stored) = idempotency::find(&state.pool, key).await? {
                return replay(stored, &fingerprint);
            }
        }
        // With If-Match the client decided on a version that is gone: say which is current.
        if let (ApiError::StreamConflict { stream_id }, Some(expected)) = (&error, headers.if_match)
        {
            let current: Option<i32> =
                sqlx::query_scalar("select max(version) from events where stream_id = $1")
                    .bind(stream_id)
                    .fetch_one(&state.pool)
                    .await?;
            return Err(ApiError::VersionMismatch {
                expected,
                current: current.unwrap_or(0),
            });
        }
        // Without If-Match the client asked for no particular version: decide again.
        if error.is_concurrency_conflict() && headers.if_match.is_none() && attempt < MAX_ATTEMPTS {
            attempt += 1;
            tracing::debug!(attempt, "lost a race for the stream; deciding again");
            continue;
        }
        return Err(error);
    }
}

fn replay(stored: StoredResponse, fingerprint: &str) -> Result<Response, ApiError> {
    if stored.fingerprint != fingerprint {
        return Err(ApiError::Unprocessable {
            code: "IDEMPOTENCY_KEY_REUSED",
            message: "this Idempotency-Key was already used for a different request".into(),
        });
    }
    let written: WriteResponse = serde_json::from_value(stored.response)
        .map_err(|err| anyhow::Error::new(err).context("stored idempotent response"))?;
    let status = StatusCode::from_u16(stored.status as u16).unwrap_or(StatusCode::OK);
    Ok(respond(status, &written, true))
}

fn respond(status: StatusCode, written: &WriteResponse, replayed: bool) -> Response {
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

/// A command on one existing stream that needs nothing but that stream's state.
pub struct Decide<A: Aggregate> {
    pub stream_id: Uuid,
    pub command: A::Command,
}

impl<A> WriteCommand for Decide<A>
where
    A: Aggregate + Send + Sync,
    A::Command: Clone + Send + Sync,
    A::Event: Send + Sync,
{
    async fn execute(
        &self,
        tx: &mut PgConnection,
        ctx: &CommandContext,
    ) -> Result<WriteResponse, ApiError> {
        ctx.decide::<A>(tx, self.stream_id, self.command.clone())
            .await
    }
}
