//! [`Freshness`]: learning that an order's view moved to a new version, for `minVersion`
//! reads and `orderUpdated` subscriptions.
//!
//! One process holds one `LISTEN order_view_changed` connection (payload
//! `{"orderId": "...", "version": N}`, sent by the projector in its apply transaction).
//! Because a projector may not notify and notifications are lost while the listener
//! reconnects, one poller also re-reads the versions of the orders someone currently waits
//! on, in one statement per interval however many wait.
//!
//! Each watched order has its own `watch` channel holding the highest version learned of,
//! so a change wakes only that order's watchers, and only when the version went up: the
//! poller re-reading an unchanged order wakes nobody. A channel lives while someone
//! watches its order; the number of watches per process is capped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use uuid::Uuid;

use crate::db::{Db, OrderRow};
use crate::error::QueryError;

/// The channel the projector notifies on after changing `order_view`.
pub const ORDER_VIEW_CHANGED: &str = "order_view_changed";

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
    watched: Mutex<Watched>,
    /// Most watches open at once; beyond it `watch` refuses.
    max_watches: usize,
    /// `minVersion` reads that found the view behind and wait for a change.
    blocked_reads: AtomicUsize,
    /// Turns true when the service shuts down: subscriptions end.
    closing: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The orders someone watches, each with its own channel.
#[derive(Debug, Default)]
struct Watched {
    orders: HashMap<Uuid, Watchers>,
    /// Watches open over every order.
    total: usize,
}

/// One order's channel (the highest version learned of; 0 until the first) and how many
/// watch it.
#[derive(Debug)]
struct Watchers {
    version: watch::Sender<i32>,
    count: usize,
}

impl Watched {
    /// A receiver of the order's versions, or `None` if `limit` watches are open already.
    fn add(&mut self, order_id: Uuid, limit: usize) -> Option<watch::Receiver<i32>> {
        if self.total >= limit {
            return None;
        }
        self.total += 1;
        let watchers = self.orders.entry(order_id).or_insert_with(|| Watchers {
            version: watch::Sender::new(0),
            count: 0,
        });
        watchers.count += 1;
        // Subscribing marks the version known now as seen: only a later rise wakes.
        Some(watchers.version.subscribe())
    }

    fn remove(&mut self, order_id: Uuid) {
        if let Some(watchers) = self.orders.get_mut(&order_id) {
            watchers.count -= 1;
            self.total -= 1;
            if watchers.count == 0 {
                self.orders.remove(&order_id);
            }
        }
    }

    /// Tell the order's watchers, if it has any and `version` is newer than what they know.
    fn publish(&self, change: Change) {
        if let Some(watchers) = self.orders.get(&change.order_id) {
            watchers.version.send_if_modified(|known| {
                let newer = change.version > *known;
                if newer {
                    *known = change.version;
                }
                newer
            });
        }
    }
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
    /// At most `max_watches` reads and subscriptions may watch at once.
    /// Must be called inside a Tokio runtime.
    pub(crate) fn start(db: Db, poll_interval: Duration, max_watches: usize) -> Self {
        let (closing, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            watched: Mutex::default(),
            max_watches,
            blocked_reads: AtomicUsize::new(0),
            closing,
            tasks: Mutex::default(),
        });
        let listener = tokio::spawn(listen(db.pool().clone(), Arc::downgrade(&inner)));
        let poller = tokio::spawn(poll(db, Arc::downgrade(&inner), poll_interval));
        inner
            .tasks
            .lock()
            .expect("not poisoned")
            .extend([listener, poller]);
        Self { inner }
    }

    /// Start receiving changes of `order_id`; the order is polled while the watch lives.
    /// Refused ([`QueryError::TooManyWatches`]) when the process already holds its maximum.
    pub(crate) fn watch(&self, order_id: Uuid) -> Result<Watch, QueryError> {
        self.try_watch(order_id).ok_or(QueryError::TooManyWatches {
            limit: self.inner.max_watches,
        })
    }

    fn try_watch(&self, order_id: Uuid) -> Option<Watch> {
        // Subscribe before anyone reads the row, so no change after the read is missed.
        let version = self
            .inner
            .watched
            .lock()
            .expect("not poisoned")
            .add(order_id, self.inner.max_watches)?;
        Some(Watch {
            inner: self.inner.clone(),
            order_id,
            version,
            closing: self.inner.closing.subscribe(),
        })
    }

    /// How many reads and subscriptions watch an order (for tests and metrics).
    pub(crate) fn watches(&self) -> usize {
        self.inner.watched.lock().expect("not poisoned").total
    }

    /// How many `minVersion` reads are waiting for the view to catch up (for tests and
    /// metrics).
    pub(crate) fn blocked_reads(&self) -> usize {
        self.inner.blocked_reads.load(Ordering::Relaxed)
    }

    /// Count a read that waits for the views to catch up (for as long as the guard lives).
    pub(crate) fn blocked(&self) -> Blocked<'_> {
        Blocked::new(&self.inner.blocked_reads)
    }

    /// End every subscription: the service is shutting down.
    pub(crate) fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Read the order once it has reached `min_version`, waiting up to `wait`; past that
    /// the answer is [`QueryError::Stale`]. A read that would have to wait while the
    /// process holds its maximum of watches is [`QueryError::TooManyWatches`] at once.
    pub(crate) async fn read_at_least(
        &self,
        db: &Db,
        order_id: Uuid,
        min_version: i32,
        wait: Duration,
    ) -> Result<OrderRow, QueryError> {
        let started = Instant::now();
        let deadline = started + wait;
        // A read already satisfied needs no watch, so it succeeds even at the limit.
        let mut watch = self.try_watch(order_id);
        loop {
            if let Some(row) = db.order(order_id).await? {
                if row.version >= min_version {
                    return Ok(row);
                }
            }
            let Some(watch) = watch.as_mut() else {
                return Err(QueryError::TooManyWatches {
                    limit: self.inner.max_watches,
                });
            };
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
pub(crate) struct Blocked<'a>(&'a AtomicUsize);

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
    version: watch::Receiver<i32>,
    closing: watch::Receiver<bool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.inner
            .watched
            .lock()
            .expect("not poisoned")
            .remove(self.order_id);
    }
}

impl Watch {
    /// Returns once a version this watch has not yet seen is at least `version`: the row
    /// is then worth re-reading. Only this order's rises wake the watch, and a wake that
    /// finds the row still behind waits for a further rise rather than spinning.
    pub(crate) async fn reached(&mut self, version: i32) {
        loop {
            if self.version.changed().await.is_err() {
                // The channel outlives every watch of its order; unreachable in practice.
                std::future::pending::<()>().await;
            }
            if *self.version.borrow_and_update() >= version {
                return;
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

/// Pass every notification on [`ORDER_VIEW_CHANGED`] to its order's watchers, reconnecting
/// when the connection drops, until the pool closes or the service is dropped.
async fn listen(pool: sqlx::PgPool, inner: Weak<Inner>) {
    loop {
        match listen_once(&pool, &inner).await {
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

async fn listen_once(pool: &sqlx::PgPool, inner: &Weak<Inner>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(ORDER_VIEW_CHANGED).await?;
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                match serde_json::from_str::<Change>(notification.payload()) {
                    Ok(change) => {
                        let Some(inner) = inner.upgrade() else {
                            return Ok(());
                        };
                        inner.watched.lock().expect("not poisoned").publish(change);
                    }
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

/// Every `interval`, read the versions of the watched orders and pass them on; only the
/// orders whose version rose wake anyone.
async fn poll(db: Db, inner: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let ids: Vec<Uuid> = strong
            .watched
            .lock()
            .expect("not poisoned")
            .orders
            .keys()
            .copied()
            .collect();
        // Not held across the read, so dropping the service stops the poller.
        drop(strong);
        if ids.is_empty() {
            continue;
        }
        match db.order_versions(&ids).await {
            Ok(versions) => {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let watched = strong.watched.lock().expect("not poisoned");
                for (order_id, version) in versions {
                    watched.publish(Change { order_id, version });
                }
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => tracing::warn!(error = %err, "polling watched order versions failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(receiver: &watch::Receiver<i32>) -> bool {
        receiver.has_changed().expect("the channel is open")
    }

    #[test]
    fn a_change_reaches_only_the_watchers_of_its_order() {
        let mut watched = Watched::default();
        let orders: Vec<Uuid> = (0..2000).map(|_| Uuid::now_v7()).collect();
        let receivers: Vec<_> = orders
            .iter()
            .map(|order| watched.add(*order, usize::MAX).unwrap())
            .collect();
        let twin = watched.add(orders[7], usize::MAX).unwrap();

        watched.publish(Change {
            order_id: orders[7],
            version: 3,
        });

        for (index, receiver) in receivers.iter().enumerate() {
            assert_eq!(changed(receiver), index == 7, "order {index}");
        }
        assert!(changed(&twin));
        assert_eq!(*twin.borrow(), 3);
    }

    #[test]
    fn only_a_rise_in_version_wakes_watchers() {
        let mut watched = Watched::default();
        let order = Uuid::now_v7();
        let mut receiver = watched.add(order, 10).unwrap();
        let publish = |version| Change {
            order_id: order,
            version,
        };

        watched.publish(publish(4));
        assert!(changed(&receiver));
        receiver.borrow_and_update();
        // The poller re-reading the same version, or a late notification of an older one.
        watched.publish(publish(4));
        watched.publish(publish(2));
        assert!(!changed(&receiver));
        assert_eq!(*receiver.borrow(), 4);
        // An order nobody watches gets no channel.
        watched.publish(Change {
            order_id: Uuid::now_v7(),
            version: 1,
        });
        assert_eq!(watched.orders.len(), 1);
    }

    #[test]
    fn watches_beyond_the_limit_are_refused_and_channels_go_with_their_last_watcher() {
        let mut watched = Watched::default();
        let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(watched.add(one, 2).is_some());
        assert!(watched.add(one, 2).is_some());
        assert!(watched.add(two, 2).is_none());
        assert_eq!((watched.total, watched.orders.len()), (2, 1));

        watched.remove(one);
        assert!(watched.add(two, 2).is_some());
        assert_eq!((watched.total, watched.orders.len()), (2, 2));
        watched.remove(one);
        watched.remove(two);
        assert_eq!(watched.total, 0);
        assert!(watched.orders.is_empty());
    }
}
