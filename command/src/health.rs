//! Liveness and readiness for orchestrators and load balancers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use crate::startup::AppState;

/// `/health` and `/ready`, and `/metrics` unless it is served on an address of its own.
pub fn router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    match with_metrics {
        true => router.route("/metrics", get(metrics)),
        false => router,
    }
}

/// Prometheus metrics of this process: request latency per route, events appended.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            orderflow_store::telemetry::CONTENT_TYPE,
        )],
        orderflow_store::telemetry::render(),
    )
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations", security(()), responses((status = 200)))]
pub async fn health() -> Json<Value> {
    Json(orderflow_store::health::alive())
}

/// The database answers; 503 while it does not.
#[utoipa::path(get, path = "/ready", tag = "operations", security(()), responses((status = 200), (status = 503)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match orderflow_store::health::ready(&state.pool).await {
        (true, body) => (StatusCode::OK, Json(body)),
        (false, body) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)),
    }
}
