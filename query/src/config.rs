//! [`QueryArgs`]: the flags of `orderflow query`, and [`QueryOptions`], the limits the service
//! runs with (what tests and `orderflow dev` build directly).

use std::net::SocketAddr;
use std::time::Duration;

pub use orderflow_store::config::parse_duration;
use orderflow_store::DatabaseArgs;

/// Largest `--max-page-size` accepted; also caps the page size that query complexity is
/// computed with, so complexity stays meaningful whatever `first` a client sends.
pub const PAGE_SIZE_CEILING: u32 = 1000;

/// Page size when a query gives no `first`.
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// The GraphQL query service: composed order, user and product views over the read models.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address the GraphQL API and its playground listen on.
    #[arg(
        long = "listen",
        env = "ORDERFLOW_QUERY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// How long `order(id, minVersion)` waits for the projectors to reach that version
    /// before answering STALE: bounds how long a client's read-your-writes can hold a
    /// request (and a connection) open. Accepts `500ms`, `5s`, `1m`.
    #[arg(
        long,
        env = "ORDERFLOW_QUERY_MIN_VERSION_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub min_version_timeout: Duration,
    /// Longest a query or mutation may execute before it is answered TIMEOUT, so a slow or
    /// abusive query cannot hold database connections indefinitely. Must exceed
    /// `--min-version-timeout` so that waits end as STALE, not TIMEOUT.
    #[arg(
        long,
        env = "ORDERFLOW_QUERY_TIMEOUT",
        default_value = "15s",
        value_parser = parse_duration
    )]
    pub query_timeout: Duration,
    /// Largest `first` a connection accepts; a larger one is refused (BAD_USER_INPUT) rather
    /// than silently shortened, so a client never mistakes a clamped page for the whole list.
    #[arg(
        long,
        env = "ORDERFLOW_QUERY_MAX_PAGE_SIZE",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(PAGE_SIZE_CEILING))
    )]
    pub max_page_size: u32,
    /// Deepest field nesting a query may have (introspection fields excluded, so tools keep
    /// working): stops queries that walk order → user → orders → ... to multiply work.
    #[arg(long, env = "ORDERFLOW_QUERY_MAX_DEPTH", default_value_t = 10)]
    pub max_depth: usize,
    /// Largest complexity a query may have: one per field, lists multiplied by their
    /// `first`, so a query's cost is bounded before it runs.
    #[arg(long, env = "ORDERFLOW_QUERY_MAX_COMPLEXITY", default_value_t = 5000)]
    pub max_complexity: usize,
    /// How often orders that someone waits on (`minVersion`, `orderUpdated`) are re-read
    /// when no `order_view_changed` notification arrives: the safety net for a projector
    /// that does not notify and for notifications lost while the listener reconnects.
    #[arg(
        long,
        env = "ORDERFLOW_QUERY_POLL_INTERVAL",
        default_value = "100ms",
        value_parser = parse_duration
    )]
    pub poll_interval: Duration,
    /// Most `minVersion` waits and `orderUpdated` subscriptions open at once in this
    /// process; beyond it they are refused (TOO_MANY_WATCHES) so that waiters cannot grow
    /// memory and the poller's statement without bound.
    #[arg(long, env = "ORDERFLOW_QUERY_MAX_WATCHES", default_value_t = 10_000)]
    pub max_watches: usize,
    /// How long the batching loader collects ids before it runs one statement for them:
    /// longer batches better under load (fewer, larger statements per page), at the cost
    /// of that much latency per level of nesting.
    #[arg(
        long,
        env = "ORDERFLOW_QUERY_BATCH_DELAY",
        default_value = "2ms",
        value_parser = parse_duration
    )]
    pub batch_delay: Duration,
    /// The relay whose cursor `X-Min-Position` reads are measured against: the
    /// `--relay-name` of the relay publishing to the projectors' topics.
    #[arg(long, env = "ORDERFLOW_RELAY_NAME", default_value = "default")]
    pub relay_name: String,
    /// The broker whose consumer groups the lag monitor watches (`/ops`, `/metrics`, the
    /// `consumerGroups` field).
    #[command(flatten)]
    pub kafka: orderflow_kafka::KafkaArgs,
    #[command(flatten)]
    pub lag: orderflow_kafka::lag::LagArgs,
    /// Projector consumer groups are `<prefix>.<projection>`: the groups the monitor watches.
    #[arg(
        long,
        env = "ORDERFLOW_GROUP_PREFIX",
        default_value = "orderflow.projector"
    )]
    pub group_prefix: String,
    #[command(flatten)]
    pub auth: orderflow_store::auth::AuthArgs,
    #[command(flatten)]
    pub edge: orderflow_store::edge::EdgeArgs,
    /// Serve `/metrics` on this address instead of the GraphQL port (so that it can stay
    /// off a public listener).
    #[arg(long, env = "ORDERFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl QueryArgs {
    /// The limits the service runs with; refuses combinations that cannot work.
    pub fn options(&self) -> anyhow::Result<QueryOptions> {
        let options = QueryOptions {
            min_version_timeout: self.min_version_timeout,
            query_timeout: self.query_timeout,
            max_page_size: self.max_page_size,
            max_depth: self.max_depth,
            max_complexity: self.max_complexity,
            poll_interval: self.poll_interval,
            max_watches: self.max_watches,
            batch_delay: self.batch_delay,
            relay_name: self.relay_name.clone(),
            lag: None,
            auth: self.auth.auth().map_err(anyhow::Error::msg)?,
            // Refused here, before the database, if it cannot be built.
            edge: {
                orderflow_store::edge::Edge::new(
                    self.edge.clone(),
                    orderflow_store::edge::Shape::GraphQl,
                )
                .map_err(anyhow::Error::msg)?;
                self.edge.clone()
            },
            metrics_on_api: self.metrics_listen.is_none(),
        };
        options.validate()?;
        Ok(options)
    }
}

/// What the service enforces; see [`QueryArgs`] for why each exists.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub min_version_timeout: Duration,
    pub query_timeout: Duration,
    pub max_page_size: u32,
    pub max_depth: usize,
    pub max_complexity: usize,
    pub poll_interval: Duration,
    pub max_watches: usize,
    pub batch_delay: Duration,
    pub relay_name: String,
    /// The consumer-lag monitor behind the ops fields, `/ops` and `/metrics`; without one
    /// they show the event store's figures only.
    pub lag: Option<orderflow_kafka::lag::LagMonitor>,
    /// Who may ask: off by default here (tests, embedding); `orderflow query` refuses to
    /// start without a key unless told `--insecure-no-auth`.
    pub auth: orderflow_store::auth::Auth,
    /// Rate limits, timeout, concurrency bound and CORS of the GraphQL routes.
    pub edge: orderflow_store::edge::EdgeArgs,
    /// Serve `/metrics` on the GraphQL port (off when it has a listener of its own).
    pub metrics_on_api: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            min_version_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(15),
            max_page_size: 100,
            max_depth: 10,
            max_complexity: 5000,
            poll_interval: Duration::from_millis(100),
            max_watches: 10_000,
            batch_delay: Duration::from_millis(2),
            relay_name: "default".to_owned(),
            lag: None,
            auth: orderflow_store::auth::Auth::Off,
            edge: orderflow_store::edge::EdgeArgs::default(),
            metrics_on_api: true,
        }
    }
}

impl QueryOptions {
    /// Fails on limits that would make the service misbehave rather than merely be strict.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.query_timeout > self.min_version_timeout,
            "the query timeout ({:?}) must exceed the minVersion timeout ({:?})",
            self.query_timeout,
            self.min_version_timeout
        );
        anyhow::ensure!(
            (1..=PAGE_SIZE_CEILING).contains(&self.max_page_size),
            "the maximum page size must be between 1 and {PAGE_SIZE_CEILING}"
        );
        anyhow::ensure!(
            !self.poll_interval.is_zero(),
            "the poll interval must be positive"
        );
        anyhow::ensure!(
            self.edge.request_timeout > self.query_timeout,
            "the request timeout ({:?}) must exceed the query timeout ({:?}), so that a slow query is answered TIMEOUT in GraphQL's shape",
            self.edge.request_timeout,
            self.query_timeout
        );
        anyhow::ensure!(
            self.max_watches > 0,
            "the maximum number of watches must be positive"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        query: QueryArgs,
    }

    #[test]
    fn durations_are_read_in_milliseconds_seconds_or_minutes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn the_defaults_match_the_documented_options() {
        let cli = Cli::parse_from([
            "query",
            "--database-url",
            "postgres://localhost/x",
            "--insecure-no-auth",
        ]);
        // Debug output compares every field (the lag monitor is started by the caller; the
        // library's default has no rate limits).
        assert_eq!(
            format!("{:?}", cli.query.options().unwrap()),
            format!(
                "{:?}",
                QueryOptions {
                    edge: cli.query.edge.clone(),
                    ..QueryOptions::default()
                }
            )
        );
        assert_eq!(cli.query.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn a_query_timeout_shorter_than_the_min_version_wait_is_refused() {
        let cli = Cli::parse_from([
            "query",
            "--database-url",
            "postgres://localhost/x",
            "--query-timeout",
            "2s",
            "--insecure-no-auth",
        ]);
        assert!(cli.query.options().is_err());
    }

    #[test]
    fn a_page_size_above_the_ceiling_is_refused() {
        let parsed = Cli::try_parse_from([
            "query",
            "--database-url",
            "postgres://localhost/x",
            "--max-page-size",
            "5000",
        ]);
        assert!(parsed.is_err());
    }
}
