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

use crate::db::{Db, EventRow, OrderCursor, OrderFilter, OrderRow, ProductRow, UserRow};

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
