//! Verifying live read models against a fresh fold of the event store, against a real
//! PostgreSQL, a database per test.

mod common;

use common::{all_events, apply, deliver, shuffle_across_streams, Rng, Workload};
use orderflow_projector::{verify, OrderView, VerifyOptions, VerifyReport, PROJECTIONS};
use sqlx::PgPool;

async fn check(
    pool: &PgPool,
    projection: &'static dyn orderflow_projector::Projection,
) -> VerifyReport {
    verify(pool, projection, VerifyOptions::default())
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn live_models_delivered_out_of_order_and_twice_verify_equal(pool: PgPool) {
    let mut workload = Workload::new(17);
    workload.run(&pool, 400).await;
    let events = all_events(&pool).await;
    let mut rng = Rng::new(5);
    for &projection in PROJECTIONS {
        let delivered = shuffle_across_streams(events.clone(), &mut rng);
        assert_eq!(deliver(&pool, projection, &delivered, &mut rng).await, []);
        let report = check(&pool, projection).await;
        assert_eq!(report.differences(), 0, "{report:#?}");
        assert_eq!(report.streams_behind, 0, "{projection}");
        assert!(report.applied > 0, "{projection}");
        assert_eq!(report.tables.len(), 3);
        for table in &report.tables {
            assert_eq!(table.live, table.rebuilt, "{projection} {}", table.table);
        }
    }
    // Verifying leaves nothing behind: the rebuilt copies were temporary.
    let leftovers: i64 =
        sqlx::query_scalar("select count(*) from pg_tables where tablename like '%\\_verify'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(leftovers, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_view_behind_the_store_is_compared_as_far_as_it_applied(pool: PgPool) {
    let mut workload = Workload::new(23);
    workload.run(&pool, 300).await;
    let events = all_events(&pool).await;
    // The live worker has seen the first 60 % of the events, in commit order.
    let seen = events.len() * 3 / 5;
    for &projection in PROJECTIONS {
        assert_eq!(apply(&pool, projection, &events[..seen]).await, []);
        let report = check(&pool, projection).await;
        assert_eq!(report.differences(), 0, "{report:#?}");
        assert!(report.streams_behind > 0, "{projection}");
        assert!(report.applied < report.events, "{projection}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn changed_missing_and_extra_rows_are_counted_and_named(pool: PgPool) {
    let mut workload = Workload::new(31);
    workload.run(&pool, 300).await;
    let events = all_events(&pool).await;
    assert_eq!(apply(&pool, &OrderView, &events).await, []);
    let orders: Vec<uuid::Uuid> =
        sqlx::query_scalar("select order_id from order_view order by order_id limit 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(orders.len(), 2, "the workload made orders");
    sqlx::query("update order_view set total_minor = total_minor + 1 where order_id = $1")
        .bind(orders[0])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from order_view where order_id = $1")
        .bind(orders[1])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into order_view_users (user_id, name, email) \
         values (gen_random_uuid(), 'Nobody', 'nobody@example.com')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let report = check(&pool, &OrderView).await;
    let view = report
        .tables
        .iter()
        .find(|t| t.table == "order_view")
        .unwrap();
    assert_eq!((view.missing, view.extra, view.different), (1, 0, 1));
    let mut samples: Vec<(&str, String, Vec<String>)> = view
        .samples
        .iter()
        .map(|s| (s.kind.as_str(), s.key.clone(), s.columns.clone()))
        .collect();
    samples.sort();
    assert_eq!(
        samples,
        [
            (
                "different",
                orders[0].to_string(),
                vec!["total_minor".to_owned()]
            ),
            ("missing", orders[1].to_string(), vec![]),
        ]
    );
    let users = report
        .tables
        .iter()
        .find(|t| t.table == "order_view_users")
        .unwrap();
    assert_eq!((users.missing, users.extra, users.different), (0, 1, 0));
    assert_eq!(report.differences(), 3);
}
