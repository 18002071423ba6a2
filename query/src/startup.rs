//! Wiring: [`QueryService`] (schema, loader, change listener), its router and the server.

use std::future::Future;

use anyhow::Context as _;
use async_graphql::dataloader::DataLoader;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::ParseRequestError;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use axum::Extension;
use orderflow_store::auth::{Auth, AuthError, Authenticated, Caller};
use orderflow_store::edge::{self, Edge, EdgeArgs, Shape};

use crate::config::QueryOptions;
use crate::db::Db;
use crate::error::code;
use crate::freshness::Freshness;
use crate::progress::{self, MinPosition, MIN_POSITION_HEADER};
use crate::schema::{self, AppSchema, Services};

/// Queries over HTTP (POST, or GET for queries); the playground for browsers.
pub const GRAPHQL_PATH: &str = "/graphql";
/// Subscriptions (and queries) over WebSocket, `graphql-transport-ws` or `graphql-ws`.
pub const WS_PATH: &str = "/graphql/ws";
/// The schema as SDL.
pub const SDL_PATH: &str = "/graphql/schema.graphql";

/// Largest request body accepted: generous for hand-written queries, small for abuse.
pub const BODY_LIMIT: usize = 256 * 1024;

/// The query service: one schema, one change listener, one statement counter per process.
/// Cheap to clone; the listener stops when the last clone is dropped.
#[derive(Clone)]
pub struct QueryService {
    schema: AppSchema,
    auth: Auth,
    edge: EdgeArgs,
    metrics_on_api: bool,
    db: Db,
    freshness: Freshness,
    pool: PgPool,
    relay: String,
    lag: Option<orderflow_kafka::lag::LagMonitor>,
}

impl QueryService {
    /// Must be called inside a Tokio runtime: it starts the `order_view_changed` listener.
    pub fn new(pool: PgPool, options: QueryOptions) -> Self {
        let (options_relay, options_lag) = (options.relay_name.clone(), options.lag.clone());
        let (auth, edge, metrics_on_api) = (
            options.auth.clone(),
            options.edge.clone(),
            options.metrics_on_api,
        );
        let db = Db::new(pool.clone());
        let freshness = Freshness::start(db.clone(), options.poll_interval, options.max_watches);
        let services = Services {
            db: db.clone(),
            loader: DataLoader::new(db.clone(), tokio::spawn).delay(options.batch_delay),
            freshness: freshness.clone(),
            progress: progress::Progress::start(pool.clone(), options.relay_name.clone()),
            ops_history: match &options.lag {
                Some(monitor) => crate::ops::OpsHistory::start(
                    pool.clone(),
                    options.relay_name.clone(),
                    monitor.clone(),
                ),
                None => crate::ops::OpsHistory::default(),
            },
            options,
        };
        Self {
            schema: schema::build(services),
            auth,
            edge,
            metrics_on_api,
            db,
            freshness,
            pool,
            relay: options_relay,
            lag: options_lag,
        }
    }

    /// Every route of the service. GraphQL (HTTP and WebSocket) needs a token and is rate
    /// limited, bounded in time and in number; the playground and `/ops` pages, the SDL,
    /// `/health`, `/ready` and `/metrics` are open (the pages hold no data: they ask
    /// GraphQL with the token the user gives them).
    pub fn router(&self) -> Result<Router, String> {
        let edge = Edge::new(self.edge.clone(), Shape::GraphQl)?;
        let graphql = Router::new()
            .route(
                GRAPHQL_PATH,
                get(graphql_get)
                    .post(graphql_post)
                    .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
                    .layer(middleware::map_response(too_large_in_graphql_shape)),
            )
            .route(WS_PATH, get(websocket));
        let open = Router::new()
            .route("/", get(playground))
            .route(SDL_PATH, get(sdl))
            .route("/health", get(health))
            .route("/ready", get(ready));
        let open = match self.metrics_on_api {
            true => open.route("/metrics", get(metrics)),
            false => open,
        };
        let auth = self.auth.clone();
        let router = edge
            .apply(graphql)
            .merge(open)
            .merge(crate::ops::page_router())
            .merge(crate::playground::router())
            .fallback(not_found)
            .layer(middleware::from_fn(move |request, next| {
                orderflow_store::auth::authenticate(auth.clone(), request, next)
            }))
            .layer(middleware::from_fn(|request, next| {
                orderflow_store::telemetry::track_http("query", request, next)
            }))
            .layer(TraceLayer::new_for_http())
            .with_state(self.state());
        Ok(match edge.cors() {
            Some(cors) => router.layer(cors),
            None => router,
        })
    }

    /// `/metrics` alone, for a listener of its own (`--metrics-listen`).
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(self.state())
    }

    fn state(&self) -> AppState {
        AppState {
            schema: self.schema.clone(),
            pool: self.pool.clone(),
            relay: self.relay.clone(),
            lag: self.lag.clone(),
            auth: self.auth.clone(),
        }
    }

    /// SQL statements run since the service started: lets a test prove that a page costs a
    /// constant number of them.
    pub fn sql_statements(&self) -> u64 {
        self.db.statements()
    }

    /// `minVersion` and `X-Min-Position` reads waiting right now for the projectors to
    /// catch up.
    pub fn waiting_reads(&self) -> usize {
        self.freshness.blocked_reads()
    }

    /// `minVersion` reads and `orderUpdated` subscriptions open right now.
    pub fn open_watches(&self) -> usize {
        self.freshness.watches()
    }

    /// End every subscription, as the service is shutting down.
    pub fn close_subscriptions(&self) {
        self.freshness.close();
    }
}

/// The service's routes over `pool` (for tests and for embedding in another server).
pub fn router(pool: PgPool, options: QueryOptions) -> Router {
    QueryService::new(pool, options)
        .router()
        .expect("the default limits are valid")
}

/// Serve the GraphQL API on `listener` until `shutdown` resolves; then subscriptions end and
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    pool: PgPool,
    options: QueryOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    options.validate()?;
    serve_service(listener, QueryService::new(pool, options), shutdown).await
}

/// [`serve`] with a service the caller made from validated options (to serve its metrics
/// elsewhere too).
pub async fn serve_service(
    listener: TcpListener,
    service: QueryService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    service.auth.warn_if_off("query");
    let app = service.router().map_err(anyhow::Error::msg)?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        service.close_subscriptions();
    })
    .await
    .context("serving the GraphQL API")
}

#[derive(Clone)]
struct AppState {
    schema: AppSchema,
    pool: PgPool,
    relay: String,
    lag: Option<orderflow_kafka::lag::LagMonitor>,
    auth: Auth,
}

/// Prometheus metrics: this process's, consumer lag and the event store's figures.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::ops::metrics_text(&state.pool, &state.relay, state.lag.as_ref()).await;
    (
        [(
            header::CONTENT_TYPE,
            orderflow_store::telemetry::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

async fn playground() -> Response {
    crate::playground::page()
}

/// A browser (it accepts HTML) gets the playground; anything else a GraphQL GET request.
async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        return crate::playground::page();
    }
    let caller = match authenticated(request.extensions().get()) {
        Ok(caller) => caller,
        Err(refused) => return edge::unauthenticated(Shape::GraphQl, &refused),
    };
    let request = GraphQLRequest::<BadRequest>::from_request(request, &state).await;
    match request {
        Ok(request) => execute(&state, &headers, caller, request.into_inner()).await,
        Err(rejection) => rejection.into_response(),
    }
}

async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    authenticated_as: Option<Extension<Authenticated>>,
    request: Result<GraphQLRequest<BadRequest>, BadRequest>,
) -> Response {
    let caller = match authenticated(authenticated_as.as_ref().map(|e| &e.0)) {
        Ok(caller) => caller,
        Err(refused) => return edge::unauthenticated(Shape::GraphQl, &refused),
    };
    match request {
        Ok(request) => execute(&state, &headers, caller, request.into_inner()).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// The caller of a GraphQL request, or why it gets a 401: every operation needs a token.
fn authenticated(authenticated: Option<&Authenticated>) -> Result<Caller, AuthError> {
    match authenticated {
        Some(Authenticated(Ok(Caller::Anonymous))) | None => Err(AuthError::Missing),
        Some(Authenticated(Ok(caller))) => Ok(caller.clone()),
        Some(Authenticated(Err(err))) => Err(err.clone()),
    }
}

async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    caller: Caller,
    mut request: async_graphql::Request,
) -> Response {
    request = request.data(caller);
    let mut positions = headers.get_all(MIN_POSITION_HEADER).iter();
    if let Some(value) = positions.next() {
        if positions.next().is_some() {
            return bad_user_input(&format!(
                "{MIN_POSITION_HEADER} is given more than once; send one position (the \
                 largest: it covers the others)"
            ));
        }
        match MinPosition::parse(value.to_str().unwrap_or("(not text)")) {
            Ok(position) => request = request.data(position),
            Err(message) => return bad_user_input(&message),
        }
    }
    GraphQLResponse::from(state.schema.execute(request).await).into_response()
}

/// A request refused before it runs, in GraphQL's error shape with BAD_USER_INPUT.
fn bad_user_input(message: &str) -> Response {
    let body =
        json!({"errors": [{"message": message, "extensions": {"code": code::BAD_USER_INPUT}}]});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// GraphQL over WebSocket (`graphql-transport-ws` or `graphql-ws`); the `connection_init`
/// payload carries the token (`{"authorization": "Bearer <JWT>"}`; without a good one the
/// connection is closed) and may carry `X-Min-Position`, which then holds every query of the connection
/// (subscriptions start at once: they send the current state and every change after it).
async fn websocket(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let schema = state.schema.clone();
    let auth = state.auth.clone();
    // A message is a request: the same bound as an HTTP request's body.
    upgrade
        .max_message_size(BODY_LIMIT)
        .max_frame_size(BODY_LIMIT)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let mut data = async_graphql::Data::default();
                    let authorization = ["authorization", "Authorization"]
                        .iter()
                        .find_map(|key| payload.get(*key))
                        .map(|value| value.as_str().unwrap_or_default());
                    match auth.caller_from_value(authorization) {
                        Ok(caller) => data.insert(caller),
                        Err(err) => {
                            let code = err.code();
                            return Err(async_graphql::ErrorExtensions::extend_with(
                                async_graphql::Error::new(format!("{code}: {err}")),
                                |_, extensions| extensions.set("code", code),
                            ));
                        }
                    }
                    match progress::from_connection_init(&payload) {
                        Ok(Some(position)) => data.insert(position),
                        Ok(None) => {}
                        // The message becomes the close frame's reason (at most 123
                        // bytes): short, without the value.
                        Err(_) => {
                            let code = code::BAD_USER_INPUT;
                            return Err(async_graphql::ErrorExtensions::extend_with(
                                async_graphql::Error::new(format!(
                                    "{code}: {MIN_POSITION_HEADER} must be an integer of 1 or more"
                                )),
                                |_, extensions| extensions.set("code", code),
                            ));
                        }
                    }
                    Ok(data)
                })
                .serve()
        })
}

/// An HTTP request that carries no GraphQL request, answered in GraphQL's error shape.
struct BadRequest(ParseRequestError);

impl From<ParseRequestError> for BadRequest {
    fn from(err: ParseRequestError) -> Self {
        Self(err)
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let (status, message) = match &self.0 {
            ParseRequestError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {BODY_LIMIT} bytes"),
            ),
            ParseRequestError::UnsupportedBatch => (
                StatusCode::BAD_REQUEST,
                "batched requests are not supported: send one operation per request".to_owned(),
            ),
            other => (
                StatusCode::BAD_REQUEST,
                format!("not a GraphQL request: {other}"),
            ),
        };
        let body =
            json!({"errors": [{"message": message, "extensions": {"code": code::BAD_REQUEST}}]});
        (status, Json(body)).into_response()
    }
}

/// The body limit answers before any handler runs; give its refusal a code too.
async fn too_large_in_graphql_shape(response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        BadRequest(ParseRequestError::PayloadTooLarge).into_response()
    } else {
        response
    }
}

async fn sdl() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        schema::sdl(),
    )
        .into_response()
}

/// The process is up.
async fn health() -> Json<Value> {
    Json(orderflow_store::health::alive())
}

/// The database answers; 503 while it does not.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match orderflow_store::health::ready(&state.pool).await {
        (true, body) => (StatusCode::OK, Json(body)),
        (false, body) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)),
    }
}

async fn not_found() -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "NO_SUCH_ROUTE", "message": "no such route"}})),
    )
}
