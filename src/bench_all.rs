//! `orderflow bench ceiling` and `orderflow bench all`.
//!
//! - ceiling: pgbench running `scripts/bench/one-event.sql` (one durable transaction that
//!   appends one event, none of a command's other work) at `--clients` against a private
//!   PostgreSQL with default, durable settings: what this machine's PostgreSQL can commit,
//!   the figure the write path is read against.
//! - all: every scenario in turn, each as a child `orderflow bench <scenario> --json` (a
//!   process and a private PostgreSQL of its own), with the same `--duration` and
//!   `--kafka-brokers`; then one table: each figure, the ceiling measured in the same run,
//!   and the goal.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use orderflow_query::config::parse_duration;
use orderflow_store::DatabaseArgs;
use serde_json::{json, Value};

use crate::devdb::PrivatePostgres;

/// The committed pgbench script.
const ONE_EVENT: &str = include_str!("../scripts/bench/one-event.sql");

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CeilingArgs {
    /// pgbench clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=500))]
    clients: u32,
    /// How long pgbench runs, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where the private PostgreSQL lives (wiped first).
    #[arg(long, default_value = "target/bench-ceiling-pg/data")]
    data_dir: PathBuf,
    /// Port of the private PostgreSQL.
    #[arg(long, default_value_t = 54379)]
    pg_port: u16,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AllArgs {
    /// How long each timed scenario measures (after its warm-up), e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Kafka for the scenarios that use one (e.g. a tansu memory-engine broker); without
    /// it, the in-process broker.
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// Events seeded for the replay scenario.
    #[arg(long, default_value_t = 1_000_000)]
    replay_events: u64,
    /// Print one JSON object (every scenario's report, and the table's rows) instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn ceiling(args: CeilingArgs) -> anyhow::Result<()> {
    let report = ceiling_report(&args).await?;
    if args.json {
        println!("{report}");
    } else {
        println!(
            "ceiling: pgbench scripts/bench/one-event.sql, {} clients, {:.0} s: {:.0} durable one-event transactions/s, latency average {:.2} ms",
            report["clients"],
            report["seconds"].as_f64().unwrap_or(0.0),
            report["tps"].as_f64().unwrap_or(0.0),
            report["latency_average_ms"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

async fn ceiling_report(args: &CeilingArgs) -> anyhow::Result<Value> {
    if args.duration < Duration::from_secs(1) {
        bail!("--duration must be at least a second");
    }
    eprintln!(
        "starting a private PostgreSQL under {}",
        args.data_dir.display()
    );
    let pg = PrivatePostgres::start(&args.data_dir, args.pg_port, true)
        .await
        .context("starting the private PostgreSQL")?;
    let outcome = async {
        DatabaseArgs::new(pg.local_url())
            .connect_and_migrate()
            .await
            .context("migrating")?
            .close()
            .await;
        let script = std::path::absolute(&args.data_dir)?
            .parent()
            .context("the data directory has a parent")?
            .join("one-event.sql");
        std::fs::write(&script, ONE_EVENT)
            .with_context(|| format!("writing {}", script.display()))?;
        eprintln!(
            "pgbench: one-event.sql, {} clients for {} s",
            args.clients,
            args.duration.as_secs()
        );
        let output = tokio::process::Command::new(pg.bindir().join("pgbench"))
            // Over the Unix socket when there is one, as the platform's roles connect.
            .args(["-n", "-h", pg.socket_dir().unwrap_or("127.0.0.1")])
            .args(["-U", "postgres", "-j", "2"])
            .arg("-p")
            .arg(args.pg_port.to_string())
            .arg("-c")
            .arg(args.clients.to_string())
            .arg("-T")
            .arg(args.duration.as_secs().to_string())
            .arg("-f")
            .arg(&script)
            .arg("orderflow")
            // The server is ours, whatever PG* variables the caller has set.
            .env_remove("PGOPTIONS")
            .env_remove("PGSSLMODE")
            .env_remove("PGSERVICE")
            .env_remove("PGPASSFILE")
            .env_remove("PGDATABASE")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGUSER")
            .stdin(Stdio::null())
            .output()
            .await
            .context("running pgbench (PostgreSQL's client tools)")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let figure = |prefix: &str| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|number| number.parse::<f64>().ok())
        };
        let tps = figure("tps = ").context("pgbench printed no tps")?;
        Ok(json!({
            "clients": args.clients,
            "seconds": args.duration.as_secs_f64(),
            "tps": tps,
            "latency_average_ms": figure("latency average = "),
        }))
    }
    .await;
    pg.stop().await?;
    outcome
}

/// One scenario of `bench all`: its name, and the arguments after `orderflow bench`.
struct Scenario {
    name: &'static str,
    args: Vec<String>,
}

pub(crate) async fn all(args: AllArgs) -> anyhow::Result<()> {
    let seconds = format!("{}s", args.duration.as_secs().max(1));
    let mut kafka = Vec::new();
    if let Some(brokers) = &args.kafka_brokers {
        kafka = vec!["--kafka-brokers".to_owned(), brokers.clone()];
    }
    let scenario = |name: &'static str, fixed: &[&str], with_kafka: bool| Scenario {
        name,
        args: fixed
            .iter()
            .map(|arg| (*arg).to_owned())
            .chain(if with_kafka {
                kafka.clone()
            } else {
                Vec::new()
            })
            .collect(),
    };
    let replay_events = args.replay_events.to_string();
    let scenarios = [
        scenario("ceiling", &["ceiling", "--duration", &seconds], false),
        scenario("commands", &["commands", "--duration", &seconds], false),
        scenario(
            "freshness_idle",
            &["freshness", "--rate", "20", "--duration", &seconds],
            true,
        ),
        scenario(
            "freshness_1000",
            &["freshness", "--rate", "1000", "--duration", &seconds],
            true,
        ),
        scenario(
            "graphql",
            &["graphql", "--connections", "32", "--duration", &seconds],
            true,
        ),
        scenario("relay", &["relay"], true),
        scenario("replay", &["replay", "--events", &replay_events], false),
        scenario(
            "sagas_throughput",
            &["sagas", "--rate", "0", "--orders", "3000"],
            true,
        ),
        scenario(
            "sagas_hot_product",
            &[
                "sagas",
                "--rate",
                "0",
                "--orders",
                "3000",
                "--products",
                "1",
            ],
            true,
        ),
        scenario(
            "sagas_200",
            &["sagas", "--rate", "200", "--duration", &seconds],
            true,
        ),
    ];
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut reports = serde_json::Map::new();
    for (at, scenario) in scenarios.iter().enumerate() {
        eprintln!(
            "== [{}/{}] {}: orderflow bench {}",
            at + 1,
            scenarios.len(),
            scenario.name,
            scenario.args.join(" ")
        );
        let output = tokio::process::Command::new(&exe)
            .arg("bench")
            .args(&scenario.args)
            .arg("--json")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("running the {} scenario", scenario.name))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report = if output.status.success() {
            text.lines()
                .rev()
                .find_map(|line| serde_json::from_str::<Value>(line).ok())
                .unwrap_or_else(|| json!({"error": "printed no report"}))
        } else {
            json!({"error": format!("exited with {}", output.status)})
        };
        reports.insert(scenario.name.to_owned(), report);
    }
    let rows = table(&reports);
    if args.json {
        println!("{}", json!({"scenarios": reports, "table": rows}));
    } else {
        print_table(&rows);
    }
    let failed: Vec<&String> = reports
        .iter()
        .filter(|(_, report)| report.get("error").is_some())
        .map(|(name, _)| name)
        .collect();
    if !failed.is_empty() {
        bail!("scenarios failed: {failed:?} (their output is above)");
    }
    Ok(())
}

/// The table's rows: scenario, figure, the ceiling (where it bounds the figure), the goal,
/// and whether the goal holds.
fn table(reports: &serde_json::Map<String, Value>) -> Vec<Value> {
    let get = |scenario: &str, field: &str| reports.get(scenario).and_then(|r| r[field].as_f64());
    let ceiling = get("ceiling", "tps");
    let ceiling_text = ceiling.map_or("—".to_owned(), |tps| format!("{tps:.0} tx/s"));
    let number = |value: Option<f64>, unit: &str| {
        value.map_or("failed".to_owned(), |v| format!("{v:.0} {unit}"))
    };
    let ms = |value: Option<f64>| value.map_or("failed".to_owned(), |v| format!("{v:.1} ms"));
    let met = |holds: Option<bool>| match holds {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    };
    let generator = |scenario: &str| {
        reports
            .get(scenario)
            .and_then(|r| r["generator_cpu"]["cores"].as_f64())
            .map_or("in-process".to_owned(), |cores| format!("{cores:.2} cores"))
    };
    let mut rows = Vec::new();
    let mut row = |scenario: &str,
                   figure: String,
                   ceiling: &str,
                   goal: &str,
                   holds: Option<bool>,
                   generator: String| {
        rows.push(json!({
            "scenario": scenario, "figure": figure, "ceiling": ceiling, "goal": goal,
            "met": met(holds), "generator": generator,
        }));
    };

    let commands = get("commands", "throughput");
    row(
        "commands (32 clients): throughput",
        number(commands, "commands/s"),
        &ceiling_text,
        "—",
        None,
        generator("commands"),
    );
    row(
        "commands (32 clients): p99",
        ms(get("commands", "p99_ms")),
        "—",
        "—",
        None,
        generator("commands"),
    );
    let idle_p50 = get("freshness_idle", "fresh_p50_ms");
    row(
        "freshness, idle (20 commands/s): p50 2xx → visible",
        ms(idle_p50),
        "—",
        "≤ 20 ms",
        idle_p50.map(|v| v <= 20.0),
        generator("freshness_idle"),
    );
    let busy_p99 = get("freshness_1000", "fresh_p99_ms");
    row(
        "freshness, 1,000 commands/s: p99 2xx → visible",
        ms(busy_p99),
        "—",
        "≤ 100 ms",
        busy_p99.map(|v| v <= 100.0),
        generator("freshness_1000"),
    );
    let graphql = get("graphql", "requests_per_second");
    let graphql_p99 = get("graphql", "p99_ms");
    row(
        "GraphQL composed order (32 connections)",
        format!("{}, p99 {}", number(graphql, "requests/s"), ms(graphql_p99)),
        "—",
        "≥ 5,000/s, p99 < 20 ms",
        graphql
            .zip(graphql_p99)
            .map(|(r, p)| r >= 5000.0 && p < 20.0),
        generator("graphql"),
    );
    let relay = get("relay", "events_per_second");
    row(
        "relay: commit → broker ack",
        number(relay, "events/s"),
        "—",
        "≥ 20,000 events/s",
        relay.map(|v| v >= 20_000.0),
        generator("relay"),
    );
    let drain = reports
        .get("relay")
        .and_then(|r| r["outage"]["drain_ms"].as_f64());
    let backlog = reports
        .get("relay")
        .and_then(|r| r["outage"]["backlog"].as_f64());
    row(
        "relay: drain after a 20 s broker outage",
        match (drain, backlog) {
            (Some(drain), Some(backlog)) => format!("{backlog:.0} events in {drain:.0} ms"),
            _ => "not measured".to_owned(),
        },
        "—",
        "—",
        None,
        generator("relay"),
    );
    let replay = get("replay", "events_per_second");
    row(
        "replay, every projection",
        number(replay, "events/s"),
        "—",
        "≥ 50,000 events/s",
        replay.map(|v| v >= 50_000.0),
        generator("replay"),
    );
    let sagas = get("sagas_throughput", "sagas_per_second");
    row(
        "sagas, 100 products",
        number(sagas, "sagas/s"),
        &ceiling_text,
        "≥ 500 sagas/s",
        sagas.map(|v| v >= 500.0),
        generator("sagas_throughput"),
    );
    let hot = get("sagas_hot_product", "sagas_per_second");
    row(
        "sagas, one hot product",
        number(hot, "sagas/s"),
        &ceiling_text,
        "≥ 200 sagas/s",
        hot.map(|v| v >= 200.0),
        generator("sagas_hot_product"),
    );
    let saga_p99 = get("sagas_200", "p99_ms");
    row(
        "sagas at 200/s: p99 placed → finished",
        ms(saga_p99),
        "—",
        "≤ 250 ms",
        saga_p99.map(|v| v <= 250.0),
        generator("sagas_200"),
    );
    rows
}

fn print_table(rows: &[Value]) {
    let cell = |row: &Value, key: &str| row[key].as_str().unwrap_or("").to_owned();
    println!(
        "| scenario | figure | ceiling (pgbench, same run) | goal | met | load generator CPU |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            cell(row, "scenario"),
            cell(row, "figure"),
            cell(row, "ceiling"),
            cell(row, "goal"),
            cell(row, "met"),
            cell(row, "generator")
        );
    }
}
