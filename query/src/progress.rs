//! Read-your-writes across views: a request that carries `X-Min-Position: P` (the position
//! a command answered with) is answered once every view has applied every event it
//! consumes up to P, or fails with the code STALE and how far each view is.
//!
//! How far a view is comes from two tables (`migrations/0008_read_progress.sql`): the
//! relay's cursor with the last event it published to each (stream type, partition), and
//! each projection's last applied event per (stream type, partition). Records of a
//! partition are in the relay's cursor order, so a view has applied everything up to the
//! cursor `through` = the lowest, over the partitions of its stream types, of its own cursor
//! there when it is behind the relay's last one, else the relay's cursor. Positions are
//! compared as gap-safe cursors `(tx_id, position)`: a transaction that committed later can
//! hold a lower position.
//!
//! A read first looks once itself; one that has to wait joins the process's waits, for
//! which one task reads the views' progress every [`POLL`] (10 ms), and only while any
//! wait: no notification traffic on a busy system, one statement per interval however
//! many wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_graphql::{ErrorExtensionValues, SimpleObject};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::time::{timeout_at, Instant};

use crate::error::{code, QueryError};
use crate::freshness::Freshness;

/// The HTTP header (and `connection_init` payload key over WebSocket) that asks for
/// read-your-writes across views.
pub const MIN_POSITION_HEADER: &str = "X-Min-Position";

/// The relay whose cursor positions are read against (`orderflow relay --relay-name`).
pub const RELAY: &str = "default";

/// Each view the service reads and the stream types its projection consumes. The
/// projector's own list is the source; a test holds the two equal.
pub const VIEWS: [(&str, &[&str]); 4] = [
    ("order_view", &["order", "user"]),
    ("user_view", &["user", "order"]),
    ("product_view", &["product", "order"]),
    ("payment_view", &["payment"]),
];

/// The position a request asked to read after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinPosition(pub i64);

impl MinPosition {
    /// The header's value: a position of the event log (1 or more).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().parse::<i64>() {
            Ok(position) if position >= 1 => Ok(Self(position)),
            _ => Err(format!(
                "{MIN_POSITION_HEADER} must be a position of the event log (an integer of 1 \
                 or more, as a command answered), got {value:?}"
            )),
        }
    }
}

/// How far one view has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
#[graphql(name = "ViewProgress")]
pub struct ViewProgress {
    /// The view (its table).
    pub view: &'static str,
    /// The view has applied every event it consumes up to this position of the event log
    /// (0: none yet).
    pub applied_through: i64,
}

/// A gap-safe cursor: `(tx_id, position)` orders events as they were committed.
type Cursor = (i64, i64);

/// How far each view has applied, and the relay's cursor.
pub(crate) async fn progress(pool: &PgPool) -> Result<Vec<ViewProgress>, sqlx::Error> {
    Ok(through(pool)
        .await?
        .into_iter()
        .map(|(view, (_, position))| ViewProgress {
            view,
            applied_through: position,
        })
        .collect())
}

/// The relay's cursor with a partition it published to and one projection's cursor there.
#[derive(sqlx::FromRow)]
struct PartitionRow {
    relay_tx_id: i64,
    relay_position: i64,
    stream_type: Option<String>,
    partition: Option<i32>,
    tx_id: Option<i64>,
    position: Option<i64>,
    projection: Option<String>,
    applied_tx_id: Option<i64>,
    applied_position: Option<i64>,
}

/// Each view's `through` cursor.
async fn through(pool: &PgPool) -> Result<Vec<(&'static str, Cursor)>, sqlx::Error> {
    // The relay's cursor, its partitions and each projection's cursor there (null: none
    // applied), read in one statement: from one snapshot, so the cursor and the partitions
    // it covers agree.
    let rows: Vec<PartitionRow> = sqlx::query_as(
        "select c.tx_id as relay_tx_id, c.position as relay_position, \
                r.stream_type, r.partition, r.tx_id, r.position, \
                p.projection, p.tx_id as applied_tx_id, p.position as applied_position \
         from relay_cursors c \
         left join relay_partitions r on r.relay = c.name \
         left join projection_progress p \
             on p.stream_type = r.stream_type and p.partition = r.partition \
         where c.name = $1",
    )
    .bind(RELAY)
    .fetch_all(pool)
    .await?;
    let relay: Cursor = rows
        .first()
        .map_or((0, 0), |row| (row.relay_tx_id, row.relay_position));
    // (stream type, partition) → (the relay's last there, each projection's cursor there).
    let mut partitions: HashMap<(String, i32), (Cursor, HashMap<String, Cursor>)> = HashMap::new();
    for row in rows {
        let (Some(stream_type), Some(partition), Some(tx_id), Some(position)) =
            (row.stream_type, row.partition, row.tx_id, row.position)
        else {
            continue;
        };
        let entry = partitions
            .entry((stream_type, partition))
            .or_insert_with(|| ((tx_id, position), HashMap::new()));
        if let (Some(projection), Some(applied_tx), Some(applied_position)) =
            (row.projection, row.applied_tx_id, row.applied_position)
        {
            entry.1.insert(projection, (applied_tx, applied_position));
        }
    }
    Ok(VIEWS
        .iter()
        .map(|(view, stream_types)| {
            let through = partitions
                .iter()
                .filter(|((stream_type, _), _)| stream_types.contains(&stream_type.as_str()))
                .map(|(_, (last, applied))| match applied.get(*view) {
                    Some(applied) if applied >= last => relay,
                    Some(applied) => *applied,
                    None => (0, 0),
                })
                .fold(relay, std::cmp::min);
            (*view, through)
        })
        .collect())
}

/// The views' progress, read by one task for every `X-Min-Position` wait in the process,
/// every [`POLL`] while any waits (and not at all otherwise); cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    inner: Arc<ProgressInner>,
}

#[derive(Debug)]
struct ProgressInner {
    /// The latest reading: each view's `through` cursor (`None` before the first).
    latest: watch::Sender<Option<Arc<Vec<(&'static str, Cursor)>>>>,
    /// Waits going on; the poller reads while there are any.
    waiting: AtomicUsize,
    /// Wakes the poller when a wait begins.
    begun: Notify,
}

/// How often the views' progress is read while someone waits on it.
pub(crate) const POLL: Duration = Duration::from_millis(10);

impl Progress {
    /// Start the poller (it ends when the last clone is dropped). Must be called inside a
    /// Tokio runtime.
    pub(crate) fn start(pool: PgPool) -> Self {
        let inner = Arc::new(ProgressInner {
            latest: watch::Sender::new(None),
            waiting: AtomicUsize::new(0),
            begun: Notify::new(),
        });
        tokio::spawn(poll(pool, Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Wait until every view has applied everything up to `position`, at most `wait`.
    pub(crate) async fn wait_for(
        &self,
        pool: &PgPool,
        freshness: &Freshness,
        position: MinPosition,
        wait: Duration,
    ) -> Result<(), QueryError> {
        let started = Instant::now();
        let deadline = started + wait;
        let target: Option<Cursor> = sqlx::query_as(
            "select tx_id::text::bigint, position from events where position >= $1 \
             order by position limit 1",
        )
        .bind(position.0)
        .fetch_optional(pool)
        .await?;
        let Some(target) = target else {
            return Err(QueryError::bad_input(format!(
                "{MIN_POSITION_HEADER} {} is past the end of the event log",
                position.0
            )));
        };
        // Most reads come after the views caught up: one reading of our own answers them.
        let views = through(pool).await?;
        if reached(&views, target) {
            return Ok(());
        }
        let _blocked = freshness.blocked();
        let _waiting = Waiting::new(&self.inner);
        let mut latest = self.inner.latest.subscribe();
        // Only readings taken after this wait began count.
        latest.mark_unchanged();
        let mut views = views;
        loop {
            if timeout_at(deadline, latest.changed()).await.is_err() {
                break;
            }
            if let Some(reading) = latest.borrow_and_update().clone() {
                views = reading.to_vec();
            }
            if reached(&views, target) {
                return Ok(());
            }
        }
        Err(QueryError::StaleViews {
            min_position: position.0,
            views: views
                .into_iter()
                .filter(|(_, through)| *through < target)
                .map(|(view, (_, position))| ViewProgress {
                    view,
                    applied_through: position,
                })
                .collect(),
            waited_ms: started.elapsed().as_millis(),
        })
    }
}

fn reached(views: &[(&'static str, Cursor)], target: Cursor) -> bool {
    views.iter().all(|(_, through)| *through >= target)
}

/// Counts a wait for as long as it lives, and wakes the poller when it begins.
struct Waiting<'a>(&'a ProgressInner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a ProgressInner) -> Self {
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        inner.begun.notify_one();
        Self(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Read the views' progress every [`POLL`] while anyone waits; sleep otherwise.
async fn poll(pool: PgPool, inner: Weak<ProgressInner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.waiting.load(Ordering::SeqCst) == 0 {
            // Looked at again now and then, so that dropping the service ends the task.
            let _ = tokio::time::timeout(Duration::from_secs(1), strong.begun.notified()).await;
            continue;
        }
        drop(strong);
        match through(&pool).await {
            Ok(views) => match inner.upgrade() {
                Some(strong) => {
                    strong.latest.send_replace(Some(Arc::new(views)));
                }
                None => return,
            },
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => tracing::warn!(%err, "reading the views' progress failed"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The STALE error's extensions: how far each view that is behind has applied.
pub(crate) fn stale_extensions(
    extensions: &mut ErrorExtensionValues,
    min_position: i64,
    views: &[ViewProgress],
) {
    extensions.set("code", code::STALE);
    extensions.set("minPosition", min_position);
    extensions.set(
        "views",
        async_graphql::Value::List(
            views
                .iter()
                .map(|view| async_graphql::to_value(view).unwrap_or(async_graphql::Value::Null))
                .collect(),
        ),
    );
}

/// Hold an operation until the views reached the request's [`MinPosition`] (from the HTTP
/// header or the WebSocket `connection_init` payload), if it has one: run by the
/// [`Limits`](crate::limits) extension before the operation executes.
pub(crate) async fn hold(
    ctx: &async_graphql::extensions::ExtensionContext<'_>,
) -> Result<(), async_graphql::ServerError> {
    let Some(position) = ctx.data_opt::<MinPosition>() else {
        return Ok(());
    };
    let services = ctx.data_unchecked::<crate::schema::Services>();
    let waited = services
        .progress
        .wait_for(
            services.db.pool(),
            &services.freshness,
            *position,
            services.options.min_version_timeout,
        )
        .await;
    waited.map_err(|err| {
        // An error of the request, not of a place in the document.
        let err = async_graphql::Error::from(err);
        let mut error = async_graphql::ServerError::new(err.message, None);
        error.extensions = err.extensions;
        error.source = err.source;
        error
    })
}

/// The [`MinPosition`] of a WebSocket's `connection_init` payload (`{"X-Min-Position":
/// 42}`; a string is taken too), if it has one.
pub(crate) fn from_connection_init(
    payload: &serde_json::Value,
) -> Result<Option<MinPosition>, String> {
    let Some(value) = payload.as_object().and_then(|fields| {
        fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(MIN_POSITION_HEADER))
            .map(|(_, value)| value)
    }) else {
        return Ok(None);
    };
    match value {
        serde_json::Value::Number(number) => MinPosition::parse(&number.to_string()).map(Some),
        serde_json::Value::String(text) => MinPosition::parse(text).map(Some),
        other => MinPosition::parse(&other.to_string()).map(Some),
    }
}
