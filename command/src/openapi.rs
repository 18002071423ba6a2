//! The OpenAPI description of every route and body, served at `/api/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::startup::AppState;
use crate::{health, orders, products, sagas, streams, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "orderflow command API", description = "Commands that append events to the orderflow event store. \
        Writes accept `Idempotency-Key` and `If-Match`; errors are `{\"error\": {\"code\", \"message\"}}`."),
    paths(
        users::register, users::rename, users::change_email,
        products::create, products::change_price, products::restock,
        orders::create, orders::add_item, orders::update_quantity, orders::remove_item,
        orders::place, orders::cancel,
        sagas::list, sagas::show, sagas::retry,
        streams::read, health::health, health::ready, health::metrics,
    ),
    tags(
        (name = "users"), (name = "products"), (name = "orders"),
        (name = "sagas", description = "Fulfilment sagas: state, steps, resuming a stuck one"),
        (name = "streams", description = "The event store, read back"),
        (name = "operations"),
    )
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
