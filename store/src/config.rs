//! [`DatabaseArgs`]: how every role reaches the event store.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// Database flags shared by every role (flattened into each role's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL holding the event store and read models.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Connections this process may hold; Postgres' own limit is shared by every role.
    #[arg(long, env = "ORDERFLOW_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            db_max_connections: 16,
        }
    }

    /// A pool, without touching the schema.
    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new()
            .max_connections(self.db_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.database_url)
            .await
    }

    /// A pool on a database whose schema is up to date.
    pub async fn connect_and_migrate(&self) -> Result<PgPool, crate::StoreError> {
        let pool = self.connect().await?;
        crate::MIGRATOR
            .run(&pool)
            .await
            .map_err(|err| crate::StoreError::Database(err.into()))?;
        Ok(pool)
    }
}
