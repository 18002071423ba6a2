//! Kafka helpers for tests against a real Kafka-protocol broker (tansu, started by
//! `scripts/test`): a topic prefix per test and a reader of everything published.

use std::collections::BTreeMap;
use std::time::Duration;

use orderflow_kafka::testing::TestTopics;
use orderflow_kafka::topics::{events_topic, STREAM_TYPES};
use orderflow_kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS must point at a Kafka-protocol broker (scripts/test starts tansu)")
}

/// Fresh topics for one test, deleted when it ends.
pub async fn fresh_topics(brokers: &str) -> TestTopics {
    TestTopics::create(brokers, 3).await
}

/// Every record on the events topics, as (stream id, version) in arrival order per stream.
pub struct Published {
    pub per_stream: BTreeMap<Uuid, Vec<i32>>,
    pub records: usize,
}

impl Published {
    /// Distinct (stream, version) pairs seen.
    pub fn distinct(&self) -> usize {
        self.per_stream
            .values()
            .map(|versions| {
                let mut v = versions.clone();
                v.sort_unstable();
                v.dedup();
                v.len()
            })
            .sum()
    }
}

/// Read the events topics from the beginning until `done` holds or `timeout` passes.
pub fn read_published(
    args: &KafkaArgs,
    timeout: Duration,
    done: impl Fn(&Published) -> bool,
) -> Published {
    let consumer: BaseConsumer = args
        .client_config()
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for stream_type in STREAM_TYPES {
        let topic = events_topic(&args.topic_prefix, stream_type);
        for partition in 0..args.topic_partitions {
            assignment
                .add_partition_offset(&topic, partition, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut published = Published {
        per_stream: BTreeMap::new(),
        records: 0,
    };
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline && !done(&published) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("readable record");
        let event = orderflow_kafka::decode(&message).expect("our envelope");
        assert_eq!(
            message.key(),
            Some(event.stream_id.to_string().as_bytes()),
            "key = stream id"
        );
        published
            .per_stream
            .entry(event.stream_id)
            .or_default()
            .push(event.version);
        published.records += 1;
    }
    published
}

/// Each stream's versions arrived in order: 1, 2, 3, ... with repeats allowed only as a
/// replay of an earlier run (a version never arrives before its predecessor first did).
pub fn assert_in_version_order(published: &Published, expected: &BTreeMap<Uuid, i32>) {
    for (stream, last) in expected {
        let versions = published
            .per_stream
            .get(stream)
            .unwrap_or_else(|| panic!("nothing published for stream {stream}"));
        let mut highest = 0;
        for v in versions {
            assert!(
                *v <= highest + 1,
                "stream {stream}: version {v} arrived before {}: {versions:?}",
                highest + 1
            );
            highest = highest.max(*v);
        }
        assert_eq!(highest, *last, "stream {stream} incomplete: {versions:?}");
    }
}

/// A tansu broker of a test's own, for tests that stop and restart the broker.
pub struct PrivateBroker {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("orderflow-tansu-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Self {
            dir,
            port,
            child: None,
        };
        broker.restart().await;
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and storage.
    pub async fn restart(&mut self) {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(bin)
            .current_dir(&self.dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu starts (set TANSU_BIN)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tansu did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
