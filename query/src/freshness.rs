//! [`Freshness`]: learning that an order's view moved to a new version, for `minVersion`
//! reads and `orderUpdated` subscriptions.
//!
//! One process holds one `LISTEN order_view_changed` connection (payload
//! `{"orderId": "...", "version": N}`, sent by the projector in its apply transaction) and
//! fans notifications out over a broadcast channel. Because a projector may not notify and
//! notifications are lost while the listener reconnects, one poller also re-reads the
//! versions of the orders someone currently waits on, in one statement per interval
//! however many wait. Waiters treat every message as a hint and re-read the row.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use uuid::Uuid;

use crate::db::{Db, OrderRow};
use crate::error::QueryError;

/// The channel the projector notifies on after changing `order_view`.
pub const ORDER_VIEW_CHANGED: &str = "order_view_changed";

/// Messages buffered per receiver before a slow one is told it lagged (and re-reads).
const CAPACITY: usize = 1024;

/// Wait between attempts to (re)connect the listener.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// An order's view has reached `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Change {
    pub(crate) order_id: Uuid,
    pub(crate) version: i32,
}

/// The process-wide fan-out of order view changes; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Freshness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    changes: broadcast::Sender<Change>,
    /// Orders someone waits on, with how many wait.
    watched: Mutex<HashMap<Uuid, usize>>,
    /// `minVersion` reads that found the view behind and wait for a change.
    blocked_reads: AtomicUsize,
    /// Turns true when the service shuts down: subscriptions end.
    closing: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().expect("not poisoned").drain(..) {
            task.abort();
        }
    }
}

impl Freshness {
    /// Start the listener and the poller; they stop when the last clone is dropped.
    /// Must be called inside a Tokio runtime.
    pub(crate) fn start(db: Db, poll_interval: Duration) -> Self {
        let (changes, _) = broadcast::channel(CAPACITY);
        let (closing, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            changes,
            watched: Mutex::default(),
            blocked_reads: AtomicUsize::new(0),
            closing,
            tasks: Mutex::default(),
        });
        let listener = tokio::spawn(listen(db.pool().clone(), inner.changes.clone()));
        let poller = tokio::spawn(poll(db, Arc::downgrade(&inner), poll_interval));
        inner
            .tasks
            .lock()
            .expect("not poisoned")
            .extend([listener, poller]);
        Self { inner }
    }

    /// Start receiving changes of `order_id`; the order is polled while the watch lives.
    pub(crate) fn watch(&self, order_id: Uuid) -> Watch {
        // Subscribe before anyone reads the row, so no change after the read is missed.
        let changes = self.inner.changes.subscribe();
        *self
            .inner
            .watched
            .lock()
            .expect("not poisoned")
            .entry(order_id)
            .or_default() += 1;
        Watch {
            inner: self.inner.clone(),
            order_id,
            changes,
            closing: self.inner.closing.subscribe(),
        }
    }

    /// How many reads and subscriptions watch an order (for tests and metrics).
    pub(crate) fn watches(&self) -> usize {
        self.inner
            .watched
            .lock()
            .expect("not poisoned")
            .values()
            .sum()
    }

    /// How many `minVersion` reads are waiting for the view to catch up (for tests and
    /// metrics).
    pub(crate) fn blocked_reads(&self) -> usize {
        self.inner.blocked_reads.load(Ordering::Relaxed)
    }

    /// End every subscription: the service is shutting down.
    pub(crate) fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Read the order once it has reached `min_version`, waiting up to `wait`; past that
    /// the answer is [`QueryError::Stale`].
    pub(crate) async fn read_at_least(
        &self,
        db: &Db,
        order_id: Uuid,
        min_version: i32,
        wait: Duration,
    ) -> Result<OrderRow, QueryError> {
        let started = Instant::now();
        let deadline = started + wait;
        let mut watch = self.watch(order_id);
        loop {
            if let Some(row) = db.order(order_id).await? {
                if row.version >= min_version {
                    return Ok(row);
                }
            }
            let blocked = Blocked::new(&self.inner.blocked_reads);
            let woken = timeout_at(deadline, watch.reached(min_version)).await;
            drop(blocked);
            if woken.is_err() {
                // Report the version as of the deadline, not as of the first read.
                let current = db.order(order_id).await?;
                let current_version = match current {
                    Some(row) if row.version >= min_version => return Ok(row),
                    Some(row) => Some(row.version),
                    None => None,
                };
                return Err(QueryError::Stale {
                    order_id,
                    min_version,
                    current_version,
                    waited_ms: started.elapsed().as_millis(),
                });
            }
        }
    }
}

/// Counts a blocked read for as long as it lives, however the read ends (a timeout
/// cancels it mid-wait).
struct Blocked<'a>(&'a AtomicUsize);

impl<'a> Blocked<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A registration of interest in one order; dropping it ends the interest.
#[derive(Debug)]
pub(crate) struct Watch {
    inner: Arc<Inner>,
    order_id: Uuid,
    changes: broadcast::Receiver<Change>,
    closing: watch::Receiver<bool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = self.inner.watched.lock().expect("not poisoned");
        if let Some(count) = watched.get_mut(&self.order_id) {
            *count -= 1;
            if *count == 0 {
                watched.remove(&self.order_id);
            }
        }
    }
}

impl Watch {
    /// Returns when the order may have reached `version`: a change says so, or changes
    /// were missed (a lagging receiver) and the row must be re-read to know.
    pub(crate) async fn reached(&mut self, version: i32) {
        loop {
            match self.changes.recv().await {
                Ok(change) if change.order_id == self.order_id && change.version >= version => {
                    return
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }

    /// The service is shutting down.
    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Like [`Watch::reached`], but `None` once the service shuts down.
    pub(crate) async fn reached_or_closing(&mut self, version: i32) -> Option<()> {
        if self.is_closing() {
            return None;
        }
        let mut closing = self.closing.clone();
        tokio::select! {
            () = self.reached(version) => Some(()),
            _ = closing.wait_for(|closing| *closing) => None,
        }
    }
}

/// Forward every notification on [`ORDER_VIEW_CHANGED`] to the broadcast channel, reconnecting
/// when the connection drops, until the pool closes.
async fn listen(pool: sqlx::PgPool, changes: broadcast::Sender<Change>) {
    loop {
        match listen_once(&pool, &changes).await {
            Ok(()) => return,
            Err(err) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %err, "the order_view_changed listener failed; reconnecting");
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn listen_once(
    pool: &sqlx::PgPool,
    changes: &broadcast::Sender<Change>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(ORDER_VIEW_CHANGED).await?;
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                match serde_json::from_str::<Change>(notification.payload()) {
                    // Nobody listening is fine: nobody waits.
                    Ok(change) => drop(changes.send(change)),
                    Err(err) => tracing::warn!(
                        payload = notification.payload(),
                        error = %err,
                        "ignoring a malformed order_view_changed notification"
                    ),
                }
            }
            // Reconnected: whatever was sent meanwhile is lost, the poller catches up.
            Ok(None) => tracing::debug!("the order_view_changed listener reconnected"),
            Err(sqlx::Error::PoolClosed) => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

/// Every `interval`, read the versions of the watched orders and broadcast them.
async fn poll(db: Db, inner: std::sync::Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let ids: Vec<Uuid> = inner
            .watched
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect();
        let changes = inner.changes.clone();
        drop(inner);
        if ids.is_empty() {
            continue;
        }
        match db.order_versions(&ids).await {
            Ok(versions) => {
                for (order_id, version) in versions {
                    drop(changes.send(Change { order_id, version }));
                }
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => tracing::warn!(error = %err, "polling watched order versions failed"),
        }
    }
}
