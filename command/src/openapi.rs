//! The OpenAPI description of every route and body, served at `/api/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::startup::AppState;
use crate::{health, orders, products, sagas, streams, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "orderflow command API", description = "Commands that append events to the orderflow event store. \
        Writes accept `Idempotency-Key` and `If-Match`; errors are `{\"error\": {\"code\", \"message\"}}`. \
        Every route under /api but the OpenAPI document needs `Authorization: Bearer <JWT>` (registration also answers without one); \
        401 is UNAUTHENTICATED or TOKEN_EXPIRED, 403 FORBIDDEN, 429 RATE_LIMITED with Retry-After, 503 OVERLOADED or TIMEOUT with Retry-After."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
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

/// The `bearer` security scheme every operation names.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A JWT whose `sub` is the user id (customers) and whose `roles` hold `customer` and/or `admin`"))
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
