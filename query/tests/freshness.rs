//! Read-your-writes (`minVersion`) and the `orderUpdated` subscription: the service learns
//! of new order versions from `order_view_changed` notifications or, without them, by
//! polling the orders someone waits on.

mod common;

use std::time::Duration;

use common::{eventually, only_error, spawn, spawn_with, Socket, TestApp, DEADLINE};
use futures::{SinkExt as _, StreamExt as _};
use orderflow_query::{QueryOptions, ORDER_VIEW_CHANGED};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const AT_LEAST: &str = r#"query($id: ID!, $min: Int) {
  order(id: $id, minVersion: $min) { version status cancelReason }
}"#;

/// Send a `minVersion` read that may wait; its response comes through the handle.
fn read_at_least(app: &TestApp, order: Uuid, min_version: i64) -> JoinHandle<Value> {
    let client = app.client.clone();
    let url = app.query_url("/graphql");
    tokio::spawn(async move {
        let response = client
            .post(url)
            .json(&json!({"query": AT_LEAST, "variables": {"id": order, "min": min_version}}))
            .send()
            .await
            .expect("query sent");
        response.json().await.expect("JSON answer")
    })
}

async fn answer(read: JoinHandle<Value>) -> Value {
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the read answers in time")
        .expect("the read task does not panic")
}

/// Connections of this test's database whose last statement was a LISTEN.
async fn listening_connections(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity \
         where datname = current_database() and query ilike 'listen %'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_min_version_read_waits_until_the_projectors_apply_the_write(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    let version = app.cancel(shop.order, "found it cheaper").await;
    assert_eq!(version, 5);

    let read = read_at_least(&app, shop.order, version);
    eventually("the read waits for the projection", || async {
        app.service.waiting_reads() == 1
    })
    .await;
    assert!(!read.is_finished());
    // This projector sends no notification: the poller finds the new version.
    app.project().await;

    let response = answer(read).await;
    assert_eq!(
        response["data"]["order"],
        json!({"version": 5, "status": "CANCELLED", "cancelReason": "found it cheaper"})
    );
    assert_eq!(app.service.waiting_reads(), 0);

    // A version already reached answers at once.
    let data = app
        .data(AT_LEAST, json!({"id": shop.order, "min": 3}))
        .await;
    assert_eq!(data["order"]["version"], 5);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_min_version_reads_share_one_listener_and_wake_on_its_notification(
    pool: PgPool,
) {
    // Polling is off in practice: only a notification can wake the reads in time.
    let options = QueryOptions {
        poll_interval: Duration::from_secs(3600),
        min_version_timeout: Duration::from_secs(15),
        query_timeout: Duration::from_secs(30),
        ..QueryOptions::default()
    };
    let app = spawn_with(pool, options).await;
    let shop = app.shop().await;
    let version = app.cancel(shop.order, "late").await;

    let reads: Vec<_> = (0..8)
        .map(|_| read_at_least(&app, shop.order, version))
        .collect();
    eventually("every read waits", || async {
        app.service.waiting_reads() == reads.len()
    })
    .await;
    eventually("the listener is connected", || async {
        listening_connections(&app.pool).await == 1
    })
    .await;
    app.project().await;
    for read in &reads {
        assert!(!read.is_finished());
    }
    // What the projector sends from its apply transaction.
    sqlx::query("select pg_notify($1, $2)")
        .bind(ORDER_VIEW_CHANGED)
        .bind(json!({"orderId": shop.order, "version": version}).to_string())
        .execute(&app.pool)
        .await
        .unwrap();

    for read in reads {
        let response = answer(read).await;
        assert_eq!(response["data"]["order"]["version"], 5, "{response}");
    }
    assert_eq!(listening_connections(&app.pool).await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_min_version_not_reached_within_the_bound_is_stale(pool: PgPool) {
    let options = QueryOptions {
        min_version_timeout: Duration::from_millis(300),
        ..QueryOptions::default()
    };
    let app = spawn_with(pool, options).await;
    let shop = app.shop().await;
    app.cancel(shop.order, "never projected").await;

    let response = app
        .graphql(AT_LEAST, json!({"id": shop.order, "min": 5}))
        .await;
    let (code, message) = only_error(&response);
    assert_eq!(code, "STALE");
    assert!(message.contains("version 5"), "{message}");
    let extensions = &response["errors"][0]["extensions"];
    assert_eq!(extensions["minVersion"], 5);
    assert_eq!(extensions["currentVersion"], 4);
    assert_eq!(response["data"]["order"], Value::Null);

    // An order the view does not have yet is stale too, with no current version.
    let response = app
        .graphql(AT_LEAST, json!({"id": Uuid::now_v7(), "min": 1}))
        .await;
    assert_eq!(only_error(&response).0, "STALE");
    assert_eq!(
        response["errors"][0]["extensions"]["currentVersion"],
        Value::Null
    );

    let (code, _) = app
        .error(AT_LEAST, json!({"id": shop.order, "min": 0}))
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert_eq!(app.service.waiting_reads(), 0);
}

async fn connect(app: &TestApp) -> Socket {
    let mut socket = app.open_socket().await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {}}),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "connection_ack");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("message sent");
}

/// The next text message, as JSON.
async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket stays open")
            .expect("a readable message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON message");
        }
    }
}

const ORDER_UPDATED: &str = r#"subscription($id: ID!) {
  orderUpdated(id: $id) { id version status itemCount total { amountMinor } }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn the_order_updated_subscription_pushes_each_new_version_over_a_websocket(pool: PgPool) {
    let app = spawn(pool).await;
    let user = app.register_user("Ada", "ada@example.com").await;
    let mug = app.create_product("MUG-01", "Mug", 1000, 10).await;
    let order = app.create_order(user, "EUR").await;
    app.project().await;

    let mut socket = connect(&app).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe",
               "payload": {"query": ORDER_UPDATED, "variables": {"id": order}}}),
    )
    .await;
    let current = receive(&mut socket).await;
    assert_eq!(current["type"], "next");
    assert_eq!(current["id"], "1");
    assert_eq!(
        current["payload"]["data"]["orderUpdated"],
        json!({"id": order.to_string(), "version": 1, "status": "DRAFT", "itemCount": 0,
               "total": {"amountMinor": 0}})
    );

    app.add_item(order, mug, 3).await;
    app.project().await;
    let update = receive(&mut socket).await;
    assert_eq!(update["type"], "next");
    let view = &update["payload"]["data"]["orderUpdated"];
    assert_eq!(view["version"], 2);
    assert_eq!(view["itemCount"], 3);
    assert_eq!(view["total"]["amountMinor"], 3000);

    // Versions applied together arrive as one update; either way they only go forward.
    app.add_item(order, mug, 1).await;
    app.place(order).await;
    app.project().await;
    let mut seen = 2;
    while seen < 4 {
        let update = receive(&mut socket).await;
        let view = &update["payload"]["data"]["orderUpdated"];
        let version = view["version"].as_i64().unwrap();
        assert!(version > seen, "{update}");
        seen = version;
        if version == 4 {
            assert_eq!(view["status"], "PLACED");
            assert_eq!(view["itemCount"], 4);
        }
    }

    send(&mut socket, json!({"id": "1", "type": "complete"})).await;
    socket.close(None).await.unwrap();
    eventually("the subscription ends", || async {
        app.service.open_watches() == 0
    })
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_subscription_to_a_malformed_id_fails_with_a_code(pool: PgPool) {
    let app = spawn(pool).await;
    let mut socket = connect(&app).await;
    send(
        &mut socket,
        json!({"id": "7", "type": "subscribe",
               "payload": {"query": ORDER_UPDATED, "variables": {"id": "nope"}}}),
    )
    .await;
    let message = receive(&mut socket).await;
    assert_eq!(message["id"], "7");
    let errors = match message["type"].as_str() {
        Some("error") => message["payload"].clone(),
        Some("next") => message["payload"]["errors"].clone(),
        other => panic!("unexpected message {other:?}: {message}"),
    };
    assert_eq!(
        errors[0]["extensions"]["code"], "BAD_USER_INPUT",
        "{message}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn shutting_down_ends_subscriptions_and_stops_the_server(pool: PgPool) {
    let user_app = spawn(pool.clone()).await;
    let user = user_app.register_user("Ada", "ada@example.com").await;
    let order = user_app.create_order(user, "EUR").await;
    user_app.project().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(orderflow_query::serve(
        listener,
        pool,
        QueryOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let app = TestApp {
        query: addr,
        ..user_app
    };
    let mut socket = connect(&app).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe",
               "payload": {"query": ORDER_UPDATED, "variables": {"id": order}}}),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "next");

    stop.send(()).unwrap();
    let end = receive(&mut socket).await;
    assert_eq!(end, json!({"id": "1", "type": "complete"}));
    drop(socket);
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the server stops in time")
        .unwrap()
        .expect("the server stops cleanly");
}

#[sqlx::test(migrations = "../migrations")]
async fn reads_of_different_orders_are_each_woken_by_their_own_order_alone(pool: PgPool) {
    // Polling is off in practice: only the notifications below wake anyone.
    let options = QueryOptions {
        poll_interval: Duration::from_secs(3600),
        min_version_timeout: Duration::from_secs(15),
        query_timeout: Duration::from_secs(30),
        ..QueryOptions::default()
    };
    let app = spawn_with(pool, options).await;
    let user = app.register_user("Ada", "ada@example.com").await;
    let mug = app.create_product("MUG-01", "Mug", 1000, 100).await;
    let mut orders = Vec::new();
    for _ in 0..12 {
        orders.push(app.create_order(user, "EUR").await);
    }
    app.project().await;
    for order in &orders {
        assert_eq!(app.add_item(*order, mug, 1).await, 2);
    }

    let mut reads: Vec<_> = orders
        .iter()
        .map(|order| Some(read_at_least(&app, *order, 2)))
        .collect();
    eventually("every read waits", || async {
        app.service.waiting_reads() == orders.len()
    })
    .await;
    eventually("the listener is connected", || async {
        listening_connections(&app.pool).await == 1
    })
    .await;
    // Every view reaches version 2, silently.
    app.project().await;
    assert_eq!(app.service.open_watches(), orders.len());
    let before = app.service.sql_statements();

    for (index, order) in orders.iter().enumerate() {
        sqlx::query("select pg_notify($1, $2)")
            .bind(ORDER_VIEW_CHANGED)
            .bind(json!({"orderId": order, "version": 2}).to_string())
            .execute(&app.pool)
            .await
            .unwrap();
        let response = answer(reads[index].take().unwrap()).await;
        assert_eq!(response["data"]["order"]["version"], 2, "{response}");
        // One re-read, by this order's read; the others still wait without reading.
        assert_eq!(
            app.service.sql_statements(),
            before + index as u64 + 1,
            "after order {index}"
        );
        assert_eq!(app.service.waiting_reads(), orders.len() - index - 1);
        assert!(reads.iter().flatten().all(|read| !read.is_finished()));
    }
    eventually("every watch ends", || async {
        app.service.open_watches() == 0
    })
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn waits_beyond_the_watch_limit_are_refused_with_a_code(pool: PgPool) {
    let options = QueryOptions {
        max_watches: 1,
        min_version_timeout: Duration::from_millis(300),
        ..QueryOptions::default()
    };
    let app = spawn_with(pool, options).await;
    let shop = app.shop().await;

    let mut socket = connect(&app).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe",
               "payload": {"query": ORDER_UPDATED, "variables": {"id": shop.order}}}),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "next");
    assert_eq!(app.service.open_watches(), 1);

    // A version already reached needs no watch.
    let data = app
        .data(AT_LEAST, json!({"id": shop.order, "min": 4}))
        .await;
    assert_eq!(data["order"]["version"], 4);
    // One that must wait is refused at once.
    let (code, message) = app
        .error(AT_LEAST, json!({"id": shop.order, "min": 5}))
        .await;
    assert_eq!(code, "TOO_MANY_WATCHES");
    assert!(message.contains("at most 1"), "{message}");
    // So is a second subscription.
    let mut second = connect(&app).await;
    send(
        &mut second,
        json!({"id": "2", "type": "subscribe",
               "payload": {"query": ORDER_UPDATED, "variables": {"id": shop.order}}}),
    )
    .await;
    let message = receive(&mut second).await;
    let errors = match message["type"].as_str() {
        Some("error") => message["payload"].clone(),
        Some("next") => message["payload"]["errors"].clone(),
        other => panic!("unexpected message {other:?}: {message}"),
    };
    assert_eq!(
        errors[0]["extensions"]["code"], "TOO_MANY_WATCHES",
        "{message}"
    );

    // Once the subscription ends, reads may wait again.
    send(&mut socket, json!({"id": "1", "type": "complete"})).await;
    socket.close(None).await.unwrap();
    eventually("the subscription ends", || async {
        app.service.open_watches() == 0
    })
    .await;
    let (code, _) = app
        .error(AT_LEAST, json!({"id": shop.order, "min": 5}))
        .await;
    assert_eq!(code, "STALE");
}
