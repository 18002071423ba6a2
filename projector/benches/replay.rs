//! Replay throughput: seeds an event store with a realistic mix decided by the real
//! aggregates, then replays every projection and prints events, seconds and events/s.
//!
//! `DATABASE_URL` names the server; the bench works in its own database on it,
//! `orderflow_replay_bench`, reused while it holds at least `REPLAY_BENCH_EVENTS` events
//! (default 1,000,000) unless `REPLAY_BENCH_FRESH=1`. Run with
//! `cargo bench -p orderflow-projector --bench replay`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use orderflow_domain::order::{Order, OrderCommand};
use orderflow_domain::product::{Product, ProductCommand};
use orderflow_domain::user::{User, UserCommand};
use orderflow_domain::{Aggregate, Currency, Money};
use orderflow_projector::{replay, ReplayOptions, PROJECTIONS};
use orderflow_store::{append, EventMetadata, NewEvent};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

const DATABASE: &str = "orderflow_replay_bench";
/// Orders per seeding transaction.
const ORDERS_PER_TX: usize = 1_000;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments of its own.
    let target: u64 = env_or("REPLAY_BENCH_EVENTS", 1_000_000);
    let fresh = std::env::var("REPLAY_BENCH_FRESH").is_ok_and(|v| v == "1");
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the PostgreSQL server");
    let pool = bench_database(&url, fresh).await;

    let stored: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    if (stored as u64) < target {
        if stored > 0 {
            sqlx::query("truncate events").execute(&pool).await.unwrap();
        }
        let started = Instant::now();
        let seeded = seed(&pool, target).await;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "seeded {seeded} events in {seconds:.1} s ({:.0} events/s)",
            seeded as f64 / seconds
        );
        sqlx::query("vacuum analyze events")
            .execute(&pool)
            .await
            .unwrap();
    } else {
        println!("reusing {stored} events in database {DATABASE}");
    }

    let mix: Vec<(String, i64)> =
        sqlx::query_as("select stream_type, count(*) from events group by 1 order by 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    println!("mix: {mix:?}");

    let options = ReplayOptions {
        batch_size: env_or("REPLAY_BENCH_BATCH", 10_000),
        progress: std::env::var("REPLAY_BENCH_QUIET").is_err(),
    };
    let mut events = 0;
    let mut elapsed = Duration::ZERO;
    println!(
        "{:<14} {:>10} {:>10} {:>9} {:>10}",
        "projection", "events", "applied", "seconds", "events/s"
    );
    for &projection in PROJECTIONS {
        let report = replay(&pool, projection, options).await.unwrap();
        assert_eq!(report.rejected, 0, "{projection}");
        println!(
            "{:<14} {:>10} {:>10} {:>9.2} {:>10.0}",
            projection.name(),
            report.events,
            report.applied,
            report.elapsed.as_secs_f64(),
            report.events_per_second()
        );
        events += report.events;
        elapsed += report.elapsed;
    }
    println!(
        "{:<14} {:>10} {:>10} {:>9.2} {:>10.0}",
        "all",
        events,
        "",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A pool on the bench's own database, created and migrated if needed.
async fn bench_database(url: &str, fresh: bool) -> PgPool {
    let server: PgConnectOptions = url.parse().expect("DATABASE_URL is a postgres:// URL");
    let mut admin = server
        .connect()
        .await
        .expect("the server accepts connections");
    if fresh {
        let drop = format!("drop database if exists {DATABASE}");
        sqlx::query(&drop).execute(&mut admin).await.unwrap();
    }
    let exists: bool =
        sqlx::query_scalar("select exists (select from pg_database where datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        let create = format!("create database {DATABASE}");
        sqlx::query(&create).execute(&mut admin).await.unwrap();
    }
    admin.close().await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(server.database(DATABASE))
        .await
        .unwrap();
    sqlx::migrate!("../migrations").run(&pool).await.unwrap();
    pool
}

fn metadata() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::nil(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        command_id: "replay-bench".into(),
        actor: None,
        actor_roles: Vec::new(),
    }
}

/// xorshift64*: reproducible choices without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// An aggregate, its version in the store, and events decided but not yet appended.
struct Stream<A: Aggregate> {
    id: Uuid,
    state: A,
    version: i32,
    pending: Vec<A::Event>,
}

impl<A: Aggregate> Stream<A> {
    fn new() -> Self {
        Self {
            id: Uuid::now_v7(),
            state: A::default(),
            version: 0,
            pending: Vec::new(),
        }
    }

    /// Decides with the aggregate; the events are appended at the next [`Stream::flush`].
    fn exec(&mut self, command: A::Command) -> bool {
        match self.state.handle(command) {
            Ok(events) => {
                for event in &events {
                    self.state.apply(event);
                }
                let decided = !events.is_empty();
                self.pending.extend(events);
                decided
            }
            Err(_) => false,
        }
    }

    async fn flush(&mut self, conn: &mut PgConnection, metadata: &EventMetadata) -> u64 {
        if self.pending.is_empty() {
            return 0;
        }
        let events: Vec<NewEvent> = self.pending.iter().map(NewEvent::from_domain).collect();
        append(
            conn,
            self.id,
            A::STREAM_TYPE,
            self.version,
            &events,
            metadata,
        )
        .await
        .unwrap();
        self.version += events.len() as i32;
        self.pending.clear();
        events.len() as u64
    }
}

/// Appends about `target` events: users (some renamed or moved), products (some repriced
/// or restocked), and orders that are filled, edited, placed, then go through the saga
/// (reserve every line, then confirm and commit, or release and cancel), or stay drafts.
async fn seed(pool: &PgPool, target: u64) -> u64 {
    let mut rng = Rng(0x00c0_ffee);
    let mut conn = pool.acquire().await.unwrap();
    let metadata = metadata();
    let user_count = (target / 100).max(10) as usize;
    let product_count = (target / 2_000).clamp(20, 2_000) as usize;

    let mut appended = 0;
    let mut users: Vec<Stream<User>> = Vec::new();
    let mut products: Vec<Stream<Product>> = Vec::new();
    let mut tx = conn.begin().await.unwrap();
    for n in 0..user_count {
        let mut user = Stream::<User>::new();
        user.exec(UserCommand::Register {
            name: format!("User {n}").try_into().unwrap(),
            email: format!("user{n}@example.com").try_into().unwrap(),
        });
        if rng.chance(10) {
            user.exec(UserCommand::Rename {
                name: format!("Renamed {n}").try_into().unwrap(),
            });
        }
        appended += user.flush(&mut tx, &metadata).await;
        users.push(user);
    }
    for n in 0..product_count {
        let currency = if rng.chance(20) {
            Currency::USD
        } else {
            Currency::EUR
        };
        let mut product = Stream::<Product>::new();
        product.exec(ProductCommand::Create {
            sku: format!("SKU-{n}").try_into().unwrap(),
            name: format!("Product {n}").try_into().unwrap(),
            price: Money::new(100 + rng.below(9_900) as i64, currency),
            initial_stock: 1_000_000,
        });
        appended += product.flush(&mut tx, &metadata).await;
        products.push(product);
    }
    tx.commit().await.unwrap();
    let product_at: HashMap<Uuid, usize> = products
        .iter()
        .enumerate()
        .map(|(at, product)| (product.id, at))
        .collect();

    let mut order_number = 0_usize;
    while appended < target {
        let mut tx = conn.begin().await.unwrap();
        let mut orders = Vec::with_capacity(ORDERS_PER_TX);
        let mut touched = BTreeSet::new();
        for _ in 0..ORDERS_PER_TX {
            order_number += 1;
            let mut order = Stream::<Order>::new();
            let user = rng.below(users.len());
            let user = &mut users[user];
            if rng.chance(1) {
                user.exec(UserCommand::ChangeEmail {
                    email: format!("moved{order_number}@example.org")
                        .try_into()
                        .unwrap(),
                });
                appended += user.flush(&mut tx, &metadata).await;
            }
            let currency = if rng.chance(20) {
                Currency::USD
            } else {
                Currency::EUR
            };
            order.exec(OrderCommand::Create {
                user_id: user.id,
                currency,
            });
            for _ in 0..1 + rng.below(4) {
                let product = loop {
                    let at = rng.below(products.len());
                    if products[at].state.price().map(|p| p.currency) == Some(currency) {
                        break at;
                    }
                };
                let product = &products[product];
                order.exec(OrderCommand::AddItem {
                    product_id: product.id,
                    product_name: product.state.name().unwrap().to_owned(),
                    unit_price: product.state.price().unwrap(),
                    quantity: 1 + rng.below(3) as u32,
                });
            }
            if rng.chance(15) {
                let line = order.state.lines()[0].clone();
                order.exec(OrderCommand::UpdateQuantity {
                    product_id: line.product_id,
                    quantity: line.quantity + 1,
                });
            }
            if rng.chance(10) {
                order.exec(OrderCommand::Cancel {
                    reason: "changed my mind".into(),
                });
            } else if rng.chance(95) {
                order.exec(OrderCommand::Place);
                let order_id = order.id;
                let lines = order.state.lines().to_vec();
                let by_id = |id: Uuid| product_at[&id];
                for line in &lines {
                    let at = by_id(line.product_id);
                    products[at].exec(ProductCommand::Reserve {
                        order_id,
                        quantity: line.quantity,
                    });
                    touched.insert(at);
                }
                let confirm = rng.chance(85);
                for line in &lines {
                    let at = by_id(line.product_id);
                    products[at].exec(if confirm {
                        ProductCommand::CommitReservation { order_id }
                    } else {
                        ProductCommand::Release { order_id }
                    });
                }
                order.exec(if confirm {
                    OrderCommand::Confirm
                } else {
                    OrderCommand::Cancel {
                        reason: "payment declined".into(),
                    }
                });
            }
            if rng.chance(2) {
                let at = rng.below(products.len());
                let currency = products[at].state.price().unwrap().currency;
                products[at].exec(ProductCommand::ChangePrice {
                    price: Money::new(100 + rng.below(9_900) as i64, currency),
                });
                products[at].exec(ProductCommand::Restock { quantity: 100 });
                touched.insert(at);
            }
            orders.push(order);
        }
        for order in &mut orders {
            appended += order.flush(&mut tx, &metadata).await;
        }
        for at in &touched {
            appended += products[*at].flush(&mut tx, &metadata).await;
        }
        tx.commit().await.unwrap();
    }
    appended
}
