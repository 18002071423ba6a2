//! At-least-once consumption: records are handed out in batches and their offsets are
//! committed only when the caller says the batch's effects are durable.

use std::collections::HashMap;
use std::time::Duration;

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
