//! The query root. Unknown ids are null, never errors; ids that are not UUIDs are.

use async_graphql::{Context, Object, Result, ID};

use crate::ops::{
    ConsumerGroup, DeadLetterTopic, EsFigures, LagMonitorStatus, OpsSample, OpsSnapshot,
    ProjectionStatus, RelayStatus, SagaCount,
};

use super::connection::{
    page_cost, page_size, parse_id_cursor, parse_order_cursor, parse_saga_cursor,
};
use super::order::{Order, OrderConnection, OrderCount, OrderFilterInput};
use super::product::{Product, ProductConnection};
use super::saga::{SagaConnection, SagaState};
use super::user::{User, UserConnection};
use super::{parse_id, require_admin, scope, services, Services};
use crate::db::ProductFilter;
use crate::error::QueryError;
use crate::loaders::{ProductKey, UserKey};
use crate::progress::ViewProgress;
use orderflow_store::auth::Scope;
use uuid::Uuid;

pub(crate) struct QueryRoot;

/// Reads over the read models. Unknown ids answer null; ids that are not UUIDs are
/// BAD_USER_INPUT. Customers read their own orders and user and the catalogue (anyone
/// else's answers as unknown); `users`, `sagas` and the operations fields are an admin's
/// (FORBIDDEN otherwise).
#[Object(name = "Query")]
impl QueryRoot {
    /// One order. With `minVersion`, waits (up to the service's bound, 5 s by default)
    /// until the view reflects at least that version of the order's stream, the version a
    /// command answered with, then answers; past the bound the error's code is STALE.
    async fn order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "Wait until the view has reached this stream version (1 or more).")]
        min_version: Option<i32>,
    ) -> Result<Option<Order>> {
        let scope = scope(ctx)?;
        let services = services(ctx);
        let id = parse_id("id", &id)?;
        if let Scope::User(own) = scope {
            return own_order(services, id, min_version, own).await;
        }
        let row = match min_version {
            None => services.db.order(id).await.map_err(QueryError::from)?,
            Some(version) if version < 1 => {
                return Err(QueryError::bad_input(format!(
                    "`minVersion` must be at least 1, got {version}"
                ))
                .into())
            }
            Some(version) => Some(
                services
                    .freshness
                    .read_at_least(
                        &services.db,
                        id,
                        version,
                        services.options.min_version_timeout,
                    )
                    .await?,
            ),
        };
        Ok(row.map(Order))
    }

    /// How far each view has applied what the relay has published: what `X-Min-Position`
    /// waits for.
    async fn view_progress(&self, ctx: &Context<'_>) -> Result<Vec<ViewProgress>> {
        scope(ctx)?;
        let services = services(ctx);
        Ok(
            crate::progress::progress(services.db.pool(), &services.options.relay_name)
                .await
                .map_err(QueryError::from)?,
        )
    }

    /// Orders, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<OrderFilterInput>,
        #[graphql(desc = "Page size: at most the service's maximum (100 by default).")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<OrderConnection> {
        let services = services(ctx);
        let size = page_size(first, services.options.max_page_size)?;
        let cursor = after.as_deref().map(parse_order_cursor).transpose()?;
        let mut filter = filter.unwrap_or_default().to_filter()?;
        if let Scope::User(own) = scope(ctx)? {
            // Customers see their own orders whatever the filter says: another user's id
            // matches nothing.
            filter.user_id = match filter.user_id {
                Some(other) if other != own => Some(Uuid::nil()),
                _ => Some(own),
            };
        }
        let rows = services
            .db
            .orders(&filter, cursor, size + 1)
            .await
            .map_err(QueryError::from)?;
        Ok(OrderConnection::new(
            rows,
            size,
            cursor.is_some(),
            OrderCount::Filter(filter),
        ))
    }

    /// One registered user.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        let scope = scope(ctx)?;
        let id = parse_id("id", &id)?;
        if !scope.covers(id) {
            return Ok(None);
        }
        let row = services(ctx)
            .loader
            .load_one(UserKey(id))
            .await
            .map_err(QueryError::from)?;
        Ok(row.map(User))
    }

    /// Registered users in registration order.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only users whose name or email contains this, ignoring case.")]
        search: Option<String>,
        #[graphql(desc = "Page size: at most the service's maximum (100 by default).")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<UserConnection> {
        require_admin(ctx)?;
        let services = services(ctx);
        let size = page_size(first, services.options.max_page_size)?;
        let cursor = after
            .as_deref()
            .map(|after| parse_id_cursor("users", after))
            .transpose()?;
        let rows = services
            .db
            .users(search.as_deref(), cursor, size + 1)
            .await
            .map_err(QueryError::from)?;
        Ok(UserConnection::new(rows, size, cursor.is_some(), search))
    }

    /// One product.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Product>> {
        scope(ctx)?;
        let id = parse_id("id", &id)?;
        let row = services(ctx)
            .loader
            .load_one(ProductKey(id))
            .await
            .map_err(QueryError::from)?;
        Ok(row.map(Product))
    }

    /// Products in creation order.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only products whose name or SKU contains this, ignoring case.")]
        search: Option<String>,
        #[graphql(desc = "Only products with at most this many units on hand.")] low_stock: Option<
            i32,
        >,
        #[graphql(desc = "Page size: at most the service's maximum (100 by default).")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<ProductConnection> {
        scope(ctx)?;
        let services = services(ctx);
        let size = page_size(first, services.options.max_page_size)?;
        let cursor = after
            .as_deref()
            .map(|after| parse_id_cursor("products", after))
            .transpose()?;
        let filter = ProductFilter {
            search,
            low_stock: low_stock.map(i64::from),
        };
        let rows = services
            .db
            .products(&filter, cursor, size + 1)
            .await
            .map_err(QueryError::from)?;
        Ok(ProductConnection::new(rows, size, cursor.is_some(), filter))
    }

    /// Fulfilment sagas, oldest first (by when the orchestrator took up the order), e.g.
    /// every STUCK saga for an operator to look at.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn sagas(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only sagas in this state.")] state: Option<SagaState>,
        #[graphql(desc = "Page size: at most the service's maximum (100 by default).")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<SagaConnection> {
        require_admin(ctx)?;
        let services = services(ctx);
        let size = page_size(first, services.options.max_page_size)?;
        let cursor = after.as_deref().map(parse_saga_cursor).transpose()?;
        let rows = services
            .db
            .sagas(state.map(SagaState::as_db), cursor, size + 1)
            .await
            .map_err(QueryError::from)?;
        Ok(SagaConnection::new(rows, size, cursor.is_some(), state))
    }

    /// Consumer lag of every watched group (each projection's, the saga's and any extra
    /// ones), per partition, from the lag monitor's latest sample; empty when the service
    /// runs no monitor.
    async fn consumer_groups(&self, ctx: &Context<'_>) -> Result<Vec<ConsumerGroup>> {
        require_admin(ctx)?;
        Ok(match &services(ctx).options.lag {
            Some(monitor) => OpsSnapshot::consumer_groups(&monitor.latest()),
            None => Vec::new(),
        })
    }

    /// Whether the lag monitor reads the broker; null when the service runs none.
    async fn lag_monitor(&self, ctx: &Context<'_>) -> Result<Option<LagMonitorStatus>> {
        require_admin(ctx)?;
        Ok(services(ctx)
            .options
            .lag
            .as_ref()
            .map(|monitor| (&*monitor.latest()).into()))
    }

    /// Each view's distance from what the relay has published, and its staleness (null,
    /// with an error, when the database cannot be read: the other ops fields still answer).
    async fn projections(&self, ctx: &Context<'_>) -> Result<Option<Vec<ProjectionStatus>>> {
        require_admin(ctx)?;
        let services = services(ctx);
        Ok(Some(
            EsFigures::read(services.db.pool(), &services.options.relay_name)
                .await
                .map_err(QueryError::from)?
                .projections,
        ))
    }

    /// The outbox relay's backlog: events committed and not yet published.
    async fn relay(&self, ctx: &Context<'_>) -> Result<Option<RelayStatus>> {
        require_admin(ctx)?;
        let services = services(ctx);
        Ok(Some(
            EsFigures::relay(services.db.pool(), &services.options.relay_name)
                .await
                .map_err(QueryError::from)?,
        ))
    }

    /// Records in each dead-letter topic, from the lag monitor's latest sample.
    async fn dead_letters(&self, ctx: &Context<'_>) -> Result<Vec<DeadLetterTopic>> {
        require_admin(ctx)?;
        Ok(match &services(ctx).options.lag {
            Some(monitor) => OpsSnapshot::dead_letters(&monitor.latest()),
            None => Vec::new(),
        })
    }

    /// Sagas by state.
    async fn saga_counts(&self, ctx: &Context<'_>) -> Result<Option<Vec<SagaCount>>> {
        require_admin(ctx)?;
        let services = services(ctx);
        Ok(Some(
            EsFigures::sagas(services.db.pool())
                .await
                .map_err(QueryError::from)?,
        ))
    }

    /// The last 15 minutes of lag per group and relay backlog, oldest first: one sample
    /// per lag monitor interval.
    async fn ops_history(&self, ctx: &Context<'_>) -> Result<Vec<OpsSample>> {
        require_admin(ctx)?;
        Ok(services(ctx).ops_history.samples())
    }
}

/// `order` for a customer: their own order, and for anyone else's exactly what an order
/// that does not exist gets (null, or STALE with no version after the whole wait), so that
/// neither the answer nor its timing tells a customer what others have.
async fn own_order(
    services: &Services,
    id: Uuid,
    min_version: Option<i32>,
    own: Uuid,
) -> Result<Option<Order>> {
    let started = std::time::Instant::now();
    let timeout = services.options.min_version_timeout;
    let row = services.db.order(id).await.map_err(QueryError::from)?;
    let theirs = |row: &crate::db::OrderRow| row.user_id != own;
    let Some(version) = min_version else {
        return Ok(row.filter(|row| !theirs(row)).map(Order));
    };
    if version < 1 {
        return Err(QueryError::bad_input(format!(
            "`minVersion` must be at least 1, got {version}"
        ))
        .into());
    }
    let row = match row {
        Some(row) if theirs(&row) => None,
        _ => Some(
            services
                .freshness
                .read_at_least(&services.db, id, version, timeout)
                .await?,
        ),
    };
    match row {
        Some(row) if !theirs(&row) => Ok(Some(Order(row))),
        _ => {
            tokio::time::sleep(timeout.saturating_sub(started.elapsed())).await;
            Err(QueryError::Stale {
                order_id: id,
                min_version: version,
                current_version: None,
                waited_ms: started.elapsed().as_millis(),
            }
            .into())
        }
    }
}
