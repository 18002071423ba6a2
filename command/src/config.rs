//! [`CommandArgs`]: flags of `orderflow command`.

use std::net::SocketAddr;

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
