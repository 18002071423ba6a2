//! Live application of delivered batches against a real PostgreSQL, a database per test.

mod common;

use std::slice;

use common::{
    actual, all_events, append_raw, apply, assert_same, consuming, deliver, expected, new_event,
    shuffle_across_streams, wait_until_blocked, Rng, Stream, View, Workload,
};
use orderflow_domain::order::{Order, OrderCommand, OrderEvent};
use orderflow_domain::payment::{Payment, PaymentCommand, PaymentEvent};
use orderflow_domain::saga::{payment_id, Saga};
use orderflow_domain::user::{User, UserCommand, UserEvent};
use orderflow_domain::{Aggregate, Currency, Money};
use orderflow_projector::engine::{apply_records, begin_batch};
use orderflow_projector::{
    apply_batch, OrderView, PaymentView, ProductView, Projection, UserView, PROJECTIONS,
};
use orderflow_store::{NewEvent, StoredEvent};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::EUR)
}

async fn order_view_row(pool: &PgPool, order_id: Uuid) -> common::OrderRow {
    match actual(pool, &OrderView).await.view {
        View::Orders(rows) => rows[&order_id].clone(),
        _ => unreachable!(),
    }
}

async fn user_view_row(pool: &PgPool, user_id: Uuid) -> common::UserRow {
    match actual(pool, &UserView).await.view {
        View::Users(rows) => rows[&user_id].clone(),
        _ => unreachable!(),
    }
}

async fn product_view_row(pool: &PgPool, product_id: Uuid) -> common::ProductRow {
    match actual(pool, &ProductView).await.view {
        View::Products(rows) => rows[&product_id].clone(),
        _ => unreachable!(),
    }
}

async fn registered_user(pool: &PgPool, name: &str) -> Stream<User> {
    let mut user = Stream::<User>::new();
    let register = UserCommand::Register {
        name: name.try_into().unwrap(),
        email: format!("{}@example.com", name.to_lowercase())
            .try_into()
            .unwrap(),
    };
    assert_eq!(user.exec(pool, register).await, 1);
    user
}

/// An order of `user_id` with one line per `(product, unit price, quantity)`, placed and
/// confirmed: version 1 creates it, the last confirms it, and every projection needs each
/// version in between (the lines, the total, the placing).
async fn confirmed_order(
    pool: &PgPool,
    user_id: Uuid,
    lines: &[(Uuid, i64, u32)],
) -> Stream<Order> {
    let mut order = Stream::<Order>::new();
    let create = OrderCommand::Create {
        user_id,
        currency: Currency::EUR,
    };
    assert_eq!(order.exec(pool, create).await, 1);
    for (product_id, price, quantity) in lines {
        let add = OrderCommand::AddItem {
            product_id: *product_id,
            product_name: format!("Product {product_id}"),
            unit_price: eur(*price),
            quantity: *quantity,
        };
        assert_eq!(order.exec(pool, add).await, 1);
    }
    assert_eq!(order.exec(pool, OrderCommand::Place).await, 1);
    assert_eq!(order.exec(pool, OrderCommand::Confirm).await, 1);
    order
}

/// The stored event of `stream_id` at `version`.
fn at(events: &[StoredEvent], stream_id: Uuid, version: i32) -> StoredEvent {
    events
        .iter()
        .find(|e| e.stream_id == stream_id && e.version == version)
        .cloned()
        .unwrap()
}

async fn checkpoint(
    pool: &PgPool,
    projection: &'static dyn Projection,
    stream_id: Uuid,
) -> Option<i32> {
    actual(pool, projection)
        .await
        .checkpoints
        .get(&stream_id)
        .copied()
}

#[sqlx::test(migrations = "../migrations")]
async fn shuffled_cross_stream_delivery_converges_to_the_fold_of_the_store(pool: PgPool) {
    let mut workload = Workload::new(0x5eed);
    workload.run(&pool, 600).await;
    let events = all_events(&pool).await;
    assert!(events.len() > 500, "only {} events", events.len());
    for (seed, projection) in (1..).zip(PROJECTIONS.iter().copied()) {
        let mut rng = Rng::new(seed);
        let delivered = shuffle_across_streams(events.clone(), &mut rng);
        let rejected = deliver(&pool, projection, &delivered, &mut rng).await;
        assert_eq!(rejected, [], "{projection}");
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn every_kind_of_row_is_checked_by_the_random_workload(pool: PgPool) {
    // Guards the test above against a workload that never reaches the interesting paths.
    let mut workload = Workload::new(0x5eed);
    workload.run(&pool, 600).await;
    let events = all_events(&pool).await;
    let types: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.event_type.as_str()).collect();
    for wanted in [
        "UserRenamed",
        "UserEmailChanged",
        "PriceChanged",
        "Restocked",
        "QuantityUpdated",
        "ItemRemoved",
        "OrderConfirmed",
        "OrderCancelled",
        "ReservationCommitted",
        "ReservationReleased",
        "PaymentAuthorized",
        "PaymentDeclined",
        "PaymentCaptured",
        "PaymentVoided",
    ] {
        assert!(types.contains(wanted), "no {wanted} in {types:?}");
    }
    let View::Users(users) = expected(&UserView, &events).view else {
        unreachable!()
    };
    let currencies: std::collections::BTreeSet<String> = users
        .values()
        .flat_map(|u| u.spent.as_object().unwrap().keys().cloned())
        .collect();
    assert_eq!(currencies.len(), 2, "{currencies:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_duplicate_delivery_is_applied_once(pool: PgPool) {
    let mut user = Stream::<User>::new();
    user.exec(
        &pool,
        UserCommand::Register {
            name: "Ada".try_into().unwrap(),
            email: "ada@example.com".try_into().unwrap(),
        },
    )
    .await;
    let mut order = Stream::<Order>::new();
    order
        .exec(
            &pool,
            OrderCommand::Create {
                user_id: user.id,
                currency: Currency::EUR,
            },
        )
        .await;
    let mug = Uuid::now_v7();
    order
        .exec(
            &pool,
            OrderCommand::AddItem {
                product_id: mug,
                product_name: "Mug".into(),
                unit_price: eur(1250),
                quantity: 2,
            },
        )
        .await;
    order.exec(&pool, OrderCommand::Place).await;
    order.exec(&pool, OrderCommand::Confirm).await;
    let events = all_events(&pool).await;

    for &projection in PROJECTIONS {
        let twice: Vec<StoredEvent> = events.iter().chain(&events).cloned().collect();
        assert_eq!(apply(&pool, projection, &twice).await, []);
        assert_eq!(apply(&pool, projection, &events).await, []);
        assert_eq!(apply(&pool, projection, &events[2..4]).await, []);
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
    let row = order_view_row(&pool, order.id).await;
    assert_eq!((row.item_count, row.total_minor), (2, 2500));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_with_a_gap_gets_the_missing_versions_from_the_store(pool: PgPool) {
    let user_id = Uuid::now_v7();
    let mut order = Stream::<Order>::new();
    order
        .exec(
            &pool,
            OrderCommand::Create {
                user_id,
                currency: Currency::EUR,
            },
        )
        .await;
    for (n, price) in [(1, 100), (2, 200), (3, 300)] {
        order
            .exec(
                &pool,
                OrderCommand::AddItem {
                    product_id: Uuid::from_u128(n),
                    product_name: format!("Product {n}"),
                    unit_price: eur(price),
                    quantity: 1,
                },
            )
            .await;
    }
    let events = all_events(&pool).await;
    assert_eq!(events.len(), 4);

    for projection in consuming(Order::STREAM_TYPE) {
        // Versions 1 and 4 only: 2 and 3 come from the store, in order, before 4.
        let with_gap = [events[0].clone(), events[3].clone()];
        assert_eq!(apply(&pool, projection, &with_gap).await, []);
        assert_eq!(checkpoint(&pool, projection, order.id).await, Some(4));
        // The late versions are duplicates now.
        assert_eq!(apply(&pool, projection, &events[1..3]).await, []);
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
    let row = order_view_row(&pool, order.id).await;
    assert_eq!((row.item_count, row.total_minor, row.version), (3, 600, 4));
    let names: Vec<&str> = row
        .items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["productName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Product 1", "Product 2", "Product 3"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_gap_after_a_committed_checkpoint_is_filled_from_the_store_in_every_projection(
    pool: PgPool,
) {
    let ada = registered_user(&pool, "Ada").await;
    let (mug, pen) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let order = confirmed_order(&pool, ada.id, &[(mug, 1250, 2), (pen, 300, 1)]).await;
    let events = all_events(&pool).await;
    assert_eq!(order.version, 5);

    for projection in consuming(Order::STREAM_TYPE) {
        // The registration and the order's creation are committed; then only the
        // confirmation arrives, as after a restart past lost messages.
        let first = [at(&events, ada.id, 1), at(&events, order.id, 1)];
        assert_eq!(apply(&pool, projection, &first).await, []);
        assert_eq!(checkpoint(&pool, projection, order.id).await, Some(1));
        assert_eq!(
            apply(&pool, projection, &[at(&events, order.id, 5)]).await,
            []
        );
        assert_eq!(checkpoint(&pool, projection, order.id).await, Some(5));
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
    // Each of these comes only from versions 2 to 4, which were never delivered.
    let row = order_view_row(&pool, order.id).await;
    assert_eq!(
        (row.status.as_str(), row.item_count, row.total_minor),
        ("confirmed", 3, 2800)
    );
    assert!(row.placed_at.is_some());
    assert_eq!(
        user_view_row(&pool, ada.id).await.spent,
        json!({"EUR": 2800})
    );
    assert_eq!(product_view_row(&pool, mug).await.revenue_minor, 2500);
    assert_eq!(product_view_row(&pool, pen).await.revenue_minor, 300);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_gap_of_a_mixed_batch_is_filled_in_place_before_its_event(pool: PgPool) {
    let mut ada = registered_user(&pool, "Ada").await;
    let bob = registered_user(&pool, "Bob").await;
    ada.exec(
        &pool,
        UserCommand::Rename {
            name: "Ada King".try_into().unwrap(),
        },
    )
    .await;
    ada.exec(
        &pool,
        UserCommand::ChangeEmail {
            email: "ada@example.org".try_into().unwrap(),
        },
    )
    .await;
    let (mug, pen) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let first = confirmed_order(&pool, ada.id, &[(mug, 100, 1), (pen, 200, 2)]).await;
    let second = confirmed_order(&pool, bob.id, &[(pen, 200, 1)]).await;
    let events = all_events(&pool).await;
    let v = |stream_id, version| at(&events, stream_id, version);

    // No stream arrives whole: one starts past version 1 before any checkpoint exists, one
    // has two gaps, and versions the store filled in arrive again later in the batch.
    let batch = [
        v(first.id, 3),
        v(ada.id, 1),
        v(second.id, 4),
        v(first.id, 5),
        v(ada.id, 3),
        v(first.id, 2),
        v(bob.id, 1),
        v(second.id, 2),
    ];
    for &projection in PROJECTIONS {
        assert_eq!(apply(&pool, projection, &batch).await, [], "{projection}");
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
    let row = order_view_row(&pool, first.id).await;
    assert_eq!((row.item_count, row.total_minor), (3, 500));
    assert_eq!(row.user_name.as_deref(), Some("Ada King"));
    assert_eq!(row.user_email.as_deref(), Some("ada@example.org"));
    assert_eq!(
        user_view_row(&pool, bob.id).await.spent,
        json!({"EUR": 200})
    );
    assert_eq!(product_view_row(&pool, pen).await.revenue_minor, 600);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_event_read_from_the_store_to_fill_a_gap_is_rejected_with_its_stored_position(
    pool: PgPool,
) {
    let order_id = Uuid::now_v7();
    let added = |n: u128| {
        new_event(&OrderEvent::ItemAdded {
            product_id: Uuid::from_u128(n),
            product_name: format!("Product {n}"),
            unit_price: eur(100),
            quantity: 1,
        })
    };
    let created = new_event(&OrderEvent::OrderCreated {
        user_id: Uuid::now_v7(),
        currency: Currency::EUR,
    });
    let undecodable = NewEvent {
        event_type: "ItemAdded".into(),
        schema_version: 1,
        payload: json!({"productId": "not a uuid"}),
    };
    append_raw(
        &pool,
        order_id,
        Order::STREAM_TYPE,
        0,
        &[created, added(1), undecodable, added(2)],
    )
    .await;
    let events = all_events(&pool).await;

    // Only versions 1 and 4 are delivered: the store is the only place version 3 can come from.
    let delivered = [events[0].clone(), events[3].clone()];
    let rejected = apply(&pool, &OrderView, &delivered).await;
    let summary: Vec<(Uuid, i32, i64)> = rejected
        .iter()
        .map(|r| (r.stream_id, r.version, r.position))
        .collect();
    assert_eq!(summary, [(order_id, 3, events[2].position)]);
    assert!(
        rejected[0].error.contains("cannot decode ItemAdded"),
        "{}",
        rejected[0].error
    );
    let row = order_view_row(&pool, order_id).await;
    assert_eq!((row.item_count, row.total_minor, row.version), (2, 200, 4));
    assert_eq!(checkpoint(&pool, &OrderView, order_id).await, Some(4));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_gap_the_store_cannot_fill_fails_the_batch_and_commits_nothing(pool: PgPool) {
    let mut ada = registered_user(&pool, "Ada").await;
    ada.exec(
        &pool,
        UserCommand::Rename {
            name: "Ada King".try_into().unwrap(),
        },
    )
    .await;
    let bob = registered_user(&pool, "Bob").await;
    let events = all_events(&pool).await;
    // Ada's version 4 while the store holds only 1 and 2: 3 cannot be filled.
    let mut ahead = at(&events, ada.id, 2);
    ahead.version = 4;
    let users = PROJECTIONS
        .iter()
        .copied()
        .filter(|p| p.consumes(User::STREAM_TYPE));

    for projection in users.clone() {
        assert_eq!(
            apply(&pool, projection, &[at(&events, ada.id, 1)]).await,
            []
        );
        let mut tx = pool.begin().await.unwrap();
        let batch = [at(&events, bob.id, 1), ahead.clone()];
        let err = apply_batch(&mut tx, projection, &batch).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("needs versions 2..=3 from the event store, which returned 1"),
            "{projection}: {err}"
        );
        // Not even Bob's registration, which came before the gap, was written.
        let sql = format!(
            "select stream_id, version from {}",
            projection.tables().checkpoints
        );
        let checkpoints: Vec<(Uuid, i32)> = sqlx::query_as(&sql).fetch_all(&mut *tx).await.unwrap();
        assert_eq!(checkpoints, [(ada.id, 1)], "{projection}");
        tx.rollback().await.unwrap();
    }

    // Once the store holds every version, the redelivery applies.
    ada.exec(
        &pool,
        UserCommand::ChangeEmail {
            email: "ada@example.org".try_into().unwrap(),
        },
    )
    .await;
    ada.exec(
        &pool,
        UserCommand::Rename {
            name: "Ada".try_into().unwrap(),
        },
    )
    .await;
    let events = all_events(&pool).await;
    for projection in users {
        let batch = [at(&events, bob.id, 1), at(&events, ada.id, 4)];
        assert_eq!(apply(&pool, projection, &batch).await, []);
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn two_writers_confirming_orders_of_one_user_at_once_lose_no_update(pool: PgPool) {
    let ada = registered_user(&pool, "Ada").await;
    let mug = Uuid::from_u128(1);
    let first = confirmed_order(&pool, ada.id, &[(mug, 1250, 2)]).await;
    let second = confirmed_order(&pool, ada.id, &[(mug, 1250, 1)]).await;
    let events = all_events(&pool).await;
    let first_confirmed = at(&events, first.id, first.version);
    let second_confirmed = at(&events, second.id, second.version);
    let before: Vec<StoredEvent> = events
        .iter()
        .filter(|e| ![first_confirmed.position, second_confirmed.position].contains(&e.position))
        .cloned()
        .collect();

    // Both confirmations change one row: Ada's spent totals, or the mug's revenue.
    for projection in [&UserView as &dyn Projection, &ProductView] {
        assert_eq!(apply(&pool, projection, &before).await, []);
        let mut first_tx = pool.begin().await.unwrap();
        let rejected = apply_batch(&mut first_tx, projection, slice::from_ref(&first_confirmed))
            .await
            .unwrap();
        assert_eq!(rejected, []);
        // The second writer starts while the first one's transaction is still open, gets as
        // far as it can, and only then does the first commit.
        let mut second_tx = pool.begin().await.unwrap();
        let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut *second_tx)
            .await
            .unwrap();
        let second_writer = async {
            let batch = slice::from_ref(&second_confirmed);
            let rejected = apply_batch(&mut second_tx, projection, batch)
                .await
                .unwrap();
            second_tx.commit().await.unwrap();
            rejected
        };
        let first_commits = async {
            wait_until_blocked(&pool, pid).await;
            first_tx.commit().await.unwrap();
        };
        let (rejected, ()) = tokio::join!(second_writer, first_commits);
        assert_eq!(rejected, [], "{projection}");
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
    assert_eq!(
        user_view_row(&pool, ada.id).await.spent,
        json!({"EUR": 3750})
    );
    assert_eq!(product_view_row(&pool, mug).await.revenue_minor, 3750);
}

#[sqlx::test(migrations = "../migrations")]
async fn poison_records_are_rejected_one_by_one_and_the_rest_of_the_batch_applies(pool: PgPool) {
    let user_id = Uuid::now_v7();
    let order_id = Uuid::now_v7();
    let added = |n: u128| OrderEvent::ItemAdded {
        product_id: Uuid::from_u128(n),
        product_name: format!("Product {n}"),
        unit_price: eur(100),
        quantity: 1,
    };
    let created = OrderEvent::OrderCreated {
        user_id,
        currency: Currency::EUR,
    };
    let undecodable = NewEvent {
        event_type: "ItemAdded".into(),
        schema_version: 1,
        payload: json!({"productId": "not a uuid"}),
    };
    let not_applicable = OrderEvent::QuantityUpdated {
        product_id: Uuid::from_u128(99),
        previous_quantity: 1,
        quantity: 2,
    };
    let order_events = [
        new_event(&created),
        new_event(&added(1)),
        undecodable,
        new_event(&not_applicable),
        new_event(&added(2)),
    ];
    append_raw(&pool, order_id, Order::STREAM_TYPE, 0, &order_events).await;
    let unknown_type = NewEvent {
        event_type: "UserTeleported".into(),
        schema_version: 1,
        payload: json!({}),
    };
    let future_schema = NewEvent {
        schema_version: 9,
        ..new_event(&UserEvent::UserRenamed {
            name: "Bob".try_into().unwrap(),
        })
    };
    let registered = UserEvent::UserRegistered {
        name: "Ada".try_into().unwrap(),
        email: "ada@example.com".try_into().unwrap(),
    };
    let renamed = UserEvent::UserRenamed {
        name: "Ada King".try_into().unwrap(),
    };
    let user_events = [
        new_event(&registered),
        unknown_type,
        future_schema,
        new_event(&renamed),
    ];
    append_raw(&pool, user_id, User::STREAM_TYPE, 0, &user_events).await;
    let events = all_events(&pool).await;

    let rejected = apply(&pool, &OrderView, &events).await;
    let summary: Vec<(Uuid, i32)> = rejected.iter().map(|r| (r.stream_id, r.version)).collect();
    assert_eq!(
        summary,
        [(order_id, 3), (order_id, 4), (user_id, 2), (user_id, 3)]
    );
    assert!(
        rejected[0].error.contains("cannot decode ItemAdded"),
        "{}",
        rejected[0].error
    );
    assert!(
        rejected[1].error.contains("is not in the order"),
        "{}",
        rejected[1].error
    );
    assert!(
        rejected[2].error.contains("unknown event type"),
        "{}",
        rejected[2].error
    );
    assert!(
        rejected[3].error.contains("schema version 9"),
        "{}",
        rejected[3].error
    );
    for (rejected, event) in rejected
        .iter()
        .zip([&events[2], &events[3], &events[6], &events[7]])
    {
        assert_eq!(rejected.position, event.position);
    }

    let row = order_view_row(&pool, order_id).await;
    assert_eq!((row.item_count, row.total_minor, row.version), (2, 200, 5));
    assert_eq!(row.user_name.as_deref(), Some("Ada King"));
    assert_eq!(checkpoint(&pool, &OrderView, order_id).await, Some(5));
    assert_eq!(checkpoint(&pool, &OrderView, user_id).await, Some(4));

    // Redelivery skips them all: they were dead-lettered once.
    assert_eq!(apply(&pool, &OrderView, &events).await, []);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_event_the_database_refuses_is_rejected_alone_and_the_rest_applies(pool: PgPool) {
    let mut ada = Stream::<User>::new();
    ada.exec(
        &pool,
        UserCommand::Register {
            name: "Ada".try_into().unwrap(),
            email: "ada@example.com".try_into().unwrap(),
        },
    )
    .await;
    let mut events = all_events(&pool).await;
    // PostgreSQL text cannot hold NUL, so this row is refused when the batch is written.
    let mut refused = events[0].clone();
    refused.stream_id = Uuid::now_v7();
    refused.position += 1000;
    refused.payload = json!({"name": "Nul\u{0}", "email": "nul@example.com"});
    events.insert(0, refused.clone());

    let rejected = apply(&pool, &OrderView, &events).await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        (
            rejected[0].stream_id,
            rejected[0].version,
            rejected[0].position
        ),
        (refused.stream_id, 1, refused.position)
    );
    assert!(
        rejected[0].error.contains("refused"),
        "{}",
        rejected[0].error
    );
    assert_eq!(
        checkpoint(&pool, &OrderView, refused.stream_id).await,
        Some(1)
    );
    assert_eq!(checkpoint(&pool, &OrderView, ada.id).await, Some(1));
    let owners: i64 = sqlx::query_scalar("select count(*) from order_view_users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owners, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_rename_shows_up_in_that_users_orders_whatever_the_arrival_order(pool: PgPool) {
    // Three pieces per user: registration, the order, the rename and email change. Each user
    // gets another arrival order that keeps the user's own stream in order.
    let arrivals: [[usize; 3]; 3] = [[1, 0, 2], [0, 1, 2], [0, 2, 1]];
    let mut cases = Vec::new();
    for (n, arrival) in arrivals.iter().enumerate() {
        let mut user = Stream::<User>::new();
        user.exec(
            &pool,
            UserCommand::Register {
                name: format!("User {n}").try_into().unwrap(),
                email: format!("user{n}@example.com").try_into().unwrap(),
            },
        )
        .await;
        let mut order = Stream::<Order>::new();
        order
            .exec(
                &pool,
                OrderCommand::Create {
                    user_id: user.id,
                    currency: Currency::EUR,
                },
            )
            .await;
        user.exec(
            &pool,
            UserCommand::Rename {
                name: format!("Renamed {n}").try_into().unwrap(),
            },
        )
        .await;
        user.exec(
            &pool,
            UserCommand::ChangeEmail {
                email: format!("moved{n}@example.org").try_into().unwrap(),
            },
        )
        .await;
        cases.push((user.id, order.id, *arrival));
    }
    let events = all_events(&pool).await;
    let of = |stream: Uuid| -> Vec<StoredEvent> {
        events
            .iter()
            .filter(|e| e.stream_id == stream)
            .cloned()
            .collect()
    };

    for (n, (user_id, order_id, arrival)) in cases.iter().enumerate() {
        let user_events = of(*user_id);
        let pieces = [
            user_events[..1].to_vec(),
            of(*order_id),
            user_events[1..].to_vec(),
        ];
        // Piece by piece in separate batches for odd users, all in one batch for even ones.
        if n % 2 == 1 {
            for piece in arrival {
                assert_eq!(apply(&pool, &OrderView, &pieces[*piece]).await, []);
            }
        } else {
            let batch: Vec<StoredEvent> = arrival.iter().flat_map(|p| pieces[*p].clone()).collect();
            assert_eq!(apply(&pool, &OrderView, &batch).await, []);
        }
        let row = order_view_row(&pool, *order_id).await;
        assert_eq!(
            row.user_name,
            Some(format!("Renamed {n}")),
            "arrival {arrival:?}"
        );
        assert_eq!(row.user_email, Some(format!("moved{n}@example.org")));
    }

    // A later rename reaches an order written long before.
    let (user_id, order_id, _) = cases[0];
    let version = of(user_id).len() as i32;
    let again = UserEvent::UserRenamed {
        name: "Ada Again".try_into().unwrap(),
    };
    append_raw(
        &pool,
        user_id,
        User::STREAM_TYPE,
        version,
        &[new_event(&again)],
    )
    .await;
    let latest = all_events(&pool).await.pop().unwrap();
    assert_eq!(apply(&pool, &OrderView, &[latest]).await, []);
    let row = order_view_row(&pool, order_id).await;
    assert_eq!(row.user_name.as_deref(), Some("Ada Again"));
    let events = all_events(&pool).await;
    let actual = actual(&pool, &OrderView).await;
    assert_same(&OrderView, &actual, &expected(&OrderView, &events));
}

#[sqlx::test(migrations = "../migrations")]
async fn events_of_streams_a_projection_does_not_consume_are_skipped_without_a_checkpoint(
    pool: PgPool,
) {
    // No projection reads sagas (the query service reads the `sagas` table), and only
    // payment_view reads payments.
    let saga = Uuid::now_v7();
    let payment = Uuid::now_v7();
    let event = |event_type: &str| NewEvent {
        event_type: event_type.into(),
        schema_version: 1,
        payload: json!({}),
    };
    append_raw(&pool, saga, Saga::STREAM_TYPE, 0, &[event("SagaStarted")]).await;
    append_raw(
        &pool,
        payment,
        Payment::STREAM_TYPE,
        0,
        &[event("PaymentCaptured")],
    )
    .await;
    let events = all_events(&pool).await;
    for projection in PROJECTIONS
        .iter()
        .copied()
        .filter(|p| p.name() != "payment_view")
    {
        assert_eq!(apply(&pool, projection, &events).await, []);
        assert_eq!(checkpoint(&pool, projection, saga).await, None);
        assert_eq!(checkpoint(&pool, projection, payment).await, None);
    }
    assert_eq!(checkpoint(&pool, &PaymentView, saga).await, None);
}

/// An order's payment stream, decided by the Payment aggregate.
fn payment_of(order_id: Uuid) -> Stream<Payment> {
    Stream::with_id(payment_id(order_id))
}

fn authorize(order_id: Uuid, amount_minor: i64) -> PaymentCommand {
    PaymentCommand::Authorize {
        order_id,
        amount: eur(amount_minor),
        authorization_id: format!("auth-{order_id}"),
    }
}

async fn payment_view_row(pool: &PgPool, order_id: Uuid) -> Option<common::PaymentRow> {
    match actual(pool, &PaymentView).await.view {
        View::Payments(rows) => rows.get(&order_id).cloned(),
        _ => unreachable!(),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_payment_is_projected_through_authorization_and_capture_or_void(pool: PgPool) {
    let (captured, voided, declined) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut first = payment_of(captured);
    assert_eq!(first.exec(&pool, authorize(captured, 2500)).await, 1);
    let mut second = payment_of(voided);
    assert_eq!(second.exec(&pool, authorize(voided, 700)).await, 1);
    let mut third = payment_of(declined);
    let decline = PaymentCommand::Decline {
        order_id: declined,
        amount: eur(900),
        reason: "insufficient funds".into(),
    };
    assert_eq!(third.exec(&pool, decline).await, 1);
    assert_eq!(
        apply(&pool, &PaymentView, &all_events(&pool).await).await,
        []
    );

    let row = payment_view_row(&pool, captured).await.unwrap();
    assert_eq!(row.payment_id, first.id);
    assert_eq!(
        (row.status.as_str(), row.amount_minor, row.currency.as_str()),
        ("authorized", 2500, "EUR")
    );
    assert_eq!(row.authorization_id, Some(format!("auth-{captured}")));
    assert!(row.authorized_at.is_some() && row.captured_at.is_none());
    assert_eq!(row.version, 1);
    let row = payment_view_row(&pool, declined).await.unwrap();
    assert_eq!(row.status, "declined");
    assert_eq!(row.decline_reason.as_deref(), Some("insufficient funds"));
    assert_eq!((row.authorization_id, row.authorized_at), (None, None));
    assert!(row.declined_at.is_some());

    let before = all_events(&pool).await.len();
    assert_eq!(first.exec(&pool, PaymentCommand::Capture).await, 1);
    let void = PaymentCommand::Void {
        reason: "order cancelled".into(),
    };
    assert_eq!(second.exec(&pool, void).await, 1);
    let events = all_events(&pool).await;
    // Captures and voids name no order: the view finds it through the stream.
    assert_eq!(apply(&pool, &PaymentView, &events[before..]).await, []);

    let row = payment_view_row(&pool, captured).await.unwrap();
    assert_eq!((row.status.as_str(), row.version), ("captured", 2));
    assert_eq!(row.captured_at, Some(events[before].recorded_at));
    assert_eq!(row.updated_at, events[before].recorded_at);
    assert!(row.authorized_at.is_some() && row.voided_at.is_none());
    let row = payment_view_row(&pool, voided).await.unwrap();
    assert_eq!(row.status, "voided");
    assert_eq!(row.void_reason.as_deref(), Some("order cancelled"));
    assert_eq!(row.voided_at, Some(events[before + 1].recorded_at));
    let actual = actual(&pool, &PaymentView).await;
    assert_same(&PaymentView, &actual, &expected(&PaymentView, &events));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_redelivered_payment_event_is_applied_once(pool: PgPool) {
    let order_id = Uuid::now_v7();
    let mut payment = payment_of(order_id);
    payment.exec(&pool, authorize(order_id, 2500)).await;
    payment.exec(&pool, PaymentCommand::Capture).await;
    let events = all_events(&pool).await;

    let twice: Vec<StoredEvent> = events.iter().chain(&events).cloned().collect();
    assert_eq!(apply(&pool, &PaymentView, &twice).await, []);
    let once = payment_view_row(&pool, order_id).await.unwrap();
    // The authorization again, alone and after the capture: a duplicate, not a second start.
    assert_eq!(apply(&pool, &PaymentView, &events[..1]).await, []);
    assert_eq!(apply(&pool, &PaymentView, &events).await, []);
    assert_eq!(payment_view_row(&pool, order_id).await.unwrap(), once);
    assert_eq!(once.status, "captured");
    assert_eq!(checkpoint(&pool, &PaymentView, payment.id).await, Some(2));
    let actual = actual(&pool, &PaymentView).await;
    assert_same(&PaymentView, &actual, &expected(&PaymentView, &events));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_capture_delivered_alone_gets_its_authorization_from_the_store(pool: PgPool) {
    let order_id = Uuid::now_v7();
    let mut payment = payment_of(order_id);
    payment.exec(&pool, authorize(order_id, 2500)).await;
    payment.exec(&pool, PaymentCommand::Capture).await;
    let events = all_events(&pool).await;

    assert_eq!(apply(&pool, &PaymentView, &events[1..]).await, []);
    let row = payment_view_row(&pool, order_id).await.unwrap();
    assert_eq!((row.status.as_str(), row.version), ("captured", 2));
    let actual = actual(&pool, &PaymentView).await;
    assert_same(&PaymentView, &actual, &expected(&PaymentView, &events));
}

#[sqlx::test(migrations = "../migrations")]
async fn payment_events_that_contradict_the_view_are_rejected_and_the_rest_applies(pool: PgPool) {
    let authorized = PaymentEvent::PaymentAuthorized {
        order_id: Uuid::now_v7(),
        amount: eur(100),
        authorization_id: "auth-1".into(),
    };
    // A stream that is not its order's payment stream, and a capture of nothing.
    let stray = Uuid::now_v7();
    append_raw(
        &pool,
        stray,
        Payment::STREAM_TYPE,
        0,
        &[new_event(&authorized)],
    )
    .await;
    let orphan = Uuid::now_v7();
    let captured = PaymentEvent::PaymentCaptured { amount: eur(100) };
    append_raw(
        &pool,
        orphan,
        Payment::STREAM_TYPE,
        0,
        &[new_event(&captured)],
    )
    .await;
    // A declined payment that is then voided, and a good one after it.
    let order_id = Uuid::now_v7();
    let declined = PaymentEvent::PaymentDeclined {
        order_id,
        amount: eur(100),
        reason: "no".into(),
    };
    let voided = PaymentEvent::PaymentVoided {
        reason: "cancelled".into(),
    };
    let events = [new_event(&declined), new_event(&voided)];
    append_raw(
        &pool,
        payment_id(order_id),
        Payment::STREAM_TYPE,
        0,
        &events,
    )
    .await;
    let good = Uuid::now_v7();
    payment_of(good).exec(&pool, authorize(good, 300)).await;
    let events = all_events(&pool).await;

    let rejected = apply(&pool, &PaymentView, &events).await;
    let errors: Vec<(Uuid, &str)> = rejected
        .iter()
        .map(|r| (r.stream_id, r.error.as_str()))
        .collect();
    let not_its_order = format!(
        "cannot apply: the stream is not the payment stream of order {}",
        match &authorized {
            PaymentEvent::PaymentAuthorized { order_id, .. } => order_id,
            _ => unreachable!(),
        }
    );
    assert_eq!(
        errors,
        [
            (stray, not_its_order.as_str()),
            (
                orphan,
                "cannot apply: the payment's PaymentAuthorized or PaymentDeclined was never \
                 applied"
            ),
            (
                payment_id(order_id),
                "cannot apply: the payment is declined, not authorized"
            ),
        ]
    );
    let row = payment_view_row(&pool, order_id).await.unwrap();
    assert_eq!((row.status.as_str(), row.version), ("declined", 1));
    assert_eq!(
        payment_view_row(&pool, good).await.unwrap().status,
        "authorized"
    );
    // Every event moved its stream's checkpoint; redelivery rejects nothing again.
    assert_eq!(
        checkpoint(&pool, &PaymentView, payment_id(order_id)).await,
        Some(2)
    );
    assert_eq!(apply(&pool, &PaymentView, &events).await, []);
}

#[sqlx::test(migrations = "../migrations")]
async fn records_the_store_does_not_hold_at_their_place_are_set_apart_and_the_rest_applies(
    pool: PgPool,
) {
    let mut ada = registered_user(&pool, "Ada").await;
    ada.exec(
        &pool,
        UserCommand::Rename {
            name: "Ada L".try_into().unwrap(),
        },
    )
    .await;
    let bob = registered_user(&pool, "Bob").await;
    let events = all_events(&pool).await;
    // Ada's registration under another event id; her rename's event id at her registration's
    // version; a version 3 the store lacks. Each comes before the genuine record it mimics.
    let mut copy = at(&events, ada.id, 1);
    copy.metadata.event_id = Uuid::now_v7();
    let mut misplaced = at(&events, ada.id, 2);
    misplaced.version = 1;
    let mut ahead = at(&events, ada.id, 2);
    ahead.version = 3;
    ahead.metadata.event_id = Uuid::now_v7();
    let batch = [
        copy,
        misplaced,
        at(&events, bob.id, 1),
        at(&events, ada.id, 1),
        ahead,
        at(&events, ada.id, 2),
    ];
    for projection in consuming(User::STREAM_TYPE) {
        // Ada's registration is applied already: its redelivery is skipped by checkpoint.
        assert_eq!(
            apply(&pool, projection, &[at(&events, ada.id, 1)]).await,
            []
        );
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = begin_batch(&mut conn, projection).await.unwrap();
        // The writers' lock came with the BEGIN.
        let locks: i64 = sqlx::query_scalar(
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(locks, 1, "{projection}");
        let applied = apply_records(&mut tx, projection, &batch).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(applied.rejected, [], "{projection}");
        assert_eq!(
            applied.foreign,
            [true, true, false, false, true, false],
            "{projection}"
        );
        let actual = actual(&pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_record_the_database_refuses_rolls_back_to_the_savepoint_begun_with_the_batch(
    pool: PgPool,
) {
    let ada = registered_user(&pool, "Ada").await;
    let bob = registered_user(&pool, "Bob").await;
    let events = all_events(&pool).await;
    // The store holds Ada's registration at its place under its id (the check passes), but
    // this record's name is one PostgreSQL text cannot hold.
    let mut refused = at(&events, ada.id, 1);
    refused.payload = json!({"name": "Nul\u{0}", "email": "nul@example.com"});
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = begin_batch(&mut conn, &OrderView).await.unwrap();
    let applied = apply_records(&mut tx, &OrderView, &[refused, at(&events, bob.id, 1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(applied.foreign, [false, false]);
    assert_eq!(applied.rejected.len(), 1, "{:?}", applied.rejected);
    assert_eq!(
        (applied.rejected[0].stream_id, applied.rejected[0].version),
        (ada.id, 1)
    );
    assert_eq!(checkpoint(&pool, &OrderView, ada.id).await, Some(1));
    assert_eq!(checkpoint(&pool, &OrderView, bob.id).await, Some(1));
}
