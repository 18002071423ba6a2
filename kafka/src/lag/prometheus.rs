//! A [`LagReport`] in the Prometheus text format, with kafka-lag-exporter's metric names
//! where a dashboard user expects them. Rendered at scrape time from the latest report, so
//! a group's series exist exactly as long as the group is reported.

use orderflow_store::telemetry::Gauges;

use super::eval::{LagReport, Status};

/// A metric family's name, help and how a value is read.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// Append the report's metrics to `out`.
pub fn render(report: &LagReport, out: &mut String) {
    Gauges::family(
        out,
        "orderflow_lag_monitor_up",
        "1 when the last sample of the broker's offsets succeeded",
    )
    .sample(
        "orderflow_lag_monitor_up",
        &[],
        f64::from(u8::from(report.up)),
    );

    let partitions = || {
        report.groups.iter().flat_map(|g| {
            g.partitions
                .iter()
                .map(move |p| (g.group.as_str(), p, p.partition.to_string()))
        })
    };
    let committed = || partitions().filter(|(_, p, _)| p.committed_offset.is_some());
    let per_partition: [Family<super::PartitionLag, f64>; 4] = [
        (
            "kafka_consumergroup_group_offset",
            "Committed offset",
            |p| p.committed_offset.unwrap_or(0) as f64,
        ),
        (
            "kafka_consumergroup_group_lag",
            "Records behind log end (partitions with a commit)",
            |p| p.lag.unwrap_or(0) as f64,
        ),
        (
            "kafka_consumergroup_group_lag_seconds",
            "Age of the first unconsumed record; 0 when caught up",
            |p| p.lag_seconds.unwrap_or(0.0),
        ),
        (
            "kafka_consumergroup_group_lag_seconds_interpolated",
            "1 when lag seconds is interpolated from sampled log ends, not read from a record",
            |p| f64::from(u8::from(p.lag_seconds_interpolated)),
        ),
    ];
    for (name, help, value) in per_partition {
        let mut family = Gauges::family(out, name, help);
        for (group, p, partition) in committed() {
            family.sample(
                name,
                &[
                    ("group", group),
                    ("topic", &p.topic),
                    ("partition", &partition),
                ],
                value(p),
            );
        }
    }
    let name = "kafka_consumergroup_group_partition_status";
    let mut family = Gauges::family(
        out,
        name,
        "1 for the partition's status (Burrow's meanings)",
    );
    // Every partition: one without a commit can be STALL/STOP too (records left waiting).
    for (group, p, partition) in partitions() {
        for status in Status::ALL {
            family.sample(
                name,
                &[
                    ("group", group),
                    ("topic", &p.topic),
                    ("partition", &partition),
                    ("status", status.as_str()),
                ],
                f64::from(u8::from(p.status == status)),
            );
        }
    }
    let name = "kafka_consumergroup_group_status";
    let mut family = Gauges::family(out, name, "1 for the group's status: its worst partition's");
    for g in &report.groups {
        for status in Status::ALL {
            family.sample(
                name,
                &[("group", &g.group), ("status", status.as_str())],
                f64::from(u8::from(g.status == status)),
            );
        }
    }

    let per_group: [Family<super::GroupLag, Option<f64>>; 8] = [
        (
            "kafka_consumergroup_group_max_lag",
            "Largest partition lag in records",
            |g| Some(g.max_lag as f64),
        ),
        (
            "kafka_consumergroup_group_max_lag_seconds",
            "Largest partition lag in seconds",
            |g| Some(g.lag_seconds),
        ),
        (
            "kafka_consumergroup_group_sum_lag",
            "Records behind, over partitions with a commit",
            |g| Some(g.lag as f64),
        ),
        (
            "kafka_consumergroup_group_uncommitted_partitions",
            "Partitions of the group's topics without a commit (not in the totals)",
            |g| Some(g.uncommitted_partitions as f64),
        ),
        (
            "kafka_consumergroup_group_members",
            "Members of the group",
            |g| g.members.map(|m| m as f64),
        ),
        (
            "kafka_consumergroup_group_consume_rate",
            "Records consumed per second over the status window",
            |g| g.consume_rate,
        ),
        (
            "kafka_consumergroup_group_produce_rate",
            "Records produced per second into the group's partitions over the status window",
            |g| g.produce_rate,
        ),
        (
            "kafka_consumergroup_group_drain_seconds",
            "Estimated seconds to consume the backlog at current rates; +Inf when it grows",
            |g| match (g.drain_seconds, g.consume_rate) {
                (Some(seconds), _) => Some(seconds),
                (None, Some(_)) => Some(f64::INFINITY),
                (None, None) => None,
            },
        ),
    ];
    for (name, help, value) in per_group {
        let mut family = Gauges::family(out, name, help);
        for g in &report.groups {
            if let Some(value) = value(g) {
                family.sample(name, &[("group", &g.group)], value);
            }
        }
    }
    let name = "kafka_consumergroup_group_topic_sum_lag";
    let mut family = Gauges::family(out, name, "Records behind per topic");
    for g in &report.groups {
        for t in &g.topics {
            family.sample(
                name,
                &[("group", &g.group), ("topic", &t.topic)],
                t.lag as f64,
            );
        }
    }

    for (name, help, end) in [
        (
            "kafka_partition_latest_offset",
            "Log end offset (high watermark)",
            true,
        ),
        ("kafka_partition_earliest_offset", "Log start offset", false),
    ] {
        let mut family = Gauges::family(out, name, help);
        for (topic, partition, start, stop) in &report.watermarks {
            let partition = partition.to_string();
            let value = if end { *stop } else { *start };
            family.sample(
                name,
                &[("topic", topic), ("partition", &partition)],
                value as f64,
            );
        }
    }
}
