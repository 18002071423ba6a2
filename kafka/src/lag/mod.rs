//! The consumer-lag monitor: samples the broker (log start and end of every partition,
//! each watched group's committed offsets and members, the timestamp of each lagging
//! partition's first unconsumed record) at a fixed interval, and keeps the latest
//! [`LagReport`] for `/metrics`, GraphQL, `/ops` and `orderflow lag`. The rules live in [`eval`], apart from the I/O, and are tested there.

pub mod eval;
pub mod prometheus;
mod sampler;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

pub use eval::{EvalConfig, GroupLag, LagReport, PartitionLag, Status, TopicLag};
pub use sampler::Sampler;

use crate::KafkaArgs;

/// A consumer group and the topics it consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub group: String,
    pub topics: Vec<String>,
}

/// The `--lag-*` flags of every role that runs a monitor, and of `orderflow lag`.
#[derive(Debug, Clone, clap::Args)]
pub struct LagArgs {
    /// Milliseconds between samples of the broker's offsets.
    #[arg(long, env = "ORDERFLOW_LAG_INTERVAL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub lag_interval_ms: u64,
    /// Samples in the window a status is judged over: a lagging group whose offsets stand
    /// still for `(window − 1) × interval` is STALL (STOP after twice that when the broker
    /// does not say who is in the group; one of the platform's groups with no members is STOP
    /// as soon as it is behind).
    #[arg(long, env = "ORDERFLOW_LAG_WINDOW", default_value_t = 12,
          value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub lag_window: u64,
    /// Consumer groups to watch besides orderflow's own, comma separated; each is watched
    /// on every orderflow topic it has committed offsets on.
    #[arg(long, env = "ORDERFLOW_LAG_EXTRA_GROUPS", value_delimiter = ',')]
    pub lag_extra_groups: Vec<String>,
    /// Hours a group that is behind, has no members and makes no progress stays reported.
    #[arg(long, env = "ORDERFLOW_LAG_RETENTION_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub lag_retention_hours: u64,
}

impl Default for LagArgs {
    fn default() -> Self {
        Self {
            lag_interval_ms: 5000,
            lag_window: 12,
            lag_extra_groups: Vec::new(),
            lag_retention_hours: 168,
        }
    }
}

impl LagArgs {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.lag_interval_ms)
    }

    pub fn eval_config(&self) -> EvalConfig {
        let mut config = EvalConfig::new(self.lag_window as usize, self.interval());
        config.retention = Duration::from_secs(self.lag_retention_hours * 3600);
        config
    }
}

/// The running monitor's output: cheap to clone, read by any number of tasks.
#[derive(Debug, Clone)]
pub struct LagMonitor {
    latest: watch::Receiver<Arc<LagReport>>,
}

impl LagMonitor {
    /// Start sampling `groups` (plus `args.lag_extra_groups`) every interval until
    /// `shutdown` flips. The first report comes after the first sample.
    pub fn spawn(
        kafka: &KafkaArgs,
        args: &LagArgs,
        groups: Vec<GroupSpec>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (tx, latest) = watch::channel(Arc::new(LagReport::empty()));
        let monitor = Self { latest };
        let kafka = kafka.clone();
        let args = args.clone();
        tokio::spawn(async move {
            let mut evaluator = eval::Evaluator::new(args.eval_config());
            let mut sampler = None;
            let mut ticks = tokio::time::interval(args.interval());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
                let report = sample_once(
                    &mut sampler,
                    &kafka,
                    &groups,
                    &args.lag_extra_groups,
                    &mut evaluator,
                )
                .await;
                if tx.send(Arc::new(report)).is_err() {
                    break;
                }
            }
        });
        monitor
    }

    /// The latest report (an empty one that says so before the first sample).
    pub fn latest(&self) -> Arc<LagReport> {
        self.latest.borrow().clone()
    }

    /// Wait for the next report.
    pub async fn changed(&mut self) -> Option<Arc<LagReport>> {
        self.latest.changed().await.ok()?;
        Some(self.latest())
    }
}

/// One sample through `sampler` (created on first use, and again after a failure), judged
/// by `evaluator`. The broker calls block, so they run off the async threads.
pub async fn sample_once(
    sampler: &mut Option<Sampler>,
    kafka: &KafkaArgs,
    groups: &[GroupSpec],
    extra_groups: &[String],
    evaluator: &mut eval::Evaluator,
) -> LagReport {
    let now_ms = Utc::now().timestamp_millis();
    let taken = sampler.take();
    let kafka = kafka.clone();
    let groups = groups.to_vec();
    let extra = extra_groups.to_vec();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut sampler = match taken {
            Some(sampler) => sampler,
            None => Sampler::new(&kafka)?,
        };
        // The sampler is kept whatever the outcome: its clients reconnect by themselves,
        // and what it carries forward outlives a failed sample.
        let observation = sampler.observe(&groups, &extra);
        Ok::<_, rdkafka::error::KafkaError>((sampler, observation))
    })
    .await;
    match outcome.map(|created| {
        created.map(|(kept, observation)| {
            *sampler = Some(kept);
            observation
        })
    }) {
        Ok(Ok(Ok(observation))) => evaluator.observe(observation),
        Ok(Ok(Err(err)) | Err(err)) => {
            tracing::warn!(%err, "sampling consumer lag failed");
            evaluator.observe_failure(now_ms, format!("reading offsets from the broker: {err}"))
        }
        Err(err) => evaluator.observe_failure(now_ms, format!("the sampler panicked: {err}")),
    }
}
