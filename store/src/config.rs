//! [`DatabaseArgs`]: how every role reaches the event store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
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

    /// A pool, without touching the schema. Connections are not pinged before each use
    /// (a round trip per statement on the write path); one the server dropped fails its
    /// statement, which every caller already treats as a transient error.
    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        self.connect_with(|options| options).await
    }

    /// A pool for the write path, on an up-to-date schema, whose connections always use
    /// generic plans: its statements are short, shaped alike and answered from indexes, and
    /// PostgreSQL would otherwise plan each execution of the multi-part append again (a
    /// third of its time under load, measured with `perf`).
    pub async fn connect_for_writes(&self) -> Result<PgPool, crate::StoreError> {
        let pool = self
            .connect_with(|options| options.options([("plan_cache_mode", "force_generic_plan")]))
            .await?;
        migrate(&pool).await?;
        Ok(pool)
    }

    async fn connect_with(
        &self,
        configure: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
    ) -> Result<PgPool, sqlx::Error> {
        let options = configure(PgConnectOptions::from_str(&self.database_url)?);
        PgPoolOptions::new()
            .max_connections(self.db_max_connections)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
    }

    /// A pool on a database whose schema is up to date.
    pub async fn connect_and_migrate(&self) -> Result<PgPool, crate::StoreError> {
        let pool = self.connect().await?;
        migrate(&pool).await?;
        Ok(pool)
    }
}

async fn migrate(pool: &PgPool) -> Result<(), crate::StoreError> {
    crate::MIGRATOR
        .run(pool)
        .await
        .map_err(|err| crate::StoreError::Database(err.into()))
}
