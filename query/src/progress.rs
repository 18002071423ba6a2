//! Read-your-writes across views: a request that carries `X-Min-Position: P` (the position
//! a command answered with) is answered once every view it reads has applied every event
//! it consumes up to P: the event at P, every event whose gap-safe cursor sorts before it in
//! the relay's commit order (which includes a client's own earlier writes), and any event
//! with a lower position that committed after it but before the read began (two writes at
//! once can commit in the other order than their positions; a write still running is not
//! waited for), or fails with the code STALE and how far each view is. The views are the
//! four projections' (`VIEWS`); a saga's state (`Order.saga`) is written by the
//! orchestrator as its steps run, not by a projection, and is not waited for. A read waits
//! only for the views it reads ([`OperationViews`]): those behind the object types the
//! operation that runs selects ([`TYPE_VIEWS`]), so a view that lags or is stuck holds up
//! only the reads that need it.
//!
//! How far a view is comes from three tables (`migrations/0008_read_progress.sql`,
//! `0009_relay_history.sql`): with its cursor, the relay records the offset past the last
//! record the broker acknowledged in each (stream type, partition), and at most every
//! 100 ms a snapshot of them all with the cursor; each projector records the offset past
//! the last record it consumed from each. Once the relay's cursor is at or past the last
//! gap-safe `(tx_id, position)` cursor of the events up to P (`target`), the offsets of
//! its first snapshot at or past that cursor cover every event up to P, whatever order
//! retries put records in (before there is one, its offsets now, which cover more); a view
//! has applied them once its offsets reach those. Records a view dead-lettered count as
//! consumed.
//!
//! A read first looks once itself; one that has to wait joins the process's waits, for
//! which one task reads the progress every [`POLL`] (10 ms), and only while any wait: no
//! notification traffic on a busy system, one statement per interval however many wait.
//! These waits are bounded by `--min-version-timeout`; they do not count against
//! `--max-watches`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{ErrorExtensionValues, Name, SimpleObject};
use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::time::{timeout_at, Instant};

use crate::error::{code, QueryError};
use crate::freshness::Freshness;
use crate::schema::money::Long;

/// The HTTP header (and `connection_init` payload key over WebSocket) that asks for
/// read-your-writes across views.
pub const MIN_POSITION_HEADER: &str = "X-Min-Position";

/// Each view the service reads and the stream types its projection consumes. The
/// projector's own list is the source; a test holds the two equal.
pub const VIEWS: [(&str, &[&str]); 4] = [
    ("order_view", &["order", "user"]),
    ("user_view", &["user", "order"]),
    ("product_view", &["product", "order"]),
    ("payment_view", &["payment"]),
];

/// The object types whose data comes from a view, and that view: an operation that
/// selects a field returning one of these types reads the view, and a read with
/// `X-Min-Position` waits for it. Every other object type of the schema is built from these
/// (`Money`, `PageInfo`), from the event store or the sagas table (always current), or from
/// the operations figures; a test holds every object type of the schema to one side or the
/// other. The rule this rests on, which no test can check (it is about what resolvers'
/// SQL reads; `db.rs` repeats it): a field reads a view only through a value of the view's
/// type, so a resolver that reads a view must return (or belong to) that type, never a
/// scalar on a type of another view or of none.
pub const TYPE_VIEWS: [(&str, &str); 11] = [
    ("Order", "order_view"),
    ("OrderConnection", "order_view"),
    ("OrderEdge", "order_view"),
    ("OrderItem", "order_view"),
    ("User", "user_view"),
    ("UserConnection", "user_view"),
    ("UserEdge", "user_view"),
    ("Product", "product_view"),
    ("ProductConnection", "product_view"),
    ("ProductEdge", "product_view"),
    ("Payment", "payment_view"),
];

/// A set of [`VIEWS`] (by their place in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSet(u8);

impl ViewSet {
    pub const NONE: Self = Self(0);
    pub const ALL: Self = Self((1 << VIEWS.len()) - 1);

    /// The set with `view` (a name of [`VIEWS`]) added.
    #[must_use]
    pub fn with(self, view: &str) -> Self {
        match VIEWS.iter().position(|(name, _)| *name == view) {
            Some(index) => Self(self.0 | 1 << index),
            None => self,
        }
    }

    fn contains(self, index: usize) -> bool {
        self.0 & 1 << index != 0
    }

    /// The views of the set, in the order of [`VIEWS`].
    pub fn names(self) -> Vec<&'static str> {
        VIEWS
            .iter()
            .enumerate()
            .filter(|(index, _)| self.contains(*index))
            .map(|(_, (name, _))| *name)
            .collect()
    }
}

/// The views each operation of a document reads: those of [`TYPE_VIEWS`] behind every type
/// whose fields it selects, fragments followed (each once per operation: its type
/// condition fixes the types inside it). Introspection reads none. A field the schema does
/// not have is passed over (validation refuses the document before it runs).
#[derive(Debug, Clone, Default)]
pub struct OperationViews(Vec<(Option<String>, ViewSet)>);

impl OperationViews {
    pub fn of(document: &ExecutableDocument, registry: &Registry) -> Self {
        Self(
            document
                .operations
                .iter()
                .map(|(name, operation)| {
                    let root = match operation.node.ty {
                        OperationType::Query => Some(registry.query_type.as_str()),
                        OperationType::Mutation => registry.mutation_type.as_deref(),
                        OperationType::Subscription => registry.subscription_type.as_deref(),
                    };
                    let views = root.map_or(ViewSet::NONE, |root| {
                        views_read(document, registry, &operation.node.selection_set.node, root)
                    });
                    (name.map(|name| name.to_string()), views)
                })
                .collect(),
        )
    }

    /// The views of the operation that runs: the one named, or the document's only one;
    /// every view when that is not known.
    pub fn get(&self, operation_name: Option<&str>) -> ViewSet {
        let found = match (operation_name, self.0.as_slice()) {
            (Some(wanted), operations) => operations
                .iter()
                .find(|(name, _)| name.as_deref() == Some(wanted)),
            (None, [only]) => Some(only),
            (None, _) => None,
        };
        found.map_or(ViewSet::ALL, |(_, views)| *views)
    }
}

/// The views one operation reads, from its selection set on its root type `root`.
fn views_read(
    document: &ExecutableDocument,
    registry: &Registry,
    selection_set: &SelectionSet,
    root: &str,
) -> ViewSet {
    let mut views = ViewSet::NONE;
    let mut seen: HashSet<&Name> = HashSet::new();
    let mut pending: Vec<(&SelectionSet, &str)> = vec![(selection_set, root)];
    while let Some((selection_set, on)) = pending.pop() {
        for selection in &selection_set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let Some(meta) = registry
                        .types
                        .get(on)
                        .and_then(|ty| ty.field_by_name(field.name.node.as_str()))
                    else {
                        continue;
                    };
                    let returns = MetaTypeName::concrete_typename(&meta.ty);
                    if let Some((_, view)) = TYPE_VIEWS.iter().find(|(ty, _)| *ty == returns) {
                        views = views.with(view);
                    }
                    pending.push((&field.selection_set.node, returns));
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on = fragment
                        .type_condition
                        .as_ref()
                        .map_or(on, |condition| condition.node.on.node.as_str());
                    pending.push((&fragment.selection_set.node, on));
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if !seen.insert(name) {
                        continue;
                    }
                    if let Some(fragment) = document.fragments.get(name) {
                        let fragment = &fragment.node;
                        pending.push((
                            &fragment.selection_set.node,
                            fragment.type_condition.node.on.node.as_str(),
                        ));
                    }
                }
            }
        }
    }
    views
}

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
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
#[graphql(name = "ViewProgress")]
pub struct ViewProgress {
    /// The view (its table).
    pub view: &'static str,
    /// Records of the view's topics that the relay has published and the view has not
    /// consumed yet (in a STALE error: of those the read needs).
    pub behind: Long,
    /// The global position of the last event the view applied, if any.
    pub last_applied_position: Option<Long>,
}

/// A gap-safe cursor: `(tx_id, position)` orders events as they were committed.
type Cursor = (i64, i64);

/// One reading, from one statement (one snapshot): the relay's cursor, the offsets it
/// published to, and each projection's offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Whether the relay has a cursor (it has published at least once).
    relay_found: bool,
    relay: Cursor,
    /// The cursor of the relay's latest snapshot (`relay_history`), if any.
    snapshot: Option<Cursor>,
    /// (stream type, partition) → next offset the relay has published to.
    published: HashMap<(String, i32), i64>,
    /// (projection, stream type, partition) → (next offset consumed, last position applied).
    consumed: HashMap<(String, String, i32), (i64, Option<i64>)>,
}

/// The relay's cursor with a partition it published to and one projection's offset there.
#[derive(sqlx::FromRow)]
struct ReadingRow {
    relay_tx_id: i64,
    relay_position: i64,
    snapshot_tx_id: Option<i64>,
    snapshot_position: Option<i64>,
    stream_type: Option<String>,
    partition: Option<i32>,
    next_offset: Option<i64>,
    projection: Option<String>,
    consumed: Option<i64>,
    applied_position: Option<i64>,
}

impl Reading {
    async fn take(pool: &PgPool, relay: &str) -> Result<Self, sqlx::Error> {
        let rows: Vec<ReadingRow> = sqlx::query_as(
            "select c.tx_id as relay_tx_id, c.position as relay_position, \
                    h.tx_id as snapshot_tx_id, h.position as snapshot_position, \
                    r.stream_type, r.partition, r.next_offset, \
                    p.projection, p.next_offset as consumed, p.position as applied_position \
             from relay_cursors c \
             left join lateral (select tx_id, position from relay_history \
                                where relay = c.name \
                                order by tx_id desc, position desc limit 1) h on true \
             left join relay_partitions r on r.relay = c.name \
             left join projection_progress p \
                 on p.stream_type = r.stream_type and p.partition = r.partition \
             where c.name = $1",
        )
        .bind(relay)
        .fetch_all(pool)
        .await?;
        let mut reading = Reading::default();
        for row in rows {
            reading.relay_found = true;
            reading.relay = (row.relay_tx_id, row.relay_position);
            if let (Some(tx_id), Some(position)) = (row.snapshot_tx_id, row.snapshot_position) {
                reading.snapshot = Some((tx_id, position));
            }
            let (Some(stream_type), Some(partition), Some(next_offset)) =
                (row.stream_type, row.partition, row.next_offset)
            else {
                continue;
            };
            if let (Some(projection), Some(consumed)) = (row.projection, row.consumed) {
                reading.consumed.insert(
                    (projection, stream_type.clone(), partition),
                    (consumed, row.applied_position),
                );
            }
            reading
                .published
                .insert((stream_type, partition), next_offset);
        }
        Ok(reading)
    }

    /// How far `view` is from `offsets`: the records it has still to consume.
    fn behind(
        &self,
        view: &str,
        stream_types: &[&str],
        offsets: &HashMap<(String, i32), i64>,
    ) -> i64 {
        offsets
            .iter()
            .filter(|((stream_type, _), _)| stream_types.contains(&stream_type.as_str()))
            .map(|((stream_type, partition), needed)| {
                let consumed = self
                    .consumed
                    .get(&(view.to_owned(), stream_type.clone(), *partition))
                    .map_or(0, |(offset, _)| *offset);
                (needed - consumed).max(0)
            })
            .sum()
    }

    /// Each view's progress against what the relay has published.
    fn views(&self, offsets: &HashMap<(String, i32), i64>) -> Vec<ViewProgress> {
        VIEWS
            .iter()
            .map(|(view, stream_types)| ViewProgress {
                view,
                behind: Long(self.behind(view, stream_types, offsets)),
                last_applied_position: self
                    .consumed
                    .iter()
                    .filter(|((projection, _, _), _)| projection == view)
                    .filter_map(|(_, (_, position))| *position)
                    .max()
                    .map(Long),
            })
            .collect()
    }
}

impl Reading {
    /// For a view that is behind, the lowest position it applied in a partition where it is
    /// behind: its oldest unapplied event comes after that. A lagging partition where it has
    /// applied nothing (say, one that was idle until now) does not pull this back to the
    /// start of time unless no lagging partition has a position; then the lowest position
    /// the view applied anywhere, or 0. `None` when the view is caught up.
    fn lagging_floor(&self, view: &str, stream_types: &[&str]) -> Option<i64> {
        let lagging: Vec<Option<i64>> = self
            .published
            .iter()
            .filter(|((stream_type, _), _)| stream_types.contains(&stream_type.as_str()))
            .filter_map(|((stream_type, partition), needed)| {
                let consumed =
                    self.consumed
                        .get(&(view.to_owned(), stream_type.clone(), *partition));
                let (offset, position) = consumed.map_or((0, None), |(o, p)| (*o, *p));
                (offset < *needed).then_some(position)
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let applied_anywhere = || {
            self.consumed
                .iter()
                .filter(|((projection, _, _), _)| projection == view)
                .filter_map(|(_, (_, position))| *position)
                .min()
        };
        Some(
            lagging
                .iter()
                .flatten()
                .min()
                .copied()
                .or_else(applied_anywhere)
                .unwrap_or(0),
        )
    }
}

/// Each view's progress and, when it is behind, the position its oldest unapplied event
/// comes after (for staleness).
pub(crate) async fn lagging_floors(
    pool: &PgPool,
    relay: &str,
) -> Result<Vec<(ViewProgress, Option<i64>)>, sqlx::Error> {
    let reading = Reading::take(pool, relay).await?;
    Ok(reading
        .views(&reading.published)
        .into_iter()
        .zip(VIEWS.iter())
        .map(|(view, (name, stream_types))| {
            let floor = reading.lagging_floor(name, stream_types);
            (view, floor)
        })
        .collect())
}

/// What a wait needs: offsets of the relay that cover the target.
#[derive(Debug)]
struct Required {
    offsets: HashMap<(String, i32), i64>,
    /// Whether these are the least that will be known (else a snapshot may still come).
    settled: bool,
}

/// How far each view has applied what the relay has published.
pub(crate) async fn progress(pool: &PgPool, relay: &str) -> Result<Vec<ViewProgress>, sqlx::Error> {
    let reading = Reading::take(pool, relay).await?;
    Ok(reading.views(&reading.published))
}

/// The views' progress, read by one task for every `X-Min-Position` wait in the process,
/// every [`POLL`] while any waits (and not at all otherwise); cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    inner: Arc<ProgressInner>,
}

#[derive(Debug)]
struct ProgressInner {
    /// The latest reading (`None` before the first).
    latest: watch::Sender<Option<Arc<Reading>>>,
    /// The relay whose cursor positions are read against.
    relay: String,
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
    pub(crate) fn start(pool: PgPool, relay: String) -> Self {
        let inner = Arc::new(ProgressInner {
            latest: watch::Sender::new(None),
            relay,
            waiting: AtomicUsize::new(0),
            begun: Notify::new(),
        });
        tokio::spawn(poll(pool, Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Wait until `views` have applied everything up to `position`, at most `wait`
    /// (reading where it stands included).
    pub(crate) async fn wait_for(
        &self,
        pool: &PgPool,
        freshness: &Freshness,
        position: MinPosition,
        views: ViewSet,
        wait: Duration,
    ) -> Result<(), QueryError> {
        let started = Instant::now();
        let deadline = started + wait;
        let waited = self.wait_until(pool, freshness, position, views, started, deadline);
        match timeout_at(deadline, waited).await {
            Ok(waited) => waited,
            // The database did not answer in time (the wait itself ends with its own
            // answer at the deadline, which comes first).
            Err(_) => Err(QueryError::StaleViews {
                min_position: position.0,
                views: Vec::new(),
                waited_ms: started.elapsed().as_millis(),
                relay: "the views' progress could not be read in time".to_owned(),
                relay_position: None,
            }),
        }
    }

    async fn wait_until(
        &self,
        pool: &PgPool,
        freshness: &Freshness,
        position: MinPosition,
        views: ViewSet,
        started: Instant,
        deadline: Instant,
    ) -> Result<(), QueryError> {
        // Most reads come after the views caught up: one reading of our own answers them.
        let mut reading = Arc::new(Reading::take(pool, &self.inner.relay).await?);
        let Some(target) = target(pool, position, &reading).await? else {
            return Err(QueryError::bad_input(format!(
                "{MIN_POSITION_HEADER} {} is past the end of the event log",
                position.0
            )));
        };
        // A read of no view (introspection, the sagas) has nothing to wait for.
        if views == ViewSet::NONE {
            return Ok(());
        }
        // Once the relay is past the target, all it has published covers it: views that
        // have applied that much need no more reading.
        if reading.relay >= target.cursor && reached(&reading, &reading.published, views) {
            return Ok(());
        }
        let relay = &self.inner.relay;
        let mut required = required(pool, relay, &reading, target).await?;
        if required
            .as_ref()
            .is_some_and(|required| reached(&reading, &required.offsets, views))
        {
            return Ok(());
        }
        let _blocked = freshness.blocked();
        let _waiting = Waiting::new(&self.inner);
        let mut latest = self.inner.latest.subscribe();
        // Any reading is a consistent snapshot and the relay only moves forward, so the
        // poller's latest counts too, even one taken before this wait began: a reading
        // published while ours was taken would otherwise be missed.
        let mut first = true;
        loop {
            if !first && timeout_at(deadline, latest.changed()).await.is_err() {
                break;
            }
            first = false;
            if let Some(newer) = latest.borrow_and_update().clone() {
                reading = newer;
            }
            // Looked for again only once the relay has a snapshot that can answer: one
            // statement per wait, and a new snapshot is a new reading, which wakes it.
            let retry = match &required {
                None => true,
                Some(required) => {
                    !required.settled && reading.snapshot.is_some_and(|at| at >= target.cursor)
                }
            };
            if retry {
                if let Some(newer) = self::required(pool, relay, &reading, target).await? {
                    required = Some(newer);
                }
            }
            if required
                .as_ref()
                .is_some_and(|required| reached(&reading, &required.offsets, views))
            {
                return Ok(());
            }
        }
        // Before the relay published the target, every view is measured against all the
        // relay has published so far.
        let offsets = required.map_or_else(|| reading.published.clone(), |r| r.offsets);
        let relay = if !reading.relay_found {
            format!(
                "the relay '{}' has published nothing yet (is --relay-name the relay's?)",
                self.inner.relay
            )
        } else if reading.relay < target.cursor {
            format!(
                "the relay has not published it yet: it is at position {}",
                reading.relay.1
            )
        } else {
            "the relay has published it".to_owned()
        };
        Err(QueryError::StaleViews {
            min_position: position.0,
            views: reading
                .views(&offsets)
                .into_iter()
                .enumerate()
                .filter(|(index, view)| {
                    views.contains(*index) && (view.behind.0 > 0 || reading.relay < target.cursor)
                })
                .map(|(_, view)| view)
                .collect(),
            waited_ms: started.elapsed().as_millis(),
            relay,
            relay_position: reading.relay_found.then_some(reading.relay.1),
        })
    }
}

/// Events after the event at a read's position that [`target`] looks through for one with
/// a lower position (10 s of writes at 1,000 a second).
const EXACT_SCAN: i64 = 10_000;

/// The cursor the relay must pass before the views can have every event up to a position.
#[derive(Debug, Clone, Copy)]
struct Target {
    cursor: Cursor,
    /// Whether `cursor` is the last of every event up to the position, so that a snapshot
    /// at or after it covers them all; otherwise only what the relay has published in all
    /// does.
    exact: bool,
}

/// The event at `position` (the first at or after it, positions having gaps), or a later
/// cursor: an event with a lower position that committed after it, before this statement
/// (two appends at once can commit in the other order). Among the [`EXACT_SCAN`] events
/// after it this is exact; past that (an old position), only events the relay has not
/// published are looked at, and the read needs all the relay has published. `None` when
/// the log ends before `position`.
async fn target(
    pool: &PgPool,
    position: MinPosition,
    reading: &Reading,
) -> Result<Option<Target>, sqlx::Error> {
    /// The event at the position's cursor, whether the scan after it was whole, and the
    /// latest cursor with a lower position found.
    type Row = (i64, i64, bool, Option<i64>, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "with at as (select tx_id, position from events where position >= $1 \
                     order by position limit 1), \
              after as (select tx_id, position from events \
                        where (tx_id, position) > \
                              ((select tx_id from at), (select position from at)) \
                        order by tx_id, position limit $4), \
              scanned as (select count(*) < $4 as exact from after), \
              unpublished as (select tx_id, position from events \
                              where (tx_id, position) > ($2::text::xid8, $3) and position <= $1 \
                                and not (select exact from scanned) \
                              order by tx_id desc, position desc limit 1) \
         select at.tx_id::text::bigint, at.position, (select exact from scanned), \
                l.tx_id::text::bigint, l.position \
         from at left join lateral ( \
             select tx_id, position from \
                 (select tx_id, position from after where position <= $1 \
                  union all select tx_id, position from unpublished) u \
             order by tx_id desc, position desc limit 1) l on true",
    )
    .bind(position.0)
    .bind(reading.relay.0)
    .bind(reading.relay.1)
    .bind(EXACT_SCAN)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(tx_id, at, exact, late_tx_id, late)| {
        let mut cursor = (tx_id, at);
        if let (Some(tx_id), Some(position)) = (late_tx_id, late) {
            cursor = cursor.max((tx_id, position));
        }
        Target { cursor, exact }
    }))
}

fn reached(reading: &Reading, offsets: &HashMap<(String, i32), i64>, views: ViewSet) -> bool {
    VIEWS
        .iter()
        .enumerate()
        .filter(|(index, _)| views.contains(*index))
        .all(|(_, (view, stream_types))| reading.behind(view, stream_types, offsets) == 0)
}

/// The offsets each view must reach to have applied everything up to `target`, once the
/// relay is past it in `reading` (`None` before): those of the relay's first snapshot at or
/// after it (`relay_history`) when the target is exact, or else, or before there is such a
/// snapshot, all the relay has published, which cover more.
async fn required(
    pool: &PgPool,
    relay: &str,
    reading: &Reading,
    target: Target,
) -> Result<Option<Required>, sqlx::Error> {
    if reading.relay < target.cursor {
        return Ok(None);
    }
    if !target.exact {
        return Ok(Some(Required {
            offsets: reading.published.clone(),
            settled: true,
        }));
    }
    let snapshot: Option<(Vec<String>, Vec<i32>, Vec<i64>)> = sqlx::query_as(
        "select stream_types, partitions, next_offsets from relay_history \
         where relay = $1 and (tx_id, position) >= ($2, $3) \
         order by tx_id, position limit 1",
    )
    .bind(relay)
    .bind(target.cursor.0)
    .bind(target.cursor.1)
    .fetch_optional(pool)
    .await?;
    Ok(Some(match snapshot {
        Some((stream_types, partitions, offsets)) => Required {
            offsets: stream_types
                .into_iter()
                .zip(partitions)
                .zip(offsets)
                .collect(),
            settled: true,
        },
        // The snapshot may come with the relay's next save: looked for again.
        None => Required {
            offsets: reading.published.clone(),
            settled: false,
        },
    }))
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
        let Some(relay) = inner.upgrade().map(|strong| strong.relay.clone()) else {
            return;
        };
        match Reading::take(&pool, &relay).await {
            Ok(reading) => match inner.upgrade() {
                Some(strong) => {
                    // Waiters wake only when something moved.
                    strong.latest.send_if_modified(|latest| {
                        let moved = latest.as_deref() != Some(&reading);
                        if moved {
                            *latest = Some(Arc::new(reading));
                        }
                        moved
                    });
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
    relay_position: Option<i64>,
    views: &[ViewProgress],
) {
    extensions.set("code", code::STALE);
    extensions.set("minPosition", min_position);
    extensions.set(
        "relayPosition",
        relay_position.map_or(async_graphql::Value::Null, async_graphql::Value::from),
    );
    extensions.set(
        "views",
        async_graphql::Value::List(
            views
                .iter()
                .map(|view| {
                    let mut fields = async_graphql::indexmap::IndexMap::new();
                    fields.insert(async_graphql::Name::new("view"), view.view.into());
                    fields.insert(async_graphql::Name::new("behind"), view.behind.0.into());
                    fields.insert(
                        async_graphql::Name::new("lastAppliedPosition"),
                        view.last_applied_position
                            .map_or(async_graphql::Value::Null, |p| p.0.into()),
                    );
                    async_graphql::Value::Object(fields)
                })
                .collect(),
        ),
    );
}

/// Hold an operation until `views` (those it reads) reached the request's [`MinPosition`]
/// (from the HTTP header or the WebSocket `connection_init` payload), if it has one: run
/// by the [`Limits`](crate::limits) extension before the operation executes.
pub(crate) async fn hold(
    ctx: &async_graphql::extensions::ExtensionContext<'_>,
    views: ViewSet,
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
            views,
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
    let mut values = payload
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.eq_ignore_ascii_case(MIN_POSITION_HEADER))
        .map(|(_, value)| value);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{MIN_POSITION_HEADER} is given more than once"));
    }
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) => MinPosition::parse(text).map(Some),
        other => MinPosition::parse(&other.to_string()).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Works out [`OperationViews`] for each document it parses, with the schema's registry.
    struct Reads(Arc<std::sync::Mutex<Option<OperationViews>>>);

    impl async_graphql::extensions::ExtensionFactory for Reads {
        fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
            Arc::new(Reads(self.0.clone()))
        }
    }

    #[async_graphql::async_trait::async_trait]
    impl async_graphql::extensions::Extension for Reads {
        async fn parse_query(
            &self,
            ctx: &async_graphql::extensions::ExtensionContext<'_>,
            query: &str,
            variables: &async_graphql::Variables,
            next: async_graphql::extensions::NextParseQuery<'_>,
        ) -> async_graphql::ServerResult<ExecutableDocument> {
            let document = next.run(ctx, query, variables).await?;
            *self.0.lock().unwrap() = Some(OperationViews::of(&document, &ctx.schema_env.registry));
            Ok(document)
        }
    }

    async fn operations(query: &str) -> OperationViews {
        let found = Arc::new(std::sync::Mutex::new(None));
        let schema = crate::schema::builder()
            .extension(Reads(found.clone()))
            .finish();
        // Without the service's data the resolvers fail; the document was read by then.
        let _ = schema.execute(query).await;
        let views = found.lock().unwrap().take();
        views.expect("the document parsed")
    }

    async fn reads(query: &str) -> Vec<&'static str> {
        operations(query).await.get(None).names()
    }

    #[tokio::test]
    async fn a_read_waits_for_the_views_behind_the_types_it_selects() {
        assert_eq!(reads("{ __typename }").await, Vec::<&str>::new());
        assert_eq!(reads("{ viewProgress { view } }").await, Vec::<&str>::new());
        assert_eq!(
            reads("{ sagas { nodes { state order { id } } } }").await,
            ["order_view"]
        );
        assert_eq!(reads(r#"{ order(id: "x") { id } }"#).await, ["order_view"]);
        assert_eq!(
            reads(
                r#"{ order(id: "x") { user { name } items { product { name } } saga { state } } }"#
            )
            .await,
            ["order_view", "user_view", "product_view"]
        );
        assert_eq!(
            reads(r#"{ order(id: "x") { items { productName } payment { status } } }"#).await,
            ["order_view", "payment_view"]
        );
        // A connection's count reads its view without selecting a node.
        assert_eq!(
            reads(r#"{ user(id: "x") { orders { totalCount } } }"#).await,
            ["order_view", "user_view"]
        );
        // Through fragments, named (each followed once per operation) and inline; each
        // operation of a document reads its own views.
        let document = operations(
            "query One { ...A ...A } fragment A on Query { products { nodes { ...B } } } \
             fragment B on Product { name } \
             query Other { ... on Query { users { totalCount } ...A } }",
        )
        .await;
        assert_eq!(document.get(Some("One")).names(), ["product_view"]);
        assert_eq!(
            document.get(Some("Other")).names(),
            ["user_view", "product_view"]
        );
        // Which one runs is not known without its name (async-graphql refuses it then).
        assert_eq!(document.get(None), ViewSet::ALL);
        assert_eq!(document.get(Some("Third")), ViewSet::ALL);
        // Introspection reads no view, even of a view's type.
        assert_eq!(
            reads(r#"{ __type(name: "Order") { fields { name } } }"#).await,
            Vec::<&str>::new()
        );
    }

    /// Every object type of the schema is either a view's ([`TYPE_VIEWS`]) or one of these,
    /// so that a new type is put on one side or the other.
    #[test]
    fn every_object_type_is_a_views_or_is_known_not_to_be() {
        const NOT_FROM_VIEWS: [&str; 21] = [
            "ConsumerGroup",
            "DeadLetterTopic",
            "GroupSample",
            "LagMonitorStatus",
            "Money",
            "OpsSample",
            "OrderEvent",
            "PageInfo",
            "PartitionLag",
            "ProjectionStatus",
            "Query",
            "RelayStatus",
            "Saga",
            "SagaConnection",
            "SagaCount",
            "SagaEdge",
            "SagaStepRecord",
            "Subscription",
            "TimelineEvent",
            "TopicLag",
            "ViewProgress",
        ];
        let sdl = crate::schema::sdl();
        let types: Vec<&str> = sdl
            .lines()
            .filter_map(|line| line.strip_prefix("type "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        for ty in &types {
            let views = TYPE_VIEWS.iter().any(|(name, _)| name == ty);
            assert!(
                views != NOT_FROM_VIEWS.contains(ty),
                "{ty}: in TYPE_VIEWS or NOT_FROM_VIEWS, exactly one"
            );
        }
        for (ty, view) in TYPE_VIEWS {
            assert!(types.contains(&ty), "{ty} is not a type of the schema");
            assert!(VIEWS.iter().any(|(name, _)| *name == view), "{view}");
        }
    }

    fn reading(published: &[(i32, i64)], consumed: &[(i32, i64, Option<i64>)]) -> Reading {
        Reading {
            relay_found: true,
            relay: (0, 0),
            snapshot: None,
            published: published
                .iter()
                .map(|(p, next)| (("user".to_owned(), *p), *next))
                .collect(),
            consumed: consumed
                .iter()
                .map(|(p, next, position)| {
                    (
                        ("user_view".to_owned(), "user".to_owned(), *p),
                        (*next, *position),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_connection_init_position_is_read_once_whatever_the_key_case() {
        let at = |payload: serde_json::Value| from_connection_init(&payload);
        assert_eq!(at(serde_json::json!({})), Ok(None));
        assert_eq!(
            at(serde_json::json!({"x-min-position": "42"})),
            Ok(Some(MinPosition(42)))
        );
        assert_eq!(
            at(serde_json::json!({"X-Min-Position": 42})),
            Ok(Some(MinPosition(42)))
        );
        assert!(at(serde_json::json!({"X-Min-Position": 5, "x-min-position": 900})).is_err());
        assert!(at(serde_json::json!({"X-Min-Position": "soon"})).is_err());
    }

    #[test]
    fn staleness_starts_after_the_lowest_position_applied_where_the_view_is_behind() {
        let floor = |r: &Reading| r.lagging_floor("user_view", &["user"]);
        // Caught up everywhere.
        assert_eq!(floor(&reading(&[(0, 5)], &[(0, 5, Some(100))])), None);
        // Behind on partition 1, which it last applied at 50.
        let r = reading(&[(0, 5), (1, 3)], &[(0, 5, Some(100)), (1, 1, Some(50))]);
        assert_eq!(floor(&r), Some(50));
        // A partition idle until now, never applied, does not drag it back to position 0.
        let r = reading(&[(0, 6), (2, 1)], &[(0, 5, Some(100)), (1, 3, Some(40))]);
        assert_eq!(floor(&r), Some(100));
        // Behind only where it applied nothing: from the lowest position it applied at all.
        let r = reading(&[(0, 5), (2, 1)], &[(0, 5, Some(100)), (1, 3, Some(40))]);
        assert_eq!(floor(&r), Some(40));
        // A view that has applied nothing: from the start.
        assert_eq!(floor(&reading(&[(0, 2)], &[])), Some(0));
    }
}
