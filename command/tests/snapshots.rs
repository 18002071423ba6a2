//! Long streams load from snapshots: the events folded per load stay bounded however long
//! the stream grows, and a snapshot that cannot be used is ignored and rebuilt.

use orderflow_command::write::{Decide, Meta, Writer};
use orderflow_domain::product::{Product, ProductCommand, Sku};
use orderflow_domain::{Currency, Money, Name};
use orderflow_store::snapshot::SNAPSHOT_EVERY;
use sqlx::PgPool;
use uuid::Uuid;

fn meta() -> Meta {
    Meta {
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        actor: None,
        actor_roles: Vec::new(),
        owner: None,
        expected_version: None,
        dedupe: None,
    }
}

/// A product whose stream holds `restocks` one-unit restocks after its creation, the
/// restocks inserted in bulk as stored events.
async fn long_product(pool: &PgPool, writer: &Writer, restocks: i32) -> Uuid {
    let id = Uuid::now_v7();
    let create = ProductCommand::Create {
        sku: Sku::parse(&format!("S-{}", id.simple())).unwrap(),
        name: Name::parse("Mug").unwrap(),
        price: Money::new(100, Currency::EUR),
        initial_stock: 0,
    };
    writer
        .execute(&meta(), &Decide::<Product>::new(id, create))
        .await
        .unwrap();
    sqlx::query(
        "insert into events (stream_id, stream_type, version, event_type, schema_version, payload, metadata) \
         select $1, 'product', g, 'Restocked', 1, '{\"quantity\": 1}', \
         jsonb_build_object('eventId', gen_random_uuid(), 'correlationId', gen_random_uuid(), 'commandId', 'bulk') \
         from generate_series(2, $2 + 1) g",
    )
    .bind(id)
    .bind(restocks)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_of_100000_events_loads_from_its_snapshot_like_a_short_one(pool: PgPool) {
    let writer = Writer::new(pool.clone(), 0);
    let long = long_product(&pool, &writer, 100_000).await;
    let short = long_product(&pool, &writer, 9).await;

    let first = writer.read::<Product>(long, true).await.unwrap();
    assert_eq!(first.version, 100_001);
    assert_eq!(first.folded, 100_001, "no snapshot yet: every event");
    assert_eq!(first.state.available(), 100_000);

    let again = writer.read::<Product>(long, true).await.unwrap();
    assert_eq!(again.folded, 0, "the first load left a snapshot");
    assert_eq!(again.state, first.state);
    assert_eq!(again.last_position, first.last_position);

    let reserve = ProductCommand::Reserve {
        order_id: Uuid::now_v7(),
        quantity: 3,
    };
    writer
        .execute(&meta(), &Decide::<Product>::existing(long, reserve))
        .await
        .unwrap();
    let after = writer.read::<Product>(long, true).await.unwrap();
    assert_eq!(after.version, 100_002);
    assert_eq!(after.folded, 1);
    assert_eq!(after.state.available(), 99_997);
    assert_eq!(after.state.reserved(), 3);

    let short = writer.read::<Product>(short, true).await.unwrap();
    assert_eq!(short.folded, 10);
    assert!(after.folded <= SNAPSHOT_EVERY && short.folded <= SNAPSHOT_EVERY);
}

#[sqlx::test(migrations = "../migrations")]
async fn appends_leave_a_snapshot_every_hundred_events(pool: PgPool) {
    let writer = Writer::new(pool.clone(), 100);
    let id = long_product(&pool, &writer, 0).await;
    for _ in 0..SNAPSHOT_EVERY {
        let restock = ProductCommand::Restock { quantity: 2 };
        writer
            .execute(&meta(), &Decide::<Product>::existing(id, restock))
            .await
            .unwrap();
    }
    let version: i32 = sqlx::query_scalar("select version from snapshots where stream_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, 100);
    let loaded = Writer::new(pool.clone(), 0)
        .read::<Product>(id, true)
        .await
        .unwrap();
    assert_eq!(loaded.folded, 1);
    assert_eq!(loaded.state.available(), 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_snapshot_that_cannot_be_read_or_is_of_another_format_is_ignored_and_rebuilt(
    pool: PgPool,
) {
    let writer = Writer::new(pool.clone(), 0);
    let id = long_product(&pool, &writer, 500).await;
    let expected = writer.read::<Product>(id, true).await.unwrap();

    sqlx::query("update snapshots set state = '{\"onHand\": \"lots\"}' where stream_id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let rebuilt = writer.read::<Product>(id, true).await.unwrap();
    assert_eq!(rebuilt.folded, 501, "the unreadable snapshot was ignored");
    assert_eq!(rebuilt.state, expected.state);
    assert_eq!(
        writer.read::<Product>(id, true).await.unwrap().folded,
        0,
        "and replaced"
    );

    sqlx::query("update snapshots set format = format + 1 where stream_id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let rebuilt = writer.read::<Product>(id, true).await.unwrap();
    assert_eq!(rebuilt.folded, 501, "another format is not read");
    assert_eq!(rebuilt.state, expected.state);
}
