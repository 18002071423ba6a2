//! The relay's wake-up through PostgreSQL `LISTEN`/`NOTIFY`: [`EVENTS_APPENDED`] tells it
//! that events were committed, so that an idle relay neither polls nor makes fresh events
//! wait a poll interval.
//!
//! Writers do not notify from the appending transaction: a transaction that notifies takes
//! a database-wide lock from its pre-commit until its commit is flushed, so notifying
//! appends would commit one at a time and lose group commit. [`AppendSignal`] notifies
//! afterwards from a connection of its own, one notification at a time, so a burst of
//! commits costs a handful of notifications. A lost notification (the connection was down)
//! costs only the listener's fallback poll.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::Notify;

/// Notified after events were appended (no payload).
pub const EVENTS_APPENDED: &str = "orderflow_events_appended";

/// Shortest time between two notifications of one process: under load the relay is busy
/// anyway, and this bounds what a burst of appends costs the database.
const MIN_GAP: Duration = Duration::from_millis(5);

/// Tells listeners of [`EVENTS_APPENDED`] that this process appended events; cheap to
/// clone. Signals raised while a notification is on its way are folded into the next one.
#[derive(Debug, Clone, Default)]
pub struct AppendSignal {
    pending: Option<Arc<Notify>>,
}

impl AppendSignal {
    /// A signal that notifies through its own connection to `pool`'s database, from a task
    /// that ends when the last clone is dropped. Must be called inside a Tokio runtime.
    pub fn start(pool: &PgPool) -> Self {
        let pending = Arc::new(Notify::new());
        tokio::spawn(notify_loop(pool.clone(), Arc::downgrade(&pending)));
        Self {
            pending: Some(pending),
        }
    }

    /// A signal that tells nobody (listeners fall back to polling).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Events were committed.
    pub fn appended(&self) {
        if let Some(pending) = &self.pending {
            pending.notify_one();
        }
    }
}

async fn notify_loop(pool: PgPool, pending: std::sync::Weak<Notify>) {
    let mut conn: Option<PgConnection> = None;
    loop {
        let Some(notify) = pending.upgrade() else {
            return;
        };
        // Look again now and then whether the signal is still wanted.
        let woken = tokio::time::timeout(Duration::from_secs(5), notify.notified()).await;
        drop(notify);
        if woken.is_err() {
            continue;
        }
        if conn.is_none() {
            conn = connect(&pool).await;
        }
        if let Some(connection) = conn.as_mut() {
            let sent = sqlx::query("select pg_notify($1, '')")
                .bind(EVENTS_APPENDED)
                .execute(&mut *connection)
                .await;
            if let Err(err) = sent {
                tracing::debug!(%err, "notifying appended events failed; listeners will poll");
                conn = None;
            }
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

/// A connection whose notifications do not wait for their commit record to be flushed:
/// they carry no data worth it.
async fn connect(pool: &PgPool) -> Option<PgConnection> {
    let connected = async {
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        sqlx::query("set synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>(conn)
    };
    match connected.await {
        Ok(conn) => Some(conn),
        Err(err) => {
            tracing::debug!(%err, "connecting the append notifier failed; listeners will poll");
            None
        }
    }
}
