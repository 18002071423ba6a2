//! Flags of `orderflow projector` and `orderflow replay`.

use orderflow_kafka::KafkaArgs;
use orderflow_store::DatabaseArgs;

use crate::projection::names_or;
use crate::worker::WorkerOptions;
use crate::{find, Projection, ReplayOptions, PROJECTIONS};

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
    pub projections: Vec<Vec<&'static dyn Projection>>,
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
    /// How long a busy worker waits for more records beyond what it has already fetched
    /// before applying a batch, with its unit (e.g. 20ms): fewer, larger transactions for
    /// that much freshness. 0ms (the default) applies what has been fetched at once;
    /// batches still grow with the load.
    #[arg(
        long = "projector-linger",
        env = "ORDERFLOW_PROJECTOR_LINGER",
        default_value = "0ms",
        value_parser = parse_linger
    )]
    pub linger: std::time::Duration,
    #[command(flatten)]
    pub lag: orderflow_kafka::lag::LagArgs,
    /// Address of `/health`, `/ready` (with the reasons when not ready) and `/metrics`.
    #[arg(long, env = "ORDERFLOW_OPS_LISTEN", default_value = "127.0.0.1:9472")]
    pub ops_listen: std::net::SocketAddr,
}

/// A duration with its unit, at most 10 s: a bare number would read as seconds, a thousand
/// times the milliseconds a linger is usually given in.
fn parse_linger(text: &str) -> Result<std::time::Duration, String> {
    if text.trim().chars().all(|c| c.is_ascii_digit()) && text.trim() != "0" {
        return Err(format!("{text:?} needs a unit, e.g. {}ms", text.trim()));
    }
    let linger = orderflow_store::config::parse_duration(text)?;
    if linger > std::time::Duration::from_secs(10) {
        return Err(format!("{text:?} is longer than 10s"));
    }
    Ok(linger)
}

impl ProjectorArgs {
    pub fn selected(&self) -> Vec<&'static dyn Projection> {
        flatten(&self.projections)
    }

    pub fn options(&self) -> WorkerOptions {
        WorkerOptions {
            group_prefix: self.group_prefix.clone(),
            batch_size: self.batch_size,
            linger: self.linger,
            ..WorkerOptions::default()
        }
    }
}

/// Rebuild read models from the event store and swap them in while queries go on.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Which read models to rebuild; the help text lists every registered projection.
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_selection,
          help = format!("{} (comma separated)", names_or(["all"])))]
    pub projection: Vec<Vec<&'static dyn Projection>>,
    /// No progress bar (for scripts); the summary line is still printed.
    #[arg(long)]
    pub quiet: bool,
    /// Events per read of the store.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: i64,
}

impl ReplayArgs {
    pub fn selected(&self) -> Vec<&'static dyn Projection> {
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
pub fn parse_selection(value: &str) -> Result<Vec<&'static dyn Projection>, String> {
    if value == "all" {
        return Ok(PROJECTIONS.to_vec());
    }
    find(value).map(|p| vec![p]).map_err(|_| {
        format!(
            "unknown projection {value:?}: expected {}",
            names_or(["all"])
        )
    })
}

/// Each selected projection once, in the order of [`PROJECTIONS`].
pub fn flatten(selections: &[Vec<&'static dyn Projection>]) -> Vec<&'static dyn Projection> {
    PROJECTIONS
        .iter()
        .copied()
        .filter(|projection| selections.iter().flatten().any(|p| p == projection))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(projections: &[&dyn Projection]) -> Vec<&'static str> {
        projections.iter().map(|p| p.name()).collect()
    }

    #[test]
    fn all_or_a_name_selects_projections_once_each_in_registry_order() {
        let all = ["order_view", "user_view", "product_view", "payment_view"];
        assert_eq!(names(&parse_selection("all").unwrap()), all);
        let selections: Vec<_> = ["product_view", "order_view", "all", "order_view"]
            .into_iter()
            .map(|value| parse_selection(value).unwrap())
            .collect();
        assert_eq!(names(&flatten(&selections)), all);
        let selections = [
            parse_selection("product_view").unwrap(),
            parse_selection("user_view").unwrap(),
        ];
        assert_eq!(names(&flatten(&selections)), ["user_view", "product_view"]);
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        assert_eq!(
            parse_selection("orders").map(|selected| names(&selected)),
            Err(
                "unknown projection \"orders\": expected order_view, user_view, product_view, \
                 payment_view or all"
                    .to_owned()
            )
        );
    }

    #[test]
    fn a_linger_needs_its_unit_and_stays_short() {
        use std::time::Duration;
        assert_eq!(parse_linger("0"), Ok(Duration::ZERO));
        assert_eq!(parse_linger("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_linger("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_linger("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_linger("20"),
            Err("\"20\" needs a unit, e.g. 20ms".to_owned())
        );
        assert_eq!(
            parse_linger("1m"),
            Err("\"1m\" is longer than 10s".to_owned())
        );
    }
}
