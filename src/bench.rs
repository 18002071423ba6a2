//! `orderflow bench`: load generators that print figures.
//!
//! `bench sagas` lives in [`crate::bench_saga`]; `bench freshness` and `bench graphql` in
//! [`crate::bench_reads`].
//!
//! `bench commands` drives the write path over HTTP with the order mix (create → add ×3 →
//! place) from N concurrent clients and prints throughput and latency percentiles. Without
//! `--target` it starts its own platform: a private PostgreSQL with default (durable)
//! settings and `orderflow command` as a child process, whose CPU time (and PostgreSQL's)
//! per command it also reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use orderflow_kafka::KafkaArgs;
use orderflow_query::config::parse_duration;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::devdb::PrivatePostgres;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Bench {
    /// Command throughput and latency: each client creates an order, adds three products
    /// and places it, again and again.
    Commands(CommandsArgs),
    /// Saga throughput and placed → finished latency, on a platform the bench runs itself.
    Sagas(crate::bench_saga::SagaArgs),
    /// Read-your-writes latency: from a command's 2xx to its change visible through
    /// GraphQL, at a fixed command rate.
    Freshness(crate::bench_reads::FreshnessArgs),
    /// Composed order queries per second and their latency, from N connections.
    Graphql(crate::bench_reads::GraphqlArgs),
    /// Events per second the relay publishes (commit to the broker's acknowledgement), and
    /// its drain after a broker outage, on a seeded store.
    Relay(crate::bench_store::RelayArgs),
    /// Events per second a replay folds into every projection, on a seeded store.
    Replay(crate::bench_store::ReplayArgs),
    /// The ceiling: pgbench's durable one-event insert (scripts/bench/one-event.sql).
    Ceiling(crate::bench_all::CeilingArgs),
    /// Every scenario in turn, then one table: each figure next to the ceiling measured in
    /// the same run, and its goal.
    All(crate::bench_all::AllArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct CommandsArgs {
    /// Base URL of a running command service (e.g. http://127.0.0.1:8081). Without it the
    /// bench starts a private PostgreSQL and `orderflow command` of its own.
    #[arg(long)]
    target: Option<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// How long to measure (after a warm-up of a tenth of it), e.g. 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Products the orders draw from (created by the bench).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(3..=100_000))]
    products: u32,
    /// At most this many commands per second over all clients (0: as fast as they go), for
    /// a target that cannot take more (e.g. a slow broker behind it).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the private PostgreSQL lives when the bench starts its own (wiped first).
    #[arg(long, default_value = "target/bench-pg/data")]
    data_dir: PathBuf,
    /// Port of the private PostgreSQL the bench starts.
    #[arg(long, default_value_t = 54339)]
    pg_port: u16,
    /// Admin token for --target (the bench's own service gets a secret and a token of its
    /// own). Load from one subject exceeds any sane rate limit: run the target with
    /// --rate-limit 0.
    #[arg(long, env = "ORDERFLOW_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub(crate) async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Commands(args) => commands(args).await,
        Bench::Sagas(args) => crate::bench_saga::sagas(args).await,
        Bench::Freshness(args) => crate::bench_reads::freshness(args).await,
        Bench::Graphql(args) => crate::bench_reads::graphql_bench(args).await,
        Bench::Relay(args) => crate::bench_store::relay_bench(args).await,
        Bench::Replay(args) => crate::bench_store::replay_bench(args).await,
        Bench::Ceiling(args) => crate::bench_all::ceiling(args).await,
        Bench::All(args) => crate::bench_all::all(args).await,
    }
}

async fn commands(args: CommandsArgs) -> anyhow::Result<()> {
    if args.duration.is_zero() || args.duration > Duration::from_secs(24 * 3600) {
        bail!("--duration must be longer than zero and at most a day");
    }
    let Some(target) = args.target.clone() else {
        let platform = OwnPlatform::start(&args.data_dir, args.pg_port).await?;
        let result = drive(&args, &platform.url, Some(&platform.token), Some(&platform)).await;
        platform.stop().await?;
        let report = result?;
        report.print(args.json);
        return Ok(());
    };
    let report = drive(
        &args,
        target.trim_end_matches('/'),
        args.token.as_deref(),
        None,
    )
    .await?;
    report.print(args.json);
    Ok(())
}

struct Report {
    concurrency: u32,
    seconds: f64,
    commands: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    first_error: Option<String>,
    /// Sorted, in microseconds.
    latencies: Vec<u64>,
    server_cpu_ms: Option<u64>,
    postgres_cpu_ms: Option<u64>,
    generator: Option<GeneratorCpu>,
}

impl Report {
    fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).map_or(0.0, |micros| micros as f64 / 1000.0)
    }

    fn throughput(&self) -> f64 {
        self.commands as f64 / self.seconds
    }

    fn per_command(&self, cpu_ms: Option<u64>) -> Option<f64> {
        cpu_ms.map(|ms| ms as f64 / self.commands.max(1) as f64)
    }

    fn print(&self, as_json: bool) {
        let (p50, p90, p99, max) = (
            self.percentile_ms(50.0),
            self.percentile_ms(90.0),
            self.percentile_ms(99.0),
            self.latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
        if as_json {
            let value = json!({
                "concurrency": self.concurrency,
                "seconds": self.seconds,
                "commands": self.commands,
                "throughput": self.throughput(),
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                "errors": self.errors,
                "error_kinds": self.error_kinds,
                "first_error": self.first_error,
                "server_cpu_ms_per_command": self.per_command(self.server_cpu_ms),
                "postgres_cpu_ms_per_command": self.per_command(self.postgres_cpu_ms),
                "generator_cpu": self.generator.map(|cpu| cpu.json()),
            });
            println!("{value}");
            return;
        }
        println!(
            "commands: {} clients, {:.1}s: {} commands, {:.0} commands/s, {} errors",
            self.concurrency,
            self.seconds,
            self.commands,
            self.throughput(),
            self.errors
        );
        println!("latency ms (successful commands): p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}");
        if let (Some(server), Some(pg)) = (
            self.per_command(self.server_cpu_ms),
            self.per_command(self.postgres_cpu_ms),
        ) {
            println!("cpu ms per command: command service {server:.3}, PostgreSQL {pg:.3} (this load generator runs on the same machine)");
        }
        if let Some(generator) = &self.generator {
            generator.print();
        }
        if !self.error_kinds.is_empty() {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(kind, count)| format!("{kind}: {count}"))
                .collect();
            println!("errors by kind: {}", kinds.join(", "));
        }
        if let Some(error) = &self.first_error {
            println!("first error: {error}");
        }
    }
}

/// Set up a user and products, then run the clients: a warm-up, then the measured window,
/// over which the CPU time of `platform` (when the bench started it) is measured too.
async fn drive(
    args: &CommandsArgs,
    base: &str,
    token: Option<&str>,
    platform: Option<&OwnPlatform>,
) -> anyhow::Result<Report> {
    let client = with_token(token)?
        .pool_max_idle_per_host(args.concurrency as usize)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let run = Uuid::now_v7().simple().to_string();
    let user = post(
        &client,
        &format!("{base}/api/users"),
        &json!({"name": "Bench User", "email": format!("bench-{run}@example.com")}),
    )
    .await
    .context("creating the bench user")?;
    let mut products = Vec::with_capacity(args.products as usize);
    for index in 0..args.products {
        let body = json!({
            "sku": format!("B{}-{index}", &run[..12]),
            "name": format!("Bench product {index}"),
            "price": {"amountMinor": 100 + index as i64, "currency": "EUR"},
            "initialStock": 1_000_000,
        });
        let product = post(&client, &format!("{base}/api/products"), &body)
            .await
            .context("creating the bench products")?;
        products.push(product);
    }
    let shared = Arc::new(Shared {
        client,
        base: base.to_owned(),
        user,
        products,
    });
    let warm_up = args.duration / 10;
    let start = Instant::now();
    let measure_from = start + warm_up;
    let end = measure_from + args.duration;
    let mut clients = tokio::task::JoinSet::new();
    for seed in 0..args.concurrency {
        // Each client's share of the rate: one command per `pace`.
        let pace = (args.rate > 0)
            .then(|| Duration::from_secs_f64(f64::from(args.concurrency) / f64::from(args.rate)));
        clients.spawn(client_loop(
            shared.clone(),
            seed as usize,
            pace,
            measure_from,
            end,
        ));
    }
    let mut report = Report {
        concurrency: args.concurrency,
        seconds: args.duration.as_secs_f64(),
        commands: 0,
        errors: 0,
        error_kinds: BTreeMap::new(),
        first_error: None,
        latencies: Vec::new(),
        server_cpu_ms: None,
        postgres_cpu_ms: None,
        generator: None,
    };
    let generator = GeneratorCpu::measure(measure_from.into(), end.into());
    let mut cpu = None;
    if let Some(platform) = platform {
        tokio::time::sleep_until(measure_from.into()).await;
        let from = platform.cpu();
        tokio::time::sleep_until(end.into()).await;
        let to = platform.cpu();
        cpu = Some((to.0.saturating_sub(from.0), to.1.saturating_sub(from.1)));
    }
    report.server_cpu_ms = cpu.map(|cpu| cpu.0);
    report.postgres_cpu_ms = cpu.map(|cpu| cpu.1);
    while let Some(joined) = clients.join_next().await {
        let tally = joined.context("a bench client panicked")?;
        report.commands += tally.latencies.len() as u64;
        report.errors += tally.errors;
        for (kind, count) in tally.error_kinds {
            *report.error_kinds.entry(kind).or_default() += count;
        }
        report.latencies.extend(tally.latencies);
        if report.first_error.is_none() {
            report.first_error = tally.first_error;
        }
    }
    report.latencies.sort_unstable();
    report.generator = generator.await.ok().flatten();
    Ok(report)
}

/// The `p`th percentile (nearest rank) of sorted `values`; `None` when there are none.
pub(crate) fn percentile<T: Copy>(values: &[T], p: f64) -> Option<T> {
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len().max(1)) - 1).copied()
}

struct Shared {
    client: reqwest::Client,
    base: String,
    user: Uuid,
    products: Vec<Uuid>,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    errors: u64,
    /// Errors by [`Failure`] kind (`other` for answers that are not what a command returns).
    error_kinds: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, counted: bool, result: &anyhow::Result<Uuid>) {
        if !counted {
            return;
        }
        match result {
            Ok(_) => self.latencies.push(started.elapsed().as_micros() as u64),
            Err(err) => {
                self.errors += 1;
                let kind = err
                    .downcast_ref::<Failure>()
                    .map_or("other", |failure| failure.kind.as_str());
                *self.error_kinds.entry(kind.to_owned()).or_default() += 1;
                self.first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
}

/// One client: orders of three distinct products, one request at a time, until `end`.
async fn client_loop(
    shared: Arc<Shared>,
    seed: usize,
    pace: Option<Duration>,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let base = &shared.base;
    let mut next = seed.wrapping_mul(7919);
    let mut ticker = pace.map(|pace| {
        let mut ticker = tokio::time::interval(pace);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    // Waits for the client's next slot when the bench runs at a rate.
    macro_rules! paced {
        () => {
            if let Some(ticker) = ticker.as_mut() {
                ticker.tick().await;
            }
        };
    }
    'orders: while Instant::now() < end {
        paced!();
        let started = Instant::now();
        let counted = started >= measure_from && started < end;
        let created = post(
            &shared.client,
            &format!("{base}/api/orders"),
            &json!({"userId": shared.user, "currency": "EUR"}),
        )
        .await;
        tally.record(started, counted, &created);
        let Ok(order) = created else {
            // A service that is down or overloaded gets a moment, as real clients give it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        next = next.wrapping_add(7);
        for line in 0..3 {
            // Three distinct products (there are at least three).
            let product = shared.products[(next + line) % shared.products.len()];
            paced!();
            let started = Instant::now();
            let counted = started >= measure_from && started < end;
            let added = post(
                &shared.client,
                &format!("{base}/api/orders/{order}/items"),
                &json!({"productId": product, "quantity": 1}),
            )
            .await;
            tally.record(started, counted, &added);
            if added.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'orders;
            }
        }
        paced!();
        let started = Instant::now();
        let counted = started >= measure_from && started < end;
        let placed = post(
            &shared.client,
            &format!("{base}/api/orders/{order}/place"),
            &Value::Null,
        )
        .await;
        tally.record(started, counted, &placed);
        if placed.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tally
}

/// What went wrong with one request, by kind: the status (`503 with Retry-After` when it
/// says when to retry), `timeout`, `refused` (no connection) or `connection lost`.
#[derive(Debug)]
struct Failure {
    kind: String,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn transport_failure(url: &str, err: reqwest::Error) -> Failure {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "refused"
    } else {
        "connection lost"
    };
    Failure {
        kind: kind.to_owned(),
        message: format!("POST {url}: {err:#}"),
    }
}

/// POST and return the `streamId` of a 2xx answer; anything else is a [`Failure`].
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Uuid> {
    let request = client.post(url);
    let request = if body.is_null() {
        request
    } else {
        request.json(body)
    };
    let response = request
        .send()
        .await
        .map_err(|err| transport_failure(url, err))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .contains_key(reqwest::header::RETRY_AFTER);
    let text = response
        .text()
        .await
        .map_err(|err| transport_failure(url, err))?;
    if !status.is_success() {
        let kind = if retry_after {
            format!("{} with Retry-After", status.as_u16())
        } else {
            status.as_u16().to_string()
        };
        return Err(Failure {
            kind,
            message: format!("POST {url}: {status}: {text}"),
        }
        .into());
    }
    let value: Value = serde_json::from_str(&text).context("a JSON response")?;
    value["streamId"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("no streamId in {text}"))
}

/// A client builder whose requests carry `token` as their bearer token.
pub(crate) fn with_token(token: Option<&str>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value: reqwest::header::HeaderValue = format!("Bearer {}", token.trim())
            .parse()
            .context("the token is not a header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}

/// An admin token for a platform the bench started with `secret`.
pub(crate) fn admin_token(secret: &str) -> anyhow::Result<String> {
    orderflow_store::auth::mint(
        secret.as_bytes(),
        orderflow_store::auth::DEFAULT_ISSUER,
        orderflow_store::auth::DEFAULT_AUDIENCE,
        "bench",
        &[orderflow_store::auth::Role::Admin],
        Duration::from_secs(24 * 3600),
    )
    .map_err(anyhow::Error::msg)
}

/// Wait until `url`'s `/ready` answers 2xx, failing if `child` (`what`) exits first or
/// `within` passes.
pub(crate) async fn wait_ready(
    child: &mut Child,
    what: &str,
    url: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(response) = client.get(format!("{url}/ready")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start: {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} was not ready within {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A private PostgreSQL (default, durable settings) and an `orderflow command` child.
struct OwnPlatform {
    pg: PrivatePostgres,
    data_dir: PathBuf,
    server: Child,
    url: String,
    /// An admin's.
    token: String,
}

impl OwnPlatform {
    async fn start(data_dir: &Path, pg_port: u16) -> anyhow::Result<Self> {
        eprintln!("starting a private PostgreSQL under {}", data_dir.display());
        let pg = PrivatePostgres::start(data_dir, pg_port, true)
            .await
            .context("starting the private PostgreSQL")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free port")?
            .port();
        let exe = std::env::current_exe().context("locating the orderflow binary")?;
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let mut server = Command::new(exe)
            .arg("command")
            .env("DATABASE_URL", pg.local_url())
            .env("ORDERFLOW_AUTH_SECRET", &secret)
            // One subject makes all the load.
            .env("ORDERFLOW_RATE_LIMIT", "0")
            .env("ORDERFLOW_COMMAND_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting orderflow command")?;
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(
            &mut server,
            "orderflow command",
            &url,
            Duration::from_secs(60),
        )
        .await?;
        eprintln!("command service ready at {url}");
        Ok(Self {
            pg,
            data_dir: data_dir.to_owned(),
            server,
            url,
            token: admin_token(&secret)?,
        })
    }

    /// CPU milliseconds used so far by (the command service, this PostgreSQL's processes).
    fn cpu(&self) -> (u64, u64) {
        let server = self
            .server
            .id()
            .map_or(0, |pid| proc_stat(pid).map_or(0, |s| s.cpu_ms));
        let postmaster = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
        let Some(postmaster) = postmaster else {
            return (server, 0);
        };
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| Some((pid, proc_stat(pid)?)))
            .filter(|(pid, stat)| *pid == postmaster || stat.parent == postmaster)
            // The postmaster also carries what its exited children (backends, autovacuum
            // workers) used.
            .map(|(pid, stat)| {
                stat.cpu_ms
                    + if pid == postmaster {
                        stat.children_cpu_ms
                    } else {
                        0
                    }
            })
            .sum();
        (server, postgres)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.server.start_kill();
        let _ = self.server.wait().await;
        self.pg.stop().await
    }
}

struct ProcStat {
    parent: u32,
    /// User + system CPU time.
    cpu_ms: u64,
    /// User + system CPU time of children it has waited for.
    children_cpu_ms: u64,
}

/// What /proc says about a process (`None` when it is gone or unreadable).
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, from field 3 (state): the parent is
    // field 4, utime 14, stime 15, cutime 16 and cstime 17, in clock ticks of 1/100 s.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        parent: fields.get(1)?.parse().ok()?,
        cpu_ms: (ticks(11)? + ticks(12)?) * 10,
        children_cpu_ms: (ticks(13)? + ticks(14)?) * 10,
    })
}

/// The load generator's CPU over a measured window: this process's CPU time against the
/// machine's, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GeneratorCpu {
    /// Cores this process kept busy on average.
    pub(crate) cores: f64,
    /// Cores the machine has.
    pub(crate) machine_cores: usize,
    /// Share of the machine's CPU time that was busy (0 to 1).
    pub(crate) machine_busy: f64,
    /// This process's share of the busy CPU time (0 to 1).
    pub(crate) share: f64,
}

impl GeneratorCpu {
    /// Measures from `from` to `to` in the background.
    pub(crate) fn measure(
        from: tokio::time::Instant,
        to: tokio::time::Instant,
    ) -> tokio::task::JoinHandle<Option<Self>> {
        tokio::spawn(async move {
            tokio::time::sleep_until(from).await;
            let started = Instant::now();
            let own = proc_stat(std::process::id())?.cpu_ms;
            let (busy, total) = machine_ticks()?;
            tokio::time::sleep_until(to).await;
            let seconds = started.elapsed().as_secs_f64();
            let own = proc_stat(std::process::id())?.cpu_ms.saturating_sub(own);
            let (busy_now, total_now) = machine_ticks()?;
            let (busy, total) = (
                busy_now.saturating_sub(busy),
                total_now.saturating_sub(total),
            );
            let machine_cores = std::thread::available_parallelism().map_or(1, usize::from);
            Some(Self {
                cores: own as f64 / 1000.0 / seconds.max(1e-9),
                machine_cores,
                machine_busy: busy as f64 / total.max(1) as f64,
                // Ticks are 1/100 s.
                share: own as f64 / (busy as f64 * 10.0).max(1.0),
            })
        })
    }

    /// When the generator, not the platform, may bound the figures: the machine was nearly
    /// full and the generator took a large part of it, or it kept most cores busy itself.
    pub(crate) fn warning(&self) -> Option<String> {
        let bound = (self.machine_busy >= 0.85 && self.share >= 0.3)
            || self.cores >= 0.8 * self.machine_cores as f64;
        bound.then(|| {
            format!(
                "the load generator used {:.2} of {} cores ({:.0}% of the busy CPU, the machine {:.0}% busy): \
                 it may be the bottleneck; run it on another machine against --target/--command-url",
                self.cores,
                self.machine_cores,
                self.share * 100.0,
                self.machine_busy * 100.0
            )
        })
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "cores": self.cores,
            "machine_cores": self.machine_cores,
            "machine_busy": self.machine_busy,
            "share_of_busy": self.share,
            "warning": self.warning(),
        })
    }

    /// One line for the text reports (and the warning on stderr).
    pub(crate) fn print(&self) {
        println!(
            "load generator CPU: {:.2} of {} cores ({:.0}% of the busy CPU; the machine {:.0}% busy)",
            self.cores,
            self.machine_cores,
            self.share * 100.0,
            self.machine_busy * 100.0
        );
        if let Some(warning) = self.warning() {
            eprintln!("warning: {warning}");
        }
    }
}

/// (busy, total) clock ticks of every CPU since boot, from /proc/stat's first line.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The in-process broker (librdkafka's mock cluster), or `brokers` when given, with every
/// topic of a fresh prefix created on it: the broker of the benches that run their platform
/// in this process. The mock cluster, when there is one, must outlive its use.
pub(crate) async fn bench_broker(
    brokers: Option<&str>,
) -> anyhow::Result<(
    Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    KafkaArgs,
)> {
    let prefix = format!("bench{}", Uuid::now_v7().simple());
    if let Some(brokers) = brokers {
        let kafka = KafkaArgs::new(brokers, prefix);
        orderflow_kafka::topics::ensure_topics(&kafka)
            .await
            .context("creating topics")?;
        return Ok((None, kafka));
    }
    let mock = rdkafka::mocking::MockCluster::new(1).context("starting the in-process broker")?;
    let kafka = KafkaArgs::new(mock.bootstrap_servers(), prefix);
    for topic in orderflow_kafka::topics::all_topics(&kafka.topic_prefix) {
        mock.create_topic(&topic, kafka.topic_partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    Ok((Some(mock), kafka))
}
