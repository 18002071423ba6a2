//! Dead letters: a record a consumer cannot handle is copied, key, payload and headers, to
//! `<topic>.dlq` with headers saying where it came from and why, and the consumer goes on.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::topics::dead_letter_topic;

pub const ERROR: &str = "dlq_error";
pub const ORIGINAL_TOPIC: &str = "dlq_original_topic";
pub const ORIGINAL_PARTITION: &str = "dlq_original_partition";
pub const ORIGINAL_OFFSET: &str = "dlq_original_offset";
pub const CONSUMER_GROUP: &str = "dlq_consumer_group";

pub async fn dead_letter(
    producer: &FutureProducer,
    message: &OwnedMessage,
    group: &str,
    error: &str,
) -> Result<(), KafkaError> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(header);
        }
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    for (key, value) in [
        (ERROR, error),
        (ORIGINAL_TOPIC, message.topic()),
        (ORIGINAL_PARTITION, partition.as_str()),
        (ORIGINAL_OFFSET, offset.as_str()),
        (CONSUMER_GROUP, group),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let topic = dead_letter_topic(message.topic());
    let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map(|_| ())
        .map_err(|(err, _)| err)
}
