//! `orderflow bench freshness` and `orderflow bench graphql`: the read side's figures.
//!
//! Both run against a platform: `--command-url`/`--query-url` of running services, or,
//! without them, `orderflow dev` started as a child process on a private PostgreSQL (wiped
//! first; durable default settings) with the in-process broker or `--kafka-brokers`.
//!
//! - freshness: commands at `--rate` per second, open loop (a slow answer does not slow the
//!   schedule), on orders (create, add three products, change a quantity; orders are not
//!   placed, so the saga stays idle). Each 2xx is followed by
//!   `order(id, minVersion: <its version>)` through GraphQL; freshness is the time from the
//!   2xx to that answer: what a client waits to see its own change.
//! - graphql: `--connections` clients, each with one request in flight, ask for a composed
//!   order (the order, its user, its items with their products) again and again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use orderflow_query::config::parse_duration;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::bench::{percentile, wait_ready, GeneratorCpu};

/// Where the platform is: running services, or `orderflow dev` started by the bench.
#[derive(Debug, clap::Args)]
pub(crate) struct PlatformArgs {
    /// Base URL of a running command service (with --query-url). Without both, the bench
    /// starts `orderflow dev` of its own.
    #[arg(long, requires = "query_url")]
    command_url: Option<String>,
    /// Base URL of a running query service (with --command-url).
    #[arg(long, requires = "command_url")]
    query_url: Option<String>,
    /// Kafka for the platform the bench starts (e.g. a tansu memory-engine broker);
    /// without it, `orderflow dev`'s in-process broker.
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// Where the private PostgreSQL of the platform the bench starts lives (wiped first).
    #[arg(long, default_value = "target/bench-reads-pg/data")]
    data_dir: PathBuf,
    /// Port of that private PostgreSQL.
    #[arg(long, default_value_t = 54359)]
    pg_port: u16,
    /// Admin token for --command-url and --query-url (the platform the bench starts gets
    /// one of its own). Load from one subject exceeds any sane rate limit: run those
    /// services with --rate-limit 0.
    #[arg(long, env = "ORDERFLOW_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FreshnessArgs {
    /// Commands per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// How long to measure (after a warm-up of a tenth of it), e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Commands whose freshness is measured, per second (spread evenly over the commands):
    /// each measurement is a GraphQL request, load of its own on the machine measured.
    /// 0 measures every command.
    #[arg(long, default_value_t = 100)]
    probes: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    platform: PlatformArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct GraphqlArgs {
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// How long to measure (after a warm-up of a tenth of it), e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Orders the clients ask for, round robin (each with a user and three products).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    orders: u32,
    /// Send the document's SHA-256 instead of the document (Apollo's persisted queries),
    /// after one request that registers it.
    #[arg(long)]
    persisted: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    platform: PlatformArgs,
}

/// The composed order the graphql bench asks for.
pub(crate) const COMPOSED_ORDER: &str = "query Composed($id: ID!) { order(id: $id) { id status \
    version total { amountMinor currency } user { id name email } items { quantity \
    lineTotal { amountMinor currency } product { id sku name onHand price { amountMinor \
    currency } } } } }";

/// A running platform: URLs, and the child when the bench started it.
struct Platform {
    command: String,
    query: String,
    /// An admin's, when there is one.
    token: Option<String>,
    child: Option<DevChild>,
}

impl Platform {
    async fn start(args: &PlatformArgs) -> anyhow::Result<Self> {
        if let (Some(command), Some(query)) = (&args.command_url, &args.query_url) {
            return Ok(Self {
                command: command.trim_end_matches('/').to_owned(),
                query: query.trim_end_matches('/').to_owned(),
                token: args.token.clone(),
                child: None,
            });
        }
        let child = DevChild::start(args).await?;
        Ok(Self {
            command: child.command.clone(),
            query: child.query.clone(),
            token: Some(child.token.clone()),
            child: Some(child),
        })
    }

    async fn stop(self) {
        if let Some(child) = self.child {
            child.stop().await;
        }
    }
}

/// `orderflow dev` as a child process.
struct DevChild {
    process: Child,
    command: String,
    query: String,
    token: String,
}

impl DevChild {
    async fn start(args: &PlatformArgs) -> anyhow::Result<Self> {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map(|addr| addr.port())
                .context("finding a free port")
        };
        let (command_port, query_port) = (free_port()?, free_port()?);
        let exe = std::env::current_exe().context("locating the orderflow binary")?;
        let mut dev = Command::new(exe);
        dev.arg("dev")
            .arg("--fresh")
            .arg("--data-dir")
            .arg(absolute(&args.data_dir)?)
            .arg("--pg-port")
            .arg(args.pg_port.to_string())
            .arg("--command-listen")
            .arg(format!("127.0.0.1:{command_port}"))
            .arg("--query-listen")
            .arg(format!("127.0.0.1:{query_port}"))
            .arg("--topic-prefix")
            .arg(format!("bench{}", Uuid::now_v7().simple()))
            // One subject makes all the load.
            .arg("--rate-limit")
            .arg("0")
            .env_remove("DATABASE_URL")
            .env_remove("KAFKA_BROKERS")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(brokers) = &args.kafka_brokers {
            dev.arg("--kafka-brokers").arg(brokers);
        }
        eprintln!(
            "starting orderflow dev (private PostgreSQL under {})",
            args.data_dir.display()
        );
        let mut process = dev.spawn().context("starting orderflow dev")?;
        let command = format!("http://127.0.0.1:{command_port}");
        let query = format!("http://127.0.0.1:{query_port}");
        for url in [&command, &query] {
            wait_ready(&mut process, "orderflow dev", url, Duration::from_secs(120)).await?;
        }
        eprintln!("platform ready: commands {command}, queries {query}");
        // `orderflow dev` keeps its secret beside the data directory.
        let data_dir = absolute(&args.data_dir)?;
        let secret_file = data_dir
            .parent()
            .context("the data directory has no parent")?
            .join("auth-secret");
        let secret = std::fs::read_to_string(&secret_file)
            .with_context(|| format!("reading {}", secret_file.display()))?;
        Ok(Self {
            process,
            command,
            query,
            token: crate::bench::admin_token(secret.trim())?,
        })
    }

    /// SIGTERM, so that dev stops its private PostgreSQL; killed if it takes too long.
    async fn stop(mut self) {
        if let Some(pid) = self.process.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(60), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.start_kill();
            let _ = self.process.wait().await;
        }
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

fn check_duration(duration: Duration) -> anyhow::Result<()> {
    if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
        bail!("--duration must be longer than zero and at most a day");
    }
    Ok(())
}

/// A command's 2xx answer.
#[derive(Debug, Clone, Copy)]
struct Answer {
    stream_id: Uuid,
    version: i64,
}

/// Send a command; a non-2xx answer is an error carrying its body.
async fn command(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> anyhow::Result<Answer> {
    let response = client
        .request(method, url)
        .json(body)
        .send()
        .await
        .with_context(|| url.to_owned())?;
    let status = response.status();
    let text = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{url}: {status}: {text}");
    }
    let value: Value = serde_json::from_str(&text).context("a JSON answer")?;
    let stream_id = value["streamId"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("no streamId in {text}"))?;
    let version = value["version"]
        .as_i64()
        .with_context(|| format!("no version in {text}"))?;
    Ok(Answer { stream_id, version })
}

/// POST a GraphQL request; the answer's `data`, or an error with its `errors`.
async fn graphql(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .context("POST /graphql")?;
    let mut value: Value = response.json().await.context("a GraphQL answer")?;
    if let Some(errors) = value.get("errors") {
        bail!("GraphQL errors: {errors}");
    }
    Ok(value["data"].take())
}

/// Wait until the pipeline carries a command to the views (consumer groups take seconds
/// to join), so that the warm-up measures a running platform.
async fn ready(
    client: &reqwest::Client,
    command_url: &str,
    graphql_url: &str,
    user: Uuid,
) -> anyhow::Result<()> {
    eprintln!("waiting until the pipeline is live");
    let order = command(
        client,
        reqwest::Method::POST,
        &format!("{command_url}/api/orders"),
        &json!({"userId": user, "currency": "EUR"}),
    )
    .await?;
    visible(client, graphql_url, order).await
}

/// Wait (up to two minutes) until the order view shows what `answer` answered.
async fn visible(
    client: &reqwest::Client,
    graphql_url: &str,
    answer: Answer,
) -> anyhow::Result<()> {
    let probe = json!({
        "query": "query Fresh($id: ID!, $v: Int!) { order(id: $id, minVersion: $v) { version } }",
        "variables": {"id": answer.stream_id, "v": answer.version},
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match graphql(client, graphql_url, &probe).await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                return Err(err.context("the pipeline did not come up within two minutes"))
            }
            Err(_) => {}
        }
    }
}

/// A user and `count` products to order from.
async fn catalogue(
    client: &reqwest::Client,
    command_url: &str,
    count: usize,
) -> anyhow::Result<(Uuid, Vec<Uuid>)> {
    let run = Uuid::now_v7().simple().to_string();
    let post = reqwest::Method::POST;
    let user = command(
        client,
        post.clone(),
        &format!("{command_url}/api/users"),
        &json!({"name": "Bench Reader", "email": format!("reader-{run}@example.com")}),
    )
    .await
    .context("creating the bench user")?
    .stream_id;
    let mut products = Vec::with_capacity(count);
    for index in 0..count {
        let body = json!({
            "sku": format!("R{}-{index}", &run[..12]),
            "name": format!("Bench product {index}"),
            "price": {"amountMinor": 250 + index as i64, "currency": "EUR"},
            "initialStock": 1_000_000,
        });
        let product = command(
            client,
            post.clone(),
            &format!("{command_url}/api/products"),
            &body,
        )
        .await
        .context("creating the bench products")?;
        products.push(product.stream_id);
    }
    Ok((user, products))
}

pub(crate) async fn freshness(args: FreshnessArgs) -> anyhow::Result<()> {
    check_duration(args.duration)?;
    let platform = Platform::start(&args.platform).await?;
    let result = measure_freshness(&args, &platform).await;
    platform.stop().await;
    let report = result?;
    report.print(args.json);
    Ok(())
}

/// An order being worked on: the commands it has had.
#[derive(Debug, Clone, Copy)]
struct Session {
    order: Uuid,
    step: usize,
}

/// Commands per order: create, three adds, a quantity change.
const STEPS: usize = 5;

struct Shared {
    client: reqwest::Client,
    command: String,
    graphql: String,
    user: Uuid,
    products: Vec<Uuid>,
}

/// One counted command: its own latency and, when probed, its freshness, in microseconds.
enum Sample {
    Command(u64),
    Fresh { command: u64, fresh: u64 },
    Failed(String),
}

async fn measure_freshness(
    args: &FreshnessArgs,
    platform: &Platform,
) -> anyhow::Result<FreshnessReport> {
    let client = crate::bench::with_token(platform.token.as_deref())?
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build()
        .context("building the HTTP client")?;
    let (user, products) = catalogue(&client, &platform.command, 10).await?;
    ready(
        &client,
        &platform.command,
        &format!("{}/graphql", platform.query),
        user,
    )
    .await?;
    let shared = Arc::new(Shared {
        client,
        command: platform.command.clone(),
        graphql: format!("{}/graphql", platform.query),
        user,
        products,
    });
    let warm_up = args.duration / 10;
    let start = tokio::time::Instant::now();
    let measure_from = start + warm_up;
    let end = measure_from + args.duration;
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Session>();
    // Each counted command's sample, and whether its command was answered within the window.
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<(Sample, bool)>();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let probe_every = match args.probes {
        0 => 1,
        probes => u64::from((args.rate / probes).max(1)),
    };
    let mut scheduled = 0u64;
    eprintln!(
        "{} commands/s for {:?} after a warm-up of {warm_up:?}",
        args.rate, args.duration
    );
    let generator = GeneratorCpu::measure(measure_from, end);
    loop {
        let now = ticks.tick().await;
        if now >= end {
            break;
        }
        let counted = now >= measure_from;
        sent += u64::from(counted);
        scheduled += 1;
        let session = ready_rx.try_recv().ok();
        let samples = counted.then(|| (samples_tx.clone(), end.into_std()));
        let probe = scheduled.is_multiple_of(probe_every);
        tokio::spawn(step(
            shared.clone(),
            session,
            ready_tx.clone(),
            samples,
            probe,
        ));
    }
    drop(samples_tx);
    let mut report = FreshnessReport {
        rate: args.rate,
        seconds: args.duration.as_secs_f64(),
        sent,
        commands: Vec::new(),
        fresh: Vec::new(),
        errors: 0,
        first_error: None,
        answered: 0,
        generator: None,
    };
    // Every task still running holds a sender; they end within the client's timeout.
    while let Some((sample, in_window)) = samples_rx.recv().await {
        report.answered += u64::from(in_window);
        match sample {
            Sample::Command(command) => report.commands.push(command),
            Sample::Fresh { command, fresh } => {
                report.commands.push(command);
                report.fresh.push(fresh);
            }
            Sample::Failed(error) => {
                report.errors += 1;
                report.first_error.get_or_insert(error);
            }
        }
    }
    report.commands.sort_unstable();
    report.fresh.sort_unstable();
    report.generator = generator.await.ok().flatten();
    Ok(report)
}

/// The session's next command (a new order without one), then its freshness probe.
async fn step(
    shared: Arc<Shared>,
    session: Option<Session>,
    ready: mpsc::UnboundedSender<Session>,
    samples: Option<(mpsc::UnboundedSender<(Sample, bool)>, Instant)>,
    probe: bool,
) {
    let base = &shared.command;
    let started = Instant::now();
    let (method, url, body) = match session {
        None => (
            reqwest::Method::POST,
            format!("{base}/api/orders"),
            json!({"userId": shared.user, "currency": "EUR"}),
        ),
        Some(Session { order, step }) if step < 4 => {
            // Three distinct products per order.
            let product =
                shared.products[(order.as_u128() as usize + step) % shared.products.len()];
            (
                reqwest::Method::POST,
                format!("{base}/api/orders/{order}/items"),
                json!({"productId": product, "quantity": 1}),
            )
        }
        Some(Session { order, step }) => {
            let product = shared.products[(order.as_u128() as usize + 1) % shared.products.len()];
            (
                reqwest::Method::PATCH,
                format!("{base}/api/orders/{order}/items/{product}"),
                json!({"quantity": 1 + step}),
            )
        }
    };
    let answer = command(&shared.client, method, &url, &body).await;
    let answered = Instant::now();
    let sample = match answer {
        Ok(answer) => {
            let next = session.map_or(1, |session| session.step + 1);
            if next < STEPS {
                let _ = ready.send(Session {
                    order: answer.stream_id,
                    step: next,
                });
            }
            let command = (answered - started).as_micros() as u64;
            if !probe {
                Sample::Command(command)
            } else {
                let probe = json!({
                    "query": "query Fresh($id: ID!, $v: Int!) { order(id: $id, minVersion: $v) { version } }",
                    "variables": {"id": answer.stream_id, "v": answer.version},
                });
                match graphql(&shared.client, &shared.graphql, &probe).await {
                    Ok(data) if data["order"]["version"].as_i64() >= Some(answer.version) => {
                        Sample::Fresh {
                            command,
                            fresh: answered.elapsed().as_micros() as u64,
                        }
                    }
                    Ok(data) => Sample::Failed(format!("the view answered {data}")),
                    Err(err) => Sample::Failed(format!("{err:#}")),
                }
            }
        }
        Err(err) => Sample::Failed(format!("{err:#}")),
    };
    if let Some((samples, end)) = samples {
        let _ = samples.send((sample, answered < end));
    }
}

struct FreshnessReport {
    rate: u32,
    seconds: f64,
    sent: u64,
    /// Sorted, in microseconds.
    commands: Vec<u64>,
    /// Sorted, in microseconds.
    fresh: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    /// Counted commands answered (2xx or not) before the window ended.
    answered: u64,
    generator: Option<GeneratorCpu>,
}

/// p50, p90, p99 and max of sorted microseconds, in milliseconds.
fn summary(sorted: &[u64]) -> [f64; 4] {
    let ms = |micros: Option<u64>| micros.map_or(0.0, |m| m as f64 / 1000.0);
    [
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 90.0)),
        ms(percentile(sorted, 99.0)),
        ms(sorted.last().copied()),
    ]
}

impl FreshnessReport {
    fn print(&self, as_json: bool) {
        let [p50, p90, p99, max] = summary(&self.fresh);
        let [c50, _, c99, _] = summary(&self.commands);
        // Commands answered (2xx or not) within the measured window, per second.
        let achieved = self.answered as f64 / self.seconds;
        if as_json {
            let value = json!({
                "rate": self.rate, "answered_per_second": achieved, "seconds": self.seconds,
                "commands": self.sent, "measured": self.fresh.len(), "errors": self.errors,
                "first_error": self.first_error,
                "fresh_p50_ms": p50, "fresh_p90_ms": p90, "fresh_p99_ms": p99, "fresh_max_ms": max,
                "command_p50_ms": c50, "command_p99_ms": c99,
                "generator_cpu": self.generator.map(|cpu| cpu.json()),
            });
            println!("{value}");
            return;
        }
        println!(
            "freshness: {} commands/s asked, {achieved:.0}/s answered over {:.1}s: {} commands, {} measured, {} errors",
            self.rate, self.seconds, self.sent, self.fresh.len(), self.errors
        );
        println!(
            "2xx → visible through GraphQL ms: p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  max {max:.1}"
        );
        println!("command latency ms: p50 {c50:.1}  p99 {c99:.1}");
        if let Some(generator) = &self.generator {
            generator.print();
        }
        if let Some(error) = &self.first_error {
            println!("first error: {error}");
        }
    }
}

pub(crate) async fn graphql_bench(args: GraphqlArgs) -> anyhow::Result<()> {
    check_duration(args.duration)?;
    let platform = Platform::start(&args.platform).await?;
    let result = measure_graphql(&args, &platform).await;
    platform.stop().await;
    let report = result?;
    report.print(args.json);
    Ok(())
}

async fn measure_graphql(args: &GraphqlArgs, platform: &Platform) -> anyhow::Result<GraphqlReport> {
    let client = crate::bench::with_token(platform.token.as_deref())?
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.connections as usize)
        .build()
        .context("building the HTTP client")?;
    let (user, products) = catalogue(&client, &platform.command, 30).await?;
    eprintln!("creating {} orders of three products each", args.orders);
    let mut orders = Vec::with_capacity(args.orders as usize);
    let mut last = None;
    for index in 0..args.orders as usize {
        let post = reqwest::Method::POST;
        let base = &platform.command;
        let order = command(
            &client,
            post.clone(),
            &format!("{base}/api/orders"),
            &json!({"userId": user, "currency": "EUR"}),
        )
        .await?
        .stream_id;
        for line in 0..3 {
            let product = products[(index + line * 7) % products.len()];
            last = Some(
                command(
                    &client,
                    post.clone(),
                    &format!("{base}/api/orders/{order}/items"),
                    &json!({"productId": product, "quantity": 1 + line}),
                )
                .await?,
            );
        }
        orders.push(order);
    }
    let graphql_url = format!("{}/graphql", platform.query);
    // Wait until the views have the last order complete.
    if let Some(last) = last {
        visible(&client, &graphql_url, last).await?;
    }
    // One request first: a document the service refuses ends the bench here.
    graphql(
        &client,
        &graphql_url,
        &json!({"query": COMPOSED_ORDER, "variables": {"id": orders[0]}}),
    )
    .await
    .context("the composed order query")?;
    let hash = sha256_hex(COMPOSED_ORDER);
    if args.persisted {
        // Registers the document under its hash.
        graphql(
            &client,
            &graphql_url,
            &json!({"query": COMPOSED_ORDER, "variables": {"id": orders[0]},
                    "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}}),
        )
        .await?;
    }
    let shared = Arc::new(GraphqlShared {
        client,
        url: graphql_url,
        orders,
        persisted: args.persisted.then_some(hash),
    });
    let warm_up = args.duration / 10;
    let start = Instant::now();
    let measure_from = start + warm_up;
    let end = measure_from + args.duration;
    eprintln!(
        "{} connections for {:?} after a warm-up of {warm_up:?}",
        args.connections, args.duration
    );
    let generator = GeneratorCpu::measure(measure_from.into(), end.into());
    let mut clients = tokio::task::JoinSet::new();
    for seed in 0..args.connections as usize {
        clients.spawn(graphql_client(shared.clone(), seed, measure_from, end));
    }
    let mut report = GraphqlReport {
        connections: args.connections,
        persisted: args.persisted,
        seconds: args.duration.as_secs_f64(),
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        generator: None,
    };
    while let Some(joined) = clients.join_next().await {
        let (latencies, errors, first_error) = joined.context("a bench client panicked")?;
        report.latencies.extend(latencies);
        report.errors += errors;
        if report.first_error.is_none() {
            report.first_error = first_error;
        }
    }
    report.latencies.sort_unstable();
    report.generator = generator.await.ok().flatten();
    Ok(report)
}

struct GraphqlShared {
    client: reqwest::Client,
    url: String,
    orders: Vec<Uuid>,
    /// The document's hash, sent instead of it.
    persisted: Option<String>,
}

async fn graphql_client(
    shared: Arc<GraphqlShared>,
    seed: usize,
    measure_from: Instant,
    end: Instant,
) -> (Vec<u64>, u64, Option<String>) {
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
    let mut next = seed;
    while Instant::now() < end {
        let order = shared.orders[next % shared.orders.len()];
        next += 7;
        let body = match &shared.persisted {
            Some(hash) => json!({"variables": {"id": order},
                "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}}),
            None => json!({"query": COMPOSED_ORDER, "variables": {"id": order}}),
        };
        let started = Instant::now();
        let answer = graphql(&shared.client, &shared.url, &body).await;
        if started < measure_from || started >= end {
            continue;
        }
        match answer {
            Ok(data)
                if data["order"]["items"].as_array().is_some_and(|items| {
                    items.len() == 3 && items.iter().all(|item| !item["product"].is_null())
                }) && !data["order"]["user"].is_null() =>
            {
                latencies.push(started.elapsed().as_micros() as u64);
            }
            Ok(data) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("an incomplete order: {data}"));
            }
            Err(err) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    (latencies, errors, first_error)
}

struct GraphqlReport {
    connections: u32,
    persisted: bool,
    seconds: f64,
    /// Sorted, in microseconds.
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    generator: Option<GeneratorCpu>,
}

impl GraphqlReport {
    fn print(&self, as_json: bool) {
        let [p50, p90, p99, max] = summary(&self.latencies);
        let throughput = self.latencies.len() as f64 / self.seconds;
        if as_json {
            let value = json!({
                "connections": self.connections, "persisted": self.persisted,
                "seconds": self.seconds, "requests": self.latencies.len(),
                "requests_per_second": throughput, "errors": self.errors,
                "first_error": self.first_error,
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                "generator_cpu": self.generator.map(|cpu| cpu.json()),
            });
            println!("{value}");
            return;
        }
        let how = if self.persisted {
            "persisted (hash only)"
        } else {
            "full document"
        };
        println!(
            "graphql: composed order, {} connections, {how}, {:.1}s: {} answers, {throughput:.0}/s, {} errors",
            self.connections,
            self.seconds,
            self.latencies.len(),
            self.errors
        );
        println!("latency ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}");
        if let Some(generator) = &self.generator {
            generator.print();
        }
        if let Some(error) = &self.first_error {
            println!("first error: {error}");
        }
    }
}

/// The SHA-256 of `text` in lower-case hex (Apollo's persisted-query hash).
fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
