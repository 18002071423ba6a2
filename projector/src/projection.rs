//! [`Projection`]: what a read model is (its name, the streams it consumes, the tables it
//! owns, live or shadow) and [`Rows`]: how it folds a batch of events in memory. The engine,
//! the live worker and the replay are written against these two traits only; every
//! projection is one implementation, registered in [`crate::PROJECTIONS`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use orderflow_store::StoredEvent;
use sqlx::PgConnection;

use crate::event::Envelope;
use crate::{Refusal, PROJECTIONS};

/// The future of a trait method that talks to the database; boxed so the traits stay
/// object-safe and the registry can be one list of `&dyn Projection`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Implements [`Projection::tables`], [`Projection::shadow_tables`] and
/// [`Projection::verify_tables`] from the live view's and helper's names: the checkpoint
/// table and every other name follow from them.
macro_rules! table_names {
    ($view:literal, $helper:literal) => {
        fn tables(&self) -> $crate::Tables {
            $crate::Tables {
                view: $view,
                helper: $helper,
                checkpoints: concat!($view, "_checkpoints"),
            }
        }

        fn shadow_tables(&self) -> $crate::Tables {
            $crate::Tables {
                view: concat!($view, "_shadow"),
                helper: concat!($helper, "_shadow"),
                checkpoints: concat!($view, "_checkpoints_shadow"),
            }
        }

        fn verify_tables(&self) -> $crate::Tables {
            $crate::Tables {
                view: concat!($view, "_verify"),
                helper: concat!($helper, "_verify"),
                checkpoints: concat!($view, "_checkpoints_verify"),
            }
        }
    };
}
pub(crate) use table_names;

/// One read model with everything it owns; each is rebuilt on its own.
pub trait Projection: fmt::Debug + Send + Sync {
    /// The name used on the command line, in logs, in consumer group names and as the live
    /// view's table name.
    fn name(&self) -> &'static str;

    /// The stream types (and so Kafka topics) this projection consumes; events of other
    /// stream types are skipped without a checkpoint.
    fn stream_types(&self) -> &'static [&'static str];

    /// The tables queries read and live workers write ([`table_names!`] writes this and
    /// [`Projection::shadow_tables`] from the view's and helper's names).
    fn tables(&self) -> Tables;

    /// The tables a replay builds before swapping them in: the live names plus `_shadow`.
    fn shadow_tables(&self) -> Tables;

    /// The temporary tables `orderflow verify` rebuilds into and compares with the live
    /// ones: the live names plus `_verify`, private to the verifying session.
    fn verify_tables(&self) -> Tables;

    /// Distinguishes this projection's advisory locks from the other projections'. Held
    /// across processes and builds, so a projection keeps its id for ever and no two share one.
    fn lock_id(&self) -> i32;

    /// Empty rows to fold events into. `complete` when the tables start empty and only this
    /// fold writes them (a replay): nothing needs loading until the first [`Rows::clear`].
    fn rows(&self, complete: bool) -> Box<dyn Rows>;

    /// Runs in a live batch's transaction after the batch is applied, to tell listeners what
    /// changed once it commits. Does nothing unless a projection has listeners.
    fn announce<'a>(
        &self,
        _tx: &'a mut PgConnection,
        _events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether events of `stream_type` matter to this projection.
    fn consumes(&self, stream_type: &str) -> bool {
        self.stream_types().contains(&stream_type)
    }
}

/// The rows of one projection's tables that a fold holds in memory: loaded once per batch,
/// changed event by event, written back with one statement per table.
pub trait Rows: fmt::Debug + Send {
    /// Loads the rows `events` will change that are not in memory yet.
    fn load<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        tables: Tables,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Folds one event into the rows in memory, or changes nothing and says why not.
    fn apply(&mut self, event: &Envelope) -> Result<(), Refusal>;

    /// Writes every row changed since the last flush.
    fn flush<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        tables: Tables,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Rows held in memory.
    fn cached(&self) -> usize;

    /// Forgets the rows held in memory (after a flush); they are loaded again when needed.
    fn clear(&mut self);
}

impl fmt::Display for dyn Projection + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Projections are told apart by name, which [`find`] maps back to the projection.
impl PartialEq for dyn Projection + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for dyn Projection + '_ {}

/// The registered projection called `name`.
pub fn find(name: &str) -> Result<&'static dyn Projection, UnknownProjection> {
    PROJECTIONS
        .iter()
        .copied()
        .find(|projection| projection.name() == name)
        .ok_or_else(|| UnknownProjection(name.to_owned()))
}

/// `a, b or c`: the names of every registered projection, then `extra`.
pub fn names_or<'a>(extra: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = PROJECTIONS
        .iter()
        .map(|projection| projection.name())
        .chain(extra)
        .collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A projection name that is none of [`crate::PROJECTIONS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown projection {0:?} (expected {expected})", expected = names_or([]))]
pub struct UnknownProjection(pub String);

/// The names of the tables one projection writes. All SQL is written against these, so the
/// same code fills the live tables or a replay's shadow copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// The read model queries use.
    pub view: &'static str,
    /// Facts from other streams the view needs, private to this projection.
    pub helper: &'static str,
    /// The last version applied per stream (`stream_id`, `version`).
    pub checkpoints: &'static str,
}

impl Tables {
    /// Every table, checkpoints first: the order in which a swap locks them, which is also
    /// the order in which a live batch first touches them.
    pub const fn all(self) -> [&'static str; 3] {
        [self.checkpoints, self.helper, self.view]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use orderflow_domain::order::Order;
    use orderflow_domain::payment::Payment;
    use orderflow_domain::saga::Saga;
    use orderflow_domain::Aggregate;

    use super::*;

    #[test]
    fn projections_are_found_by_and_display_as_their_table_name() {
        for &projection in PROJECTIONS {
            assert_eq!(projection.to_string(), projection.tables().view);
            assert_eq!(find(projection.name()), Ok(projection));
        }
        assert_eq!(
            find("orders").map(|projection| projection.name()),
            Err(UnknownProjection("orders".into()))
        );
        assert_eq!(
            UnknownProjection("orders".into()).to_string(),
            "unknown projection \"orders\" (expected order_view, user_view, product_view or \
             payment_view)"
        );
    }

    #[test]
    fn shadow_and_verify_tables_are_the_live_names_with_a_suffix() {
        for projection in PROJECTIONS {
            let live = projection.tables().all();
            let shadow = projection.shadow_tables().all();
            let verify = projection.verify_tables().all();
            for ((live, shadow), verify) in live.iter().zip(shadow).zip(verify) {
                assert_eq!(format!("{live}_shadow"), shadow);
                assert_eq!(format!("{live}_verify"), verify);
            }
        }
    }

    #[test]
    fn payments_are_read_by_the_payment_view_alone_and_sagas_by_no_projection() {
        for projection in PROJECTIONS {
            let payments = projection.name() == "payment_view";
            assert_eq!(
                projection.consumes(Order::STREAM_TYPE),
                !payments,
                "{projection}"
            );
            assert_eq!(
                projection.consumes(Payment::STREAM_TYPE),
                payments,
                "{projection}"
            );
            assert!(!projection.consumes(Saga::STREAM_TYPE), "{projection}");
        }
    }

    #[test]
    fn lock_ids_keep_their_meaning_and_are_never_shared() {
        for (name, id) in [
            ("order_view", 1),
            ("user_view", 2),
            ("product_view", 3),
            ("payment_view", 4),
        ] {
            assert_eq!(find(name).map(|projection| projection.lock_id()), Ok(id));
        }
        let ids: HashSet<i32> = PROJECTIONS.iter().map(|p| p.lock_id()).collect();
        assert_eq!(ids.len(), PROJECTIONS.len());
    }
}
