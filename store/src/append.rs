use orderflow_domain::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{EventMetadata, NewEvent, StoredEvent, COLUMNS};
use crate::{unique_violation, StoreError};

/// An aggregate folded from its stream, with what an append needs to know about it.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    /// 0 for a stream with no events.
    pub version: i32,
    /// Global position of the stream's last event.
    pub last_position: Option<i64>,
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub version: i32,
    pub first_position: i64,
    pub last_position: i64,
}

/// Every event of a stream, in version order.
pub async fn load_events(
    conn: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!("select {COLUMNS} from events where stream_id = $1 order by version");
    Ok(sqlx::query_as(&sql).bind(stream_id).fetch_all(conn).await?)
}

/// Load and fold a stream. Call it for every stream a transaction appends to before the
/// transaction's first write, so its transaction id is allocated after what it read and
/// each stream's versions stay in `tx_id` order for the gap-safe reader.
pub async fn load<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Loaded<A>, StoreError> {
    let events = load_events(conn, stream_id).await?;
    if let Some(first) = events.first() {
        if first.stream_type != A::STREAM_TYPE {
            return Err(StoreError::WrongStreamType {
                stream_id,
                expected: A::STREAM_TYPE,
                actual: first.stream_type.clone(),
            });
        }
    }
    let mut state = A::default();
    for stored in &events {
        state.apply(&stored.decode::<A::Event>()?);
    }
    Ok(Loaded {
        state,
        version: events.last().map_or(0, |e| e.version),
        last_position: events.last().map(|e| e.position),
    })
}

/// Append `events` after `expected_version`. Each event gets its own event id and the
/// rest of `metadata`. A concurrent append to the same stream is a [`StoreError::Conflict`].
#[tracing::instrument(skip_all, fields(%stream_id, expected_version, count = events.len()), err(level = "debug"))]
pub async fn append(
    conn: &mut PgConnection,
    stream_id: Uuid,
    stream_type: &str,
    expected_version: i32,
    events: &[NewEvent],
    metadata: &EventMetadata,
) -> Result<AppendOutcome, StoreError> {
    assert!(!events.is_empty(), "append needs at least one event");
    let versions: Vec<i32> = (1..)
        .take(events.len())
        .map(|i| expected_version + i)
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schemas: Vec<i16> = events.iter().map(|e| e.schema_version).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e.payload).collect();
    let metadatas = events
        .iter()
        .map(|_| {
            serde_json::to_value(EventMetadata {
                event_id: Uuid::now_v7(),
                ..metadata.clone()
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .expect("metadata serializes");
    let positions: Vec<i64> = sqlx::query_scalar(
        "insert into events (stream_id, stream_type, version, event_type, schema_version, payload, metadata) \
         select $1, $2, v, t, s, p, m \
         from unnest($3::int[], $4::text[], $5::int2[], $6::jsonb[], $7::jsonb[]) as u(v, t, s, p, m) \
         returning position",
    )
    .bind(stream_id)
    .bind(stream_type)
    .bind(&versions)
    .bind(&types)
    .bind(&schemas)
    .bind(&payloads)
    .bind(&metadatas)
    .fetch_all(conn)
    .await
    .map_err(|err| match unique_violation(&err) {
        Some("events_stream_version_key") => StoreError::Conflict {
            stream_id,
            expected: expected_version,
        },
        _ => StoreError::Database(err),
    })?;
    Ok(AppendOutcome {
        version: expected_version + events.len() as i32,
        first_position: *positions.iter().min().expect("one row per event"),
        last_position: *positions.iter().max().expect("one row per event"),
    })
}
