//! `order_view`: one row per order with its items and totals, and the owner's current name
//! and email. The owner's details come from user events, kept in the private helper table
//! (user id → name, email); a change is copied into every order of that user, so the view
//! converges whichever of an order and its user's events arrives first.
//!
//! A live batch also notifies `order_view_changed` of every order it changed, for the query
//! service's subscriptions; a replay does not.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use orderflow_domain::order::{Order, OrderEvent, OrderLine, OrderStatus};
use orderflow_domain::user::{User, UserEvent};
use orderflow_domain::{Aggregate, Currency, Money};
use orderflow_store::lookup::{by_keys, each_key};
use orderflow_store::StoredEvent;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::cache::Cache;
use crate::error::unknown_value;
use crate::event::{Envelope, Payload};
use crate::projection::BoxFuture;
use crate::{Projection, Refusal, Rows, Tables};

/// Orders with their items, totals and the owner's current name and email.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderView;

impl Projection for OrderView {
    fn name(&self) -> &'static str {
        "order_view"
    }

    fn stream_types(&self) -> &'static [&'static str] {
        &[Order::STREAM_TYPE, User::STREAM_TYPE]
    }

    crate::projection::table_names!("order_view", "order_view_users");

    fn lock_id(&self) -> i32 {
        1
    }

    fn rows(&self, complete: bool) -> Box<dyn Rows> {
        Box::new(OrderViewRows::new(complete))
    }

    /// Tells the query service (LISTEN `order_view_changed`) which orders changed; delivered
    /// when the batch commits, never for a batch that rolls back.
    fn announce<'a>(
        &self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(notify_order_changes(tx, events))
    }
}

/// One line of `order_view.items`, as the GraphQL view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Item {
    product_id: Uuid,
    product_name: String,
    unit_price: Money,
    quantity: u32,
    line_total: Money,
}

impl Item {
    fn new(
        product_id: Uuid,
        product_name: String,
        unit_price: Money,
        quantity: u32,
    ) -> Result<Self, Refusal> {
        let line_total = line_total(unit_price, quantity)?;
        Ok(Self {
            product_id,
            product_name,
            unit_price,
            quantity,
            line_total,
        })
    }

    fn of_line(line: &OrderLine) -> Result<Self, Refusal> {
        Self::new(
            line.product_id,
            line.product_name.clone(),
            line.unit_price,
            line.quantity,
        )
    }

    fn set_quantity(&mut self, quantity: u32) -> Result<(), Refusal> {
        self.line_total = line_total(self.unit_price, quantity)?;
        self.quantity = quantity;
        Ok(())
    }
}

fn line_total(unit_price: Money, quantity: u32) -> Result<Money, Refusal> {
    unit_price
        .checked_mul(quantity)
        .map_err(|source| Refusal::LineTotal {
            quantity,
            unit_price,
            source,
        })
}

#[derive(Debug, Clone)]
struct OrderRow {
    user_id: Uuid,
    status: OrderStatus,
    currency: Currency,
    items: Vec<Item>,
    total_minor: i64,
    created_at: DateTime<Utc>,
    placed_at: Option<DateTime<Utc>>,
    confirmed_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    version: i32,
    updated_at: DateTime<Utc>,
}

impl OrderRow {
    fn item_mut(&mut self, product_id: Uuid) -> Result<&mut Item, Refusal> {
        self.items
            .iter_mut()
            .find(|item| item.product_id == product_id)
            .ok_or(Refusal::ItemNotInOrder(product_id))
    }

    fn item_count(&self) -> i64 {
        self.items.iter().map(|item| i64::from(item.quantity)).sum()
    }

    fn items_total(&self) -> Result<i64, Refusal> {
        self.items
            .iter()
            .try_fold(0_i64, |sum, item| {
                sum.checked_add(item.line_total.amount_minor)
            })
            .ok_or(Refusal::OrderTotalOverflows)
    }
}

#[derive(Debug, Clone)]
struct Owner {
    name: String,
    email: String,
}

/// The rows a batch touches: orders, and the helper's users.
#[derive(Debug)]
struct OrderViewRows {
    orders: Cache<OrderRow>,
    users: Cache<Owner>,
    /// Users whose name or email changed since the last write, to copy into their orders.
    changed_users: HashSet<Uuid>,
}

impl Rows for OrderViewRows {
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
            Payload::Order(order_event) => self.apply_order(event, order_event),
            Payload::User(user_event) => self.apply_user(event.stream_id, user_event),
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
        self.orders.len() + self.users.len()
    }

    fn clear(&mut self) {
        self.orders.clear();
        self.users.clear();
    }
}

impl OrderViewRows {
    fn new(complete: bool) -> Self {
        Self {
            orders: Cache::new(complete),
            users: Cache::new(complete),
            changed_users: HashSet::new(),
        }
    }

    /// Loads the orders `events` change and the users they name.
    async fn fetch(
        &mut self,
        conn: &mut PgConnection,
        tables: Tables,
        events: &[Envelope],
    ) -> Result<(), sqlx::Error> {
        let mut orders = Vec::new();
        let mut users = Vec::new();
        for event in events {
            match &event.payload {
                Payload::Order(order_event) => {
                    orders.push(event.stream_id);
                    if let OrderEvent::OrderCreated { user_id, .. } = order_event {
                        users.push(*user_id);
                    }
                }
                Payload::User(_) => users.push(event.stream_id),
                Payload::Product(_) | Payload::Payment(_) => {}
            }
        }
        let missing = self.users.missing(users);
        if !missing.is_empty() {
            let sql = by_keys(&format!(
                "select user_id, name, email from {} where user_id = k.id",
                tables.helper
            ));
            let rows = sqlx::query(&sql)
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
            let found = rows
                .iter()
                .map(|row| {
                    let owner = Owner {
                        name: row.try_get("name")?,
                        email: row.try_get("email")?,
                    };
                    Ok((row.try_get("user_id")?, owner))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            self.users.fill(&missing, found);
        }
        let missing = self.orders.missing(orders);
        if !missing.is_empty() {
            // A lookup per order on the primary key, whatever the table's size when the
            // plan was cached.
            let sql = by_keys(&format!(
                "select order_id, user_id, status, currency, items, total_minor, created_at, \
                 placed_at, confirmed_at, cancelled_at, cancel_reason, version, updated_at \
                 from {} where order_id = k.id",
                tables.view
            ));
            let rows = sqlx::query(&sql)
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
            let found = rows
                .iter()
                .map(|row| Ok((row.try_get("order_id")?, order_row(row)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            self.orders.fill(&missing, found);
        }
        Ok(())
    }

    fn apply_order(&mut self, envelope: &Envelope, event: &OrderEvent) -> Result<(), Refusal> {
        let id = envelope.stream_id;
        let at = envelope.recorded_at;
        let existing = self.orders.get(&id).cloned();
        let mut row = match (event, existing) {
            (OrderEvent::OrderCreated { user_id, currency }, None) => OrderRow {
                user_id: *user_id,
                status: OrderStatus::Draft,
                currency: *currency,
                items: Vec::new(),
                total_minor: 0,
                created_at: at,
                placed_at: None,
                confirmed_at: None,
                cancelled_at: None,
                cancel_reason: None,
                version: envelope.version,
                updated_at: at,
            },
            (OrderEvent::OrderCreated { .. }, Some(_)) => return Err(Refusal::OrderAlreadyCreated),
            (_, Some(row)) => row,
            (_, None) => return Err(Refusal::OrderNotCreated),
        };
        match event {
            OrderEvent::OrderCreated { .. } => {}
            OrderEvent::ItemAdded {
                product_id,
                product_name,
                unit_price,
                quantity,
            } => {
                if row.item_mut(*product_id).is_ok() {
                    return Err(Refusal::ItemAlreadyInOrder(*product_id));
                }
                let item = Item::new(*product_id, product_name.clone(), *unit_price, *quantity)?;
                row.items.push(item);
                row.total_minor = row.items_total()?;
            }
            OrderEvent::QuantityUpdated {
                product_id,
                quantity,
                ..
            } => {
                row.item_mut(*product_id)?.set_quantity(*quantity)?;
                row.total_minor = row.items_total()?;
            }
            OrderEvent::ItemRemoved { product_id } => {
                row.item_mut(*product_id)?;
                row.items.retain(|item| item.product_id != *product_id);
                row.total_minor = row.items_total()?;
            }
            OrderEvent::OrderPlaced { total, lines } => {
                row.items = lines.iter().map(Item::of_line).collect::<Result<_, _>>()?;
                row.total_minor = total.amount_minor;
                row.status = OrderStatus::Placed;
                row.placed_at = Some(at);
            }
            OrderEvent::OrderConfirmed {} => {
                row.status = OrderStatus::Confirmed;
                row.confirmed_at = Some(at);
            }
            OrderEvent::OrderCancelled { reason } => {
                row.status = OrderStatus::Cancelled;
                row.cancelled_at = Some(at);
                row.cancel_reason = Some(reason.clone());
            }
        }
        row.version = envelope.version;
        row.updated_at = at;
        self.orders.put(id, row);
        Ok(())
    }

    fn apply_user(&mut self, id: Uuid, event: &UserEvent) -> Result<(), Refusal> {
        let existing = self.users.get(&id).cloned();
        let owner = match (event, existing) {
            (UserEvent::UserRegistered { name, email }, None) => Owner {
                name: name.to_string(),
                email: email.to_string(),
            },
            (UserEvent::UserRegistered { .. }, Some(_)) => {
                return Err(Refusal::UserAlreadyRegistered)
            }
            (UserEvent::UserRenamed { name }, Some(owner)) => Owner {
                name: name.to_string(),
                ..owner
            },
            (UserEvent::UserEmailChanged { email }, Some(owner)) => Owner {
                email: email.to_string(),
                ..owner
            },
            (_, None) => return Err(Refusal::UserNotRegistered),
        };
        self.users.put(id, owner);
        self.changed_users.insert(id);
        Ok(())
    }

    /// Writes every changed row: users, then orders, then the changed users' details into
    /// all of their orders, including those this batch never loaded.
    async fn write(&mut self, conn: &mut PgConnection, tables: Tables) -> Result<(), sqlx::Error> {
        let (users, _) = self.users.changes();
        if !users.is_empty() {
            let sql = format!(
                "insert into {} (user_id, name, email) \
                 select * from unnest($1::uuid[], $2::text[], $3::text[]) \
                 on conflict (user_id) do update set name = excluded.name, email = excluded.email",
                tables.helper
            );
            let (ids, names, emails) = owner_columns(&users);
            sqlx::query(&sql)
                .bind(ids)
                .bind(names)
                .bind(emails)
                .execute(&mut *conn)
                .await?;
        }

        let (orders, _) = self.orders.changes();
        if !orders.is_empty() {
            // A new order takes its owner's details from the helper; an existing one keeps
            // its own, which the copy below maintains.
            let owners: Vec<Option<&Owner>> = orders
                .iter()
                .map(|(_, row)| self.users.get(&row.user_id))
                .collect();
            let sql = format!(
                "insert into {} (order_id, user_id, user_name, user_email, status, currency, \
                   items, item_count, total_minor, created_at, placed_at, confirmed_at, \
                   cancelled_at, cancel_reason, version, updated_at) \
                 select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                   $6::text[], $7::jsonb[], $8::int[], $9::int8[], $10::timestamptz[], \
                   $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::text[], \
                   $15::int[], $16::timestamptz[]) \
                 on conflict (order_id) do update set status = excluded.status, \
                   items = excluded.items, item_count = excluded.item_count, \
                   total_minor = excluded.total_minor, placed_at = excluded.placed_at, \
                   confirmed_at = excluded.confirmed_at, cancelled_at = excluded.cancelled_at, \
                   cancel_reason = excluded.cancel_reason, version = excluded.version, \
                   updated_at = excluded.updated_at",
                tables.view
            );
            let rows = || orders.iter().map(|(_, row)| *row);
            sqlx::query(&sql)
                .bind(orders.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind(rows().map(|r| r.user_id).collect::<Vec<_>>())
                .bind(
                    owners
                        .iter()
                        .map(|o| o.map(|o| o.name.as_str()))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    owners
                        .iter()
                        .map(|o| o.map(|o| o.email.as_str()))
                        .collect::<Vec<_>>(),
                )
                .bind(rows().map(|r| r.status.as_str()).collect::<Vec<_>>())
                .bind(rows().map(|r| r.currency.code()).collect::<Vec<_>>())
                .bind(rows().map(|r| Json(&r.items)).collect::<Vec<_>>())
                .bind(
                    rows()
                        .map(|r| i32::try_from(r.item_count()).unwrap_or(i32::MAX))
                        .collect::<Vec<_>>(),
                )
                .bind(rows().map(|r| r.total_minor).collect::<Vec<_>>())
                .bind(rows().map(|r| r.created_at).collect::<Vec<_>>())
                .bind(rows().map(|r| r.placed_at).collect::<Vec<_>>())
                .bind(rows().map(|r| r.confirmed_at).collect::<Vec<_>>())
                .bind(rows().map(|r| r.cancelled_at).collect::<Vec<_>>())
                .bind(
                    rows()
                        .map(|r| r.cancel_reason.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(rows().map(|r| r.version).collect::<Vec<_>>())
                .bind(rows().map(|r| r.updated_at).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }

        if !self.changed_users.is_empty() {
            let mut changed: Vec<(Uuid, &Owner)> = self
                .changed_users
                .iter()
                .filter_map(|id| Some((*id, self.users.get(id)?)))
                .collect();
            changed.sort_unstable_by_key(|(id, _)| *id);
            let sql = format!(
                "update {} o set user_name = u.name, user_email = u.email \
                 from unnest($1::uuid[], $2::text[], $3::text[]) as u(user_id, name, email) \
                 where o.user_id = u.user_id \
                   and (o.user_name is distinct from u.name or o.user_email is distinct from u.email)",
                tables.view
            );
            let (ids, names, emails) = owner_columns(&changed);
            sqlx::query(&sql)
                .bind(ids)
                .bind(names)
                .bind(emails)
                .execute(&mut *conn)
                .await?;
        }
        self.changed_users.clear();
        self.users.mark_clean();
        self.orders.mark_clean();
        Ok(())
    }
}

fn order_row(row: &sqlx::postgres::PgRow) -> Result<OrderRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let currency: String = row.try_get("currency")?;
    let Json(items) = row.try_get::<Json<Vec<Item>>, _>("items")?;
    Ok(OrderRow {
        user_id: row.try_get("user_id")?,
        status: parse_status(&status).ok_or_else(|| unknown_value("order_view.status", &status))?,
        currency: Currency::parse(&currency)
            .map_err(|_| unknown_value("order_view.currency", &currency))?,
        items,
        total_minor: row.try_get("total_minor")?,
        created_at: row.try_get("created_at")?,
        placed_at: row.try_get("placed_at")?,
        confirmed_at: row.try_get("confirmed_at")?,
        cancelled_at: row.try_get("cancelled_at")?,
        cancel_reason: row.try_get("cancel_reason")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn parse_status(status: &str) -> Option<OrderStatus> {
    [
        OrderStatus::Draft,
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Cancelled,
    ]
    .into_iter()
    .find(|known| known.as_str() == status)
}

/// Owners as the three arrays an `unnest($1::uuid[], $2::text[], $3::text[])` takes.
fn owner_columns<'a>(owners: &[(Uuid, &'a Owner)]) -> (Vec<Uuid>, Vec<&'a str>, Vec<&'a str>) {
    (
        owners.iter().map(|(id, _)| *id).collect(),
        owners.iter().map(|(_, o)| o.name.as_str()).collect(),
        owners.iter().map(|(_, o)| o.email.as_str()).collect(),
    )
}

/// Notifies `order_view_changed` of the orders `events` change, and of every order of a
/// user they change: a user's rename changes every order of theirs.
async fn notify_order_changes(
    tx: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    let of_type = |stream_type: &str| -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = events
            .iter()
            .filter(|e| e.stream_type == stream_type)
            .map(|e| e.stream_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let (orders, users) = (of_type(Order::STREAM_TYPE), of_type(User::STREAM_TYPE));
    if orders.is_empty() && users.is_empty() {
        return Ok(());
    }
    // A lookup per key, each on its index (a union when users changed too): one plan for
    // `order_id = any or user_id = any` must guess how many orders the users have, and a
    // user with many (one account placing all of a shop's orders) made the planner scan
    // the whole view for every batch. Each is a lookup per key ([`each_key`]).
    if users.is_empty() {
        sqlx::query(&format!(
            "select pg_notify('order_view_changed', \
                    json_build_object('orderId', v.order_id, 'version', v.version)::text) \
             from {} (select order_id, version from order_view \
                  where order_id = k.id offset 0) v",
            each_key(1)
        ))
        .bind(&orders)
        .execute(tx)
        .await?;
    } else {
        sqlx::query(&format!(
            "select pg_notify('order_view_changed', \
                    json_build_object('orderId', order_id, 'version', version)::text) \
             from (select v.order_id, v.version from {} \
                   (select order_id, version from order_view where order_id = k.id offset 0) v \
                   union select v.order_id, v.version from {} \
                   (select order_id, version from order_view where user_id = k.id offset 0) v) \
                  changed",
            each_key(1),
            each_key(2)
        ))
        .bind(&orders)
        .bind(&users)
        .execute(tx)
        .await?;
    }
    Ok(())
}
