//! Read-your-writes across views (`X-Min-Position`) through the whole pipeline: commands
//! over HTTP, the relay, a real Kafka-protocol broker (`KAFKA_BROKERS`), the projector
//! workers and the query service.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{spawn, spawn_with, stream_id, TestApp, DEADLINE};
use futures::{SinkExt as _, StreamExt as _};
use orderflow_command::relay;
use orderflow_kafka::testing::TestTopics;
use orderflow_projector::worker::{self, WorkerOptions};
use orderflow_projector::PROJECTIONS;
use orderflow_query::progress::{MIN_POSITION_HEADER, VIEWS};
use orderflow_query::QueryOptions;
use serde_json::{json, Value};
use sha2::Digest as _;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const COMPOSED: &str = r#"query($id: ID!) {
  order(id: $id) { version user { id name } items { quantity product { id name } } }
}"#;

/// A read of the two views that consume user events (`order_view` and `user_view`).
const USER_VIEWS: &str = "{ users { totalCount } orders { totalCount } }";

/// The answer of [`USER_VIEWS`] (no error).
fn answered(body: &Value) -> bool {
    body["errors"].is_null() && body["data"]["users"]["totalCount"].is_i64()
}

async fn fresh_topics() -> TestTopics {
    let brokers = std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS must point at a Kafka-protocol broker (scripts/test starts tansu)");
    TestTopics::create(&brokers, 3).await
}

/// The relay and the projector workers, until dropped.
struct Pipeline {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Pipeline {
    fn start(pool: &PgPool, kafka: &TestTopics) -> Self {
        let (stop, shutdown) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(relay::run(
                pool.clone(),
                kafka.args().clone(),
                Default::default(),
                shutdown.clone(),
            )),
            tokio::spawn(worker::run(
                pool.clone(),
                kafka.args().clone(),
                PROJECTIONS.to_vec(),
                WorkerOptions {
                    group_prefix: kafka.topic_prefix.clone(),
                    ..WorkerOptions::default()
                },
                shutdown,
            )),
        ];
        Self { stop, tasks }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
    }
}

/// POST a command; the body (asserting success).
async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    app.command(path, body).await
}

fn position(body: &Value) -> i64 {
    body["position"]
        .as_i64()
        .expect("a command answers its position")
}

/// A GraphQL query with `X-Min-Position`: the status and the body.
async fn read_at(app: &TestApp, min_position: &str, query: &str, variables: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.query_url("/graphql"))
        .header(MIN_POSITION_HEADER, min_position)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("query sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

#[sqlx::test(migrations = "../migrations")]
async fn after_its_own_writes_a_client_never_sees_null_for_what_it_created(pool: PgPool) {
    let kafka = fresh_topics().await;
    let app = Arc::new(spawn(pool.clone()).await);
    let pipeline = Pipeline::start(&pool, &kafka);

    // Other clients keep writing meanwhile: users, products and orders of their own.
    let stop_others = Arc::new(AtomicBool::new(false));
    let other_writes = Arc::new(AtomicU64::new(0));
    let others = {
        let (app, stop, count) = (app.clone(), stop_others.clone(), other_writes.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let user = stream_id(
                    &post(
                        &app,
                        "/api/users",
                        json!({"name": "Other", "email": format!("other{n}@example.com")}),
                    )
                    .await,
                );
                post(
                    &app,
                    "/api/orders",
                    json!({"userId": user, "currency": "EUR"}),
                )
                .await;
                count.fetch_add(2, Ordering::Relaxed);
            }
        })
    };

    const ROUNDS: usize = 200;
    let mut waited = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let user = post(
            &app,
            "/api/users",
            json!({"name": format!("Reader {round}"), "email": format!("reader{round}@example.com")}),
        )
        .await;
        let product = post(
            &app,
            "/api/products",
            json!({"sku": format!("RYW-{round}"), "name": format!("Thing {round}"),
                   "price": {"amountMinor": 100 + round, "currency": "EUR"}, "initialStock": 5}),
        )
        .await;
        let order = post(
            &app,
            "/api/orders",
            json!({"userId": stream_id(&user), "currency": "EUR"}),
        )
        .await;
        let order_id = stream_id(&order);
        let added = post(
            &app,
            &format!("/api/orders/{order_id}/items"),
            json!({"productId": stream_id(&product), "quantity": 2}),
        )
        .await;
        let started = std::time::Instant::now();
        let (status, body) = read_at(
            &app,
            &position(&added).to_string(),
            COMPOSED,
            json!({"id": order_id}),
        )
        .await;
        waited.push(started.elapsed());
        assert_eq!(status, 200, "round {round}: {body}");
        assert!(body.get("errors").is_none(), "round {round}: {body}");
        let order = &body["data"]["order"];
        assert_eq!(order["version"], 2, "round {round}: {body}");
        assert_eq!(
            order["user"]["id"],
            json!(stream_id(&user)),
            "round {round}: {body}"
        );
        assert_eq!(order["user"]["name"], json!(format!("Reader {round}")));
        assert_eq!(
            order["items"],
            json!([{"quantity": 2, "product": {"id": stream_id(&product), "name": format!("Thing {round}")}}]),
            "round {round}: {body}"
        );
    }
    stop_others.store(true, Ordering::Relaxed);
    others.await.unwrap();
    assert!(
        other_writes.load(Ordering::Relaxed) > 0,
        "other writes ran alongside"
    );
    waited.sort();
    eprintln!(
        "X-Min-Position waits over {ROUNDS} rounds: p50 {:?}, max {:?}",
        waited[ROUNDS / 2],
        waited[ROUNDS - 1]
    );

    // Every view reports how far it is: once all of them applied the last write (a read
    // of every view waits for that), none is behind what the relay published.
    let last: i64 = sqlx::query_scalar("select max(position) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (status, body) = read_at(
        &app,
        &last.to_string(),
        "query($id: ID!) { order(id: $id) { payment { status } } users { totalCount } \
         products { totalCount } viewProgress { view behind lastAppliedPosition } }",
        json!({"id": uuid::Uuid::now_v7()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let views = body["data"]["viewProgress"].as_array().unwrap();
    assert_eq!(views.len(), VIEWS.len());
    for view in views {
        assert_eq!(view["behind"], 0, "{view}");
    }
    let applied: Vec<i64> = views
        .iter()
        .filter_map(|view| view["lastAppliedPosition"].as_i64())
        .collect();
    assert!(
        applied.contains(&last),
        "the last event is applied: {views:?}"
    );
    pipeline.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn views_that_do_not_catch_up_in_time_answer_stale_with_how_far_each_is(pool: PgPool) {
    let kafka = fresh_topics().await;
    let app = waiting_up_to(&pool, 300).await;
    // The relay runs, no projector does: the views stay behind.
    let (stop, shutdown) = watch::channel(false);
    let relay = tokio::spawn(relay::run(
        pool.clone(),
        kafka.args().clone(),
        Default::default(),
        shutdown,
    ));
    let user = post(
        &app,
        "/api/users",
        json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await;
    // Once the relay has published it, only the views are behind.
    common::eventually("the relay publishes the event", || async {
        let published: Option<i64> =
            sqlx::query_scalar("select position from relay_cursors where name = 'default'")
                .fetch_optional(&pool)
                .await
                .unwrap();
        published >= Some(position(&user))
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = read_at(
        &app,
        &position(&user).to_string(),
        "query($id: ID!) { user(id: $id) { name } }",
        json!({"id": stream_id(&user)}),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, 200, "{body}");
    assert!(body["data"].is_null(), "{body}");
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "STALE", "{body}");
    assert_eq!(error["extensions"]["minPosition"], position(&user));
    assert!(
        error["extensions"]["relayPosition"].as_i64() >= Some(position(&user)),
        "{body}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the relay has published it"),
        "{body}"
    );
    // The read waits only for the view it reads.
    let views_behind = |body: &Value| -> Vec<String> {
        body["errors"][0]["extensions"]["views"]
            .as_array()
            .expect("a STALE error lists the views behind")
            .iter()
            .map(|view| {
                assert_eq!(view["behind"], 1, "{body}");
                assert_eq!(view["lastAppliedPosition"], Value::Null, "{body}");
                view["view"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(views_behind(&body), ["user_view"], "{body}");
    // The user's event is consumed by the user and order views: a read of both waits for
    // both; one of the product view, which has nothing to apply, answers at once.
    let (_, body) = read_at(&app, &position(&user).to_string(), USER_VIEWS, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "STALE", "{body}");
    assert_eq!(views_behind(&body), ["order_view", "user_view"], "{body}");
    // Twice (the second time from the kept document), as a persisted query (registered,
    // then by its hash alone), as a single named operation, and as the operation chosen in
    // a document whose other operation reads the lagging views.
    const PRODUCTS: &str = "{ products { totalCount } }";
    const PERSISTED: &str = "{ products { nodes { id } } }";
    let hash = format!("{:x}", sha2::Sha256::digest(PERSISTED.as_bytes()));
    let persisted = json!({"version": 1, "sha256Hash": hash});
    let two = format!("query Products {PRODUCTS} query Users {USER_VIEWS}");
    let count = json!({"data": {"products": {"totalCount": 0}}});
    let nodes = json!({"data": {"products": {"nodes": []}}});
    let send = |request: Value| {
        let (client, url) = (app.client.clone(), app.query_url("/graphql"));
        let at = position(&user).to_string();
        async move {
            let response = client
                .post(url)
                .header(MIN_POSITION_HEADER, at)
                .json(&request)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200, "{request}");
            response.json::<Value>().await.unwrap()
        }
    };
    for (request, answer) in [
        (json!({"query": PRODUCTS}), &count),
        (json!({"query": PRODUCTS}), &count),
        (
            json!({"query": PERSISTED, "extensions": {"persistedQuery": persisted}}),
            &nodes,
        ),
        (json!({"extensions": {"persistedQuery": persisted}}), &nodes),
        (
            json!({"query": format!("query Products {PRODUCTS}")}),
            &count,
        ),
        (json!({"query": two, "operationName": "Products"}), &count),
    ] {
        let body = send(request.clone()).await;
        assert_eq!(&body, answer, "{request}");
    }
    // The other operation of that document is held for the views it reads.
    let body = send(json!({"query": two, "operationName": "Users"})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "STALE", "{body}");
    assert_eq!(views_behind(&body), ["order_view", "user_view"], "{body}");

    // Without the header the same query answers at once, from whatever the views hold.
    let (status, body) = read_at(&app, "", "{ __typename }", json!({})).await;
    assert_eq!(status, 400, "an empty header is refused: {body}");
    let answer = app
        .graphql(
            "query($id: ID!) { user(id: $id) { name } }",
            json!({"id": stream_id(&user)}),
        )
        .await;
    assert_eq!(answer["data"]["user"], Value::Null);
    stop.send(true).unwrap();
    relay.await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_or_future_positions_are_bad_user_input(pool: PgPool) {
    let app = spawn(pool.clone()).await;
    for value in ["abc", "0", "-4", "1.5", "99999999999999999999"] {
        let (status, body) = read_at(&app, value, "{ __typename }", json!({})).await;
        assert_eq!(status, 400, "{value}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(MIN_POSITION_HEADER),
            "{body}"
        );
    }
    // Twice: which one holds is not guessed.
    let response = app
        .client
        .post(app.query_url("/graphql"))
        .header(MIN_POSITION_HEADER, "5")
        .header(MIN_POSITION_HEADER, "900")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("more than once"),
        "{body}"
    );
    // A position no event has yet.
    let (status, body) = read_at(&app, "12345", "{ __typename }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("past the end of the event log"),
        "{body}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_websocket_connection_init_position_holds_its_queries(pool: PgPool) {
    let kafka = fresh_topics().await;
    let app = spawn(pool.clone()).await;
    let pipeline = Pipeline::start(&pool, &kafka);
    let user = post(
        &app,
        "/api/users",
        json!({"name": "Grace", "email": "grace@example.com"}),
    )
    .await;
    let mut socket = app.open_socket().await;
    let init =
        json!({"type": "connection_init", "payload": {MIN_POSITION_HEADER: position(&user)}});
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {
        "query": "query($id: ID!) { user(id: $id) { name } }",
        "variables": {"id": stream_id(&user)}}});
    let mut acked = false;
    let answer = tokio::time::timeout(DEADLINE, async {
        while let Some(message) = socket.next().await {
            let Message::Text(text) = message.unwrap() else {
                continue;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["type"].as_str() {
                Some("connection_ack") if !acked => {
                    acked = true;
                    socket
                        .send(Message::Text(subscribe.to_string().into()))
                        .await
                        .unwrap();
                }
                Some("next") => return message["payload"].clone(),
                _ => {}
            }
        }
        panic!("the socket closed without an answer");
    })
    .await
    .expect("an answer in time");
    assert_eq!(answer, json!({"data": {"user": {"name": "Grace"}}}));

    // A malformed position in connection_init refuses the connection, with a reason
    // that fits a close frame (at most 123 bytes) whatever the value.
    let mut socket = app.open_socket().await;
    let init = json!({"type": "connection_init",
                      "payload": {MIN_POSITION_HEADER: "99999999999999999999999999999999"}});
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(DEADLINE, async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| f.reason.to_string()),
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    assert_ne!(value["type"], "connection_ack", "{value}");
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the connection is refused in time");
    let reason = closed.expect("a close frame with a reason");
    assert!(reason.starts_with("BAD_USER_INPUT: "), "{reason}");
    assert!(reason.contains(MIN_POSITION_HEADER), "{reason}");
    assert!(reason.len() <= 123, "{reason}");
    pipeline.stop().await;
}

/// The query service alone, its `X-Min-Position` waits bounded at `ms`.
async fn waiting_up_to(pool: &PgPool, ms: u64) -> TestApp {
    let options = QueryOptions {
        min_version_timeout: Duration::from_millis(ms),
        ..QueryOptions::default()
    };
    spawn_with(pool.clone(), options).await
}

/// A user event written straight to the store: its cursor `(tx_id, position)`.
async fn append_user_event(
    conn: &mut sqlx::PgConnection,
    stream: uuid::Uuid,
    version: i32,
) -> (i64, i64) {
    sqlx::query_as(
        "insert into events (stream_id, stream_type, version, event_type, schema_version, \
         payload, metadata) values ($1, 'user', $2, 'UserRenamed', 1, '{}', '{}') \
         returning tx_id::text::bigint, position",
    )
    .bind(stream)
    .bind(version)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// A relay snapshot at `cursor` of one partition, `user` 0, at `offset`.
async fn user_snapshot(pool: &PgPool, cursor: (i64, i64), offset: i64) {
    sqlx::query(
        "insert into relay_history (relay, tx_id, position, stream_types, partitions, \
         next_offsets) values ('default', $1, $2, '{user}', '{0}', $3)",
    )
    .bind(cursor.0)
    .bind(cursor.1)
    .bind(vec![offset])
    .execute(pool)
    .await
    .unwrap();
}

/// Views that lag behind the relay still answer a read of a position they applied: it needs
/// the offsets of the relay's first snapshot at or after the position, not today's.
#[sqlx::test(migrations = "../migrations")]
async fn a_position_the_views_applied_answers_while_they_lag_behind_the_relay(pool: PgPool) {
    let app = waiting_up_to(&pool, 1500).await;
    let mut conn = pool.acquire().await.unwrap();
    let (tx_id, position) = append_user_event(&mut conn, uuid::Uuid::now_v7(), 1).await;
    // The relay has since published 40 more records to the partition; the views that
    // consume it have applied the first 10, which the snapshot at the event covers.
    sqlx::query("insert into relay_cursors (name, tx_id, position) values ('default', $1, $2)")
        .bind(tx_id)
        .bind(position + 40)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into relay_partitions (relay, stream_type, partition, next_offset) \
         values ('default', 'user', 0, 50)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into projection_progress (projection, stream_type, partition, next_offset, \
         position) values ('order_view', 'user', 0, 10, $1), ('user_view', 'user', 0, 10, $1)",
    )
    .bind(position)
    .execute(&pool)
    .await
    .unwrap();
    let at = position.to_string();
    let read = || read_at(&app, &at, USER_VIEWS, json!({}));
    // Without a snapshot, today's offsets are all there is to go by: STALE.
    let (_, body) = read().await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "STALE", "{body}");
    // The first snapshot at or after the event is the one (one before it covers less, a
    // later one more). A read already waiting when the snapshots come answers then.
    let waiting = tokio::spawn({
        let (client, url, at) = (app.client.clone(), app.query_url("/graphql"), at.clone());
        async move {
            let started = std::time::Instant::now();
            let response = client
                .post(url)
                .header(MIN_POSITION_HEADER, at)
                .json(&json!({"query": USER_VIEWS}))
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            (started.elapsed(), body)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (at, offset) in [(position - 1, 9), (position, 10), (position + 20, 30)] {
        user_snapshot(&pool, (tx_id, at), offset).await;
    }
    let (waited, body) = waiting.await.unwrap();
    assert!(answered(&body), "{body}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    let (status, body) = read().await;
    assert_eq!(status, 200, "{body}");
    assert!(answered(&body), "{body}");
}

/// Two appends at once: the one that commits first can hold a higher position than the
/// other's. A read at the higher position then also waits for the relay to publish the
/// lower one, which it publishes later.
#[sqlx::test(migrations = "../migrations")]
async fn a_position_covers_a_lower_one_that_committed_after_it(pool: PgPool) {
    let app = waiting_up_to(&pool, 300).await;
    let (first, second) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let mut one = pool.begin().await.unwrap();
    let mut other = pool.begin().await.unwrap();
    let (_, low) = append_user_event(&mut one, first, 1).await;
    let (late_tx, middle) = append_user_event(&mut other, second, 1).await;
    let (early_tx, high) = append_user_event(&mut one, first, 2).await;
    one.commit().await.unwrap();
    other.commit().await.unwrap();
    assert!(low < middle && middle < high && early_tx < late_tx);

    // The relay has published the first transaction (its cursor at `high`), not the
    // second: `middle` is below `high` but not published.
    let relay_at = |tx_id: i64, position: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "insert into relay_cursors (name, tx_id, position) values ('default', $1, $2) \
                 on conflict (name) do update set tx_id = $1, position = $2",
            )
            .bind(tx_id)
            .bind(position)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    relay_at(early_tx, high).await;
    let (status, body) = read_at(&app, &high.to_string(), USER_VIEWS, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "STALE", "{body}");
    assert_eq!(error["extensions"]["relayPosition"], high, "{body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the relay has not published it yet"),
        "{body}"
    );
    // Once the relay is past the second transaction too, the read answers.
    relay_at(late_tx, middle).await;
    let (status, body) = read_at(&app, &high.to_string(), USER_VIEWS, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(answered(&body), "{body}");
    // The lower position alone is covered by the relay's cursor at it, as before.
    let (_, body) = read_at(&app, &middle.to_string(), USER_VIEWS, json!({})).await;
    assert!(answered(&body), "{body}");

    // With the relay's snapshots: the one at the higher position's own cursor, taken before
    // the lower position was published, does not answer for it. The lower position's
    // record is the partition's second; the views have consumed only the first.
    for statement in [
        "insert into relay_partitions (relay, stream_type, partition, next_offset) \
         values ('default', 'user', 0, 2)",
        "insert into projection_progress (projection, stream_type, partition, next_offset) \
         values ('order_view', 'user', 0, 1), ('user_view', 'user', 0, 1)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    user_snapshot(&pool, (early_tx, high), 1).await;
    let (_, body) = read_at(&app, &high.to_string(), USER_VIEWS, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "STALE", "{body}");
    // A snapshot at or after the lower position's cursor is the one the read goes by.
    user_snapshot(&pool, (late_tx, middle), 1).await;
    let (_, body) = read_at(&app, &high.to_string(), USER_VIEWS, json!({})).await;
    assert!(answered(&body), "{body}");
}

#[test]
fn the_query_service_knows_what_each_projection_consumes() {
    let from_projector: Vec<(&str, Vec<&str>)> = PROJECTIONS
        .iter()
        .map(|projection| (projection.name(), projection.stream_types().to_vec()))
        .collect();
    let known: Vec<(&str, Vec<&str>)> = VIEWS
        .iter()
        .map(|(view, types)| (*view, types.to_vec()))
        .collect();
    assert_eq!(known, from_projector);
}
