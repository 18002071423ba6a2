//! `GET /api/streams/{id}/events`: a stream exactly as stored, for audits and debugging
//! (admins any; customers their own user and their orders).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use orderflow_store::{EventMetadata, StoredEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use orderflow_domain::order::Order;
use orderflow_domain::user::User;
use orderflow_domain::Aggregate;
use orderflow_store::auth::Scope;

use crate::access::Authed;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::saga::ACTOR as SAGA_ACTOR;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/streams/{id}/events", get(read))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadParams {
    /// First version to return (1-based).
    #[param(minimum = 1)]
    from_version: Option<i32>,
    /// At most this many events (default and maximum 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamPage {
    pub stream_id: Uuid,
    pub stream_type: String,
    /// The stream's current version, whatever page this is.
    pub version: i32,
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub position: i64,
    pub version: i32,
    pub event_type: String,
    pub schema_version: i16,
    pub data: serde_json::Value,
    #[schema(value_type = Object)]
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

impl From<StoredEvent> for EventView {
    fn from(event: StoredEvent) -> Self {
        Self {
            position: event.position,
            version: event.version,
            event_type: event.event_type,
            schema_version: event.schema_version,
            data: event.payload,
            metadata: event.metadata,
            recorded_at: event.recorded_at,
        }
    }
}

const MAX_PAGE: i64 = 1000;

/// Read a stream's events with their versions and metadata.
#[utoipa::path(get, path = "/api/streams/{id}/events", tag = "streams",
    params(("id" = Uuid, Path), ReadParams),
    responses((status = 200, body = StreamPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such stream, or one a customer may not read")))]
pub async fn read(
    State(state): State<AppState>,
    caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<StreamPage>, ApiError> {
    let from_version = params.from_version.unwrap_or(1);
    let limit = params.limit.unwrap_or(MAX_PAGE);
    if from_version < 1 || !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("fromVersion must be at least 1 and limit between 1 and {MAX_PAGE}"),
        ));
    }
    let head: Option<(String, i32)> = sqlx::query_as(
        "select stream_type, version from events where stream_id = $1 order by version desc limit 1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((stream_type, version)) = head else {
        return Err(ApiError::not_found("stream", id));
    };
    if !visible(&state, &caller, id, &stream_type).await? {
        return Err(ApiError::not_found("stream", id));
    }
    let mut events = orderflow_store::read_stream(&state.pool, id, from_version, limit).await?;
    if let Some(principal) = caller
        .caller
        .principal()
        .filter(|_| !caller.caller.is_admin())
    {
        // A customer sees who acted on their stream, not another subject's id or keys.
        for event in &mut events {
            let metadata = &mut event.metadata;
            if metadata.actor.as_deref() != Some(principal.sub.as_str()) {
                metadata.command_id.clear();
                if metadata.actor.is_some() && metadata.actor.as_deref() != Some(SAGA_ACTOR) {
                    metadata.actor = Some("staff".into());
                    metadata.actor_roles.clear();
                }
            }
        }
    }
    Ok(Json(StreamPage {
        stream_id: id,
        stream_type,
        version,
        events: events.into_iter().map(EventView::from).collect(),
    }))
}

/// Whether the caller may read stream `id`: admins any; customers their own user stream and
/// their own orders. Not products: their streams hold every customer's reservations (the
/// catalogue is GraphQL's `products`).
async fn visible(
    state: &AppState,
    caller: &Authed,
    id: Uuid,
    stream_type: &str,
) -> Result<bool, ApiError> {
    let Scope::User(user) = caller.scope else {
        return Ok(true);
    };
    Ok(match stream_type {
        _ if stream_type == User::STREAM_TYPE => id == user,
        _ if stream_type == Order::STREAM_TYPE => {
            let order = state.writer.read::<Order>(id, false).await?;
            order.state.user_id() == Some(user)
        }
        _ => false,
    })
}
