//! `/api/orders`: the order lifecycle up to placing or cancelling it; the saga confirms.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{patch, post};
use axum::Router;
use orderflow_domain::order::{Order, OrderCommand};
use orderflow_domain::product::Product;
use orderflow_domain::user::User;
use orderflow_domain::{Aggregate, Currency};
use orderflow_store::{Loaded, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::exec::{run, CommandContext, Decide, WriteCommand, WriteResponse};
use crate::extract::{ApiJson, ApiPath, CommandHeaders};
use crate::startup::AppState;

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
    pub quantity: u32,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateQuantity {
    #[schema(example = 3)]
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
        (status = 422, body = ErrorBody, description = "UNKNOWN_USER or a broken rule")))]
pub async fn create(
    State(state): State<AppState>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<Response, ApiError> {
    let print = headers.fingerprint(&body);
    let command = Create {
        id: Uuid::now_v7(),
        body,
    };
    run(&state, &headers, print, StatusCode::CREATED, command).await
}

struct Create {
    id: Uuid,
    body: CreateOrder,
}

impl WriteCommand for Create {
    async fn execute(
        &self,
        tx: &mut PgConnection,
        ctx: &CommandContext,
    ) -> Result<WriteResponse, ApiError> {
        let loaded = orderflow_store::load::<Order>(tx, self.id).await?;
        referenced::<User>(tx, self.body.user_id, "UNKNOWN_USER").await?;
        let decided = loaded.state.handle(OrderCommand::Create {
            user_id: self.body.user_id,
            currency: self.body.currency,
        })?;
        ctx.append(tx, self.id, &loaded, decided).await
    }
}

/// Load a stream the body refers to: one that does not exist (or is of another type) makes
/// the request unprocessable, not the path's resource missing.
async fn referenced<A: Aggregate>(
    tx: &mut PgConnection,
    id: Uuid,
    code: &'static str,
) -> Result<Loaded<A>, ApiError> {
    match orderflow_store::load::<A>(tx, id).await {
        Ok(loaded) if loaded.version > 0 => Ok(loaded),
        Ok(_) | Err(StoreError::WrongStreamType { .. }) => Err(ApiError::Unprocessable {
            code,
            message: format!("{} {id} does not exist", A::STREAM_TYPE),
        }),
        Err(other) => Err(other.into()),
    }
}

/// Add a product to a draft order; its name and current price are snapshotted.
#[utoipa::path(post, path = "/api/orders/{id}/items", tag = "orders", request_body = AddItem,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "UNKNOWN_PRODUCT or a broken rule")))]
pub async fn add_item(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<AddItem>,
) -> Result<Response, ApiError> {
    let print = headers.fingerprint(&body);
    run(
        &state,
        &headers,
        print,
        StatusCode::OK,
        AddToOrder { id, body },
    )
    .await
}

struct AddToOrder {
    id: Uuid,
    body: AddItem,
}

impl WriteCommand for AddToOrder {
    async fn execute(
        &self,
        tx: &mut PgConnection,
        ctx: &CommandContext,
    ) -> Result<WriteResponse, ApiError> {
        let loaded = orderflow_store::load::<Order>(tx, self.id).await?;
        if loaded.version == 0 {
            return Err(ApiError::not_found("order", self.id));
        }
        ctx.expect_version(loaded.version)?;
        let product_id = self.body.product_id;
        let product = referenced::<Product>(tx, product_id, "UNKNOWN_PRODUCT").await?;
        let (Some(name), Some(price)) = (product.state.name(), product.state.price()) else {
            return Err(
                anyhow::anyhow!("product {product_id} has events but no name or price").into(),
            );
        };
        let decided = loaded.state.handle(OrderCommand::AddItem {
            product_id,
            product_name: name.to_owned(),
            unit_price: price,
            quantity: self.body.quantity,
        })?;
        ctx.append(tx, self.id, &loaded, decided).await
    }
}

/// Set the quantity of an item already in a draft order.
#[utoipa::path(patch, path = "/api/orders/{id}/items/{product_id}", tag = "orders", request_body = UpdateQuantity,
    params(("id" = Uuid, Path), ("product_id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_quantity(
    State(state): State<AppState>,
    ApiPath((id, product_id)): ApiPath<(Uuid, Uuid)>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<UpdateQuantity>,
) -> Result<Response, ApiError> {
    let print = headers.fingerprint(&body);
    let command = OrderCommand::UpdateQuantity {
        product_id,
        quantity: body.quantity,
    };
    on_order(&state, &headers, print, id, command).await
}

/// Remove an item from a draft order.
#[utoipa::path(delete, path = "/api/orders/{id}/items/{product_id}", tag = "orders",
    params(("id" = Uuid, Path), ("product_id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn remove_item(
    State(state): State<AppState>,
    ApiPath((id, product_id)): ApiPath<(Uuid, Uuid)>,
    headers: CommandHeaders,
) -> Result<Response, ApiError> {
    let print = headers.fingerprint(&());
    on_order(
        &state,
        &headers,
        print,
        id,
        OrderCommand::RemoveItem { product_id },
    )
    .await
}

/// Place a draft order: from here the saga reserves stock and takes payment.
#[utoipa::path(post, path = "/api/orders/{id}/place", tag = "orders",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 404, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 422, body = ErrorBody, description = "ORDER_EMPTY, ORDER_NOT_DRAFT, ...")))]
pub async fn place(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
) -> Result<Response, ApiError> {
    let print = headers.fingerprint(&());
    on_order(&state, &headers, print, id, OrderCommand::Place).await
}

/// Cancel a draft or placed order with a reason.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", request_body = CancelOrder,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "Expected order version")),
    responses((status = 200, body = WriteResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: CommandHeaders,
    ApiJson(body): ApiJson<CancelOrder>,
) -> Result<Response, ApiError> {
    let print = headers.fingerprint(&body);
    let command = OrderCommand::Cancel {
        reason: body.reason,
    };
    on_order(&state, &headers, print, id, command).await
}

async fn on_order(
    state: &AppState,
    headers: &CommandHeaders,
    print: String,
    id: Uuid,
    command: OrderCommand,
) -> Result<Response, ApiError> {
    let command = Decide::<Order> {
        stream_id: id,
        command,
    };
    run(state, headers, print, StatusCode::OK, command).await
}
