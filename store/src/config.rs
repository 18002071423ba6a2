//! [`DatabaseArgs`]: how every role reaches the event store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

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
        self.pool_options()
            .connect_with(PgConnectOptions::from_str(&self.database_url)?)
            .await
    }

    /// A pool for the write path, on an up-to-date schema, whose connections always use
    /// generic plans: its statements are short, shaped alike and answered from indexes, and
    /// PostgreSQL would otherwise plan each execution of the multi-part append again (a
    /// third of its time under load, measured with `perf`).
    pub async fn connect_for_writes(&self) -> Result<PgPool, crate::StoreError> {
        let options = PgConnectOptions::from_str(&self.database_url)?
            .options([("plan_cache_mode", "force_generic_plan")]);
        let pool = self.pool_options().connect_with(options).await?;
        migrate(&pool).await?;
        Ok(pool)
    }

    /// Every pool: a connection is pinged before use only when it sat idle for a second. A
    /// ping per acquisition is a round trip more per statement under load (sqlx's default;
    /// a composed GraphQL query acquires several times), and a connection in use a moment
    /// ago is alive.
    fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.db_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
    }

    /// A pool on a database whose schema is up to date.
    pub async fn connect_and_migrate(&self) -> Result<PgPool, crate::StoreError> {
        let pool = self.connect().await?;
        migrate(&pool).await?;
        Ok(pool)
    }
}

/// A migration that failed because the database could not serve is
/// [`crate::StoreError::Unavailable`], as any other statement would be.
async fn migrate(pool: &PgPool) -> Result<(), crate::StoreError> {
    use sqlx::migrate::MigrateError;
    crate::MIGRATOR.run(pool).await.map_err(|err| {
        let unavailable = match &err {
            MigrateError::Execute(err) | MigrateError::ExecuteMigration(err, _) => {
                crate::error::unavailable(err)
            }
            _ => false,
        };
        if unavailable {
            crate::StoreError::Unavailable(err.into())
        } else {
            crate::StoreError::Database(err.into())
        }
    })
}

/// `250ms`, `5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 5s or 2m"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => number
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long")),
        other => Err(format!("unknown duration unit {other:?} (use ms, s or m)")),
    }
}
