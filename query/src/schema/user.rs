//! `User` (a registered row of `user_view`) with order statistics and its orders, and the
//! users connection.

use async_graphql::{Context, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::connection::{id_cursor, page_cost, page_size, parse_order_cursor, Page, PageInfo};
use super::money::MoneyView;
use super::order::{OrderConnection, OrderCount, UserOrderFilterInput};
use super::services;
use crate::db::UserRow;
use crate::error::QueryError;
use crate::loaders::{UserOrderCountKey, UserOrdersKey};

/// A registered user with statistics over their orders.
#[derive(Debug, Clone)]
pub(crate) struct User(pub(crate) UserRow);

/// A registered user with statistics over their orders.
#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.user_id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn registered_at(&self) -> DateTime<Utc> {
        self.0.registered_at
    }

    /// The version of the user's stream this view reflects.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// Orders the user created, whatever their status.
    async fn order_count(&self) -> i64 {
        self.0.order_count
    }

    /// Spent on confirmed orders, one amount per currency (never added across currencies),
    /// ordered by currency code.
    async fn spent(&self) -> Result<Vec<MoneyView>> {
        let mut spent = Vec::with_capacity(self.0.spent.len());
        for (currency, amount) in self.0.spent.iter() {
            spent.push(MoneyView::from_parts(*amount, currency)?);
        }
        Ok(spent)
    }

    /// When the user's latest order was created.
    async fn last_order_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_order_at
    }

    /// The user's orders, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<UserOrderFilterInput>,
        #[graphql(desc = "Page size: at most the service's maximum (100 by default).")]
        first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<OrderConnection> {
        let services = services(ctx);
        let size = page_size(first, services.options.max_page_size)?;
        let cursor = after.as_deref().map(parse_order_cursor).transpose()?;
        let filter = filter.unwrap_or_default().to_filter();
        let key = UserOrdersKey {
            user_id: self.0.user_id,
            filter: filter.clone(),
            after: cursor,
            limit: size + 1,
        };
        let rows = services
            .loader
            .load_one(key)
            .await
            .map_err(QueryError::from)?
            .unwrap_or_default();
        let count = OrderCount::OfUser(UserOrderCountKey {
            user_id: self.0.user_id,
            filter,
        });
        Ok(OrderConnection::new(rows, size, cursor.is_some(), count))
    }
}

/// A page of users in registration order.
#[derive(Debug, Clone)]
pub(crate) struct UserConnection {
    pub(crate) page: Page<User>,
    pub(crate) search: Option<String>,
}

impl UserConnection {
    pub(crate) fn new(rows: Vec<UserRow>, size: i64, after: bool, search: Option<String>) -> Self {
        Self {
            page: Page::new(
                rows,
                size,
                after,
                |row| id_cursor("users", row.user_id),
                User,
            ),
            search,
        }
    }
}

/// A user and where they are in the list.
#[derive(Debug, Clone, SimpleObject)]
pub(crate) struct UserEdge {
    pub(crate) cursor: String,
    pub(crate) node: User,
}

/// A page of users in registration order.
#[Object]
impl UserConnection {
    async fn edges(&self) -> Vec<UserEdge> {
        self.page.edges(|cursor, node| UserEdge { cursor, node })
    }

    async fn nodes(&self) -> Vec<User> {
        self.page.nodes()
    }

    async fn page_info(&self) -> PageInfo {
        self.page.page_info()
    }

    /// Users matching the search, on every page.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let db = &services(ctx).db;
        Ok(db
            .count_users(self.search.as_deref())
            .await
            .map_err(QueryError::from)?)
    }
}
