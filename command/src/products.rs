//! `/api/products`: the catalogue and its stock. SKUs are unique across products.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use orderflow_domain::product::{Product, ProductCommand};
use orderflow_domain::{Money, Name, Sku};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::access::Authed;
use crate::error::{ApiError, ErrorBody};
use crate::exec::{run, WriteResponse};
use crate::extract::{ApiJson, ApiPath, CommandHeaders};
use crate::startup::AppState;
use crate::write::Decide;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/products", post(create))
        .route("/api/products/{id}/price", post(change_price))
        .route("/api/products/{id}/restock", post(restock))
}

/// An amount in the currency's minor units (cents): no floats near money.
#[derive(Debug, ToSchema)]
#[schema(as = Money)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MoneySchema {
    #[schema(example = 1999)]
    amount_minor: i64,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(example = "MUG-01")]
    pub sku: String,
    #[schema(example = "Coffee mug")]
    pub name: String,
    #[schema(value_type = MoneySchema)]
    pub price: Money,
    #[schema(example = 100)]
    #[serde(deserialize_with = "orderflow_domain::integral::deserialize")]
    pub initial_stock: u32,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePrice {
    #[schema(value_type = MoneySchema)]
    pub price: Money,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restock {
    #[schema(example = 25)]
    #[serde(deserialize_with = "orderflow_domain::integral::deserialize")]
    pub quantity: u32,
}

/// Create a product with its price and initial stock.
#[utoipa::path(post, path = "/api/products", tag = "products", request_body = CreateProduct,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not an admin"), (status = 201, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "SKU_TAKEN"), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Authed,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let command = ProductCommand::Create {
        sku: Sku::parse(&body.sku)?,
        name: Name::parse(&body.name)?,
        price: body.price,
        initial_stock: body.initial_stock,
    };
    let command = Decide::<Product>::new(Uuid::now_v7(), command);
    run(&state, &headers, &body, StatusCode::CREATED, command).await
}

/// Change a product's price (same currency); orders keep the price they snapshotted.
#[utoipa::path(post, path = "/api/products/{id}/price", tag = "products", request_body = ChangePrice,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected stream version")),
    responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not an admin"), (status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn change_price(
    State(state): State<AppState>,
    caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<ChangePrice>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let command = ProductCommand::ChangePrice { price: body.price };
    run(
        &state,
        &headers,
        &body,
        StatusCode::OK,
        Decide::<Product>::existing(id, command),
    )
    .await
}

/// Add stock.
#[utoipa::path(post, path = "/api/products/{id}/restock", tag = "products", request_body = Restock,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected stream version")),
    responses((status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not an admin"), (status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn restock(
    State(state): State<AppState>,
    caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<Restock>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let command = ProductCommand::Restock {
        quantity: body.quantity,
    };
    run(
        &state,
        &headers,
        &body,
        StatusCode::OK,
        Decide::<Product>::existing(id, command),
    )
    .await
}
