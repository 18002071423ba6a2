//! `/api/users`: registration and profile changes. Emails are unique across users.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use orderflow_domain::user::{User, UserCommand};
use orderflow_domain::{Email, Name};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use orderflow_store::auth::{Caller, Scope};

use crate::access::{Authed, MaybeAuthed};
use crate::error::{ApiError, ErrorBody};
use crate::exec::{run, WriteResponse};
use crate::extract::{ApiJson, ApiPath, CommandHeaders};
use crate::startup::AppState;
use crate::write::Decide;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(register))
        .route("/api/users/{id}/name", post(rename))
        .route("/api/users/{id}/email", post(change_email))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterUser {
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    #[schema(example = "ada@example.com")]
    pub email: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameUser {
    pub name: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeEmail {
    pub email: String,
}

/// Register a user. Open to anyone (rate-limited per client IP); a customer's token
/// registers the user its `sub` names, so that the identity provider's subject and the
/// user id are one.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = RegisterUser, security((), ("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, body = WriteResponse, description = "Registered"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody, description = "A token that does not verify"),
        (status = 403, body = ErrorBody, description = "A token with neither role"),
        (status = 409, body = ErrorBody, description = "EMAIL_TAKEN"),
        (status = 422, body = ErrorBody, description = "A broken rule, or ALREADY_EXISTS for a customer registering twice"),
        (status = 429, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    MaybeAuthed(caller): MaybeAuthed,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<RegisterUser>,
) -> Result<Response, ApiError> {
    let command = UserCommand::Register {
        name: Name::parse(&body.name)?,
        email: Email::parse(&body.email)?,
    };
    let command = match caller.scope() {
        Some(Scope::User(own)) => Decide::<User>::existing(own, command),
        Some(Scope::All) => Decide::<User>::new(Uuid::now_v7(), command),
        None if caller == Caller::Anonymous => Decide::<User>::new(Uuid::now_v7(), command),
        None => {
            return Err(ApiError::forbidden(
                "the token carries neither the customer nor the admin role",
            ))
        }
    };
    run(&state, &headers, &body, StatusCode::CREATED, command).await
}

/// Rename a user; their orders show the new name.
#[utoipa::path(post, path = "/api/users/{id}/name", tag = "users", request_body = RenameUser,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected stream version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such user, or another user's"), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rename(
    State(state): State<AppState>,
    _caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<RenameUser>,
) -> Result<Response, ApiError> {
    let command = UserCommand::Rename {
        name: Name::parse(&body.name)?,
    };
    run(
        &state,
        &headers,
        &body,
        StatusCode::OK,
        Decide::<User>::existing(id, command),
    )
    .await
}

/// Change a user's email; the old address becomes free for others.
#[utoipa::path(post, path = "/api/users/{id}/email", tag = "users", request_body = ChangeEmail,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected stream version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such user, or another user's"), (status = 409, body = ErrorBody, description = "EMAIL_TAKEN"),
        (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn change_email(
    State(state): State<AppState>,
    _caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<ChangeEmail>,
) -> Result<Response, ApiError> {
    let command = UserCommand::ChangeEmail {
        email: Email::parse(&body.email)?,
    };
    run(
        &state,
        &headers,
        &body,
        StatusCode::OK,
        Decide::<User>::existing(id, command),
    )
    .await
}
