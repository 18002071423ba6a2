use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::event::{StoredEvent, COLUMNS};
use crate::StoreError;

/// A position in commit order: the last `(tx_id, position)` a reader has consumed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub tx_id: i64,
    pub position: i64,
}

impl Cursor {
    /// The cursor just past `event`.
    pub fn after(event: &StoredEvent) -> Self {
        Self {
            tx_id: event.tx_id,
            position: event.position,
        }
    }
}

/// Up to `limit` committed events after `cursor`, in commit order.
///
/// Positions are allocated before commit, so a reader that follows `position` alone skips a
/// transaction that commits after a later-numbered one. Reading only below the oldest
/// transaction still running (`pg_snapshot_xmin`) and ordering by `(tx_id, position)` never
/// does: every transaction that could still commit sorts after everything returned.
pub async fn read_after<'e>(
    executor: impl PgExecutor<'e>,
    cursor: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from events \
         where (tx_id, position) > ($1::bigint::text::xid8, $2) \
           and tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         order by events.tx_id, events.position \
         limit $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(cursor.tx_id)
        .bind(cursor.position)
        .bind(limit)
        .fetch_all(executor)
        .await?)
}

/// Up to `limit` events of the given stream types after `position`, in position order, with
/// no bound at running transactions: for a reader inside one repeatable-read snapshot (a
/// verification), which sees exactly what was committed when it began and never anything
/// later, so nothing can appear behind it. A reader that follows new events uses
/// [`read_after`].
pub async fn read_snapshot_after<'e>(
    executor: impl PgExecutor<'e>,
    position: i64,
    stream_types: &[&str],
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from events \
         where position > $1 and stream_type = any($2) \
         order by position \
         limit $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(position)
        .bind(stream_types)
        .bind(limit)
        .fetch_all(executor)
        .await?)
}

/// A stream's events from `from_version` on (inclusive), in version order.
pub async fn read_stream<'e>(
    executor: impl PgExecutor<'e>,
    stream_id: Uuid,
    from_version: i32,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from events where stream_id = $1 and version >= $2 \
         order by version limit $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(stream_id)
        .bind(from_version)
        .bind(limit)
        .fetch_all(executor)
        .await?)
}
