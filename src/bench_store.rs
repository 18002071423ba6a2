//! `orderflow bench replay` and `orderflow bench relay`: how fast the event log is folded
//! into projections and published, on a private PostgreSQL (durable default settings)
//! seeded with a realistic mix decided by the real aggregates (see [`seed`]).
//!
//! - replay: every projection rebuilt from the log, events read per second.
//! - relay: the seeded backlog published by the relay, events per second from commit to the
//!   broker's acknowledgement (the relay's cursor only moves past acknowledged events); then,
//!   with the in-process broker, the broker is stopped for `--outage` while events keep
//!   arriving, and the time the relay takes to drain what piled up once it is back.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use orderflow_domain::order::{Order, OrderCommand};
use orderflow_domain::product::{Product, ProductCommand};
use orderflow_domain::user::{User, UserCommand};
use orderflow_domain::{Aggregate, Currency, Money};
use orderflow_projector::{replay, ReplayOptions, PROJECTIONS};
use orderflow_query::config::parse_duration;
use orderflow_store::reader::Cursor;
use orderflow_store::{append, DatabaseArgs, EventMetadata, NewEvent};
use serde_json::{json, Value};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::devdb::PrivatePostgres;

/// Orders per seeding transaction.
const ORDERS_PER_TX: usize = 1_000;

/// The private, seeded store both benches run on.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// Events seeded into the store before measuring (not timed).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    events: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where the private PostgreSQL lives (wiped first).
    #[arg(long, default_value = "target/bench-store-pg/data")]
    data_dir: PathBuf,
    /// Port of the private PostgreSQL.
    #[arg(long, default_value_t = 54369)]
    pg_port: u16,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReplayArgs {
    /// Events read from the store at a time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    batch: i64,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RelayArgs {
    /// Publish to this Kafka (e.g. a tansu memory-engine broker) instead of the in-process
    /// broker; the outage, which needs a broker the bench can stop, is then skipped.
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// How long the in-process broker is stopped for the drain measurement (0s skips it).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    outage: Duration,
    /// Events appended per second while the broker is stopped.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    outage_rate: u32,
    #[command(flatten)]
    store: StoreArgs,
}

/// Default seeded events: replay reads a million; the relay's backlog is a fifth of that.
const REPLAY_EVENTS: u64 = 1_000_000;
const RELAY_EVENTS: u64 = 200_000;

pub(crate) async fn replay_bench(args: ReplayArgs) -> anyhow::Result<()> {
    let json = args.store.json;
    let report = replay_report(&args).await?;
    print(&report, json, print_replay);
    Ok(())
}

pub(crate) async fn relay_bench(args: RelayArgs) -> anyhow::Result<()> {
    let json = args.store.json;
    let report = relay_report(&args).await?;
    print(&report, json, print_relay);
    Ok(())
}

fn print(report: &Value, json: bool, text: fn(&Value)) {
    if json {
        println!("{report}");
    } else {
        text(report);
    }
}

/// Seeds a private store, replays every projection; one JSON object of the figures.
pub(crate) async fn replay_report(args: &ReplayArgs) -> anyhow::Result<Value> {
    let target = args.store.events.unwrap_or(REPLAY_EVENTS);
    with_store(&args.store, target, |pool, seeded| async move {
        let options = ReplayOptions {
            batch_size: args.batch,
            progress: !args.store.json,
        };
        let mut rows = Vec::new();
        let (mut events, mut elapsed) = (0_u64, Duration::ZERO);
        for &projection in PROJECTIONS {
            let report = replay(&pool, projection, options)
                .await
                .with_context(|| format!("replaying {}", projection.name()))?;
            if report.rejected > 0 {
                bail!(
                    "{} rejected {} seeded events",
                    projection.name(),
                    report.rejected
                );
            }
            rows.push(json!({
                "projection": projection.name(),
                "events": report.events,
                "applied": report.applied,
                "seconds": report.elapsed.as_secs_f64(),
                "events_per_second": report.events_per_second(),
            }));
            events += report.events;
            elapsed += report.elapsed;
        }
        Ok(json!({
            "seeded": seeded,
            "projections": rows,
            "events": events,
            "seconds": elapsed.as_secs_f64(),
            "events_per_second": events as f64 / elapsed.as_secs_f64().max(1e-9),
        }))
    })
    .await
}

fn print_replay(report: &Value) {
    println!(
        "replay of {} seeded events, every projection:",
        report["seeded"]
    );
    println!(
        "{:<14} {:>10} {:>10} {:>9} {:>10}",
        "projection", "events", "applied", "seconds", "events/s"
    );
    for row in report["projections"].as_array().into_iter().flatten() {
        println!(
            "{:<14} {:>10} {:>10} {:>9.2} {:>10.0}",
            row["projection"].as_str().unwrap_or(""),
            row["events"],
            row["applied"],
            row["seconds"].as_f64().unwrap_or(0.0),
            row["events_per_second"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "{:<14} {:>10} {:>10} {:>9.2} {:>10.0}",
        "all",
        report["events"],
        "",
        report["seconds"].as_f64().unwrap_or(0.0),
        report["events_per_second"].as_f64().unwrap_or(0.0)
    );
}

/// Seeds a private store, publishes it with the relay, then (in-process broker) measures
/// the drain after an outage; one JSON object of the figures.
pub(crate) async fn relay_report(args: &RelayArgs) -> anyhow::Result<Value> {
    let target = args.store.events.unwrap_or(RELAY_EVENTS);
    with_store(&args.store, target, |pool, seeded| async move {
        let (mock, kafka) =
            crate::bench::bench_broker(args.kafka_brokers.as_deref()).await?;
        let options = orderflow_command::relay::RelayOptions::default();
        let name = options.name.clone();
        let (stop, shutdown) = watch::channel(false);
        let relay = tokio::spawn(orderflow_command::relay::run(
            pool.clone(),
            kafka.clone(),
            options,
            shutdown,
        ));
        let mut relay = relay;
        let outcome = async {
            eprintln!("publishing the {seeded} seeded events");
            let started = Instant::now();
            // A relay that cannot publish retries for ever: bounded here, and its end (an
            // error, a panic) ends the bench.
            let limit = Duration::from_secs(60 + seeded / 1_000);
            tokio::select! {
                caught = caught_up(&pool, &name, limit) => caught?,
                ended = &mut relay => bail!("the relay ended early: {ended:?}"),
            }
            let publish = started.elapsed();
            let mut report = json!({
                "seeded": seeded,
                "broker": if mock.is_some() { "in-process" } else { "given" },
                "events": seeded,
                "seconds": publish.as_secs_f64(),
                "events_per_second": seeded as f64 / publish.as_secs_f64().max(1e-9),
            });
            match &mock {
                Some(mock) if !args.outage.is_zero() => {
                    let outage = tokio::select! {
                        outage = outage(&pool, mock, &name, args.outage, args.outage_rate) => outage?,
                        ended = &mut relay => bail!("the relay ended early: {ended:?}"),
                    };
                    report["outage"] = outage;
                }
                _ => report["outage"] = Value::Null,
            }
            Ok(report)
        }
        .await;
        let _ = stop.send(true);
        if !relay.is_finished() || outcome.is_ok() {
            match relay.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %format!("{err:#}"), "the relay ended with an error")
                }
                Err(err) => tracing::warn!(%err, "the relay panicked"),
            }
        }
        outcome
    })
    .await
}

/// Stops the in-process broker for `length` while appending `rate` events per second, then
/// starts it again and times the relay's drain of what piled up.
async fn outage(
    pool: &PgPool,
    mock: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    relay: &str,
    length: Duration,
    rate: u32,
) -> anyhow::Result<Value> {
    eprintln!(
        "stopping the broker for {} s, {rate} events/s arriving meanwhile",
        length.as_secs()
    );
    mock.broker_down(1)
        .context("stopping the in-process broker")?;
    let started = Instant::now();
    let mut appended = 0_u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < length {
        ticks.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        if due > appended {
            append_raw(pool, (due - appended) as i64).await?;
            appended = due;
        }
    }
    let backlog = orderflow_command::relay::backlog(pool, relay).await?;
    mock.broker_up(1)
        .context("starting the in-process broker again")?;
    let back = Instant::now();
    caught_up(pool, relay, Duration::from_secs(60 + appended / 1_000)).await?;
    let drain = back.elapsed();
    Ok(json!({
        "seconds": length.as_secs_f64(),
        "appended": appended,
        "backlog": backlog,
        "drain_ms": drain.as_secs_f64() * 1000.0,
    }))
}

/// Appends `count` events of fresh streams in one statement, as the outage's arrivals.
async fn append_raw(pool: &PgPool, count: i64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into events (stream_id, stream_type, version, event_type, payload, metadata) \
         select gen_random_uuid(), 'user', 1, 'UserRegistered', \
                jsonb_build_object('name', 'Bench ' || n, 'email', 'bench' || n || '@example.com'), \
                jsonb_build_object('eventId', gen_random_uuid(), 'correlationId', gen_random_uuid(), \
                                   'commandId', 'relay-bench') \
         from generate_series(1, $1) n",
    )
    .bind(count)
    .execute(pool)
    .await
    .context("appending events during the outage")?;
    Ok(())
}

/// Waits until relay `name`'s cursor has reached the last event stored now.
async fn caught_up(pool: &PgPool, name: &str, limit: Duration) -> anyhow::Result<()> {
    let last: Option<(i64, i64)> = sqlx::query_as(
        "select tx_id::text::bigint, position from events order by tx_id desc, position desc limit 1",
    )
    .fetch_optional(pool)
    .await
    .context("reading the last event")?;
    let Some((tx_id, position)) = last else {
        return Ok(());
    };
    let target = Cursor { tx_id, position };
    let deadline = Instant::now() + limit;
    loop {
        let cursor = orderflow_command::relay::load_cursor(pool, name).await?;
        if (cursor.tx_id, cursor.position) >= (target.tx_id, target.position) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the relay did not publish everything within {} s",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_relay(report: &Value) {
    println!(
        "relay: {} events published in {:.2} s, {:.0} events/s from commit to the broker's acknowledgement ({} broker)",
        report["events"],
        report["seconds"].as_f64().unwrap_or(0.0),
        report["events_per_second"].as_f64().unwrap_or(0.0),
        report["broker"].as_str().unwrap_or("")
    );
    match report.get("outage").filter(|o| !o.is_null()) {
        Some(outage) => println!(
            "outage: broker stopped {:.0} s, {} events arrived ({} waiting when it came back), drained in {:.0} ms",
            outage["seconds"].as_f64().unwrap_or(0.0),
            outage["appended"],
            outage["backlog"],
            outage["drain_ms"].as_f64().unwrap_or(0.0)
        ),
        None => println!("outage: not measured (it needs the in-process broker, which the bench can stop)"),
    }
}

/// Runs `body` on a private PostgreSQL seeded with about `target` events; stops it after.
async fn with_store<F, Fut>(store: &StoreArgs, target: u64, body: F) -> anyhow::Result<Value>
where
    F: FnOnce(PgPool, u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    eprintln!(
        "starting a private PostgreSQL under {}",
        store.data_dir.display()
    );
    let pg = PrivatePostgres::start(&store.data_dir, store.pg_port, true)
        .await
        .context("starting the private PostgreSQL")?;
    let outcome = async {
        let pool = DatabaseArgs::new(pg.local_url())
            .connect_and_migrate()
            .await
            .context("connecting")?;
        eprintln!("seeding about {target} events");
        let started = Instant::now();
        let seeded = seed(&pool, target).await.context("seeding the store")?;
        eprintln!(
            "seeded {seeded} events in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        sqlx::query("vacuum analyze events")
            .execute(&pool)
            .await
            .context("vacuuming")?;
        let value = body(pool.clone(), seeded).await;
        pool.close().await;
        value
    }
    .await;
    pg.stop().await?;
    outcome
}

fn metadata() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::nil(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        command_id: "store-bench".into(),
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

    async fn flush(
        &mut self,
        conn: &mut PgConnection,
        metadata: &EventMetadata,
    ) -> anyhow::Result<u64> {
        if self.pending.is_empty() {
            return Ok(0);
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
        .await?;
        self.version += events.len() as i32;
        self.pending.clear();
        Ok(events.len() as u64)
    }
}

/// Appends about `target` events: users (some renamed or moved), products (some repriced
/// or restocked), and orders that are filled, edited, placed, then go through the saga
/// (reserve every line, then confirm and commit, or release and cancel), or stay drafts.
async fn seed(pool: &PgPool, target: u64) -> anyhow::Result<u64> {
    let mut rng = Rng(0x00c0_ffee);
    let mut conn = pool.acquire().await?;
    let metadata = metadata();
    let user_count = (target / 100).max(10) as usize;
    let product_count = (target / 2_000).clamp(20, 2_000) as usize;

    let mut appended = 0;
    let mut users: Vec<Stream<User>> = Vec::new();
    let mut products: Vec<Stream<Product>> = Vec::new();
    let mut tx = conn.begin().await?;
    for n in 0..user_count {
        let mut user = Stream::<User>::new();
        user.exec(UserCommand::Register {
            name: format!("User {n}").try_into()?,
            email: format!("user{n}@example.com").try_into()?,
        });
        if rng.chance(10) {
            user.exec(UserCommand::Rename {
                name: format!("Renamed {n}").try_into()?,
            });
        }
        appended += user.flush(&mut tx, &metadata).await?;
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
            sku: format!("SKU-{n}").try_into()?,
            name: format!("Product {n}").try_into()?,
            price: Money::new(100 + rng.below(9_900) as i64, currency),
            initial_stock: 1_000_000,
        });
        appended += product.flush(&mut tx, &metadata).await?;
        products.push(product);
    }
    tx.commit().await?;
    let product_at: HashMap<Uuid, usize> = products
        .iter()
        .enumerate()
        .map(|(at, product)| (product.id, at))
        .collect();

    let mut order_number = 0_usize;
    while appended < target {
        let mut tx = conn.begin().await?;
        let mut orders = Vec::with_capacity(ORDERS_PER_TX);
        let mut touched = BTreeSet::new();
        for _ in 0..ORDERS_PER_TX {
            order_number += 1;
            let mut order = Stream::<Order>::new();
            let user = rng.below(users.len());
            let user = &mut users[user];
            if rng.chance(1) {
                user.exec(UserCommand::ChangeEmail {
                    email: format!("moved{order_number}@example.org").try_into()?,
                });
                appended += user.flush(&mut tx, &metadata).await?;
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
                    product_name: product
                        .state
                        .name()
                        .context("a created product has a name")?
                        .to_owned(),
                    unit_price: product
                        .state
                        .price()
                        .context("a created product has a price")?,
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
                for line in &lines {
                    let at = product_at[&line.product_id];
                    products[at].exec(ProductCommand::Reserve {
                        order_id,
                        quantity: line.quantity,
                    });
                    touched.insert(at);
                }
                let confirm = rng.chance(85);
                for line in &lines {
                    let at = product_at[&line.product_id];
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
                let currency = products[at]
                    .state
                    .price()
                    .context("a created product has a price")?
                    .currency;
                products[at].exec(ProductCommand::ChangePrice {
                    price: Money::new(100 + rng.below(9_900) as i64, currency),
                });
                products[at].exec(ProductCommand::Restock { quantity: 100 });
                touched.insert(at);
            }
            orders.push(order);
        }
        for order in &mut orders {
            appended += order.flush(&mut tx, &metadata).await?;
        }
        for at in &touched {
            appended += products[*at].flush(&mut tx, &metadata).await?;
        }
        tx.commit().await?;
    }
    Ok(appended)
}
