//! `/api/orders`: drafting an order, placing it and cancelling it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{patch, post};
use axum::Router;
use orderflow_domain::order::{Order, OrderCommand, OrderEvent};
use orderflow_domain::product::Product;
use orderflow_domain::user::User;
use orderflow_domain::{Aggregate, Currency, DomainError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::access::Authed;
use crate::error::{ApiError, ErrorBody};
use crate::exec::{run, WriteResponse};
use crate::extract::{ApiJson, ApiPath, CommandHeaders};
use crate::startup::AppState;
use crate::write::{Command, Decide, Refs, WriteError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", post(create))
        .route("/api/orders/{id}/items", post(add_item))
        .route(
            "/api/orders/{id}/items/{product_id}",
            patch(update_quantity).delete(remove_item),
        )
        .route("/api/orders/{id}/place", post(place))
        .route("/api/orders/{id}/cancel", post(cancel))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrder {
    pub user_id: Uuid,
    /// ISO 4217 code; every item must be priced in it.
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddItem {
    pub product_id: Uuid,
    #[schema(example = 2)]
    #[serde(deserialize_with = "orderflow_domain::integral::deserialize")]
    pub quantity: u32,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateQuantity {
    #[schema(example = 3)]
    #[serde(deserialize_with = "orderflow_domain::integral::deserialize")]
    pub quantity: u32,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelOrder {
    #[schema(example = "changed my mind")]
    pub reason: String,
}

/// Start a draft order for a user.
#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "A customer creating an order for someone else"),
        (status = 422, body = ErrorBody, description = "UNKNOWN_USER or a broken rule")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Authed,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<Response, ApiError> {
    caller.require_user(body.user_id)?;
    let command = Create {
        id: Uuid::now_v7(),
        user_id: body.user_id,
        currency: body.currency,
    };
    run(&state, &headers, &body, StatusCode::CREATED, command).await
}

/// A new order for an existing user.
struct Create {
    id: Uuid,
    user_id: Uuid,
    currency: Currency,
}

impl Command for Create {
    type Target = Order;

    fn stream_id(&self) -> Uuid {
        self.id
    }

    fn creates(&self) -> bool {
        true
    }

    async fn decide(
        &self,
        order: &Order,
        refs: &mut Refs<'_>,
    ) -> Result<Vec<OrderEvent>, WriteError> {
        refs.exists::<User>(self.user_id).await?;
        Ok(order.handle(OrderCommand::Create {
            user_id: self.user_id,
            currency: self.currency,
        })?)
    }
}

/// Add a product to a draft order; its name and current price are snapshotted.
#[utoipa::path(post, path = "/api/orders/{id}/items", tag = "orders", request_body = AddItem,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such order, or another customer's"), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "UNKNOWN_PRODUCT or a broken rule")))]
pub async fn add_item(
    State(state): State<AppState>,
    _caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<AddItem>,
) -> Result<Response, ApiError> {
    let command = AddToOrder {
        id,
        product_id: body.product_id,
        quantity: body.quantity,
    };
    run(&state, &headers, &body, StatusCode::OK, command).await
}

/// A product added at its current name and price.
struct AddToOrder {
    id: Uuid,
    product_id: Uuid,
    quantity: u32,
}

impl Command for AddToOrder {
    type Target = Order;

    fn stream_id(&self) -> Uuid {
        self.id
    }

    async fn decide(
        &self,
        order: &Order,
        refs: &mut Refs<'_>,
    ) -> Result<Vec<OrderEvent>, WriteError> {
        // A missing order is the path's 404, whatever the body refers to.
        if !order.exists() {
            return Err(DomainError::NotFound {
                stream_type: Order::STREAM_TYPE,
            }
            .into());
        }
        let product = refs.read::<Product>(self.product_id).await?;
        let (Some(name), Some(price)) = (product.state.name(), product.state.price()) else {
            return Err(WriteError::Broken(
                "an existing product has a name and a price",
            ));
        };
        Ok(order.handle(OrderCommand::AddItem {
            product_id: self.product_id,
            product_name: name.to_owned(),
            unit_price: price,
            quantity: self.quantity,
        })?)
    }
}

/// Set the quantity of an item already in a draft order.
#[utoipa::path(patch, path = "/api/orders/{id}/items/{product_id}", tag = "orders", request_body = UpdateQuantity,
    params(("id" = Uuid, Path), ("product_id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such order, or another customer's"), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_quantity(
    State(state): State<AppState>,
    _caller: Authed,
    ApiPath((id, product_id)): ApiPath<(Uuid, Uuid)>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<UpdateQuantity>,
) -> Result<Response, ApiError> {
    let command = OrderCommand::UpdateQuantity {
        product_id,
        quantity: body.quantity,
    };
    on_order(&state, &headers, &body, id, command).await
}

/// Remove an item from a draft order.
#[utoipa::path(delete, path = "/api/orders/{id}/items/{product_id}", tag = "orders",
    params(("id" = Uuid, Path), ("product_id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such order, or another customer's"), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn remove_item(
    State(state): State<AppState>,
    _caller: Authed,
    ApiPath((id, product_id)): ApiPath<(Uuid, Uuid)>,
    headers: CommandHeaders,
) -> Result<Response, ApiError> {
    on_order(
        &state,
        &headers,
        &(),
        id,
        OrderCommand::RemoveItem { product_id },
    )
    .await
}

/// Place a draft order; from then on its items cannot change.
#[utoipa::path(post, path = "/api/orders/{id}/place", tag = "orders",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such order, or another customer's"),
        (status = 412, body = ErrorBody), (status = 422, body = ErrorBody, description = "ORDER_EMPTY, ORDER_NOT_DRAFT, ...")))]
pub async fn place(
    State(state): State<AppState>,
    _caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
) -> Result<Response, ApiError> {
    on_order(&state, &headers, &(), id, OrderCommand::Place).await
}

/// Cancel a draft or placed order with a reason.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", request_body = CancelOrder,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such order, or another customer's"), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    _caller: Authed,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<CancelOrder>,
) -> Result<Response, ApiError> {
    let command = OrderCommand::Cancel {
        reason: body.reason.clone(),
    };
    on_order(&state, &headers, &body, id, command).await
}

async fn on_order(
    state: &AppState,
    headers: &CommandHeaders,
    body: &impl Serialize,
    id: Uuid,
    command: OrderCommand,
) -> Result<Response, ApiError> {
    let command = Decide::<Order>::existing(id, command);
    run(state, headers, body, StatusCode::OK, command).await
}
