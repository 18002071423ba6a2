//! `product_view`: one row per product with its listing, stock (`on_hand` available,
//! `reserved`, `units_sold`: the product stream's own accounting) and `revenue_minor`, the
//! sum of confirmed orders' line totals for the product, in the product's currency (lines
//! are always priced in it).
//!
//! `OrderConfirmed` carries no lines, so the private helper table keeps each placed order's
//! lines until it is confirmed (credited) or cancelled. A confirmed order may arrive before
//! the product's `ProductCreated`: the row then appears with its revenue and a null `sku`,
//! `name` and price until the product's own events are applied.

use std::collections::BTreeMap;

use orderflow_domain::order::{Order, OrderEvent};
use orderflow_domain::product::{Product, ProductEvent};
use orderflow_domain::Aggregate;
use orderflow_store::lookup::by_keys;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::cache::Cache;
use crate::event::{Envelope, Payload};
use crate::projection::BoxFuture;
use crate::{Projection, Refusal, Rows, Tables};

/// Products with stock, units sold and revenue from confirmed orders.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProductView;

impl Projection for ProductView {
    fn name(&self) -> &'static str {
        "product_view"
    }

    fn stream_types(&self) -> &'static [&'static str] {
        &[Product::STREAM_TYPE, Order::STREAM_TYPE]
    }

    crate::projection::table_names!("product_view", "product_view_order_lines");

    fn lock_id(&self) -> i32 {
        3
    }

    fn rows(&self, complete: bool) -> Box<dyn Rows> {
        Box::new(ProductViewRows::new(complete))
    }
}

#[derive(Debug, Clone, Default)]
struct ProductRow {
    sku: Option<String>,
    name: Option<String>,
    price_minor: Option<i64>,
    currency: Option<String>,
    on_hand: i64,
    reserved: i64,
    units_sold: i64,
    revenue_minor: i64,
    /// The product stream's version; 0 while only orders mention the product.
    version: i32,
}

impl ProductRow {
    fn created(&self) -> Result<(), Refusal> {
        match self.sku {
            Some(_) => Ok(()),
            None => Err(Refusal::ProductNotCreated),
        }
    }
}

/// One line of a placed order, as the helper keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineFact {
    product_id: Uuid,
    quantity: u32,
    total_minor: i64,
}

/// The rows a batch touches: products, and the helper's placed orders.
#[derive(Debug)]
struct ProductViewRows {
    products: Cache<ProductRow>,
    orders: Cache<Vec<LineFact>>,
}

impl Rows for ProductViewRows {
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
            Payload::Product(product_event) => self.apply_product(event, product_event),
            Payload::Order(order_event) => self.apply_order(event.stream_id, order_event),
            Payload::User(_) | Payload::Payment(_) => Ok(()),
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
        self.products.len() + self.orders.len()
    }

    fn clear(&mut self) {
        self.products.clear();
        self.orders.clear();
    }
}

impl ProductViewRows {
    fn new(complete: bool) -> Self {
        Self {
            products: Cache::new(complete),
            orders: Cache::new(complete),
        }
    }

    /// Loads the placed orders `events` close, then every product they or `events` name.
    async fn fetch(
        &mut self,
        conn: &mut PgConnection,
        tables: Tables,
        events: &[Envelope],
    ) -> Result<(), sqlx::Error> {
        let orders = events.iter().filter_map(|event| match &event.payload {
            Payload::Order(
                OrderEvent::OrderPlaced { .. }
                | OrderEvent::OrderConfirmed {}
                | OrderEvent::OrderCancelled { .. },
            ) => Some(event.stream_id),
            _ => None,
        });
        let missing = self.orders.missing(orders);
        if !missing.is_empty() {
            let sql = by_keys(&format!(
                "select order_id, lines from {} where order_id = k.id",
                tables.helper
            ));
            let rows = sqlx::query(&sql)
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
            let found = rows
                .iter()
                .map(|row| {
                    let Json(lines) = row.try_get("lines")?;
                    Ok((row.try_get("order_id")?, lines))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            self.orders.fill(&missing, found);
        }

        let mut products = Vec::new();
        for event in events {
            match &event.payload {
                Payload::Product(_) => products.push(event.stream_id),
                Payload::Order(OrderEvent::OrderPlaced { lines, .. }) => {
                    products.extend(lines.iter().map(|line| line.product_id));
                }
                Payload::Order(OrderEvent::OrderConfirmed {}) => {
                    if let Some(lines) = self.orders.get(&event.stream_id) {
                        products.extend(lines.iter().map(|line| line.product_id));
                    }
                }
                _ => {}
            }
        }
        let missing = self.products.missing(products);
        if !missing.is_empty() {
            let sql = by_keys(&format!(
                "select product_id, sku, name, price_minor, currency, on_hand, reserved, \
                 units_sold, revenue_minor, version from {} where product_id = k.id",
                tables.view
            ));
            let rows = sqlx::query(&sql)
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
            let found = rows
                .iter()
                .map(|row| {
                    let product = ProductRow {
                        sku: row.try_get("sku")?,
                        name: row.try_get("name")?,
                        price_minor: row.try_get("price_minor")?,
                        currency: row.try_get("currency")?,
                        on_hand: row.try_get("on_hand")?,
                        reserved: row.try_get("reserved")?,
                        units_sold: row.try_get("units_sold")?,
                        revenue_minor: row.try_get("revenue_minor")?,
                        version: row.try_get("version")?,
                    };
                    Ok((row.try_get("product_id")?, product))
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            self.products.fill(&missing, found);
        }
        Ok(())
    }

    fn apply_product(&mut self, envelope: &Envelope, event: &ProductEvent) -> Result<(), Refusal> {
        let id = envelope.stream_id;
        let mut row = self.products.get(&id).cloned().unwrap_or_default();
        // Stock moves exactly as in the Product aggregate, which never goes below zero.
        match event {
            ProductEvent::ProductCreated {
                sku,
                name,
                price,
                initial_stock,
            } => {
                if row.sku.is_some() {
                    return Err(Refusal::ProductAlreadyCreated);
                }
                row.sku = Some(sku.to_string());
                row.name = Some(name.to_string());
                row.price_minor = Some(price.amount_minor);
                row.currency = Some(price.currency.code().to_owned());
                row.on_hand = i64::from(*initial_stock);
            }
            ProductEvent::PriceChanged { price, .. } => {
                row.created()?;
                row.price_minor = Some(price.amount_minor);
            }
            ProductEvent::Restocked { quantity } => {
                row.created()?;
                row.on_hand = row.on_hand.saturating_add((*quantity).into());
            }
            ProductEvent::StockReserved { quantity, .. } => {
                row.created()?;
                row.on_hand = take(row.on_hand, *quantity);
                row.reserved = row.reserved.saturating_add((*quantity).into());
            }
            ProductEvent::ReservationReleased { quantity, .. } => {
                row.created()?;
                row.reserved = take(row.reserved, *quantity);
                row.on_hand = row.on_hand.saturating_add((*quantity).into());
            }
            ProductEvent::ReservationCommitted { quantity, .. } => {
                row.created()?;
                row.reserved = take(row.reserved, *quantity);
                row.units_sold = row.units_sold.saturating_add((*quantity).into());
            }
        }
        row.version = envelope.version;
        self.products.put(id, row);
        Ok(())
    }

    fn apply_order(&mut self, id: Uuid, event: &OrderEvent) -> Result<(), Refusal> {
        match event {
            OrderEvent::OrderPlaced { lines, .. } => {
                if self.orders.get(&id).is_some() {
                    return Err(Refusal::OrderAlreadyPlaced);
                }
                let facts = lines
                    .iter()
                    .map(|line| {
                        let total = line.total().map_err(|source| Refusal::LineOfProduct {
                            product_id: line.product_id,
                            source,
                        })?;
                        Ok(LineFact {
                            product_id: line.product_id,
                            quantity: line.quantity,
                            total_minor: total.amount_minor,
                        })
                    })
                    .collect::<Result<Vec<_>, Refusal>>()?;
                self.orders.put(id, facts);
            }
            OrderEvent::OrderConfirmed {} => {
                let lines = self.orders.get(&id).ok_or(Refusal::OrderNotPlaced)?;
                let mut credited: BTreeMap<Uuid, ProductRow> = BTreeMap::new();
                for line in lines {
                    let row = credited.entry(line.product_id).or_insert_with(|| {
                        let known = self.products.get(&line.product_id);
                        known.cloned().unwrap_or_default()
                    });
                    row.revenue_minor = row
                        .revenue_minor
                        .checked_add(line.total_minor)
                        .ok_or(Refusal::RevenueOverflows(line.product_id))?;
                }
                for (product_id, row) in credited {
                    self.products.put(product_id, row);
                }
                self.orders.remove(id);
            }
            // A draft can be cancelled too, and then nothing was placed.
            OrderEvent::OrderCancelled { .. } => {
                if self.orders.get(&id).is_some() {
                    self.orders.remove(id);
                }
            }
            OrderEvent::OrderCreated { .. }
            | OrderEvent::ItemAdded { .. }
            | OrderEvent::QuantityUpdated { .. }
            | OrderEvent::ItemRemoved { .. } => {}
        }
        Ok(())
    }

    /// Writes every changed row: placed orders (and drops closed ones), then products.
    async fn write(&mut self, conn: &mut PgConnection, tables: Tables) -> Result<(), sqlx::Error> {
        let (orders, closed) = self.orders.changes();
        if !closed.is_empty() {
            let sql = format!("delete from {} where order_id = any($1)", tables.helper);
            sqlx::query(&sql).bind(&closed).execute(&mut *conn).await?;
        }
        if !orders.is_empty() {
            let sql = format!(
                "insert into {} (order_id, lines) \
                 select * from unnest($1::uuid[], $2::jsonb[]) \
                 on conflict (order_id) do update set lines = excluded.lines",
                tables.helper
            );
            sqlx::query(&sql)
                .bind(orders.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind(
                    orders
                        .iter()
                        .map(|(_, lines)| Json(*lines))
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *conn)
                .await?;
        }

        let (products, _) = self.products.changes();
        if !products.is_empty() {
            let sql = format!(
                "insert into {} (product_id, sku, name, price_minor, currency, on_hand, \
                   reserved, units_sold, revenue_minor, version) \
                 select * from unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], \
                   $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int[]) \
                 on conflict (product_id) do update set sku = excluded.sku, \
                   name = excluded.name, price_minor = excluded.price_minor, \
                   currency = excluded.currency, on_hand = excluded.on_hand, \
                   reserved = excluded.reserved, units_sold = excluded.units_sold, \
                   revenue_minor = excluded.revenue_minor, version = excluded.version",
                tables.view
            );
            let rows = || products.iter().map(|(_, row)| *row);
            sqlx::query(&sql)
                .bind(products.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind(rows().map(|r| r.sku.as_deref()).collect::<Vec<_>>())
                .bind(rows().map(|r| r.name.as_deref()).collect::<Vec<_>>())
                .bind(rows().map(|r| r.price_minor).collect::<Vec<_>>())
                .bind(rows().map(|r| r.currency.as_deref()).collect::<Vec<_>>())
                .bind(rows().map(|r| r.on_hand).collect::<Vec<_>>())
                .bind(rows().map(|r| r.reserved).collect::<Vec<_>>())
                .bind(rows().map(|r| r.units_sold).collect::<Vec<_>>())
                .bind(rows().map(|r| r.revenue_minor).collect::<Vec<_>>())
                .bind(rows().map(|r| r.version).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
        self.orders.mark_clean();
        self.products.mark_clean();
        Ok(())
    }
}

/// `from - quantity`, never below zero.
fn take(from: i64, quantity: u32) -> i64 {
    from.saturating_sub(quantity.into()).max(0)
}
