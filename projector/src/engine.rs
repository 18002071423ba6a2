//! The fold shared by live batches and replays: checkpoints decide what is new, gaps are
//! filled from the store, events are decoded and folded into rows held in memory, and the
//! changed rows are written back with one multi-row statement per table.

use std::borrow::Cow;
use std::collections::HashMap;

use orderflow_store::lookup::by_keys;
use orderflow_store::{read_stream, StoredEvent};
use sqlx::{Connection, Executor as _, PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::cache::Cache;
use crate::error::Rejection;
use crate::event::{chain, decode};
use crate::{Projection, ProjectionError, Rejected, Rows, Tables};

/// The advisory-lock class of projection writers (the object is [`Projection::lock_id`]).
pub const WRITER_LOCK: i32 = 0x6f66_7077; // "ofpw"

/// Apply a batch of the store's events (any stream types, in delivery order) to
/// `projection`'s live tables inside `tx`, which must be a transaction the caller commits.
///
/// Per stream, a version at or below the checkpoint is a duplicate and skipped, the next
/// version is applied, and a later one first gets the missing versions from the event
/// store. Events of streams the projection does not consume are skipped and not
/// checkpointed. An event that cannot be decoded or applied comes back as [`Rejected`] (to
/// dead-letter) while the rest applies; an `Err` means nothing should be committed.
///
/// Writers of one projection take turns on a transaction-scoped advisory lock: rows such
/// as a user's totals are fed by every order partition, and read-modify-write by two
/// workers at once would lose updates. A replay's swap takes the same lock.
///
/// `tx` must be inside a transaction (PostgreSQL refuses the savepoint otherwise); the
/// savepoint `orderflow_batch`, which a refused write rolls back to, is left for the
/// transaction's end. The live worker, whose records come off the broker, uses
/// [`begin_batch`] (the lock and the savepoint with the `BEGIN`) and [`apply_records`]
/// instead, and commits its Kafka offsets after the transaction.
#[tracing::instrument(skip_all, fields(%projection, events = events.len()), err)]
pub async fn apply_batch(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    events: &[StoredEvent],
) -> Result<Vec<Rejected>, ProjectionError> {
    tx.execute(sqlx::raw_sql(&open_batch(projection))).await?;
    let mut engine = Engine::new(projection, projection.tables(), false);
    let planned = engine.plan(tx, events.iter().map(Cow::Borrowed)).await?;
    apply_planned(tx, projection, engine, planned).await
}

/// The writers' lock and the savepoint a refused write rolls back to; the savepoint needs
/// no release (the transaction's commit ends it).
fn open_batch(projection: &dyn Projection) -> String {
    format!(
        "select pg_advisory_xact_lock({WRITER_LOCK}, {}); savepoint {BATCH_SAVEPOINT}",
        projection.lock_id()
    )
}

/// Begins a live batch's transaction on `conn`, holding `projection`'s writers' lock, with
/// the savepoint [`apply_records`] rolls back to: one round trip.
///
/// On an error after the `BEGIN` (the lock waited past a `lock_timeout`, or was
/// cancelled), the connection is left inside an aborted transaction that sqlx does not
/// know of, and nothing rolls it back: the caller must not reuse it (for a pool's
/// connection, `PoolConnection::close_on_drop`).
pub async fn begin_batch<'c>(
    conn: &'c mut PgConnection,
    projection: &dyn Projection,
) -> Result<Transaction<'c, Postgres>, sqlx::Error> {
    conn.begin_with(format!("begin; {}", open_batch(projection)))
        .await
}

/// What [`apply_records`] did with a batch of records.
#[derive(Debug, Default)]
pub struct Applied {
    /// Events that could not be decoded or applied, to dead-letter.
    pub rejected: Vec<Rejected>,
    /// For each record, in order: whether the store does not hold its event id at its
    /// stream and version (another environment's record, or a forged one). Those are not
    /// applied, and go to dead letters: applying them would wait for ever for versions the
    /// store does not have. Only the id is compared: a record with a genuine id at its
    /// place is applied from its own payload.
    pub foreign: Vec<bool>,
}

/// [`apply_batch`] for records off the broker, in a transaction from [`begin_batch`]: each
/// record is also checked against the store (the event at its stream and version must
/// carry its event id), in the statement that loads the checkpoints.
#[tracing::instrument(skip_all, fields(%projection, events = events.len()), err)]
pub async fn apply_records(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    events: &[StoredEvent],
) -> Result<Applied, ProjectionError> {
    let mut engine = Engine::new(projection, projection.tables(), false);
    let foreign = engine.check_against_store(tx, events).await?;
    let ours = events
        .iter()
        .zip(&foreign)
        .filter(|(_, foreign)| !**foreign)
        .map(|(event, _)| Cow::Borrowed(event));
    let planned = engine.plan(tx, ours).await?;
    let rejected = apply_planned(tx, projection, engine, planned).await?;
    Ok(Applied { rejected, foreign })
}

/// Folds and writes what [`Engine::plan`] planned, inside the batch's savepoint.
async fn apply_planned(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    mut engine: Engine,
    planned: Vec<Cow<'_, StoredEvent>>,
) -> Result<Vec<Rejected>, ProjectionError> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    match engine.fold_and_flush(tx, planned.clone()).await {
        Ok(rejected) => Ok(rejected),
        Err(err) if err.is_data_error() => {
            tx.execute(ROLLBACK_BATCH).await?;
            tracing::warn!(error = %chain(&err), "a batch write failed, applying its events one by one");
            one_by_one(tx, projection, engine.tables, planned).await
        }
        Err(err) => Err(err),
    }
}

/// Where [`apply_batch`] and [`apply_records`] roll back to when the database refuses the
/// batch's write (not a name sqlx uses for its own savepoints).
const BATCH_SAVEPOINT: &str = "orderflow_batch";
const ROLLBACK_BATCH: &str = "rollback to savepoint orderflow_batch";

/// Waits until no other transaction writes `projection`'s tables; held until commit.
pub(crate) async fn lock_writers(
    conn: &mut PgConnection,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock($1, $2)")
        .bind(WRITER_LOCK)
        .bind(projection.lock_id())
        .execute(conn)
        .await?;
    Ok(())
}

/// After a batch write the database refused: each event in its own savepoint, so the
/// one it refuses is rejected (its checkpoint still moves) and the others apply.
async fn one_by_one(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    tables: Tables,
    planned: Vec<Cow<'_, StoredEvent>>,
) -> Result<Vec<Rejected>, ProjectionError> {
    let mut rejected = Vec::new();
    for event in planned {
        let (position, stream_id, version) = (event.position, event.stream_id, event.version);
        let mut engine = Engine::new(projection, tables, false);
        let mut savepoint = conn.begin().await?;
        match engine.fold_and_flush(&mut savepoint, vec![event]).await {
            Ok(mut refused) => {
                savepoint.commit().await?;
                rejected.append(&mut refused);
            }
            Err(err) if err.is_data_error() => {
                savepoint.rollback().await?;
                let mut engine = Engine::new(projection, tables, false);
                engine.checkpoints.put(stream_id, version);
                engine.flush(conn).await?;
                rejected.push(Rejected::new(
                    position,
                    stream_id,
                    version,
                    Rejection::Database(err),
                ));
            }
            Err(err) => return Err(err),
        }
    }
    Ok(rejected)
}

/// One projection's fold over one set of tables, with the rows it has in memory.
#[derive(Debug)]
pub(crate) struct Engine {
    stream_types: &'static [&'static str],
    tables: Tables,
    checkpoints: Cache<i32>,
    rows: Box<dyn Rows>,
    /// Events folded since the last flush.
    pending: usize,
}

impl Engine {
    /// `complete` when the tables start empty and only this engine writes them (a replay):
    /// nothing is looked up until the first [`Engine::clear`], and checkpoints never are.
    pub(crate) fn new(projection: &dyn Projection, tables: Tables, complete: bool) -> Self {
        Self {
            stream_types: projection.stream_types(),
            tables,
            checkpoints: Cache::new(complete),
            rows: projection.rows(complete),
            pending: 0,
        }
    }

    /// Whether `event` is of a stream type the projection consumes.
    fn consumes(&self, event: &StoredEvent) -> bool {
        self.stream_types.contains(&event.stream_type.as_str())
    }

    /// Events folded and not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Rows held in memory.
    pub(crate) fn cached(&self) -> usize {
        self.rows.cached()
    }

    /// The events to fold, in delivery order: those of consumed streams that are new, each
    /// preceded by any versions missing between its stream's checkpoint and it.
    pub(crate) async fn plan<'a>(
        &mut self,
        conn: &mut PgConnection,
        events: impl IntoIterator<Item = Cow<'a, StoredEvent>>,
    ) -> Result<Vec<Cow<'a, StoredEvent>>, ProjectionError> {
        let events: Vec<_> = events
            .into_iter()
            .filter(|event| self.consumes(event))
            .collect();
        self.load_checkpoints(conn, events.iter().map(|event| event.stream_id))
            .await?;
        let mut next = HashMap::new();
        let mut planned = Vec::with_capacity(events.len());
        for event in events {
            let applied = *next
                .entry(event.stream_id)
                .or_insert_with(|| self.checkpoints.get(&event.stream_id).copied().unwrap_or(0));
            if event.version <= applied {
                continue;
            }
            if event.version > applied + 1 {
                let filled =
                    fill_gap(conn, event.stream_id, applied + 1, event.version - 1).await?;
                planned.extend(filled.into_iter().map(Cow::Owned));
            }
            next.insert(event.stream_id, event.version);
            planned.push(event);
        }
        Ok(planned)
    }

    async fn load_checkpoints(
        &mut self,
        conn: &mut PgConnection,
        streams: impl IntoIterator<Item = Uuid>,
    ) -> Result<(), sqlx::Error> {
        let missing = self.checkpoints.missing(streams);
        if missing.is_empty() {
            return Ok(());
        }
        // A lookup per stream, whatever the table's size when the plan was cached.
        let sql = by_keys(&format!(
            "select stream_id, version from {} where stream_id = k.id",
            self.tables.checkpoints
        ));
        let rows = sqlx::query(&sql)
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?;
        let found = rows
            .iter()
            .map(|row| Ok((row.try_get("stream_id")?, row.try_get("version")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        self.checkpoints.fill(&missing, found);
        Ok(())
    }

    /// For each of `events`, whether the store does not hold it: no event at its stream and
    /// version, or one with another event id. The same statement loads the checkpoints of
    /// the streams consumed.
    ///
    /// Two lookups per record (the event, its stream's checkpoint), each a subquery
    /// PostgreSQL cannot turn into a join: planned on tables not yet analyzed as index
    /// lookups (each later `ANALYZE` plans it again from the tables' sizes), with the
    /// records behind sub-selects so that the plan is kept (as in
    /// [`orderflow_store::lookup::each_key`]). (A join with the records, planned while the
    /// store was small, hashed a scan of every event: about 2 ms a batch, a third of a core
    /// at 1,000 commands/s, until the table was next analyzed.)
    async fn check_against_store(
        &mut self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<Vec<bool>, sqlx::Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let streams: Vec<Uuid> = events.iter().map(|e| e.stream_id).collect();
        let versions: Vec<i32> = events.iter().map(|e| e.version).collect();
        let sql = format!(
            "select d.stream_id, d.version, \
             (select (e.metadata->>'eventId')::uuid from events e \
              where e.stream_id = d.stream_id and e.version = d.version) as event_id, \
             (select c.version from {} c where c.stream_id = d.stream_id) as checkpoint \
             from unnest((select $1::uuid[]), (select $2::int[])) as d(stream_id, version)",
            self.tables.checkpoints
        );
        let rows: Vec<(Uuid, i32, Option<Uuid>, Option<i32>)> = sqlx::query_as(&sql)
            .bind(&streams)
            .bind(&versions)
            .fetch_all(&mut *conn)
            .await?;
        let mut stored = HashMap::with_capacity(rows.len());
        let mut checkpoints = HashMap::with_capacity(rows.len());
        for (stream_id, version, event_id, checkpoint) in rows {
            stored.insert((stream_id, version), event_id);
            if let Some(checkpoint) = checkpoint {
                checkpoints.insert(stream_id, checkpoint);
            }
        }
        let consumed = events.iter().filter(|event| self.consumes(event));
        let missing = self
            .checkpoints
            .missing(consumed.map(|event| event.stream_id));
        let found: Vec<(Uuid, i32)> = missing
            .iter()
            .filter_map(|id| checkpoints.get(id).map(|version| (*id, *version)))
            .collect();
        self.checkpoints.fill(&missing, found);
        Ok(events
            .iter()
            .map(|e| stored.get(&(e.stream_id, e.version)) != Some(&Some(e.metadata.event_id)))
            .collect())
    }

    /// Folds planned events into memory; what cannot be decoded or applied is rejected, and
    /// every planned event moves its stream's checkpoint.
    pub(crate) async fn fold(
        &mut self,
        conn: &mut PgConnection,
        planned: Vec<Cow<'_, StoredEvent>>,
    ) -> Result<Vec<Rejected>, ProjectionError> {
        let mut rejected = Vec::new();
        let mut envelopes = Vec::with_capacity(planned.len());
        let count = planned.len();
        for event in planned {
            self.checkpoints.put(event.stream_id, event.version);
            let (position, stream_id, version) = (event.position, event.stream_id, event.version);
            match decode(event) {
                Ok(envelope) => envelopes.push(envelope),
                Err(unreadable) => rejected.push(Rejected::new(
                    position,
                    stream_id,
                    version,
                    unreadable.into(),
                )),
            }
        }
        self.rows.load(conn, self.tables, &envelopes).await?;
        for envelope in &envelopes {
            if let Err(refusal) = self.rows.apply(envelope) {
                rejected.push(Rejected::new(
                    envelope.position,
                    envelope.stream_id,
                    envelope.version,
                    refusal.into(),
                ));
            }
        }
        self.pending += count;
        rejected.sort_by_key(|rejected| rejected.position);
        Ok(rejected)
    }

    /// Writes every changed row and checkpoint.
    pub(crate) async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        self.rows.flush(conn, self.tables).await?;
        let (checkpoints, _) = self.checkpoints.changes();
        if !checkpoints.is_empty() {
            let sql = format!(
                "insert into {} (stream_id, version) \
                 select * from unnest($1::uuid[], $2::int[]) \
                 on conflict (stream_id) do update set version = excluded.version",
                self.tables.checkpoints
            );
            sqlx::query(&sql)
                .bind(checkpoints.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind(checkpoints.iter().map(|(_, v)| **v).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        self.checkpoints.mark_clean();
        self.pending = 0;
        Ok(())
    }

    /// Forgets the rows held in memory (after a flush), to bound a replay's memory. The
    /// checkpoints stay: one number per stream, and a replay plans every batch with them.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
    }

    async fn fold_and_flush(
        &mut self,
        conn: &mut PgConnection,
        planned: Vec<Cow<'_, StoredEvent>>,
    ) -> Result<Vec<Rejected>, ProjectionError> {
        let rejected = self.fold(conn, planned).await?;
        self.flush(conn).await?;
        Ok(rejected)
    }
}

/// Versions `from..=to` of a stream, all of them or an error.
async fn fill_gap(
    conn: &mut PgConnection,
    stream_id: Uuid,
    from: i32,
    to: i32,
) -> Result<Vec<StoredEvent>, ProjectionError> {
    let filled = read_stream(&mut *conn, stream_id, from, i64::from(to - from + 1)).await?;
    let complete = filled.len() == (to - from + 1) as usize
        && filled
            .iter()
            .zip(from..)
            .all(|(event, v)| event.version == v);
    if !complete {
        return Err(ProjectionError::MissingEvents {
            stream_id,
            from,
            to,
            found: filled.len(),
        });
    }
    tracing::debug!(%stream_id, from, to, "filled a gap from the event store");
    Ok(filled)
}
