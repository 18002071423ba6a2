//! `spawn_app`: the command API on a random port over a test's own database.

#![allow(dead_code, unreachable_pub)]

pub mod kafka;

use std::net::SocketAddr;

use reqwest::{Client, Response};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::net::TcpListener;
use uuid::Uuid;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    pub pool: PgPool,
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, orderflow_command::startup::ApiOptions::default()).await
}

/// The API with authentication and limits of the test's choosing.
pub async fn spawn_app_with(
    pool: PgPool,
    options: orderflow_command::startup::ApiOptions,
) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().unwrap();
    let writer = orderflow_command::write::Writer::new(
        pool.clone(),
        orderflow_command::startup::DEFAULT_AGGREGATE_CACHE,
    );
    tokio::spawn(async move {
        orderflow_command::startup::serve_with(listener, writer, options, std::future::pending())
            .await
            .expect("server runs");
    });
    TestApp {
        addr,
        client: Client::new(),
        pool,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, path: impl AsRef<str>, body: Value) -> Response {
        self.client
            .post(self.url(path.as_ref()))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Total events in the store: rejected commands must not change it.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn register_user(&self, name: &str, email: &str) -> Uuid {
        let response = self
            .post("/api/users", json!({"name": name, "email": email}))
            .await;
        created_id(response).await
    }

    pub async fn create_product(&self, sku: &str, price: i64, stock: u32) -> Uuid {
        let response = self
            .post(
                "/api/products",
                json!({"sku": sku, "name": format!("Product {sku}"),
                       "price": {"amountMinor": price, "currency": "EUR"}, "initialStock": stock}),
            )
            .await;
        created_id(response).await
    }

    pub async fn create_order(&self, user: Uuid) -> Uuid {
        let response = self
            .post("/api/orders", json!({"userId": user, "currency": "EUR"}))
            .await;
        created_id(response).await
    }

    pub async fn stream(&self, id: Uuid) -> Value {
        let response = self.get(&format!("/api/streams/{id}/events")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

pub async fn created_id(response: Response) -> Uuid {
    assert_eq!(response.status(), 201, "expected 201 Created");
    let body: Value = response.json().await.unwrap();
    body["streamId"].as_str().unwrap().parse().unwrap()
}

/// Status and the error code of an error response.
pub async fn error_of(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned();
    assert!(body["error"]["message"].is_string(), "no message in {body}");
    (status, code)
}

impl TestApp {
    /// A small realistic workload: users, products, orders with items, some placed or
    /// cancelled. Returns the number of commands that succeeded.
    pub async fn workload(&self, users: usize, orders_per_user: usize) -> usize {
        let tag = Uuid::new_v4().simple().to_string();
        let mut products = Vec::new();
        for i in 0..3 {
            products.push(
                self.create_product(&format!("P{i}-{}", &tag[..8]), 100 + i, 1000)
                    .await,
            );
        }
        let mut ok = 3;
        for u in 0..users {
            let user = self
                .register_user(&format!("User {u}"), &format!("u{u}-{tag}@example.com"))
                .await;
            ok += 1;
            for o in 0..orders_per_user {
                let order = self.create_order(user).await;
                ok += 1;
                for (i, product) in products.iter().enumerate().take(1 + (u + o) % 3) {
                    let response = self
                        .post(
                            format!("/api/orders/{order}/items"),
                            json!({"productId": product, "quantity": 1 + i}),
                        )
                        .await;
                    assert_eq!(response.status(), 200);
                    ok += 1;
                }
                let ending = match (u + o) % 3 {
                    0 => Some(("place", json!({}))),
                    1 => Some(("cancel", json!({"reason": "test"}))),
                    _ => None,
                };
                if let Some((action, body)) = ending {
                    let response = self
                        .post(format!("/api/orders/{order}/{action}"), body)
                        .await;
                    assert_eq!(response.status(), 200);
                    ok += 1;
                }
            }
        }
        ok
    }

    /// The last version of every stream in the store.
    pub async fn stream_versions(&self) -> std::collections::BTreeMap<Uuid, i32> {
        sqlx::query_as::<_, (Uuid, i32)>(
            "select stream_id, max(version) from events group by stream_id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }
}
