//! The lag monitor against a real Kafka-protocol broker (tansu in CI): offsets, lag in
//! records and seconds, and statuses, for a group whose commits the test controls.
//!
//! Records are produced one at a time: tansu's memory engine reports a high watermark one
//! past the *first* record of the last batch, so only single-record batches make the true
//! backlog what the broker says it is.

use std::time::{Duration, Instant};

use orderflow_kafka::lag::eval::Evaluator;
use orderflow_kafka::lag::{
    sample_once, EvalConfig, GroupLag, GroupSpec, LagReport, Sampler, Status,
};
use orderflow_kafka::testing::TestTopics;
use orderflow_kafka::topics::events_topic;
use orderflow_kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS names the test broker (scripts/test sets it)")
}

/// The monitor's parts, sampled by hand: 300 ms apart, a window of 3 (600 ms).
struct Monitor {
    kafka: KafkaArgs,
    groups: Vec<GroupSpec>,
    sampler: Option<Sampler>,
    evaluator: Evaluator,
}

impl Monitor {
    fn new(kafka: &KafkaArgs, group: &str, topic: &str) -> Self {
        Self {
            kafka: kafka.clone(),
            groups: vec![GroupSpec {
                group: group.to_owned(),
                topics: vec![topic.to_owned()],
            }],
            sampler: None,
            evaluator: Evaluator::new(EvalConfig::new(3, Duration::from_millis(300))),
        }
    }

    async fn sample(&mut self) -> LagReport {
        let report = sample_once(
            &mut self.sampler,
            &self.kafka,
            &self.groups,
            &[],
            &mut self.evaluator,
        )
        .await;
        assert!(report.up, "sampling failed: {:?}", report.error);
        report
    }

    /// Samples every 300 ms for `duration`; the last report.
    async fn sample_for(&mut self, duration: Duration) -> LagReport {
        let until = Instant::now() + duration;
        loop {
            let report = self.sample().await;
            if Instant::now() >= until {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn group<'a>(report: &'a LagReport, name: &str) -> &'a GroupLag {
    report
        .group(name)
        .unwrap_or_else(|| panic!("group {name} is reported: {report:#?}"))
}

async fn produce(kafka: &KafkaArgs, topic: &str, partition: i32, count: usize) {
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for i in 0..count {
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload("x"),
                Duration::from_secs(10),
            )
            .await
            .expect("record produced");
    }
}

/// Commit `offset` on `partition` for `group` without joining it, as a consumer that has
/// stopped would have left it.
fn commit(kafka: &KafkaArgs, group: &str, topic: &str, partition: i32, offset: i64) {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("offset");
    consumer.commit(&list, CommitMode::Sync).expect("commit");
}

#[tokio::test]
async fn lag_is_the_true_backlog_and_its_age_and_a_stopped_group_stops_then_drains_to_ok() {
    let topics = TestTopics::create(&brokers(), 2).await;
    let topic = events_topic(&topics.topic_prefix, "order");
    let name = format!("{}.lag-test", topics.topic_prefix);
    produce(&topics, &topic, 0, 3).await;
    commit(&topics, &name, &topic, 0, 3);
    let mut monitor = Monitor::new(&topics, &name, &topic);
    let report = monitor.sample().await;
    let g = group(&report, &name);
    assert_eq!((g.lag, g.lag_seconds, g.status), (0, 0.0, Status::Ok));

    // Five records arrive while the consumer is stopped.
    let produced_at = chrono::Utc::now();
    produce(&topics, &topic, 0, 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = monitor.sample().await;
    // The age of the first of them when the monitor read the offsets.
    let true_age = (report.sampled_at - produced_at).as_seconds_f64();
    let g = group(&report, &name);
    let p0 = &g.partitions[0];
    assert_eq!((p0.committed_offset, p0.lag), (Some(3), Some(5)));
    assert_eq!(g.lag, 5);
    assert!(!p0.lag_seconds_interpolated);
    let seconds = p0.lag_seconds.unwrap();
    assert!(
        (seconds - true_age).abs() <= 1.0,
        "lag seconds {seconds} against a true age of {true_age}"
    );

    // Records on a partition the group never committed on stay out of the totals.
    produce(&topics, &topic, 1, 4).await;
    let report = monitor.sample().await;
    let g = group(&report, &name);
    assert_eq!((g.lag, g.uncommitted_partitions), (5, 1));
    assert_eq!(g.partitions[1].lag, None);
    assert_eq!(g.partitions[1].log_end_offset, 4);

    // Nothing moves: past the window and `stop_after`, the group has stopped.
    let report = monitor.sample_for(Duration::from_millis(1500)).await;
    assert_eq!(group(&report, &name).status, Status::Stop, "{report:#?}");

    // The consumer comes back and catches up, on the partition it had never committed on
    // too (records waiting there without a commit also keep a group from being OK).
    commit(&topics, &name, &topic, 0, 8);
    commit(&topics, &name, &topic, 1, 4);
    let report = monitor.sample().await;
    let g = group(&report, &name);
    assert_eq!((g.lag, g.lag_seconds, g.status), (0, 0.0, Status::Ok));
    assert_eq!(g.drain_seconds, Some(0.0));

    // Someone resets it to an earlier offset.
    commit(&topics, &name, &topic, 0, 2);
    let report = monitor.sample().await;
    assert_eq!(group(&report, &name).status, Status::Rewind);
    assert_eq!(group(&report, &name).lag, 6);
}

#[tokio::test]
async fn a_burst_after_an_idle_spell_reads_seconds_not_the_idle_time() {
    let topics = TestTopics::create(&brokers(), 1).await;
    let topic = events_topic(&topics.topic_prefix, "order");
    let name = format!("{}.burst-test", topics.topic_prefix);
    produce(&topics, &topic, 0, 2).await;
    commit(&topics, &name, &topic, 0, 2);
    let mut monitor = Monitor::new(&topics, &name, &topic);

    // Caught up and idle for 3 s: OK, no lag, 0 s.
    let report = monitor.sample_for(Duration::from_secs(3)).await;
    let g = group(&report, &name);
    assert_eq!((g.status, g.lag, g.lag_seconds), (Status::Ok, 0, 0.0));

    produce(&topics, &topic, 0, 20).await;
    let report = monitor.sample().await;
    let g = group(&report, &name);
    assert_eq!(g.lag, 20);
    assert!(
        g.lag_seconds < 1.5,
        "a burst that just arrived reads {} s behind",
        g.lag_seconds
    );
}
