//! The whole pipeline against a real PostgreSQL and a real Kafka-protocol broker: events
//! appended to the store, published by the relay, consumed by projector workers.

mod common;

use std::time::Duration;

use common::{assert_all_match_the_store, Workload};
use orderflow_command::relay::{self, RelayOptions};
use orderflow_domain::order::Order;
use orderflow_domain::Aggregate;
use orderflow_kafka::testing::TestTopics;
use orderflow_kafka::topics::{dead_letter_topic, events_topic, STREAM_TYPES};
use orderflow_kafka::KafkaArgs;
use orderflow_projector::worker::{self, WorkerOptions};
use orderflow_projector::{replay, ReplayOptions, PROJECTIONS};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Fresh topics for one test, deleted when it ends.
async fn fresh_topics() -> TestTopics {
    let brokers = std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS must point at a Kafka-protocol broker (scripts/test starts tansu)");
    TestTopics::create(&brokers, 3).await
}

struct Running {
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    stop: watch::Sender<bool>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
    }
}

fn options(group: &str) -> WorkerOptions {
    WorkerOptions {
        group_prefix: group.to_owned(),
        batch_size: 200,
        ..WorkerOptions::default()
    }
}

/// The relay plus one worker task per entry of `workers` (each runs all projections).
fn start(pool: &PgPool, kafka: &KafkaArgs, group: &str, workers: usize) -> Running {
    start_with(pool, pool, kafka, group, workers)
}

/// [`start`], with the workers on a pool of their own.
fn start_with(
    pool: &PgPool,
    workers_pool: &PgPool,
    kafka: &KafkaArgs,
    group: &str,
    workers: usize,
) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let relay_options = RelayOptions {
        idle_poll: Duration::from_millis(20),
        ..RelayOptions::default()
    };
    let mut tasks = vec![tokio::spawn(relay::run(
        pool.clone(),
        kafka.clone(),
        relay_options,
        shutdown.clone(),
    ))];
    for _ in 0..workers {
        tasks.push(tokio::spawn(worker::run(
            workers_pool.clone(),
            kafka.clone(),
            PROJECTIONS.to_vec(),
            options(group),
            shutdown.clone(),
        )));
    }
    Running { tasks, stop }
}

/// Every projection has checkpointed the last version of every stream it consumes.
async fn wait_until_caught_up(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut behind = 0i64;
        for &projection in PROJECTIONS {
            let sql = format!(
                "select count(*) from (select stream_id, max(version) as version from events \
                 where stream_type = any($1) group by stream_id) s \
                 left join {projection}_checkpoints c using (stream_id) \
                 where c.version is distinct from s.version"
            );
            let types: Vec<&str> = projection.stream_types().to_vec();
            let count: i64 = sqlx::query_scalar(&sql)
                .bind(&types)
                .fetch_one(pool)
                .await
                .unwrap();
            behind += count;
        }
        if behind == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            // Say where: which projection lags on which stream, and what the relay did.
            let mut detail = Vec::new();
            for &projection in PROJECTIONS {
                let sql = format!(
                    "select s.stream_id::text, s.version, c.version from (select stream_id, \
                     max(version) as version from events where stream_type = any($1) \
                     group by stream_id) s left join {projection}_checkpoints c using (stream_id) \
                     where c.version is distinct from s.version"
                );
                let types: Vec<&str> = projection.stream_types().to_vec();
                let rows: Vec<(String, i32, Option<i32>)> = sqlx::query_as(&sql)
                    .bind(&types)
                    .fetch_all(pool)
                    .await
                    .unwrap();
                detail.push(format!("{projection}: {rows:?}"));
            }
            let backlog = orderflow_command::relay::backlog(pool, "default")
                .await
                .unwrap();
            panic!("projections still behind on {behind} streams (relay backlog {backlog}): {detail:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn live_projectors_fed_through_kafka_match_a_fold_of_the_store(pool: PgPool) {
    let kafka = fresh_topics().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("order_view_changed").await.unwrap();
    let running = start(&pool, &kafka, &kafka.topic_prefix, 1);
    let mut workload = Workload::new(0xfeed);
    workload.run(&pool, 300).await;
    wait_until_caught_up(&pool).await;
    assert_all_match_the_store(&pool).await;
    running.stop().await;

    // The query service learns of every order's new version from the projector's NOTIFY.
    let latest: std::collections::HashMap<Uuid, i32> =
        sqlx::query_as("select order_id, version from order_view")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut notified = std::collections::HashMap::new();
    while notified != latest {
        let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification for every order's last version")
            .unwrap();
        let payload: serde_json::Value = serde_json::from_str(notification.payload()).unwrap();
        let order: Uuid = payload["orderId"].as_str().unwrap().parse().unwrap();
        let version = payload["version"].as_i64().unwrap() as i32;
        let seen = notified.entry(order).or_insert(0);
        assert!(version >= *seen, "versions arrive in order per order");
        *seen = version;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn duplicate_delivery_is_applied_once(pool: PgPool) {
    let kafka = fresh_topics().await;
    let running = start(&pool, &kafka, &kafka.topic_prefix, 1);
    let mut workload = Workload::new(0xd00d);
    workload.run(&pool, 150).await;
    wait_until_caught_up(&pool).await;
    // A second relay with a cursor of its own publishes everything a second time.
    let (stop_again, again_shutdown) = watch::channel(false);
    let again = tokio::spawn(relay::run(
        pool.clone(),
        kafka.clone(),
        RelayOptions {
            name: "again".into(),
            ..RelayOptions::default()
        },
        again_shutdown,
    ));
    let total: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    wait_for_records(&kafka, 2 * total as usize).await;
    stop_again.send(true).unwrap();
    again.await.unwrap().unwrap();
    workload.run(&pool, 50).await;
    wait_until_caught_up(&pool).await;
    wait_for_group_to_drain(&kafka, &kafka.topic_prefix).await;
    assert_all_match_the_store(&pool).await;
    running.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_poison_record_goes_to_the_dead_letter_topic_and_the_worker_goes_on(pool: PgPool) {
    let kafka = fresh_topics().await;
    let topic = events_topic(&kafka.topic_prefix, Order::STREAM_TYPE);
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key("poison")
                .payload("this is not an event"),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(err, _)| err)
        .unwrap();
    // A well-formed event the store never held (another environment's): applying it would
    // wait for ever for its versions 1 to 4.
    let foreign = orderflow_store::StoredEvent {
        position: 1,
        tx_id: 1,
        stream_id: Uuid::now_v7(),
        stream_type: Order::STREAM_TYPE.into(),
        version: 5,
        event_type: "OrderConfirmed".into(),
        schema_version: 1,
        payload: serde_json::json!({}),
        metadata: common::metadata(),
        recorded_at: chrono::Utc::now(),
    };
    let foreign_key = foreign.stream_id.to_string();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&foreign_key)
                .payload("{}")
                .headers(orderflow_kafka::envelope::headers(&foreign)),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(err, _)| err)
        .unwrap();
    let running = start(&pool, &kafka, &kafka.topic_prefix, 1);
    let mut workload = Workload::new(0xbad);
    workload.run(&pool, 100).await;
    wait_until_caught_up(&pool).await;
    assert_all_match_the_store(&pool).await;

    // Each projection consuming orders dead-letters it once, with the error.
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("dlq-reader-{}", Uuid::new_v4()))
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..kafka.topic_partitions {
        assignment
            .add_partition_offset(&dead_letter_topic(&topic), partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead.len() < 6 && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let headers = message.headers().expect("dead letters carry headers");
            let error = headers
                .iter()
                .find(|h| h.key == orderflow_kafka::dlq::ERROR)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .expect("an error header");
            let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
            assert!(key == "poison" || key == foreign_key, "{key}");
            dead.push((key, error));
        }
    }
    // order_view, user_view and product_view each dead-letter both records once.
    assert_eq!(dead.len(), 6, "{dead:?}");
    assert_eq!(
        dead.iter().filter(|(key, _)| *key == foreign_key).count(),
        3
    );
    assert!(dead
        .iter()
        .any(|(_, error)| error.contains("event store holds no such event")));
    running.stop().await;
}

/// A batch that fails inside its transaction before sqlx counts one open (here the
/// writers' lock times out in the statement that begins it) leaves its connection in an
/// aborted transaction, which the pool's check on release does not see: the worker must
/// close that connection. With a pool of one, every later batch would otherwise fail.
#[sqlx::test(migrations = "../migrations")]
async fn a_batch_that_fails_in_the_statement_that_begins_it_closes_its_connection(pool: PgPool) {
    let kafka = fresh_topics().await;
    // Every projection's writers' lock, held as a replay's swap holds it.
    let mut holder = pool.begin().await.unwrap();
    for &projection in PROJECTIONS {
        sqlx::query("select pg_advisory_xact_lock($1, $2)")
            .bind(orderflow_projector::engine::WRITER_LOCK)
            .bind(projection.lock_id())
            .execute(&mut *holder)
            .await
            .unwrap();
    }
    let workers_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(
            (*pool.connect_options())
                .clone()
                .options([("lock_timeout", "100ms")]),
        )
        .await
        .unwrap();
    let running = start_with(&pool, &workers_pool, &kafka, &kafka.topic_prefix, 1);
    let mut workload = Workload::new(0x10c);
    workload.run(&pool, 50).await;
    // A batch waits for the lock; it times out after 100 ms, and we keep the lock longer.
    let waiting = |pid: Option<i32>| {
        let pool = pool.clone();
        async move {
            // This test's database and the writers' lock only: tests run side by side.
            sqlx::query_scalar::<_, i32>(
                "select pid from pg_locks where locktype = 'advisory' and not granted \
                 and database = (select oid from pg_database where datname = current_database()) \
                 and classid::bigint = $2 and objsubid = 2 \
                 and ($1::int is null or pid = $1) limit 1",
            )
            .bind(pid)
            .bind(i64::from(orderflow_projector::engine::WRITER_LOCK))
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let waiter = loop {
        if let Some(pid) = waiting(None).await {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no batch came to wait for the writers' lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(waiting(Some(waiter)).await, None, "the lock wait timed out");
    // The failed batch's connection is closed, not handed to the next batch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state: Option<Option<String>> =
            sqlx::query_scalar("select state from pg_stat_activity where pid = $1")
                .bind(waiter)
                .fetch_optional(&pool)
                .await
                .unwrap();
        let Some(state) = state else { break };
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed batch's connection is still open ({state:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.commit().await.unwrap();
    wait_until_caught_up(&pool).await;
    assert_all_match_the_store(&pool).await;
    running.stop().await;
    workers_pool.close().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn two_projector_instances_share_the_partitions(pool: PgPool) {
    let kafka = fresh_topics().await;
    let running = start(&pool, &kafka, &kafka.topic_prefix, 2);
    let mut workload = Workload::new(0x2);
    workload.run(&pool, 300).await;
    wait_until_caught_up(&pool).await;
    wait_for_group_to_drain(&kafka, &kafka.topic_prefix).await;
    assert_all_match_the_store(&pool).await;
    running.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replay_while_writes_continue_ends_equal_to_the_live_projectors(pool: PgPool) {
    let kafka = fresh_topics().await;
    let running = start(&pool, &kafka, &kafka.topic_prefix, 1);
    let mut workload = Workload::new(0x4e91);
    workload.run(&pool, 200).await;
    let writer_pool = pool.clone();
    let writer = tokio::spawn(async move {
        workload.run(&writer_pool, 300).await;
    });
    for &projection in PROJECTIONS {
        replay(
            &pool,
            projection,
            ReplayOptions {
                batch_size: 100,
                progress: false,
            },
        )
        .await
        .unwrap();
    }
    writer.await.unwrap();
    wait_until_caught_up(&pool).await;
    assert_all_match_the_store(&pool).await;
    running.stop().await;
}

/// The events topics hold at least `count` records.
async fn wait_for_records(kafka: &KafkaArgs, count: usize) {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        // Counted by reading them: what a consumer sees, whatever the broker's watermarks say.
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", format!("counter-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for stream_type in STREAM_TYPES {
            let topic = events_topic(&kafka.topic_prefix, stream_type);
            for partition in 0..kafka.topic_partitions {
                assignment
                    .add_partition_offset(&topic, partition, Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&assignment).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut total = 0;
        while total < count {
            assert!(
                std::time::Instant::now() < deadline,
                "only {total} of {count} records"
            );
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                message.unwrap();
                total += 1;
            }
        }
    })
    .await
    .unwrap();
}

/// Every projection's consumer group has committed up to the end of every partition.
async fn wait_for_group_to_drain(kafka: &KafkaArgs, group_prefix: &str) {
    let kafka = kafka.clone();
    let group_prefix = group_prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        for &projection in PROJECTIONS {
            let group = options(&group_prefix).group(projection);
            let consumer: BaseConsumer = kafka
                .client_config()
                .set("group.id", &group)
                .create()
                .unwrap();
            let mut list = TopicPartitionList::new();
            for stream_type in projection.stream_types() {
                let topic = events_topic(&kafka.topic_prefix, stream_type);
                for partition in 0..kafka.topic_partitions {
                    list.add_partition(&topic, partition);
                }
            }
            loop {
                let committed = consumer
                    .committed_offsets(list.clone(), Duration::from_secs(5))
                    .unwrap();
                let lagging = committed.elements().iter().any(|element| {
                    let (_, high) = consumer
                        .fetch_watermarks(
                            element.topic(),
                            element.partition(),
                            Duration::from_secs(5),
                        )
                        .unwrap();
                    match element.offset() {
                        Offset::Offset(offset) => offset < high,
                        _ => high > 0,
                    }
                });
                if !lagging {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{group} did not drain"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
    .await
    .unwrap();
}
