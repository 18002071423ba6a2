//! The command API against a real PostgreSQL, a database per test.

mod common;

use common::{created_id, error_of, spawn_app};
use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrations = "../migrations")]
async fn registering_a_user_stores_one_event_with_metadata(pool: PgPool) {
    let app = spawn_app(pool).await;
    let correlation = Uuid::now_v7();
    let response = app
        .client
        .post(app.url("/api/users"))
        .header("X-Correlation-Id", correlation.to_string())
        .json(&json!({"name": "  Ada Lovelace ", "email": "Ada@Example.COM"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["x-correlation-id"],
        correlation.to_string().as_str()
    );
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert!(body["position"].as_i64().unwrap() > 0);
    let id: Uuid = body["streamId"].as_str().unwrap().parse().unwrap();

    let stream = app.stream(id).await;
    assert_eq!(stream["streamType"], "user");
    assert_eq!(stream["version"], 1);
    let event = &stream["events"][0];
    assert_eq!(event["eventType"], "UserRegistered");
    assert_eq!(event["version"], 1);
    assert_eq!(event["position"], body["position"]);
    assert_eq!(event["data"]["name"], "Ada Lovelace");
    assert_eq!(event["data"]["email"], "ada@example.com");
    assert_eq!(event["metadata"]["correlationId"], correlation.to_string());
    let event_id: Uuid = event["metadata"]["eventId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(event_id.get_version_num(), 7);
    assert!(event["metadata"]["commandId"].is_string());
    assert!(event["recordedAt"].is_string());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_can_be_renamed_and_change_email(pool: PgPool) {
    let app = spawn_app(pool).await;
    let ada = app.register_user("Ada", "ada@example.com").await;
    let renamed = app
        .post(
            &format!("/api/users/{ada}/name"),
            json!({"name": "Ada King"}),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(renamed.json::<Value>().await.unwrap()["version"], 2);

    let moved = app
        .post(
            &format!("/api/users/{ada}/email"),
            json!({"email": "ada@king.org"}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    // The old address is free again, the new one is taken.
    app.register_user("Other", "ada@example.com").await;
    let taken = app
        .post(
            "/api/users",
            json!({"name": "Copy", "email": "ADA@king.org"}),
        )
        .await;
    assert_eq!(error_of(taken).await, (409, "EMAIL_TAKEN".into()));

    let stream = app.stream(ada).await;
    let types: Vec<&str> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserRegistered", "UserRenamed", "UserEmailChanged"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn two_concurrent_registrations_of_one_email_give_one_201_and_one_409(pool: PgPool) {
    let app = spawn_app(pool).await;
    for round in 0..5 {
        let email = format!("race{round}@example.com");
        let attempts = (0..2).map(|i| {
            app.post(
                "/api/users",
                json!({"name": format!("Racer {i}"), "email": email}),
            )
        });
        let mut statuses: Vec<u16> = join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.status().as_u16())
            .collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "round {round}");
    }
    assert_eq!(app.event_count().await, 5);
}

#[sqlx::test(migrations = "../migrations")]
async fn products_are_created_repriced_and_restocked(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mug = app.create_product("mug-01", 1250, 10).await;
    let repriced = app
        .post(
            &format!("/api/products/{mug}/price"),
            json!({"price": {"amountMinor": 1500, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(repriced.status(), 200);
    let restocked = app
        .post(
            &format!("/api/products/{mug}/restock"),
            json!({"quantity": 5}),
        )
        .await;
    assert_eq!(restocked.json::<Value>().await.unwrap()["version"], 3);

    let stream = app.stream(mug).await;
    assert_eq!(stream["events"][0]["data"]["sku"], "MUG-01");
    assert_eq!(stream["events"][1]["eventType"], "PriceChanged");
    assert_eq!(stream["events"][2]["eventType"], "Restocked");

    let duplicate = app
        .post(
            "/api/products",
            json!({"sku": "MUG-01", "name": "Another", "price": {"amountMinor": 1, "currency": "EUR"}, "initialStock": 0}),
        )
        .await;
    assert_eq!(error_of(duplicate).await, (409, "SKU_TAKEN".into()));
    let other_currency = app
        .post(
            &format!("/api/products/{mug}/price"),
            json!({"price": {"amountMinor": 1500, "currency": "USD"}}),
        )
        .await;
    assert_eq!(
        error_of(other_currency).await,
        (422, "CURRENCY_MISMATCH".into())
    );
    let nothing = app
        .post(
            &format!("/api/products/{mug}/restock"),
            json!({"quantity": 0}),
        )
        .await;
    assert_eq!(error_of(nothing).await.0, 422);
    assert_eq!(app.event_count().await, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_order_goes_from_draft_to_placed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = app.register_user("Ada", "ada@example.com").await;
    let mug = app.create_product("MUG", 1250, 10).await;
    let tea = app.create_product("TEA", 499, 10).await;
    let order = app.create_order(user).await;

    let add = |product: Uuid, quantity: u32| {
        app.post(
            format!("/api/orders/{order}/items"),
            json!({"productId": product, "quantity": quantity}),
        )
    };
    assert_eq!(add(mug, 2).await.status(), 200);
    assert_eq!(add(tea, 1).await.status(), 200);
    // Adding a product again adds to its quantity.
    assert_eq!(add(tea, 2).await.status(), 200);
    let updated = app
        .client
        .patch(app.url(&format!("/api/orders/{order}/items/{mug}")))
        .json(&json!({"quantity": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let removed = app
        .client
        .delete(app.url(&format!("/api/orders/{order}/items/{tea}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let placed = app
        .post(&format!("/api/orders/{order}/place"), json!({}))
        .await;
    assert_eq!(placed.status(), 200);
    assert_eq!(placed.json::<Value>().await.unwrap()["version"], 7);

    let stream = app.stream(order).await;
    let events = stream["events"].as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "OrderCreated",
            "ItemAdded",
            "ItemAdded",
            "QuantityUpdated",
            "QuantityUpdated",
            "ItemRemoved",
            "OrderPlaced"
        ]
    );
    assert_eq!(events[1]["data"]["productName"], "Product MUG");
    assert_eq!(events[1]["data"]["unitPrice"]["amountMinor"], 1250);
    assert_eq!(events[6]["data"]["total"]["amountMinor"], 5000);

    // A placed order takes no more items; it can still be cancelled, and then nothing changes.
    let late = add(tea, 1).await;
    assert_eq!(error_of(late).await, (422, "ORDER_NOT_DRAFT".into()));
    let cancelled = app
        .post(
            &format!("/api/orders/{order}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let again = app
        .post(
            &format!("/api/orders/{order}/cancel"),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(error_of(again).await.0, 422);
    assert_eq!(app.stream(order).await["version"], 8);
}

#[sqlx::test(migrations = "../migrations")]
async fn broken_business_rules_are_422_and_store_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = app.register_user("Ada", "ada@example.com").await;
    let mug = app.create_product("MUG", 1250, 10).await;
    let order = app.create_order(user).await;
    let before = app.event_count().await;

    let empty = app
        .post(&format!("/api/orders/{order}/place"), json!({}))
        .await;
    assert_eq!(error_of(empty).await, (422, "ORDER_EMPTY".into()));
    let zero = app
        .post(
            &format!("/api/orders/{order}/items"),
            json!({"productId": mug, "quantity": 0}),
        )
        .await;
    assert_eq!(error_of(zero).await, (422, "QUANTITY_OUT_OF_RANGE".into()));
    let not_in_order = app
        .client
        .delete(app.url(&format!("/api/orders/{order}/items/{mug}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(not_in_order).await,
        (422, "ITEM_NOT_IN_ORDER".into())
    );
    let unknown_product = app
        .post(
            &format!("/api/orders/{order}/items"),
            json!({"productId": Uuid::now_v7(), "quantity": 1}),
        )
        .await;
    assert_eq!(
        error_of(unknown_product).await,
        (422, "UNKNOWN_PRODUCT".into())
    );
    // A user id is not a product id.
    let wrong_type = app
        .post(
            &format!("/api/orders/{order}/items"),
            json!({"productId": user, "quantity": 1}),
        )
        .await;
    assert_eq!(error_of(wrong_type).await, (422, "UNKNOWN_PRODUCT".into()));
    let unknown_user = app
        .post(
            "/api/orders",
            json!({"userId": Uuid::now_v7(), "currency": "EUR"}),
        )
        .await;
    assert_eq!(error_of(unknown_user).await, (422, "UNKNOWN_USER".into()));
    let dollars = app
        .post("/api/orders", json!({"userId": user, "currency": "USD"}))
        .await;
    let dollar_order = created_id(dollars).await;
    let mismatch = app
        .post(
            &format!("/api/orders/{dollar_order}/items"),
            json!({"productId": mug, "quantity": 1}),
        )
        .await;
    assert_eq!(error_of(mismatch).await, (422, "CURRENCY_MISMATCH".into()));
    let bad_email = app
        .post("/api/users", json!({"name": "X", "email": "not-an-email"}))
        .await;
    assert_eq!(error_of(bad_email).await.0, 422);
    // PostgreSQL cannot store a NUL: refused as a rule, not failed as a 500.
    let nul_name = app
        .post(
            "/api/users",
            json!({"name": "Nul\u{0}", "email": "nul@example.com"}),
        )
        .await;
    assert_eq!(error_of(nul_name).await, (422, "INVALID_NAME".into()));
    let nul_email = app
        .post(
            "/api/users",
            json!({"name": "Nul", "email": "n\u{0}ul@example.com"}),
        )
        .await;
    assert_eq!(error_of(nul_email).await, (422, "INVALID_EMAIL".into()));
    let blank_reason = app
        .post(
            &format!("/api/orders/{order}/cancel"),
            json!({"reason": "  "}),
        )
        .await;
    assert_eq!(error_of(blank_reason).await.0, 422);

    assert_eq!(
        app.event_count().await,
        before + 1,
        "only the USD order was stored"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_requests_are_400_with_a_json_body(pool: PgPool) {
    let app = spawn_app(pool).await;
    let raw = |path: &str, body: &str| {
        app.client
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let cases = [
        ("{\"name\": \"Ada\", ", "MALFORMED_JSON"),
        (
            "{\"name\": \"Ada\", \"email\": \"a@b.co\", \"admin\": true}",
            "INVALID_BODY",
        ),
        ("{\"name\": 42, \"email\": \"a@b.co\"}", "INVALID_BODY"),
        ("{\"name\": \"Ada\"}", "INVALID_BODY"),
        ("[]", "INVALID_BODY"),
    ];
    for (body, code) in cases {
        let response = raw("/api/users", body).await.unwrap();
        assert_eq!(error_of(response).await, (400, code.into()), "body {body}");
    }
    let negative = raw(
        "/api/products",
        r#"{"sku":"A","name":"A","price":{"amountMinor":1,"currency":"EUR"},"initialStock":-1}"#,
    )
    .await
    .unwrap();
    assert_eq!(error_of(negative).await.0, 400);
    let currency = raw(
        "/api/products",
        r#"{"sku":"A","name":"A","price":{"amountMinor":1,"currency":"XXQ"},"initialStock":1}"#,
    )
    .await
    .unwrap();
    assert_eq!(error_of(currency).await.0, 400);

    let nested_unknown = raw(
        "/api/products",
        r#"{"sku":"A","name":"A","price":{"amountMinor":1,"currency":"EUR","extra":1},"initialStock":1}"#,
    )
    .await
    .unwrap();
    assert_eq!(error_of(nested_unknown).await, (400, "INVALID_BODY".into()));

    let no_content_type = app
        .client
        .post(app.url("/api/users"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(no_content_type).await.0, 415);
    let huge = format!(
        "{{\"name\": \"{}\", \"email\": \"a@b.co\"}}",
        "x".repeat(200 * 1024)
    );
    let too_large = raw("/api/users", &huge).await.unwrap();
    assert_eq!(error_of(too_large).await, (413, "PAYLOAD_TOO_LARGE".into()));

    let bad_path = app.post("/api/orders/not-a-uuid/place", json!({})).await;
    assert_eq!(error_of(bad_path).await, (400, "INVALID_PATH".into()));
    let bad_header = app
        .client
        .post(app.url("/api/users"))
        .header("X-Correlation-Id", "nope")
        .json(&json!({"name": "Ada", "email": "a@b.co"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(bad_header).await, (400, "INVALID_HEADER".into()));
    let bad_if_match = app
        .client
        .post(app.url(&format!("/api/orders/{}/place", Uuid::now_v7())))
        .header("If-Match", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(bad_if_match).await, (400, "INVALID_HEADER".into()));
    assert_eq!(app.event_count().await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_ids_and_routes_are_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    let missing = Uuid::now_v7();
    let place = app
        .post(&format!("/api/orders/{missing}/place"), json!({}))
        .await;
    assert_eq!(error_of(place).await, (404, "NOT_FOUND".into()));
    let restock = app
        .post(
            &format!("/api/products/{missing}/restock"),
            json!({"quantity": 1}),
        )
        .await;
    assert_eq!(error_of(restock).await, (404, "NOT_FOUND".into()));
    let add = app
        .post(
            &format!("/api/orders/{missing}/items"),
            json!({"productId": Uuid::now_v7(), "quantity": 1}),
        )
        .await;
    assert_eq!(error_of(add).await, (404, "NOT_FOUND".into()));
    let stream = app.get(&format!("/api/streams/{missing}/events")).await;
    assert_eq!(error_of(stream).await, (404, "NOT_FOUND".into()));
    // An existing stream of another type is not an order.
    let user = app.register_user("Ada", "ada@example.com").await;
    let not_an_order = app
        .post(&format!("/api/orders/{user}/place"), json!({}))
        .await;
    assert_eq!(error_of(not_an_order).await, (404, "NOT_FOUND".into()));
    let route = app.get("/api/nothing-here").await;
    assert_eq!(error_of(route).await, (404, "NO_SUCH_ROUTE".into()));
    let method = app
        .client
        .delete(app.url("/api/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(method).await.0, 405);
}

#[sqlx::test(migrations = "../migrations")]
async fn if_match_guards_the_stream_version(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mug = app.create_product("MUG", 1250, 10).await;
    let restock = |version: &str| {
        app.client
            .post(app.url(&format!("/api/products/{mug}/restock")))
            .header("If-Match", version.to_owned())
            .json(&json!({"quantity": 1}))
            .send()
    };
    let stale = restock("\"0\"").await.unwrap();
    assert_eq!(stale.status(), 412);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "VERSION_MISMATCH");
    assert_eq!(body["error"]["currentVersion"], 1);
    let fresh = restock("\"1\"").await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.headers()["etag"], "\"2\"");
    assert_eq!(app.event_count().await, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_retried_command_with_an_idempotency_key_returns_the_first_response(pool: PgPool) {
    let app = spawn_app(pool).await;
    let send = |body: Value| {
        app.client
            .post(app.url("/api/users"))
            .header("Idempotency-Key", "register-ada-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"name": "Ada", "email": "ada@example.com"}))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let retry = send(json!({"name": "Ada", "email": "ada@example.com"}))
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(app.event_count().await, 1);

    let other = send(json!({"name": "Bob", "email": "bob@example.com"}))
        .await
        .unwrap();
    assert_eq!(
        error_of(other).await,
        (422, "IDEMPOTENCY_KEY_REUSED".into())
    );
    let command_id = &app
        .stream(first["streamId"].as_str().unwrap().parse().unwrap())
        .await["events"][0]["metadata"]["commandId"];
    assert_eq!(command_id, "register-ada-1");
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_retries_of_one_command_append_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = app.register_user("Ada", "ada@example.com").await;
    let mug = app.create_product("MUG", 1250, 10).await;
    let order = app.create_order(user).await;

    let creates = (0..8).map(|_| {
        app.client
            .post(app.url("/api/orders"))
            .header("Idempotency-Key", "create-order-7")
            .json(&json!({"userId": user, "currency": "EUR"}))
            .send()
    });
    let bodies: Vec<Value> = join_all(creates.map(|f| async {
        let response = f.await.unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()
    }))
    .await;
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");

    let registrations = (0..8).map(|_| {
        app.client
            .post(app.url("/api/users"))
            .header("Idempotency-Key", "register-bob")
            .json(&json!({"name": "Bob", "email": "bob@example.com"}))
            .send()
    });
    let registered: Vec<Value> = join_all(registrations.map(|f| async {
        let response = f.await.unwrap();
        assert_eq!(
            response.status(),
            201,
            "a racing retry is answered, not refused"
        );
        response.json::<Value>().await.unwrap()
    }))
    .await;
    assert!(
        registered.iter().all(|b| *b == registered[0]),
        "{registered:?}"
    );

    let adds = (0..8).map(|_| {
        app.client
            .post(app.url(&format!("/api/orders/{order}/items")))
            .header("Idempotency-Key", "add-mug-once")
            .json(&json!({"productId": mug, "quantity": 1}))
            .send()
    });
    let statuses: Vec<u16> = join_all(adds)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // user + product + first order + one retried order + Bob + one added item.
    assert_eq!(app.event_count().await, 6);
    assert_eq!(app.stream(order).await["version"], 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_appends_at_one_version_have_exactly_one_winner(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mug = app.create_product("MUG", 1250, 1000).await;
    let attempts = (0..50).map(|_| {
        app.client
            .post(app.url(&format!("/api/products/{mug}/restock")))
            .header("If-Match", "1")
            .json(&json!({"quantity": 1}))
            .send()
    });
    let mut successes = 0;
    for response in join_all(attempts).await {
        let response = response.unwrap();
        if response.status() == 200 {
            successes += 1;
            continue;
        }
        // Whether it lost at the check or at the insert, the loser learns the version now.
        assert_eq!(response.status(), 412);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "VERSION_MISMATCH");
        assert_eq!(body["error"]["currentVersion"], 2);
    }
    assert_eq!(successes, 1);
    assert_eq!(app.stream(mug).await["version"], 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_appends_without_if_match_get_one_version_each(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mug = app.create_product("MUG", 1250, 1000).await;
    let attempts = (0..50).map(|_| {
        app.post(
            format!("/api/products/{mug}/restock"),
            json!({"quantity": 1}),
        )
    });
    let mut versions = Vec::new();
    for response in join_all(attempts).await {
        match response.status().as_u16() {
            200 => versions.push(
                response.json::<Value>().await.unwrap()["version"]
                    .as_i64()
                    .unwrap(),
            ),
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    versions.sort_unstable();
    let expected: Vec<i64> = (2..2 + versions.len() as i64).collect();
    assert_eq!(versions, expected, "one success per version, no gaps");
    let stream = app.stream(mug).await;
    assert_eq!(stream["version"], 1 + versions.len() as i64);
    let stored: Vec<i64> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, (1..=1 + versions.len() as i64).collect::<Vec<_>>());
}

#[sqlx::test(migrations = "../migrations")]
async fn health_ready_and_openapi_answer(pool: PgPool) {
    let app = spawn_app(pool).await;
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/ready").await.status(), 200);
    let spec: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/api/users",
        "/api/users/{id}/name",
        "/api/users/{id}/email",
        "/api/products",
        "/api/products/{id}/price",
        "/api/products/{id}/restock",
        "/api/orders",
        "/api/orders/{id}/items",
        "/api/orders/{id}/items/{product_id}",
        "/api/orders/{id}/place",
        "/api/orders/{id}/cancel",
        "/api/streams/{id}/events",
        "/health",
        "/ready",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(spec["components"]["schemas"]["CreateProduct"].is_object());
}

#[sqlx::test(migrations = "../migrations")]
async fn two_users_swapping_emails_at_once_never_get_a_500(pool: PgPool) {
    let app = spawn_app(pool).await;
    for round in 0..10 {
        let (x_mail, y_mail) = (format!("x{round}@swap.io"), format!("y{round}@swap.io"));
        let x = app.register_user("X", &x_mail).await;
        let y = app.register_user("Y", &y_mail).await;
        let (to_y, to_x) = futures::join!(
            app.post(format!("/api/users/{x}/email"), json!({"email": y_mail})),
            app.post(format!("/api/users/{y}/email"), json!({"email": x_mail})),
        );
        for response in [to_y, to_x] {
            let status = response.status().as_u16();
            assert!([200, 409].contains(&status), "round {round}: {status}");
        }
    }
}

#[tokio::test]
async fn commands_answer_503_with_retry_after_while_the_database_is_unreachable() {
    // Nothing listens on port 1: every connection is refused.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/orderflow")
        .expect("a lazy pool");
    let app = spawn_app(pool).await;
    let product = Uuid::now_v7();
    let requests = [
        app.post(
            "/api/users",
            json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await,
        app.post(
            &format!("/api/products/{product}/restock"),
            json!({"quantity": 1}),
        )
        .await,
        app.get(&format!("/api/streams/{product}/events")).await,
    ];
    for response in requests {
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let (_, code) = error_of(response).await;
        assert_eq!(code, "DATABASE_UNAVAILABLE");
    }
    assert_eq!(app.get("/ready").await.status(), 503);
}
