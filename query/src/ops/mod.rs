//! The operator's view: consumer lag from the lag monitor beside the event store's own
//! figures (relay backlog, projection staleness, dead letters, sagas by state), served as
//! GraphQL fields, as Prometheus metrics at `/metrics`, and as the `/ops` dashboard page.
//! `orderflow lag --json` prints the same [`OpsSnapshot`] the GraphQL fields return.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Enum, SimpleObject};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use orderflow_kafka::lag::{self, LagReport};
use orderflow_kafka::topics::dead_letter_topic;
use orderflow_store::telemetry::{self, Gauges};
use serde::Serialize;
use sqlx::PgPool;

use crate::progress::VIEWS;
use crate::schema::money::Long;

/// A group's or partition's status, with Burrow's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LagStatus {
    /// Caught up, or consuming without falling behind.
    Ok,
    /// Consuming, but lag grew through the whole window.
    Warn,
    /// The committed offset went back within the window.
    Rewind,
    /// Behind, with members, and the committed offset has not moved for a window.
    Stall,
    /// Behind and not consuming: no members, or no progress for two windows.
    Stop,
}

impl From<lag::Status> for LagStatus {
    fn from(status: lag::Status) -> Self {
        match status {
            lag::Status::Ok => Self::Ok,
            lag::Status::Warn => Self::Warn,
            lag::Status::Rewind => Self::Rewind,
            lag::Status::Stall => Self::Stall,
            lag::Status::Stop => Self::Stop,
        }
    }
}

/// A consumer group's lag.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroup {
    pub group: String,
    /// The worst status of its partitions.
    pub status: LagStatus,
    /// Members, when the broker says.
    pub members: Option<i32>,
    /// Records behind, summed over partitions with a commit.
    pub lag: Long,
    pub max_lag: Long,
    /// The largest lag in seconds of its partitions.
    pub lag_seconds: f64,
    /// Partitions without a commit: reported apart, not in the totals.
    pub uncommitted_partitions: i32,
    /// Records consumed per second over the status window (null before two samples).
    pub consume_rate: Option<f64>,
    /// Records produced per second into its partitions over the window.
    pub produce_rate: Option<f64>,
    /// Seconds until the backlog is consumed at current rates: 0 when caught up, null when
    /// it grows (never) or before two samples.
    pub drain_seconds: Option<f64>,
    pub sampled_at: DateTime<Utc>,
    pub topics: Vec<TopicLag>,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicLag {
    pub topic: String,
    pub lag: Long,
    pub lag_seconds: f64,
}

#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Null: the group has never committed on this partition.
    pub committed_offset: Option<Long>,
    pub log_start_offset: Long,
    pub log_end_offset: Long,
    /// Null when there is no commit.
    pub lag: Option<Long>,
    /// Age of the first unconsumed record; 0 when caught up.
    pub lag_seconds: Option<f64>,
    /// `lagSeconds` was interpolated from sampled log ends, not read from a record.
    pub lag_seconds_interpolated: bool,
    pub status: LagStatus,
}

impl ConsumerGroup {
    fn new(g: &lag::GroupLag, sampled_at: DateTime<Utc>) -> Self {
        Self {
            group: g.group.clone(),
            status: g.status.into(),
            members: g.members.map(|m| i32::try_from(m).unwrap_or(i32::MAX)),
            lag: Long(g.lag),
            max_lag: Long(g.max_lag),
            lag_seconds: g.lag_seconds,
            uncommitted_partitions: i32::try_from(g.uncommitted_partitions).unwrap_or(i32::MAX),
            consume_rate: g.consume_rate,
            produce_rate: g.produce_rate,
            drain_seconds: g.drain_seconds,
            sampled_at,
            topics: g
                .topics
                .iter()
                .map(|t| TopicLag {
                    topic: t.topic.clone(),
                    lag: Long(t.lag),
                    lag_seconds: t.lag_seconds,
                })
                .collect(),
            partitions: g
                .partitions
                .iter()
                .map(|p| PartitionLag {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    committed_offset: p.committed_offset.map(Long),
                    log_start_offset: Long(p.log_start_offset),
                    log_end_offset: Long(p.log_end_offset),
                    lag: p.lag.map(Long),
                    lag_seconds: p.lag_seconds,
                    lag_seconds_interpolated: p.lag_seconds_interpolated,
                    status: p.status.into(),
                })
                .collect(),
        }
    }
}

/// How far a view is behind and how old its picture is.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub projection: String,
    /// Records published that the view has not applied yet.
    pub behind: Long,
    pub last_applied_position: Option<Long>,
    /// 0 when caught up; else the age of the oldest event the view has not applied.
    pub staleness_seconds: f64,
}

/// The outbox relay's backlog.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayStatus {
    /// Events committed and not yet published.
    pub backlog: Long,
    /// Age of the oldest of them; 0 when there is none.
    pub oldest_age_seconds: f64,
    /// The position of the relay's cursor.
    pub published_through: Long,
}

/// Whether the lag monitor can read the broker.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LagMonitorStatus {
    /// False when the last attempt to read the broker failed; the groups' figures are then
    /// carried forward from `lastGoodAt` and their statuses turn STALL, then STOP.
    pub up: bool,
    /// Why the last sample failed, or which reads failed and were carried forward.
    pub error: Option<String>,
    pub sampled_at: DateTime<Utc>,
    pub last_good_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed, while they do.
    pub failing_since: Option<DateTime<Utc>>,
}

impl From<&LagReport> for LagMonitorStatus {
    fn from(report: &LagReport) -> Self {
        Self {
            up: report.up,
            error: report.error.clone(),
            sampled_at: report.sampled_at,
            last_good_at: report.last_good_at,
            failing_since: report.failing_since,
        }
    }
}

/// Records in a dead-letter topic.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterTopic {
    /// The dead-letter topic (`<topic>.dlq`).
    pub topic: String,
    pub depth: Long,
}

/// Sagas in one state.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaCount {
    /// RUNNING, COMPENSATING, CONFIRMED, CANCELLED or STUCK.
    pub state: String,
    pub count: Long,
}

/// One moment of the history `/ops` charts.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsSample {
    pub at: DateTime<Utc>,
    pub groups: Vec<GroupSample>,
    /// Events committed and not yet published then.
    pub relay_backlog: Long,
}

#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSample {
    pub group: String,
    pub lag: Long,
    pub lag_seconds: f64,
    pub status: LagStatus,
}

/// How much history `/ops` charts.
pub const HISTORY: Duration = Duration::from_secs(15 * 60);

/// The last 15 minutes of lag per group and relay backlog, one sample per lag report, kept
/// in memory by the query service.
#[derive(Debug, Clone, Default)]
pub struct OpsHistory(Arc<Mutex<VecDeque<OpsSample>>>);

impl OpsHistory {
    /// Record a sample at every report of `monitor`, until the monitor stops.
    pub fn start(pool: PgPool, relay: String, mut monitor: lag::LagMonitor) -> Self {
        let history = Self::default();
        let samples = history.clone();
        tokio::spawn(async move {
            let mut backlog = Long(0);
            while let Some(report) = monitor.changed().await {
                match EsFigures::relay(&pool, &relay).await {
                    Ok(relay) => backlog = relay.backlog,
                    // The chart goes on at the last backlog read.
                    Err(err) => tracing::debug!(%err, "cannot read the relay backlog for /ops"),
                }
                samples.push(OpsSample {
                    at: report.sampled_at,
                    groups: report
                        .groups
                        .iter()
                        .map(|g| GroupSample {
                            group: g.group.clone(),
                            lag: Long(g.lag),
                            lag_seconds: g.lag_seconds,
                            status: g.status.into(),
                        })
                        .collect(),
                    relay_backlog: backlog,
                });
            }
        });
        history
    }

    fn push(&self, sample: OpsSample) {
        let Ok(mut samples) = self.0.lock() else {
            return;
        };
        let horizon = sample.at - chrono::Duration::from_std(HISTORY).unwrap_or_default();
        samples.push_back(sample);
        while samples.front().is_some_and(|s| s.at < horizon) {
            samples.pop_front();
        }
    }

    /// Oldest first.
    pub fn samples(&self) -> Vec<OpsSample> {
        self.0
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The event store's figures, read in a few cheap statements.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EsFigures {
    pub relay: RelayStatus,
    pub projections: Vec<ProjectionStatus>,
    pub sagas: Vec<SagaCount>,
}

impl EsFigures {
    /// The relay's backlog: one statement.
    pub async fn relay(pool: &PgPool, relay: &str) -> Result<RelayStatus, sqlx::Error> {
        let (backlog, oldest, through): (i64, Option<f64>, i64) = sqlx::query_as(
            "with c as ( \
                 select coalesce(max(tx_id), 0) as tx_id, coalesce(max(position), 0) as position \
                 from relay_cursors where name = $1) \
             select count(e.position), \
                    extract(epoch from now() - min(e.recorded_at))::float8, \
                    max(c.position) \
             from c left join events e \
               on (e.tx_id, e.position) > (c.tx_id::text::xid8, c.position)",
        )
        .bind(relay)
        .fetch_one(pool)
        .await?;
        Ok(RelayStatus {
            backlog: Long(backlog),
            oldest_age_seconds: oldest.unwrap_or(0.0).max(0.0),
            published_through: Long(through),
        })
    }

    pub async fn read(pool: &PgPool, relay: &str) -> Result<Self, sqlx::Error> {
        let relay_status = Self::relay(pool, relay).await?;
        let mut projections = Vec::new();
        for (view, floor) in crate::progress::lagging_floors(pool, relay).await? {
            let staleness = match floor {
                None => 0.0,
                Some(after) => {
                    let stream_types = VIEWS
                        .iter()
                        .find(|(name, _)| *name == view.view)
                        .map(|(_, types)| types.iter().map(|t| (*t).to_owned()).collect())
                        .unwrap_or_else(Vec::<String>::new);
                    let age: Option<f64> = sqlx::query_scalar(
                        "select extract(epoch from now() - recorded_at)::float8 from events \
                         where position > $1 and stream_type = any($2) \
                         order by position limit 1",
                    )
                    .bind(after)
                    .bind(&stream_types)
                    .fetch_optional(pool)
                    .await?
                    .flatten();
                    age.unwrap_or(0.0).max(0.0)
                }
            };
            projections.push(ProjectionStatus {
                projection: view.view.to_owned(),
                behind: view.behind,
                last_applied_position: view.last_applied_position,
                staleness_seconds: staleness,
            });
        }
        let sagas = Self::sagas(pool).await?;
        Ok(Self {
            relay: relay_status,
            projections,
            sagas,
        })
    }

    /// Sagas by state, every state listed.
    pub async fn sagas(pool: &PgPool) -> Result<Vec<SagaCount>, sqlx::Error> {
        let counted: Vec<(String, i64)> =
            sqlx::query_as("select state, count(*) from sagas group by state")
                .fetch_all(pool)
                .await?;
        let counted: BTreeMap<String, i64> = counted.into_iter().collect();
        Ok(orderflow_domain::saga::SagaStatus::ALL
            .iter()
            .map(|state| SagaCount {
                state: state.as_str().to_owned(),
                count: Long(counted.get(state.as_str()).copied().unwrap_or(0)),
            })
            .collect())
    }

    /// The figures as Prometheus gauges.
    pub fn render(&self, out: &mut String) {
        render_relay(&self.relay, out);
        let name = "orderflow_projection_staleness_seconds";
        let mut family = Gauges::family(
            out,
            name,
            "0 when the view is caught up; else the age of the oldest event it has not applied",
        );
        for p in &self.projections {
            family.sample(name, &[("projection", &p.projection)], p.staleness_seconds);
        }
        render_sagas(&self.sagas, out);
    }
}

/// `orderflow_relay_backlog_*` gauges.
pub fn render_relay(relay: &RelayStatus, out: &mut String) {
    let name = "orderflow_relay_backlog_events";
    Gauges::family(out, name, "Events committed but not yet published").sample(
        name,
        &[],
        relay.backlog.0 as f64,
    );
    let name = "orderflow_relay_backlog_oldest_age_seconds";
    Gauges::family(
        out,
        name,
        "Age of the oldest unpublished event; 0 when none",
    )
    .sample(name, &[], relay.oldest_age_seconds);
}

/// `orderflow_sagas{state}` gauges.
pub fn render_sagas(sagas: &[SagaCount], out: &mut String) {
    let name = "orderflow_sagas";
    let mut family = Gauges::family(out, name, "Sagas by state");
    for s in sagas {
        family.sample(name, &[("state", &s.state)], s.count.0 as f64);
    }
}

/// Everything the ops fields return, at one moment: what `orderflow lag --json` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsSnapshot {
    pub lag_monitor: LagMonitorStatus,
    pub consumer_groups: Vec<ConsumerGroup>,
    pub dead_letters: Vec<DeadLetterTopic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projections: Option<Vec<ProjectionStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saga_counts: Option<Vec<SagaCount>>,
}

impl OpsSnapshot {
    pub fn new(report: &LagReport, es: Option<&EsFigures>) -> Self {
        Self {
            lag_monitor: report.into(),
            consumer_groups: Self::consumer_groups(report),
            dead_letters: Self::dead_letters(report),
            projections: es.map(|es| es.projections.clone()),
            relay: es.map(|es| es.relay.clone()),
            saga_counts: es.map(|es| es.sagas.clone()),
        }
    }

    pub fn consumer_groups(report: &LagReport) -> Vec<ConsumerGroup> {
        report
            .groups
            .iter()
            .map(|g| ConsumerGroup::new(g, report.sampled_at))
            .collect()
    }

    /// Depth of every dead-letter topic the broker reported.
    pub fn dead_letters(report: &LagReport) -> Vec<DeadLetterTopic> {
        report
            .topic_depths()
            .into_iter()
            .filter(|t| t.topic.ends_with(&dead_letter_topic("")))
            .map(|t| DeadLetterTopic {
                topic: t.topic,
                depth: Long(t.records),
            })
            .collect()
    }
}

/// The monitor's latest report as metrics: consumer lag and dead-letter depth.
pub fn render_monitor(monitor: &lag::LagMonitor, out: &mut String) {
    let report = monitor.latest();
    lag::prometheus::render(&report, out);
    render_dead_letters(&report, out);
}

/// `orderflow_dead_letters{topic}` from a lag report.
fn render_dead_letters(report: &LagReport, out: &mut String) {
    let name = "orderflow_dead_letters";
    let mut family = Gauges::family(out, name, "Records in each dead-letter topic");
    for d in OpsSnapshot::dead_letters(report) {
        family.sample(name, &[("topic", &d.topic)], d.depth.0 as f64);
    }
}

/// What the query service's `/metrics` shows: the process's own metrics, consumer lag and
/// the event store's figures. A figure that cannot be read is left out and says why in a
/// comment, rather than failing the scrape.
pub async fn metrics_text(pool: &PgPool, relay: &str, monitor: Option<&lag::LagMonitor>) -> String {
    let mut out = telemetry::render();
    if let Some(monitor) = monitor {
        render_monitor(monitor, &mut out);
    }
    match EsFigures::read(pool, relay).await {
        Ok(figures) => figures.render(&mut out),
        Err(err) => {
            tracing::warn!(%err, "cannot read the event store's figures for /metrics");
            out.push_str("# the event store's figures could not be read\n");
        }
    }
    out
}

/// `/ops`: the dashboard page and its assets, bundled in the binary.
pub(crate) fn page_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ops", get(|| asset("text/html; charset=utf-8", PAGE)))
        .route("/ops/", get(|| asset("text/html; charset=utf-8", PAGE)))
        .route(
            "/ops/ops.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/ops/ops.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("ops.js");
const STYLE: &str = include_str!("ops.css");

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
