//! DataLoader keys: what resolvers ask for one at a time and [`Db`] answers for a whole
//! batch at once, so a page of orders with users and products costs a constant number of
//! statements however long it is.
//!
//! The loader is shared by every request and caches nothing: a cached row would outlive the
//! request and show an old version to the next one (or forever, to a subscription).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use orderflow_domain::saga::{payment_id, saga_id};

use crate::db::{
    Db, EventRow, OrderCursor, OrderFilter, OrderRow, OrderStreams, PaymentRow, ProductRow,
    SagaRow, TimelineRow, UserRow,
};

type LoadResult<K, V> = Result<HashMap<K, V>, Arc<sqlx::Error>>;

/// A registered user by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct UserKey(pub(crate) Uuid);

/// A created product by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProductKey(pub(crate) Uuid);

/// An order's stream from the event store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EventsKey(pub(crate) Uuid);

/// An order by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OrderKey(pub(crate) Uuid);

/// The saga of an order, by order id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SagaKey(pub(crate) Uuid);

/// The payment of an order, by order id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PaymentKey(pub(crate) Uuid);

/// An order's timeline, by order id: its events and those of its saga, its payment and the
/// products it reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimelineKey(pub(crate) Uuid);

/// One page of one user's orders; keys that differ only in the user share a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct UserOrdersKey {
    pub(crate) user_id: Uuid,
    pub(crate) filter: OrderFilter,
    pub(crate) after: Option<OrderCursor>,
    pub(crate) limit: i64,
}

/// How many of one user's orders match a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct UserOrderCountKey {
    pub(crate) user_id: Uuid,
    pub(crate) filter: OrderFilter,
}

impl Loader<UserKey> for Db {
    type Value = UserRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[UserKey]) -> LoadResult<UserKey, UserRow> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let rows = self.users_by_id(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| (UserKey(row.user_id), row))
            .collect())
    }
}

impl Loader<ProductKey> for Db {
    type Value = ProductRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[ProductKey]) -> LoadResult<ProductKey, ProductRow> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let rows = self.products_by_id(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| (ProductKey(row.product_id), row))
            .collect())
    }
}

impl Loader<EventsKey> for Db {
    type Value = Vec<EventRow>;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[EventsKey]) -> LoadResult<EventsKey, Vec<EventRow>> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let mut streams: HashMap<EventsKey, Vec<EventRow>> =
            keys.iter().map(|key| (*key, Vec::new())).collect();
        for event in self.events_of(&ids).await? {
            if let Some(stream) = streams.get_mut(&EventsKey(event.stream_id)) {
                stream.push(event);
            }
        }
        Ok(streams)
    }
}

impl Loader<OrderKey> for Db {
    type Value = OrderRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[OrderKey]) -> LoadResult<OrderKey, OrderRow> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let rows = self.orders_by_id(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| (OrderKey(row.order_id), row))
            .collect())
    }
}

impl Loader<SagaKey> for Db {
    type Value = SagaRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[SagaKey]) -> LoadResult<SagaKey, SagaRow> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let rows = self.sagas_of_orders(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| (SagaKey(row.order_id), row))
            .collect())
    }
}

impl Loader<PaymentKey> for Db {
    type Value = PaymentRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[PaymentKey]) -> LoadResult<PaymentKey, PaymentRow> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.0).collect();
        let rows = self.payments_of_orders(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| (PaymentKey(row.order_id), row))
            .collect())
    }
}

impl Loader<TimelineKey> for Db {
    type Value = Vec<TimelineRow>;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[TimelineKey]) -> LoadResult<TimelineKey, Vec<TimelineRow>> {
        // The saga and payment streams are named by the order, so their ids are derived
        // here rather than looked up.
        let orders: Vec<OrderStreams> = keys
            .iter()
            .map(|key| OrderStreams {
                order_id: key.0,
                saga_id: saga_id(key.0),
                payment_id: payment_id(key.0),
            })
            .collect();
        let mut timelines: HashMap<TimelineKey, Vec<TimelineRow>> =
            keys.iter().map(|key| (*key, Vec::new())).collect();
        for event in self.timelines(&orders).await? {
            if let Some(timeline) = timelines.get_mut(&TimelineKey(event.order_id)) {
                timeline.push(event);
            }
        }
        Ok(timelines)
    }
}

impl Loader<UserOrdersKey> for Db {
    type Value = Vec<OrderRow>;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[UserOrdersKey]) -> LoadResult<UserOrdersKey, Vec<OrderRow>> {
        let mut groups: HashMap<(&OrderFilter, Option<OrderCursor>, i64), Vec<Uuid>> =
            HashMap::new();
        for key in keys {
            groups
                .entry((&key.filter, key.after, key.limit))
                .or_default()
                .push(key.user_id);
        }
        let mut pages = HashMap::with_capacity(keys.len());
        for ((filter, after, limit), user_ids) in groups {
            let mut by_user: HashMap<Uuid, Vec<OrderRow>> = HashMap::new();
            for row in self
                .orders_of_users(&user_ids, filter, after, limit)
                .await?
            {
                by_user.entry(row.user_id).or_default().push(row);
            }
            for user_id in user_ids {
                let key = UserOrdersKey {
                    user_id,
                    filter: filter.clone(),
                    after,
                    limit,
                };
                pages.insert(key, by_user.remove(&user_id).unwrap_or_default());
            }
        }
        Ok(pages)
    }
}

impl Loader<UserOrderCountKey> for Db {
    type Value = i64;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[UserOrderCountKey]) -> LoadResult<UserOrderCountKey, i64> {
        let mut groups: HashMap<&OrderFilter, Vec<Uuid>> = HashMap::new();
        for key in keys {
            groups.entry(&key.filter).or_default().push(key.user_id);
        }
        let mut counts = HashMap::with_capacity(keys.len());
        for (filter, user_ids) in groups {
            let found: HashMap<Uuid, i64> = self
                .count_orders_of_users(&user_ids, filter)
                .await?
                .into_iter()
                .collect();
            for user_id in user_ids {
                let key = UserOrderCountKey {
                    user_id,
                    filter: filter.clone(),
                };
                counts.insert(key, found.get(&user_id).copied().unwrap_or(0));
            }
        }
        Ok(counts)
    }
}
