//! `spawn`: the command API and the query service on random ports over a test's own
//! database. Fixtures are made by real commands (HTTP) and folded into the read models by
//! the real projectors (`project`); nothing is inserted by hand.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use orderflow_domain::order::{Order, OrderCommand};
use orderflow_domain::product::{Product, ProductCommand};
use orderflow_domain::Aggregate;
use orderflow_projector::{apply_batch, PROJECTIONS};
use orderflow_query::{QueryOptions, QueryService};
use orderflow_store::{Cursor, EventMetadata, NewEvent};
use reqwest::Client;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// Long enough for a slow CI machine, short enough to fail a hung test quickly.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub pool: PgPool,
    pub client: Client,
    pub command: SocketAddr,
    pub query: SocketAddr,
    pub service: QueryService,
}

pub async fn spawn(pool: PgPool) -> TestApp {
    spawn_with(pool, QueryOptions::default()).await
}

pub async fn spawn_with(pool: PgPool, options: QueryOptions) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let command = listener.local_addr().unwrap();
    let command_pool = pool.clone();
    tokio::spawn(async move {
        orderflow_command::startup::serve(listener, command_pool, std::future::pending())
            .await
            .expect("command API runs");
    });

    let service = QueryService::new(pool.clone(), options);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let query = listener.local_addr().unwrap();
    let app = service.router().expect("valid limits");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("query API runs");
    });

    TestApp {
        pool,
        client: Client::new(),
        command,
        query,
        service,
    }
}

/// Poll `check` until it is true, failing the test past [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A GraphQL WebSocket to the query service.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl TestApp {
    /// A WebSocket to `/graphql/ws` speaking `graphql-transport-ws`, before `connection_init`.
    pub async fn open_socket(&self) -> Socket {
        let mut request = format!("ws://{}/graphql/ws", self.query)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the WebSocket opens");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "graphql-transport-ws"
        );
        socket
    }

    pub fn query_url(&self, path: &str) -> String {
        format!("http://{}{}", self.query, path)
    }

    /// A command on the REST API; returns the response body, asserting success.
    pub async fn command(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("http://{}{}", self.command, path))
            .json(&body)
            .send()
            .await
            .expect("command sent");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON answer");
        assert!(status.is_success(), "{path} answered {status}: {body}");
        body
    }

    pub async fn register_user(&self, name: &str, email: &str) -> Uuid {
        let body = self
            .command("/api/users", json!({"name": name, "email": email}))
            .await;
        stream_id(&body)
    }

    pub async fn create_product(&self, sku: &str, name: &str, price: i64, stock: u32) -> Uuid {
        let body = self
            .command(
                "/api/products",
                json!({"sku": sku, "name": name,
                       "price": {"amountMinor": price, "currency": "EUR"}, "initialStock": stock}),
            )
            .await;
        stream_id(&body)
    }

    pub async fn create_order(&self, user: Uuid, currency: &str) -> Uuid {
        let body = self
            .command("/api/orders", json!({"userId": user, "currency": currency}))
            .await;
        stream_id(&body)
    }

    /// Returns the order's new version.
    pub async fn add_item(&self, order: Uuid, product: Uuid, quantity: u32) -> i64 {
        let body = self
            .command(
                &format!("/api/orders/{order}/items"),
                json!({"productId": product, "quantity": quantity}),
            )
            .await;
        body["version"].as_i64().unwrap()
    }

    pub async fn place(&self, order: Uuid) -> i64 {
        let body = self
            .command(&format!("/api/orders/{order}/place"), json!({}))
            .await;
        body["version"].as_i64().unwrap()
    }

    pub async fn cancel(&self, order: Uuid, reason: &str) -> i64 {
        let body = self
            .command(
                &format!("/api/orders/{order}/cancel"),
                json!({"reason": reason}),
            )
            .await;
        body["version"].as_i64().unwrap()
    }

    pub async fn restock(&self, product: Uuid, quantity: u32) {
        self.command(
            &format!("/api/products/{product}/restock"),
            json!({"quantity": quantity}),
        )
        .await;
    }

    /// Take a placed order through the saga's happy path, as the saga does it (the REST
    /// API has no such commands): reserve every line's stock, confirm the order, commit the
    /// reservations. Each step is decided by the domain and appended to the event store.
    pub async fn confirm(&self, order: Uuid) -> i32 {
        let lines = {
            let mut conn = self.pool.acquire().await.unwrap();
            let loaded = orderflow_store::load::<Order>(&mut conn, order)
                .await
                .unwrap();
            loaded.state.lines().to_vec()
        };
        for line in &lines {
            let reserve = ProductCommand::Reserve {
                order_id: order,
                quantity: line.quantity,
            };
            self.decide::<Product>(line.product_id, reserve).await;
        }
        let version = self.decide::<Order>(order, OrderCommand::Confirm).await;
        for line in &lines {
            let commit = ProductCommand::CommitReservation { order_id: order };
            self.decide::<Product>(line.product_id, commit).await;
        }
        version
    }

    /// Load a stream, decide `command` with the domain, append the events; the new version.
    pub async fn decide<A: Aggregate>(&self, stream_id: Uuid, command: A::Command) -> i32 {
        let mut tx = self.pool.begin().await.unwrap();
        let loaded = orderflow_store::load::<A>(&mut tx, stream_id)
            .await
            .unwrap();
        let events = loaded.state.handle(command).unwrap();
        let events: Vec<NewEvent> = events.iter().map(NewEvent::from_domain).collect();
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            command_id: format!("test-saga-{}", Uuid::now_v7()),
            actor: Some("test saga".into()),
            actor_roles: Vec::new(),
        };
        let outcome = orderflow_store::append(
            &mut tx,
            stream_id,
            A::STREAM_TYPE,
            loaded.version,
            &events,
            &metadata,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        outcome.version
    }

    /// Run every projector over every event committed so far (duplicates are skipped by
    /// their checkpoints, so this can run as often as a test likes).
    ///
    /// The gap-safe reader stops below the oldest transaction running anywhere in the
    /// cluster, and other tests run transactions concurrently: read until it has returned
    /// everything this test committed.
    pub async fn project(&self) {
        let committed: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = orderflow_store::read_after(&self.pool, Cursor::default(), 1_000_000)
                .await
                .unwrap();
            if !events.is_empty() {
                for &projection in PROJECTIONS {
                    let mut tx = self.pool.begin().await.unwrap();
                    let rejected = apply_batch(&mut tx, projection, &events).await.unwrap();
                    assert!(rejected.is_empty(), "{projection} rejected {rejected:?}");
                    tx.commit().await.unwrap();
                }
            }
            if events.len() as i64 >= committed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the reader returned {} of {committed} events",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The whole GraphQL response to a POST.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(self.query_url("/graphql"))
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("query sent");
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON answer")
    }

    /// `data` of a query that must succeed.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let response = self.graphql(query, variables).await;
        assert!(response.get("errors").is_none(), "errors in {response:#}");
        response["data"].clone()
    }

    /// The code and message of the single error a query must fail with.
    pub async fn error(&self, query: &str, variables: Value) -> (String, String) {
        let response = self.graphql(query, variables).await;
        only_error(&response)
    }
}

/// The code and message of the only error of a response.
pub fn only_error(response: &Value) -> (String, String) {
    let errors = response["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {response:#}"));
    assert_eq!(errors.len(), 1, "one error expected in {response:#}");
    let code = errors[0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no extensions.code in {response:#}"));
    let message = errors[0]["message"].as_str().expect("a message");
    (code.to_owned(), message.to_owned())
}

pub fn stream_id(body: &Value) -> Uuid {
    body["streamId"].as_str().unwrap().parse().unwrap()
}

/// A product, a user and an order of two lines that is placed: a shop with one sale.
pub struct Shop {
    pub user: Uuid,
    pub mug: Uuid,
    pub tea: Uuid,
    pub order: Uuid,
}

impl TestApp {
    pub async fn shop(&self) -> Shop {
        let user = self.register_user("Ada Lovelace", "ada@example.com").await;
        let mug = self.create_product("MUG-01", "Coffee mug", 1250, 10).await;
        let tea = self.create_product("TEA-01", "Green tea", 499, 3).await;
        let order = self.create_order(user, "EUR").await;
        self.add_item(order, mug, 2).await;
        self.add_item(order, tea, 1).await;
        self.place(order).await;
        self.project().await;
        Shop {
            user,
            mug,
            tea,
            order,
        }
    }
}
