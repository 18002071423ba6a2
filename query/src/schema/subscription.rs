//! The subscription root: `orderUpdated` follows one order's view as projectors move it.

use async_graphql::{Context, Result, Subscription, ID};
use futures::{Stream, StreamExt as _};
use orderflow_store::auth::{AuthError, Scope};

use super::order::Order;
use super::{caller, parse_id, scope, services};
use crate::db::Db;
use crate::error::QueryError;
use crate::freshness::Watch;

pub(crate) struct SubscriptionRoot;

/// Live views, over WebSocket (`graphql-transport-ws`) at `/graphql/ws`.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// The order's view now (if it exists) and then each newer version as projectors
    /// apply it. Versions applied in one batch arrive as one update. Customers follow
    /// their own orders only (another's sends nothing, as one that does not exist). Ends
    /// when the service shuts down, or with TOKEN_EXPIRED when the connection's token
    /// expires.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Result<Order>>> {
        let owner = match scope(ctx)? {
            Scope::All => None,
            Scope::User(own) => Some(own),
        };
        let expires_at = caller(ctx)?.principal().map(|p| p.expires_at);
        let id = parse_id("id", &id)?;
        let services = services(ctx);
        let follow = Follow {
            db: services.db.clone(),
            watch: services.freshness.watch(id)?,
            order_id: id,
            owner,
            seen: 0,
            started: false,
        };
        Ok(until_expiry(
            futures::stream::unfold(follow, Follow::next),
            expires_at,
        ))
    }
}

/// Where a subscription is: the last version it sent.
struct Follow {
    db: Db,
    watch: Watch,
    order_id: uuid::Uuid,
    /// A customer's user id: rows of anyone else's order are never sent.
    owner: Option<uuid::Uuid>,
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
                Ok(Some(row)) if self.owner.is_some_and(|owner| owner != row.user_id) => {
                    self.seen = row.version;
                }
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

/// `updates` until the token behind them expires: then one TOKEN_EXPIRED error, and the
/// end.
fn until_expiry(
    updates: impl Stream<Item = Result<Order>> + Send + 'static,
    expires_at: Option<i64>,
) -> impl Stream<Item = Result<Order>> {
    // A token holds through its `exp` second (the verifier refuses it once that second
    // has passed), so the subscription ends when the next one begins.
    let deadline = expires_at.map(|at| {
        let end_ms = at.saturating_add(1).saturating_mul(1000);
        let left = end_ms
            .saturating_sub(chrono::Utc::now().timestamp_millis())
            .max(0) as u64;
        tokio::time::Instant::now() + std::time::Duration::from_millis(left)
    });
    let updates = Box::pin(updates);
    futures::stream::unfold(Some(updates), move |updates| async move {
        let mut updates = updates?;
        let Some(deadline) = deadline else {
            let item = updates.next().await?;
            return Some((item, Some(updates)));
        };
        tokio::select! {
            item = updates.next() => Some((item?, Some(updates))),
            () = tokio::time::sleep_until(deadline) => {
                let expired = QueryError::Unauthenticated(AuthError::Expired).into();
                Some((Err(expired), None))
            }
        }
    })
}
