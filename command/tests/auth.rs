//! Who may do what on the command API: every route × every kind of caller, against the
//! expected status and code, and no event stored by any refused request.

mod common;

use std::time::Duration;

use common::{created_id, spawn_app_with, TestApp};
use orderflow_command::startup::ApiOptions;
use orderflow_store::auth::testing;
use orderflow_store::edge::EdgeArgs;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn options() -> ApiOptions {
    ApiOptions {
        auth: testing::auth(),
        edge: EdgeArgs::default(),
        metrics_on_api: true,
    }
}

/// Two customers (`ada` owns `order`), a product and a draft order with one line.
struct World {
    ada: Uuid,
    bob: Uuid,
    product: Uuid,
    order: Uuid,
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request sent")
}

async fn world(app: &TestApp) -> World {
    let admin = testing::admin();
    let tag = Uuid::new_v4().simple().to_string();
    let register = |name: &str| json!({"name": name, "email": format!("{name}-{tag}@example.com")});
    let ada =
        created_id(send(app, Method::POST, "/api/users", None, Some(register("ada"))).await).await;
    let bob =
        created_id(send(app, Method::POST, "/api/users", None, Some(register("bob"))).await).await;
    let product = created_id(
        send(
            app,
            Method::POST,
            "/api/products",
            Some(&admin),
            Some(json!({"sku": format!("SKU-{}", &tag[..8]), "name": "Mug",
                "price": {"amountMinor": 1250, "currency": "EUR"}, "initialStock": 100})),
        )
        .await,
    )
    .await;
    let order = created_id(
        send(
            app,
            Method::POST,
            "/api/orders",
            Some(&testing::customer(ada)),
            Some(json!({"userId": ada, "currency": "EUR"})),
        )
        .await,
    )
    .await;
    let added = send(
        app,
        Method::POST,
        &format!("/api/orders/{order}/items"),
        Some(&testing::customer(ada)),
        Some(json!({"productId": product, "quantity": 1})),
    )
    .await;
    assert_eq!(added.status(), 200);
    World {
        ada,
        bob,
        product,
        order,
    }
}

/// One route, with what a customer acting on Ada's things (as Ada, as Bob) and an admin
/// get.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    own: u16,
    other: u16,
    admin: u16,
    /// Answers without a token.
    public: bool,
}

fn cases(w: &World) -> Vec<Case> {
    let case = |method: Method, path: String, body: Option<Value>, own, other, admin| Case {
        method,
        path,
        body,
        own,
        other,
        admin,
        public: false,
    };
    let tag = Uuid::new_v4().simple().to_string();
    let (ada, order, product) = (w.ada, w.order, w.product);
    vec![
        Case {
            public: true,
            // Ada and Bob are registered already; an admin registers someone new.
            ..case(
                Method::POST,
                "/api/users".into(),
                Some(json!({"name": "Cy", "email": format!("cy-{tag}@example.com")})),
                422,
                422,
                201,
            )
        },
        case(
            Method::POST,
            format!("/api/users/{ada}/name"),
            Some(json!({"name": "Ada L."})),
            200,
            404,
            200,
        ),
        case(
            Method::POST,
            format!("/api/users/{ada}/email"),
            Some(json!({"email": format!("ada2-{tag}@example.com")})),
            200,
            404,
            200,
        ),
        case(
            Method::POST,
            "/api/products".into(),
            Some(json!({"sku": format!("NEW-{}", &tag[..8]), "name": "Tea",
                "price": {"amountMinor": 499, "currency": "EUR"}, "initialStock": 5})),
            403,
            403,
            201,
        ),
        case(
            Method::POST,
            format!("/api/products/{product}/price"),
            Some(json!({"price": {"amountMinor": 1300, "currency": "EUR"}})),
            403,
            403,
            200,
        ),
        case(
            Method::POST,
            format!("/api/products/{product}/restock"),
            Some(json!({"quantity": 5})),
            403,
            403,
            200,
        ),
        case(
            Method::POST,
            "/api/orders".into(),
            Some(json!({"userId": ada, "currency": "EUR"})),
            201,
            403,
            201,
        ),
        case(
            Method::POST,
            format!("/api/orders/{order}/items"),
            Some(json!({"productId": product, "quantity": 2})),
            200,
            404,
            200,
        ),
        case(
            Method::PATCH,
            format!("/api/orders/{order}/items/{product}"),
            Some(json!({"quantity": 3})),
            200,
            404,
            200,
        ),
        case(
            Method::DELETE,
            format!("/api/orders/{order}/items/{product}"),
            None,
            200,
            404,
            200,
        ),
        case(
            Method::POST,
            format!("/api/orders/{order}/place"),
            Some(json!({})),
            200,
            404,
            200,
        ),
        case(
            Method::POST,
            format!("/api/orders/{order}/cancel"),
            Some(json!({"reason": "changed my mind"})),
            200,
            404,
            200,
        ),
        case(Method::GET, "/api/sagas".into(), None, 403, 403, 200),
        // No saga runs here: the admin passes and finds none.
        case(
            Method::GET,
            format!("/api/sagas/{order}"),
            None,
            403,
            403,
            404,
        ),
        case(
            Method::POST,
            format!("/api/sagas/{order}/retry"),
            None,
            403,
            403,
            404,
        ),
        case(
            Method::GET,
            format!("/api/streams/{order}/events"),
            None,
            200,
            404,
            200,
        ),
        case(
            Method::GET,
            format!("/api/streams/{ada}/events"),
            None,
            200,
            404,
            200,
        ),
        case(
            Method::GET,
            format!("/api/streams/{product}/events"),
            None,
            404,
            404,
            200,
        ),
    ]
}

/// Send `case` as `token` on a fresh world (so each answer depends on nothing earlier);
/// the status it got, and whether the store changed.
async fn attempt(
    app: &TestApp,
    case: impl Fn(&World) -> Case,
    token: impl Fn(&World) -> Option<String>,
) -> (u16, Value, bool, Case) {
    let w = world(app).await;
    let case = case(&w);
    let before = app.event_count().await;
    let response = send(
        app,
        case.method.clone(),
        &case.path,
        token(&w).as_deref(),
        case.body.clone(),
    )
    .await;
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").is_some();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 401 {
        assert!(
            challenge,
            "{} {}: a 401 without WWW-Authenticate",
            case.method, case.path
        );
    }
    let changed = app.event_count().await != before;
    (status, body, changed, case)
}

#[sqlx::test(migrations = "../migrations")]
async fn every_route_answers_every_kind_of_caller_as_the_rules_say(pool: PgPool) {
    let app = spawn_app_with(pool, options()).await;
    let probe = world(&app).await;
    let routes = cases(&probe).len();
    let mut checked = 0;
    for index in 0..routes {
        let case = |w: &World| cases(w).swap_remove(index);
        // No token: 401 UNAUTHENTICATED, but for the public route.
        let (status, body, changed, c) = attempt(&app, case, |_| None).await;
        let expected = if c.public { 201 } else { 401 };
        assert_eq!(
            status, expected,
            "{} {} without a token: {body}",
            c.method, c.path
        );
        if !c.public {
            assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
            assert!(
                !changed,
                "{} {} stored an event without a token",
                c.method, c.path
            );
        }
        // Tokens that must not verify: 401 with their code, nothing stored.
        for kind in 0..4 {
            let (status, body, changed, c) = attempt(&app, case, |w| {
                Some(testing::refused(w.ada).swap_remove(kind).1)
            })
            .await;
            let (name, _, code) = testing::refused(probe.ada).swap_remove(kind);
            assert_eq!(
                status, 401,
                "{} {} with an {name} token: {body}",
                c.method, c.path
            );
            assert_eq!(body["error"]["code"], code, "{name}");
            assert!(
                !changed,
                "{} {} stored an event for an {name} token",
                c.method, c.path
            );
        }
        // Customers and admins.
        type Token = fn(&World) -> Option<String>;
        type Expected = fn(&Case) -> u16;
        let callers: [(&str, Token, Expected); 3] = [
            ("the owner", |w| Some(testing::customer(w.ada)), |c| c.own),
            (
                "another customer",
                |w| Some(testing::customer(w.bob)),
                |c| c.other,
            ),
            ("an admin", |_| Some(testing::admin()), |c| c.admin),
        ];
        for (who, token, expected) in callers {
            let (status, body, changed, c) = attempt(&app, case, token).await;
            assert_eq!(
                status,
                expected(&c),
                "{} {} as {who}: {body}",
                c.method,
                c.path
            );
            if status >= 400 {
                assert!(
                    !changed,
                    "{} {} as {who} was refused but stored an event",
                    c.method, c.path
                );
                let code = body["error"]["code"].as_str().unwrap_or_default();
                match status {
                    403 => assert_eq!(code, "FORBIDDEN"),
                    // Someone else's answers as what does not exist.
                    404 if who == "another customer" => assert!(code == "NOT_FOUND", "{body}"),
                    _ => {}
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes * 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn someone_elses_order_looks_exactly_like_one_that_does_not_exist(pool: PgPool) {
    let app = spawn_app_with(pool, options()).await;
    let w = world(&app).await;
    let bob = testing::customer(w.bob);
    let path = |order: Uuid| format!("/api/orders/{order}/items/{}", w.product);
    for order in [w.order, Uuid::now_v7()] {
        // Even with a version to match: the version check must not answer first.
        let response = app
            .client
            .patch(app.url(&path(order)))
            .bearer_auth(&bob)
            .header("If-Match", "\"99\"")
            .json(&json!({"quantity": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        assert!(body["error"].get("currentVersion").is_none(), "{body}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn events_record_who_asked_and_in_which_roles(pool: PgPool) {
    let app = spawn_app_with(pool, options()).await;
    let w = world(&app).await;
    let admin = testing::admin();
    let stream = send(
        &app,
        Method::GET,
        &format!("/api/streams/{}/events", w.order),
        Some(&admin),
        None,
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    for event in stream["events"].as_array().unwrap() {
        assert_eq!(event["metadata"]["actor"], w.ada.to_string());
        assert_eq!(event["metadata"]["actorRoles"], json!(["customer"]));
    }
    let product = send(
        &app,
        Method::GET,
        &format!("/api/streams/{}/events", w.product),
        Some(&admin),
        None,
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(product["events"][0]["metadata"]["actor"], "admin@tests");
    assert_eq!(
        product["events"][0]["metadata"]["actorRoles"],
        json!(["admin"])
    );

    // Ada sees that staff acted on her order, not who, nor with which key.
    let cancelled = app
        .client
        .post(app.url(&format!("/api/orders/{}/cancel", w.order)))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "staff-key")
        .json(&json!({"reason": "fraud check"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let seen = send(
        &app,
        Method::GET,
        &format!("/api/streams/{}/events", w.order),
        Some(&testing::customer(w.ada)),
        None,
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    let last = seen["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["eventType"], "OrderCancelled");
    assert_eq!(last["metadata"]["actor"], "staff");
    assert_eq!(last["metadata"]["commandId"], "");
    assert!(last["metadata"].get("actorRoles").is_none(), "{last}");
    // Her own events keep their keys.
    assert_eq!(seen["events"][0]["metadata"]["actor"], w.ada.to_string());
    assert_ne!(seen["events"][0]["metadata"]["commandId"], "");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_customer_registers_under_their_tokens_subject(pool: PgPool) {
    let app = spawn_app_with(pool, options()).await;
    let me = Uuid::now_v7();
    let body = json!({"name": "Dee", "email": format!("dee-{me}@example.com")});
    let first = send(
        &app,
        Method::POST,
        "/api/users",
        Some(&testing::customer(me)),
        Some(body.clone()),
    )
    .await;
    assert_eq!(created_id(first).await, me);
    let again = send(
        &app,
        Method::POST,
        "/api/users",
        Some(&testing::customer(me)),
        Some(json!({"name": "Dee", "email": format!("dee2-{me}@example.com")})),
    )
    .await;
    assert_eq!(again.status(), 422);
    // A token with neither role may not register anyone.
    let roleless = testing::token(&Uuid::now_v7().to_string(), &[], Duration::from_secs(60));
    let refused = send(
        &app,
        Method::POST,
        "/api/users",
        Some(&roleless),
        Some(json!({"name": "Eve", "email": format!("eve-{me}@example.com")})),
    )
    .await;
    assert_eq!(refused.status(), 403);
}

#[sqlx::test(migrations = "../migrations")]
async fn idempotency_keys_belong_to_their_subject(pool: PgPool) {
    let app = spawn_app_with(pool, options()).await;
    let w = world(&app).await;
    let create = |user: Uuid| {
        app.client
            .post(app.url("/api/orders"))
            .bearer_auth(testing::customer(user))
            .header("Idempotency-Key", "same-key")
            .json(&json!({"userId": user, "currency": "EUR"}))
            .send()
    };
    let ada = created_id(create(w.ada).await.unwrap()).await;
    let bob = create(w.bob).await.unwrap();
    assert_eq!(
        bob.status(),
        201,
        "Bob's key is his own, not a reuse of Ada's"
    );
    assert!(bob.headers().get("idempotent-replayed").is_none());
    assert_ne!(created_id(bob).await, ada);
    // Ada's retry is still answered from her first request.
    let retry = create(w.ada).await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
}

#[sqlx::test(migrations = "../migrations")]
async fn operations_routes_answer_without_a_token(pool: PgPool) {
    let app = spawn_app_with(pool, options()).await;
    for path in ["/health", "/ready", "/metrics", "/api/openapi.json"] {
        let response = send(&app, Method::GET, path, None, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        // A bad token on them changes nothing either.
        let response = send(&app, Method::GET, path, Some("not-a-token"), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_rate_limit_answers_429_with_retry_after_then_lets_the_caller_back(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        ApiOptions {
            edge: EdgeArgs {
                rate_limit: 1,
                rate_limit_burst: 2,
                anonymous_rate_limit: 1,
                anonymous_rate_limit_burst: 1,
                ..EdgeArgs::default()
            },
            ..options()
        },
    )
    .await;
    let admin = testing::admin();
    let get = || send(&app, Method::GET, "/api/sagas", Some(&admin), None);
    let first = get().await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    assert_eq!(get().await.status(), 200);
    let limited = get().await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // Another subject has a bucket of its own.
    let other = send(
        &app,
        Method::GET,
        "/api/streams/00000000-0000-0000-0000-000000000000/events",
        Some(&testing::customer(Uuid::now_v7())),
        None,
    )
    .await;
    assert_eq!(other.status(), 404);
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        get().await.status(),
        200,
        "the caller is let back after Retry-After"
    );

    // Registration without a token is limited per client IP.
    let register = |n: u32| {
        send(
            &app,
            Method::POST,
            "/api/users",
            None,
            Some(
                json!({"name": "Anon", "email": format!("anon-{n}-{}@example.com", Uuid::new_v4())}),
            ),
        )
    };
    assert_eq!(register(1).await.status(), 201);
    let limited = register(2).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_some());
}
