//! Reading one [`Observation`] from the broker. Blocking calls: run it on a blocking thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::eval::{GroupObservation, Observation, Partition, Peek, Watermarks};
use super::GroupSpec;
use crate::topics::all_topics;
use crate::KafkaArgs;

/// Longest wait for one broker request; a sample fails at the first error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest time spent reading first unconsumed records in one sample.
const PEEK_BUDGET: Duration = Duration::from_millis(1500);
/// Longest time one sample spends reading offsets; what is left unread is carried forward.
const SAMPLE_BUDGET: Duration = Duration::from_secs(10);
/// How long one read may fail, carried forward from earlier samples, before the whole sample
/// counts as failed.
const CARRY_LIMIT: Duration = Duration::from_secs(60);
/// Topic partitions are looked up again every this many samples.
const METADATA_REFRESH: u64 = 60;

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
    /// First unconsumed records, with the log end they were read at (a "nothing before
    /// the end" answer holds only while the end has not moved).
    peeks: HashMap<(Partition, i64), (Peek, i64)>,
    /// The previous sample's reads, carried forward for reads that fail.
    last_watermarks: BTreeMap<Partition, Watermarks>,
    last_committed: HashMap<String, BTreeMap<Partition, Option<i64>>>,
    /// Since when each read has been failing and carried forward.
    carried_since: HashMap<String, Instant>,
    samples: u64,
    refresh_due: bool,
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
            last_watermarks: BTreeMap::new(),
            last_committed: HashMap::new(),
            carried_since: HashMap::new(),
            samples: 0,
            refresh_due: false,
        })
    }

    /// One observation. A read that fails after others succeeded is carried forward from
    /// the previous observation and named in `errors`; a sample whose first read fails (the
    /// broker is down) or that runs past [`SAMPLE_BUDGET`] without reading anything fails.
    pub fn observe(&mut self, groups: &[GroupSpec], extra: &[String]) -> KafkaResult<Observation> {
        self.samples += 1;
        // Partitions added to a topic show up within this many samples.
        self.refresh_due = self.samples.is_multiple_of(METADATA_REFRESH);
        let deadline = Instant::now() + SAMPLE_BUDGET;
        let topics = all_topics(&self.kafka.topic_prefix);
        let mut errors = Vec::new();
        let mut read_any = false;
        let mut watermarks = BTreeMap::new();
        for topic in &topics {
            let partitions = match self.partitions_of(topic) {
                Ok(partitions) => partitions,
                Err(err) if !read_any => return Err(err),
                Err(err) => {
                    errors.push(format!("partitions of {topic}: {err}"));
                    self.last_watermarks
                        .keys()
                        .filter(|(t, _)| t == topic)
                        .map(|(_, p)| *p)
                        .collect()
                }
            };
            for partition in partitions {
                let key = (topic.clone(), partition);
                let read = if Instant::now() < deadline {
                    self.admin
                        .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                        .map(|(start, end)| Watermarks { start, end })
                } else {
                    Err(KafkaError::MetadataFetch(
                        RDKafkaErrorCode::OperationTimedOut,
                    ))
                };
                let what = format!("log offsets of {topic}/{partition}");
                match read {
                    Ok(marks) => {
                        read_any = true;
                        self.carried_since.remove(&what);
                        watermarks.insert(key, marks);
                    }
                    Err(err) if !read_any => return Err(err),
                    Err(err) => {
                        self.carry(&what, &err)?;
                        errors.push(format!("{what}: {err}"));
                        if let Some(marks) = self.last_watermarks.get(&key) {
                            watermarks.insert(key, *marks);
                        }
                    }
                }
            }
        }
        let at_ms = Utc::now().timestamp_millis();

        let mut observed = BTreeMap::new();
        // Extra groups are looked for on every topic, dead letters included.
        let extra_specs: Vec<GroupSpec> = extra
            .iter()
            .map(|name| GroupSpec {
                group: name.clone(),
                topics: topics.clone(),
            })
            .collect();
        for (spec, only_committed) in groups
            .iter()
            .map(|g| (g, false))
            .chain(extra_specs.iter().map(|g| (g, true)))
            .filter(|(g, extra)| !extra || !groups.iter().any(|own| own.group == g.group))
        {
            let committed = if Instant::now() < deadline {
                self.committed(spec)
            } else {
                Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::OperationTimedOut,
                ))
            };
            let what = format!("committed offsets of {}", spec.group);
            let committed = match committed {
                Ok(committed) => {
                    self.carried_since.remove(&what);
                    committed
                }
                Err(err) => {
                    self.carry(&what, &err)?;
                    errors.push(format!("{what}: {err}"));
                    match self.last_committed.get(&spec.group) {
                        Some(last) => last.clone(),
                        None => continue,
                    }
                }
            };
            self.last_committed
                .insert(spec.group.clone(), committed.clone());
            let mut group = GroupObservation {
                committed,
                // Past the budget membership is left unknown rather than waited for.
                members: if Instant::now() < deadline {
                    self.members(&spec.group)
                } else {
                    None
                },
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
        // Groups no longer watched leave their consumer behind.
        let watched: BTreeSet<&String> = observed.keys().collect();
        self.groups.retain(|name, _| watched.contains(name));
        self.last_committed.retain(|name, _| watched.contains(name));
        self.last_watermarks = watermarks.clone();

        let peeks = self.peek(&watermarks, &observed, deadline);
        Ok(Observation {
            at_ms,
            watermarks,
            groups: observed,
            peeks,
            errors,
        })
    }

    /// The partitions of `topic`: from the cache, looked up again every
    /// [`METADATA_REFRESH`] samples (a failed look-up keeps what was known).
    /// A failed read is carried forward only so long: past [`CARRY_LIMIT`] the figures it
    /// feeds would be stale under an "up" monitor, so the sample fails (an outage).
    fn carry(&mut self, what: &str, err: &KafkaError) -> KafkaResult<()> {
        let since = *self
            .carried_since
            .entry(what.to_owned())
            .or_insert_with(Instant::now);
        if since.elapsed() > CARRY_LIMIT {
            tracing::warn!(%what, %err, "a read has failed for too long; the sample fails");
            return Err(err.clone());
        }
        Ok(())
    }

    fn partitions_of(&mut self, topic: &str) -> KafkaResult<Vec<i32>> {
        let known = self.partitions.get(topic).cloned();
        if let (Some(known), false) = (&known, self.refresh_due) {
            return Ok(known.clone());
        }
        let looked_up = crate::topics::partition_ids(&self.admin, topic, REQUEST_TIMEOUT);
        match (looked_up, known) {
            (Ok(partitions), _) if !partitions.is_empty() => {
                self.partitions.insert(topic.to_owned(), partitions.clone());
                Ok(partitions)
            }
            // A topic not created yet is looked up again next time.
            (Ok(_), None) => Ok(Vec::new()),
            (Ok(_) | Err(_), Some(known)) => Ok(known),
            (Err(err), None) => Err(err),
        }
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
        sample_deadline: Instant,
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
        let end_of = |partition: &Partition| watermarks.get(partition).map_or(0, |m| m.end);
        let mut found: HashMap<(Partition, i64), (Peek, i64)> = HashMap::new();
        let mut missing: Vec<(Partition, i64)> = Vec::new();
        for key in wanted {
            match self.peeks.get(&key) {
                // A record found stays the first one; "nothing before the end" holds only
                // while the end has not moved.
                Some((peek @ Peek::Record { .. }, end)) => {
                    found.insert(key, (*peek, *end));
                }
                Some((peek, end)) if *end == end_of(&key.0) => {
                    found.insert(key, (*peek, *end));
                }
                _ => missing.push(key),
            }
        }
        let deadline = (Instant::now() + PEEK_BUDGET).min(sample_deadline.max(Instant::now()));
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
                        let key = (topic.clone(), partition);
                        let end = end_of(&key);
                        found.insert((key, round[&partition]), (peek, end));
                    }
                }
                Err(err) => tracing::debug!(%topic, %err, "cannot read first unconsumed records"),
            }
        }
        let peeks = found
            .iter()
            .map(|(key, (peek, _))| (key.clone(), *peek))
            .collect();
        self.peeks = found;
        peeks
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
