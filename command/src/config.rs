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
}
