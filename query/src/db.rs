//! [`Db`]: every SQL statement the service runs, against the read models (`order_view`,
//! `user_view`, `product_view`, `payment_view`), the saga orchestrator's `sagas` table and
//! the event store (an order's stream and its timeline). Statements are counted, so tests
//! can prove that a page costs a constant number of queries.
//!
//! A statement that reads a view serves only fields that return (or belong to) that view's
//! type: `X-Min-Position` reads wait for the views behind the types a query selects
//! ([`crate::progress::TYPE_VIEWS`]).
//!
//! Filters are optional, so SQL is built with [`QueryBuilder`] to leave absent conditions
//! out (a generic plan with `$1 is null or ...` could not use the views' indexes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use orderflow_domain::Money;
use orderflow_store::lookup::by_keys;
use serde::Deserialize;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// The read models and the event store, with a count of statements run.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: PgPool,
    statements: Arc<AtomicU64>,
}

const ORDER_COLUMNS: &str = "order_id, user_id, status, currency, items, item_count, \
     total_minor, created_at, placed_at, confirmed_at, cancelled_at, cancel_reason, version, \
     updated_at";

const USER_COLUMNS: &str =
    "user_id, name, email, registered_at, order_count, spent, last_order_at, version";

/// A user exists for queries once their registration is projected; before that the row
/// only carries statistics from orders that arrived first.
const USER_KNOWN: &str = "registered_at is not null and name is not null and email is not null";

const PRODUCT_COLUMNS: &str = "product_id, sku, name, price_minor, currency, on_hand, reserved, \
     units_sold, revenue_minor, version";

/// Likewise a product exists once its creation is projected.
const PRODUCT_KNOWN: &str =
    "sku is not null and name is not null and price_minor is not null and currency is not null";

const SAGA_COLUMNS: &str = "saga_id, order_id, state, step, reason, detail, attempts, deadline, \
     version, steps, started_at, finished_at, created_at, updated_at";

const PAYMENT_COLUMNS: &str = "order_id, payment_id, status, amount_minor, currency, \
     authorization_id, decline_reason, void_reason, authorized_at, declined_at, captured_at, \
     voided_at, version, updated_at";

/// The product events that name an order in their payload (`orderId`): its reservations.
const RESERVATION_EVENTS: [&str; 3] = [
    "StockReserved",
    "ReservationReleased",
    "ReservationCommitted",
];

/// One row of `order_view`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct OrderRow {
    pub(crate) order_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) status: String,
    pub(crate) currency: String,
    #[sqlx(json)]
    pub(crate) items: Vec<ItemRow>,
    pub(crate) item_count: i32,
    pub(crate) total_minor: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) placed_at: Option<DateTime<Utc>>,
    pub(crate) confirmed_at: Option<DateTime<Utc>>,
    pub(crate) cancelled_at: Option<DateTime<Utc>>,
    pub(crate) cancel_reason: Option<String>,
    pub(crate) version: i32,
    pub(crate) updated_at: DateTime<Utc>,
}

/// One element of `order_view.items`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ItemRow {
    pub(crate) product_id: Uuid,
    pub(crate) product_name: String,
    pub(crate) unit_price: Money,
    pub(crate) quantity: u32,
    pub(crate) line_total: Money,
}

/// One registered user of `user_view`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct UserRow {
    pub(crate) user_id: Uuid,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) registered_at: DateTime<Utc>,
    pub(crate) order_count: i64,
    /// Minor units per currency code.
    pub(crate) spent: Json<BTreeMap<String, i64>>,
    pub(crate) last_order_at: Option<DateTime<Utc>>,
    pub(crate) version: i32,
}

/// One created product of `product_view`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct ProductRow {
    pub(crate) product_id: Uuid,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) price_minor: i64,
    pub(crate) currency: String,
    pub(crate) on_hand: i64,
    pub(crate) reserved: i64,
    pub(crate) units_sold: i64,
    pub(crate) revenue_minor: i64,
    pub(crate) version: i32,
}

/// One event of an order's stream, as a timeline shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) stream_id: Uuid,
    pub(crate) position: i64,
    pub(crate) version: i32,
    pub(crate) event_type: String,
    pub(crate) schema_version: i16,
    pub(crate) payload: serde_json::Value,
    pub(crate) recorded_at: DateTime<Utc>,
}

/// One row of `sagas`, as the orchestrator last mirrored the saga's stream into it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct SagaRow {
    pub(crate) saga_id: Uuid,
    pub(crate) order_id: Uuid,
    pub(crate) state: String,
    pub(crate) step: String,
    pub(crate) reason: Option<String>,
    pub(crate) detail: Option<String>,
    pub(crate) attempts: i32,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) version: i32,
    #[sqlx(json)]
    pub(crate) steps: Vec<SagaStepRow>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// One element of `sagas.steps` (the domain's `StepRecord` as JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SagaStepRow {
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) detail: Option<String>,
}

/// One row of `payment_view`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct PaymentRow {
    pub(crate) order_id: Uuid,
    pub(crate) payment_id: Uuid,
    pub(crate) status: String,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) authorization_id: Option<String>,
    pub(crate) decline_reason: Option<String>,
    pub(crate) void_reason: Option<String>,
    pub(crate) authorized_at: Option<DateTime<Utc>>,
    pub(crate) declined_at: Option<DateTime<Utc>>,
    pub(crate) captured_at: Option<DateTime<Utc>>,
    pub(crate) voided_at: Option<DateTime<Utc>>,
    pub(crate) version: i32,
    pub(crate) updated_at: DateTime<Utc>,
}

/// One event of an order's timeline, from any of the streams that make it up.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct TimelineRow {
    /// The order whose timeline it belongs to.
    pub(crate) order_id: Uuid,
    pub(crate) stream_id: Uuid,
    pub(crate) stream_type: String,
    pub(crate) position: i64,
    pub(crate) version: i32,
    pub(crate) event_type: String,
    pub(crate) schema_version: i16,
    pub(crate) payload: serde_json::Value,
    pub(crate) recorded_at: DateTime<Utc>,
}

/// The streams besides product streams that an order's timeline merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OrderStreams {
    pub(crate) order_id: Uuid,
    pub(crate) saga_id: Uuid,
    pub(crate) payment_id: Uuid,
}

/// Where a page of sagas starts: just after this saga in `created_at, saga_id` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SagaCursor {
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) saga_id: Uuid,
}

/// Conditions on orders; every field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct OrderFilter {
    pub(crate) user_id: Option<Uuid>,
    pub(crate) status: Option<&'static str>,
    /// Exclusive.
    pub(crate) created_after: Option<DateTime<Utc>>,
    /// Exclusive.
    pub(crate) created_before: Option<DateTime<Utc>>,
}

/// Where a page of orders starts: just after this order in `created_at desc, order_id desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OrderCursor {
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) order_id: Uuid,
}

/// Conditions on products.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct ProductFilter {
    pub(crate) search: Option<String>,
    /// At most this many units on hand.
    pub(crate) low_stock: Option<i64>,
}

impl Db {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            statements: Arc::default(),
        }
    }

    /// Statements run since the service started.
    pub(crate) fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn counted(&self) -> &PgPool {
        self.statements.fetch_add(1, Ordering::Relaxed);
        &self.pool
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn order(&self, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
        let sql = format!("select {ORDER_COLUMNS} from order_view where order_id = $1");
        sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(self.counted())
            .await
    }

    /// Up to `limit` orders after `after`, newest first.
    pub(crate) async fn orders(
        &self,
        filter: &OrderFilter,
        after: Option<OrderCursor>,
        limit: i64,
    ) -> Result<Vec<OrderRow>, sqlx::Error> {
        let mut sql =
            QueryBuilder::new(format!("select {ORDER_COLUMNS} from order_view where true"));
        push_order_filter(&mut sql, filter, after);
        sql.push(" order by created_at desc, order_id desc limit ")
            .push_bind(limit);
        sql.build_query_as().fetch_all(self.counted()).await
    }

    pub(crate) async fn count_orders(&self, filter: &OrderFilter) -> Result<i64, sqlx::Error> {
        let mut sql = QueryBuilder::new("select count(*) from order_view where true");
        push_order_filter(&mut sql, filter, None);
        sql.build_query_scalar().fetch_one(self.counted()).await
    }

    /// Each user's first `limit` orders after `after` (the filter's own `user_id` is
    /// ignored): one statement for a whole page of users, the users behind a sub-select as
    /// in [`orderflow_store::lookup::each_key`].
    pub(crate) async fn orders_of_users(
        &self,
        user_ids: &[Uuid],
        filter: &OrderFilter,
        after: Option<OrderCursor>,
        limit: i64,
    ) -> Result<Vec<OrderRow>, sqlx::Error> {
        let filter = OrderFilter {
            user_id: None,
            ..filter.clone()
        };
        let mut sql = QueryBuilder::new("select o.* from unnest((select ");
        sql.push_bind(user_ids.to_vec()).push(format!(
            "::uuid[])) as u(id) cross join lateral (select {ORDER_COLUMNS} from order_view \
             where user_id = u.id"
        ));
        push_order_filter(&mut sql, &filter, after);
        sql.push(" order by created_at desc, order_id desc limit ")
            .push_bind(limit)
            .push(") as o");
        sql.build_query_as().fetch_all(self.counted()).await
    }

    /// How many orders each user has that match `filter` (its `user_id` ignored).
    pub(crate) async fn count_orders_of_users(
        &self,
        user_ids: &[Uuid],
        filter: &OrderFilter,
    ) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        let filter = OrderFilter {
            user_id: None,
            ..filter.clone()
        };
        let mut sql =
            QueryBuilder::new("select user_id, count(*) from order_view where user_id = any(");
        sql.push_bind(user_ids.to_vec()).push(")");
        push_order_filter(&mut sql, &filter, None);
        sql.push(" group by user_id");
        sql.build_query_as().fetch_all(self.counted()).await
    }

    /// The current version of each of `ids` that has a row.
    pub(crate) async fn order_versions(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
        let sql = by_keys("select order_id, version from order_view where order_id = k.id");
        sqlx::query_as(&sql)
            .bind(ids)
            .fetch_all(self.counted())
            .await
    }

    pub(crate) async fn users_by_id(&self, ids: &[Uuid]) -> Result<Vec<UserRow>, sqlx::Error> {
        let sql = by_keys(&format!(
            "select {USER_COLUMNS} from user_view where user_id = k.id and {USER_KNOWN}"
        ));
        sqlx::query_as(&sql)
            .bind(ids)
            .fetch_all(self.counted())
            .await
    }

    /// Up to `limit` users after `after`, in id order (ids are UUIDv7: registration order).
    pub(crate) async fn users(
        &self,
        search: Option<&str>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<UserRow>, sqlx::Error> {
        let mut sql = QueryBuilder::new(format!(
            "select {USER_COLUMNS} from user_view where {USER_KNOWN}"
        ));
        push_user_filter(&mut sql, search);
        if let Some(after) = after {
            sql.push(" and user_id > ").push_bind(after);
        }
        sql.push(" order by user_id limit ").push_bind(limit);
        sql.build_query_as().fetch_all(self.counted()).await
    }

    pub(crate) async fn count_users(&self, search: Option<&str>) -> Result<i64, sqlx::Error> {
        let mut sql =
            QueryBuilder::new(format!("select count(*) from user_view where {USER_KNOWN}"));
        push_user_filter(&mut sql, search);
        sql.build_query_scalar().fetch_one(self.counted()).await
    }

    pub(crate) async fn products_by_id(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<ProductRow>, sqlx::Error> {
        let sql = by_keys(&format!(
            "select {PRODUCT_COLUMNS} from product_view where product_id = k.id \
             and {PRODUCT_KNOWN}"
        ));
        sqlx::query_as(&sql)
            .bind(ids)
            .fetch_all(self.counted())
            .await
    }

    /// Up to `limit` products after `after`, in id order (creation order).
    pub(crate) async fn products(
        &self,
        filter: &ProductFilter,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ProductRow>, sqlx::Error> {
        let mut sql = QueryBuilder::new(format!(
            "select {PRODUCT_COLUMNS} from product_view where {PRODUCT_KNOWN}"
        ));
        push_product_filter(&mut sql, filter);
        if let Some(after) = after {
            sql.push(" and product_id > ").push_bind(after);
        }
        sql.push(" order by product_id limit ").push_bind(limit);
        sql.build_query_as().fetch_all(self.counted()).await
    }

    pub(crate) async fn count_products(&self, filter: &ProductFilter) -> Result<i64, sqlx::Error> {
        let mut sql = QueryBuilder::new(format!(
            "select count(*) from product_view where {PRODUCT_KNOWN}"
        ));
        push_product_filter(&mut sql, filter);
        sql.build_query_scalar().fetch_one(self.counted()).await
    }

    pub(crate) async fn orders_by_id(&self, ids: &[Uuid]) -> Result<Vec<OrderRow>, sqlx::Error> {
        let sql = by_keys(&format!(
            "select {ORDER_COLUMNS} from order_view where order_id = k.id"
        ));
        sqlx::query_as(&sql)
            .bind(ids)
            .fetch_all(self.counted())
            .await
    }

    /// The saga of each order in `order_ids` that has one.
    pub(crate) async fn sagas_of_orders(
        &self,
        order_ids: &[Uuid],
    ) -> Result<Vec<SagaRow>, sqlx::Error> {
        let sql = by_keys(&format!(
            "select {SAGA_COLUMNS} from sagas where order_id = k.id"
        ));
        sqlx::query_as(&sql)
            .bind(order_ids)
            .fetch_all(self.counted())
            .await
    }

    /// Up to `limit` sagas after `after`, oldest first.
    pub(crate) async fn sagas(
        &self,
        state: Option<&'static str>,
        after: Option<SagaCursor>,
        limit: i64,
    ) -> Result<Vec<SagaRow>, sqlx::Error> {
        let mut sql = QueryBuilder::new(format!("select {SAGA_COLUMNS} from sagas where true"));
        push_saga_filter(&mut sql, state);
        if let Some(cursor) = after {
            sql.push(" and (created_at, saga_id) > (")
                .push_bind(cursor.created_at)
                .push(", ")
                .push_bind(cursor.saga_id)
                .push(")");
        }
        sql.push(" order by created_at, saga_id limit ")
            .push_bind(limit);
        sql.build_query_as().fetch_all(self.counted()).await
    }

    pub(crate) async fn count_sagas(
        &self,
        state: Option<&'static str>,
    ) -> Result<i64, sqlx::Error> {
        let mut sql = QueryBuilder::new("select count(*) from sagas where true");
        push_saga_filter(&mut sql, state);
        sql.build_query_scalar().fetch_one(self.counted()).await
    }

    /// The payment of each order in `order_ids` that has one.
    pub(crate) async fn payments_of_orders(
        &self,
        order_ids: &[Uuid],
    ) -> Result<Vec<PaymentRow>, sqlx::Error> {
        let sql = by_keys(&format!(
            "select {PAYMENT_COLUMNS} from payment_view where order_id = k.id"
        ));
        sqlx::query_as(&sql)
            .bind(order_ids)
            .fetch_all(self.counted())
            .await
    }

    /// Every order's timeline in one statement, in position order: the events of its own,
    /// saga and payment streams, and the reservation events of product streams whose
    /// payload names it. Those are found through `events_product_order_idx` by comparing
    /// text, `= any(...)` rather than a join so that a generic plan uses the index too; the
    /// cast back to uuid only sees texts equal to one of `orders`' ids.
    pub(crate) async fn timelines(
        &self,
        orders: &[OrderStreams],
    ) -> Result<Vec<TimelineRow>, sqlx::Error> {
        let column = |f: fn(&OrderStreams) -> Uuid| orders.iter().map(f).collect::<Vec<_>>();
        let order_ids = column(|o| o.order_id);
        let order_texts: Vec<String> = order_ids.iter().map(Uuid::to_string).collect();
        sqlx::query_as(
            "select k.order_id, e.stream_id, e.stream_type, e.position, e.version, e.event_type, \
               e.schema_version, e.payload, e.recorded_at \
             from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as k(order_id, saga_id, payment_id) \
             join events e on e.stream_id in (k.order_id, k.saga_id, k.payment_id) \
             union all \
             select (e.payload ->> 'orderId')::uuid, e.stream_id, e.stream_type, e.position, \
               e.version, e.event_type, e.schema_version, e.payload, e.recorded_at \
             from events e \
             where e.stream_type = 'product' and e.payload ->> 'orderId' = any($4) \
               and e.event_type = any($5) \
             order by position",
        )
        .bind(&order_ids)
        .bind(column(|o| o.saga_id))
        .bind(column(|o| o.payment_id))
        .bind(&order_texts)
        .bind(&RESERVATION_EVENTS[..])
        .fetch_all(self.counted())
        .await
    }

    /// The events of every stream in `stream_ids`, in version order per stream.
    pub(crate) async fn events_of(
        &self,
        stream_ids: &[Uuid],
    ) -> Result<Vec<EventRow>, sqlx::Error> {
        let sql = by_keys(
            "select stream_id, position, version, event_type, schema_version, payload, \
             recorded_at from events where stream_id = k.id",
        ) + " order by v.stream_id, v.version";
        sqlx::query_as(&sql)
            .bind(stream_ids)
            .fetch_all(self.counted())
            .await
    }
}

fn push_order_filter(
    sql: &mut QueryBuilder<'_, Postgres>,
    filter: &OrderFilter,
    after: Option<OrderCursor>,
) {
    if let Some(user_id) = filter.user_id {
        sql.push(" and user_id = ").push_bind(user_id);
    }
    if let Some(status) = filter.status {
        sql.push(" and status = ").push_bind(status);
    }
    if let Some(at) = filter.created_after {
        sql.push(" and created_at > ").push_bind(at);
    }
    if let Some(at) = filter.created_before {
        sql.push(" and created_at < ").push_bind(at);
    }
    if let Some(cursor) = after {
        sql.push(" and (created_at, order_id) < (")
            .push_bind(cursor.created_at)
            .push(", ")
            .push_bind(cursor.order_id)
            .push(")");
    }
}

fn push_saga_filter(sql: &mut QueryBuilder<'_, Postgres>, state: Option<&'static str>) {
    if let Some(state) = state {
        sql.push(" and state = ").push_bind(state);
    }
}

fn push_user_filter(sql: &mut QueryBuilder<'_, Postgres>, search: Option<&str>) {
    if let Some(search) = search {
        let pattern = contains_pattern(search);
        sql.push(" and (name ilike ")
            .push_bind(pattern.clone())
            .push(" or email ilike ")
            .push_bind(pattern)
            .push(")");
    }
}

fn push_product_filter(sql: &mut QueryBuilder<'_, Postgres>, filter: &ProductFilter) {
    if let Some(search) = &filter.search {
        let pattern = contains_pattern(search);
        sql.push(" and (name ilike ")
            .push_bind(pattern.clone())
            .push(" or sku ilike ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(low_stock) = filter.low_stock {
        sql.push(" and on_hand <= ").push_bind(low_stock);
    }
}

/// A LIKE pattern matching `text` anywhere, with LIKE's own wildcards taken literally.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_match_like_wildcards_literally() {
        assert_eq!(contains_pattern("mug"), "%mug%");
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
