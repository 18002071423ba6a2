//! Checking a live projection against a fresh fold of the event store, on a live system.
//!
//! Everything happens in one repeatable-read transaction, which sees the live tables and
//! the store as they were at one instant while workers and queries go on: it takes only
//! the share locks any query takes, held to its end. A replay's swap of the same
//! projection, which needs the tables to itself, waits for it (and gives up after its
//! attempts if a verification runs for longer than a minute); the snapshot also holds
//! back vacuum while it lasts. The live checkpoints say, per stream, the last version the
//! live tables have applied; the fold replays exactly those versions of each stream (and
//! nothing of a stream the live tables have not started) into temporary copies of the
//! tables, which vanish with the transaction. A projection's rows depend on each stream's
//! events in order and never on how streams interleave, so a correct live table equals
//! that fold row for row, however far behind the store it is; how far is reported apart.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use orderflow_store::read_snapshot_after;
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::engine::Engine;
use crate::replay::{MAX_ROWS, WRITE_EVERY};
use crate::{Projection, ProjectionError, Tables};

/// How a verification reads and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Events per read of the store.
    pub batch_size: i64,
    /// Differing rows named in the report, per table.
    pub samples: i64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            batch_size: 10_000,
            samples: 5,
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    #[serde(serialize_with = "name")]
    pub projection: &'static dyn Projection,
    /// Events of the consumed stream types read from the store.
    pub events: u64,
    /// Events folded: those the live checkpoints say were applied.
    pub applied: u64,
    /// Events the fold skipped as undecodable or refused (as the live worker dead-letters
    /// them).
    pub rejected: u64,
    /// Streams with events the live tables have not applied yet (lag, not a difference).
    pub streams_behind: i64,
    /// Each table, checkpoints first.
    pub tables: Vec<TableDiff>,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Rows missing, extra or different, over every table.
    pub fn differences(&self) -> i64 {
        self.tables.iter().map(TableDiff::differences).sum()
    }
}

/// One live table against its rebuilt copy, rows matched by primary key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableDiff {
    pub table: &'static str,
    /// Rows in the live table.
    pub live: i64,
    /// Rows in the rebuilt copy.
    pub rebuilt: i64,
    /// Rows the fold made that the live table lacks.
    pub missing: i64,
    /// Rows of the live table the fold did not make.
    pub extra: i64,
    /// Rows in both whose columns differ.
    pub different: i64,
    /// Up to [`VerifyOptions::samples`] of the rows above.
    pub samples: Vec<Difference>,
}

impl TableDiff {
    pub fn differences(&self) -> i64 {
        self.missing + self.extra + self.different
    }
}

/// One row that differs: its primary key (comma-separated) and, when it is in both
/// tables, the columns whose values differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// `missing`, `extra` or `different`.
    pub kind: String,
    pub key: String,
    pub columns: Vec<String>,
}

fn name<S: serde::Serializer>(projection: &&dyn Projection, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(projection.name())
}

fn seconds<S: serde::Serializer>(elapsed: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(elapsed.as_secs_f64())
}

/// Rebuild `projection` into temporary tables as far as its live checkpoints say it has
/// applied each stream, and compare every table with the live one.
#[tracing::instrument(skip_all, fields(%projection), err)]
pub async fn verify(
    pool: &PgPool,
    projection: &'static dyn Projection,
    options: VerifyOptions,
) -> Result<VerifyReport, ProjectionError> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // The isolation level must be set before the transaction's first query; a fold that
    // fails leaves nothing behind (the temporary tables go with the rollback).
    sqlx::raw_sql(
        "set transaction isolation level repeatable read; \
         set local synchronous_commit = off; set local plan_cache_mode = force_custom_plan",
    )
    .execute(&mut *tx)
    .await?;
    let live = projection.tables();
    let temp = projection.verify_tables();
    let applied = live_checkpoints(&mut tx, live).await?;
    let streams_behind = streams_behind(&mut tx, projection, live).await?;
    for (live, temp) in live.all().into_iter().zip(temp.all()) {
        let sql =
            format!("create temporary table {temp} (like {live} including all) on commit drop");
        sqlx::query(&sql).execute(&mut *tx).await?;
    }

    let mut report = VerifyReport {
        projection,
        events: 0,
        applied: 0,
        rejected: 0,
        streams_behind,
        tables: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let mut engine = Engine::new(projection, temp, true);
    let mut position = 0;
    loop {
        let page = read_snapshot_after(
            &mut *tx,
            position,
            projection.stream_types(),
            options.batch_size,
        )
        .await?;
        let Some(last) = page.last() else { break };
        position = last.position;
        report.events += page.len() as u64;
        let page = page.into_iter().filter(|event| {
            applied
                .get(&event.stream_id)
                .is_some_and(|&version| event.version <= version)
        });
        let planned = engine.plan(&mut tx, page.map(Cow::Owned)).await?;
        report.applied += planned.len() as u64;
        report.rejected += engine.fold(&mut tx, planned).await?.len() as u64;
        if engine.pending() >= WRITE_EVERY || engine.cached() >= MAX_ROWS {
            engine.flush(&mut tx).await?;
            engine.clear();
        }
    }
    engine.flush(&mut tx).await?;

    for (live, temp) in live.all().into_iter().zip(temp.all()) {
        report
            .tables
            .push(compare(&mut tx, live, temp, options.samples).await?);
    }
    tx.rollback().await?;
    report.elapsed = started.elapsed();
    tracing::info!(
        events = report.events,
        applied = report.applied,
        differences = report.differences(),
        streams_behind = report.streams_behind,
        seconds = report.elapsed.as_secs_f64(),
        "verified"
    );
    Ok(report)
}

/// The last version the live tables applied, per stream.
async fn live_checkpoints(
    conn: &mut PgConnection,
    live: Tables,
) -> Result<HashMap<Uuid, i32>, sqlx::Error> {
    let sql = format!("select stream_id, version from {}", live.checkpoints);
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(&sql).fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().collect())
}

/// Streams the projection consumes whose last stored version is past the live checkpoint.
async fn streams_behind(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    live: Tables,
) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "select count(*) from (select stream_id, max(version) as version from events \
         where stream_type = any($1) group by stream_id) stored \
         left join {} applied using (stream_id) \
         where applied.version is null or applied.version < stored.version",
        live.checkpoints
    );
    sqlx::query_scalar(&sql)
        .bind(projection.stream_types())
        .fetch_one(&mut *conn)
        .await
}

/// Counts rows missing from, extra in and different in `live` against `rebuilt`, matched by
/// the live table's primary key, and names a few of each.
async fn compare(
    conn: &mut PgConnection,
    live: &'static str,
    rebuilt: &'static str,
    samples: i64,
) -> Result<TableDiff, sqlx::Error> {
    let key: Vec<String> = sqlx::query_scalar(
        "select a.attname::text from pg_index i \
         join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
         where i.indrelid = $1::text::regclass and i.indisprimary \
         order by array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(live)
    .fetch_all(&mut *conn)
    .await?;
    let Some(first) = key.first() else {
        return Err(sqlx::Error::Protocol(format!(
            "{live} has no primary key to match rows by"
        )));
    };
    let on = key
        .iter()
        .map(|column| format!("l.{column} = r.{column}"))
        .collect::<Vec<_>>()
        .join(" and ");
    let joined = format!("from {live} l full join {rebuilt} r on {on}");
    let differs = "row(l.*) is distinct from row(r.*)";
    let counts = sqlx::query(&format!(
        "select count(l.{first}) as live, count(r.{first}) as rebuilt, \
         count(*) filter (where l.{first} is null) as missing, \
         count(*) filter (where r.{first} is null) as extra, \
         count(*) filter (where l.{first} is not null and r.{first} is not null and {differs}) \
           as different \
         {joined}"
    ))
    .fetch_one(&mut *conn)
    .await?;
    let key_text = key
        .iter()
        .map(|column| format!("coalesce(l.{column}, r.{column})::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "select case when l.{first} is null then 'missing' when r.{first} is null then 'extra' \
                else 'different' end as kind, \
         concat_ws(',', {key_text}) as key, \
         array(select a.key from jsonb_each(to_jsonb(l)) a join jsonb_each(to_jsonb(r)) b \
               using (key) where a.value is distinct from b.value order by a.key) as columns \
         {joined} where l.{first} is null or r.{first} is null or {differs} \
         order by 2 limit $1"
    ))
    .bind(samples)
    .fetch_all(&mut *conn)
    .await?;
    Ok(TableDiff {
        table: live,
        live: counts.try_get("live")?,
        rebuilt: counts.try_get("rebuilt")?,
        missing: counts.try_get("missing")?,
        extra: counts.try_get("extra")?,
        different: counts.try_get("different")?,
        samples: rows
            .iter()
            .map(|row| {
                Ok(Difference {
                    kind: row.try_get("kind")?,
                    key: row.try_get("key")?,
                    columns: row.try_get("columns")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?,
    })
}
