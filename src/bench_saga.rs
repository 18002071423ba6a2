//! `orderflow bench sagas`: placed → finished latency and saga throughput.
//!
//! The bench runs its own platform in this process: a private PostgreSQL (durable default
//! settings), the relay, the saga orchestrator (intake and driver, simulated provider with
//! no latency) and a broker — librdkafka's in-process one, or `--kafka-brokers`. It drafts
//! the orders first, then places them at `--rate` per second (all at once with
//! `--rate 0`, to measure throughput) through the same write path as REST, and reads each
//! saga's end from its row. Latency is from the `OrderPlaced` event to the saga's last one
//! (`SagaConfirmed` or `SagaCancelled`), by the time each was recorded: PostgreSQL's clock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use orderflow_command::saga::gateway::{Resilient, SimulatedGateway, SimulatorArgs};
use orderflow_command::saga::{Orchestrator, SagaOptions};
use orderflow_command::write::{Decide, Meta, Writer};
use orderflow_domain::order::{Order, OrderCommand};
use orderflow_domain::product::{Product, ProductCommand, Sku};
use orderflow_domain::user::{Email, User, UserCommand};
use orderflow_domain::{Currency, Money, Name};
use orderflow_query::config::parse_duration;
use orderflow_store::DatabaseArgs;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::bench::percentile;
use crate::devdb::PrivatePostgres;

#[derive(Debug, clap::Args)]
pub(crate) struct SagaArgs {
    /// Orders placed per second; 0 places them all at once (throughput).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to place orders for (at --rate), e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Orders placed with --rate 0.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    orders: u32,
    /// Products the orders draw from (two lines each); 1 makes every order one line of a
    /// single hot product.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    products: u32,
    /// Use this Kafka instead of the in-process broker (e.g. a tansu memory-engine broker).
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// Sagas the orchestrator advances at once.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where the private PostgreSQL lives (wiped first).
    #[arg(long, default_value = "target/bench-saga-pg/data")]
    data_dir: PathBuf,
    /// Port of the private PostgreSQL.
    #[arg(long, default_value_t = 54349)]
    pg_port: u16,
}

pub(crate) async fn sagas(args: SagaArgs) -> anyhow::Result<()> {
    if args.duration.is_zero() || args.duration > Duration::from_secs(3600) {
        bail!("--duration must be longer than zero and at most an hour");
    }
    eprintln!(
        "starting a private PostgreSQL under {}",
        args.data_dir.display()
    );
    let pg = PrivatePostgres::start(&args.data_dir, args.pg_port, true)
        .await
        .context("starting the private PostgreSQL")?;
    let result = run(&args, pg.local_url()).await;
    pg.stop().await?;
    let report = result?;
    report.print(args.json);
    Ok(())
}

async fn run(args: &SagaArgs, database_url: &str) -> anyhow::Result<Report> {
    // Held to the end: the in-process broker lives as long as this binding.
    let (_mock, kafka) = crate::bench::bench_broker(args.kafka_brokers.as_deref()).await?;
    let database = DatabaseArgs::new(database_url);
    let pool = database.connect_and_migrate().await.context("connecting")?;
    let write_pool = database.connect_for_writes().await.context("connecting")?;
    let writer = Writer::new(write_pool.clone(), 100_000);

    let hot = args.products == 1;
    let orders = 1 + match args.rate {
        0 => args.orders as usize,
        rate => (f64::from(rate) * args.duration.as_secs_f64()).ceil() as usize,
    };
    eprintln!("drafting {orders} orders over {} products", args.products);
    let drafts = draft(&writer, orders, args.products, hot).await?;

    let (stop, shutdown) = watch::channel(false);
    let relay = tokio::spawn(orderflow_command::relay::run(
        pool.clone(),
        kafka.clone(),
        Default::default(),
        shutdown.clone(),
    ));
    let gateway = Resilient::new(
        SimulatedGateway::new(pool.clone(), SimulatorArgs::default()),
        Default::default(),
    );
    let options = SagaOptions {
        concurrency: args.concurrency as usize,
        ..SagaOptions::default()
    };
    let orchestrator = Orchestrator::new(Writer::new(write_pool, 100_000), gateway, options);
    let saga = tokio::spawn(orchestrator.run(kafka.clone(), shutdown));

    // Warm-up: the first order waits for the intake to join its consumer group (seconds);
    // it is placed, and its saga finished, before the measured ones, and not counted.
    let (warm_up, drafts) = drafts.split_first().context("at least one order")?;
    eprintln!("warming up (the intake joins its consumer group)");
    let warmed = async {
        place(&writer, std::slice::from_ref(warm_up), 1).await?;
        wait_for_all(&pool, 1).await
    };
    let outcome = match warmed.await {
        Ok(1) => Ok(()),
        Ok(_) => Err(anyhow::anyhow!("the warm-up saga did not finish")),
        Err(err) => Err(err),
    };
    eprintln!("placing them");
    let started = Instant::now();
    let placing = match outcome {
        Ok(()) => place(&writer, drafts, args.rate).await,
        Err(err) => Err(err),
    };
    let placed_in = started.elapsed();
    let outcome = match placing {
        Ok(()) => wait_for_all(&pool, drafts.len() + 1)
            .await
            .map(|finished| finished.saturating_sub(1)),
        Err(err) => Err(err),
    };
    let elapsed = started.elapsed();
    stop.send(true).ok();
    relay.await.context("the relay panicked")??;
    saga.await.context("the orchestrator panicked")??;
    let finished = outcome?;
    Report::gather(
        &pool,
        args,
        *warm_up,
        drafts.len(),
        placed_in,
        elapsed,
        finished,
    )
    .await
}

/// A user, the products, and `orders` draft orders (each two distinct products, or one
/// line of the hot product).
async fn draft(
    writer: &Writer,
    orders: usize,
    products: u32,
    hot: bool,
) -> anyhow::Result<Vec<Uuid>> {
    let meta = Meta {
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        actor: Some("bench".into()),
        actor_roles: Vec::new(),
        owner: None,
        expected_version: None,
        dedupe: None,
    };
    let run = Uuid::now_v7().simple().to_string();
    let user = Uuid::now_v7();
    let register = UserCommand::Register {
        name: Name::parse("Bench User")?,
        email: Email::parse(&format!("bench-{run}@example.com"))?,
    };
    writer
        .execute(&meta, &Decide::<User>::new(user, register))
        .await?;
    let mut catalogue = Vec::new();
    for index in 0..products {
        let id = Uuid::now_v7();
        let price = Money::new(100 + i64::from(index), Currency::EUR);
        let create = ProductCommand::Create {
            sku: Sku::parse(&format!("S{}-{index}", &run[..12]))?,
            name: Name::parse(&format!("Bench product {index}"))?,
            price,
            initial_stock: 100_000_000,
        };
        writer
            .execute(&meta, &Decide::<Product>::new(id, create))
            .await?;
        catalogue.push((id, price));
    }
    let lines = if hot { 1 } else { 2.min(catalogue.len()) };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let drafted = futures::future::try_join_all((0..16).map(|_| async {
        let mut mine = Vec::new();
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if index >= orders {
                return anyhow::Ok(mine);
            }
            let order = Uuid::now_v7();
            let create = OrderCommand::Create {
                user_id: user,
                currency: Currency::EUR,
            };
            writer
                .execute(&meta, &Decide::<Order>::new(order, create))
                .await?;
            for line in 0..lines {
                let (product_id, unit_price) = catalogue[(index + line) % catalogue.len()];
                let add = OrderCommand::AddItem {
                    product_id,
                    product_name: "Bench product".into(),
                    unit_price,
                    quantity: 1,
                };
                writer
                    .execute(&meta, &Decide::<Order>::existing(order, add))
                    .await?;
            }
            mine.push(order);
        }
    }))
    .await?;
    Ok(drafted.into_iter().flatten().collect())
}

/// Places the drafts at `rate` per second (0: as fast as 32 workers go).
async fn place(writer: &Writer, drafts: &[Uuid], rate: u32) -> anyhow::Result<()> {
    let meta = Meta {
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        actor: Some("bench".into()),
        actor_roles: Vec::new(),
        owner: None,
        expected_version: None,
        dedupe: None,
    };
    if rate == 0 {
        let next = std::sync::atomic::AtomicUsize::new(0);
        futures::future::try_join_all((0..32).map(|_| async {
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(order) = drafts.get(index) else {
                    return anyhow::Ok(());
                };
                writer
                    .execute(
                        &meta,
                        &Decide::<Order>::existing(*order, OrderCommand::Place),
                    )
                    .await?;
            }
        }))
        .await?;
        return Ok(());
    }
    let writer = Arc::new(writer.clone());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut placing = tokio::task::JoinSet::new();
    for order in drafts {
        tick.tick().await;
        let (writer, meta, order) = (writer.clone(), meta.clone(), *order);
        placing.spawn(async move {
            writer
                .execute(
                    &meta,
                    &Decide::<Order>::existing(order, OrderCommand::Place),
                )
                .await
        });
    }
    while let Some(placed) = placing.join_next().await {
        placed.context("placing panicked")??;
    }
    Ok(())
}

/// Waits until `orders` sagas have finished (or nothing has moved for 30 s).
async fn wait_for_all(pool: &PgPool, orders: usize) -> anyhow::Result<usize> {
    let mut last = (0, Instant::now());
    loop {
        let finished: i64 =
            sqlx::query_scalar("select count(*) from sagas where finished_at is not null")
                .fetch_one(pool)
                .await?;
        let finished = finished as usize;
        if finished >= orders {
            return Ok(finished);
        }
        if finished != last.0 {
            last = (finished, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            eprintln!("no saga finished for 30 s; {finished} of {orders} done");
            return Ok(finished);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A saga's state, when its last event was recorded, when its order was placed, when the
/// intake took it.
type SagaTimes = (String, Option<DateTime<Utc>>, DateTime<Utc>, DateTime<Utc>);

struct Report {
    rate: u32,
    products: u32,
    broker: String,
    orders: usize,
    finished: usize,
    states: HashMap<String, i64>,
    placed_seconds: f64,
    seconds: f64,
    /// Placed → finished, sorted, milliseconds.
    latencies: Vec<f64>,
    /// Placed → its saga's row created by the intake (through the relay and the broker),
    /// sorted, milliseconds.
    intake: Vec<f64>,
}

impl Report {
    async fn gather(
        pool: &PgPool,
        args: &SagaArgs,
        warm_up: Uuid,
        orders: usize,
        placed_in: Duration,
        elapsed: Duration,
        finished: usize,
    ) -> anyhow::Result<Self> {
        let rows: Vec<SagaTimes> = sqlx::query_as(
            "select s.state, f.recorded_at, e.recorded_at, s.created_at from sagas s \
             join events e on e.stream_id = s.order_id and e.event_type = 'OrderPlaced' \
             left join events f on f.stream_id = s.saga_id \
             and f.event_type in ('SagaConfirmed', 'SagaCancelled') \
             where s.order_id <> $1",
        )
        .bind(warm_up)
        .fetch_all(pool)
        .await?;
        let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let mut states = HashMap::new();
        let mut latencies = Vec::new();
        let mut intake = Vec::new();
        for (state, finished_at, placed_at, picked_up) in rows {
            *states.entry(state).or_insert(0) += 1;
            intake.push(ms(picked_up - placed_at));
            if let Some(finished_at) = finished_at {
                latencies.push(ms(finished_at - placed_at));
            }
        }
        intake.sort_by(f64::total_cmp);
        latencies.sort_by(f64::total_cmp);
        Ok(Self {
            rate: args.rate,
            products: args.products,
            broker: args
                .kafka_brokers
                .clone()
                .unwrap_or_else(|| "in-process".into()),
            orders,
            finished,
            states,
            placed_seconds: placed_in.as_secs_f64(),
            seconds: elapsed.as_secs_f64(),
            latencies,
            intake,
        })
    }

    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).unwrap_or(0.0)
    }

    fn print(&self, as_json: bool) {
        let throughput = self.finished as f64 / self.seconds;
        let (p50, p90, p99) = (
            self.percentile(50.0),
            self.percentile(90.0),
            self.percentile(99.0),
        );
        let max = self.latencies.last().copied().unwrap_or(0.0);
        let (i50, i99) = (
            percentile(&self.intake, 50.0).unwrap_or(0.0),
            percentile(&self.intake, 99.0).unwrap_or(0.0),
        );
        if as_json {
            println!(
                "{}",
                json!({
                    "rate": self.rate, "products": self.products, "broker": self.broker,
                    "orders": self.orders, "finished": self.finished, "states": self.states,
                    "placed_seconds": self.placed_seconds, "seconds": self.seconds,
                    "sagas_per_second": throughput,
                    "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                    "intake_p50_ms": i50, "intake_p99_ms": i99,
                })
            );
            return;
        }
        let rate = match self.rate {
            0 => "all at once".to_owned(),
            rate => format!("{rate}/s"),
        };
        println!(
            "sagas: {} orders placed {rate} over {} product(s), broker {}",
            self.orders, self.products, self.broker
        );
        println!(
            "finished {} in {:.1}s ({:.0} sagas/s; placing took {:.1}s); states {:?}",
            self.finished, self.seconds, throughput, self.placed_seconds, self.states
        );
        println!("placed → finished ms: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  max {max:.1}");
        println!("of which placed → picked up by the intake (relay, broker, consumer) ms: p50 {i50:.1}  p99 {i99:.1}");
    }
}
