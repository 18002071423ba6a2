//! Operations wiring: which consumer groups the platform has, and the small HTTP listener
//! (`--ops-listen`) that the roles without an API of their own (relay, projector, saga)
//! serve `/health`, `/ready` and `/metrics` on.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orderflow_domain::order::Order;
use orderflow_domain::Aggregate as _;
use orderflow_kafka::lag::{GroupSpec, LagMonitor};
use orderflow_kafka::topics::events_topic;
use orderflow_projector::worker::WorkerOptions;
use orderflow_projector::Projection;
use orderflow_store::telemetry::{self, Readiness};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

/// The consumer group of each projection in `projections`.
pub(crate) fn projector_groups(
    topic_prefix: &str,
    group_prefix: &str,
    projections: &[&'static dyn Projection],
) -> Vec<GroupSpec> {
    let options = WorkerOptions {
        group_prefix: group_prefix.to_owned(),
        ..WorkerOptions::default()
    };
    projections
        .iter()
        .map(|projection| GroupSpec {
            group: options.group(*projection),
            topics: projection
                .stream_types()
                .iter()
                .map(|stream_type| events_topic(topic_prefix, stream_type))
                .collect(),
        })
        .collect()
}

/// The saga orchestrator's consumer group.
pub(crate) fn saga_group(topic_prefix: &str, group: &str) -> GroupSpec {
    GroupSpec {
        group: group.to_owned(),
        topics: vec![events_topic(topic_prefix, Order::STREAM_TYPE)],
    }
}

/// Every consumer group of the platform: each projection's and the saga's.
pub(crate) fn platform_groups(topic_prefix: &str, group_prefix: &str) -> Vec<GroupSpec> {
    let mut groups = projector_groups(topic_prefix, group_prefix, orderflow_projector::PROJECTIONS);
    groups.push(saga_group(topic_prefix, orderflow_command::saga::GROUP));
    groups
}

/// Figures a role reads at scrape time, appended to its `/metrics`.
pub(crate) type Figures =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    pool: PgPool,
    readiness: Readiness,
    monitor: Option<LagMonitor>,
    figures: Option<Figures>,
}

/// Serve `/health`, `/ready` and `/metrics` on `addr` until `shutdown` flips.
pub(crate) async fn serve(
    addr: SocketAddr,
    role: &'static str,
    pool: PgPool,
    readiness: Readiness,
    monitor: Option<LagMonitor>,
    figures: Option<Figures>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            // A second instance on one host with the default port: the role still works,
            // without its ops endpoints, and says so.
            tracing::error!(%addr, %err, role, "cannot listen for /health, /ready and /metrics (--ops-listen); running without them");
            return Ok(());
        }
    };
    tracing::info!(addr = %listener.local_addr()?, role, "ops endpoints listening (/health, /ready, /metrics)");
    let app = Router::new()
        .route(
            "/health",
            get(|| async { Json(orderflow_store::health::alive()) }),
        )
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            pool,
            readiness,
            monitor,
            figures,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .context("serving the ops endpoints")
}

/// How long the lag monitor may fail to read the broker before the role is not ready.
const MONITOR_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Ready when the database answers and no component reports a problem (a broker that
/// fails, a lag monitor that cannot read offsets); otherwise 503 with the reasons.
async fn ready(State(state): State<OpsState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut problems: serde_json::Map<String, serde_json::Value> = state
        .readiness
        .problems()
        .into_iter()
        .map(|(component, why)| (component.to_owned(), why.into()))
        .collect();
    if let (false, body) = orderflow_store::health::ready(&state.pool).await {
        problems.insert("database".into(), body["error"].clone());
    }
    if let Some(monitor) = &state.monitor {
        // A monitor that has not read the broker for a while means the role cannot either;
        // a passing failure (or one unreadable partition) is no reason to take it out.
        let report = monitor.latest();
        let failing_for = report
            .failing_since
            .map(|since| chrono::Utc::now() - since)
            .unwrap_or_default();
        if let (false, Some(error)) = (report.up, &report.error) {
            if failing_for >= MONITOR_GRACE {
                problems.insert("lag monitor".into(), error.clone().into());
            }
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "problems": problems })),
        )
    }
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut text = telemetry::render();
    if let Some(monitor) = &state.monitor {
        orderflow_query::ops::render_monitor(monitor, &mut text);
    }
    if let Some(figures) = &state.figures {
        let extra: String = (figures.as_ref())().await;
        text.push_str(&extra);
    }
    ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], text).into_response()
}
