//! The outbox relay: publishes every committed event to Kafka in commit order.
//!
//! The event store is the outbox. The relay reads it with the gap-safe reader, publishes
//! pages with an idempotent producer (a few at a time, in order: a prompt producer when
//! idle, a batching one under load, see `Publishers`), and stores its cursor past
//! a page only after the broker has acknowledged the whole page. A crash between the two republishes the page (consumers
//! dedupe by stream version); nothing is skipped. Exactly one relay is active: it holds a
//! Postgres advisory lock on a connection of its own, and standbys wait for that lock, which
//! the server releases when the active relay's connection dies.
//!
//! An idle relay sleeps until a writer announces new events on
//! [`EVENTS_APPENDED`](orderflow_store::signal::EVENTS_APPENDED), and looks anyway every
//! `idle_poll` in case an announcement was lost. With its cursor it records, per
//! (stream type, partition), the offset past the last record the broker acknowledged
//! there, and at most every 100 ms a snapshot of them all: how readers learn that a view
//! has applied everything up to a position (see `migrations/0008_read_progress.sql` and
//! `0009_relay_history.sql`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use orderflow_kafka::producer::{BATCHING_LINGER, PROMPT_LINGER};
use orderflow_kafka::{Backoff, EventPublisher, KafkaArgs};
use orderflow_store::signal::EVENTS_APPENDED;
use orderflow_store::{read_after, Cursor, StoredEvent};
use rdkafka::error::KafkaError;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{watch, Notify};

/// Pages failed in a row after which the relay starts a new producer.
const FRESH_PRODUCER_AFTER: u32 = 3;

/// How often, at most, the relay records a snapshot of its offsets with its cursor
/// (`relay_history`, `migrations/0009_relay_history.sql`).
const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);
/// Snapshots kept per relay (10 minutes at one every [`SNAPSHOT_EVERY`]); older ones are
/// deleted every [`PRUNE_EVERY`] snapshots.
const SNAPSHOTS_KEPT: i64 = 6_000;
const PRUNE_EVERY: u64 = 100;

/// Advisory lock class of relays ("ofrl"); the object is a hash of the relay's name, so
/// relays of one name take turns and relays of different names run side by side.
const LOCK_CLASS: i32 = 0x6f66_726c;

#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Cursor name: one per relay deployment publishing to one cluster.
    pub name: String,
    /// Events read from the store and handed to the producer at a time (a page).
    pub batch_size: i64,
    /// Pages on their way to the broker at once: the next page is read and sent while the
    /// previous ones are acknowledged.
    pub pages_in_flight: usize,
    /// How long an idle relay waits before looking again when no writer announced new
    /// events (announcements wake it at once).
    pub idle_poll: Duration,
    /// How often a standby tries to become the active relay.
    pub standby_poll: Duration,
    /// Longest wait between retries while the broker is unreachable.
    pub max_backoff: Duration,
    /// How long one page may wait for the broker before it counts as failed and is retried.
    pub delivery_timeout: Duration,
    /// Where the relay says why it is not ready (the broker failing, the database lost).
    pub readiness: orderflow_store::telemetry::Readiness,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            name: "default".into(),
            batch_size: 1000,
            pages_in_flight: 2,
            idle_poll: Duration::from_millis(250),
            standby_poll: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(15),
            readiness: Default::default(),
        }
    }
}

/// Run the relay until `shutdown` flips to true: standby until the lock is ours, then
/// publish. A lost database connection (and with it, maybe, the lock) sends the relay back
/// to standby after a pause rather than ending it.
pub async fn run(
    pool: PgPool,
    kafka: KafkaArgs,
    options: RelayOptions,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(100), options.max_backoff);
    loop {
        match run_once(&pool, &kafka, &options, &mut shutdown, &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                let why = format!("{err:#}");
                tracing::warn!(error = %why, "the relay stopped; starting over");
                options.readiness.problem("relay", why);
            }
        }
        if backoff.wait(&mut shutdown).await {
            return Ok(());
        }
    }
}

/// One term as the active relay (after standing by for the lock). `restarts` is reset once
/// a page is published, so a relay that worked for a while restarts quickly.
async fn run_once(
    pool: &PgPool,
    kafka: &KafkaArgs,
    options: &RelayOptions,
    shutdown: &mut watch::Receiver<bool>,
    restarts: &mut Backoff,
) -> anyhow::Result<()> {
    let mut lock = PgConnection::connect_with(&pool.connect_options())
        .await
        .context("connecting the relay's lock connection")?;
    let mut announced = false;
    loop {
        let acquired: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(&options.name)
            .fetch_one(&mut lock)
            .await
            .context("trying the relay lock")?;
        if acquired {
            break;
        }
        if !announced {
            tracing::info!("another relay is active; standing by");
            announced = true;
            // Standing by is healthy: what failed while active is the active relay's now.
            options.readiness.ok("relay");
            options.readiness.ok("broker");
        }
        tokio::select! {
            _ = tokio::time::sleep(options.standby_poll) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
    tracing::info!(name = %options.name, "relay is active");
    options.readiness.ok("relay");
    let result = publish_loop(&mut lock, pool, kafka, options, shutdown, restarts).await;
    let _ = lock.close().await;
    result
}

async fn publish_loop(
    lock: &mut PgConnection,
    pool: &PgPool,
    kafka: &KafkaArgs,
    options: &RelayOptions,
    shutdown: &mut watch::Receiver<bool>,
    restarts: &mut Backoff,
) -> anyhow::Result<()> {
    let mut publishers = Publishers::new(kafka, options.delivery_timeout)?;
    let page_size = usize::try_from(options.batch_size).unwrap_or(usize::MAX);
    let appended = Arc::new(Notify::new());
    let listening = tokio::spawn(listen(pool.clone(), Arc::downgrade(&appended)));
    let _stop_listening = AbortOnDrop(listening);
    // `acked`: published and stored; `sent`: handed to the producer (pages in flight).
    let mut acked = load_cursor(pool, &options.name).await?;
    let mut sent = acked;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut look_soon_until = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), options.max_backoff);
    let mut snapshots = Snapshots::default();
    // Pages failed in a row since the last acknowledgement.
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            publishers.flush(Duration::from_secs(5));
            return Ok(());
        }
        // Keep up to `pages_in_flight` pages on their way: under load the next page is read
        // and sent while the broker acknowledges the previous ones.
        let mut failed = None;
        while in_flight.len() < options.pages_in_flight.max(1) {
            let page = read_after(pool, sent, options.batch_size)
                .await
                .context("reading the event store")?;
            let Some(last) = page.last() else {
                break;
            };
            let next = Cursor::after(last);
            if in_flight.is_empty() {
                publishers.choose(page.len(), page_size)?;
            }
            match publishers.current().send(&page).await {
                Ok(sending) => {
                    sent = next;
                    in_flight.push_back(InFlight {
                        page,
                        next,
                        acknowledged: Box::pin(sending.acknowledged()),
                    });
                }
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
        }
        if failed.is_none() {
            if let Some(oldest) = in_flight.pop_front() {
                match oldest.acknowledged.await {
                    // A retried record the broker already had may come back without its
                    // offset; send the page again for offsets readers can rely on.
                    Ok(landed) if landed.iter().any(|(_, offset)| *offset < 0) => {
                        tracing::warn!("the broker acknowledged a page without its offsets");
                        failed = Some(KafkaError::Canceled);
                    }
                    Ok(partitions) => {
                        // Through the lock's own connection: if the lock is gone, so is the
                        // write.
                        let partitions = last_per_partition(&oldest.page, &partitions);
                        let snapshot = snapshots.due();
                        save_cursor(lock, &options.name, oldest.next, &partitions, snapshot)
                            .await?;
                        if snapshot && snapshots.prune_due() {
                            prune_history(lock, &options.name).await?;
                        }
                        tracing::debug!(events = oldest.page.len(), next = ?oldest.next, "published");
                        metrics::counter!("orderflow_relay_published_total")
                            .increment(oldest.page.len() as u64);
                        options.readiness.ok("broker");
                        acked = oldest.next;
                        failures = 0;
                        backoff.reset();
                        restarts.reset();
                        continue;
                    }
                    Err(err) => failed = Some(err),
                }
            }
        }
        if let Some(err) = failed {
            // Whatever is still in flight is sent again from the last acknowledged page on
            // (consumers dedupe what arrives twice).
            tracing::warn!(%err, "publishing failed; the events wait in the store");
            options
                .readiness
                .problem("broker", format!("publishing failed: {err}"));
            in_flight.clear();
            sent = acked;
            if backoff.wait(shutdown).await {
                publishers.flush(Duration::from_secs(5));
                return Ok(());
            }
            failures += 1;
            // A producer whose idempotence state the broker rejects (fenced, or its
            // sequence lost in an outage) fails every page however long it retries; not
            // every such rejection is flagged fatal. A new producer starts a new sequence.
            if publishers.current().has_fatal_error()
                || failures.is_multiple_of(FRESH_PRODUCER_AFTER)
            {
                tracing::warn!(failures, "starting a new producer");
                publishers.renew_current()?;
            }
            continue;
        }
        // Nothing in flight and nothing new. Losing the lock connection means another relay
        // may take over: stop publishing. A cursor saved without a snapshot gets one while
        // the relay idles (once one is due), rather than at the next save.
        if snapshots.idle_due() {
            // A save of the same cursor with no new offsets: only its snapshot is new.
            save_cursor(lock, &options.name, acked, &BTreeMap::new(), true)
                .await
                .context("the relay lock connection was lost")?;
            snapshots.taken_now();
            if snapshots.prune_due() {
                prune_history(lock, &options.name).await?;
            }
        } else {
            sqlx::query("select 1")
                .execute(&mut *lock)
                .await
                .context("the relay lock connection was lost")?;
        }
        // An announced event may not be readable yet: the reader stops below the oldest
        // transaction still running anywhere. For a while after an announcement, look
        // again soon rather than after a whole `idle_poll`.
        let pause = if tokio::time::Instant::now() < look_soon_until {
            SOON
        } else {
            options.idle_poll
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            () = appended.notified() => {
                look_soon_until = tokio::time::Instant::now() + LOOK_SOON_FOR;
            }
            changed = shutdown.changed() => {
                // With its sender gone, shutdown can no longer be asked for: stop rather
                // than poll without pause.
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// A page at least this long, read with nothing in flight, means events arrive faster
/// than the broker acknowledges pages one at a time: the relay is busy.
const BUSY_PAGE: usize = 8;

/// The relay's two producers: a prompt one for an idle system (a lone event goes out at
/// once) and a batching one under load (fewer, larger requests; see
/// [`orderflow_kafka::producer::BATCHING_LINGER`]). Each keeps its own records in order, so
/// the relay changes producer only when the one in use holds nothing unacknowledged.
struct Publishers {
    kafka: KafkaArgs,
    delivery_timeout: Duration,
    /// The prompt producer, then the batching one: indexed by `busy`.
    producers: [EventPublisher; 2],
    busy: bool,
}

impl Publishers {
    fn new(kafka: &KafkaArgs, delivery_timeout: Duration) -> anyhow::Result<Self> {
        let publishers = Self {
            producers: [
                make(kafka, delivery_timeout, false)?,
                make(kafka, delivery_timeout, true)?,
            ],
            kafka: kafka.clone(),
            delivery_timeout,
            busy: false,
        };
        publishers.show();
        Ok(publishers)
    }

    /// `orderflow_relay_batching_producer`: 1 while the batching producer is in use.
    fn show(&self) {
        metrics::gauge!("orderflow_relay_batching_producer").set(f64::from(u8::from(self.busy)));
    }

    fn current(&self) -> &EventPublisher {
        &self.producers[usize::from(self.busy)]
    }

    /// Picks the producer for a page of `len` events (of at most `page_size`) read with no
    /// page in flight (see [`wants_batching`]). A producer that failed for good while it
    /// was not in use is replaced before it takes over.
    fn choose(&mut self, len: usize, page_size: usize) -> anyhow::Result<()> {
        let busy = wants_batching(len, page_size, self.busy);
        if busy != self.busy && self.current().is_quiet() {
            if self.producers[usize::from(busy)].has_fatal_error() {
                self.renew(busy)?;
            }
            tracing::debug!(busy, "switching producers");
            self.busy = busy;
            self.show();
        }
        Ok(())
    }

    /// Replaces the producer in use with a new one (a new idempotence sequence).
    fn renew_current(&mut self) -> anyhow::Result<()> {
        self.renew(self.busy)
    }

    fn renew(&mut self, busy: bool) -> anyhow::Result<()> {
        let fresh = make(&self.kafka, self.delivery_timeout, busy)?;
        let old = std::mem::replace(&mut self.producers[usize::from(busy)], fresh);
        // Dropping a producer purges what it still holds, flushes briefly and joins its
        // thread: not on an async thread.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    fn flush(&self, timeout: Duration) {
        // The other producer was quiet when the relay left it.
        let _ = self.current().flush(timeout);
    }
}

/// A relay that stops publishing (shut down, or back to standby) uses neither producer.
impl Drop for Publishers {
    fn drop(&mut self) {
        metrics::gauge!("orderflow_relay_batching_producer").set(0.0);
    }
}

/// The batching producer when `busy`, else the prompt one.
fn make(
    kafka: &KafkaArgs,
    delivery_timeout: Duration,
    busy: bool,
) -> anyhow::Result<EventPublisher> {
    let linger = if busy { BATCHING_LINGER } else { PROMPT_LINGER };
    EventPublisher::with_linger(kafka, delivery_timeout, linger)
        .context("creating the Kafka producer")
}

/// Whether a page of `len` events (of at most `page_size`), read with no page in flight,
/// goes through the batching producer: from [`BUSY_PAGE`] events on, not for a lone event,
/// and as before (`busy`) for anything between, so a moderate load does not flip
/// producers page by page. A full page is a backlog, whose pages fill the producer's
/// batches without a linger: the prompt producer drains it (so with a page size of
/// [`BUSY_PAGE`] or less the batching producer is never used). Only a page read with
/// nothing in flight decides: a backlog that builds up while pages are in flight is
/// drained by the producer in use.
fn wants_batching(len: usize, page_size: usize, busy: bool) -> bool {
    match len {
        ..=1 => false,
        len if len >= page_size => false,
        len if len >= BUSY_PAGE => true,
        _ => busy,
    }
}

/// How long after an announcement an idle relay keeps looking every [`SOON`].
const LOOK_SOON_FOR: Duration = Duration::from_millis(100);
const SOON: Duration = Duration::from_millis(5);

/// A page handed to the producer and not yet acknowledged.
struct InFlight {
    page: Vec<StoredEvent>,
    /// The cursor just past the page.
    next: Cursor,
    acknowledged: futures::future::BoxFuture<'static, Result<Vec<(i32, i64)>, KafkaError>>,
}

/// Where relay `name` has published up to.
pub async fn load_cursor(pool: &PgPool, name: &str) -> anyhow::Result<Cursor> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("select tx_id, position from relay_cursors where name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .context("loading the relay cursor")?;
    Ok(
        row.map_or_else(Cursor::default, |(tx_id, position)| Cursor {
            tx_id,
            position,
        }),
    )
}

/// Wakes `appended` on each announcement of new events until it is dropped. Reconnects by
/// itself (sqlx's listener); while it cannot, the relay polls.
async fn listen(pool: PgPool, appended: std::sync::Weak<Notify>) {
    let mut listener = loop {
        let connected = async {
            // A pool of its own: a listener holds its connection for good, and must not
            // take one from the pool that reads and publishes.
            let own = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with((*pool.connect_options()).clone())
                .await?;
            let mut listener = PgListener::connect_with(&own).await?;
            listener.listen(EVENTS_APPENDED).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => break listener,
            Err(err) => {
                tracing::debug!(%err, "listening for appended events failed; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        match listener.recv().await {
            Ok(_) => match appended.upgrade() {
                Some(appended) => appended.notify_one(),
                None => return,
            },
            Err(err) => {
                tracing::debug!(%err, "listening for appended events failed; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The offset past the last record of `page` per (stream type, partition), given the
/// partition and offset each landed at.
fn last_per_partition<'a>(
    page: &'a [StoredEvent],
    landed: &[(i32, i64)],
) -> BTreeMap<(&'a str, i32), i64> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for (event, (partition, offset)) in page.iter().zip(landed) {
        let entry = next
            .entry((event.stream_type.as_str(), *partition))
            .or_insert(0);
        *entry = (*entry).max(offset + 1);
    }
    next
}

/// When the relay next records a snapshot of its offsets, and when it prunes old ones.
#[derive(Debug, Default)]
struct Snapshots {
    last: Option<std::time::Instant>,
    taken: u64,
    /// A cursor saved without a snapshot since the last one.
    behind: bool,
}

impl Snapshots {
    /// Whether this save records a snapshot (the first does, then one per
    /// [`SNAPSHOT_EVERY`]); counts it if so.
    fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now - last < SNAPSHOT_EVERY) {
            self.behind = true;
            return false;
        }
        self.taken_now();
        true
    }

    /// Whether a cursor was saved without a snapshot and one is due: at most one per
    /// [`SNAPSHOT_EVERY`], idle or not.
    fn idle_due(&self) -> bool {
        self.behind
            && self
                .last
                .is_none_or(|last| last.elapsed() >= SNAPSHOT_EVERY)
    }

    /// Count a snapshot taken now.
    fn taken_now(&mut self) {
        self.last = Some(std::time::Instant::now());
        self.taken += 1;
        self.behind = false;
    }

    /// Whether the snapshot just taken is one to prune after: the first of each run of the
    /// relay, then one in [`PRUNE_EVERY`].
    fn prune_due(&self) -> bool {
        self.taken % PRUNE_EVERY == 1
    }
}

/// Cursors only move forward, whatever a relay that lost its lock late still writes. The
/// partitions' offsets are written by the same statement, so a reader that sees the cursor
/// sees the offsets of everything published before it; with `snapshot`, so is a snapshot of
/// the offsets in every partition with the cursor (`relay_history`: a relay that lost its
/// lock late records offsets past the cursor's, which only asks readers for more).
async fn save_cursor(
    lock: &mut PgConnection,
    name: &str,
    cursor: Cursor,
    partitions: &BTreeMap<(&str, i32), i64>,
    snapshot: bool,
) -> anyhow::Result<()> {
    let (mut stream_types, mut numbers, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for ((stream_type, partition), next_offset) in partitions {
        stream_types.push(*stream_type);
        numbers.push(*partition);
        offsets.push(*next_offset);
    }
    // One statement: one round trip, and atomic.
    sqlx::query(
        "with page as (select * from unnest($4::text[], $5::int[], $6::bigint[]) \
                       as p(stream_type, partition, next_offset)), \
         partitions as ( \
             insert into relay_partitions (relay, stream_type, partition, next_offset) \
             select $1, * from page \
             on conflict (relay, stream_type, partition) do update \
             set next_offset = greatest(relay_partitions.next_offset, excluded.next_offset), \
                 updated_at = now()), \
         history as ( \
             insert into relay_history (relay, tx_id, position, stream_types, partitions, \
                                        next_offsets) \
             select $1, $2, $3, array_agg(stream_type), array_agg(partition), \
                    array_agg(next_offset) \
             from (select coalesce(r.stream_type, p.stream_type) as stream_type, \
                          coalesce(r.partition, p.partition) as partition, \
                          greatest(r.next_offset, p.next_offset) as next_offset \
                   from (select stream_type, partition, next_offset from relay_partitions \
                         where relay = $1) r \
                   full join page p \
                       on p.stream_type = r.stream_type and p.partition = r.partition) s \
             where $7 \
             having count(*) > 0 \
             on conflict (relay, tx_id, position) do nothing) \
         insert into relay_cursors (name, tx_id, position) values ($1, $2, $3) \
         on conflict (name) do update set tx_id = excluded.tx_id, \
             position = excluded.position, updated_at = now() \
         where (relay_cursors.tx_id, relay_cursors.position) \
             < (excluded.tx_id, excluded.position)",
    )
    .bind(name)
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .bind(&stream_types)
    .bind(&numbers)
    .bind(&offsets)
    .bind(snapshot)
    .execute(lock)
    .await
    .context("storing the relay cursor")?;
    Ok(())
}

/// Delete all but the relay's last [`SNAPSHOTS_KEPT`] snapshots.
async fn prune_history(lock: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::query(
        "delete from relay_history where relay = $1 and (tx_id, position) < \
             (select tx_id, position from relay_history where relay = $1 \
              order by tx_id desc, position desc offset $2 limit 1)",
    )
    .bind(name)
    .bind(SNAPSHOTS_KEPT - 1)
    .execute(lock)
    .await
    .context("pruning the relay's snapshots")?;
    Ok(())
}

/// Events committed but not yet published by relay `name` (the relay backlog).
pub async fn backlog(pool: &PgPool, name: &str) -> anyhow::Result<i64> {
    let cursor = load_cursor(pool, name).await?;
    sqlx::query_scalar(
        "select count(*) from events where (tx_id, position) > ($1::bigint::text::xid8, $2)",
    )
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .fetch_one(pool)
    .await
    .context("counting the relay backlog")
}

/// Whether some process holds the lock of relay `name`, i.e. a relay of that name is active.
pub async fn is_active(pool: &PgPool, name: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from pg_locks where locktype = 'advisory' and granted \
         and database = (select oid from pg_database where datname = current_database()) \
         and classid = $1::int4::oid and objid = hashtext($2)::oid and objsubid = 2)",
    )
    .bind(LOCK_CLASS)
    .bind(name)
    .fetch_one(pool)
    .await
    .context("looking for the active relay")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batching_producer_takes_over_from_a_busy_page_and_hands_back_at_a_lone_event() {
        let page = 1000;
        // Idle: small pages stay with the prompt producer.
        assert!(!wants_batching(1, page, false));
        assert!(!wants_batching(BUSY_PAGE - 1, page, false));
        // A page of BUSY_PAGE events or more: the batching producer.
        assert!(wants_batching(BUSY_PAGE, page, false));
        assert!(wants_batching(page - 1, page, false));
        // Between the two, the producer in use stays.
        assert!(wants_batching(2, page, true));
        assert!(wants_batching(BUSY_PAGE - 1, page, true));
        // A lone event: back to the prompt producer.
        assert!(!wants_batching(1, page, true));
        // A full page (a backlog): the prompt producer.
        assert!(!wants_batching(page, page, false));
        assert!(!wants_batching(page, page, true));
    }
}
