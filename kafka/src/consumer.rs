//! At-least-once consumption: records are handed out in batches and their offsets are
//! committed only when the caller says the batch's effects are durable.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use futures::FutureExt as _;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::KafkaArgs;

/// A consumer in `group` subscribed to `topics`, committing offsets only by hand.
pub fn subscribe(
    args: &KafkaArgs,
    group: &str,
    topics: &[String],
) -> Result<StreamConsumer, KafkaError> {
    let consumer: StreamConsumer = args
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", args.kafka_fetch_wait_ms.to_string())
        .create()?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Wait for the first record, then take what is already fetched, up to `max`. When the
/// first record was already waiting (records arrive faster than batches are applied), also
/// take whatever else arrives within `linger`: a busy consumer applies fewer, larger
/// batches, while on an idle system each record is handed over at once. An empty batch
/// means nothing arrived within `idle`.
pub async fn next_batch(
    consumer: &StreamConsumer,
    max: usize,
    idle: Duration,
    linger: Duration,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let mut batch = Vec::new();
    let busy = match consumer.recv().now_or_never() {
        Some(message) => {
            batch.push(message?.detach());
            true
        }
        None => match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => return Ok(batch),
            Ok(message) => {
                batch.push(message?.detach());
                false
            }
        },
    };
    let deadline = tokio::time::Instant::now() + if busy { linger } else { Duration::ZERO };
    while batch.len() < max {
        // A future polled once before its deadline: what is already fetched is taken even
        // with no time left.
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Ok(message)) => batch.push(message.detach()),
            // The fetch position is already past what was gathered: hand it over (its
            // offsets get committed with it) and let the next call surface the error.
            Ok(Err(err)) => {
                tracing::warn!(%err, "consuming failed mid-batch; handing over what arrived");
                break;
            }
        }
    }
    Ok(batch)
}

/// Commit the offsets just past every record in `batch`, without blocking the thread: a
/// commit that fails is repaired by the next one, and until then the records are at most
/// delivered again, which consumers dedupe.
pub fn commit(consumer: &StreamConsumer, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for message in batch {
        let entry = next
            .entry((message.topic(), message.partition()))
            .or_insert(0);
        *entry = (*entry).max(message.offset() + 1);
    }
    if next.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&list, CommitMode::Async)
}

/// How often [`AssignmentWatch`] looks at how many partitions its consumer holds.
const ASSIGNMENT_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a consumer holds no partition before it leaves its group and joins again; it
/// doubles at each rejoin that does not help, up to [`UNASSIGNED_LIMIT_MAX`].
///
/// tansu 0.6.0's group coordinator can end a rebalance with no assignment for anyone: when
/// the leader died without leaving (`kill -9`) and a new member joins before the dead one's
/// session expires, the expiry is noticed in a follower's SyncGroup, which then completes
/// the group with that follower's empty assignment list. The consumer then sits idle in a
/// "stable" group for ever. Leaving and joining again lets the coordinator elect a live
/// leader, which assigns every partition. A real Kafka never does this; with more members
/// than partitions an idle member rejoins now and then, which costs its group a short
/// rebalance.
const UNASSIGNED_LIMIT: Duration = Duration::from_secs(30);
const UNASSIGNED_LIMIT_MAX: Duration = Duration::from_secs(600);

/// The lag monitor of this process, when it runs one (see [`watch_stalls_with`]).
static LAG_MONITOR: std::sync::OnceLock<crate::lag::LagMonitor> = std::sync::OnceLock::new();

/// Lets every [`AssignmentWatch`] of this process read `monitor`'s reports: a member of a
/// group the monitor reports as STALL (members present, lag not shrinking for its window)
/// leaves and joins again, as one holding no partition does. That covers the other shape
/// of the coordinator fault described at [`UNASSIGNED_LIMIT`]: partitions left assigned to
/// a member that died, while the live members hold the rest. The first call wins.
pub fn watch_stalls_with(monitor: crate::lag::LagMonitor) {
    let _ = LAG_MONITOR.set(monitor);
}

/// Watches the partitions a group member holds, as the
/// `orderflow_consumer_assigned_partitions{group}` gauge, and says when it has held none
/// for too long (see [`UNASSIGNED_LIMIT`]), or its group has been STALL for as long (see
/// [`watch_stalls_with`]); each such rejoin counts in
/// `orderflow_consumer_rejoins_total{group}`.
#[derive(Debug)]
pub struct AssignmentWatch {
    group: String,
    checked_at: Instant,
    empty_since: Option<Instant>,
    limit: Duration,
}

impl AssignmentWatch {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            checked_at: Instant::now(),
            empty_since: None,
            limit: UNASSIGNED_LIMIT,
        }
    }

    /// Whether the member should leave its group and join again (drop the consumer and
    /// subscribe anew): checked every few seconds, true once it has held no partition for
    /// the limit.
    pub fn must_rejoin(&mut self, consumer: &StreamConsumer) -> bool {
        let now = Instant::now();
        if now - self.checked_at < ASSIGNMENT_CHECK_EVERY {
            return false;
        }
        self.checked_at = now;
        let Ok(assigned) = consumer.assignment().map(|list| list.count()) else {
            return false;
        };
        metrics::gauge!("orderflow_consumer_assigned_partitions", "group" => self.group.clone())
            .set(assigned as f64);
        let stalled = LAG_MONITOR.get().is_some_and(|monitor| {
            monitor
                .latest()
                .group(&self.group)
                .is_some_and(|group| group.status == crate::lag::eval::Status::Stall)
        });
        if assigned > 0 && !stalled {
            self.empty_since = None;
            self.limit = UNASSIGNED_LIMIT;
            return false;
        }
        let since = *self.empty_since.get_or_insert(now);
        if now - since < self.limit {
            return false;
        }
        let why = if assigned == 0 {
            "this member has held no partition of its group"
        } else {
            "the lag monitor has reported this member's group as STALL"
        };
        tracing::warn!(
            group = %self.group,
            assigned,
            seconds = (now - since).as_secs(),
            "{why} for a while: leaving the group and joining again (a coordinator can end a \
             rebalance with partitions assigned to no live member after a member died)"
        );
        metrics::counter!("orderflow_consumer_rejoins_total", "group" => self.group.clone())
            .increment(1);
        self.empty_since = None;
        self.limit = (self.limit * 2).min(UNASSIGNED_LIMIT_MAX);
        true
    }
}
