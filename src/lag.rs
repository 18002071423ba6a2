//! `orderflow lag`: consumer lag in the terminal, like `kafka-consumer-groups --describe`
//! plus lag in seconds, status and time to drain; with a database URL, the event store's
//! side too (relay backlog, projection staleness, dead letters, sagas).

use std::io::IsTerminal as _;

use anyhow::Context as _;
use orderflow_kafka::lag::eval::Evaluator;
use orderflow_kafka::lag::{sample_once, LagArgs, LagReport};
use orderflow_kafka::KafkaArgs;
use orderflow_query::ops::{EsFigures, OpsSnapshot};
use orderflow_store::DatabaseArgs;

use crate::ops::platform_groups;

#[derive(Debug, clap::Args)]
pub(crate) struct LagCli {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Samples taken before printing (rates need at least two); with `--watch`, the window
    /// rates and WARN are judged over. A group behind with no members is STOP at once;
    /// STALL takes as long as on the platform's monitors (55 s without progress).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=1000))]
    window: u64,
    /// Milliseconds between samples.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    interval_ms: u64,
    /// Consumer groups to show besides orderflow's own (repeat or comma separate).
    #[arg(long = "group", value_delimiter = ',')]
    groups: Vec<String>,
    /// Projector consumer groups are `<prefix>.<projection>`.
    #[arg(
        long,
        env = "ORDERFLOW_GROUP_PREFIX",
        default_value = "orderflow.projector"
    )]
    group_prefix: String,
    /// Also show the event store's figures: relay backlog, projection staleness, sagas.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The relay whose backlog is shown.
    #[arg(long, env = "ORDERFLOW_RELAY_NAME", default_value = "default")]
    relay_name: String,
    /// Print again every interval (in place on a terminal) until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// Print JSON (one document, or one line per interval with `--watch`) for scripts.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(cli: LagCli) -> anyhow::Result<()> {
    let args = LagArgs {
        lag_interval_ms: cli.interval_ms,
        lag_window: cli.window,
        lag_extra_groups: cli.groups.clone(),
        ..LagArgs::default()
    };
    let groups = platform_groups(&cli.kafka.topic_prefix, &cli.group_prefix);
    let pool = match &cli.database_url {
        Some(url) => Some(
            DatabaseArgs::new(url.clone())
                .connect()
                .await
                .context("connecting to the database")?,
        ),
        None => None,
    };
    // Rates come from this command's own samples; STALL is judged over the same time as on
    // the platform's monitors (a window of 12 × 5 s), so a consumer that commits every few
    // seconds is not called stalled here and healthy on /ops.
    let mut config = args.eval_config();
    let platform = LagArgs::default().eval_config();
    (config.stall_after, config.stop_after) = (platform.stall_after, platform.stop_after);
    let mut evaluator = Evaluator::new(config);
    let mut sampler = None;
    let mut ticks = tokio::time::interval(args.interval());
    let mut taken = 0;
    let terminal = std::io::stdout().is_terminal();
    let mut shutdown = crate::cli::shutdown_watch();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return Ok(()),
        }
        let report = sample_once(
            &mut sampler,
            &cli.kafka,
            &groups,
            &args.lag_extra_groups,
            &mut evaluator,
        )
        .await;
        taken += 1;
        if !cli.watch && taken < cli.window {
            continue;
        }
        let es = match &pool {
            Some(pool) => Some(
                EsFigures::read(pool, &cli.relay_name)
                    .await
                    .context("reading the event store's figures")?,
            ),
            None => None,
        };
        let snapshot = OpsSnapshot::new(&report, es.as_ref());
        if cli.json {
            let text = serde_json::to_string(&snapshot)?;
            println!("{text}");
        } else {
            if cli.watch && terminal {
                // Clear the screen and home the cursor: the table is redrawn in place.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", table(&report, es.as_ref()));
        }
        if !cli.watch {
            return Ok(());
        }
    }
}

fn seconds(value: f64) -> String {
    match value {
        v if v < 1.0 => format!("{v:.2}s"),
        v if v < 120.0 => format!("{v:.1}s"),
        v if v < 7200.0 => format!("{:.1}m", v / 60.0),
        v => format!("{:.1}h", v / 3600.0),
    }
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The report as text tables.
fn table(report: &LagReport, es: Option<&EsFigures>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sampled {}{}",
        report.sampled_at.format("%Y-%m-%d %H:%M:%S UTC"),
        match &report.error {
            Some(error) if !report.up => format!("  BROKER UNREACHABLE: {error}"),
            _ => String::new(),
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<34} {:<7} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "GROUP",
        "STATUS",
        "MEMBERS",
        "LAG",
        "LAG-SEC",
        "CONSUME/s",
        "PRODUCE/s",
        "DRAIN",
        "NO-COMMIT"
    );
    for g in &report.groups {
        let drain = match (g.lag, g.drain_seconds, g.consume_rate) {
            (0, _, _) => "-".to_owned(),
            (_, Some(s), _) => seconds(s),
            (_, None, Some(_)) => "never".to_owned(),
            (_, None, None) => "?".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<34} {:<7} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10}",
            g.group,
            g.status.as_str(),
            g.members.map_or_else(|| "?".to_owned(), |m| m.to_string()),
            g.lag,
            seconds(g.lag_seconds),
            rate(g.consume_rate),
            rate(g.produce_rate),
            drain,
            g.uncommitted_partitions,
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<34} {:<28} {:>9} {:>14} {:>14} {:>9} {:>10} STATUS",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SEC",
    );
    let mut hidden = 0;
    for g in &report.groups {
        for p in &g.partitions {
            // Nothing to consume and nothing consumed: not worth a line.
            if p.committed_offset.is_none() && p.log_end_offset <= p.log_start_offset {
                hidden += 1;
                continue;
            }
            let (current, lag, lag_seconds) = match (p.committed_offset, p.lag) {
                (Some(offset), Some(lag)) => (
                    offset.to_string(),
                    lag.to_string(),
                    p.lag_seconds.map_or_else(String::new, |s| {
                        let estimate = if p.lag_seconds_interpolated { "~" } else { "" };
                        format!("{estimate}{}", seconds(s))
                    }),
                ),
                _ => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            let status = if p.committed_offset.is_some() {
                p.status.as_str()
            } else {
                "NO-COMMIT"
            };
            let _ = writeln!(
                out,
                "{:<34} {:<28} {:>9} {:>14} {:>14} {:>9} {:>10} {}",
                g.group, p.topic, p.partition, current, p.log_end_offset, lag, lag_seconds, status
            );
        }
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "({hidden} empty partition(s) without a commit not shown; NO-COMMIT counts them)"
        );
    }
    if let Some(es) = es {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "relay: {} event(s) not yet published, oldest {}",
            es.relay.backlog.0,
            seconds(es.relay.oldest_age_seconds)
        );
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>13}",
            "PROJECTION", "BEHIND", "STALENESS"
        );
        for p in &es.projections {
            let _ = writeln!(
                out,
                "{:<16} {:>9} {:>13}",
                p.projection,
                p.behind.0,
                seconds(p.staleness_seconds)
            );
        }
        let sagas: Vec<String> = es
            .sagas
            .iter()
            .map(|s| format!("{} {}", s.state, s.count.0))
            .collect();
        let _ = writeln!(out, "sagas: {}", sagas.join(", "));
    }
    let dead: Vec<String> = OpsSnapshot::dead_letters(report)
        .into_iter()
        .filter(|d| d.depth.0 > 0)
        .map(|d| format!("{} {}", d.topic, d.depth.0))
        .collect();
    let _ = writeln!(
        out,
        "dead letters: {}",
        if dead.is_empty() {
            "none".to_owned()
        } else {
            dead.join(", ")
        }
    );
    out
}
