//! Group consumption against a real Kafka-protocol broker (tansu in CI).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use orderflow_kafka::consumer::{close, next_batch, subscribe};
use orderflow_kafka::testing::TestTopics;
use orderflow_kafka::topics::events_topic;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS names the test broker (scripts/test sets it)")
}

/// A member that resumes from a committed offset inside a producer batch gets that batch's
/// remaining records. (tansu's memory engine answers a fetch from offset X with the batches
/// that *start* at X or later, skipping the rest of the batch X is in; and when that batch
/// is the last, it reports no lag, so the records would wait unseen until another arrived.)
#[tokio::test]
async fn a_member_resuming_inside_a_producer_batch_gets_the_rest_of_it() {
    let topics = TestTopics::create(&brokers(), 1).await;
    let topic = events_topic(&topics.topic_prefix, "order");
    let group = format!("{}.resume-test", topics.topic_prefix);

    // Ten records in one batch: sent together, lingering long enough to travel as one.
    let producer: FutureProducer = topics
        .client_config()
        .set("linger.ms", "200")
        .create()
        .expect("producer");
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let offsets = join_all(keys.iter().map(|key| {
        producer.send(
            FutureRecord::to(&topic).partition(0).key(key).payload("x"),
            Duration::from_secs(10),
        )
    }))
    .await;
    let offsets: Vec<i64> = offsets
        .into_iter()
        .map(|sent| sent.expect("record produced").offset)
        .collect();
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());

    // The group stopped after the sixth record.
    let committer: BaseConsumer = topics
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&topic, 0, Offset::Offset(6))
        .expect("offset");
    committer.commit(&list, CommitMode::Sync).expect("commit");
    drop(committer);

    let consumer = subscribe(&topics, &group, std::slice::from_ref(&topic)).expect("subscribed");
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(6..10).all(|offset| seen.contains(&offset)) && Instant::now() < deadline {
        let batch = next_batch(&consumer, 100, Duration::from_millis(500), Duration::ZERO)
            .await
            .expect("consumed");
        seen.extend(batch.iter().map(|message| message.offset()));
    }
    close(consumer).await;
    assert!(
        (6..10).all(|offset| seen.contains(&offset)),
        "records 6 to 9 were delivered: {seen:?}"
    );
    // The rewind fetches from before the commit; what lies before it is not handed out again.
    assert_eq!(seen, (6..10).collect::<BTreeSet<i64>>());
}
