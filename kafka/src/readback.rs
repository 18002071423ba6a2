//! Reading an events topic back from the beginning, partition by partition, up to the end
//! it had when the read began: what `orderflow verify` compares with the event store.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::envelope::{decode, EnvelopeError};
use crate::topics::partition_ids;
use crate::KafkaArgs;
use orderflow_store::StoredEvent;

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the read may go without a record while some partition is short of its end.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a partition read past its reported end must stay quiet to count as read.
const PAST_END_QUIET: Duration = Duration::from_millis(300);

/// The partition a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub id: i32,
    /// Retention deleted the partition's first records (its log starts past 0).
    pub trimmed: bool,
}

/// What the read covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRead {
    pub partitions: usize,
    /// Records read.
    pub records: u64,
    /// Records before the low watermarks (deleted by retention), which could not be read.
    pub deleted: u64,
    /// Of `records`, those at or past the high watermark the broker reported.
    pub past_end: u64,
}

/// Reads every record of `topic` from its first offset to the end of each partition (the
/// high watermark it had when the read began, or further while records keep coming), in
/// partition order, and hands each to `record` with its
/// partition: decoded, or why not.
///
/// Blocking (librdkafka's own thread does the network work): run it on a blocking thread.
pub fn read_topic(
    kafka: &KafkaArgs,
    topic: &str,
    mut record: impl FnMut(Partition, Result<StoredEvent, EnvelopeError>),
) -> KafkaResult<TopicRead> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "orderflow-verify")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let partitions = partition_ids(&consumer, topic, REQUEST_TIMEOUT)?;
    let mut read = TopicRead {
        partitions: partitions.len(),
        ..TopicRead::default()
    };
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        read.deleted += u64::try_from(low).unwrap_or(0);
        let from = Partition {
            id: partition,
            trimmed: low > 0,
        };
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        let mut last_progress = Instant::now();
        let mut next = low;
        // Past the high watermark, read on until the partition stays quiet: a broker may
        // report an end below records it acknowledged (tansu 0.6.0 does, after bursts of
        // concurrent produce requests), and those records are delivered all the same.
        while next < high || last_progress.elapsed() < PAST_END_QUIET {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    if message.offset() < next {
                        continue;
                    }
                    next = message.offset() + 1;
                    read.records += 1;
                    if message.offset() >= high {
                        read.past_end += 1;
                    }
                    record(from, decode(&message));
                }
                Some(Err(err)) => return Err(err),
                None if next < high && last_progress.elapsed() > STALL_TIMEOUT => {
                    return Err(KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                    ));
                }
                None => {}
            }
        }
    }
    Ok(read)
}
