//! The stored first response of each idempotent command.

use sqlx::{PgConnection, PgExecutor};

use crate::{unique_violation, StoreError};

/// The response recorded for an idempotency key, and what request it answered.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredResponse {
    /// A digest of method, path and body: the same key with another request is a client bug.
    pub fingerprint: String,
    pub status: i16,
    pub response: serde_json::Value,
}

pub async fn find<'e>(
    executor: impl PgExecutor<'e>,
    key: &str,
) -> Result<Option<StoredResponse>, StoreError> {
    Ok(
        sqlx::query_as("select fingerprint, status, response from idempotency_keys where key = $1")
            .bind(key)
            .fetch_optional(executor)
            .await?,
    )
}

/// Record the response in the command's own transaction. `Ok(false)` means a concurrent
/// retry recorded it first: roll back and answer with [`find`].
pub async fn record(
    conn: &mut PgConnection,
    key: &str,
    stored: &StoredResponse,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "insert into idempotency_keys (key, fingerprint, status, response) values ($1, $2, $3, $4)",
    )
    .bind(key)
    .bind(&stored.fingerprint)
    .bind(stored.status)
    .bind(&stored.response)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(err) if unique_violation(&err) == Some("idempotency_keys_pkey") => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Forget responses recorded before `older_than` ago: a retry that late is a new command.
/// Command ids under this prefix are the saga's own (`saga:<saga id>:<action>`): clients
/// may not use it, and they are kept while their saga runs (a saga resumed after any pause
/// must find what its earlier commands answered), then expire like the others once it has
/// finished.
pub const RESERVED_PREFIX: &str = "saga:";

pub async fn expire<'e>(
    executor: impl PgExecutor<'e>,
    older_than: std::time::Duration,
) -> Result<u64, StoreError> {
    let seconds = older_than.as_secs_f64();
    Ok(sqlx::query(
        "delete from idempotency_keys k where k.created_at < now() - make_interval(secs => $1) \
         and (k.key not like 'saga:%' or exists (select 1 from sagas s \
         where s.saga_id::text = split_part(k.key, ':', 2) and s.finished_at is not null))",
    )
    .bind(seconds)
    .execute(executor)
    .await?
    .rows_affected())
}
