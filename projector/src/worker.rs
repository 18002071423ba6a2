//! The live projector: one Kafka consumer group per projection, each batch applied in one
//! Postgres transaction, offsets committed only after that transaction commits.
//!
//! At-least-once delivery meets per-stream checkpoints: a redelivered record is at or below
//! its stream's checkpoint and skipped. A record that is not one of our events, or an event
//! the projection cannot apply, goes to `<topic>.dlq` and the worker goes on.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use orderflow_kafka::consumer::{
    close, commit, next_batch, subscribe, AssignmentWatch, GroupConsumer,
};
use orderflow_kafka::dlq::dead_letter;
use orderflow_kafka::topics::{dead_letter_topic, events_topic};
use orderflow_kafka::{envelope, Backoff, KafkaArgs};
use orderflow_store::StoredEvent;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::watch;
use uuid::Uuid;

use crate::engine::{apply_records, begin_batch, Applied};
use crate::{Projection, Rejected};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Consumer groups are `<group_prefix>.<projection>`; instances sharing it share partitions.
    pub group_prefix: String,
    /// Records applied per transaction.
    pub batch_size: usize,
    /// How long a busy worker (its next record was already waiting) gathers a batch beyond
    /// what is already fetched; an idle one hands a record over at once. Zero by default:
    /// a batch is then what the consumer has fetched, which grows with the load (records
    /// queue while the previous batch applies, and a broker that holds fetches hands them
    /// over in chunks).
    pub linger: Duration,
    /// Where workers say why they are not ready (consuming or applying fails).
    pub readiness: orderflow_store::telemetry::Readiness,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            group_prefix: "orderflow.projector".into(),
            batch_size: 500,
            linger: Duration::ZERO,
            readiness: Default::default(),
        }
    }
}

impl WorkerOptions {
    pub fn group(&self, projection: &dyn Projection) -> String {
        format!("{}.{projection}", self.group_prefix)
    }
}

/// How long a worker that failed to consume must go without errors to count as ready again
/// when no records arrive to prove it.
/// Longer than the lag monitor's grace plus a sample, so that during a long outage (in which
/// the consumer may report no further errors) `/ready` goes from this reason to the
/// monitor's without turning ready in between.
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(40);

/// Run a worker for each of `projections` until `shutdown` flips to true.
pub async fn run(
    pool: PgPool,
    kafka: KafkaArgs,
    projections: Vec<&'static dyn Projection>,
    options: WorkerOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    for projection in projections {
        workers.spawn(run_one(
            pool.clone(),
            kafka.clone(),
            projection,
            options.clone(),
            shutdown.clone(),
        ));
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a projector worker panicked")??;
    }
    Ok(())
}

/// One projection's consumer loop.
pub async fn run_one(
    pool: PgPool,
    kafka: KafkaArgs,
    projection: &dyn Projection,
    options: WorkerOptions,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let group = options.group(projection);
    let topics: Vec<String> = projection
        .stream_types()
        .iter()
        .map(|stream_type| events_topic(&kafka.topic_prefix, stream_type))
        .collect();
    let mut consumer = subscribe(&kafka, &group, &topics).context("subscribing")?;
    let names = Topics {
        prefix: kafka.topic_prefix.clone(),
        stream_types: topics
            .iter()
            .cloned()
            .zip(projection.stream_types().iter().copied())
            .collect(),
    };
    let dead_letters: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .create()
        .context("creating the dead-letter producer")?;
    tracing::info!(%projection, %group, ?topics, "projector worker started");
    let mut backoff = Backoff::default();
    // When consuming or applying last failed: a worker whose topics are quiet (or whose
    // partitions moved to another instance) proves it works again only by a while without
    // errors.
    let mut failed_at: Option<tokio::time::Instant> = None;
    let mut assignment = AssignmentWatch::new(&group);
    while !*shutdown.borrow() {
        if assignment.must_rejoin(&consumer) {
            close(consumer).await;
            consumer = subscribe(&kafka, &group, &topics).context("subscribing again")?;
        }
        let batch = tokio::select! {
            batch = next_batch(&consumer, options.batch_size, Duration::from_millis(500), options.linger) => batch,
            _ = shutdown.changed() => break,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(%projection, %err, "consuming failed; retrying");
                options
                    .readiness
                    .problem(projection.name(), format!("consuming failed: {err}"));
                failed_at = Some(tokio::time::Instant::now());
                if backoff.wait(&mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        if batch.is_empty() {
            if failed_at.is_some_and(|at| at.elapsed() > QUIET_AFTER_FAILURE) {
                options.readiness.ok(projection.name());
                failed_at = None;
            }
            continue;
        }
        match handle(
            &pool,
            &consumer,
            &dead_letters,
            projection,
            &group,
            &names,
            &batch,
        )
        .await
        {
            Ok(()) => {
                backoff.reset();
                options.readiness.ok(projection.name());
                failed_at = None;
            }
            Err(err) => {
                options.readiness.problem(
                    projection.name(),
                    format!("applying a batch failed: {err:#}"),
                );
                failed_at = Some(tokio::time::Instant::now());
                // Nothing was committed. A fresh subscription starts again from the group's
                // committed offsets, whatever rebalance happened meanwhile.
                tracing::error!(%projection, error = %format!("{err:#}"), "a batch failed; retrying");
                close(consumer).await;
                if backoff.wait(&mut shutdown).await {
                    break;
                }
                consumer = subscribe(&kafka, &group, &topics).context("subscribing again")?;
            }
        }
    }
    tracing::info!(%projection, "projector worker stopped");
    Ok(())
}

/// The topic prefix, and the stream type each consumed topic carries.
struct Topics {
    prefix: String,
    stream_types: HashMap<String, &'static str>,
}

#[tracing::instrument(name = "apply", skip_all, fields(projection = %projection, records = batch.len()))]
async fn handle(
    pool: &PgPool,
    consumer: &GroupConsumer,
    dead_letters: &FutureProducer,
    projection: &dyn Projection,
    group: &str,
    topics: &Topics,
    batch: &[OwnedMessage],
) -> anyhow::Result<()> {
    // The batch's events, each with the record it came in.
    let mut events: Vec<StoredEvent> = Vec::with_capacity(batch.len());
    let mut messages: Vec<&OwnedMessage> = Vec::with_capacity(batch.len());
    for message in batch {
        match envelope::decode(message) {
            Ok(event) => {
                events.push(event);
                messages.push(message);
            }
            Err(err) => {
                tracing::warn!(topic = message.topic(), offset = message.offset(), %err, "dead-lettering a record that is not an event");
                dead_letter(dead_letters, message, group, &err.to_string())
                    .await
                    .context("dead-lettering")?;
            }
        }
    }
    let mut conn = BatchConnection {
        conn: pool
            .acquire()
            .await
            .context("starting the batch transaction")?,
        finished: false,
    };
    let transaction: anyhow::Result<Vec<StoredEvent>> = async {
        let mut tx = begin_batch(&mut conn.conn, projection)
            .await
            .context("starting the batch transaction")?;
        let Applied { rejected, foreign } = apply_records(&mut tx, projection, &events)
            .await
            .context("applying the batch")?;
        debug_assert_eq!(foreign.len(), events.len());
        // Sent inside the transaction, under the writers' lock (rare: records of another
        // environment, or forged).
        let mut kept = Vec::with_capacity(events.len());
        for ((event, message), foreign) in events.into_iter().zip(messages).zip(foreign) {
            if !foreign {
                kept.push((event, message));
                continue;
            }
            tracing::warn!(%projection, stream_id = %event.stream_id, version = event.version, "dead-lettering a record the event store does not hold");
            dead_letter(
                dead_letters,
                message,
                group,
                "the event store holds no such event",
            )
            .await
            .context("dead-lettering")?;
        }
        // A redelivered event is applied from its first record (the plan skips the later
        // ones), so a dead letter for it carries that record.
        let mut by_event: HashMap<(Uuid, i32), &OwnedMessage> = HashMap::new();
        for (event, message) in &kept {
            by_event
                .entry((event.stream_id, event.version))
                .or_insert(*message);
        }
        let events: Vec<StoredEvent> = kept.into_iter().map(|(event, _)| event).collect();
        projection
            .announce(&mut tx, &events)
            .await
            .context("announcing the batch's changes")?;
        record_progress(
            &mut tx,
            projection,
            &topics.stream_types,
            batch,
            &events,
            &by_event,
        )
        .await
        .context("recording the batch's progress")?;
        // Dead letters go out before the commit: if sending fails, the batch is retried and
        // nothing is lost (a dead letter may be sent twice).
        for rejection in &rejected {
            tracing::warn!(%projection, stream_id = %rejection.stream_id, version = rejection.version, error = %rejection.error, "dead-lettering an event that cannot be applied");
            match by_event.get(&(rejection.stream_id, rejection.version)) {
                Some(message) => dead_letter(dead_letters, message, group, &rejection.error)
                    .await
                    .context("dead-lettering")?,
                None => dead_letter_from_store(pool, dead_letters, &topics.prefix, rejection).await?,
            }
        }
        tx.commit().await.context("committing the batch")?;
        Ok(events)
    }
    .await;
    conn.finished = transaction.is_ok();
    drop(conn);
    let events = transaction?;
    commit(consumer, batch).context("committing offsets")?;
    for event in &events {
        tracing::debug!(
            event_id = %event.metadata.event_id,
            stream_id = %event.stream_id,
            version = event.version,
            correlation_id = %event.metadata.correlation_id,
            "applied"
        );
    }
    let name = projection.name();
    metrics::counter!("orderflow_projector_applied_total", "projection" => name)
        .increment(events.len() as u64);
    let latency =
        metrics::histogram!("orderflow_projection_apply_latency_seconds", "projection" => name);
    let now = chrono::Utc::now();
    for event in &events {
        latency.record(
            (now - event.recorded_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as f64
                / 1e6,
        );
    }
    Ok(())
}

/// A batch's connection, closed instead of going back to the pool unless the batch
/// finished: a failure (or a worker dropped while waiting) right after the `BEGIN` leaves it
/// inside a transaction that nothing rolls back (see [`begin_batch`]). Other failures are
/// rolled back, but a batch seldom fails, and a new connection is cheap next to a reused
/// broken one.
struct BatchConnection {
    conn: PoolConnection<Postgres>,
    finished: bool,
}

impl Drop for BatchConnection {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Record, in the batch's transaction, the offset past the last record consumed from each
/// (stream type, partition), dead letters and duplicates included, with the position of the
/// last event applied there: how far the view is, for readers waiting on a position.
async fn record_progress(
    tx: &mut sqlx::PgConnection,
    projection: &dyn Projection,
    stream_types: &HashMap<String, &'static str>,
    batch: &[OwnedMessage],
    events: &[StoredEvent],
    by_event: &HashMap<(Uuid, i32), &OwnedMessage>,
) -> Result<(), sqlx::Error> {
    // (stream type, partition) → (next offset, last position applied).
    let mut next: BTreeMap<(&str, i32), (i64, Option<i64>)> = BTreeMap::new();
    for message in batch {
        let Some(stream_type) = stream_types.get(message.topic()) else {
            continue;
        };
        let entry = next
            .entry((stream_type, message.partition()))
            .or_insert((0, None));
        entry.0 = entry.0.max(message.offset() + 1);
    }
    for event in events {
        if let Some(message) = by_event.get(&(event.stream_id, event.version)) {
            if let Some(entry) = next.get_mut(&(event.stream_type.as_str(), message.partition())) {
                entry.1 = entry.1.max(Some(event.position));
            }
        }
    }
    if next.is_empty() {
        return Ok(());
    }
    let (mut types, mut partitions, mut offsets, mut positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((stream_type, partition), (offset, position)) in &next {
        types.push(*stream_type);
        partitions.push(*partition);
        offsets.push(*offset);
        positions.push(*position);
    }
    // Only forward: an instance that lost the partition may still commit an older batch.
    // (Offsets belong to one lifetime of the topics: `orderflow dev`, whose in-process
    // broker keeps nothing, clears these rows at start.)
    sqlx::query(
        "insert into projection_progress (projection, stream_type, partition, next_offset, position) \
         select $1, * from unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) \
         on conflict (projection, stream_type, partition) do update \
         set next_offset = greatest(projection_progress.next_offset, excluded.next_offset), \
             position = greatest(excluded.position, projection_progress.position), \
             applied_at = now()",
    )
    .bind(projection.name())
    .bind(&types)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&positions)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A rejected event that was read from the store to fill a gap has no record of its own in
/// the batch: dead-letter a record built from the store.
async fn dead_letter_from_store(
    pool: &PgPool,
    producer: &FutureProducer,
    prefix: &str,
    rejection: &Rejected,
) -> anyhow::Result<()> {
    let event = orderflow_store::read_stream(pool, rejection.stream_id, rejection.version, 1)
        .await
        .context("reading a rejected event")?
        .into_iter()
        .next()
        .context("a rejected event vanished from the store")?;
    let topic = dead_letter_topic(&events_topic(prefix, &event.stream_type));
    let headers = envelope::headers(&event).insert(rdkafka::message::Header {
        key: orderflow_kafka::dlq::ERROR,
        value: Some(rejection.error.as_bytes()),
    });
    let key = event.stream_id.to_string();
    let payload = serde_json::to_vec(&event.payload).context("serializing a payload")?;
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(err, _)| err)
        .context("dead-lettering")?;
    Ok(())
}
