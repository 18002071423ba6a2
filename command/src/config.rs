//! Flags of `orderflow command` ([`CommandArgs`]), `orderflow relay` ([`RelayArgs`]) and
//! `orderflow saga` ([`SagaArgs`]).

use std::net::SocketAddr;
use std::time::Duration;

use orderflow_store::config::parse_duration;
use orderflow_store::DatabaseArgs;

/// The command service: REST commands that append to the event store.
#[derive(Debug, Clone, clap::Args)]
pub struct CommandArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address the REST API listens on.
    #[arg(
        long = "listen",
        env = "ORDERFLOW_COMMAND_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// Aggregates kept in memory after a write, so the next command on the stream decides
    /// without reading it (stale entries are caught by the append's version check); 0 reads
    /// every time.
    #[arg(
        long,
        env = "ORDERFLOW_AGGREGATE_CACHE",
        default_value_t = crate::startup::DEFAULT_AGGREGATE_CACHE
    )]
    pub aggregate_cache: usize,
    #[command(flatten)]
    pub auth: orderflow_store::auth::AuthArgs,
    #[command(flatten)]
    pub edge: orderflow_store::edge::EdgeArgs,
    /// Serve `/metrics` on this address instead of the API port (so that it can stay off
    /// a public listener).
    #[arg(long, env = "ORDERFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl CommandArgs {
    /// The API's guards from the flags; refused without a key to verify tokens with,
    /// unless `--insecure-no-auth`.
    pub fn api_options(&self) -> Result<crate::startup::ApiOptions, String> {
        // Limits that cannot be built are refused here too, before the database.
        orderflow_store::edge::Edge::new(self.edge.clone(), orderflow_store::edge::Shape::Rest)?;
        Ok(crate::startup::ApiOptions {
            auth: self.auth.auth()?,
            edge: self.edge.clone(),
            metrics_on_api: self.metrics_listen.is_none(),
        })
    }
}

/// The outbox relay: publishes committed events to Kafka.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: orderflow_kafka::KafkaArgs,
    /// Cursor name; relays with one name share one cursor and one active instance.
    #[arg(
        long = "relay-name",
        env = "ORDERFLOW_RELAY_NAME",
        default_value = "default"
    )]
    pub name: String,
    /// Events per publish round trip.
    #[arg(
        long = "relay-batch-size",
        env = "ORDERFLOW_RELAY_BATCH_SIZE",
        default_value_t = 1000
    )]
    pub batch_size: i64,
    /// Address of `/health`, `/ready` (with the reasons when not ready) and `/metrics`.
    #[arg(long, env = "ORDERFLOW_OPS_LISTEN", default_value = "127.0.0.1:9471")]
    pub ops_listen: std::net::SocketAddr,
}

impl RelayArgs {
    pub fn options(&self) -> crate::relay::RelayOptions {
        crate::relay::RelayOptions {
            name: self.name.clone(),
            batch_size: self.batch_size,
            ..Default::default()
        }
    }
}

/// The saga orchestrator: runs the fulfilment saga of every placed order.
#[derive(Debug, Clone, clap::Args)]
pub struct SagaArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: orderflow_kafka::KafkaArgs,
    #[command(flatten)]
    pub saga: SagaFlags,
    #[command(flatten)]
    pub gateway: crate::saga::gateway::SimulatorArgs,
    #[command(flatten)]
    pub lag: orderflow_kafka::lag::LagArgs,
    /// Address of `/health`, `/ready` (with the reasons when not ready) and `/metrics`.
    #[arg(long, env = "ORDERFLOW_OPS_LISTEN", default_value = "127.0.0.1:9473")]
    pub ops_listen: std::net::SocketAddr,
}

/// How sagas run; shared by `orderflow saga` and `orderflow dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct SagaFlags {
    /// How long reserving stock, and authorizing the payment, may each take before the saga
    /// gives up and compensates.
    #[arg(long = "saga-step-timeout", env = "ORDERFLOW_SAGA_STEP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub step_timeout: Duration,
    /// Failures of a completing or compensating action before the saga is parked as STUCK
    /// for an operator (`POST /api/sagas/{id}/retry` resumes it).
    #[arg(long = "saga-max-attempts", env = "ORDERFLOW_SAGA_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,
    /// Sagas this instance advances at once.
    #[arg(long = "saga-concurrency", env = "ORDERFLOW_SAGA_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// How long a claimed saga stays with this instance unless renewed (it is renewed while
    /// the instance works on it); if the instance dies, another takes the saga over after
    /// this. At least twice --gateway-timeout.
    #[arg(long = "saga-lease", env = "ORDERFLOW_SAGA_LEASE", default_value = "15s", value_parser = parse_duration)]
    pub lease: Duration,
    /// A payment provider call slower than this counts as failed (outcome unknown; retried
    /// with the same idempotency key).
    #[arg(long = "gateway-timeout", env = "ORDERFLOW_GATEWAY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub gateway_timeout: Duration,
    /// Consecutive provider failures that open the circuit breaker.
    #[arg(long = "gateway-breaker-failures", env = "ORDERFLOW_GATEWAY_BREAKER_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before letting one probe through.
    #[arg(long = "gateway-breaker-open", env = "ORDERFLOW_GATEWAY_BREAKER_OPEN", default_value = "5s", value_parser = parse_duration)]
    pub breaker_open: Duration,
}

impl SagaFlags {
    /// Refuses settings under which a live instance could lose a saga it is working on.
    pub fn validate(&self) -> Result<(), String> {
        let hour = Duration::from_secs(3600);
        if !(Duration::from_secs(1)..=hour).contains(&self.lease) {
            return Err("--saga-lease must be between 1s and 1h".into());
        }
        if self.gateway_timeout.is_zero() || self.gateway_timeout > hour {
            return Err("--gateway-timeout must be longer than zero and at most 1h".into());
        }
        if self.step_timeout.is_zero() || self.breaker_open.is_zero() {
            return Err(
                "--saga-step-timeout and --gateway-breaker-open must be longer than zero".into(),
            );
        }
        if self.lease < self.gateway_timeout * 2 {
            return Err(format!(
                "--saga-lease ({:?}) must be at least twice --gateway-timeout ({:?}), so a claim outlives any provider call",
                self.lease, self.gateway_timeout
            ));
        }
        Ok(())
    }

    pub fn options(&self) -> crate::saga::SagaOptions {
        crate::saga::SagaOptions {
            step_timeout: self.step_timeout,
            max_attempts: self.max_attempts,
            concurrency: self.concurrency as usize,
            lease: self.lease,
            ..Default::default()
        }
    }

    pub fn resilience(&self) -> crate::saga::gateway::ResilienceOptions {
        crate::saga::gateway::ResilienceOptions {
            call_timeout: self.gateway_timeout,
            failure_threshold: self.breaker_failures,
            open_for: self.breaker_open,
        }
    }
}
