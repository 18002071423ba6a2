//! `Product` (a created row of `product_view`) with stock and sales, and the products
//! connection.

use async_graphql::{Context, Object, Result, SimpleObject, ID};

use super::connection::{id_cursor, Page, PageInfo};
use super::money::MoneyView;
use super::{require_admin, services};
use crate::db::{ProductFilter, ProductRow};
use crate::error::QueryError;

/// A product with its current price, stock and sales.
#[derive(Debug, Clone)]
pub(crate) struct Product(pub(crate) ProductRow);

/// A product with its current price, stock and sales.
#[Object]
impl Product {
    async fn id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }

    async fn sku(&self) -> &str {
        &self.0.sku
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The current price; orders keep the price they were given.
    async fn price(&self) -> Result<MoneyView> {
        Ok(MoneyView::from_parts(self.0.price_minor, &self.0.currency)?)
    }

    /// Units available to reserve.
    async fn on_hand(&self) -> i64 {
        self.0.on_hand
    }

    /// Units held for placed orders not yet confirmed (admins; null with FORBIDDEN for
    /// customers: it tells what others are buying).
    async fn reserved(&self, ctx: &Context<'_>) -> Result<Option<i64>> {
        require_admin(ctx)?;
        Ok(Some(self.0.reserved))
    }

    /// Units in confirmed orders (admins).
    async fn units_sold(&self, ctx: &Context<'_>) -> Result<Option<i64>> {
        require_admin(ctx)?;
        Ok(Some(self.0.units_sold))
    }

    /// Line totals of confirmed orders, in the product's currency (admins).
    async fn revenue(&self, ctx: &Context<'_>) -> Result<Option<MoneyView>> {
        require_admin(ctx)?;
        Ok(Some(MoneyView::from_parts(
            self.0.revenue_minor,
            &self.0.currency,
        )?))
    }

    /// The version of the product's stream this view reflects (admins: every reservation
    /// moves it, so it would count others' orders).
    async fn version(&self, ctx: &Context<'_>) -> Result<Option<i32>> {
        require_admin(ctx)?;
        Ok(Some(self.0.version))
    }
}

/// A page of products in creation order.
#[derive(Debug, Clone)]
pub(crate) struct ProductConnection {
    pub(crate) page: Page<Product>,
    pub(crate) filter: ProductFilter,
}

impl ProductConnection {
    pub(crate) fn new(
        rows: Vec<ProductRow>,
        size: i64,
        after: bool,
        filter: ProductFilter,
    ) -> Self {
        Self {
            page: Page::new(
                rows,
                size,
                after,
                |row| id_cursor("products", row.product_id),
                Product,
            ),
            filter,
        }
    }
}

/// A product and where it is in the list.
#[derive(Debug, Clone, SimpleObject)]
pub(crate) struct ProductEdge {
    pub(crate) cursor: String,
    pub(crate) node: Product,
}

/// A page of products in creation order.
#[Object]
impl ProductConnection {
    async fn edges(&self) -> Vec<ProductEdge> {
        self.page.edges(|cursor, node| ProductEdge { cursor, node })
    }

    async fn nodes(&self) -> Vec<Product> {
        self.page.nodes()
    }

    async fn page_info(&self) -> PageInfo {
        self.page.page_info()
    }

    /// Products matching the filters, on every page.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let db = &services(ctx).db;
        Ok(db
            .count_products(&self.filter)
            .await
            .map_err(QueryError::from)?)
    }
}
