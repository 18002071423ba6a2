//! Rebuilding a projection from the event store: fold everything into shadow tables, then
//! in one transaction catch up on what was written meanwhile and swap them in.
//!
//! Live workers keep applying to the live tables during a replay and hand over by
//! checkpoint: the swap waits for their batch in flight, locks the live tables, reads what
//! was committed since the replay's last read and applies it to the shadow tables, then
//! drops the live tables and renames the shadow ones. Whatever a worker applied before the
//! swap was committed to the store before it was published, so the catch-up read sees it;
//! after the swap the worker's events at or below the new checkpoints are duplicates and
//! later ones are applied, with gaps filled from the store.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use orderflow_store::{read_after, Cursor, StoreError, StoredEvent};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row};
use tokio::sync::mpsc;

use crate::engine::{lock_writers, Engine};
use crate::{Projection, ProjectionError, Rejected, Tables};

/// The advisory-lock class that keeps replays of one projection from overlapping.
const REPLAY_LOCK: i32 = 0x6f66_7072; // "ofpr"

/// Events folded between two writes of the shadow tables (each write commits): keeps
/// writes large, each row written about once.
pub(crate) const WRITE_EVERY: usize = 100_000;

/// Rows held in memory that also trigger a write, and are then forgotten: bounds memory
/// however many entities the events touch.
pub(crate) const MAX_ROWS: usize = 200_000;

/// How long the swap waits to lock the live tables. Every query that comes meanwhile
/// queues behind its request, so a long query holding a live table would otherwise stop
/// all reads for as long as it runs; after this the swap lets them through and retries.
const SWAP_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// Swap attempts before the replay gives up with [`ProjectionError::SwapLockTimeout`].
const SWAP_ATTEMPTS: u32 = 30;

/// The pause after a timed-out swap attempt, times the attempt (up to 5): time for the
/// queued queries and the live worker's batches to get through.
const SWAP_BACKOFF: Duration = Duration::from_millis(100);

/// How a replay reads and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Events per read of the store.
    pub batch_size: i64,
    /// Draw a progress bar (events/s and ETA) on stderr; `--quiet` turns it off.
    pub progress: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            batch_size: 10_000,
            progress: true,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    pub projection: &'static dyn Projection,
    /// Events read from the store, of every stream type.
    pub events: u64,
    /// Events folded: those of streams the projection consumes.
    pub applied: u64,
    /// Events that could not be decoded or applied (logged, and skipped like a live
    /// worker's dead letters).
    pub rejected: u64,
    /// Of `events`, those read by the final catch-up inside the swap transaction.
    pub caught_up: u64,
    pub elapsed: Duration,
}

impl ReplayReport {
    /// Events read per second of the whole replay, swap included.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Rebuild from the event store into shadow tables and swap in one transaction.
///
/// Queries keep reading the live tables until the swap, which blocks them only while it
/// catches up and renames, or for at most a couple of seconds while it waits for a long
/// query to let go of a live table; it then retries, and after many attempts gives up with
/// [`ProjectionError::SwapLockTimeout`]. One replay per projection runs at a time; another
/// one fails with [`ProjectionError::ReplayRunning`].
#[tracing::instrument(skip_all, fields(%projection), err)]
pub async fn replay(
    pool: &PgPool,
    projection: &'static dyn Projection,
    options: ReplayOptions,
) -> Result<ReplayReport, ProjectionError> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, $2)")
        .bind(REPLAY_LOCK)
        .bind(projection.lock_id())
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Err(ProjectionError::ReplayRunning(projection));
    }
    let outcome = run(pool, &mut conn, projection, options, started).await;
    release(conn, projection).await;
    let report = outcome?;
    tracing::info!(
        events = report.events,
        applied = report.applied,
        rejected = report.rejected,
        caught_up = report.caught_up,
        seconds = report.elapsed.as_secs_f64(),
        events_per_second = report.events_per_second() as u64,
        "replay swapped in"
    );
    Ok(report)
}

/// Unlocks the replay lock; a connection that cannot is closed, which unlocks it too.
async fn release(mut conn: PoolConnection<Postgres>, projection: &dyn Projection) {
    let unlocked = sqlx::query("select pg_advisory_unlock($1, $2)")
        .bind(REPLAY_LOCK)
        .bind(projection.lock_id())
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        drop(conn.detach());
    }
}

async fn run(
    pool: &PgPool,
    conn: &mut PgConnection,
    projection: &'static dyn Projection,
    options: ReplayOptions,
    started: Instant,
) -> Result<ReplayReport, ProjectionError> {
    let shadow = projection.shadow_tables();
    create_shadow_tables(conn, projection.tables(), shadow).await?;
    let total: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&mut *conn)
        .await?;
    let bar = progress_bar(projection, total, options.progress);
    let mut report = ReplayReport {
        projection,
        events: 0,
        applied: 0,
        rejected: 0,
        caught_up: 0,
        elapsed: Duration::ZERO,
    };

    // Reading runs ahead on its own connection while this one folds and writes.
    let (pages, mut received) = mpsc::channel(2);
    let reader = tokio::spawn(read_pages(
        pool.clone(),
        options.batch_size,
        total.max(0) as u64,
        pages,
    ));
    let mut engine = Engine::new(projection, shadow, true);
    let mut cursor = Cursor::default();
    let mut tx = begin_quick(conn).await?;
    while let Some(page) = received.recv().await {
        let page = page?;
        let Some(last) = page.last() else { break };
        cursor = Cursor::after(last);
        bar.inc(page.len() as u64);
        fold_page(&mut engine, &mut tx, page, &mut report).await?;
        if engine.pending() >= WRITE_EVERY || engine.cached() >= MAX_ROWS {
            engine.flush(&mut tx).await?;
            engine.clear();
            tx.commit().await?;
            tx = begin_quick(conn).await?;
        }
    }
    engine.flush(&mut tx).await?;
    tx.commit().await?;
    reader
        .await
        .map_err(|err| sqlx::Error::Io(std::io::Error::other(err)))?;

    bar.set_message("catching up and swapping");
    swap(conn, projection, &mut engine, cursor, options, &mut report).await?;
    bar.set_length(report.events);
    bar.set_position(report.events);
    bar.finish_with_message("swapped in");
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Pages of the store in commit order until a read comes back empty and at least
/// `at_least` events (those committed when the replay started) have been read.
///
/// The gap-safe reader stops at the oldest transaction still running anywhere in the
/// cluster, so right after a commit it can come back empty with committed events waiting:
/// the replay waits for them rather than swapping in a model that lacks them.
async fn read_pages(
    pool: PgPool,
    batch_size: i64,
    at_least: u64,
    pages: mpsc::Sender<Result<Vec<StoredEvent>, StoreError>>,
) {
    let mut cursor = Cursor::default();
    let mut read = 0u64;
    let mut waiting_since: Option<Instant> = None;
    loop {
        let page = read_after(&pool, cursor, batch_size).await;
        if let Ok(page) = &page {
            match page.last() {
                Some(last) => {
                    cursor = Cursor::after(last);
                    read += page.len() as u64;
                    waiting_since = None;
                }
                None if read >= at_least => return,
                None => {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(
                            read,
                            at_least,
                            "waiting for an older transaction to finish before reading on"
                        );
                        waiting_since = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let failed = page.is_err();
        if pages.send(page).await.is_err() || failed {
            return;
        }
    }
}

async fn fold_page(
    engine: &mut Engine,
    conn: &mut PgConnection,
    page: Vec<StoredEvent>,
    report: &mut ReplayReport,
) -> Result<(), ProjectionError> {
    report.events += page.len() as u64;
    let planned = engine.plan(conn, page.into_iter().map(Cow::Owned)).await?;
    report.applied += planned.len() as u64;
    let rejected = engine.fold(conn, planned).await?;
    report.rejected += rejected.len() as u64;
    for Rejected {
        position,
        stream_id,
        version,
        error,
    } in rejected
    {
        tracing::warn!(position, %stream_id, version, error, "replay skipped an event");
    }
    Ok(())
}

/// A transaction whose commit does not wait for the disk: a crash loses only shadow rows
/// that the next replay rebuilds anyway. The shadow tables have no statistics yet, so each
/// lookup is planned for the table as it is, never with a plan cached while it was empty.
async fn begin_quick(
    conn: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, Postgres>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(
        "set local synchronous_commit = off; set local plan_cache_mode = force_custom_plan",
    )
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Fresh, empty copies of the live tables with their columns, defaults, constraints and
/// indexes; a crashed replay's leftovers are dropped first.
async fn create_shadow_tables(
    conn: &mut PgConnection,
    live: Tables,
    shadow: Tables,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    for (live, shadow) in live.all().into_iter().zip(shadow.all()) {
        let sql = format!(
            "drop table if exists {shadow}; create table {shadow} (like {live} including all)"
        );
        sqlx::raw_sql(&sql).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Catch up on events committed since `cursor` and swap the shadow tables in, in one
/// transaction; retried while it times out waiting for a lock.
///
/// A rolled-back attempt changes nothing in the database, so the shadow tables stay what
/// `run` committed and the next attempt reads again from `cursor`. Only memory can be ahead:
/// the engine may have folded a catch-up that was rolled back, so a retry starts from a
/// fresh engine that loads what it needs from the shadow tables, and counts into a fresh
/// copy of the report.
async fn swap(
    conn: &mut PgConnection,
    projection: &'static dyn Projection,
    engine: &mut Engine,
    cursor: Cursor,
    options: ReplayOptions,
    report: &mut ReplayReport,
) -> Result<(), ProjectionError> {
    for attempt in 1..=SWAP_ATTEMPTS {
        if attempt > 1 {
            *engine = Engine::new(projection, projection.shadow_tables(), false);
        }
        let mut counted = report.clone();
        let mut tx = conn.begin().await?;
        let outcome =
            catch_up_and_swap(&mut tx, projection, engine, cursor, options, &mut counted).await;
        match outcome {
            Ok(()) => {
                tx.commit().await?;
                *report = counted;
                return Ok(());
            }
            Err(err) if is_lock_timeout(&err) => {
                tx.rollback().await?;
                if attempt < SWAP_ATTEMPTS {
                    tracing::warn!(
                        attempt,
                        attempts = SWAP_ATTEMPTS,
                        timeout_ms = SWAP_LOCK_TIMEOUT.as_millis() as u64,
                        "the swap could not lock the live tables in time (a long query holds \
                         them?), letting the queries queued behind it through and trying again"
                    );
                    tokio::time::sleep(SWAP_BACKOFF * attempt.min(5)).await;
                }
            }
            Err(err) => {
                tx.rollback().await?;
                return Err(err);
            }
        }
    }
    Err(ProjectionError::SwapLockTimeout {
        projection,
        attempts: SWAP_ATTEMPTS,
        timeout: SWAP_LOCK_TIMEOUT,
    })
}

/// One attempt of [`swap`], inside `tx`, which the caller commits or rolls back.
async fn catch_up_and_swap(
    tx: &mut PgConnection,
    projection: &'static dyn Projection,
    engine: &mut Engine,
    mut cursor: Cursor,
    options: ReplayOptions,
    report: &mut ReplayReport,
) -> Result<(), ProjectionError> {
    let live = projection.tables();
    let shadow = projection.shadow_tables();
    // Let the live worker's batch in flight commit: waiting for it queues no reader.
    lock_writers(tx, projection).await?;
    // Then keep every writer and reader out. Queries that come while the lock request
    // waits queue behind it, so it waits only so long before giving up and trying again.
    let sql = format!("set local lock_timeout = {}", SWAP_LOCK_TIMEOUT.as_millis());
    sqlx::raw_sql(&sql).execute(&mut *tx).await?;
    let sql = format!(
        "lock table {} in access exclusive mode",
        live.all().join(", ")
    );
    sqlx::query(&sql).execute(&mut *tx).await?;

    // Read everything before writing anything: once this transaction has an id of its own,
    // the gap-safe reader stops below it.
    let mut tail = Vec::new();
    loop {
        let page = read_after(&mut *tx, cursor, options.batch_size).await?;
        let Some(last) = page.last() else { break };
        cursor = Cursor::after(last);
        tail.extend(page);
    }
    report.caught_up = tail.len() as u64;
    fold_page(engine, tx, tail, report).await?;
    engine.flush(tx).await?;

    for (live, shadow) in live.all().into_iter().zip(shadow.all()) {
        let names = indexes(tx, live).await?;
        let sql = format!("drop table {live}; alter table {shadow} rename to {live}");
        sqlx::raw_sql(&sql).execute(&mut *tx).await?;
        restore_index_names(tx, live, names).await?;
    }
    Ok(())
}

/// The database gave up waiting for a lock (`lock_not_available`).
fn is_lock_timeout(err: &ProjectionError) -> bool {
    match err {
        ProjectionError::Database(sqlx::Error::Database(db))
        | ProjectionError::Store(StoreError::Database(sqlx::Error::Database(db))) => {
            db.code().as_deref() == Some("55P03")
        }
        _ => false,
    }
}

/// `(name, shape)` of each index on `table`; the shape is the definition without the
/// index's and table's names, the same for a table and its `like ... including all` copy.
async fn indexes(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "select c.relname::text as name, pg_get_indexdef(i.indexrelid) as definition \
         from pg_index i join pg_class c on c.oid = i.indexrelid \
         where i.indrelid = $1::text::regclass order by c.relname",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let definition: String = row.try_get("definition")?;
            Ok((row.try_get("name")?, shape(&definition)))
        })
        .collect()
}

fn shape(definition: &str) -> String {
    let unique = definition.starts_with("CREATE UNIQUE");
    let body = definition
        .split_once(" USING ")
        .map_or(definition, |(_, body)| body);
    format!("{unique} {body}")
}

/// Gives the swapped-in table's indexes (named after the shadow table by `like`) the
/// names the live table's had, so names never drift and the next shadow copy never
/// collides. Renaming a constraint's index renames the constraint too.
async fn restore_index_names(
    conn: &mut PgConnection,
    table: &str,
    mut wanted: Vec<(String, String)>,
) -> Result<(), sqlx::Error> {
    for (name, shape) in indexes(conn, table).await? {
        let Some(at) = wanted.iter().position(|(_, wanted)| *wanted == shape) else {
            tracing::warn!(
                index = name,
                table,
                "an index of the new table matches none of the old"
            );
            continue;
        };
        let (old_name, _) = wanted.swap_remove(at);
        if old_name != name {
            let sql = format!(
                "alter index {} rename to {}",
                quote(&name),
                quote(&old_name)
            );
            sqlx::query(&sql).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn progress_bar(projection: &'static dyn Projection, total: i64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{elapsed_precise}] [{wide_bar}] {human_pos}/{human_len} events \
         {rate} ETA {eta} {msg}",
    )
    .expect("the template is valid")
    .with_key(
        "rate",
        |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{:.0} events/s", state.per_sec());
        },
    )
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(projection.name());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_and_its_like_copy_have_the_same_shape() {
        let live = "CREATE INDEX order_view_user_idx ON public.order_view USING btree \
                    (user_id, created_at DESC, order_id DESC)";
        let copy = "CREATE INDEX order_view_shadow_user_id_created_at_order_id_idx ON \
                    public.order_view_shadow USING btree (user_id, created_at DESC, order_id DESC)";
        assert_eq!(shape(live), shape(copy));
        let unique =
            "CREATE UNIQUE INDEX order_view_pkey ON public.order_view USING btree (order_id)";
        let plain = "CREATE INDEX order_view_id_idx ON public.order_view USING btree (order_id)";
        assert_ne!(shape(unique), shape(plain));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("order_view_pkey"), "\"order_view_pkey\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
