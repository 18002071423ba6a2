//! The `sagas` table: the schedule orchestrators claim work from, and the saga's state as
//! columns for operators and the query side.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orderflow_domain::saga::Saga;
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

/// A placed order whose saga should exist.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub correlation_id: Uuid,
}

/// Creates the rows of newly placed orders, due now; a repeat is ignored.
pub async fn create(pool: &PgPool, placed: &[Placed]) -> sqlx::Result<u64> {
    if placed.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&Placed) -> Uuid| placed.iter().map(f).collect::<Vec<_>>();
    let done = sqlx::query(
        "insert into sagas (saga_id, order_id, placed_event_id, correlation_id, wake_at) \
         select s, o, e, c, now() from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[]) \
         as u(s, o, e, c) on conflict do nothing",
    )
    .bind(column(|p| p.saga_id))
    .bind(column(|p| p.order_id))
    .bind(column(|p| p.event_id))
    .bind(column(|p| p.correlation_id))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Asks for a look at the sagas of these orders now (e.g. the user cancelled them). A saga
/// an orchestrator holds is not made due (that would let a second claim take it): its
/// holder sees the bumped count when it hands the saga back and makes it due then.
pub async fn nudge_orders(pool: &PgPool, order_ids: &[Uuid]) -> sqlx::Result<()> {
    if order_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update sagas set wake_at = case when claimed_by is null then now() else wake_at end, \
         nudges = nudges + 1 where order_id = any($1) and state in ('RUNNING', 'COMPENSATING')",
    )
    .bind(order_ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Asks for a look at one saga now (an operator resumed it).
pub async fn nudge(pool: &PgPool, saga_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update sagas set wake_at = case when claimed_by is null then now() else wake_at end, \
         nudges = nudges + 1 where saga_id = $1",
    )
    .bind(saga_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A saga an orchestrator has claimed until its lease runs out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub placed_event_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub nudges: i32,
    /// The saga stream's version the row mirrored when claimed (0: not started).
    pub version: i32,
    /// Identifies this claim (`<instance>/<uuid>`): only its holder renews or releases it.
    pub claimed_by: String,
    /// Failed advances in a row so far.
    pub errors: i32,
}

/// Claims up to `limit` due sagas for `instance`, each for `lease`. Rows locked by another
/// claimer are skipped, and a claimed row is not due again until its lease runs out (the
/// claimer renews it while it works), so a saga is advanced by one claim at a time unless
/// its claimer stalls for longer than the lease.
pub async fn claim(
    pool: &PgPool,
    limit: usize,
    lease: Duration,
    instance: &str,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "update sagas s set wake_at = now() + make_interval(secs => $2), \
         claimed_by = $3 || '/' || gen_random_uuid() \
         from (select saga_id from sagas where wake_at <= now() order by wake_at \
         limit $1 for update skip locked) due where s.saga_id = due.saga_id \
         returning s.saga_id, s.order_id, s.placed_event_id, s.correlation_id, s.nudges, \
         s.version, s.claimed_by, s.errors",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(lease.as_secs_f64())
    .bind(instance)
    .fetch_all(pool)
    .await
}

/// Extends a claim by `lease` from now; `false` if the claim is no longer held.
pub async fn renew(pool: &PgPool, claimed: &Claimed, lease: Duration) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update sagas set wake_at = now() + make_interval(secs => $3) \
         where saga_id = $1 and claimed_by = $2",
    )
    .bind(claimed.saga_id)
    .bind(&claimed.claimed_by)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Hands back a claim whose advance failed, due again at `wake`, with the error shown.
pub async fn release_failed(
    pool: &PgPool,
    claimed: &Claimed,
    wake: DateTime<Utc>,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update sagas set wake_at = case when nudges = $2 then $3 else now() end, \
         claimed_by = null, errors = errors + 1, last_error = $4, updated_at = now() \
         where saga_id = $1 and claimed_by = $5",
    )
    .bind(claimed.saga_id)
    .bind(claimed.nudges)
    .bind(wake)
    .bind(error)
    .bind(&claimed.claimed_by)
    .execute(pool)
    .await?;
    Ok(())
}

/// Hands a claimed saga back, due again at `wake` (never, if `None`), unless someone asked
/// for a look meanwhile or another instance claimed it after the lease ran out; and mirrors
/// `saga` at its version into the row, unless the row already mirrors a later one.
pub async fn release(
    pool: &PgPool,
    claimed: &Claimed,
    wake: Option<DateTime<Utc>>,
    saga: Option<(&Saga, i32)>,
) -> sqlx::Result<()> {
    let instance = claimed.claimed_by.as_str();
    let Some((saga, version)) = saga else {
        sqlx::query(
            "update sagas set wake_at = case when nudges = $2 then $3::timestamptz else now() end, \
             claimed_by = null, errors = 0, last_error = null \
             where saga_id = $1 and claimed_by = $4",
        )
        .bind(claimed.saga_id)
        .bind(claimed.nudges)
        .bind(wake)
        .bind(instance)
        .execute(pool)
        .await?;
        return Ok(());
    };
    // One statement for both: the mirror columns change only for a later version, the
    // schedule only for the instance that still holds the claim.
    let mine = "claimed_by = $4";
    let newer = "version <= $9";
    let columns = mirror_set(5, |column, value| {
        format!("{column} = case when {newer} then {value} else {column} end")
    });
    let sql = format!(
        "update sagas set {columns}, \
         updated_at = case when {newer} then now() else updated_at end, \
         wake_at = case when {mine} then (case when nudges = $2 then $3::timestamptz else now() end) \
         else wake_at end, \
         claimed_by = case when {mine} then null else claimed_by end, \
         errors = case when {mine} then 0 else errors end, \
         last_error = case when {mine} then null else last_error end \
         where saga_id = $1 and ({mine} or {newer})"
    );
    let query = sqlx::query(&sql)
        .bind(claimed.saga_id)
        .bind(claimed.nudges)
        .bind(wake)
        .bind(instance);
    bind_mirror(query, saga, version).execute(pool).await?;
    Ok(())
}

/// The row's columns that mirror the saga, in the order [`bind_mirror`] binds them.
const MIRRORED: [&str; 11] = [
    "state",
    "step",
    "reason",
    "detail",
    "version",
    "attempts",
    "deadline",
    "retry_at",
    "steps",
    "started_at",
    "finished_at",
];

/// The assignments of the mirrored columns, bound from `$first` on, each as `assign`
/// writes it from the column's name and its parameter.
fn mirror_set(first: usize, assign: impl Fn(&str, String) -> String) -> String {
    MIRRORED
        .iter()
        .enumerate()
        .map(|(i, column)| assign(column, format!("${}", first + i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds the saga at `version`, as [`MIRRORED`] lists its columns.
fn bind_mirror<'q>(
    query: Query<'q, Postgres, PgArguments>,
    saga: &'q Saga,
    version: i32,
) -> Query<'q, Postgres, PgArguments> {
    let steps = serde_json::to_value(saga.steps()).expect("step records serialize");
    query
        .bind(saga.status().as_str())
        .bind(saga.step().as_str())
        .bind(saga.reason().map(|reason| reason.as_str()))
        .bind(saga.detail())
        .bind(version)
        .bind(i32::try_from(saga.attempts()).unwrap_or(i32::MAX))
        .bind(saga.deadline())
        .bind(saga.retry_at())
        .bind(steps)
        .bind(saga.started_at())
        .bind(saga.finished_at())
}

/// Mirrors the saga at `version` into its row, unless the row already mirrors a later one.
pub async fn sync(pool: &PgPool, saga_id: Uuid, saga: &Saga, version: i32) -> sqlx::Result<()> {
    let columns = mirror_set(2, |column, value| format!("{column} = {value}"));
    // `version` is the fifth mirrored column: `$6`.
    let sql = format!(
        "update sagas set {columns}, updated_at = now() where saga_id = $1 and version <= $6"
    );
    bind_mirror(sqlx::query(&sql).bind(saga_id), saga, version)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops the row of an order that has no saga to run (never placed in the store).
pub async fn forget(pool: &PgPool, saga_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("delete from sagas where saga_id = $1 and version = 0")
        .bind(saga_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A saga as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaRow {
    pub saga_id: Uuid,
    pub order_id: Uuid,
    /// RUNNING, COMPENSATING, CONFIRMED, CANCELLED or STUCK.
    pub state: String,
    /// reserve, authorize, complete or compensate.
    pub step: String,
    /// Why the order was cancelled: out_of_stock, payment_declined, payment_unavailable,
    /// timeout or cancelled_by_user.
    pub reason: Option<String>,
    /// The last failure, or why the saga compensates or is stuck.
    pub detail: Option<String>,
    /// Failures of the current step since it last made progress.
    pub attempts: i32,
    pub deadline: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    /// When an orchestrator will next look at it; null when finished or stuck.
    pub wake_at: Option<DateTime<Utc>>,
    /// Version of the saga stream the row reflects.
    pub version: i32,
    /// Failed attempts to advance it at all since the last that succeeded, and the last
    /// such failure (the database was unreachable, a stream could not be read, ...).
    pub errors: i32,
    pub last_error: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub steps: serde_json::Value,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const ROW_COLUMNS: &str = "saga_id, order_id, state, step, reason, detail, attempts, deadline, \
     retry_at, wake_at, version, errors, last_error, steps, started_at, finished_at, updated_at";

/// A saga by its id or its order's id.
pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<SagaRow>> {
    sqlx::query_as(&format!(
        "select {ROW_COLUMNS} from sagas where saga_id = $1 or order_id = $1 limit 1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Sagas in `state` (all when `None`), oldest first, at most `limit`.
pub async fn list(pool: &PgPool, state: Option<&str>, limit: i64) -> sqlx::Result<Vec<SagaRow>> {
    sqlx::query_as(&format!(
        "select {ROW_COLUMNS} from sagas where $1::text is null or state = $1 \
         order by created_at, saga_id limit $2"
    ))
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await
}
