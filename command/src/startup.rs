//! Wiring: the state handlers share, the router with its middleware, and the server.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use orderflow_store::auth::{Auth, AuthError, Authenticated, Caller};
use orderflow_store::edge::{Edge, EdgeArgs, Shape};

use crate::error::{ApiError, UnexpectedError};
use crate::extract::{CorrelationId, CORRELATION_ID};
use crate::write::Writer;

/// Largest request body accepted; commands are small.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long an Idempotency-Key's response is kept: retries come within minutes, and a day
/// covers a client that retries after an outage.
pub const IDEMPOTENCY_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Aggregates the command service keeps in memory unless told otherwise: an order is a few
/// hundred bytes, so this is tens of megabytes.
pub const DEFAULT_AGGREGATE_CACHE: usize = 100_000;

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub writer: Writer,
}

/// How the API guards itself: who may call it, and how much.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub auth: Auth,
    pub edge: EdgeArgs,
    /// Serve `/metrics` on the API's port (off when it has a listener of its own).
    pub metrics_on_api: bool,
}

impl Default for ApiOptions {
    /// No authentication and no rate limits: for tests and embedding.
    fn default() -> Self {
        Self {
            auth: Auth::Off,
            edge: EdgeArgs::default(),
            metrics_on_api: true,
        }
    }
}

/// The whole command API. The operations routes (`/health`, `/ready`, `/metrics`, the
/// OpenAPI document) need no token and are not rate-limited; every other route is counted
/// against its caller, bounded in time and in number, and answers only the callers its
/// handler's [`crate::access`] extractor lets through.
pub fn router(state: AppState, options: &ApiOptions) -> Result<Router, String> {
    let edge = Edge::new(options.edge.clone(), Shape::Rest)?;
    let api = Router::new()
        .merge(crate::users::router())
        .merge(crate::products::router())
        .merge(crate::orders::router())
        .merge(crate::sagas::router())
        .merge(crate::streams::router());
    let auth = options.auth.clone();
    let router = edge
        .apply(api.route_layer(middleware::from_fn(deny_anonymous)))
        .merge(crate::health::router(options.metrics_on_api))
        .merge(crate::openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_unexpected))
        .layer(middleware::from_fn(move |request, next| {
            orderflow_store::auth::authenticate(auth.clone(), request, next)
        }))
        .layer(middleware::from_fn(|request, next| {
            orderflow_store::telemetry::track_http("command", request, next)
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(middleware::from_fn(correlation_id))
        .with_state(state);
    Ok(match edge.cors() {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

/// Deny by default: an API route answers a request without a verified token only if it is
/// registration. Handlers still check who may do what ([`crate::access`]); this holds if one
/// forgets.
async fn deny_anonymous(request: Request, next: Next) -> Response {
    let public =
        request.method() == axum::http::Method::POST && request.uri().path() == "/api/users";
    match request.extensions().get::<Authenticated>() {
        Some(Authenticated(Err(err))) => ApiError::Unauthenticated(err.clone()).into_response(),
        Some(Authenticated(Ok(Caller::Anonymous))) | None if !public => {
            ApiError::Unauthenticated(AuthError::Missing).into_response()
        }
        _ => next.run(request).await,
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "NO_SUCH_ROUTE",
        message: "no such route".into(),
    }
}

async fn method_not_allowed() -> Response {
    let mut response =
        ApiError::bad_request("METHOD_NOT_ALLOWED", "method not allowed here").into_response();
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Every request carries an `X-Correlation-Id` (the client's, or a new one), and so does
/// its response. A malformed one is refused before any handler runs.
async fn correlation_id(mut request: Request, next: Next) -> Response {
    let id = match crate::extract::correlation_id(request.headers()) {
        Ok(id) => id,
        Err(err) => return err.into_response(),
    };
    request.extensions_mut().insert(CorrelationId(id));
    let mut response = next.run(request).await;
    let value = HeaderValue::from_str(&id.to_string()).expect("a UUID is a header value");
    response
        .headers_mut()
        .insert(HeaderName::from_static(CORRELATION_ID), value);
    response
}

/// The span of a request, carrying its correlation id (set by [`correlation_id`], which runs
/// first), so its logs and exported traces join the events it appends.
fn request_span(request: &Request) -> tracing::Span {
    let correlation_id = request
        .extensions()
        .get::<CorrelationId>()
        .map(|id| id.0.to_string())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        correlation_id = %correlation_id,
        sub = tracing::field::Empty,
    )
}

/// Log the cause chain of every 5xx that a handler produced.
async fn log_unexpected(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if let Some(UnexpectedError(err)) = response.extensions().get::<UnexpectedError>() {
        tracing::error!(%method, %path, error = ?err, "request failed");
    }
    response
}

/// Serve the API on `listener` until `shutdown` resolves, then finish in-flight requests,
/// with a cache of [`DEFAULT_AGGREGATE_CACHE`] aggregates, without authentication or rate
/// limits (tests; the roles use [`serve_with`]).
pub async fn serve(
    listener: TcpListener,
    pool: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(
        listener,
        Writer::new(pool, DEFAULT_AGGREGATE_CACHE),
        ApiOptions::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with a writer and options of the caller's.
pub async fn serve_with(
    listener: TcpListener,
    writer: Writer,
    options: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = writer.pool().clone();
    let app = router(
        AppState {
            pool: pool.clone(),
            writer,
        },
        &options,
    )
    .map_err(anyhow::Error::msg)?;
    options.auth.warn_if_off("command");
    let expiry = tokio::spawn(expire_idempotency_keys(pool));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving the command API");
    expiry.abort();
    served
}

/// Every ten minutes, forget idempotent responses older than [`IDEMPOTENCY_RETENTION`].
async fn expire_idempotency_keys(pool: PgPool) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        match orderflow_store::idempotency::expire(&pool, IDEMPOTENCY_RETENTION).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired old idempotency keys"),
            Err(err) => tracing::warn!(%err, "expiring idempotency keys failed"),
        }
    }
}
