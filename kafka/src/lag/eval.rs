//! The pure half of the lag monitor: observations (offsets read from the broker at one
//! moment) go in, a report with lag, lag seconds, rates, time to drain and a status per
//! partition and group comes out. No I/O and no clock: the time is the observation's, so
//! the rules are tested with made-up timelines.
//!
//! Rules, and the mistakes of other lag tools they avoid:
//! - Lag is `log end − committed`, clamped at 0 (a broker can report a high watermark below
//!   a commit) and with a commit below log start counted from log start. A partition
//!   without a commit has no lag: it is reported as uncommitted and counted apart, never
//!   folded into the totals as 0 or as the whole log.
//! - Lag seconds is the age of the first unconsumed record, read from the record's own
//!   timestamp, and 0 when caught up: a burst after an idle hour reads seconds, not hours.
//!   When no data record exists between the commit and log end (transaction markers,
//!   compaction), the partition is caught up, not "1 behind" for ever. Only when the record
//!   could not be read is the age interpolated from the sampled log-end offsets, and then
//!   it says so.
//! - The status is judged over time, not over a number of commits, so how often a
//!   consumer commits does not change what it means: `REWIND` when the committed offset
//!   went back within the window; `OK` when caught up (an idle group is healthy); `STALL`
//!   when the offset has not moved for `stall_after` while behind and the group has members
//!   (or the broker does not say); `STOP` when the group is behind and has no members, or
//!   membership is unknown and the offset has stood still for `stop_after`; `WARN` when the offset moves
//!   but the partition was behind at every sample of the window and lag grew through it. A
//!   partition with records but no commit, of a group that should be consuming it, turns
//!   `STALL`/`STOP` the same way once records have waited `stall_after`. A group takes the
//!   worst status of its partitions.
//! - When the broker cannot be read, the last offsets are carried forward as unmoved: after
//!   `stall_after` without a good sample every group is `STALL` (its consumers cannot fetch
//!   from that broker either), after `stop_after` `STOP`, rather than vanishing or staying OK.
//! - A group that stops keeps being reported (its lag grows, it turns `STOP`) until it is
//!   deleted from the broker or it has made no progress for `retention`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use serde::Serialize;

/// A topic's partition.
pub type Partition = (String, i32);

/// Burrow's statuses, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Rewind,
    Stall,
    Stop,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Ok,
        Status::Warn,
        Status::Rewind,
        Status::Stall,
        Status::Stop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Rewind => "REWIND",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log start and end (high watermark) of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub start: i64,
    pub end: i64,
}

/// What reading the first unconsumed record of a partition found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// The first data record at or after the committed offset.
    Record { offset: i64, timestamp_ms: i64 },
    /// No data record before log end: only markers or compacted-away offsets remain.
    NothingBeforeEnd,
}

/// One group as read from the broker.
#[derive(Debug, Clone, Default)]
pub struct GroupObservation {
    /// Every partition of the group's topics; `None` where the group has no commit.
    pub committed: BTreeMap<Partition, Option<i64>>,
    /// Members of the group, when the broker said.
    pub members: Option<usize>,
    /// One of the platform's own groups: reported even before its first commit. Any other
    /// group with neither commits nor members is not (or no longer) a group.
    pub expected: bool,
}

/// Offsets read from the broker at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub at_ms: i64,
    pub watermarks: BTreeMap<Partition, Watermarks>,
    pub groups: BTreeMap<String, GroupObservation>,
    /// First unconsumed records, keyed by partition and the offset they were read from.
    pub peeks: HashMap<(Partition, i64), Peek>,
    /// What could not be read (and was carried forward from the previous sample).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Samples in the status window (at least 2).
    pub window: usize,
    /// Time between samples: a window spans `(window − 1) × interval`.
    pub interval: Duration,
    /// How long a lagging partition's offset may stand still before it is `STALL` (`STOP`
    /// when the group has no members).
    pub stall_after: Duration,
    /// How long it may stand still before it is `STOP` even though the broker does not say
    /// whether the group has members.
    pub stop_after: Duration,
    /// A group that has made no progress, has no members and is behind for this long is
    /// no longer reported.
    pub retention: Duration,
    /// How long log-end samples are kept for the interpolation fallback.
    pub history: Duration,
}

impl EvalConfig {
    /// `stall_after` is one window, `stop_after` two; reports are kept for a week; an hour
    /// of log ends.
    pub fn new(window: usize, interval: Duration) -> Self {
        let mut config = Self {
            window,
            interval,
            stall_after: Duration::ZERO,
            stop_after: Duration::ZERO,
            retention: Duration::from_secs(7 * 24 * 3600),
            history: Duration::from_secs(3600),
        };
        config.stall_after = config.span();
        config.stop_after = config.span() * 2;
        config
    }

    /// How long a full window of samples covers.
    pub fn span(&self) -> Duration {
        self.interval * (self.window.max(2) as u32 - 1)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// `None`: the group has never committed here.
    pub committed_offset: Option<i64>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub lag: Option<i64>,
    pub lag_seconds: Option<f64>,
    /// Lag seconds is an estimate from sampled log-end offsets, not a record's timestamp.
    pub lag_seconds_interpolated: bool,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicLag {
    pub topic: String,
    pub lag: i64,
    pub lag_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupLag {
    pub group: String,
    pub status: Status,
    pub members: Option<usize>,
    /// Sum over partitions with a commit.
    pub lag: i64,
    pub max_lag: i64,
    /// The largest over partitions.
    pub lag_seconds: f64,
    pub uncommitted_partitions: usize,
    /// Records per second over the window; `None` until two samples exist.
    pub consume_rate: Option<f64>,
    pub produce_rate: Option<f64>,
    /// Seconds until the backlog is consumed at the current rates: 0 when caught up; for a
    /// consumer keeping pace with a steady backlog, the time to consume what waits; `None`
    /// when it grows or the consumer does not move (never drains), or before two samples.
    pub drain_seconds: Option<f64>,
    pub topics: Vec<TopicLag>,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicDepth {
    pub topic: String,
    /// Records between log start and log end over every partition.
    pub records: i64,
}

/// What the monitor knows at one moment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LagReport {
    pub sampled_at: DateTime<Utc>,
    /// False when the last attempt to read the broker failed: figures are carried forward
    /// from the last good sample (offsets taken as unmoved) and `error` says why. True with
    /// an `error` when only some offsets could not be read (those are carried forward).
    pub up: bool,
    pub error: Option<String>,
    /// When the last sample that read the broker was taken.
    pub last_good_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed, while they do.
    pub failing_since: Option<DateTime<Utc>>,
    pub groups: Vec<GroupLag>,
    /// (topic, partition, log start, log end) of every partition read.
    pub watermarks: Vec<(String, i32, i64, i64)>,
}

impl LagReport {
    pub fn empty() -> Self {
        Self {
            sampled_at: Utc::now(),
            up: false,
            error: None,
            last_good_at: None,
            failing_since: None,
            groups: Vec::new(),
            watermarks: Vec::new(),
        }
    }

    pub fn group(&self, name: &str) -> Option<&GroupLag> {
        self.groups.iter().find(|g| g.group == name)
    }

    /// Records between log start and log end of each topic, over its partitions.
    pub fn topic_depths(&self) -> Vec<TopicDepth> {
        let mut depth: BTreeMap<&str, i64> = BTreeMap::new();
        for (topic, _, start, end) in &self.watermarks {
            *depth.entry(topic).or_default() += (end - start).max(0);
        }
        depth
            .into_iter()
            .map(|(topic, records)| TopicDepth {
                topic: topic.to_owned(),
                records,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ms: i64,
    committed: i64,
    log_end: i64,
    lag: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    window: VecDeque<Sample>,
    /// When the committed offset was last seen to change (or first seen).
    last_move_ms: i64,
}

/// Carries the windows between observations.
#[derive(Debug)]
pub struct Evaluator {
    config: EvalConfig,
    partitions: HashMap<(String, Partition), PartitionState>,
    /// (time, log end) per partition, for interpolating lag seconds.
    log_ends: HashMap<Partition, VecDeque<(i64, i64)>>,
    /// Since when each (group, partition) without a commit has had records waiting.
    uncommitted: HashMap<(String, Partition), i64>,
    last: Option<Observation>,
    /// The last good sample's time, and the first failure since.
    last_good_ms: Option<i64>,
    failing_since_ms: Option<i64>,
    /// How long the broker has been unreadable, while it is (set during a re-evaluation).
    outage_ms: Option<i64>,
}

impl Evaluator {
    pub fn new(config: EvalConfig) -> Self {
        assert!(config.window >= 2, "a status window needs two samples");
        Self {
            config,
            partitions: HashMap::new(),
            log_ends: HashMap::new(),
            uncommitted: HashMap::new(),
            last: None,
            last_good_ms: None,
            failing_since_ms: None,
            outage_ms: None,
        }
    }

    /// The broker could not be read at `at_ms`: evaluate the last observation again at
    /// that time, as if nothing had moved, so groups turn `STALL`/`STOP` instead of
    /// vanishing or staying OK.
    pub fn observe_failure(&mut self, at_ms: i64, error: String) -> LagReport {
        let failing_since = *self.failing_since_ms.get_or_insert(at_ms);
        let mut report = match self.last.clone() {
            Some(mut last) => {
                last.at_ms = at_ms;
                self.outage_ms = Some(at_ms - self.last_good_ms.unwrap_or(failing_since));
                let report = self.evaluate(&last, false);
                self.outage_ms = None;
                self.last = Some(last);
                report
            }
            None => LagReport::empty(),
        };
        report.sampled_at = to_time(at_ms);
        report.up = false;
        report.error = Some(error);
        report.last_good_at = self.last_good_ms.map(to_time);
        report.failing_since = Some(to_time(failing_since));
        report
    }

    pub fn observe(&mut self, observation: Observation) -> LagReport {
        let mut report = self.evaluate(&observation, true);
        if !observation.errors.is_empty() {
            let shown: Vec<&str> = observation
                .errors
                .iter()
                .take(3)
                .map(String::as_str)
                .collect();
            report.error = Some(format!(
                "{} read(s) failed and were carried forward: {}",
                observation.errors.len(),
                shown.join("; ")
            ));
        }
        self.last_good_ms = Some(observation.at_ms);
        self.failing_since_ms = None;
        report.last_good_at = self.last_good_ms.map(to_time);
        self.last = Some(observation);
        report
    }

    fn evaluate(&mut self, obs: &Observation, fresh: bool) -> LagReport {
        let now = obs.at_ms;
        if fresh {
            let keep_from = now - self.config.history.as_millis() as i64;
            for (partition, marks) in &obs.watermarks {
                let history = self.log_ends.entry(partition.clone()).or_default();
                history.push_back((now, marks.end));
                while history.front().is_some_and(|(at, _)| *at < keep_from) {
                    history.pop_front();
                }
            }
            self.log_ends
                .retain(|partition, _| obs.watermarks.contains_key(partition));
        }
        let mut groups = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (group, observed) in &obs.groups {
            let mut partitions = Vec::new();
            for (partition, committed) in &observed.committed {
                seen.insert((group.clone(), partition.clone()));
                let Some(marks) = obs.watermarks.get(partition) else {
                    continue;
                };
                partitions.push(self.partition(group, partition, *committed, *marks, obs));
            }
            let lag = self.group(group, observed, partitions, now);
            if let Some(lag) = lag {
                groups.push(lag);
            }
        }
        // Partitions no longer observed (a group removed, a topic deleted) leave no state.
        self.partitions.retain(|key, _| seen.contains(key));
        self.uncommitted.retain(|key, _| seen.contains(key));

        LagReport {
            sampled_at: to_time(now),
            up: true,
            error: None,
            last_good_at: None,
            failing_since: None,
            groups,
            watermarks: obs
                .watermarks
                .iter()
                .map(|((topic, partition), marks)| {
                    (topic.clone(), *partition, marks.start, marks.end)
                })
                .collect(),
        }
    }

    fn partition(
        &mut self,
        group: &str,
        partition: &Partition,
        committed: Option<i64>,
        marks: Watermarks,
        obs: &Observation,
    ) -> PartitionLag {
        let now = obs.at_ms;
        let base = PartitionLag {
            topic: partition.0.clone(),
            partition: partition.1,
            committed_offset: committed,
            log_start_offset: marks.start,
            log_end_offset: marks.end,
            lag: None,
            lag_seconds: None,
            lag_seconds_interpolated: false,
            status: Status::Ok,
        };
        let key = (group.to_owned(), partition.clone());
        let Some(committed) = committed else {
            self.partitions.remove(&key);
            // Records waiting where the group has never committed: how long they have.
            if marks.end > marks.start {
                self.uncommitted.entry(key).or_insert(now);
            } else {
                self.uncommitted.remove(&key);
            }
            return base;
        };
        self.uncommitted.remove(&key);
        // A commit below log start (records deleted by retention) counts from log start.
        let from = committed.max(marks.start);
        let mut lag = (marks.end - from).max(0);
        let mut lag_seconds = Some(0.0);
        let mut interpolated = false;
        if lag > 0 {
            match obs.peeks.get(&(partition.clone(), from)) {
                Some(Peek::NothingBeforeEnd) => lag = 0,
                Some(Peek::Record {
                    offset,
                    timestamp_ms,
                }) => {
                    // Offsets skipped by compaction are not records to consume.
                    lag = (marks.end - offset.max(&from)).max(0);
                    lag_seconds = Some(((now - timestamp_ms).max(0)) as f64 / 1000.0);
                }
                None => {
                    lag_seconds = self.interpolate(partition, from, now);
                    interpolated = true;
                }
            }
        }
        if lag == 0 {
            lag_seconds = Some(0.0);
            interpolated = false;
        }

        let state = self
            .partitions
            .entry(key)
            .or_insert_with(|| PartitionState {
                window: VecDeque::new(),
                last_move_ms: now,
            });
        if let Some(previous) = state.window.back() {
            if previous.committed != committed {
                state.last_move_ms = now;
            }
        }
        if state.window.back().is_none_or(|s| s.at_ms < now) {
            state.window.push_back(Sample {
                at_ms: now,
                committed,
                log_end: marks.end,
                lag,
            });
        }
        while state.window.len() > self.config.window {
            state.window.pop_front();
        }
        PartitionLag {
            lag: Some(lag),
            lag_seconds,
            lag_seconds_interpolated: interpolated,
            ..base
        }
    }

    /// When the log end first passed `offset`, from the sampled log ends: the record at
    /// `offset` is at least that old. Before the oldest sample, the oldest sample's time.
    fn interpolate(&self, partition: &Partition, offset: i64, now: i64) -> Option<f64> {
        let history = self.log_ends.get(partition)?;
        let mut since = history.front()?.0;
        for (at, end) in history.iter().rev() {
            if *end <= offset {
                break;
            }
            since = *at;
        }
        Some((now - since).max(0) as f64 / 1000.0)
    }

    fn group(
        &mut self,
        group: &str,
        observed: &GroupObservation,
        mut partitions: Vec<PartitionLag>,
        now: i64,
    ) -> Option<GroupLag> {
        let members = observed.members;
        let mut status = Status::Ok;
        let mut last_progress = i64::MIN;
        let (mut consumed, mut produced, mut span_ms) = (0i64, 0i64, 0i64);
        // The group's lag at the start of its windows, to tell a steady backlog from a
        // growing one.
        let mut lag_before = 0i64;
        for lag in &mut partitions {
            let key = (group.to_owned(), (lag.topic.clone(), lag.partition));
            let Some(state) = self.partitions.get(&key) else {
                // No commit: a group that should consume the partition has left its records
                // waiting (its consumers reset to the earliest offset, so all of them).
                if let Some(since) = self.uncommitted.get(&key).filter(|_| observed.expected) {
                    lag.status = self.standing_still(now - since, members);
                    status = status.max(lag.status);
                }
                continue;
            };
            lag.status = self.status(state, members, observed.expected, now);
            status = status.max(lag.status);
            last_progress = last_progress.max(state.last_move_ms);
            if let (Some(first), Some(last)) = (state.window.front(), state.window.back()) {
                consumed += (last.committed - first.committed).max(0);
                lag_before += first.lag;
                produced += (last.log_end - first.log_end).max(0);
                span_ms = span_ms.max(last.at_ms - first.at_ms);
            }
        }
        // With nothing committed, progress is as old as the oldest records left waiting.
        if last_progress == i64::MIN {
            last_progress = partitions
                .iter()
                .filter_map(|p| {
                    self.uncommitted
                        .get(&(group.to_owned(), (p.topic.clone(), p.partition)))
                })
                .copied()
                .min()
                .unwrap_or(i64::MIN);
        }
        let committed: Vec<&PartitionLag> = partitions.iter().filter(|p| p.lag.is_some()).collect();
        let lag: i64 = committed.iter().filter_map(|p| p.lag).sum();
        if committed.is_empty() && members.unwrap_or(0) == 0 && !observed.expected {
            // Not a group (any more): nothing committed and nobody in it.
            return None;
        }
        if (lag > 0 || status > Status::Warn)
            && members.unwrap_or(0) == 0
            && last_progress != i64::MIN
            && now - last_progress > self.config.retention.as_millis() as i64
        {
            return None;
        }
        let (consume_rate, produce_rate) = if span_ms > 0 {
            let seconds = span_ms as f64 / 1000.0;
            (
                Some(consumed as f64 / seconds),
                Some(produced as f64 / seconds),
            )
        } else {
            (None, None)
        };
        let drain_seconds = match (lag, consume_rate, produce_rate) {
            (0, _, _) => Some(0.0),
            (_, Some(consume), Some(produce)) if consume > produce => {
                Some(lag as f64 / (consume - produce))
            }
            // Keeping pace with a steady backlog: what waits is consumed at the consumer's
            // rate. Only a backlog that grows (or a consumer that does not move) never drains.
            (_, Some(consume), Some(_)) if consume > 0.0 && lag <= lag_before => {
                Some(lag as f64 / consume)
            }
            _ => None,
        };
        let mut topics: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
        for p in &committed {
            let entry = topics.entry(&p.topic).or_default();
            entry.0 += p.lag.unwrap_or(0);
            entry.1 = entry.1.max(p.lag_seconds.unwrap_or(0.0));
        }
        let topics = topics
            .into_iter()
            .map(|(topic, (lag, lag_seconds))| TopicLag {
                topic: topic.to_owned(),
                lag,
                lag_seconds,
            })
            .collect();
        Some(GroupLag {
            group: group.to_owned(),
            status,
            members,
            lag,
            max_lag: committed.iter().filter_map(|p| p.lag).max().unwrap_or(0),
            lag_seconds: committed
                .iter()
                .filter_map(|p| p.lag_seconds)
                .fold(0.0, f64::max),
            uncommitted_partitions: partitions.len() - committed.len(),
            consume_rate,
            produce_rate,
            drain_seconds,
            topics,
            partitions,
        })
    }

    /// The status of something behind that has not moved for `still_ms`.
    fn standing_still(&self, still_ms: i64, members: Option<usize>) -> Status {
        let (stall, stop) = (
            self.config.stall_after.as_millis() as i64,
            self.config.stop_after.as_millis() as i64,
        );
        match members {
            _ if still_ms < stall => Status::Ok,
            Some(0) => Status::Stop,
            None if still_ms >= stop => Status::Stop,
            _ => Status::Stall,
        }
    }

    fn status(
        &self,
        state: &PartitionState,
        members: Option<usize>,
        expected: bool,
        now: i64,
    ) -> Status {
        // The broker cannot be read: nothing is seen to move, and consumers of that broker
        // cannot fetch either.
        if let Some(outage) = self.outage_ms {
            if outage >= self.config.stop_after.as_millis() as i64 {
                return Status::Stop;
            }
            if outage >= self.config.stall_after.as_millis() as i64 {
                return Status::Stall;
            }
        }
        let samples: Vec<&Sample> = state.window.iter().collect();
        let Some(last) = samples.last() else {
            return Status::Ok;
        };
        if samples.windows(2).any(|w| w[1].committed < w[0].committed) {
            return Status::Rewind;
        }
        if last.lag == 0 {
            return Status::Ok;
        }
        // One of the platform's groups (they subscribe, so their consumers are members)
        // behind with nobody in it: nothing is consuming, however recently it did. Other
        // groups may consume by assignment, without members: judged on movement alone.
        if members == Some(0) && expected {
            return Status::Stop;
        }
        let still = self.standing_still(now - state.last_move_ms, members);
        if still != Status::Ok {
            return still;
        }
        // As Burrow: a window in which the consumer was caught up at any sample is fine.
        let full = samples.len() >= self.config.window;
        if full
            && samples.iter().all(|s| s.lag > 0)
            && samples.windows(2).all(|w| w[1].lag >= w[0].lag)
            && last.lag > samples[0].lag
        {
            return Status::Warn;
        }
        Status::Ok
    }
}

fn to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests;
