//! Reading one [`Observation`] from the broker. Blocking calls: run it on a blocking thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::eval::{GroupObservation, Observation, Partition, Peek, Watermarks};
use super::GroupSpec;
use crate::topics::{all_topics, events_topic, STREAM_TYPES};
use crate::KafkaArgs;

/// Longest wait for one broker request; a sample fails at the first error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest time spent reading first unconsumed records in one sample.
const PEEK_BUDGET: Duration = Duration::from_millis(1500);

pub struct Sampler {
    kafka: KafkaArgs,
    /// Reads metadata, watermarks and group lists; never joins a group.
    admin: BaseConsumer,
    /// Reads records by assignment to learn their timestamps; never commits.
    peeker: BaseConsumer,
    /// One per watched group: committed offsets are read through a consumer of that group
    /// id (which does not join the group unless it subscribes).
    groups: HashMap<String, BaseConsumer>,
    partitions: BTreeMap<String, Vec<i32>>,
    peeks: HashMap<(Partition, i64), Peek>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("brokers", &self.kafka.kafka_brokers)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    pub fn new(kafka: &KafkaArgs) -> KafkaResult<Self> {
        let admin = kafka
            .client_config()
            .set("group.id", "orderflow-lag-monitor")
            .set("enable.auto.commit", "false")
            .create()?;
        let peeker = kafka
            .client_config()
            .set("group.id", "orderflow-lag-monitor")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        Ok(Self {
            kafka: kafka.clone(),
            admin,
            peeker,
            groups: HashMap::new(),
            partitions: BTreeMap::new(),
            peeks: HashMap::new(),
        })
    }

    pub fn observe(&mut self, groups: &[GroupSpec], extra: &[String]) -> KafkaResult<Observation> {
        let topics = all_topics(&self.kafka.topic_prefix);
        let mut watermarks = BTreeMap::new();
        for topic in &topics {
            for partition in self.partitions_of(topic)? {
                let (start, end) =
                    self.admin
                        .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
                watermarks.insert((topic.clone(), partition), Watermarks { start, end });
            }
        }
        let at_ms = Utc::now().timestamp_millis();

        let event_topics: Vec<String> = STREAM_TYPES
            .iter()
            .map(|t| events_topic(&self.kafka.topic_prefix, t))
            .collect();
        let mut observed = BTreeMap::new();
        let extra_specs: Vec<GroupSpec> = extra
            .iter()
            .map(|name| GroupSpec {
                group: name.clone(),
                topics: event_topics.clone(),
            })
            .collect();
        for (spec, only_committed) in groups
            .iter()
            .map(|g| (g, false))
            .chain(extra_specs.iter().map(|g| (g, true)))
            .filter(|(g, extra)| !extra || !groups.iter().any(|own| own.group == g.group))
        {
            let mut group = GroupObservation {
                committed: self.committed(spec)?,
                members: self.members(&spec.group),
                expected: !only_committed,
            };
            if only_committed {
                // An extra group is watched only on the topics it has consumed.
                let consumed: BTreeSet<String> = group
                    .committed
                    .iter()
                    .filter(|(_, offset)| offset.is_some())
                    .map(|((topic, _), _)| topic.clone())
                    .collect();
                group
                    .committed
                    .retain(|(topic, _), _| consumed.contains(topic));
            }
            observed.insert(spec.group.clone(), group);
        }

        let peeks = self.peek(&watermarks, &observed);
        Ok(Observation {
            at_ms,
            watermarks,
            groups: observed,
            peeks,
        })
    }

    fn partitions_of(&mut self, topic: &str) -> KafkaResult<Vec<i32>> {
        if let Some(known) = self.partitions.get(topic) {
            return Ok(known.clone());
        }
        let metadata = self.admin.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        // A topic not created yet is looked up again next time.
        if !partitions.is_empty() {
            self.partitions.insert(topic.to_owned(), partitions.clone());
        }
        Ok(partitions)
    }

    fn committed(&mut self, spec: &GroupSpec) -> KafkaResult<BTreeMap<Partition, Option<i64>>> {
        let mut list = TopicPartitionList::new();
        for topic in &spec.topics {
            for partition in self.partitions_of(topic)? {
                list.add_partition(topic, partition);
            }
        }
        let consumer = match self.groups.get(&spec.group) {
            Some(consumer) => consumer,
            None => {
                let consumer: BaseConsumer = self
                    .kafka
                    .client_config()
                    .set("group.id", &spec.group)
                    .set("enable.auto.commit", "false")
                    .create()?;
                self.groups.entry(spec.group.clone()).or_insert(consumer)
            }
        };
        let committed = consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(offset) if offset >= 0 => Some(offset),
                    _ => None,
                };
                ((e.topic().to_owned(), e.partition()), offset)
            })
            .collect())
    }

    /// Members of `group`, when the broker answers the question.
    fn members(&self, group: &str) -> Option<usize> {
        match self.admin.fetch_group_list(Some(group), REQUEST_TIMEOUT) {
            Ok(list) => Some(
                list.groups()
                    .iter()
                    .filter(|g| g.name() == group)
                    .map(|g| g.members().len())
                    .sum(),
            ),
            Err(err) => {
                tracing::debug!(%group, %err, "cannot list the group's members");
                None
            }
        }
    }

    /// The first record at or after each lagging partition's commit, from the cache when
    /// the commit has not moved since the last sample.
    fn peek(
        &mut self,
        watermarks: &BTreeMap<Partition, Watermarks>,
        groups: &BTreeMap<String, GroupObservation>,
    ) -> HashMap<(Partition, i64), Peek> {
        let mut wanted: BTreeSet<(Partition, i64)> = BTreeSet::new();
        for group in groups.values() {
            for (partition, committed) in &group.committed {
                let (Some(committed), Some(marks)) = (committed, watermarks.get(partition)) else {
                    continue;
                };
                let from = (*committed).max(marks.start);
                if from < marks.end {
                    wanted.insert((partition.clone(), from));
                }
            }
        }
        let mut found: HashMap<(Partition, i64), Peek> = HashMap::new();
        let mut missing: Vec<(Partition, i64)> = Vec::new();
        for key in wanted {
            match self.peeks.get(&key) {
                Some(peek) => {
                    found.insert(key, *peek);
                }
                None => missing.push(key),
            }
        }
        let deadline = Instant::now() + PEEK_BUDGET;
        // One assignment holds a partition once, and end-of-partition events name only the
        // partition number: read one topic, and one offset per partition, at a time.
        while !missing.is_empty() && Instant::now() < deadline {
            let topic = missing[0].0 .0.clone();
            let mut round: BTreeMap<i32, i64> = BTreeMap::new();
            missing.retain(|((t, partition), from)| {
                if *t == topic && !round.contains_key(partition) {
                    round.insert(*partition, *from);
                    false
                } else {
                    true
                }
            });
            match self.read_round(&topic, &round, deadline) {
                Ok(results) => {
                    for (partition, peek) in results {
                        found.insert(((topic.clone(), partition), round[&partition]), peek);
                    }
                }
                Err(err) => tracing::debug!(%topic, %err, "cannot read first unconsumed records"),
            }
        }
        self.peeks = found.clone();
        found
    }

    fn read_round(
        &self,
        topic: &str,
        round: &BTreeMap<i32, i64>,
        deadline: Instant,
    ) -> KafkaResult<Vec<(i32, Peek)>> {
        let mut list = TopicPartitionList::new();
        for (partition, from) in round {
            list.add_partition_offset(topic, *partition, Offset::Offset(*from))?;
        }
        self.peeker.assign(&list)?;
        let mut results: BTreeMap<i32, Peek> = BTreeMap::new();
        while results.len() < round.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.peeker.poll(left.min(Duration::from_millis(100))) {
                None => {}
                Some(Ok(message)) => {
                    let partition = message.partition();
                    if message.offset() >= round.get(&partition).copied().unwrap_or(i64::MAX) {
                        if let Some(timestamp_ms) = message.timestamp().to_millis() {
                            results.entry(partition).or_insert(Peek::Record {
                                offset: message.offset(),
                                timestamp_ms,
                            });
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    results.entry(partition).or_insert(Peek::NothingBeforeEnd);
                }
                Some(Err(err)) => {
                    self.peeker.unassign()?;
                    return Err(err);
                }
            }
        }
        self.peeker.unassign()?;
        Ok(results.into_iter().collect())
    }
}
