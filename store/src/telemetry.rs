//! What every role exports for operators: the process's Prometheus metrics (counters and
//! histograms recorded through the `metrics` facade), HTTP request latency per route, and
//! the reasons a role is not ready. Figures read from a database or a broker at scrape
//! time are rendered by their owners and appended to [`render`]'s output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 1 ms to 60 s, for requests and pipeline latencies alike.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder (once; later calls are no-ops). Without it the
/// `metrics` macros record nothing, so every role calls this at start.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty");
        match builder.install_recorder() {
            Ok(handle) => {
                describe();
                let upkeep = handle.clone();
                // Histograms buffer samples until upkeep folds them in.
                std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    })
                    .ok();
                Some(handle)
            }
            Err(err) => {
                tracing::warn!(%err, "cannot install the metrics recorder; /metrics shows scrape-time figures only");
                None
            }
        }
    });
}

/// Help texts of the metrics the roles record (a family without one is a lint error to
/// Prometheus's tools).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP requests by role, method, matched route and status"
    );
    describe_counter!(
        "orderflow_events_appended_total",
        "Events appended to the event store, by stream type"
    );
    describe_counter!(
        "orderflow_relay_published_total",
        "Events the relay published and the broker acknowledged"
    );
    describe_gauge!(
        "orderflow_relay_batching_producer",
        "1 while the relay publishes through its batching producer, 0 through its prompt one"
    );
    describe_counter!(
        "orderflow_projector_applied_total",
        "Events handed to a projection in committed batches, by projection"
    );
    describe_histogram!(
        "orderflow_projection_apply_latency_seconds",
        Unit::Seconds,
        "From an event's commit to its projection's batch commit, by projection"
    );
    describe_gauge!(
        "orderflow_consumer_assigned_partitions",
        "Partitions this process's member of a consumer group holds, by group"
    );
    describe_counter!(
        "orderflow_consumer_rejoins_total",
        "Times a member left its group and joined again because partitions of the group were left to nobody, by group"
    );
    describe_counter!(
        "orderflow_consumer_unrewound_assignments_total",
        "Assignments started at the committed offsets without rewinding, because reading them failed"
    );
    describe_histogram!(
        "orderflow_saga_step_duration_seconds",
        Unit::Seconds,
        "How long each saga step took, from start to finish, by step"
    );
}

/// The process's counters and histograms in the Prometheus text format.
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Records `http_request_duration_seconds{role,method,route,status}` for every request;
/// the route is the matched pattern (`/api/orders/{id}`), never the raw path, so ids do not
/// make series.
pub async fn track_http(role: &'static str, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Methods outside the standard set are one series: a client choosing its own method
    // names must not make new ones.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_owned(),
        _ => "OTHER".to_owned(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "http_request_duration_seconds",
        "role" => role,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Why a role is not ready, by component; empty when ready. Loops report into it and
/// `/ready` shows it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<&'static str, String>>>);

impl Readiness {
    /// `component` works again.
    pub fn ok(&self, component: &'static str) {
        if let Ok(mut problems) = self.0.lock() {
            problems.remove(component);
        }
    }

    /// `component` does not work, and why.
    pub fn problem(&self, component: &'static str, why: impl Into<String>) {
        if let Ok(mut problems) = self.0.lock() {
            problems.insert(component, why.into());
        }
    }

    pub fn problems(&self) -> BTreeMap<&'static str, String> {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A Prometheus gauge family written by hand, for figures computed at scrape time (so a
/// series exists exactly as long as what it measures).
#[derive(Debug)]
pub struct Gauges<'a> {
    out: &'a mut String,
}

impl<'a> Gauges<'a> {
    /// Start the family `name` with its help text.
    pub fn family(out: &'a mut String, name: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        Self { out }
    }

    /// One sample of the family; `+Inf` for infinite values.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = if value.is_infinite() && value > 0.0 {
            writeln!(self.out, " +Inf")
        } else {
            writeln!(self.out, " {value}")
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_infinity_is_spelled_as_prometheus_reads_it() {
        let mut out = String::new();
        Gauges::family(&mut out, "x_seconds", "help")
            .sample("x_seconds", &[("group", "a\"b\\c\nd")], f64::INFINITY)
            .sample("x_seconds", &[], 1.5);
        assert_eq!(
            out,
            "# HELP x_seconds help\n# TYPE x_seconds gauge\n\
             x_seconds{group=\"a\\\"b\\\\c\\nd\"} +Inf\nx_seconds 1.5\n"
        );
    }
}
