//! `/api/sagas`: operators look at fulfilment sagas and resume stuck ones.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use orderflow_domain::saga::{Saga, SagaCommand, SagaStatus};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::access::Authed;
use crate::error::{ApiError, ErrorBody};
use crate::exec::{run, WriteResponse};
use crate::extract::{ApiPath, ApiQuery, CommandHeaders};
use crate::saga::rows::{self, SagaRow};
use crate::startup::AppState;
use crate::write::Decide;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sagas", get(list))
        .route("/api/sagas/{id}", get(show))
        .route("/api/sagas/{id}/retry", post(retry))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    /// RUNNING, COMPENSATING, CONFIRMED, CANCELLED or STUCK; all when absent.
    state: Option<String>,
    /// At most this many sagas, oldest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Sagas by state, e.g. every STUCK one.
#[utoipa::path(get, path = "/api/sagas", tag = "sagas", params(ListParams),
    responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not an admin"), (status = 200, body = Vec<SagaRow>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Authed,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Vec<SagaRow>>, ApiError> {
    caller.require_admin()?;
    let status = match params.state.as_deref() {
        None => None,
        Some(text) => Some(SagaStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_STATE",
                "state must be RUNNING, COMPENSATING, CONFIRMED, CANCELLED or STUCK",
            )
        })?),
    };
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "INVALID_LIMIT",
            "limit must be between 1 and 1000",
        ));
    }
    let rows = rows::list(&state.pool, status.map(SagaStatus::as_str), limit).await?;
    Ok(Json(rows))
}

/// One saga, by its id or its order's id.
#[utoipa::path(get, path = "/api/sagas/{id}", tag = "sagas", params(("id" = Uuid, Path, description = "Saga id or order id")),
    responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not an admin"), (status = 200, body = SagaRow), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<SagaRow>, ApiError> {
    caller.require_admin()?;
    rows::get(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(no_saga)
}

/// Resume a STUCK saga: its failed action is tried again, with a fresh attempt count.
#[utoipa::path(post, path = "/api/sagas/{id}/retry", tag = "sagas", params(("id" = Uuid, Path, description = "Saga id or order id")),
    responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not an admin"), (status = 200, body = WriteResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let row = rows::get(&state.pool, id).await?.ok_or_else(no_saga)?;
    let command = Decide::<Saga>::existing(row.saga_id, SagaCommand::Resume { at: Utc::now() });
    let resumed = run(&state, &headers, &(), StatusCode::OK, command).await;
    // After the resume, whatever came of it: a look that comes before the fact it announces
    // can be taken and lost before the fact; and a retry refused because the saga already
    // runs is how a resume whose look was lost gets one.
    rows::nudge(&state.pool, row.saga_id).await?;
    resumed
}

fn no_saga() -> ApiError {
    ApiError::NotFound {
        code: "NOT_FOUND",
        message: "no saga with this id or order id".into(),
    }
}
