//! An order's saga, payment and timeline, and the sagas list. `sagas` rows are written by
//! the saga orchestrator, so tests insert them as it would; saga events are appended to the
//! saga's stream, payments decided by the Payment aggregate and projected by the projectors.

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{spawn, spawn_with, TestApp};
use orderflow_domain::payment::{Payment, PaymentCommand};
use orderflow_domain::product::{Product, ProductCommand};
use orderflow_domain::saga::{payment_id, saga_id, SagaEvent, Step, StepRecord, StepStatus};
use orderflow_domain::{Currency, Money};
use orderflow_query::QueryOptions;
use orderflow_store::{EventMetadata, NewEvent};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::EUR)
}

/// Now, to the microsecond PostgreSQL keeps.
fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::microseconds(1))
        .unwrap()
}

/// A row of `sagas` as the orchestrator writes it: `state` and `step` as stored, taken up
/// at `created_at`.
struct SagaFixture {
    order_id: Uuid,
    state: &'static str,
    step: &'static str,
    reason: Option<&'static str>,
    detail: Option<&'static str>,
    attempts: i32,
    version: i32,
    steps: Value,
    created_at: DateTime<Utc>,
}

impl SagaFixture {
    fn new(order_id: Uuid, state: &'static str, created_at: DateTime<Utc>) -> Self {
        Self {
            order_id,
            state,
            step: "reserve",
            reason: None,
            detail: None,
            attempts: 0,
            version: 1,
            steps: json!([]),
            created_at,
        }
    }

    async fn insert(&self, pool: &PgPool) {
        sqlx::query(
            "insert into sagas (saga_id, order_id, state, step, reason, detail, attempts, \
               deadline, version, steps, started_at, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $8, $8, $8)",
        )
        .bind(saga_id(self.order_id))
        .bind(self.order_id)
        .bind(self.state)
        .bind(self.step)
        .bind(self.reason)
        .bind(self.detail)
        .bind(self.attempts)
        .bind(self.created_at)
        .bind(self.version)
        .bind(&self.steps)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Appends `events` to the order's saga stream after `version`.
async fn append_saga(app: &TestApp, order_id: Uuid, version: i32, events: &[SagaEvent]) {
    let events: Vec<NewEvent> = events.iter().map(NewEvent::from_domain).collect();
    let metadata = EventMetadata {
        event_id: Uuid::now_v7(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        command_id: format!("test-saga-{}", Uuid::now_v7()),
        actor: Some("test saga".into()),
        actor_roles: Vec::new(),
    };
    let mut tx = app.pool.begin().await.unwrap();
    orderflow_store::append(
        &mut tx,
        saga_id(order_id),
        "saga",
        version,
        &events,
        &metadata,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

const ORDER_SAGA: &str = r#"query($id: ID!) {
  order(id: $id) {
    id
    saga {
      sagaId orderId state step reason detail attempts deadline version startedAt finishedAt
      createdAt updatedAt
      steps { name status attempts startedAt finishedAt detail }
      order { id status }
    }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn an_order_shows_its_saga_with_its_steps_and_null_before_it_has_one(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    let data = app.data(ORDER_SAGA, json!({"id": shop.order})).await;
    assert_eq!(data["order"]["saga"], Value::Null);

    let started = now() - Duration::seconds(30);
    let failed = now() - Duration::seconds(10);
    let steps = vec![
        StepRecord {
            name: Step::Reserve,
            status: StepStatus::Done,
            attempts: 0,
            started_at: started,
            finished_at: Some(failed),
            detail: None,
        },
        StepRecord {
            name: Step::Authorize,
            status: StepStatus::Failed,
            attempts: 2,
            started_at: failed,
            finished_at: Some(failed),
            detail: Some("card declined".into()),
        },
        StepRecord {
            name: Step::Compensate,
            status: StepStatus::Stuck,
            attempts: 5,
            started_at: failed,
            finished_at: None,
            detail: Some("provider unreachable".into()),
        },
    ];
    SagaFixture {
        step: "compensate",
        reason: Some("payment_declined"),
        detail: Some("provider unreachable"),
        attempts: 5,
        version: 9,
        steps: serde_json::to_value(&steps).unwrap(),
        ..SagaFixture::new(shop.order, "STUCK", started)
    }
    .insert(&app.pool)
    .await;

    let data = app.data(ORDER_SAGA, json!({"id": shop.order})).await;
    let saga = &data["order"]["saga"];
    assert_eq!(saga["sagaId"], saga_id(shop.order).to_string());
    assert_eq!(saga["orderId"], shop.order.to_string());
    assert_eq!(
        (&saga["state"], &saga["step"], &saga["reason"]),
        (
            &json!("STUCK"),
            &json!("COMPENSATE"),
            &json!("PAYMENT_DECLINED")
        )
    );
    assert_eq!(saga["detail"], "provider unreachable");
    assert_eq!(
        (&saga["attempts"], &saga["version"]),
        (&json!(5), &json!(9))
    );
    let at = |value: &Value| value.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    assert_eq!(at(&saga["startedAt"]), started);
    assert_eq!(at(&saga["createdAt"]), started);
    assert_eq!(saga["finishedAt"], Value::Null);
    assert_eq!(at(&saga["deadline"]), started);
    assert_eq!(
        saga["order"],
        json!({"id": shop.order.to_string(), "status": "PLACED"})
    );
    let steps = saga["steps"].as_array().unwrap();
    let summary: Vec<(&str, &str, i64)> = steps
        .iter()
        .map(|s| {
            let (name, status) = (s["name"].as_str().unwrap(), s["status"].as_str().unwrap());
            (name, status, s["attempts"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("RESERVE", "DONE", 0),
            ("AUTHORIZE", "FAILED", 2),
            ("COMPENSATE", "STUCK", 5)
        ]
    );
    assert_eq!(at(&steps[0]["startedAt"]), started);
    assert_eq!(at(&steps[0]["finishedAt"]), failed);
    assert_eq!(steps[0]["detail"], Value::Null);
    assert_eq!(steps[1]["detail"], "card declined");
    assert_eq!(steps[2]["finishedAt"], Value::Null);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_saga_record_the_service_cannot_read_is_an_internal_error_not_a_failed_request(
    pool: PgPool,
) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    let steps = json!([{"name": "teleport", "status": "DONE", "attempts": 0,
                        "startedAt": now(), "finishedAt": null, "detail": null}]);
    SagaFixture {
        steps,
        ..SagaFixture::new(shop.order, "RUNNING", now())
    }
    .insert(&app.pool)
    .await;
    let response = app.graphql(ORDER_SAGA, json!({"id": shop.order})).await;
    let (code, message) = common::only_error(&response);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("INTERNAL", "internal error")
    );
    // The rest of the saga still answers.
    let data = app
        .data(
            "query($id: ID!) { order(id: $id) { saga { state } } }",
            json!({"id": shop.order}),
        )
        .await;
    assert_eq!(data["order"]["saga"]["state"], "RUNNING");
}

const SAGAS: &str = r#"query($state: SagaState, $first: Int, $after: String) {
  sagas(state: $state, first: $first, after: $after) {
    totalCount
    edges { cursor node { orderId state order { id } } }
    nodes { sagaId }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"#;

fn order_ids(connection: &Value) -> Vec<Uuid> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"]["orderId"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn stuck_sagas_are_listed_oldest_first_and_paged_with_cursors(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    // Five stuck sagas (two taken up at the same instant), among others; the shop's order
    // is the only one with an order view.
    let base = now() - Duration::hours(1);
    let mut stuck = vec![shop.order];
    let mut fixtures = vec![SagaFixture::new(shop.order, "STUCK", base)];
    let same_instant = base + Duration::minutes(2);
    for minutes in [1, 2, 2, 3] {
        let order_id = Uuid::now_v7();
        stuck.push(order_id);
        let at = if minutes == 2 {
            same_instant
        } else {
            base + Duration::minutes(minutes)
        };
        fixtures.push(SagaFixture::new(order_id, "STUCK", at));
    }
    for (state, minutes) in [("RUNNING", 0), ("CONFIRMED", 1), ("CANCELLED", 4)] {
        fixtures.push(SagaFixture::new(
            Uuid::now_v7(),
            state,
            base + Duration::minutes(minutes),
        ));
    }
    for fixture in &fixtures {
        fixture.insert(&app.pool).await;
    }
    // Ties on created_at are broken by saga id.
    let (third, fourth) = (stuck[2], stuck[3]);
    if saga_id(third) > saga_id(fourth) {
        stuck.swap(2, 3);
    }

    // Pages of three: the first ends between the two sagas taken up at the same instant.
    let first = app.data(SAGAS, json!({"state": "STUCK", "first": 3})).await;
    let page = &first["sagas"];
    assert_eq!(order_ids(page), stuck[..3]);
    assert_eq!(page["totalCount"], 5);
    assert_eq!(page["nodes"][0]["sagaId"], saga_id(stuck[0]).to_string());
    assert_eq!(page["edges"][0]["node"]["state"], "STUCK");
    assert_eq!(
        page["edges"][0]["node"]["order"]["id"],
        shop.order.to_string()
    );
    assert_eq!(page["edges"][1]["node"]["order"], Value::Null);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(page["pageInfo"]["endCursor"], page["edges"][2]["cursor"]);

    let mut seen = order_ids(page);
    let mut after = page["pageInfo"]["endCursor"].clone();
    let mut pages = 1;
    loop {
        let next = app
            .data(SAGAS, json!({"state": "STUCK", "first": 3, "after": after}))
            .await;
        let page = &next["sagas"];
        assert_eq!(page["pageInfo"]["hasPreviousPage"], true);
        seen.extend(order_ids(page));
        pages += 1;
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, stuck);
    assert_eq!(pages, 2);

    // Without a state: every saga, oldest first.
    let all = app.data(SAGAS, json!({"first": 100})).await;
    assert_eq!(all["sagas"]["totalCount"], 8);
    let times: Vec<DateTime<Utc>> = {
        let mut times: Vec<DateTime<Utc>> = fixtures.iter().map(|f| f.created_at).collect();
        times.sort();
        times
    };
    let listed: Vec<Uuid> = order_ids(&all["sagas"]);
    let listed_times: Vec<DateTime<Utc>> = listed
        .iter()
        .map(|id| {
            fixtures
                .iter()
                .find(|f| f.order_id == *id)
                .unwrap()
                .created_at
        })
        .collect();
    assert_eq!(listed_times, times);
    let none = app.data(SAGAS, json!({"state": "COMPENSATING"})).await;
    assert_eq!(none["sagas"]["totalCount"], 0);
    assert_eq!(
        none["sagas"]["pageInfo"],
        json!({"hasNextPage": false, "hasPreviousPage": false, "startCursor": null,
               "endCursor": null})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_sagas_arguments_are_bad_user_input(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    SagaFixture::new(shop.order, "STUCK", now())
        .insert(&app.pool)
        .await;
    let orders = app
        .data("{ orders(first: 1) { pageInfo { endCursor } } }", json!({}))
        .await;
    let orders_cursor = orders["orders"]["pageInfo"]["endCursor"].clone();
    let sagas = app.data(SAGAS, json!({"first": 1})).await;
    let sagas_cursor = sagas["sagas"]["pageInfo"]["endCursor"].clone();

    for (variables, wanted) in [
        (
            json!({"after": "garbage"}),
            "`after` is not a cursor of the sagas list",
        ),
        (
            json!({"after": orders_cursor}),
            "`after` is not a cursor of the sagas list",
        ),
        (json!({"first": -1}), "`first` must not be negative, got -1"),
        (
            json!({"first": 101}),
            "`first` must be at most 100, got 101",
        ),
    ] {
        let (code, message) = app.error(SAGAS, variables.clone()).await;
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("BAD_USER_INPUT", wanted),
            "{variables}"
        );
    }
    // A sagas cursor is no orders cursor either.
    let (code, _) = app
        .error(
            "query($after: String) { orders(after: $after) { totalCount } }",
            json!({"after": sagas_cursor}),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = app
        .error("{ sagas(state: TELEPORTED) { totalCount } }", json!({}))
        .await;
    assert_eq!(code, "GRAPHQL_VALIDATION_FAILED");
}

const TIMELINE: &str = r#"query($id: ID!) {
  order(id: $id) {
    events { type }
    timeline { streamType streamId type version position schemaVersion recordedAt data }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn an_orders_timeline_merges_its_saga_payment_and_reservations_in_position_order(
    pool: PgPool,
) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    // Another order of the same products, whose reservations are not this order's.
    let other = app.create_order(shop.user, "EUR").await;
    app.add_item(other, shop.mug, 1).await;
    app.place(other).await;

    let order = shop.order;
    let start = SagaEvent::SagaStarted {
        order_id: order,
        user_id: shop.user,
        total: eur(2999),
        lines: vec![],
        step_timeout_ms: 30_000,
        max_attempts: 5,
        at: now(),
    };
    append_saga(&app, order, 0, &[start]).await;
    app.decide::<Product>(
        shop.mug,
        ProductCommand::Reserve {
            order_id: other,
            quantity: 1,
        },
    )
    .await;
    app.decide::<Product>(
        shop.mug,
        ProductCommand::Reserve {
            order_id: order,
            quantity: 2,
        },
    )
    .await;
    let reserved = SagaEvent::SagaLineReserved {
        product_id: shop.mug,
        at: now(),
    };
    append_saga(&app, order, 1, &[reserved]).await;
    app.decide::<Product>(
        shop.tea,
        ProductCommand::Reserve {
            order_id: order,
            quantity: 1,
        },
    )
    .await;
    app.decide::<Payment>(
        payment_id(order),
        PaymentCommand::Authorize {
            order_id: order,
            amount: eur(2999),
            authorization_id: "auth-1".into(),
        },
    )
    .await;
    app.decide::<Product>(shop.mug, ProductCommand::Release { order_id: other })
        .await;
    app.decide::<Product>(shop.tea, ProductCommand::Release { order_id: order })
        .await;
    app.decide::<Product>(
        shop.mug,
        ProductCommand::CommitReservation { order_id: order },
    )
    .await;
    app.decide::<Payment>(payment_id(order), PaymentCommand::Capture)
        .await;
    app.project().await;

    let data = app.data(TIMELINE, json!({"id": order})).await;
    // `events` is still the order's own stream.
    let own: Vec<&str> = data["order"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        own,
        ["OrderCreated", "ItemAdded", "ItemAdded", "OrderPlaced"]
    );

    let timeline = data["order"]["timeline"].as_array().unwrap();
    let entries: Vec<(&str, Uuid, &str)> = timeline
        .iter()
        .map(|e| {
            (
                e["streamType"].as_str().unwrap(),
                e["streamId"].as_str().unwrap().parse().unwrap(),
                e["type"].as_str().unwrap(),
            )
        })
        .collect();
    let (saga, payment) = (saga_id(order), payment_id(order));
    assert_eq!(
        entries,
        [
            ("ORDER", order, "OrderCreated"),
            ("ORDER", order, "ItemAdded"),
            ("ORDER", order, "ItemAdded"),
            ("ORDER", order, "OrderPlaced"),
            ("SAGA", saga, "SagaStarted"),
            ("PRODUCT", shop.mug, "StockReserved"),
            ("SAGA", saga, "SagaLineReserved"),
            ("PRODUCT", shop.tea, "StockReserved"),
            ("PAYMENT", payment, "PaymentAuthorized"),
            ("PRODUCT", shop.tea, "ReservationReleased"),
            ("PRODUCT", shop.mug, "ReservationCommitted"),
            ("PAYMENT", payment, "PaymentCaptured"),
        ]
    );
    let positions: Vec<i64> = timeline
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    // Each entry keeps its place in its own stream and its payload.
    let mug_reserved = &timeline[5];
    assert_eq!(mug_reserved["version"], 3);
    assert_eq!(mug_reserved["schemaVersion"], 1);
    assert_eq!(
        mug_reserved["data"],
        json!({"orderId": order, "quantity": 2})
    );
    assert!(mug_reserved["recordedAt"].is_string());
    assert_eq!(timeline[8]["data"]["authorizationId"], "auth-1");
    assert_eq!(timeline[4]["version"], 1);

    // The other order's timeline has its own reservation and release only.
    let data = app.data(TIMELINE, json!({"id": other})).await;
    let products: Vec<(&str, i64)> = data["order"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["streamType"] == "PRODUCT")
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["data"]["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(products, [("StockReserved", 1), ("ReservationReleased", 1)]);
}

const ORDER_PAYMENT: &str = r#"query($id: ID!) {
  order(id: $id) {
    payment {
      paymentId status amount { amountMinor currency formatted } authorizationId
      declineReason voidReason authorizedAt declinedAt capturedAt voidedAt version updatedAt
    }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn an_orders_payment_comes_from_the_payment_view(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    let data = app.data(ORDER_PAYMENT, json!({"id": shop.order})).await;
    assert_eq!(data["order"]["payment"], Value::Null);

    let authorize = PaymentCommand::Authorize {
        order_id: shop.order,
        amount: eur(2999),
        authorization_id: "auth-42".into(),
    };
    app.decide::<Payment>(payment_id(shop.order), authorize)
        .await;
    // Not projected yet: the view answers what the projector applied.
    let data = app.data(ORDER_PAYMENT, json!({"id": shop.order})).await;
    assert_eq!(data["order"]["payment"], Value::Null);
    app.project().await;
    let data = app.data(ORDER_PAYMENT, json!({"id": shop.order})).await;
    let payment = &data["order"]["payment"];
    assert_eq!(payment["paymentId"], payment_id(shop.order).to_string());
    assert_eq!(payment["status"], "AUTHORIZED");
    assert_eq!(
        payment["amount"],
        json!({"amountMinor": 2999, "currency": "EUR", "formatted": "29.99 EUR"})
    );
    assert_eq!(payment["authorizationId"], "auth-42");
    assert!(payment["authorizedAt"].is_string());
    assert_eq!(payment["capturedAt"], Value::Null);
    assert_eq!(payment["version"], 1);

    let void = PaymentCommand::Void {
        reason: "order cancelled".into(),
    };
    app.decide::<Payment>(payment_id(shop.order), void).await;
    app.project().await;
    let data = app.data(ORDER_PAYMENT, json!({"id": shop.order})).await;
    let payment = &data["order"]["payment"];
    assert_eq!(payment["status"], "VOIDED");
    assert_eq!(payment["voidReason"], "order cancelled");
    assert!(payment["voidedAt"].is_string() && payment["authorizedAt"].is_string());
    assert_eq!(payment["updatedAt"], payment["voidedAt"]);
    assert_eq!(payment["version"], 2);

    // A declined payment of another order.
    let other = app.create_order(shop.user, "EUR").await;
    app.add_item(other, shop.mug, 1).await;
    app.place(other).await;
    let decline = PaymentCommand::Decline {
        order_id: other,
        amount: eur(1250),
        reason: "insufficient funds".into(),
    };
    app.decide::<Payment>(payment_id(other), decline).await;
    app.project().await;
    let data = app.data(ORDER_PAYMENT, json!({"id": other})).await;
    let payment = &data["order"]["payment"];
    assert_eq!(payment["status"], "DECLINED");
    assert_eq!(payment["declineReason"], "insufficient funds");
    assert_eq!(payment["authorizationId"], Value::Null);
    assert!(payment["declinedAt"].is_string());
    assert_eq!(payment["amount"]["amountMinor"], 1250);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_page_of_orders_with_sagas_payments_and_timelines_costs_a_constant_number_of_statements(
    pool: PgPool,
) {
    // A wide batch window, so that no loader's keys are split over two batches on a busy
    // machine: what is under test is that statements do not grow with the page.
    let options = QueryOptions {
        batch_delay: std::time::Duration::from_millis(50),
        ..QueryOptions::default()
    };
    let app = spawn_with(pool, options).await;
    let user = app.register_user("Ada", "ada@example.com").await;
    let mug = app.create_product("MUG-01", "Mug", 1000, 1000).await;
    let mut orders = Vec::new();
    for _ in 0..8 {
        let order = app.create_order(user, "EUR").await;
        app.add_item(order, mug, 1).await;
        app.place(order).await;
        app.decide::<Product>(
            mug,
            ProductCommand::Reserve {
                order_id: order,
                quantity: 1,
            },
        )
        .await;
        let authorize = PaymentCommand::Authorize {
            order_id: order,
            amount: eur(1000),
            authorization_id: format!("auth-{order}"),
        };
        app.decide::<Payment>(payment_id(order), authorize).await;
        SagaFixture::new(order, "RUNNING", now())
            .insert(&app.pool)
            .await;
        orders.push(order);
    }
    app.project().await;

    let query = r#"query($first: Int) { orders(first: $first) { nodes {
        id saga { state order { id } } payment { status } timeline { type }
    } } }"#;
    let statements = |first: i64| {
        let app = &app;
        async move {
            let before = app.service.sql_statements();
            let data = app.data(query, json!({"first": first})).await;
            let nodes = data["orders"]["nodes"].as_array().unwrap();
            assert_eq!(nodes.len() as i64, first);
            for node in nodes {
                assert_eq!(node["saga"]["state"], "RUNNING", "{node}");
                assert_eq!(node["saga"]["order"]["id"], node["id"]);
                assert_eq!(node["payment"]["status"], "AUTHORIZED", "{node}");
                // Created, added, placed, reserved, authorized.
                assert_eq!(node["timeline"].as_array().unwrap().len(), 5, "{node}");
            }
            app.service.sql_statements() - before
        }
    };
    let for_two = statements(2).await;
    let for_eight = statements(8).await;
    // The page, its sagas, their orders, its payments, its timelines.
    assert_eq!(for_eight, 5);
    assert_eq!(for_two, for_eight);
}
