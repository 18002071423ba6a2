//! The outbox relay against a real PostgreSQL and a real Kafka-protocol broker.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kafka::{assert_in_version_order, brokers, fresh_topics, read_published, Published};
use common::spawn_app;
use orderflow_command::relay::{self, RelayOptions};
use orderflow_kafka::KafkaArgs;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

struct Relay {
    task: JoinHandle<anyhow::Result<()>>,
    stop: watch::Sender<bool>,
}

fn start_relay(pool: &PgPool, kafka: &KafkaArgs, batch_size: i64) -> Relay {
    let (stop, shutdown) = watch::channel(false);
    let options = RelayOptions {
        batch_size,
        standby_poll: Duration::from_millis(200),
        max_backoff: Duration::from_millis(500),
        delivery_timeout: Duration::from_secs(3),
        ..RelayOptions::default()
    };
    let task = tokio::spawn(relay::run(pool.clone(), kafka.clone(), options, shutdown));
    Relay { task, stop }
}

/// Wait until every event in the store is on the topics; the store's last versions, their
/// count and what was read.
async fn everything_published(
    app: &common::TestApp,
    kafka: &KafkaArgs,
) -> (BTreeMap<Uuid, i32>, usize, Published) {
    let expected = app.stream_versions().await;
    let total: usize = expected.values().map(|v| *v as usize).sum();
    let args = kafka.clone();
    let published = tokio::task::spawn_blocking(move || {
        read_published(&args, Duration::from_secs(90), |p| p.distinct() >= total)
    })
    .await
    .unwrap();
    (expected, total, published)
}

async fn wait_for_cursor_to_reach(pool: &PgPool, count: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let backlog = relay::backlog(pool, "default").await.unwrap();
        let published: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(pool)
            .await
            .unwrap();
        if published - backlog >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay stalled at {}",
            published - backlog
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn every_committed_event_reaches_kafka_in_version_order(pool: PgPool) {
    let kafka = fresh_topics(&brokers()).await;
    let app = spawn_app(pool.clone()).await;
    let relay = start_relay(&pool, &kafka, 50);
    app.workload(6, 3).await;
    let (expected, total, published) = everything_published(&app, &kafka).await;
    assert_eq!(published.distinct(), total);
    assert_eq!(
        published.records, total,
        "one relay, no crash: no duplicates"
    );
    assert_in_version_order(&published, &expected);
    // Idle, the relay takes a snapshot at its cursor if its last save had none.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let at_cursor: bool = sqlx::query_scalar(
            "select exists (select 1 from relay_history h join relay_cursors c \
             on c.name = h.relay and (c.tx_id, c.position) = (h.tx_id, h.position))",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if at_cursor {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot at the cursor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop.send(true).unwrap();
    relay.task.await.unwrap().unwrap();
    assert_snapshots_agree(&pool, total).await;
}

/// The relay's snapshots (`relay_history`) only move forward, in cursor and in every
/// partition's offset, never past its cursor or its partitions' offsets, and count every
/// record published by their cursor.
async fn assert_snapshots_agree(pool: &PgPool, total: usize) {
    /// Cursor, then the stream types, partitions and next offsets.
    type Snapshot = (i64, i64, Vec<String>, Vec<i32>, Vec<i64>);
    let snapshots: Vec<Snapshot> = sqlx::query_as(
        "select tx_id, position, stream_types, partitions, next_offsets from relay_history \
         where relay = 'default' order by tx_id, position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!snapshots.is_empty(), "the relay records snapshots");
    let now: BTreeMap<(String, i32), i64> = sqlx::query_as::<_, (String, i32, i64)>(
        "select stream_type, partition, next_offset from relay_partitions where relay = 'default'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(t, p, o)| ((t, p), o))
    .collect();
    let cursor: (i64, i64) =
        sqlx::query_as("select tx_id, position from relay_cursors where name = 'default'")
            .fetch_one(pool)
            .await
            .unwrap();
    let mut before: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (tx_id, position, stream_types, partitions, offsets) in snapshots {
        assert!((tx_id, position) <= cursor);
        let at: BTreeMap<(String, i32), i64> = stream_types
            .into_iter()
            .zip(partitions)
            .zip(offsets)
            .collect();
        for (key, offset) in &before {
            assert!(at.get(key) >= Some(offset), "{key:?} went back");
        }
        for (key, offset) in &at {
            assert!(
                Some(offset) <= now.get(key),
                "{key:?} past the relay's offset"
            );
        }
        // One relay and no crash: the offsets count the records published by the cursor.
        let records: i64 = sqlx::query_scalar(
            "select count(*) from events where (tx_id::text::bigint, position) <= ($1, $2)",
        )
        .bind(tx_id)
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(
            at.values().sum::<i64>(),
            records,
            "at ({tx_id}, {position})"
        );
        before = at;
    }
    // The last, at the cursor, counts every record.
    assert_eq!(before.values().sum::<i64>(), total as i64);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_relay_killed_mid_stream_loses_nothing_after_restart(pool: PgPool) {
    let kafka = fresh_topics(&brokers()).await;
    let app = spawn_app(pool.clone()).await;
    app.workload(4, 2).await;
    let first = start_relay(&pool, &kafka, 5);
    wait_for_cursor_to_reach(&pool, 10).await;
    // Killed, not stopped: no flush, no goodbye; its lock dies with its connection.
    first.task.abort();
    let _ = first.task.await;
    app.workload(4, 2).await;
    let second = start_relay(&pool, &kafka, 5);
    let (expected, total, published) = everything_published(&app, &kafka).await;
    assert_eq!(published.distinct(), total, "nothing lost");
    assert_in_version_order(&published, &expected);
    second.stop.send(true).unwrap();
    second.task.await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_standby_relay_takes_over_when_the_active_one_stops(pool: PgPool) {
    let kafka = fresh_topics(&brokers()).await;
    let app = spawn_app(pool.clone()).await;
    assert!(!relay::is_active(&pool, "default").await.unwrap());
    let active = start_relay(&pool, &kafka, 20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !relay::is_active(&pool, "default").await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first relay never became active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let standby = start_relay(&pool, &kafka, 20);
    app.workload(3, 2).await;
    let (_, total_before, published) = everything_published(&app, &kafka).await;
    assert_eq!(
        published.records, total_before,
        "only one relay publishes while both run"
    );

    active.task.abort();
    let _ = active.task.await;
    app.workload(3, 2).await;
    let (expected, total, published) = everything_published(&app, &kafka).await;
    assert_eq!(
        published.distinct(),
        total,
        "the standby published the rest"
    );
    assert_in_version_order(&published, &expected);
    standby.stop.send(true).unwrap();
    standby.task.await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn commands_succeed_while_the_broker_is_down_and_everything_arrives_after(pool: PgPool) {
    let mut broker = common::kafka::PrivateBroker::start().await;
    let kafka = fresh_topics(&broker.brokers()).await;
    let app = spawn_app(pool.clone()).await;
    let relay = start_relay(&pool, &kafka, 20);
    app.workload(2, 2).await;
    wait_for_cursor_to_reach(&pool, 5).await;

    broker.stop();
    // The workload asserts that every command answers 2xx with the broker gone.
    app.workload(3, 2).await;
    assert!(
        relay::backlog(&pool, "default").await.unwrap() > 0,
        "events wait in the store"
    );

    broker.restart().await;
    let (expected, total, published) = everything_published(&app, &kafka).await;
    assert_eq!(
        published.distinct(),
        total,
        "all events arrived after the restart"
    );
    assert_in_version_order(&published, &expected);
    relay.stop.send(true).unwrap();
    relay.task.await.unwrap().unwrap();
}
