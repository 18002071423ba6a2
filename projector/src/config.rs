//! Flags of `orderflow projector` and `orderflow replay`.

use orderflow_kafka::KafkaArgs;
use orderflow_store::DatabaseArgs;

use crate::worker::WorkerOptions;
use crate::{Projection, ReplayOptions};

/// Projector workers: consume the events topics and keep the read models current.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectorArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Projections this process maintains (comma separated); instances share partitions per projection.
    #[arg(long = "projection", env = "ORDERFLOW_PROJECTIONS", value_delimiter = ',',
          default_value = "all", value_parser = parse_selection)]
    pub projections: Vec<Vec<Projection>>,
    /// Consumer groups are `<prefix>.<projection>`.
    #[arg(
        long,
        env = "ORDERFLOW_GROUP_PREFIX",
        default_value = "orderflow.projector"
    )]
    pub group_prefix: String,
    /// Records applied per Postgres transaction.
    #[arg(
        long = "projector-batch-size",
        env = "ORDERFLOW_PROJECTOR_BATCH_SIZE",
        default_value_t = 500
    )]
    pub batch_size: usize,
}

impl ProjectorArgs {
    pub fn selected(&self) -> Vec<Projection> {
        flatten(&self.projections)
    }

    pub fn options(&self) -> WorkerOptions {
        WorkerOptions {
            group_prefix: self.group_prefix.clone(),
            batch_size: self.batch_size,
            ..WorkerOptions::default()
        }
    }
}

/// Rebuild read models from the event store and swap them in while queries go on.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// order_view, user_view, product_view or all (comma separated).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_selection)]
    pub projection: Vec<Vec<Projection>>,
    /// No progress bar (for scripts); the summary line is still printed.
    #[arg(long)]
    pub quiet: bool,
    /// Events per read of the store.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: i64,
}

impl ReplayArgs {
    pub fn selected(&self) -> Vec<Projection> {
        flatten(&self.projection)
    }

    pub fn options(&self) -> ReplayOptions {
        ReplayOptions {
            batch_size: self.batch_size,
            progress: !self.quiet,
        }
    }
}

/// `all` or one projection's name.
pub fn parse_selection(value: &str) -> Result<Vec<Projection>, String> {
    if value == "all" {
        return Ok(Projection::ALL.to_vec());
    }
    value.parse::<Projection>().map(|p| vec![p]).map_err(|_| {
        format!("unknown projection {value:?}: expected order_view, user_view, product_view or all")
    })
}

fn flatten(selections: &[Vec<Projection>]) -> Vec<Projection> {
    let mut selected: Vec<Projection> = selections.iter().flatten().copied().collect();
    selected.sort_unstable();
    selected.dedup();
    selected
}
