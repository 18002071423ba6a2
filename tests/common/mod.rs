//! What the binary's tests share: where the test database and broker are, free ports.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use sqlx::PgPool;
use tokio::net::TcpListener;

pub const BIN: &str = env!("CARGO_BIN_EXE_orderflow");

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS names the test broker (scripts/test sets it)")
}

/// The URL of the test's own database.
pub fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options
            .get_database()
            .expect("the test database has a name")
    )
}

pub async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    listener.local_addr().unwrap()
}
