//! At-least-once consumption: records are handed out in batches and their offsets are
//! committed only when the caller says the batch's effects are durable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use futures::FutureExt as _;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

use crate::KafkaArgs;

/// The most records the relay puts in one producer batch (its `batch.num.messages`), and so
/// how far back from its group's committed offset a member fetches on a partition it is
/// assigned (see [`Rewind`]).
pub const MAX_BATCH_RECORDS: i64 = 1000;

/// How long an assignment waits for the group's committed offsets before starting from them
/// without the rewind.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

/// A member of a consumer group, as [`subscribe`] makes it.
pub type GroupConsumer = StreamConsumer<Rewind>;

/// Fetches each assigned partition from up to [`MAX_BATCH_RECORDS`] before the group's
/// committed offset, and hands out only the records from that offset on.
///
/// Offsets are committed per record, so a commit can fall inside a producer batch. A Kafka
/// broker answers a fetch from there with the whole batch, and the client drops the records
/// before the offset. tansu 0.6.0 (its object-store engines, the memory one included)
/// answers with the batches that *start* at the offset or later: the rest of the batch is
/// skipped, and when that batch is the partition's last, its high watermark (one past the
/// batch's first record) says nothing is left, so the records wait, unseen by the lag
/// monitor, until another batch arrives, and are then skipped. Fetching from before the
/// batch's first record gets them from either broker; the records before the committed
/// offset are dropped here, as a Kafka client drops them, so nothing is handled twice and
/// commits never move back.
#[derive(Debug, Default)]
pub struct Rewind {
    /// Per assigned (topic, partition) not yet caught up: the group's committed offset at
    /// assignment, below which fetched records are dropped.
    floors: Mutex<HashMap<(String, i32), i64>>,
}

impl Rewind {
    /// Whether `message` is at or past its partition's committed offset at assignment. A
    /// partition's floor goes once a record reaches it (the ones after come in order), so
    /// once every partition has caught up this costs a lock and nothing more.
    fn wanted<M: Message>(&self, message: &M) -> bool {
        let mut floors = self.floors();
        if floors.is_empty() {
            return true;
        }
        let key = (message.topic().to_owned(), message.partition());
        match floors.get(&key) {
            Some(&floor) if message.offset() < floor => false,
            Some(_) => {
                floors.remove(&key);
                true
            }
            None => true,
        }
    }

    fn floors(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), i64>> {
        self.floors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets each partition of `assignment` to start [`MAX_BATCH_RECORDS`] before the
    /// group's committed offset (not before 0), which becomes its floor; partitions without
    /// one keep `auto.offset.reset`. (A committed offset past the log's end, left by a topic
    /// deleted and created again, still becomes a floor: records below it are dropped where
    /// a Kafka client would reset to the earliest. Delete the group's offsets with the
    /// topic.) This reads the offsets from the group coordinator: one
    /// round trip, on the thread polling the consumer.
    fn rewind(&self, consumer: &BaseConsumer<Self>, assignment: &mut TopicPartitionList) {
        let committed = match consumer.committed_offsets(assignment.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => committed,
            // The consumer is being closed: nothing will be fetched.
            Err(err) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::BrokerDestroy) => {
                return;
            }
            Err(err) => {
                metrics::counter!("orderflow_consumer_unrewound_assignments_total").increment(1);
                tracing::warn!(%err, "reading the group's committed offsets failed: fetching from them without rewinding (on tansu the rest of a batch a commit falls inside can then be skipped)");
                return;
            }
        };
        let mut floors = self.floors();
        for element in committed.elements() {
            let key = (element.topic().to_owned(), element.partition());
            let Offset::Offset(offset) = element.offset() else {
                floors.remove(&key);
                continue;
            };
            let from = Offset::Offset((offset - MAX_BATCH_RECORDS).max(0));
            match assignment.set_partition_offset(element.topic(), element.partition(), from) {
                Ok(()) => {
                    floors.insert(key, offset);
                }
                Err(err) => {
                    tracing::warn!(%err, topic = element.topic(), partition = element.partition(), "rewinding a partition failed");
                }
            }
        }
    }
}

impl ClientContext for Rewind {}

impl ConsumerContext for Rewind {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if !cooperative {
                    self.floors().clear();
                }
                self.rewind(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if cooperative => {
                let mut floors = self.floors();
                for element in tpl.elements() {
                    floors.remove(&(element.topic().to_owned(), element.partition()));
                }
                drop(floors);
                consumer.incremental_unassign(tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.floors().clear();
                consumer.unassign()
            }
            other => {
                tracing::warn!(error = ?other, "a rebalance failed; holding no partitions until the next");
                self.floors().clear();
                consumer.unassign()
            }
        };
        if let Err(err) = outcome {
            tracing::error!(%err, "applying a rebalance failed");
        }
    }
}

/// A consumer in `group` subscribed to `topics`, committing offsets only by hand.
pub fn subscribe(
    args: &KafkaArgs,
    group: &str,
    topics: &[String],
) -> Result<GroupConsumer, KafkaError> {
    let consumer: GroupConsumer = args
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", args.kafka_fetch_wait_ms.to_string())
        .create_with_context(Rewind::default())?;
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
    consumer: &GroupConsumer,
    max: usize,
    idle: Duration,
    linger: Duration,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let rewind = consumer.context();
    let mut batch = Vec::new();
    let idle_until = tokio::time::Instant::now() + idle;
    // The first record handed out (records below their partition's floor are dropped), and
    // whether it was already waiting.
    let busy = loop {
        let (next, waiting) = match consumer.recv().now_or_never() {
            Some(next) => (next, true),
            None => match tokio::time::timeout_at(idle_until, consumer.recv()).await {
                Err(_) => return Ok(batch),
                Ok(next) => (next, false),
            },
        };
        let message = match next {
            Ok(message) => message,
            Err(err) => past_errors(consumer, err)?,
        };
        if rewind.wanted(&message) {
            batch.push(message.detach());
            break waiting;
        }
    };
    let lingering = busy && !linger.is_zero();
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        // Without a linger only what is already fetched is taken: a timer, even one already
        // due, would wait for the next tick of tokio's clock (up to a millisecond).
        let next = if lingering {
            // A future polled once before its deadline: what is already fetched is taken
            // even with no time left.
            tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .ok()
        } else {
            consumer.recv().now_or_never()
        };
        match next {
            None => break,
            Some(Ok(message)) => {
                if rewind.wanted(&message) {
                    batch.push(message.detach());
                }
            }
            // What was gathered is handed over (its offsets get committed with it); the
            // error, taken off the queue, is only logged: librdkafka reports and retries.
            Some(Err(err)) => {
                tracing::warn!(%err, "consuming failed mid-batch; handing over what arrived");
                break;
            }
        }
    }
    Ok(batch)
}

/// Takes every error already queued behind `first` at once: librdkafka queues one for each
/// failed reconnection (a broker refusing for a minute leaves dozens), and a caller that
/// backs off once per error would still be working through them long after the broker came
/// back. The last error, or the record that followed them (consumption works again: the
/// errors are only logged).
fn past_errors(
    consumer: &GroupConsumer,
    first: KafkaError,
) -> Result<BorrowedMessage<'_>, KafkaError> {
    let mut last = first;
    let mut more = 0_u32;
    // A rebalance or commit event in the queue is served by the poll, which then answers
    // "nothing yet" although more may wait behind it: look again a few times.
    let mut empty = 0_u32;
    loop {
        match consumer.recv().now_or_never() {
            None if empty < 3 => empty += 1,
            Some(Err(err)) => {
                last = err;
                more += 1;
                empty = 0;
            }
            Some(Ok(message)) => {
                tracing::warn!(err = %last, more, "consuming failed, then recovered");
                return Ok(message);
            }
            None => {
                if more > 0 {
                    tracing::debug!(more, "earlier queued consumer errors taken with this one");
                }
                return Err(last);
            }
        }
    }
}

/// Commit the offsets just past every record in `batch`, without blocking the thread: a
/// commit that fails is repaired by the next one, and until then the records are at most
/// delivered again, which consumers dedupe.
pub fn commit(consumer: &GroupConsumer, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
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

/// How long a fault must last before a member leaves its group and joins again; it doubles
/// at each rejoin that does not cure it, up to [`REJOIN_AFTER_MAX`], plus up to
/// [`REJOIN_JITTER`] so members of one group do not all rejoin at once.
///
/// tansu 0.6.0's group coordinator can end a rebalance with partitions assigned to no live
/// member: when the leader died without leaving (`kill -9`) and a new member joins before
/// the dead one's session expires, the expiry is noticed in a follower's SyncGroup, which
/// then completes the group with that follower's empty assignment list, or with the dead
/// member's partitions still assigned to it. The group then looks stable for ever while
/// those partitions are consumed by nobody. Leaving and joining again lets the coordinator
/// elect a live leader, which assigns every partition. A real Kafka does not do this.
const REJOIN_AFTER: Duration = Duration::from_secs(30);
const REJOIN_AFTER_MAX: Duration = Duration::from_secs(600);
const REJOIN_JITTER: Duration = Duration::from_secs(5);

/// The lag monitor of this process, when it runs one (see [`watch_stalls_with`]).
static LAG_MONITOR: std::sync::OnceLock<crate::lag::LagMonitor> = std::sync::OnceLock::new();

/// Lets every [`AssignmentWatch`] of this process judge its group by `monitor`'s reports
/// (the first call wins). With a monitor, a member rejoins when, for [`REJOIN_AFTER`], the
/// monitor can read the broker and reports partitions of the member's group as STALL
/// (members present, lag not shrinking), none of them the member's own: partitions nobody
/// live consumes. When its own partitions stall as well, the cause is shared (a database
/// outage, a replay's lock), which a rejoin cannot cure. Without a monitor, a member that
/// holds no partition at all for that long rejoins (with more members than partitions,
/// an idle member then rejoins now and then).
pub fn watch_stalls_with(monitor: crate::lag::LagMonitor) {
    let _ = LAG_MONITOR.set(monitor);
}

/// Watches a group member: its partitions, as the
/// `orderflow_consumer_assigned_partitions{group}` gauge, and whether partitions of its
/// group are left to nobody (see [`watch_stalls_with`]); each rejoin it asks for counts in
/// `orderflow_consumer_rejoins_total{group}`.
#[derive(Debug)]
pub struct AssignmentWatch {
    group: String,
    /// `None` until the first look, which is at once.
    checked_at: Option<Instant>,
    faulty_since: Option<Instant>,
    limit: Duration,
}

impl AssignmentWatch {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            checked_at: None,
            faulty_since: None,
            limit: REJOIN_AFTER + jitter(group),
        }
    }

    /// Whether the member should leave its group and join again (drop the consumer, off
    /// the async threads, and subscribe anew): checked every few seconds.
    pub fn must_rejoin(&mut self, consumer: &GroupConsumer) -> bool {
        let now = Instant::now();
        if self
            .checked_at
            .is_some_and(|at| now - at < ASSIGNMENT_CHECK_EVERY)
        {
            return false;
        }
        self.checked_at = Some(now);
        let Ok(assignment) = consumer.assignment() else {
            return false;
        };
        let mine: std::collections::HashSet<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|element| (element.topic().to_owned(), element.partition()))
            .collect();
        metrics::gauge!("orderflow_consumer_assigned_partitions", "group" => self.group.clone())
            .set(mine.len() as f64);
        let fault = match LAG_MONITOR.get() {
            Some(monitor) => {
                let report = monitor.latest();
                let stalled: Vec<bool> = report
                    .group(&self.group)
                    .filter(|_| report.up)
                    .map(|group| {
                        group
                            .partitions
                            .iter()
                            .filter(|p| p.status == crate::lag::eval::Status::Stall)
                            .map(|p| mine.contains(&(p.topic.clone(), p.partition)))
                            .collect()
                    })
                    .unwrap_or_default();
                // When this member's own partitions stall too, the cause is shared (the
                // database, a replay's lock) and a rejoin cures nothing.
                let orphans = if stalled.iter().any(|&own| own) {
                    0
                } else {
                    stalled.len()
                };
                (orphans > 0)
                    .then(|| format!("{orphans} partitions of its group are STALL and not its own"))
            }
            None => mine
                .is_empty()
                .then(|| "it has held no partition of its group".to_owned()),
        };
        let Some(fault) = fault else {
            self.faulty_since = None;
            self.limit = REJOIN_AFTER + jitter(&self.group);
            return false;
        };
        let since = *self.faulty_since.get_or_insert(now);
        if now - since < self.limit {
            return false;
        }
        tracing::warn!(
            group = %self.group,
            assigned = mine.len(),
            seconds = (now - since).as_secs(),
            "{fault} for a while: leaving the group and joining again (a coordinator can end a \
             rebalance with partitions assigned to no live member after a member died)"
        );
        metrics::counter!("orderflow_consumer_rejoins_total", "group" => self.group.clone())
            .increment(1);
        self.faulty_since = None;
        self.limit = (self.limit * 2).min(REJOIN_AFTER_MAX) + jitter(&self.group);
        true
    }
}

/// Up to [`REJOIN_JITTER`], different per process and group.
fn jitter(group: &str) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(group.as_bytes());
    Duration::from_millis(hasher.finish() % REJOIN_JITTER.as_millis() as u64)
}

/// Closes a consumer (it leaves its group) off the async threads, since that blocks, and
/// returns once it has: a new member joining next to a departing one costs a rebalance.
pub async fn close(consumer: GroupConsumer) {
    if let Err(err) = tokio::task::spawn_blocking(move || drop(consumer)).await {
        tracing::warn!(%err, "closing a consumer failed");
    }
}
