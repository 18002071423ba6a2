//! Snapshots: the folded state of a long stream at a version, so loading it reads the
//! snapshot and only the events after it. A snapshot is only ever a cache: one of another
//! format, or one that no longer parses, is ignored and rebuilt from the events.

use orderflow_domain::Snapshot;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::append::{load_after, Loaded};
use crate::StoreError;

/// A new snapshot is written once this many events were folded on top of the last one.
pub const SNAPSHOT_EVERY: u32 = 100;

/// Load `stream_id` from its snapshot, if one of this format reads back, plus the events
/// after it; a load that folded [`SNAPSHOT_EVERY`] events or more leaves a new snapshot.
pub async fn load_snapshotted<A: Snapshot>(
    conn: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Loaded<A>, StoreError> {
    let found: Option<(String, i32, i64, serde_json::Value)> = sqlx::query_as(
        "select stream_type, version, position, state from snapshots \
         where stream_id = $1 and format = $2",
    )
    .bind(stream_id)
    .bind(A::SNAPSHOT_FORMAT)
    .fetch_optional(&mut *conn)
    .await?;
    let base = match found {
        Some((stream_type, ..)) if stream_type != A::STREAM_TYPE => {
            return Err(StoreError::WrongStreamType {
                stream_id,
                expected: A::STREAM_TYPE,
                actual: stream_type,
            })
        }
        Some((_, version, position, state)) => match serde_json::from_value::<A>(state) {
            Ok(state) => Some(Loaded {
                state,
                version,
                last_position: Some(position),
                folded: 0,
            }),
            Err(err) => {
                tracing::warn!(%stream_id, %err, "ignoring a snapshot that does not read back; rebuilding it");
                sqlx::query("delete from snapshots where stream_id = $1 and version = $2")
                    .bind(stream_id)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
                None
            }
        },
        None => None,
    };
    let loaded = load_after(conn, stream_id, base).await?;
    if loaded.folded >= SNAPSHOT_EVERY {
        // Only a cache of the fold: failing to write one costs the next load, not this one.
        if let Err(err) = save(conn, stream_id, &loaded).await {
            tracing::warn!(%stream_id, %err, "writing a snapshot failed");
        }
    }
    Ok(loaded)
}

/// Store `loaded` as the stream's snapshot, unless a later one is already there.
pub async fn save<A: Snapshot>(
    conn: &mut PgConnection,
    stream_id: Uuid,
    loaded: &Loaded<A>,
) -> Result<(), StoreError> {
    let Some(position) = loaded.last_position else {
        return Ok(());
    };
    let state = serde_json::to_value(&loaded.state).map_err(StoreError::Snapshot)?;
    sqlx::query(
        "insert into snapshots (stream_id, stream_type, format, version, position, state) \
         values ($1, $2, $3, $4, $5, $6) on conflict (stream_id) do update set \
         format = excluded.format, version = excluded.version, position = excluded.position, \
         state = excluded.state, taken_at = now() \
         where snapshots.format <> excluded.format or snapshots.version < excluded.version",
    )
    .bind(stream_id)
    .bind(A::STREAM_TYPE)
    .bind(A::SNAPSHOT_FORMAT)
    .bind(loaded.version)
    .bind(position)
    .bind(state)
    .execute(conn)
    .await?;
    Ok(())
}
