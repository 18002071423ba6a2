//! `Order` (a row of `order_view`) with its items, its owner, its saga, its payment, its
//! event stream and its timeline, and the orders connection with its filters.

use async_graphql::{Context, Enum, InputObject, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::connection::{order_cursor, Page, PageInfo};
use super::money::{Long, MoneyView};
use super::payment::Payment;
use super::product::Product;
use super::saga::Saga;
use super::user::User;
use super::{from_db, parse_id, services};
use crate::db::{ItemRow, OrderCursor, OrderFilter, OrderRow, TimelineRow};
use crate::error::QueryError;
use crate::loaders::{
    EventsKey, PaymentKey, ProductKey, SagaKey, TimelineKey, UserKey, UserOrderCountKey,
};

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum OrderStatus {
    /// Being filled; items can change.
    Draft,
    /// Submitted; items can no longer change.
    Placed,
    /// Stock committed and payment taken (the domain's final state; no service issues it yet).
    Confirmed,
    /// Cancelled, with a reason.
    Cancelled,
}

impl OrderStatus {
    const ALL: [Self; 4] = [Self::Draft, Self::Placed, Self::Confirmed, Self::Cancelled];

    /// The value of `order_view.status`.
    pub(crate) const fn as_db(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }

    fn from_db(status: &str) -> Result<Self, QueryError> {
        from_db(&Self::ALL, Self::as_db, "order status", status)
    }
}

/// Conditions on `orders`; each given field narrows the list.
#[derive(Debug, Clone, Default, InputObject)]
pub(crate) struct OrderFilterInput {
    /// Orders of this user.
    pub(crate) user_id: Option<ID>,
    pub(crate) status: Option<OrderStatus>,
    /// Created strictly after this instant.
    pub(crate) created_after: Option<DateTime<Utc>>,
    /// Created strictly before this instant.
    pub(crate) created_before: Option<DateTime<Utc>>,
}

impl OrderFilterInput {
    pub(crate) fn to_filter(&self) -> Result<OrderFilter, QueryError> {
        Ok(OrderFilter {
            user_id: self
                .user_id
                .as_ref()
                .map(|id| parse_id("filter.userId", id))
                .transpose()?,
            status: self.status.map(OrderStatus::as_db),
            created_after: self.created_after,
            created_before: self.created_before,
        })
    }
}

/// Conditions on a user's orders.
#[derive(Debug, Clone, Default, InputObject)]
pub(crate) struct UserOrderFilterInput {
    pub(crate) status: Option<OrderStatus>,
    /// Created strictly after this instant.
    pub(crate) created_after: Option<DateTime<Utc>>,
    /// Created strictly before this instant.
    pub(crate) created_before: Option<DateTime<Utc>>,
}

impl UserOrderFilterInput {
    pub(crate) fn to_filter(&self) -> OrderFilter {
        OrderFilter {
            user_id: None,
            status: self.status.map(OrderStatus::as_db),
            created_after: self.created_after,
            created_before: self.created_before,
        }
    }
}

/// An order with its items and totals, as the projectors last applied it.
#[derive(Debug, Clone)]
pub(crate) struct Order(pub(crate) OrderRow);

/// An order with its items and totals, as the projectors last applied it.
#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }

    /// The version of the order's stream this view reflects: what `minVersion` waits for,
    /// and what a command's response reports.
    async fn version(&self) -> i32 {
        self.0.version
    }

    async fn status(&self) -> Result<OrderStatus> {
        Ok(OrderStatus::from_db(&self.0.status)?)
    }

    /// ISO 4217 code every item is priced in.
    async fn currency(&self) -> &str {
        &self.0.currency
    }

    async fn user_id(&self) -> ID {
        ID(self.0.user_id.to_string())
    }

    /// The owner, live from the users view; null until their registration is projected.
    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let loader = &services(ctx).loader;
        let row = loader
            .load_one(UserKey(self.0.user_id))
            .await
            .map_err(QueryError::from)?;
        Ok(row.map(User))
    }

    /// Lines in the order products were first added.
    async fn items(&self) -> Vec<OrderItem> {
        self.0.items.iter().cloned().map(OrderItem).collect()
    }

    /// Units across all items.
    async fn item_count(&self) -> i32 {
        self.0.item_count
    }

    async fn total(&self) -> Result<MoneyView> {
        Ok(MoneyView::from_parts(self.0.total_minor, &self.0.currency)?)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn placed_at(&self) -> Option<DateTime<Utc>> {
        self.0.placed_at
    }

    async fn confirmed_at(&self) -> Option<DateTime<Utc>> {
        self.0.confirmed_at
    }

    async fn cancelled_at(&self) -> Option<DateTime<Utc>> {
        self.0.cancelled_at
    }

    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }

    /// When the last event this view reflects was recorded.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// The order's stream from the event store, oldest first: a timeline that may be ahead
    /// of this view while projectors catch up.
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<OrderEvent>> {
        let loader = &services(ctx).loader;
        let events = loader
            .load_one(EventsKey(self.0.order_id))
            .await
            .map_err(QueryError::from)?
            .unwrap_or_default();
        Ok(events
            .into_iter()
            .map(|event| OrderEvent {
                event_type: event.event_type,
                version: event.version,
                position: Long(event.position),
                schema_version: i32::from(event.schema_version),
                recorded_at: event.recorded_at,
                data: Json(event.payload),
            })
            .collect())
    }

    /// The fulfilment saga as the orchestrator last recorded it; null until the
    /// orchestrator takes up the placed order (always null for a draft).
    async fn saga(&self, ctx: &Context<'_>) -> Result<Option<Saga>> {
        let loader = &services(ctx).loader;
        let row = loader
            .load_one(SagaKey(self.0.order_id))
            .await
            .map_err(QueryError::from)?;
        Ok(row.map(Saga))
    }

    /// The payment as the projector last applied it; null until the payment's
    /// authorization or decline is projected.
    async fn payment(&self, ctx: &Context<'_>) -> Result<Option<Payment>> {
        let loader = &services(ctx).loader;
        let row = loader
            .load_one(PaymentKey(self.0.order_id))
            .await
            .map_err(QueryError::from)?;
        Ok(row.map(Payment))
    }

    /// Everything recorded about the order, from the event store, in position order (the
    /// order of the global event log): its own events, its saga's and its payment's, and
    /// the reservation events (`StockReserved`, `ReservationReleased`,
    /// `ReservationCommitted`) of product streams made for it. Like `events`, it may be
    /// ahead of this view and of `saga` and `payment`.
    async fn timeline(&self, ctx: &Context<'_>) -> Result<Vec<TimelineEvent>> {
        let loader = &services(ctx).loader;
        let events = loader
            .load_one(TimelineKey(self.0.order_id))
            .await
            .map_err(QueryError::from)?
            .unwrap_or_default();
        Ok(events
            .into_iter()
            .map(TimelineEvent::from_row)
            .collect::<Result<_, _>>()?)
    }
}

/// One line of an order: the product's name and price as they were when it was added.
#[derive(Debug, Clone)]
pub(crate) struct OrderItem(ItemRow);

/// One line of an order: the product's name and price as they were when it was added.
#[Object]
impl OrderItem {
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }

    /// The name when the product was added.
    async fn product_name(&self) -> &str {
        &self.0.product_name
    }

    /// The price when the product was added.
    async fn unit_price(&self) -> MoneyView {
        MoneyView(self.0.unit_price)
    }

    async fn quantity(&self) -> u32 {
        self.0.quantity
    }

    async fn line_total(&self) -> MoneyView {
        MoneyView(self.0.line_total)
    }

    /// The product as it is now (price, stock); null until its creation is projected.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>> {
        let loader = &services(ctx).loader;
        let row = loader
            .load_one(ProductKey(self.0.product_id))
            .await
            .map_err(QueryError::from)?;
        Ok(row.map(Product))
    }
}

/// One event of an order's stream.
#[derive(Debug, Clone, SimpleObject)]
pub(crate) struct OrderEvent {
    /// The event type, e.g. `OrderPlaced`.
    #[graphql(name = "type")]
    pub(crate) event_type: String,
    /// 1 for the stream's first event.
    pub(crate) version: i32,
    /// Position in the global event log.
    pub(crate) position: Long,
    /// Version of the payload's schema.
    pub(crate) schema_version: i32,
    pub(crate) recorded_at: DateTime<Utc>,
    /// The payload as stored.
    pub(crate) data: Json<serde_json::Value>,
}

/// The kind of stream an event of a timeline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum StreamType {
    /// The order's own stream.
    Order,
    /// The order's fulfilment saga.
    Saga,
    /// The order's payment.
    Payment,
    /// A product the order reserved stock of.
    Product,
}

impl StreamType {
    const ALL: [Self; 4] = [Self::Order, Self::Saga, Self::Payment, Self::Product];

    /// The value of `events.stream_type`.
    const fn as_db(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Saga => "saga",
            Self::Payment => "payment",
            Self::Product => "product",
        }
    }
}

/// One event of an order's timeline, and the stream it was recorded in.
#[derive(Debug, Clone, SimpleObject)]
pub(crate) struct TimelineEvent {
    pub(crate) stream_type: StreamType,
    /// The stream's id: the order's, its saga's, its payment's or a product's.
    pub(crate) stream_id: ID,
    /// The event type, e.g. `StockReserved`.
    #[graphql(name = "type")]
    pub(crate) event_type: String,
    /// The event's version in its own stream; 1 for the stream's first event.
    pub(crate) version: i32,
    /// Position in the global event log: what the timeline is ordered by.
    pub(crate) position: Long,
    /// Version of the payload's schema.
    pub(crate) schema_version: i32,
    pub(crate) recorded_at: DateTime<Utc>,
    /// The payload as stored.
    pub(crate) data: Json<serde_json::Value>,
}

impl TimelineEvent {
    fn from_row(row: TimelineRow) -> Result<Self, QueryError> {
        Ok(Self {
            stream_type: from_db(
                &StreamType::ALL,
                StreamType::as_db,
                "stream type",
                &row.stream_type,
            )?,
            stream_id: ID(row.stream_id.to_string()),
            event_type: row.event_type,
            version: row.version,
            position: Long(row.position),
            schema_version: i32::from(row.schema_version),
            recorded_at: row.recorded_at,
            data: Json(row.payload),
        })
    }
}

/// How a connection's `totalCount` is computed, only when asked for.
#[derive(Debug, Clone)]
pub(crate) enum OrderCount {
    Filter(OrderFilter),
    /// Through the loader, so a page of users costs one statement.
    OfUser(UserOrderCountKey),
}

/// A page of orders, newest first.
#[derive(Debug, Clone)]
pub(crate) struct OrderConnection {
    pub(crate) page: Page<Order>,
    pub(crate) count: OrderCount,
}

impl OrderConnection {
    pub(crate) fn new(rows: Vec<OrderRow>, size: i64, after: bool, count: OrderCount) -> Self {
        Self {
            page: Page::new(
                rows,
                size,
                after,
                |row| {
                    order_cursor(OrderCursor {
                        created_at: row.created_at,
                        order_id: row.order_id,
                    })
                },
                Order,
            ),
            count,
        }
    }
}

/// An order and where it is in the list.
#[derive(Debug, Clone, SimpleObject)]
pub(crate) struct OrderEdge {
    pub(crate) cursor: String,
    pub(crate) node: Order,
}

/// A page of orders, newest first.
#[Object]
impl OrderConnection {
    async fn edges(&self) -> Vec<OrderEdge> {
        self.page.edges(|cursor, node| OrderEdge { cursor, node })
    }

    async fn nodes(&self) -> Vec<Order> {
        self.page.nodes()
    }

    async fn page_info(&self) -> PageInfo {
        self.page.page_info()
    }

    /// Orders matching the filter, on every page.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let services = services(ctx);
        let count = match &self.count {
            OrderCount::Filter(filter) => services
                .db
                .count_orders(filter)
                .await
                .map_err(QueryError::from)?,
            OrderCount::OfUser(key) => services
                .loader
                .load_one(key.clone())
                .await
                .map_err(QueryError::from)?
                .unwrap_or(0),
        };
        Ok(count)
    }
}
