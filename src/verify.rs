//! `orderflow verify`: checks the platform's promises against its own records, on a live
//! system or a settled one, and prints one line per check with its violations.
//!
//! - Each selected projection is rebuilt into temporary tables as far as it has applied
//!   each stream and compared row by row with the live tables
//!   ([`orderflow_projector::verify`]).
//! - With `--published`, every events topic is read back from its start: each stream's
//!   events must arrive in version order (repeats allowed: delivery is at least once),
//!   none that the store does not hold, and, once settled, every one the store holds.
//! - From the event store alone: every placed order has a saga, sagas and orders end once
//!   and alike, reservations balance (taken once, then released or committed once, as the
//!   order ended), stock never below zero, no order charged twice or charged and cancelled.
//!
//! `--settled` says the platform is idle (load stopped, backlogs drained): then whatever is
//! still in flight (an unfinished saga, an open reservation, a view or topic behind the
//! store) counts as a violation too.

use std::collections::HashMap;

use anyhow::Context as _;
use orderflow_kafka::readback::read_topic;
use orderflow_kafka::topics::{events_topic, STREAM_TYPES};
use orderflow_kafka::KafkaArgs;
use orderflow_projector::config::{flatten, parse_selection};
use orderflow_projector::projection::names_or;
use orderflow_projector::{Projection, VerifyOptions, VerifyReport};
use orderflow_store::DatabaseArgs;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyCli {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[arg(long = "projection", value_delimiter = ',', value_parser = parse_selection,
          default_value = "all", help = format!("Projections to rebuild and compare: {} (comma separated)", names_or(["all"])))]
    projections: Vec<Vec<&'static dyn Projection>>,
    /// Also read every events topic back from the broker (`--kafka-brokers`) and compare it
    /// with the store.
    #[arg(long)]
    published: bool,
    /// Only the topics (with `--published`): skip the projections and the store's checks,
    /// for a platform running no projector or saga.
    #[arg(long, requires = "published")]
    published_only: bool,
    /// The platform is idle: count what is still in flight as violations.
    #[arg(long)]
    settled: bool,
    /// Differing rows named per table.
    #[arg(long, default_value_t = 5)]
    samples: i64,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Check {
    pub name: String,
    pub violations: i64,
    pub detail: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    settled: bool,
    violations: i64,
    checks: Vec<Check>,
    projections: Vec<VerifyReport>,
}

/// Runs every check, prints the report and returns the violations.
pub(crate) async fn run(cli: VerifyCli) -> anyhow::Result<i64> {
    // A check changes nothing: not even the schema (no migrations).
    let pool = cli
        .database
        .connect()
        .await
        .context("connecting to the database")?;
    let mut checks = Vec::new();
    let mut projections = Vec::new();
    let projections_to_check = if cli.published_only {
        Vec::new()
    } else {
        flatten(&cli.projections)
    };
    for projection in projections_to_check {
        let options = VerifyOptions {
            samples: cli.samples,
            ..VerifyOptions::default()
        };
        let report = orderflow_projector::verify(&pool, projection, options)
            .await
            .with_context(|| format!("verifying {projection}"))?;
        checks.push(projection_check(&report, cli.settled));
        projections.push(report);
    }
    if cli.published {
        checks.extend(published(&pool, &cli.kafka, cli.settled).await?);
    }
    if !cli.published_only {
        checks.extend(store_checks(&pool, cli.settled).await?);
    }
    let report = Report {
        settled: cli.settled,
        violations: checks.iter().map(|check| check.violations).sum(),
        checks,
        projections,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(report.violations)
}

fn print(report: &Report) {
    let width = report
        .checks
        .iter()
        .map(|check| check.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!("{:<width$}  {:>10}  DETAIL", "CHECK", "VIOLATIONS");
    for check in &report.checks {
        println!(
            "{:<width$}  {:>10}  {}",
            check.name, check.violations, check.detail
        );
    }
    for projection in &report.projections {
        for table in &projection.tables {
            for sample in &table.samples {
                let columns = if sample.columns.is_empty() {
                    String::new()
                } else {
                    format!(" (columns {})", sample.columns.join(", "))
                };
                println!(
                    "  {}: {} row {}{columns}",
                    table.table, sample.kind, sample.key
                );
            }
        }
    }
    println!(
        "violations: {}{}",
        report.violations,
        if report.settled { " (settled)" } else { "" }
    );
}

fn projection_check(report: &VerifyReport, settled: bool) -> Check {
    let behind = if settled { report.streams_behind } else { 0 };
    let tables: Vec<String> = report
        .tables
        .iter()
        .map(|t| {
            format!(
                "{} {} rows: {} missing, {} extra, {} different",
                t.table, t.live, t.missing, t.extra, t.different
            )
        })
        .collect();
    Check {
        name: format!("{} equals a fresh fold", report.projection.name()),
        violations: report.differences() + behind,
        detail: format!(
            "{} events folded; {}; {} streams behind the store",
            report.applied,
            tables.join("; "),
            report.streams_behind
        ),
    }
}

/// Per stream: the versions read back, checked against the store's last version.
#[derive(Debug, Default)]
struct Wire {
    /// The highest version seen so far.
    last: i32,
    /// The first version seen, when retention deleted the stream's earlier records.
    baseline: Option<i32>,
    duplicates: u64,
    out_of_order: u64,
}

async fn published(pool: &PgPool, kafka: &KafkaArgs, settled: bool) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    for stream_type in STREAM_TYPES {
        let topic = events_topic(&kafka.topic_prefix, stream_type);
        // Read the wire first: everything on it was committed before it was published, so
        // the store read afterwards holds it all.
        let (read, streams, undecodable) = tokio::task::spawn_blocking({
            let kafka = kafka.clone();
            let topic = topic.clone();
            move || {
                let mut streams: HashMap<Uuid, Wire> = HashMap::new();
                let mut undecodable = 0u64;
                let read = read_topic(&kafka, &topic, |partition, event| match event {
                    Ok(event) => {
                        let wire = streams.entry(event.stream_id).or_default();
                        if wire.last == 0 && event.version > 1 && partition.trimmed {
                            // Retention deleted this stream's first records: start here.
                            wire.baseline = Some(event.version);
                            wire.last = event.version;
                        } else if event.version <= wire.last {
                            wire.duplicates += 1;
                        } else if event.version == wire.last + 1 {
                            wire.last = event.version;
                        } else {
                            wire.out_of_order += 1;
                            wire.last = event.version;
                        }
                    }
                    Err(_) => undecodable += 1,
                });
                read.map(|read| (read, streams, undecodable))
            }
        })
        .await?
        .with_context(|| format!("reading {topic} back"))?;
        let stored: Vec<(Uuid, i32)> = sqlx::query_as(
            "select stream_id, max(version) from events where stream_type = $1 group by stream_id",
        )
        .bind(stream_type)
        .fetch_all(pool)
        .await?;
        let stored: HashMap<Uuid, i32> = stored.into_iter().collect();
        let (mut unpublished, mut uncommitted) = (0i64, 0i64);
        let mut behind = Vec::new();
        let mut trimmed_streams = 0;
        for (stream, last) in &stored {
            let wire = streams.get(stream);
            trimmed_streams += usize::from(wire.is_some_and(|wire| wire.baseline.is_some()));
            let seen = wire.map_or(0, |wire| wire.last);
            if seen < *last {
                unpublished += i64::from(last - seen);
                behind.push(format!("{stream} v{}..=v{last}", seen + 1));
            }
        }
        behind.sort();
        behind.truncate(3);
        for (stream, wire) in &streams {
            let last = stored.get(stream).copied().unwrap_or(0);
            uncommitted += i64::from((wire.last - last).max(0));
        }
        let duplicates: u64 = streams.values().map(|wire| wire.duplicates).sum();
        let out_of_order: u64 = streams.values().map(|wire| wire.out_of_order).sum();
        let events: i64 = stored.values().map(|&v| i64::from(v)).sum();
        let violations = out_of_order as i64
            + uncommitted
            + undecodable as i64
            + if settled { unpublished } else { 0 };
        checks.push(Check {
            name: format!("{topic} holds the store in order"),
            violations,
            detail: format!(
                "{} records in {} partitions for {events} stored events; {duplicates} repeats \
                 (at-least-once), {out_of_order} out of order or skipped, {uncommitted} not in \
                 the store, {unpublished} not yet published, {undecodable} undecodable, {} \
                 deleted by retention ({trimmed_streams} streams checked from there on){}{}",
                read.records,
                read.partitions,
                read.deleted,
                if read.past_end > 0 {
                    format!(
                        "; {} records lay past the end the broker reported (a broker fault)",
                        read.past_end
                    )
                } else {
                    String::new()
                },
                if behind.is_empty() {
                    String::new()
                } else {
                    format!(" (not published: {}…)", behind.join(", "))
                }
            ),
        });
    }
    Ok(checks)
}

/// The closing event of the order (`OrderConfirmed` or `OrderCancelled`), if any; used as
/// `left join lateral (...) closing on true` with the order's id as `$order`.
const CLOSING: &str = "(select event_type as kind from events \
     where stream_id = $order and event_type in ('OrderConfirmed', 'OrderCancelled') \
     order by version limit 1)";

/// Each check is one query returning `(violations bigint, detail text)`; `$1` is whether
/// the platform is settled.
fn store_queries() -> Vec<(&'static str, String)> {
    vec![
        (
            "every placed order has a saga",
            "select count(*) filter (where $1 and s.saga_id is null), \
                    format('%s placed orders, %s without a saga yet', count(*), \
                      count(*) filter (where s.saga_id is null)) \
             from events e left join sagas s on s.order_id = e.stream_id \
             where e.event_type = 'OrderPlaced'"
                .to_owned(),
        ),
        (
            "sagas finished",
            "select count(*) filter (where $1 and state not in ('CONFIRMED', 'CANCELLED')), \
                    format('%s confirmed, %s cancelled, %s running, %s compensating, %s stuck', \
                      count(*) filter (where state = 'CONFIRMED'), \
                      count(*) filter (where state = 'CANCELLED'), \
                      count(*) filter (where state = 'RUNNING'), \
                      count(*) filter (where state = 'COMPENSATING'), \
                      count(*) filter (where state = 'STUCK')) \
             from sagas"
                .to_owned(),
        ),
        (
            "sagas and orders end once",
            "with ends as (select stream_id, stream_type from events \
                 where event_type in ('SagaConfirmed', 'SagaCancelled', 'OrderConfirmed', \
                                      'OrderCancelled') \
                 group by stream_id, stream_type having count(*) > 1) \
             select count(*), format('%s sagas and %s orders ended more than once', \
                      count(*) filter (where stream_type = 'saga'), \
                      count(*) filter (where stream_type = 'order')) \
             from ends"
                .to_owned(),
        ),
        (
            "orders end as their sagas",
            format!(
                "select count(*) filter (where (s.state = 'CONFIRMED' and closing.kind is \
                          distinct from 'OrderConfirmed') \
                       or (s.state = 'CANCELLED' and closing.kind is distinct from \
                          'OrderCancelled')), \
                        format('%s finished sagas', count(*)) \
                 from sagas s left join lateral {} closing on true \
                 where s.state in ('CONFIRMED', 'CANCELLED')",
                CLOSING.replace("$order", "s.order_id")
            ),
        ),
        (
            "reservations balance",
            format!(
                "with moves as (select stream_id as product, (payload->>'orderId')::uuid as \
                          order_id, \
                        count(*) filter (where event_type = 'StockReserved') as taken, \
                        count(*) filter (where event_type = 'ReservationReleased') as released, \
                        count(*) filter (where event_type = 'ReservationCommitted') as committed \
                    from events where stream_type = 'product' and event_type in \
                      ('StockReserved', 'ReservationReleased', 'ReservationCommitted') \
                    group by 1, 2) \
                 select count(*) filter (where taken > 1 or released + committed > taken \
                          or ($1 and released + committed < taken) \
                          or (committed > 0 and closing.kind is distinct from 'OrderConfirmed') \
                          or (released > 0 and closing.kind = 'OrderConfirmed')), \
                        format('%s reservations: %s committed, %s released, %s open', count(*), \
                          count(*) filter (where committed > 0), \
                          count(*) filter (where released > 0), \
                          count(*) filter (where released + committed < taken)) \
                 from moves left join lateral {} closing on true",
                CLOSING.replace("$order", "moves.order_id")
            ),
        ),
        (
            "stock never below zero",
            "with moves as (select stream_id, version, \
                    case event_type \
                        when 'ProductCreated' then (payload->>'initialStock')::bigint \
                        when 'Restocked' then (payload->>'quantity')::bigint \
                        when 'StockReserved' then -(payload->>'quantity')::bigint \
                        when 'ReservationReleased' then (payload->>'quantity')::bigint \
                        else 0 end as available, \
                    case event_type \
                        when 'StockReserved' then (payload->>'quantity')::bigint \
                        when 'ReservationReleased' then -(payload->>'quantity')::bigint \
                        when 'ReservationCommitted' then -(payload->>'quantity')::bigint \
                        else 0 end as reserved, \
                    case event_type \
                        when 'ReservationCommitted' then (payload->>'quantity')::bigint \
                        else 0 end as sold \
                 from events where stream_type = 'product'), \
             running as (select stream_id, \
                    sum(available) over w as available, sum(reserved) over w as reserved, \
                    sum(sold) over w as sold, \
                    row_number() over (partition by stream_id order by version desc) as newest \
                 from moves window w as (partition by stream_id order by version)), \
             stock as (select stream_id, min(available) as lowest_available, \
                    min(reserved) as lowest_reserved, \
                    max(available) filter (where newest = 1) as available, \
                    max(reserved) filter (where newest = 1) as reserved, \
                    max(sold) filter (where newest = 1) as sold \
                 from running group by stream_id) \
             select count(*) filter (where lowest_available < 0 or lowest_reserved < 0), \
                    format('%s products: %s available, %s reserved, %s sold', count(*), \
                      coalesce(sum(available), 0), coalesce(sum(reserved), 0), \
                      coalesce(sum(sold), 0)) \
             from stock"
                .to_owned(),
        ),
        (
            "no order charged twice",
            format!(
                "with payments as (select a.order_id, \
                        count(*) filter (where e.event_type = 'PaymentAuthorized') as authorized, \
                        count(*) filter (where e.event_type = 'PaymentCaptured') as captured, \
                        count(*) filter (where e.event_type = 'PaymentVoided') as voided \
                    from (select stream_id, (payload->>'orderId')::uuid as order_id from events \
                          where event_type = 'PaymentAuthorized') a \
                    join events e on e.stream_id = a.stream_id group by a.order_id), \
                 provider as (select order_id, \
                        count(*) filter (where outcome = 'captured') as captured \
                    from simulated_payments group by order_id) \
                 select count(*) filter (where p.authorized > 1 or p.captured > 1 \
                          or p.captured + p.voided > 1 or coalesce(pr.captured, 0) > 1 \
                          or ((p.captured > 0 or coalesce(pr.captured, 0) > 0) \
                              and closing.kind = 'OrderCancelled') \
                          or ($1 and coalesce(pr.captured, 0) <> p.captured) \
                          or ($1 and p.captured + p.voided = 0) \
                          or ($1 and closing.kind = 'OrderConfirmed' and p.captured = 0)), \
                        format('%s authorized payments: %s captured, %s voided', count(*), \
                          coalesce(sum(p.captured), 0), coalesce(sum(p.voided), 0)) \
                 from payments p left join provider pr using (order_id) \
                 left join lateral {} closing on true",
                CLOSING.replace("$order", "p.order_id")
            ),
        ),
    ]
}

async fn store_checks(pool: &PgPool, settled: bool) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (name, sql) in store_queries() {
        let (violations, detail): (i64, String) = sqlx::query_as(&sql)
            .bind(settled)
            .fetch_one(pool)
            .await
            .with_context(|| format!("checking that {name}"))?;
        checks.push(Check {
            name: name.to_owned(),
            violations,
            detail,
        });
    }
    Ok(checks)
}
