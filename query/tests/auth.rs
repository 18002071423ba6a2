//! Who may read what through GraphQL: every root field × every kind of caller, and
//! subscriptions over a real WebSocket.

mod common;

use std::time::Duration;

use common::{spawn_with, Shop, Socket, TestApp, DEADLINE};
use futures::{SinkExt as _, StreamExt as _};
use orderflow_query::QueryOptions;
use orderflow_store::auth::{testing, Role};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

fn options() -> QueryOptions {
    QueryOptions {
        auth: testing::auth(),
        min_version_timeout: Duration::from_millis(300),
        ..QueryOptions::default()
    }
}

/// The answer to `query` sent with `token`: HTTP status and body.
async fn ask(app: &TestApp, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut request = app.client.post(app.query_url("/graphql"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 401 {
        assert!(response.headers().get("www-authenticate").is_some());
    }
    (status, response.json().await.unwrap())
}

fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// What a caller gets from a field: its data, or the error code.
enum Gets {
    /// Data that passes the check.
    Data(fn(&Value, &Shop) -> bool),
    Forbidden,
}

struct Field {
    name: &'static str,
    query: String,
    own: Gets,
    other: Gets,
    admin: Gets,
}

fn fields(shop: &Shop) -> Vec<Field> {
    use Gets::{Data, Forbidden};
    let (order, user, mug) = (shop.order, shop.user, shop.mug);
    let any: fn(&Value, &Shop) -> bool = |_, _| true;
    let admin_only = |name: &'static str, query: &str| Field {
        name,
        query: query.to_owned(),
        own: Forbidden,
        other: Forbidden,
        admin: Data(any),
    };
    vec![
        Field {
            name: "order",
            query: format!("{{ order(id: \"{order}\") {{ id user {{ id }} }} }}"),
            own: Data(|d, s| d["order"]["id"] == s.order.to_string()),
            other: Data(|d, _| d["order"].is_null()),
            admin: Data(|d, s| d["order"]["user"]["id"] == s.user.to_string()),
        },
        Field {
            name: "orders",
            query: format!(
                "{{ orders(filter: {{ userId: \"{user}\" }}) {{ totalCount nodes {{ id }} }} }}"
            ),
            own: Data(|d, s| d["orders"]["nodes"][0]["id"] == s.order.to_string()),
            other: Data(|d, _| d["orders"]["totalCount"] == 0),
            admin: Data(|d, _| d["orders"]["totalCount"] == 1),
        },
        Field {
            name: "orders (no filter)",
            query: "{ orders { totalCount } }".into(),
            own: Data(|d, _| d["orders"]["totalCount"] == 1),
            other: Data(|d, _| d["orders"]["totalCount"] == 0),
            admin: Data(|d, _| d["orders"]["totalCount"] == 1),
        },
        Field {
            name: "user",
            query: format!("{{ user(id: \"{user}\") {{ id orders {{ totalCount }} }} }}"),
            own: Data(|d, s| d["user"]["id"] == s.user.to_string()),
            other: Data(|d, _| d["user"].is_null()),
            admin: Data(|d, _| d["user"]["orders"]["totalCount"] == 1),
        },
        admin_only("users", "{ users { totalCount } }"),
        Field {
            name: "product",
            query: format!("{{ product(id: \"{mug}\") {{ id }} }}"),
            own: Data(|d, s| d["product"]["id"] == s.mug.to_string()),
            other: Data(|d, s| d["product"]["id"] == s.mug.to_string()),
            admin: Data(|d, s| d["product"]["id"] == s.mug.to_string()),
        },
        Field {
            name: "product (sales figures)",
            query: format!("{{ product(id: \"{mug}\") {{ sku reserved unitsSold revenue {{ amountMinor }} version }} }}"),
            own: Forbidden,
            other: Forbidden,
            admin: Data(|d, _| d["product"]["unitsSold"].is_number()),
        },
        Field {
            name: "order (saga and events)",
            query: format!("{{ order(id: \"{order}\") {{ saga {{ state }} events {{ type }} timeline {{ type }} }} }}"),
            own: Data(|d, _| d["order"]["events"][0]["type"] == "OrderCreated"),
            other: Data(|d, _| d["order"].is_null()),
            admin: Data(|d, _| d["order"]["events"].as_array().is_some_and(|e| e.len() >= 3)),
        },
        Field {
            name: "products",
            query: "{ products { totalCount } }".into(),
            own: Data(|d, _| d["products"]["totalCount"] == 2),
            other: Data(|d, _| d["products"]["totalCount"] == 2),
            admin: Data(|d, _| d["products"]["totalCount"] == 2),
        },
        Field {
            name: "viewProgress",
            query: "{ viewProgress { view } }".into(),
            own: Data(any),
            other: Data(any),
            admin: Data(any),
        },
        admin_only("sagas", "{ sagas { totalCount } }"),
        admin_only("consumerGroups", "{ consumerGroups { group } }"),
        admin_only("lagMonitor", "{ lagMonitor { up } }"),
        admin_only("projections", "{ projections { projection } }"),
        admin_only("relay", "{ relay { backlog } }"),
        admin_only("deadLetters", "{ deadLetters { topic } }"),
        admin_only("sagaCounts", "{ sagaCounts { state } }"),
        admin_only("opsHistory", "{ opsHistory { at } }"),
    ]
}

#[sqlx::test(migrations = "../migrations")]
async fn every_root_field_answers_every_kind_of_caller_as_the_rules_say(pool: PgPool) {
    let app = spawn_with(pool, options()).await;
    let shop = app.shop().await;
    let bob = app.register_user("Bob", "bob@example.com").await;
    app.project().await;
    let fields = fields(&shop);
    // Every root field of the schema has its case.
    let sdl = orderflow_query::schema_sdl();
    let query_type = sdl
        .split("type Query {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("a Query type");
    let mut in_description = false;
    let roots: Vec<&str> = query_type
        .lines()
        .filter(|line| {
            let quotes = line.matches("\"\"\"").count();
            let outside = !in_description && quotes == 0;
            in_description ^= quotes % 2 == 1;
            // Fields are indented once; their arguments, twice.
            let field = line.strip_prefix('\t').unwrap_or_default();
            outside && field.chars().next().is_some_and(char::is_lowercase)
        })
        .map(str::trim)
        .filter_map(|line| line.split(['(', ':']).next())
        .collect();
    assert!(roots.len() >= 15, "{roots:?}");
    for root in &roots {
        assert!(
            fields.iter().any(|f| f.name == *root),
            "no case for the root field {root}"
        );
    }
    for field in &fields {
        let (status, body) = ask(&app, None, &field.query).await;
        assert_eq!(status, 401, "{} without a token: {body}", field.name);
        assert_eq!(code(&body), Some("UNAUTHENTICATED"));
        for (kind, token, expected) in testing::refused(shop.user) {
            let (status, body) = ask(&app, Some(&token), &field.query).await;
            assert_eq!(status, 401, "{} with an {kind} token: {body}", field.name);
            assert_eq!(code(&body), Some(expected), "{kind}");
        }
        let callers = [
            ("the owner", testing::customer(shop.user), &field.own),
            ("another customer", testing::customer(bob), &field.other),
            ("an admin", testing::admin(), &field.admin),
        ];
        for (who, token, gets) in callers {
            let (status, body) = ask(&app, Some(&token), &field.query).await;
            assert_eq!(status, 200, "{} as {who}: {body}", field.name);
            match gets {
                Gets::Forbidden => assert_eq!(
                    code(&body),
                    Some("FORBIDDEN"),
                    "{} as {who}: {body}",
                    field.name
                ),
                Gets::Data(check) => {
                    assert!(
                        body.get("errors").is_none(),
                        "{} as {who}: {body}",
                        field.name
                    );
                    assert!(
                        check(&body["data"], &shop),
                        "{} as {who}: {body}",
                        field.name
                    );
                }
            }
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn waiting_on_someone_elses_order_answers_as_for_an_order_that_does_not_exist(pool: PgPool) {
    let app = spawn_with(pool, options()).await;
    let shop = app.shop().await;
    let bob = testing::customer(app.register_user("Bob", "bob@example.com").await);
    for order in [shop.order, Uuid::now_v7()] {
        let query = format!("{{ order(id: \"{order}\", minVersion: 1) {{ id }} }}");
        let (status, body) = ask(&app, Some(&bob), &query).await;
        assert_eq!(status, 200);
        assert_eq!(code(&body), Some("STALE"), "{body}");
        assert!(
            body["errors"][0]["extensions"]["currentVersion"].is_null(),
            "{body}"
        );
    }
    // The owner gets it at once.
    let query = format!(
        "{{ order(id: \"{}\", minVersion: 1) {{ id }} }}",
        shop.order
    );
    let (_, body) = ask(&app, Some(&testing::customer(shop.user)), &query).await;
    assert_eq!(body["data"]["order"]["id"], shop.order.to_string());
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next text message, or the close frame's reason as `{"closed": reason}`.
async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket stays open")
            .expect("a readable message");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => {
                return json!({"closed": frame.map(|f| f.reason.to_string()).unwrap_or_default()})
            }
            _ => {}
        }
    }
}

async fn init(app: &TestApp, payload: Value) -> (Socket, Value) {
    let mut socket = app.open_socket().await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    let answer = receive(&mut socket).await;
    (socket, answer)
}

fn subscribe(id: &str, order: Uuid) -> Value {
    json!({"id": id, "type": "subscribe", "payload": {
        "query": format!("subscription {{ orderUpdated(id: \"{order}\") {{ id version }} }}")}})
}

#[sqlx::test(migrations = "../migrations")]
async fn a_websocket_needs_a_good_token_in_connection_init(pool: PgPool) {
    let app = spawn_with(pool, options()).await;
    let shop = app.shop().await;
    let (_, answer) = init(&app, json!({})).await;
    assert!(
        answer["closed"]
            .as_str()
            .unwrap()
            .contains("UNAUTHENTICATED"),
        "{answer}"
    );
    for (kind, token, expected) in testing::refused(shop.user) {
        let (_, answer) = init(&app, json!({"authorization": format!("Bearer {token}")})).await;
        let reason = answer["closed"].as_str().unwrap_or_default();
        assert!(reason.contains(expected), "{kind}: {answer}");
    }
    let token = testing::customer(shop.user);
    let (_, answer) = init(&app, json!({"authorization": format!("Bearer {token}")})).await;
    assert_eq!(answer["type"], "connection_ack");
}

#[sqlx::test(migrations = "../migrations")]
async fn customers_follow_their_own_orders_only(pool: PgPool) {
    let app = spawn_with(pool, options()).await;
    let shop = app.shop().await;
    let bob = app.register_user("Bob", "bob@example.com").await;
    let bobs_order = app.create_order(bob, "EUR").await;
    app.project().await;
    let token = testing::customer(shop.user);
    let (mut socket, ack) = init(&app, json!({"authorization": format!("Bearer {token}")})).await;
    assert_eq!(ack["type"], "connection_ack");
    // Bob's order first: if it sent anything, that would arrive before Ada's.
    send(&mut socket, subscribe("theirs", bobs_order)).await;
    send(&mut socket, subscribe("mine", shop.order)).await;
    let first = receive(&mut socket).await;
    assert_eq!(first["id"], "mine", "{first}");
    assert_eq!(
        first["payload"]["data"]["orderUpdated"]["id"],
        shop.order.to_string()
    );
    // A change to Bob's order reaches Ada's socket neither.
    app.cancel(bobs_order, "no").await;
    app.project().await;
    let quiet = tokio::time::timeout(Duration::from_millis(700), receive(&mut socket)).await;
    assert!(
        quiet.is_err(),
        "a customer received another's order: {quiet:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_subscription_ends_when_its_token_expires(pool: PgPool) {
    let app = spawn_with(pool, options()).await;
    let shop = app.shop().await;
    let token = testing::token(
        &shop.user.to_string(),
        &[Role::Customer],
        Duration::from_secs(2),
    );
    let (mut socket, ack) = init(&app, json!({"authorization": format!("Bearer {token}")})).await;
    assert_eq!(ack["type"], "connection_ack");
    send(&mut socket, subscribe("mine", shop.order)).await;
    let first = receive(&mut socket).await;
    assert_eq!(
        first["payload"]["data"]["orderUpdated"]["id"],
        shop.order.to_string()
    );
    let expired = receive(&mut socket).await;
    assert_eq!(expired["type"], "next", "{expired}");
    assert_eq!(
        expired["payload"]["errors"][0]["extensions"]["code"],
        "TOKEN_EXPIRED"
    );
    let complete = receive(&mut socket).await;
    assert_eq!(complete["type"], "complete", "{complete}");
    // And the connection answers nothing more.
    send(&mut socket, json!({"id": "q", "type": "subscribe", "payload": {"query": "{ products { totalCount } }"}})).await;
    let refused = receive(&mut socket).await;
    assert_eq!(
        refused["payload"][0]["extensions"]["code"]
            .as_str()
            .or(refused["payload"]["errors"][0]["extensions"]["code"].as_str()),
        Some("TOKEN_EXPIRED"),
        "{refused}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_pages_sdl_and_probes_need_no_token(pool: PgPool) {
    let app = spawn_with(pool, options()).await;
    for path in [
        "/",
        "/ops",
        "/graphql/schema.graphql",
        "/health",
        "/ready",
        "/metrics",
    ] {
        let response = app.client.get(app.query_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn graphql_is_rate_limited_per_subject_with_a_graphql_error(pool: PgPool) {
    let app = spawn_with(
        pool,
        QueryOptions {
            edge: orderflow_store::edge::EdgeArgs {
                rate_limit: 1,
                rate_limit_burst: 1,
                ..orderflow_store::edge::EdgeArgs::default()
            },
            ..options()
        },
    )
    .await;
    let admin = testing::admin();
    let (status, _) = ask(&app, Some(&admin), "{ products { totalCount } }").await;
    assert_eq!(status, 200);
    let response = app
        .client
        .post(app.query_url("/graphql"))
        .bearer_auth(&admin)
        .json(&json!({"query": "{ products { totalCount } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), Some("RATE_LIMITED"));
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _) = ask(&app, Some(&admin), "{ products { totalCount } }").await;
    assert_eq!(status, 200, "the caller is let back after Retry-After");
}
