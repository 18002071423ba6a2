//! Shared by the projector tests: a workload decided by the real aggregates and appended
//! through the store, delivery in shuffled cross-stream order, the read models as an
//! independent fold of the event store, and the read models as the tables hold them.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orderflow_domain::order::{Order, OrderCommand, OrderEvent, OrderStatus};
use orderflow_domain::payment::{Payment, PaymentCommand, PaymentEvent};
use orderflow_domain::product::{Product, ProductCommand, ProductEvent};
use orderflow_domain::saga::payment_id;
use orderflow_domain::user::{User, UserCommand, UserEvent};
use orderflow_domain::{Aggregate, Currency, DomainEvent, Money};
use orderflow_projector::{apply_batch, Projection, Rejected, PROJECTIONS};
use orderflow_store::{append, EventMetadata, NewEvent, StoredEvent};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// xorshift64*: a seeded, reproducible source of choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0..n
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a mut [T]) -> Option<&'a mut T> {
        if items.is_empty() {
            return None;
        }
        let at = self.below(items.len());
        items.get_mut(at)
    }
}

pub fn metadata() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::nil(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        command_id: "projector-test".into(),
        actor: None,
        actor_roles: Vec::new(),
    }
}

/// An aggregate with its id and the version its state is at.
pub struct Stream<A> {
    pub id: Uuid,
    pub state: A,
    pub version: i32,
}

impl<A: Aggregate> Stream<A> {
    pub fn new() -> Self {
        Self::with_id(Uuid::now_v7())
    }

    /// A stream whose id is derived, like an order's payment stream.
    pub fn with_id(id: Uuid) -> Self {
        Self {
            id,
            state: A::default(),
            version: 0,
        }
    }

    /// Decides with the aggregate and appends what it decided, in a transaction of its own;
    /// a refused command appends nothing. Returns the number of events appended.
    pub async fn exec(&mut self, pool: &PgPool, command: A::Command) -> usize {
        let Ok(events) = self.state.handle(command) else {
            return 0;
        };
        if events.is_empty() {
            return 0;
        }
        let new: Vec<NewEvent> = events.iter().map(NewEvent::from_domain).collect();
        let mut tx = pool.begin().await.unwrap();
        append(
            &mut tx,
            self.id,
            A::STREAM_TYPE,
            self.version,
            &new,
            &metadata(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        for event in &events {
            self.state.apply(event);
        }
        self.version += events.len() as i32;
        events.len()
    }
}

/// Appends raw events (valid or not) after a stream's last version.
pub async fn append_raw(
    pool: &PgPool,
    stream_id: Uuid,
    stream_type: &str,
    version: i32,
    events: &[NewEvent],
) {
    let mut tx = pool.begin().await.unwrap();
    append(
        &mut tx,
        stream_id,
        stream_type,
        version,
        events,
        &metadata(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

pub fn new_event<E: DomainEvent>(event: &E) -> NewEvent {
    NewEvent::from_domain(event)
}

/// Users, products and orders going through their whole lives, the saga included, every
/// decision taken by the aggregates.
pub struct Workload {
    rng: Rng,
    users: Vec<Stream<User>>,
    products: Vec<Stream<Product>>,
    orders: Vec<Stream<Order>>,
    serial: u64,
    /// Events appended so far.
    pub appended: usize,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            users: Vec::new(),
            products: Vec::new(),
            orders: Vec::new(),
            serial: 0,
            appended: 0,
        }
    }

    pub async fn run(&mut self, pool: &PgPool, steps: usize) {
        for _ in 0..steps {
            self.step(pool).await;
        }
    }

    /// One user action, or one saga run for a placed order.
    pub async fn step(&mut self, pool: &PgPool) {
        self.serial += 1;
        let serial = self.serial;
        let roll = self.rng.below(100);
        let appended = if self.users.len() < 3 || roll < 8 {
            let mut user = Stream::<User>::new();
            let register = UserCommand::Register {
                name: format!("User {serial}").try_into().unwrap(),
                email: format!("user{serial}@example.com").try_into().unwrap(),
            };
            let n = user.exec(pool, register).await;
            self.users.push(user);
            n
        } else if self.products.len() < 4 || roll < 14 {
            let currency = if self.rng.chance(25) {
                Currency::USD
            } else {
                Currency::EUR
            };
            let mut product = Stream::<Product>::new();
            let create = ProductCommand::Create {
                sku: format!("SKU-{serial}").try_into().unwrap(),
                name: format!("Product {serial}").try_into().unwrap(),
                price: Money::new(100 + self.rng.below(5000) as i64, currency),
                initial_stock: self.rng.below(40) as u32,
            };
            let n = product.exec(pool, create).await;
            self.products.push(product);
            n
        } else if roll < 19 {
            let command = if self.rng.chance(50) {
                UserCommand::Rename {
                    name: format!("Renamed {serial}").try_into().unwrap(),
                }
            } else {
                UserCommand::ChangeEmail {
                    email: format!("moved{serial}@example.org").try_into().unwrap(),
                }
            };
            let user = self.rng.pick(&mut self.users).unwrap();
            user.exec(pool, command).await
        } else if roll < 24 {
            let product = self.rng.pick(&mut self.products).unwrap();
            let command = if self.rng.chance(50) {
                let currency = product.state.price().unwrap().currency;
                ProductCommand::ChangePrice {
                    price: Money::new(100 + self.rng.below(5000) as i64, currency),
                }
            } else {
                ProductCommand::Restock {
                    quantity: 1 + self.rng.below(20) as u32,
                }
            };
            product.exec(pool, command).await
        } else if roll < 38 {
            let user_id = self.users[self.rng.below(self.users.len())].id;
            let currency = if self.rng.chance(25) {
                Currency::USD
            } else {
                Currency::EUR
            };
            let mut order = Stream::<Order>::new();
            let n = order
                .exec(pool, OrderCommand::Create { user_id, currency })
                .await;
            self.orders.push(order);
            n
        } else if roll < 66 {
            self.add_item(pool).await
        } else if roll < 74 {
            self.change_item(pool).await
        } else if roll < 86 {
            match self.some_order(OrderStatus::Draft) {
                Some(at) => self.orders[at].exec(pool, OrderCommand::Place).await,
                None => 0,
            }
        } else if roll < 97 {
            self.run_saga(pool).await
        } else {
            match self.some_order(OrderStatus::Draft) {
                Some(at) => {
                    let cancel = OrderCommand::Cancel {
                        reason: "changed my mind".into(),
                    };
                    self.orders[at].exec(pool, cancel).await
                }
                None => 0,
            }
        };
        self.appended += appended;
    }

    fn some_order(&mut self, status: OrderStatus) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.orders.len())
            .filter(|&at| self.orders[at].state.status() == Some(status))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.below(candidates.len())])
    }

    async fn add_item(&mut self, pool: &PgPool) -> usize {
        let Some(at) = self.some_order(OrderStatus::Draft) else {
            return 0;
        };
        let currency = self.orders[at].state.currency().unwrap();
        let priced: Vec<&Stream<Product>> = self
            .products
            .iter()
            .filter(|p| p.state.price().map(|price| price.currency) == Some(currency))
            .collect();
        if priced.is_empty() {
            return 0;
        }
        let product = priced[self.rng.below(priced.len())];
        let command = OrderCommand::AddItem {
            product_id: product.id,
            product_name: product.state.name().unwrap().to_owned(),
            unit_price: product.state.price().unwrap(),
            quantity: 1 + self.rng.below(4) as u32,
        };
        self.orders[at].exec(pool, command).await
    }

    async fn change_item(&mut self, pool: &PgPool) -> usize {
        let Some(at) = self.some_order(OrderStatus::Draft) else {
            return 0;
        };
        let lines = self.orders[at].state.lines().to_vec();
        if lines.is_empty() {
            return 0;
        }
        let line = &lines[self.rng.below(lines.len())];
        let command = if self.rng.chance(60) {
            OrderCommand::UpdateQuantity {
                product_id: line.product_id,
                quantity: 1 + self.rng.below(6) as u32,
            }
        } else {
            OrderCommand::RemoveItem {
                product_id: line.product_id,
            }
        };
        self.orders[at].exec(pool, command).await
    }

    /// The fulfilment saga for one placed order: reserve every line, authorize the payment,
    /// then confirm, commit and capture; or void, release and cancel (out of stock, or the
    /// payment declined, or declined only after it was authorized).
    async fn run_saga(&mut self, pool: &PgPool) -> usize {
        let Some(at) = self.some_order(OrderStatus::Placed) else {
            return 0;
        };
        let order_id = self.orders[at].id;
        let lines = self.orders[at].state.lines().to_vec();
        let total = self.orders[at].state.total().unwrap();
        let mut appended = 0;
        let mut reserved = Vec::new();
        let mut all_reserved = true;
        for line in &lines {
            let product = self.product(line.product_id);
            let reserve = ProductCommand::Reserve {
                order_id,
                quantity: line.quantity,
            };
            match product.exec(pool, reserve).await {
                0 => {
                    all_reserved = false;
                    break;
                }
                n => {
                    appended += n;
                    reserved.push(line.product_id);
                }
            }
        }
        let confirm = all_reserved && self.rng.chance(80);
        // An empty order has nothing to pay; otherwise a cancelled order with its stock
        // reserved had its payment declined, or authorized and then voided.
        let mut payment = Stream::<Payment>::with_id(payment_id(order_id));
        if all_reserved && total.is_positive() {
            let command = if confirm || self.serial.is_multiple_of(2) {
                PaymentCommand::Authorize {
                    order_id,
                    amount: total,
                    authorization_id: format!("auth-{}", self.serial),
                }
            } else {
                PaymentCommand::Decline {
                    order_id,
                    amount: total,
                    reason: "insufficient funds".into(),
                }
            };
            appended += payment.exec(pool, command).await;
        }
        if confirm {
            appended += self.orders[at].exec(pool, OrderCommand::Confirm).await;
            for product_id in reserved {
                let commit = ProductCommand::CommitReservation { order_id };
                appended += self.product(product_id).exec(pool, commit).await;
            }
            appended += payment.exec(pool, PaymentCommand::Capture).await;
        } else {
            let void = PaymentCommand::Void {
                reason: "order cancelled".into(),
            };
            appended += payment.exec(pool, void).await;
            for product_id in reserved {
                let release = ProductCommand::Release { order_id };
                appended += self.product(product_id).exec(pool, release).await;
            }
            let reason = if all_reserved {
                "payment declined"
            } else {
                "out of stock"
            };
            let cancel = OrderCommand::Cancel {
                reason: reason.into(),
            };
            appended += self.orders[at].exec(pool, cancel).await;
        }
        appended
    }

    fn product(&mut self, id: Uuid) -> &mut Stream<Product> {
        self.products.iter_mut().find(|p| p.id == id).unwrap()
    }
}

/// The registered projections that consume `stream_type`.
pub fn consuming(stream_type: &'static str) -> impl Iterator<Item = &'static dyn Projection> {
    PROJECTIONS
        .iter()
        .copied()
        .filter(move |projection| projection.consumes(stream_type))
}

/// Every event in the store, in position order (no gap-safety needed once writers stopped).
pub async fn all_events(pool: &PgPool) -> Vec<StoredEvent> {
    sqlx::query_as(
        "select position, tx_id::text::bigint as tx_id, stream_id, stream_type, version, \
         event_type, schema_version, payload, metadata, recorded_at from events order by position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A random interleaving of the streams that keeps each stream in version order: what
/// three topics with many partitions deliver.
pub fn shuffle_across_streams(events: Vec<StoredEvent>, rng: &mut Rng) -> Vec<StoredEvent> {
    let mut streams: Vec<VecDeque<StoredEvent>> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    let mut sorted = events;
    sorted.sort_by_key(|e| (e.stream_id, e.version));
    for event in sorted {
        let at = *index.entry(event.stream_id).or_insert_with(|| {
            streams.push(VecDeque::new());
            streams.len() - 1
        });
        streams[at].push_back(event);
    }
    let mut remaining: usize = streams.iter().map(VecDeque::len).sum();
    let mut shuffled = Vec::with_capacity(remaining);
    while remaining > 0 {
        // Weighted by what each stream has left: every interleaving is equally likely.
        let mut ticket = rng.below(remaining);
        let stream = streams
            .iter_mut()
            .find(|s| {
                if ticket < s.len() {
                    true
                } else {
                    ticket -= s.len();
                    false
                }
            })
            .unwrap();
        shuffled.push(stream.pop_front().unwrap());
        remaining -= 1;
    }
    shuffled
}

/// Applies `events` in random-sized batches, each in its own transaction, sometimes
/// delivering a batch twice (at least once, like Kafka); returns every rejection.
pub async fn deliver(
    pool: &PgPool,
    projection: &'static dyn Projection,
    events: &[StoredEvent],
    rng: &mut Rng,
) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let end = (start + 1 + rng.below(60)).min(events.len());
        let repeats = if rng.chance(10) { 2 } else { 1 };
        for _ in 0..repeats {
            rejected.extend(apply(pool, projection, &events[start..end]).await);
        }
        start = end;
    }
    rejected
}

/// One batch in one transaction, committed.
pub async fn apply(
    pool: &PgPool,
    projection: &'static dyn Projection,
    events: &[StoredEvent],
) -> Vec<Rejected> {
    let mut tx = pool.begin().await.unwrap();
    let rejected = apply_batch(&mut tx, projection, events).await.unwrap();
    tx.commit().await.unwrap();
    rejected
}

/// Returns once the backend `pid` waits for a lock another transaction holds (an advisory
/// lock or a row's): how a test knows a concurrent writer got as far as it can.
pub async fn wait_until_blocked(pool: &PgPool, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: Option<String> =
            sqlx::query_scalar("select wait_event_type from pg_stat_activity where pid = $1")
                .bind(pid)
                .fetch_one(pool)
                .await
                .unwrap();
        if waiting.as_deref() == Some("Lock") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} never waited for a lock (last wait: {waiting:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub user_id: Uuid,
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    pub status: String,
    pub currency: String,
    pub items: Value,
    pub item_count: i32,
    pub total_minor: i64,
    pub created_at: DateTime<Utc>,
    pub placed_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserRow {
    pub name: Option<String>,
    pub email: Option<String>,
    pub registered_at: Option<DateTime<Utc>>,
    pub order_count: i64,
    pub spent: Value,
    pub last_order_at: Option<DateTime<Utc>>,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProductRow {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub price_minor: Option<i64>,
    pub currency: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    pub units_sold: i64,
    pub revenue_minor: i64,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRow {
    pub payment_id: Uuid,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub authorization_id: Option<String>,
    pub decline_reason: Option<String>,
    pub void_reason: Option<String>,
    pub authorized_at: Option<DateTime<Utc>>,
    pub declined_at: Option<DateTime<Utc>>,
    pub captured_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

/// One projection's view rows and checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    Orders(BTreeMap<Uuid, OrderRow>),
    Users(BTreeMap<Uuid, UserRow>),
    Products(BTreeMap<Uuid, ProductRow>),
    /// By order id.
    Payments(BTreeMap<Uuid, PaymentRow>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadModel {
    pub view: View,
    pub checkpoints: BTreeMap<Uuid, i32>,
}

/// What `projection` must hold once every event in the store is applied, computed from the
/// events with the domain's own aggregates.
pub fn expected(projection: &'static dyn Projection, events: &[StoredEvent]) -> ReadModel {
    let mut by_stream: BTreeMap<Uuid, Vec<&StoredEvent>> = BTreeMap::new();
    for event in events {
        by_stream.entry(event.stream_id).or_default().push(event);
    }
    for stream in by_stream.values_mut() {
        stream.sort_by_key(|e| e.version);
    }
    let streams_of = |stream_type: &'static str| {
        by_stream
            .iter()
            .filter(move |(_, s)| s[0].stream_type == stream_type)
            .map(|(id, s)| (*id, s.as_slice()))
    };
    let users: BTreeMap<Uuid, (User, &[&StoredEvent])> = streams_of(User::STREAM_TYPE)
        .map(|(id, s)| (id, (User::from_events(&decode_all::<UserEvent>(s)), s)))
        .collect();
    let orders: BTreeMap<Uuid, (Order, Vec<OrderEvent>, &[&StoredEvent])> =
        streams_of(Order::STREAM_TYPE)
            .map(|(id, s)| {
                let events = decode_all::<OrderEvent>(s);
                (id, (Order::from_events(&events), events, s))
            })
            .collect();
    let checkpoints = by_stream
        .iter()
        .filter(|(_, s)| projection.consumes(&s[0].stream_type))
        .map(|(id, s)| (*id, s.last().unwrap().version))
        .collect();

    let view = match projection.name() {
        "order_view" => View::Orders(
            orders
                .iter()
                .map(|(id, (order, events, stored))| {
                    let owner = users.get(&order.user_id().unwrap()).map(|(u, _)| u);
                    let at = |wanted: fn(&OrderEvent) -> bool| {
                        events
                            .iter()
                            .zip(stored.iter())
                            .find(|(e, _)| wanted(e))
                            .map(|(_, s)| s.recorded_at)
                    };
                    let cancel_reason = events.iter().find_map(|e| match e {
                        OrderEvent::OrderCancelled { reason } => Some(reason.clone()),
                        _ => None,
                    });
                    let row = OrderRow {
                        user_id: order.user_id().unwrap(),
                        user_name: owner.and_then(|u| u.name().map(str::to_owned)),
                        user_email: owner.and_then(|u| u.email().map(str::to_owned)),
                        status: order.status().unwrap().as_str().to_owned(),
                        currency: order.currency().unwrap().code().to_owned(),
                        items: items_json(order),
                        item_count: order.lines().iter().map(|l| l.quantity as i32).sum(),
                        total_minor: order.total().unwrap().amount_minor,
                        created_at: stored[0].recorded_at,
                        placed_at: at(|e| matches!(e, OrderEvent::OrderPlaced { .. })),
                        confirmed_at: at(|e| matches!(e, OrderEvent::OrderConfirmed {})),
                        cancelled_at: at(|e| matches!(e, OrderEvent::OrderCancelled { .. })),
                        cancel_reason,
                        version: stored.last().unwrap().version,
                        updated_at: stored.last().unwrap().recorded_at,
                    };
                    (*id, row)
                })
                .collect(),
        ),
        "user_view" => {
            let mut rows: BTreeMap<Uuid, UserRow> = users
                .iter()
                .map(|(id, (user, stored))| {
                    let row = UserRow {
                        name: user.name().map(str::to_owned),
                        email: user.email().map(str::to_owned),
                        registered_at: Some(stored[0].recorded_at),
                        version: stored.last().unwrap().version,
                        ..UserRow::default()
                    };
                    (*id, row)
                })
                .collect();
            let mut spent: BTreeMap<Uuid, BTreeMap<String, i64>> = BTreeMap::new();
            for (order, _, stored) in orders.values() {
                let user_id = order.user_id().unwrap();
                let row = rows.entry(user_id).or_default();
                row.order_count += 1;
                row.last_order_at = row.last_order_at.max(Some(stored[0].recorded_at));
                if order.status() == Some(OrderStatus::Confirmed) {
                    let total = order.total().unwrap();
                    *spent
                        .entry(user_id)
                        .or_default()
                        .entry(total.currency.code().to_owned())
                        .or_default() += total.amount_minor;
                }
            }
            for (id, row) in &mut rows {
                row.spent = json!(spent.get(id).cloned().unwrap_or_default());
            }
            View::Users(rows)
        }
        "product_view" => {
            let mut rows: BTreeMap<Uuid, ProductRow> = streams_of(Product::STREAM_TYPE)
                .map(|(id, s)| {
                    let product = Product::from_events(&decode_all::<ProductEvent>(s));
                    let price = product.price().unwrap();
                    let row = ProductRow {
                        sku: product.sku().map(str::to_owned),
                        name: product.name().map(str::to_owned),
                        price_minor: Some(price.amount_minor),
                        currency: Some(price.currency.code().to_owned()),
                        on_hand: product.available() as i64,
                        reserved: product.reserved() as i64,
                        units_sold: product.sold() as i64,
                        revenue_minor: 0,
                        version: s.last().unwrap().version,
                    };
                    (id, row)
                })
                .collect();
            for (order, _, _) in orders.values() {
                if order.status() == Some(OrderStatus::Confirmed) {
                    for line in order.lines() {
                        rows.entry(line.product_id).or_default().revenue_minor +=
                            line.total().unwrap().amount_minor;
                    }
                }
            }
            View::Products(rows)
        }
        "payment_view" => View::Payments(
            streams_of(Payment::STREAM_TYPE)
                .map(|(id, s)| {
                    let events = decode_all::<PaymentEvent>(s);
                    let payment = Payment::from_events(&events);
                    let amount = payment.amount().unwrap();
                    let at = |wanted: fn(&PaymentEvent) -> bool| {
                        events
                            .iter()
                            .zip(s.iter())
                            .find(|(e, _)| wanted(e))
                            .map(|(_, s)| s.recorded_at)
                    };
                    let reason = |wanted: fn(&PaymentEvent) -> Option<&String>| {
                        events.iter().find_map(wanted).cloned()
                    };
                    let row = PaymentRow {
                        payment_id: id,
                        status: payment.status().as_str().to_owned(),
                        amount_minor: amount.amount_minor,
                        currency: amount.currency.code().to_owned(),
                        authorization_id: payment.authorization_id().map(str::to_owned),
                        decline_reason: reason(|e| match e {
                            PaymentEvent::PaymentDeclined { reason, .. } => Some(reason),
                            _ => None,
                        }),
                        void_reason: reason(|e| match e {
                            PaymentEvent::PaymentVoided { reason } => Some(reason),
                            _ => None,
                        }),
                        authorized_at: at(|e| matches!(e, PaymentEvent::PaymentAuthorized { .. })),
                        declined_at: at(|e| matches!(e, PaymentEvent::PaymentDeclined { .. })),
                        captured_at: at(|e| matches!(e, PaymentEvent::PaymentCaptured { .. })),
                        voided_at: at(|e| matches!(e, PaymentEvent::PaymentVoided { .. })),
                        version: s.last().unwrap().version,
                        updated_at: s.last().unwrap().recorded_at,
                    };
                    (payment.order_id().unwrap(), row)
                })
                .collect(),
        ),
        other => panic!("no independent fold of {other}"),
    };
    ReadModel { view, checkpoints }
}

fn decode_all<E: DomainEvent>(stored: &[&StoredEvent]) -> Vec<E> {
    stored.iter().map(|s| s.decode::<E>().unwrap()).collect()
}

fn items_json(order: &Order) -> Value {
    order
        .lines()
        .iter()
        .map(|line| {
            json!({
                "productId": line.product_id,
                "productName": line.product_name,
                "unitPrice": line.unit_price,
                "quantity": line.quantity,
                "lineTotal": line.total().unwrap(),
            })
        })
        .collect()
}

/// What `projection`'s live tables hold.
pub async fn actual(pool: &PgPool, projection: &'static dyn Projection) -> ReadModel {
    let tables = projection.tables();
    let rows = sqlx::query(&format!("select * from {}", tables.view))
        .fetch_all(pool)
        .await
        .unwrap();
    let view = match projection.name() {
        "order_view" => View::Orders(
            rows.iter()
                .map(|r| {
                    let row = OrderRow {
                        user_id: r.get("user_id"),
                        user_name: r.get("user_name"),
                        user_email: r.get("user_email"),
                        status: r.get("status"),
                        currency: r.get("currency"),
                        items: r.get("items"),
                        item_count: r.get("item_count"),
                        total_minor: r.get("total_minor"),
                        created_at: r.get("created_at"),
                        placed_at: r.get("placed_at"),
                        confirmed_at: r.get("confirmed_at"),
                        cancelled_at: r.get("cancelled_at"),
                        cancel_reason: r.get("cancel_reason"),
                        version: r.get("version"),
                        updated_at: r.get("updated_at"),
                    };
                    (r.get("order_id"), row)
                })
                .collect(),
        ),
        "user_view" => View::Users(
            rows.iter()
                .map(|r| {
                    let row = UserRow {
                        name: r.get("name"),
                        email: r.get("email"),
                        registered_at: r.get("registered_at"),
                        order_count: r.get("order_count"),
                        spent: r.get("spent"),
                        last_order_at: r.get("last_order_at"),
                        version: r.get("version"),
                    };
                    (r.get("user_id"), row)
                })
                .collect(),
        ),
        "product_view" => View::Products(
            rows.iter()
                .map(|r| {
                    let row = ProductRow {
                        sku: r.get("sku"),
                        name: r.get("name"),
                        price_minor: r.get("price_minor"),
                        currency: r.get("currency"),
                        on_hand: r.get("on_hand"),
                        reserved: r.get("reserved"),
                        units_sold: r.get("units_sold"),
                        revenue_minor: r.get("revenue_minor"),
                        version: r.get("version"),
                    };
                    (r.get("product_id"), row)
                })
                .collect(),
        ),
        "payment_view" => View::Payments(
            rows.iter()
                .map(|r| {
                    let row = PaymentRow {
                        payment_id: r.get("payment_id"),
                        status: r.get("status"),
                        amount_minor: r.get("amount_minor"),
                        currency: r.get("currency"),
                        authorization_id: r.get("authorization_id"),
                        decline_reason: r.get("decline_reason"),
                        void_reason: r.get("void_reason"),
                        authorized_at: r.get("authorized_at"),
                        declined_at: r.get("declined_at"),
                        captured_at: r.get("captured_at"),
                        voided_at: r.get("voided_at"),
                        version: r.get("version"),
                        updated_at: r.get("updated_at"),
                    };
                    (r.get("order_id"), row)
                })
                .collect(),
        ),
        other => panic!("no independent fold of {other}"),
    };
    let checkpoints = sqlx::query(&format!(
        "select stream_id, version from {}",
        tables.checkpoints
    ))
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("stream_id"), r.get("version")))
    .collect();
    ReadModel { view, checkpoints }
}

/// The live tables of `projection` equal the fold of every event in the store.
#[track_caller]
pub fn assert_same(projection: &'static dyn Projection, actual: &ReadModel, expected: &ReadModel) {
    assert_eq!(
        actual.checkpoints, expected.checkpoints,
        "{projection} checkpoints"
    );
    match (&actual.view, &expected.view) {
        (View::Orders(a), View::Orders(e)) => assert_rows(projection, a, e),
        (View::Users(a), View::Users(e)) => assert_rows(projection, a, e),
        (View::Products(a), View::Products(e)) => assert_rows(projection, a, e),
        (View::Payments(a), View::Payments(e)) => assert_rows(projection, a, e),
        _ => panic!("{projection}: views of different projections"),
    }
}

#[track_caller]
fn assert_rows<R: PartialEq + std::fmt::Debug>(
    projection: &'static dyn Projection,
    actual: &BTreeMap<Uuid, R>,
    expected: &BTreeMap<Uuid, R>,
) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{projection}: the rows' ids"
    );
    for (id, row) in expected {
        assert_eq!(&actual[id], row, "{projection} row {id}");
    }
}

/// Every projection's live tables equal the fold of the store.
pub async fn assert_all_match_the_store(pool: &PgPool) {
    let events = all_events(pool).await;
    for &projection in PROJECTIONS {
        let actual = actual(pool, projection).await;
        assert_same(projection, &actual, &expected(projection, &events));
    }
}
