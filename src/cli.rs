//! Argument parsing and wiring of the roles; each role's logic lives in its crate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use orderflow_command::config::{CommandArgs, RelayArgs, SagaArgs, SagaFlags};
use orderflow_command::saga::gateway::{Resilient, SimulatedGateway, SimulatorArgs};
use orderflow_command::saga::Orchestrator;
use orderflow_kafka::KafkaArgs;
use orderflow_projector::config::{ProjectorArgs, ReplayArgs};
use orderflow_projector::worker::WorkerOptions;
use orderflow_projector::PROJECTIONS;
use orderflow_query::config::{QueryArgs, QueryOptions};
use orderflow_store::DatabaseArgs;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::devdb::{self, PrivatePostgres};

/// orderflow: an event-sourced CQRS order platform on PostgreSQL and Kafka.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// `text` for people (coloured only on a terminal), `json` lines for log shippers.
    #[arg(long, env = "ORDERFLOW_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Same as `--log-format json` (the flag of earlier releases, kept for deployments that
    /// set it).
    #[arg(long, env = "ORDERFLOW_LOG_JSON", global = true, hide = true)]
    log_json: bool,
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Apply the database migrations (event store, read models, relay cursors) and exit.
    Migrate(DatabaseArgs),
    /// Run the command service (REST API that appends events).
    Command(CommandArgs),
    /// Run the outbox relay (publishes committed events to Kafka; one active, others stand by).
    Relay(RelayArgs),
    /// Run projector workers (consume Kafka, maintain the read models).
    Projector(ProjectorArgs),
    /// Run the saga orchestrator (stock and payment for every placed order), or list sagas.
    // The orchestrator's database flag is optional on parsing only so that `saga list` parses
    // without it; running the orchestrator without one is refused.
    #[command(
        args_conflicts_with_subcommands = true,
        mut_arg("database_url", |arg| arg.required(false).default_value(""))
    )]
    Saga(SagaCli),
    /// Rebuild read models from the event store and swap them in.
    Replay(ReplayArgs),
    /// Check the platform against its records: each read model against a fresh fold of the
    /// store, the topics against the store, sagas, stock and payments; exit 1 on a violation.
    Verify(crate::verify::VerifyCli),
    /// Run the GraphQL query service (playground at its root).
    Query(QueryArgs),
    /// Run the whole platform in one process, starting a private PostgreSQL when no
    /// database URL is given.
    Dev(DevArgs),
    /// Consumer lag of every orderflow consumer group: offsets, lag in records and seconds,
    /// status and time to drain (with a database URL, relay backlog and staleness too).
    Lag(crate::lag::LagCli),
    /// Mint a token signed with the services' HS256 secret (development and tests: in
    /// production an identity provider issues them).
    Token(crate::token::TokenArgs),
    /// Load generators that print figures (throughput, latency percentiles).
    #[command(subcommand)]
    Bench(crate::bench::Bench),
}

#[derive(Debug, clap::Args)]
struct SagaCli {
    #[command(subcommand)]
    action: Option<SagaAction>,
    #[command(flatten)]
    run: SagaArgs,
}

#[derive(Debug, Subcommand)]
enum SagaAction {
    /// Print sagas (e.g. every STUCK one) as a table and exit.
    List {
        /// RUNNING, COMPENSATING, CONFIRMED, CANCELLED or STUCK; all when absent.
        #[arg(long)]
        state: Option<String>,
        /// At most this many, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// The event store's database.
        #[arg(long = "database-url", env = "DATABASE_URL", id = "list_database_url")]
        database_url: String,
    },
}

#[derive(Debug, clap::Args)]
struct DevArgs {
    /// Use this PostgreSQL instead of starting a private one.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where the private PostgreSQL keeps its data between runs.
    #[arg(long, env = "ORDERFLOW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Port of the private PostgreSQL (loopback only).
    #[arg(long, env = "ORDERFLOW_PG_PORT", default_value_t = 54329)]
    pg_port: u16,
    /// Wipe the private PostgreSQL's data first.
    #[arg(long)]
    fresh: bool,
    /// Address the REST command API listens on.
    #[arg(
        long,
        env = "ORDERFLOW_COMMAND_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    command_listen: std::net::SocketAddr,
    /// Address the GraphQL query service (and its playground) listens on.
    #[arg(long, env = "ORDERFLOW_QUERY_LISTEN", default_value = "127.0.0.1:8080")]
    query_listen: std::net::SocketAddr,
    /// Use this Kafka instead of an in-process Kafka-protocol broker.
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Topic prefix (one per environment sharing a cluster).
    #[arg(long, env = "ORDERFLOW_TOPIC_PREFIX", default_value = "orderflow")]
    topic_prefix: String,
    /// Longest time, in milliseconds, the broker may hold a consumer's empty fetch (see
    /// `orderflow projector --help`).
    #[arg(long, env = "ORDERFLOW_KAFKA_FETCH_WAIT_MS", default_value_t = orderflow_kafka::config::DEFAULT_FETCH_WAIT_MS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    kafka_fetch_wait_ms: u32,
    #[command(flatten)]
    saga: SagaFlags,
    #[command(flatten)]
    gateway: SimulatorArgs,
    #[command(flatten)]
    lag: orderflow_kafka::lag::LagArgs,
    /// Projector consumer groups are `<prefix>.<projection>`.
    #[arg(
        long,
        env = "ORDERFLOW_GROUP_PREFIX",
        default_value = "orderflow.projector"
    )]
    group_prefix: String,
    /// Serve without verifying tokens (local experiments). Without it, tokens are HS256
    /// with a secret kept in the data directory's parent (`auth-secret`), and an admin
    /// token is printed at start.
    #[arg(long)]
    no_auth: bool,
    #[command(flatten)]
    edge: orderflow_store::edge::EdgeArgs,
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = if cli.log_json {
        LogFormat::Json
    } else {
        cli.log_format
    };
    let traces = init_tracing(format, cli.role.prints_report());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.role));
    if let Some(provider) = traces {
        // Send the spans still buffered.
        if let Err(err) = provider.shutdown() {
            eprintln!("warning: flushing traces: {err}");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

impl Role {
    /// Tools whose standard output is their report (a table or JSON for scripts): their
    /// logs go to standard error, where they cannot corrupt it.
    fn prints_report(&self) -> bool {
        matches!(
            self,
            Self::Verify(_) | Self::Lag(_) | Self::Bench(_) | Self::Token(_)
        )
    }
}

/// Logs to stdout (to stderr for tools that print a report), and spans to an OTLP collector
/// when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) variable names
/// one: the exporter then reads the other `OTEL_EXPORTER_OTLP_*` variables (headers,
/// timeout) itself.
fn init_tracing(
    format: LogFormat,
    to_stderr: bool,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    let terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed(),
        // Colour escapes only where a terminal renders them, not into files or pipes.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_writer(writer)
            .boxed(),
    }
    .with_filter(filter);
    let (provider, traces) = match otlp_provider() {
        Ok(Some(provider)) => {
            use opentelemetry::trace::TracerProvider as _;
            // Spans at info and above whatever RUST_LOG says of logs (not the HTTP client's
            // own, which exports them).
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("orderflow"))
                .with_filter(EnvFilter::new(
                    "info,sqlx=warn,reqwest=warn,hyper=warn,h2=warn",
                ));
            (Some(provider), Some(layer))
        }
        Ok(None) => (None, None),
        Err(err) => {
            eprintln!("warning: not exporting traces: {err}");
            (None, None)
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    provider
}

/// The OTLP (HTTP/protobuf) span exporter, when the environment asks for one.
fn otlp_provider() -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("building the OTLP span exporter")?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "orderflow".into());
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build(),
    ))
}

async fn run(role: Role) -> anyhow::Result<()> {
    orderflow_store::telemetry::install();
    match role {
        Role::Migrate(database) => {
            wait_for_database(|| database.connect_and_migrate()).await?;
            println!("migrations applied");
            Ok(())
        }
        Role::Command(args) => {
            // Refused before anything is touched.
            let options = args.api_options().map_err(anyhow::Error::msg)?;
            let pool = wait_for_database(|| args.database.connect_for_writes()).await?;
            let listener = bind(args.listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "command API listening");
            if let Some(addr) = args.metrics_listen {
                let metrics = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(orderflow_command::health::metrics),
                );
                serve_metrics(addr, metrics).await?;
            }
            let writer = orderflow_command::write::Writer::new(pool, args.aggregate_cache);
            orderflow_command::startup::serve_with(listener, writer, options, shutdown_signal())
                .await
        }
        Role::Relay(args) => {
            let pool = connect(&args.database).await?;
            let shutdown = shutdown_watch();
            let options = args.options();
            let (figures_pool, relay) = (pool.clone(), options.name.clone());
            let figures: crate::ops::Figures = std::sync::Arc::new(move || {
                let (pool, relay) = (figures_pool.clone(), relay.clone());
                Box::pin(async move { relay_figures(&pool, &relay).await })
            });
            let ops = crate::ops::serve(
                args.ops_listen,
                "relay",
                pool.clone(),
                options.readiness.clone(),
                None,
                Some(figures),
                shutdown.clone(),
            );
            // `/ready` answers (not ready) while a broker that is down keeps the topics from
            // being created.
            let (readiness, kafka) = (options.readiness.clone(), args.kafka.clone());
            let relay = async move {
                readiness.problem("broker", "waiting for the broker to create the topics");
                create_topics(&kafka).await?;
                readiness.ok("broker");
                orderflow_command::relay::run(pool, kafka, options, shutdown).await
            };
            tokio::try_join!(relay, ops).map(|_| ())
        }
        Role::Projector(args) => {
            let pool = connect(&args.database).await?;
            create_topics(&args.kafka).await?;
            let shutdown = shutdown_watch();
            let options = args.options();
            let groups = crate::ops::projector_groups(
                &args.kafka.topic_prefix,
                &options.group_prefix,
                &args.selected(),
            );
            let monitor = orderflow_kafka::lag::LagMonitor::spawn(
                &args.kafka,
                &args.lag,
                groups,
                shutdown.clone(),
            );
            orderflow_kafka::consumer::watch_stalls_with(monitor.clone());
            let ops = crate::ops::serve(
                args.ops_listen,
                "projector",
                pool.clone(),
                options.readiness.clone(),
                Some(monitor),
                None,
                shutdown.clone(),
            );
            let workers = orderflow_projector::worker::run(
                pool,
                args.kafka.clone(),
                args.selected(),
                options,
                shutdown,
            );
            tokio::try_join!(workers, ops).map(|_| ())
        }
        Role::Saga(SagaCli {
            action:
                Some(SagaAction::List {
                    state,
                    limit,
                    database_url,
                }),
            ..
        }) => list_sagas(&DatabaseArgs::new(database_url), state.as_deref(), limit).await,
        Role::Saga(SagaCli { run: args, .. }) => {
            if args.database.database_url.is_empty() {
                anyhow::bail!("orderflow saga needs --database-url (or DATABASE_URL)");
            }
            args.saga.validate().map_err(anyhow::Error::msg)?;
            let pool = connect(&args.database).await?;
            create_topics(&args.kafka).await?;
            let shutdown = shutdown_watch();
            let orchestrator = orchestrator(&pool, &args.saga, &args.gateway)?;
            let group =
                crate::ops::saga_group(&args.kafka.topic_prefix, &args.saga.options().group);
            let monitor = orderflow_kafka::lag::LagMonitor::spawn(
                &args.kafka,
                &args.lag,
                vec![group],
                shutdown.clone(),
            );
            orderflow_kafka::consumer::watch_stalls_with(monitor.clone());
            let figures_pool = pool.clone();
            let figures: crate::ops::Figures = std::sync::Arc::new(move || {
                let pool = figures_pool.clone();
                Box::pin(async move { saga_figures(&pool).await })
            });
            let ops = crate::ops::serve(
                args.ops_listen,
                "saga",
                pool.clone(),
                Default::default(),
                Some(monitor),
                Some(figures),
                shutdown.clone(),
            );
            tokio::try_join!(orchestrator.run(args.kafka.clone(), shutdown), ops).map(|_| ())
        }
        Role::Replay(args) => {
            let pool = connect(&args.database).await?;
            for projection in args.selected() {
                let report = orderflow_projector::replay(&pool, projection, args.options())
                    .await
                    .with_context(|| format!("replaying {projection}"))?;
                println!(
                    "{projection}: {} events in {:.1}s ({:.0} events/s), swapped in",
                    report.events,
                    report.elapsed.as_secs_f64(),
                    report.events_per_second()
                );
            }
            Ok(())
        }
        Role::Query(args) => {
            let mut options = args.options()?;
            let groups = crate::ops::platform_groups(&args.kafka.topic_prefix, &args.group_prefix);
            options.lag = Some(orderflow_kafka::lag::LagMonitor::spawn(
                &args.kafka,
                &args.lag,
                groups,
                shutdown_watch(),
            ));
            let pool = connect(&args.database).await?;
            let listener = bind(args.listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "query service listening");
            let service = orderflow_query::QueryService::new(pool, options);
            if let Some(addr) = args.metrics_listen {
                serve_metrics(addr, service.metrics_router()).await?;
            }
            orderflow_query::startup::serve_service(listener, service, shutdown_signal()).await
        }
        Role::Dev(args) => dev(args).await,
        Role::Lag(cli) => crate::lag::run(cli).await,
        Role::Bench(bench) => crate::bench::run(bench).await,
        Role::Token(args) => crate::token::run(args),
        Role::Verify(cli) => match crate::verify::run(cli).await? {
            0 => Ok(()),
            violations => Err(anyhow::anyhow!("{violations} violations")),
        },
    }
}

/// The relay's backlog as Prometheus gauges, for the relay's `/metrics`.
async fn relay_figures(pool: &sqlx::PgPool, relay: &str) -> String {
    let mut out = String::new();
    match orderflow_query::ops::EsFigures::relay(pool, relay).await {
        Ok(status) => orderflow_query::ops::render_relay(&status, &mut out),
        Err(err) => tracing::warn!(%err, "cannot read the relay backlog for /metrics"),
    }
    out
}

/// Sagas by state as Prometheus gauges, for the orchestrator's `/metrics`.
async fn saga_figures(pool: &sqlx::PgPool) -> String {
    let mut out = String::new();
    match orderflow_query::ops::EsFigures::sagas(pool).await {
        Ok(sagas) => orderflow_query::ops::render_sagas(&sagas, &mut out),
        Err(err) => tracing::warn!(%err, "cannot read saga counts for /metrics"),
    }
    out
}

/// The orchestrator with the simulated payment provider.
fn orchestrator(
    pool: &sqlx::PgPool,
    flags: &SagaFlags,
    gateway: &SimulatorArgs,
) -> anyhow::Result<std::sync::Arc<Orchestrator<SimulatedGateway>>> {
    flags.validate().map_err(anyhow::Error::msg)?;
    let gateway = Resilient::new(
        SimulatedGateway::new(pool.clone(), gateway.clone()),
        flags.resilience(),
    );
    let writer = orderflow_command::write::Writer::new(
        pool.clone(),
        orderflow_command::startup::DEFAULT_AGGREGATE_CACHE,
    );
    Ok(Orchestrator::new(writer, gateway, flags.options()))
}

async fn list_sagas(
    database: &DatabaseArgs,
    state: Option<&str>,
    limit: i64,
) -> anyhow::Result<()> {
    let state = match state {
        None => None,
        Some(text) => Some(
            orderflow_domain::saga::SagaStatus::parse(text)
                .with_context(|| format!("unknown saga state {text:?}: use RUNNING, COMPENSATING, CONFIRMED, CANCELLED or STUCK"))?,
        ),
    };
    let pool = connect(database).await?;
    let rows = orderflow_command::saga::rows::list(
        &pool,
        state.map(|s| s.as_str()),
        limit.clamp(1, 100_000),
    )
    .await
    .context("reading sagas")?;
    println!(
        "{:<36}  {:<36}  {:<12}  {:<10}  {:<19}  {:>8}  DETAIL",
        "SAGA", "ORDER", "STATE", "STEP", "REASON", "ATTEMPTS"
    );
    for row in &rows {
        println!(
            "{:<36}  {:<36}  {:<12}  {:<10}  {:<19}  {:>8}  {}",
            row.saga_id,
            row.order_id,
            row.state,
            row.step,
            row.reason.as_deref().unwrap_or("-"),
            row.attempts,
            row.detail.as_deref().unwrap_or("")
        );
    }
    println!("{} saga(s)", rows.len());
    Ok(())
}

/// A pool on an up-to-date schema: every role migrates at start.
async fn connect(database: &DatabaseArgs) -> anyhow::Result<sqlx::PgPool> {
    wait_for_database(|| database.connect_and_migrate()).await
}

/// Connects (and migrates), waiting for PostgreSQL as long as it cannot be reached or is
/// starting or shutting down: a role started while the database is down, or restarting,
/// starts when it is back. Anything else (a wrong password, no such database, TLS asked of
/// this build, a migration that does not apply) fails at once. Ctrl-C or SIGTERM ends the
/// wait.
async fn wait_for_database<F, Fut>(mut connect: F) -> anyhow::Result<sqlx::PgPool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<sqlx::PgPool, orderflow_store::StoreError>>,
{
    let mut backoff = orderflow_kafka::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(10),
    );
    // Signals are listened for only once there is something to wait for: once listened
    // for, Ctrl-C no longer ends a process (such as `replay`) that does not watch for it.
    let mut shutdown: Option<watch::Receiver<bool>> = None;
    loop {
        let attempt = connect();
        let result = match shutdown.as_mut() {
            None => attempt.await,
            Some(shutdown) => tokio::select! {
                result = attempt => result,
                _ = shutdown.wait_for(|stop| *stop) => {
                    anyhow::bail!("stopped while waiting for the database")
                }
            },
        };
        match result {
            Ok(pool) => return Ok(pool),
            Err(err) if !matches!(err, orderflow_store::StoreError::Unavailable(_)) => {
                return Err(err).context("connecting to the database");
            }
            Err(err) => {
                tracing::warn!(error = %format!("{:#}", anyhow::Error::from(err)), "cannot reach the database (is it up?); trying again");
                if backoff
                    .wait(shutdown.get_or_insert_with(shutdown_watch))
                    .await
                {
                    anyhow::bail!("stopped while waiting for the database");
                }
            }
        }
    }
}

/// Creates the topics, waiting for the broker as long as it cannot be reached: a role
/// started while the broker is down starts when it is back. A request the broker refuses
/// (a bad replication factor, no authorization) fails at once. Ctrl-C or SIGTERM ends the
/// wait.
async fn create_topics(kafka: &KafkaArgs) -> anyhow::Result<()> {
    let mut backoff = orderflow_kafka::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(10),
    );
    let mut shutdown = shutdown_watch();
    loop {
        match orderflow_kafka::topics::ensure_topics(kafka).await {
            Ok(_) => return Ok(()),
            Err(err) if !broker_unreachable(&err) => {
                return Err(err).context("creating the Kafka topics");
            }
            Err(err) => {
                tracing::warn!(%err, brokers = %kafka.kafka_brokers, "cannot create the Kafka topics (is the broker up?); trying again");
                if backoff.wait(&mut shutdown).await {
                    anyhow::bail!("stopped while waiting for the broker to create the topics");
                }
            }
        }
    }
}

/// Whether `err` says the broker could not be reached or did not answer (worth waiting
/// for), rather than that it refused the request (a configuration to fix).
fn broker_unreachable(err: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        err.rdkafka_error_code(),
        Some(
            Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::BrokerNotAvailable
                | Code::NetworkException
                | Code::LeaderNotAvailable
                | Code::NotController
                | Code::Resolve
        )
    )
}

/// `/metrics` on a listener of its own, until the process ends.
async fn serve_metrics(addr: std::net::SocketAddr, router: axum::Router) -> anyhow::Result<()> {
    let listener = bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(%err, "the metrics listener stopped");
        }
    });
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    args.saga.validate().map_err(anyhow::Error::msg)?;
    // What the roles connect with, and what is shown (the private cluster's TCP address:
    // the roles use its Unix socket).
    let (database_url, shown_url, private) = match args.database_url.clone() {
        Some(url) => (url.clone(), url, None),
        None => {
            let dir = args
                .data_dir
                .clone()
                .unwrap_or_else(devdb::default_data_dir);
            let pg = PrivatePostgres::start(&dir, args.pg_port, args.fresh)
                .await
                .context("starting the private PostgreSQL")?;
            (pg.local_url().to_owned(), pg.url().to_owned(), Some(pg))
        }
    };
    let result = run_dev(&args, &database_url, &shown_url).await;
    if let Some(pg) = private {
        println!("stopping the private PostgreSQL");
        pg.stop().await.context("stopping the private PostgreSQL")?;
    }
    result
}

async fn run_dev(args: &DevArgs, database_url: &str, shown_url: &str) -> anyhow::Result<()> {
    // librdkafka's in-process mock cluster speaks the Kafka protocol; it lives as long as
    // this function and keeps nothing between runs.
    let mock = match &args.kafka_brokers {
        Some(_) => None,
        None => Some(
            rdkafka::mocking::MockCluster::new(1)
                .context("starting the in-process Kafka broker")?,
        ),
    };
    let brokers = match (&args.kafka_brokers, &mock) {
        (Some(brokers), _) => brokers.clone(),
        (None, Some(mock)) => mock.bootstrap_servers(),
        (None, None) => unreachable!("a mock cluster exists when no brokers are given"),
    };
    let kafka = KafkaArgs {
        kafka_fetch_wait_ms: args.kafka_fetch_wait_ms,
        ..KafkaArgs::new(brokers.clone(), args.topic_prefix.clone())
    };
    let pool = connect(&DatabaseArgs::new(database_url)).await?;
    match &mock {
        Some(mock) => {
            for topic in orderflow_kafka::topics::all_topics(&kafka.topic_prefix) {
                mock.create_topic(&topic, kafka.topic_partitions, 1)
                    .with_context(|| format!("creating topic {topic}"))?;
            }
            // The in-process broker starts empty: offsets recorded against an earlier one
            // mean nothing now (they are how `X-Min-Position` reads know a view's progress).
            for table in ["relay_partitions", "relay_history", "projection_progress"] {
                sqlx::query(&format!("delete from {table}"))
                    .execute(&pool)
                    .await
                    .with_context(|| format!("clearing {table}"))?;
            }
        }
        None => create_topics(&kafka).await?,
    }
    let (auth, secret_file) = match args.no_auth {
        true => (orderflow_store::auth::Auth::Off, None),
        false => {
            let data_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(devdb::default_data_dir);
            let home = std::path::absolute(&data_dir)?
                .parent()
                .map(std::path::Path::to_path_buf)
                .context("the data directory has no parent")?;
            let (path, secret) = crate::token::dev_secret(&home)?;
            let auth = orderflow_store::auth::AuthArgs::with_secret(secret.clone())
                .auth()
                .map_err(anyhow::Error::msg)?;
            (auth, Some((path, secret)))
        }
    };
    let listener = bind(args.command_listen).await?;
    let api = listener.local_addr()?;
    let query_listener = bind(args.query_listen).await?;
    let graphql = query_listener.local_addr()?;
    let shutdown = shutdown_watch();

    let command_pool = DatabaseArgs::new(database_url)
        .connect_for_writes()
        .await
        .context("connecting the command service")?;
    let mut roles = tokio::task::JoinSet::new();
    let mut stop = shutdown.clone();
    roles.spawn(orderflow_command::startup::serve_with(
        listener,
        orderflow_command::write::Writer::new(
            command_pool,
            orderflow_command::startup::DEFAULT_AGGREGATE_CACHE,
        ),
        orderflow_command::startup::ApiOptions {
            auth: auth.clone(),
            edge: args.edge.clone(),
            metrics_on_api: true,
        },
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        },
    ));
    roles.spawn(orderflow_command::relay::run(
        pool.clone(),
        kafka.clone(),
        Default::default(),
        shutdown.clone(),
    ));
    // Queries get a pool of their own: a heavy read never starves commands or the relay.
    let query_pool = DatabaseArgs {
        db_max_connections: 8,
        ..DatabaseArgs::new(database_url)
    }
    .connect()
    .await
    .context("connecting the query service")?;
    let mut stop = shutdown.clone();
    let monitor = orderflow_kafka::lag::LagMonitor::spawn(
        &kafka,
        &args.lag,
        crate::ops::platform_groups(&kafka.topic_prefix, &args.group_prefix),
        shutdown.clone(),
    );
    roles.spawn(orderflow_query::serve(
        query_listener,
        query_pool,
        QueryOptions {
            lag: Some(monitor),
            auth,
            edge: args.edge.clone(),
            ..QueryOptions::default()
        },
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        },
    ));
    roles.spawn(orderflow_projector::worker::run(
        pool.clone(),
        kafka.clone(),
        PROJECTIONS.to_vec(),
        WorkerOptions {
            group_prefix: args.group_prefix.clone(),
            ..WorkerOptions::default()
        },
        shutdown.clone(),
    ));

    roles.spawn(
        orchestrator(&pool, &args.saga, &args.gateway)?.run(kafka.clone(), shutdown.clone()),
    );

    let kafka_note = if mock.is_some() { " (in-process)" } else { "" };
    println!();
    println!("orderflow dev is running (Ctrl-C stops everything)");
    println!("  command API   http://{api}/api   (OpenAPI: http://{api}/api/openapi.json)");
    println!("  GraphQL       http://{graphql}/graphql   (playground: http://{graphql}/)");
    println!("  operations    http://{graphql}/ops   (metrics: http://{graphql}/metrics, http://{api}/metrics)");
    println!("  database      {shown_url}");
    println!("  kafka         {brokers}{kafka_note}");
    match &secret_file {
        Some((path, secret)) => {
            let admin = orderflow_store::auth::mint(
                secret.as_bytes(),
                orderflow_store::auth::DEFAULT_ISSUER,
                orderflow_store::auth::DEFAULT_AUDIENCE,
                "dev-admin",
                &[orderflow_store::auth::Role::Admin],
                std::time::Duration::from_secs(12 * 3600),
            )
            .map_err(anyhow::Error::msg)?;
            println!("  admin token   {admin}");
            println!(
                "  customer      orderflow token --auth-secret-file {} --sub <user id> --role customer",
                path.display()
            );
            println!("                (tokens go in `Authorization: Bearer <token>`; this admin token lasts 12 h)");
        }
        None => println!("  auth          OFF (--no-auth): every request is allowed"),
    }
    println!();

    let mut first_error = None;
    while let Some(joined) = roles.join_next().await {
        let result = joined.context("a role panicked").and_then(|r| r);
        if let Err(err) = result {
            tracing::error!(error = %format!("{err:#}"), "a role stopped; stopping the others");
            first_error.get_or_insert(err);
            // One role failing takes the others down rather than leaving half a platform.
            roles.abort_all();
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A watch that flips to `true` on Ctrl-C or SIGTERM.
pub(crate) fn shutdown_watch() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
