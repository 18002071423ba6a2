//! Liveness and readiness as every service reports them, so `/health` and `/ready` answer
//! the same way whichever port an orchestrator probes.

use serde_json::{json, Value};
use sqlx::PgPool;

/// The body of `/health`: the process is up.
pub fn alive() -> Value {
    json!({ "status": "ok" })
}

/// Whether the database answers, and the body of `/ready` saying so. The cause of a
/// failure is logged, not shown to whoever probes.
pub async fn ready(pool: &PgPool) -> (bool, Value) {
    match sqlx::query("select 1").execute(pool).await {
        Ok(_) => (true, json!({ "status": "ready" })),
        Err(err) => {
            tracing::warn!(%err, "readiness check: the database does not answer");
            (
                false,
                json!({ "status": "unavailable", "error": "the database does not answer" }),
            )
        }
    }
}
