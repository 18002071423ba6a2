//! Topic names: `<prefix>.<stream type>.events`, keyed by stream id, and their dead letters.

use std::time::Duration;

use orderflow_domain::order::Order;
use orderflow_domain::payment::Payment;
use orderflow_domain::product::Product;
use orderflow_domain::saga::Saga;
use orderflow_domain::user::User;
use orderflow_domain::Aggregate;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaArgs;

/// Every stream type the platform writes; each has a topic.
pub const STREAM_TYPES: [&str; 5] = [
    Order::STREAM_TYPE,
    User::STREAM_TYPE,
    Product::STREAM_TYPE,
    Payment::STREAM_TYPE,
    Saga::STREAM_TYPE,
];

pub fn events_topic(prefix: &str, stream_type: &str) -> String {
    format!("{prefix}.{stream_type}.events")
}

/// Where records that a consumer of `topic` cannot handle go.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Every topic the platform uses: each events topic and its dead letters.
pub fn all_topics(prefix: &str) -> Vec<String> {
    STREAM_TYPES
        .iter()
        .flat_map(|stream_type| {
            let topic = events_topic(prefix, stream_type);
            [dead_letter_topic(&topic), topic]
        })
        .collect()
}

/// The partition ids of `topic` as the broker's metadata lists them; none for a topic it
/// does not know (yet).
pub fn partition_ids(
    client: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<i32>> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) => match t.error() {
            Some(code) => Err(KafkaError::MetadataFetch(code.into())),
            None => Ok(t.partitions().iter().map(|p| p.id()).collect()),
        },
        None => Ok(Vec::new()),
    }
}

/// Create every topic of [`all_topics`] that does not exist yet.
pub async fn ensure_topics(args: &KafkaArgs) -> Result<Vec<String>, rdkafka::error::KafkaError> {
    let names = all_topics(&args.topic_prefix);
    let admin: AdminClient<DefaultClientContext> = args.client_config().create()?;
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                args.topic_partitions,
                TopicReplication::Fixed(args.topic_replication),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(%topic, ?code, "cannot create topic");
                })
            }
        }
    }
    Ok(names)
}
