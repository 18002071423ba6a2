//! [`Projection`]: the read models this crate builds, the streams each consumes and the
//! tables each owns ([`Tables`]), live or shadow.

use std::fmt;
use std::str::FromStr;

use orderflow_domain::order::Order;
use orderflow_domain::product::Product;
use orderflow_domain::user::User;
use orderflow_domain::Aggregate;

/// One read model with everything it owns; each is rebuilt on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// Orders with their items, totals and the owner's current name and email.
    OrderView,
    /// Users with their order count and what they spent on confirmed orders.
    UserView,
    /// Products with stock, units sold and revenue from confirmed orders.
    ProductView,
}

impl Projection {
    /// Every projection, in the order `all` runs them.
    pub const ALL: [Projection; 3] = [Self::OrderView, Self::UserView, Self::ProductView];

    /// The name used on the command line, in logs and as the live view's table name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OrderView => "order_view",
            Self::UserView => "user_view",
            Self::ProductView => "product_view",
        }
    }

    /// The stream types (and so Kafka topics) this projection consumes; events of other
    /// stream types are skipped without a checkpoint.
    pub fn stream_types(&self) -> &'static [&'static str] {
        const ORDER_VIEW: &[&str] = &[Order::STREAM_TYPE, User::STREAM_TYPE];
        const USER_VIEW: &[&str] = &[User::STREAM_TYPE, Order::STREAM_TYPE];
        const PRODUCT_VIEW: &[&str] = &[Product::STREAM_TYPE, Order::STREAM_TYPE];
        match self {
            Self::OrderView => ORDER_VIEW,
            Self::UserView => USER_VIEW,
            Self::ProductView => PRODUCT_VIEW,
        }
    }

    /// Whether events of `stream_type` matter to this projection.
    pub fn consumes(self, stream_type: &str) -> bool {
        self.stream_types().contains(&stream_type)
    }

    /// The tables queries read and live workers write.
    pub const fn tables(self) -> Tables {
        match self {
            Self::OrderView => Tables {
                view: "order_view",
                helper: "order_view_users",
                checkpoints: "order_view_checkpoints",
            },
            Self::UserView => Tables {
                view: "user_view",
                helper: "user_view_orders",
                checkpoints: "user_view_checkpoints",
            },
            Self::ProductView => Tables {
                view: "product_view",
                helper: "product_view_order_lines",
                checkpoints: "product_view_checkpoints",
            },
        }
    }

    /// The tables a replay builds before swapping them in: the live names plus `_shadow`.
    pub const fn shadow_tables(self) -> Tables {
        match self {
            Self::OrderView => Tables {
                view: "order_view_shadow",
                helper: "order_view_users_shadow",
                checkpoints: "order_view_checkpoints_shadow",
            },
            Self::UserView => Tables {
                view: "user_view_shadow",
                helper: "user_view_orders_shadow",
                checkpoints: "user_view_checkpoints_shadow",
            },
            Self::ProductView => Tables {
                view: "product_view_shadow",
                helper: "product_view_order_lines_shadow",
                checkpoints: "product_view_checkpoints_shadow",
            },
        }
    }

    /// Distinguishes this projection's advisory locks from the other projections'.
    pub(crate) const fn lock_id(self) -> i32 {
        match self {
            Self::OrderView => 1,
            Self::UserView => 2,
            Self::ProductView => 3,
        }
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Projection {
    type Err = UnknownProjection;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|projection| projection.name() == name)
            .ok_or_else(|| UnknownProjection(name.to_owned()))
    }
}

/// A projection name that is none of [`Projection::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown projection {0:?} (expected order_view, user_view or product_view)")]
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
    use super::*;

    #[test]
    fn projections_parse_from_and_display_as_their_table_name() {
        for projection in Projection::ALL {
            assert_eq!(projection.to_string(), projection.tables().view);
            assert_eq!(projection.name().parse(), Ok(projection));
        }
        assert_eq!(
            "orders".parse::<Projection>(),
            Err(UnknownProjection("orders".into()))
        );
    }

    #[test]
    fn shadow_tables_are_the_live_names_with_a_suffix() {
        for projection in Projection::ALL {
            let live = projection.tables().all();
            let shadow = projection.shadow_tables().all();
            for (live, shadow) in live.iter().zip(shadow) {
                assert_eq!(format!("{live}_shadow"), shadow);
            }
        }
    }

    #[test]
    fn every_projection_consumes_order_events() {
        for projection in Projection::ALL {
            assert!(projection.consumes("order"), "{projection}");
            assert!(!projection.consumes("payment"), "{projection}");
        }
    }
}
