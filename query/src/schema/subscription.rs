//! The subscription root: `orderUpdated` follows one order's view as projectors move it.

use async_graphql::{Context, Result, Subscription, ID};
use futures::Stream;

use super::order::Order;
use super::{parse_id, services};
use crate::db::Db;
use crate::error::QueryError;
use crate::freshness::Watch;

pub(crate) struct SubscriptionRoot;

/// Live views, over WebSocket (`graphql-transport-ws`) at `/graphql/ws`.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// The order's view now (if it exists) and then each newer version as projectors
    /// apply it. Versions applied in one batch arrive as one update. Ends when the
    /// service shuts down.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Result<Order>>> {
        let id = parse_id("id", &id)?;
        let services = services(ctx);
        let follow = Follow {
            db: services.db.clone(),
            watch: services.freshness.watch(id)?,
            order_id: id,
            seen: 0,
            started: false,
        };
        Ok(futures::stream::unfold(follow, Follow::next))
    }
}

/// Where a subscription is: the last version it sent.
struct Follow {
    db: Db,
    watch: Watch,
    order_id: uuid::Uuid,
    seen: i32,
    started: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Order>, Self)> {
        loop {
            if self.started {
                self.watch.reached_or_closing(self.seen + 1).await?;
            } else if self.watch.is_closing() {
                return None;
            }
            self.started = true;
            match self.db.order(self.order_id).await {
                Ok(Some(row)) if row.version > self.seen => {
                    self.seen = row.version;
                    return Some((Ok(Order(row)), self));
                }
                Ok(_) => {}
                Err(err) => return Some((Err(QueryError::from(err).into()), self)),
            }
        }
    }
}
