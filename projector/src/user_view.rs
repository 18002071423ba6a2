//! `user_view`: one row per user with profile, order count, last order time and what the
//! user spent on confirmed orders, per currency (`spent`, e.g. `{"EUR": 1234}`: minor units,
//! one key per currency ever confirmed, so amounts are never added across currencies).
//!
//! Order events carry the user only in `OrderCreated` and the total only in `OrderPlaced`,
//! so the private helper table keeps, per open order, its user, currency and total until
//! the order is confirmed (credited) or cancelled. A row appears with the first event about
//! the user, so an order that arrives before its user's registration still counts; until
//! `UserRegistered` is applied its `name`, `email` and `registered_at` are null.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orderflow_domain::order::{Order, OrderEvent};
use orderflow_domain::user::{User, UserEvent};
use orderflow_domain::Aggregate;
use orderflow_store::lookup::by_keys;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::cache::Cache;
use crate::event::{Envelope, Payload};
use crate::projection::BoxFuture;
use crate::{Projection, Refusal, Rows, Tables};

/// Users with their order count and what they spent on confirmed orders.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserView;

impl Projection for UserView {
    fn name(&self) -> &'static str {
        "user_view"
    }

    fn stream_types(&self) -> &'static [&'static str] {
        &[User::STREAM_TYPE, Order::STREAM_TYPE]
    }

    crate::projection::table_names!("user_view", "user_view_orders");

    fn lock_id(&self) -> i32 {
        2
    }

    fn rows(&self, complete: bool) -> Box<dyn Rows> {
        Box::new(UserViewRows::new(complete))
    }
}

#[derive(Debug, Clone, Default)]
struct UserRow {
    name: Option<String>,
    email: Option<String>,
    registered_at: Option<DateTime<Utc>>,
    order_count: i64,
    spent: BTreeMap<String, i64>,
    last_order_at: Option<DateTime<Utc>>,
    /// The user stream's version; 0 while only orders mention the user.
    version: i32,
}

impl UserRow {
    fn registered(&self) -> Result<(), Refusal> {
        match self.registered_at {
            Some(_) => Ok(()),
            None => Err(Refusal::UserNotRegistered),
        }
    }
}

/// An open order as far as this projection needs it.
#[derive(Debug, Clone)]
struct OrderFact {
    user_id: Uuid,
    currency: String,
    total_minor: Option<i64>,
}

/// The rows a batch touches: users, and the helper's open orders.
#[derive(Debug)]
struct UserViewRows {
    users: Cache<UserRow>,
    orders: Cache<OrderFact>,
}

impl Rows for UserViewRows {
    fn load<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        tables: Tables,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.fetch(conn, tables, events))
    }

    fn apply(&mut self, event: &Envelope) -> Result<(), Refusal> {
        match &event.payload {
            Payload::User(user_event) => self.apply_user(event, user_event),
            Payload::Order(order_event) => self.apply_order(event, order_event),
            Payload::Product(_) | Payload::Payment(_) => Ok(()),
        }
    }

    fn flush<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        tables: Tables,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.write(conn, tables))
    }

    fn cached(&self) -> usize {
        self.users.len() + self.orders.len()
    }

    fn clear(&mut self) {
        self.users.clear();
        self.orders.clear();
    }
}

impl UserViewRows {
    fn new(complete: bool) -> Self {
        Self {
            users: Cache::new(complete),
            orders: Cache::new(complete),
        }
    }

    /// Loads the open orders `events` change, then every user they or `events` name.
    async fn fetch(
        &mut self,
        conn: &mut PgConnection,
        tables: Tables,
        events: &[Envelope],
    ) -> Result<(), sqlx::Error> {
        let orders = events.iter().filter_map(|event| match &event.payload {
            Payload::Order(
                OrderEvent::OrderCreated { .. }
                | OrderEvent::OrderPlaced { .. }
                | OrderEvent::OrderConfirmed {}
                | OrderEvent::OrderCancelled { .. },
            ) => Some(event.stream_id),
            _ => None,
        });
        let missing = self.orders.missing(orders);
        if !missing.is_empty() {
            let sql = by_keys(&format!(
                "select order_id, user_id, currency, total_minor from {} where order_id = k.id",
                tables.helper
            ));
            let rows = sqlx::query(&sql)
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
            let found = rows
                .iter()
                .map(|row| {
                    let fact = OrderFact {
                        user_id: row.try_get("user_id")?,
                        currency: row.try_get("currency")?,
                        total_minor: row.try_get("total_minor")?,
                    };
                    Ok((row.try_get("order_id")?, fact))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            self.orders.fill(&missing, found);
        }

        let users = events.iter().filter_map(|event| match &event.payload {
            Payload::User(_) => Some(event.stream_id),
            Payload::Order(OrderEvent::OrderCreated { user_id, .. }) => Some(*user_id),
            Payload::Order(OrderEvent::OrderConfirmed {}) => {
                self.orders.get(&event.stream_id).map(|fact| fact.user_id)
            }
            _ => None,
        });
        let missing = self.users.missing(users);
        if !missing.is_empty() {
            let sql = by_keys(&format!(
                "select user_id, name, email, registered_at, order_count, spent, last_order_at, \
                 version from {} where user_id = k.id",
                tables.view
            ));
            let rows = sqlx::query(&sql)
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
            let found = rows
                .iter()
                .map(|row| {
                    let Json(spent) = row.try_get("spent")?;
                    let user = UserRow {
                        name: row.try_get("name")?,
                        email: row.try_get("email")?,
                        registered_at: row.try_get("registered_at")?,
                        order_count: row.try_get("order_count")?,
                        spent,
                        last_order_at: row.try_get("last_order_at")?,
                        version: row.try_get("version")?,
                    };
                    Ok((row.try_get("user_id")?, user))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            self.users.fill(&missing, found);
        }
        Ok(())
    }

    fn apply_user(&mut self, envelope: &Envelope, event: &UserEvent) -> Result<(), Refusal> {
        let id = envelope.stream_id;
        let mut row = self.users.get(&id).cloned().unwrap_or_default();
        match event {
            UserEvent::UserRegistered { name, email } => {
                if row.registered_at.is_some() {
                    return Err(Refusal::UserAlreadyRegistered);
                }
                row.name = Some(name.to_string());
                row.email = Some(email.to_string());
                row.registered_at = Some(envelope.recorded_at);
            }
            UserEvent::UserRenamed { name } => {
                row.registered()?;
                row.name = Some(name.to_string());
            }
            UserEvent::UserEmailChanged { email } => {
                row.registered()?;
                row.email = Some(email.to_string());
            }
        }
        row.version = envelope.version;
        self.users.put(id, row);
        Ok(())
    }

    fn apply_order(&mut self, envelope: &Envelope, event: &OrderEvent) -> Result<(), Refusal> {
        let id = envelope.stream_id;
        let fact = self.orders.get(&id).cloned();
        match (event, fact) {
            (OrderEvent::OrderCreated { user_id, currency }, None) => {
                let mut user = self.users.get(user_id).cloned().unwrap_or_default();
                user.order_count += 1;
                user.last_order_at = user.last_order_at.max(Some(envelope.recorded_at));
                let fact = OrderFact {
                    user_id: *user_id,
                    currency: currency.code().to_owned(),
                    total_minor: None,
                };
                self.users.put(*user_id, user);
                self.orders.put(id, fact);
            }
            (OrderEvent::OrderCreated { .. }, Some(_)) => return Err(Refusal::OrderAlreadyCreated),
            (OrderEvent::OrderPlaced { total, .. }, Some(mut fact)) => {
                fact.currency = total.currency.code().to_owned();
                fact.total_minor = Some(total.amount_minor);
                self.orders.put(id, fact);
            }
            (OrderEvent::OrderConfirmed {}, Some(fact)) => {
                let total = fact.total_minor.ok_or(Refusal::OrderNotPlaced)?;
                let mut user = self.users.get(&fact.user_id).cloned().unwrap_or_default();
                let spent = user.spent.entry(fact.currency.clone()).or_insert(0);
                *spent = spent
                    .checked_add(total)
                    .ok_or_else(|| Refusal::SpentOverflows {
                        total,
                        currency: fact.currency.clone(),
                    })?;
                self.users.put(fact.user_id, user);
                self.orders.remove(id);
            }
            (OrderEvent::OrderCancelled { .. }, Some(_)) => self.orders.remove(id),
            (
                OrderEvent::OrderPlaced { .. }
                | OrderEvent::OrderConfirmed {}
                | OrderEvent::OrderCancelled { .. },
                None,
            ) => return Err(Refusal::OrderNotCreated),
            (
                OrderEvent::ItemAdded { .. }
                | OrderEvent::QuantityUpdated { .. }
                | OrderEvent::ItemRemoved { .. },
                _,
            ) => {}
        }
        Ok(())
    }

    /// Writes every changed row: open orders (and drops closed ones), then users.
    async fn write(&mut self, conn: &mut PgConnection, tables: Tables) -> Result<(), sqlx::Error> {
        let (orders, closed) = self.orders.changes();
        if !closed.is_empty() {
            let sql = format!("delete from {} where order_id = any($1)", tables.helper);
            sqlx::query(&sql).bind(&closed).execute(&mut *conn).await?;
        }
        if !orders.is_empty() {
            let sql = format!(
                "insert into {} (order_id, user_id, currency, total_minor) \
                 select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[]) \
                 on conflict (order_id) do update set currency = excluded.currency, \
                   total_minor = excluded.total_minor",
                tables.helper
            );
            sqlx::query(&sql)
                .bind(orders.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind(orders.iter().map(|(_, o)| o.user_id).collect::<Vec<_>>())
                .bind(
                    orders
                        .iter()
                        .map(|(_, o)| o.currency.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    orders
                        .iter()
                        .map(|(_, o)| o.total_minor)
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *conn)
                .await?;
        }

        let (users, _) = self.users.changes();
        if !users.is_empty() {
            let sql = format!(
                "insert into {} (user_id, name, email, registered_at, order_count, spent, \
                   last_order_at, version) \
                 select * from unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
                   $5::int8[], $6::jsonb[], $7::timestamptz[], $8::int[]) \
                 on conflict (user_id) do update set name = excluded.name, \
                   email = excluded.email, registered_at = excluded.registered_at, \
                   order_count = excluded.order_count, spent = excluded.spent, \
                   last_order_at = excluded.last_order_at, version = excluded.version",
                tables.view
            );
            let rows = || users.iter().map(|(_, row)| *row);
            sqlx::query(&sql)
                .bind(users.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind(rows().map(|r| r.name.as_deref()).collect::<Vec<_>>())
                .bind(rows().map(|r| r.email.as_deref()).collect::<Vec<_>>())
                .bind(rows().map(|r| r.registered_at).collect::<Vec<_>>())
                .bind(rows().map(|r| r.order_count).collect::<Vec<_>>())
                .bind(rows().map(|r| Json(&r.spent)).collect::<Vec<_>>())
                .bind(rows().map(|r| r.last_order_at).collect::<Vec<_>>())
                .bind(rows().map(|r| r.version).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        self.orders.mark_clean();
        self.users.mark_clean();
        Ok(())
    }
}
