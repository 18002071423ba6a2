//! The operator's surfaces end to end, with the `orderflow` binary against the test
//! PostgreSQL and a real Kafka-protocol broker: `/metrics` parses and names every metric
//! the dashboard and alert rules use, `orderflow lag --json` agrees with the GraphQL ops
//! fields, `/ops` renders in headless Chromium, and roles whose broker fails every request
//! say so on `/ready`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

mod common;

use common::{brokers, database_url, free_port, BIN};

/// A child process, killed when dropped.
struct Role {
    _child: Child,
}

/// The HS256 secret the command and query roles verify with here (`orderflow dev` makes
/// its own, under `ORDERFLOW_HOME`).
const SECRET: &str = "ops-tests-secret-0123456789abcdef-0123";

/// An admin token signed with `secret`.
fn admin_token(secret: &str) -> String {
    orderflow_store::auth::mint(
        secret.as_bytes(),
        orderflow_store::auth::DEFAULT_ISSUER,
        orderflow_store::auth::DEFAULT_AUDIENCE,
        "ops-tests",
        &[orderflow_store::auth::Role::Admin],
        Duration::from_secs(3600),
    )
    .expect("a token")
}

/// A client that sends an admin token signed with `secret`.
fn admin_client(secret: &str) -> reqwest::Client {
    let token = admin_token(secret);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client")
}

impl Role {
    fn start(args: &[&str], database: &str, brokers: &str) -> Self {
        Self::start_in(
            args,
            database,
            brokers,
            Path::new(env!("CARGO_TARGET_TMPDIR")),
        )
    }

    /// With `ORDERFLOW_HOME` (where `orderflow dev` keeps its secret) at `home`.
    fn start_in(args: &[&str], database: &str, brokers: &str, home: &Path) -> Self {
        let child = Command::new(BIN)
            .args(args)
            .env("DATABASE_URL", database)
            .env("KAFKA_BROKERS", brokers)
            .env("ORDERFLOW_AUTH_SECRET", SECRET)
            .env("ORDERFLOW_HOME", home)
            .env(
                "RUST_LOG",
                std::env::var("ORDERFLOW_TEST_ROLE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("orderflow starts");
        Self { _child: child }
    }
}

/// Poll `url` until `done` says yes; the last answer's status and body.
async fn poll(url: &str, within: Duration, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut last = (0, String::new());
    loop {
        if let Ok(response) = client.get(url).send().await {
            let status = response.status().as_u16();
            last = (status, response.text().await.unwrap_or_default());
            if done(last.0, &last.1) {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not get there within {} s; last answer {} {}",
            within.as_secs(),
            last.0,
            last.1
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let response = client.post(&url).json(&body).send().await.expect("sent");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn graphql(client: &reqwest::Client, url: &str, query: &str) -> Value {
    let answer: Value = client
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"].clone()
}

/// A placed order, so every role has something to show (the saga runs its steps).
async fn some_traffic(client: &reqwest::Client, api: &str) {
    let user = post(
        client,
        format!("{api}/api/users"),
        json!({"name": "Ops Tester", "email": format!("ops-{}@example.com", uuid::Uuid::new_v4())}),
    )
    .await["streamId"]
        .as_str()
        .unwrap()
        .to_owned();
    let product = post(
        client,
        format!("{api}/api/products"),
        json!({"sku": format!("OPS-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
               "name": "Gauge", "price": {"amountMinor": 1200, "currency": "EUR"},
               "initialStock": 10}),
    )
    .await["streamId"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = post(
        client,
        format!("{api}/api/orders"),
        json!({"userId": user, "currency": "EUR"}),
    )
    .await["streamId"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        client,
        format!("{api}/api/orders/{order}/items"),
        json!({"productId": product, "quantity": 2}),
    )
    .await;
    post(client, format!("{api}/api/orders/{order}/place"), json!({})).await;
}

/// Metric names a scrape exposes (histograms by their base name too).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics is Prometheus text");
    let mut names = BTreeSet::new();
    for sample in &scrape.samples {
        names.insert(sample.metric.clone());
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.metric.strip_suffix(suffix) {
                names.insert(base.to_owned());
            }
        }
    }
    names
}

// Every role applies the migrations at start.
#[sqlx::test(migrations = false)]
async fn metrics_lag_json_graphql_and_the_ops_page_agree_on_a_running_platform(pool: PgPool) {
    let database = database_url(&pool);
    let brokers = brokers();
    let prefix = format!("ops{}", uuid::Uuid::new_v4().simple());
    let (api, query) = (free_port().await, free_port().await);
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&prefix);
    let _dev = Role::start_in(
        &[
            "dev",
            "--topic-prefix",
            &prefix,
            "--command-listen",
            &api.to_string(),
            "--query-listen",
            &query.to_string(),
            "--lag-interval-ms",
            "500",
            "--lag-window",
            "4",
            "--group-prefix",
            &format!("{prefix}.projector"),
        ],
        &database,
        &brokers,
        &home,
    );
    let (api, query) = (format!("http://{api}"), format!("http://{query}"));
    poll(
        &format!("{query}/ready"),
        Duration::from_secs(60),
        |s, _| s == 200,
    )
    .await;
    // The secret `orderflow dev` made for its data directory signs the tokens it accepts.
    let secret = std::fs::read_to_string(home.join("auth-secret")).expect("dev's secret");
    let client = admin_client(secret.trim());
    let anonymous = reqwest::Client::new()
        .post(format!("{query}/graphql"))
        .json(&json!({"query": "{ consumerGroups { group } }"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401, "GraphQL answers only with a token");
    some_traffic(&client, &api).await;

    // The saga has finished, the relay has published everything and every group has
    // consumed it; then `orderflow lag --json` sees what GraphQL shows. The monitor samples
    // on its own clock, so a GraphQL answer may predate the last records: compare until
    // the two agree on a settled platform.
    let offsets = |groups: &[Value]| -> BTreeSet<String> {
        groups
            .iter()
            .flat_map(|g| {
                g["partitions"].as_array().unwrap().iter().map(move |p| {
                    format!(
                        "{} {} {} {} {} {}",
                        g["group"],
                        p["topic"],
                        p["partition"],
                        p["committedOffset"],
                        p["logEndOffset"],
                        p["lag"]
                    )
                })
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (groups, printed) = loop {
        let data = graphql(
            &client,
            &query,
            "{ sagaCounts { state count } relay { backlog } consumerGroups { group lag status \
               members partitions { topic partition committedOffset logEndOffset lag } } }",
        )
        .await;
        let confirmed = data["sagaCounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["state"] == "CONFIRMED" && s["count"] == 1);
        let groups = data["consumerGroups"].as_array().unwrap().clone();
        // Every partition with records has a commit at its end, and no lag. At or past it:
        // tansu's memory engine reports a partition's end as its newest batch's first
        // offset plus one, below what it acknowledged when that batch held several records.
        let caught_up = groups.len() == 5
            && data["relay"]["backlog"] == 0
            && groups.iter().all(|g| {
                g["partitions"].as_array().unwrap().iter().all(|p| {
                    let end = p["logEndOffset"].as_i64().unwrap_or(0);
                    end == 0
                        || (p["committedOffset"].as_i64().is_some_and(|c| c >= end)
                            && p["lag"] == 0)
                })
            });
        if confirmed && caught_up {
            let output = Command::new(BIN)
                .args([
                    "lag",
                    "--json",
                    "--interval-ms",
                    "200",
                    "--topic-prefix",
                    &prefix,
                ])
                .args(["--group-prefix", &format!("{prefix}.projector")])
                .env("KAFKA_BROKERS", &brokers)
                .env("DATABASE_URL", &database)
                .output()
                .await
                .expect("orderflow lag runs");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let printed: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
            let agree = offsets(printed["consumerGroups"].as_array().unwrap()) == offsets(&groups);
            if agree || Instant::now() >= deadline {
                break (groups, printed);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the platform did not settle: {data}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        offsets(printed["consumerGroups"].as_array().unwrap()),
        offsets(&groups)
    );
    assert!(printed["relay"]["backlog"].is_number(), "{printed}");
    assert!(printed["sagaCounts"].is_array(), "{printed}");

    // /metrics parses, and names every metric the alert rules and the dashboard use.
    let metrics = reqwest::get(format!("{query}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposed = exposed_names(&metrics);
    // Prometheus's own parser and linter, where installed (scripts/test installs it).
    if let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
        let checked = promtool.wait_with_output().unwrap();
        assert!(
            checked.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    let listed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/metrics.txt"))
            .expect("ops/metrics.txt");
    let missing: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|name| !exposed.contains(*name))
        .collect();
    assert!(missing.is_empty(), "/metrics lacks {missing:?}");

    // The dashboard renders its charts in a real browser, without console errors.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops.png");
    let check =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ops-browser-check"))
            .arg(&query)
            .arg(&screenshot)
            .env("OPS_TOKEN", admin_token(secret.trim()))
            .output()
            .await
            .expect("scripts/ops-browser-check runs");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A TCP proxy in front of the broker that can be switched to accept connections and fail
/// every request (close them), as tansu does after an internal panic.
struct Breakable {
    broken: Arc<AtomicBool>,
}

impl Breakable {
    async fn start(listen: SocketAddr, upstream: SocketAddr) -> Self {
        let broken = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind(listen).await.expect("proxy binds");
        let flag = broken.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        // Read the request, answer nothing, hang up.
                        let mut buf = [0u8; 1024];
                        let _ = client.read(&mut buf).await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.split();
                    let (mut server_read, mut server_write) = server.split();
                    let copy = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                            _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                        }
                    };
                    // A connection open when the broker breaks breaks with it.
                    let cut = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        () = copy => {}
                        () = cut => {}
                    }
                });
            }
        });
        Self { broken }
    }

    fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }
}

/// A tansu broker of the test's own (memory engine) that advertises `advertised`.
fn own_tansu(port: u16, advertised: SocketAddr) -> Child {
    let bin =
        std::env::var("TANSU_BIN").expect("TANSU_BIN names a tansu binary (scripts/test sets it)");
    Command::new(bin)
        .args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://{advertised}"),
        ])
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("tansu starts")
}

// Every role applies the migrations at start.
#[sqlx::test(migrations = false)]
async fn relay_and_projector_say_why_they_are_not_ready_while_the_broker_fails_every_request(
    pool: PgPool,
) {
    let database = database_url(&pool);
    let (tansu_port, proxy) = (free_port().await, free_port().await);
    let _tansu = own_tansu(tansu_port.port(), proxy);
    let breakable = Breakable::start(proxy, tansu_port).await;
    let brokers = proxy.to_string();
    let (api, relay_ops, projector_ops) = (free_port().await, free_port().await, free_port().await);
    let _command = Role::start(
        &["command", "--listen", &api.to_string()],
        &database,
        &brokers,
    );
    let _relay = Role::start(
        &["relay", "--ops-listen", &relay_ops.to_string()],
        &database,
        &brokers,
    );
    let _projector = Role::start(
        &[
            "projector",
            "--ops-listen",
            &projector_ops.to_string(),
            "--lag-interval-ms",
            "500",
        ],
        &database,
        &brokers,
    );
    let ready = |addr: SocketAddr| format!("http://{addr}/ready");
    for ops in [relay_ops, projector_ops] {
        poll(&ready(ops), Duration::from_secs(60), |s, _| s == 200).await;
    }
    poll(
        &format!("http://{api}/ready"),
        Duration::from_secs(30),
        |s, _| s == 200,
    )
    .await;
    let client = reqwest::Client::new();
    let register = |n: u32| json!({"name": "Broken Broker", "email": format!("broken-{n}-{}@example.com", uuid::Uuid::new_v4())});
    post(&client, format!("http://{api}/api/users"), register(0)).await;

    let status = |text: &str| -> Option<String> {
        text.lines()
            .filter(|l| {
                l.starts_with(
                    "kafka_consumergroup_group_status{group=\"orderflow.projector.user_view\"",
                )
            })
            .find(|l| l.ends_with(" 1"))
            .and_then(|l| l.split("status=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned)
    };
    let projector_metrics = format!("http://{projector_ops}/metrics");
    // The projector's lag monitor has seen its groups.
    poll(&projector_metrics, Duration::from_secs(30), |_, body| {
        status(body).as_deref() == Some("OK")
    })
    .await;

    breakable.set_broken(true);
    // Connections open at the break are cut within 50 ms: the next event meets a broken broker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    post(&client, format!("http://{api}/api/users"), register(1)).await;
    let (_, why) = poll(&ready(relay_ops), Duration::from_secs(60), |s, body| {
        s == 503 && body.contains("broker")
    })
    .await;
    assert!(why.contains("publishing failed"), "{why}");
    let (_, why) = poll(&ready(projector_ops), Duration::from_secs(60), |s, body| {
        s == 503 && body.contains("lag monitor")
    })
    .await;
    assert!(why.contains("broker"), "{why}");
    // The groups cannot be seen to move, and their consumers cannot fetch: STALL, then STOP.
    poll(&projector_metrics, Duration::from_secs(30), |_, body| {
        matches!(status(body).as_deref(), Some("STALL" | "STOP"))
    })
    .await;
    // The unpublished event ages on the relay's /metrics.
    let age = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("orderflow_relay_backlog_oldest_age_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = format!("http://{relay_ops}/metrics");
    let (_, first) = poll(&metrics, Duration::from_secs(10), |s, body| {
        s == 200 && age(body) > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, later) = poll(&metrics, Duration::from_secs(10), |s, _| s == 200).await;
    assert!(age(&later) > age(&first), "the backlog's age grows");

    // A healthy broker again: both recover by themselves and the backlog drains. A projector
    // whose topics stay quiet counts as ready after 40 s without errors (QUIET_AFTER_FAILURE),
    // plus its last backoff (up to 5 s): about 45 s here; the errors queued during the outage
    // must not add to that.
    breakable.set_broken(false);
    let healed = Instant::now();
    for ops in [relay_ops, projector_ops] {
        poll(&ready(ops), Duration::from_secs(75), |s, _| s == 200).await;
        eprintln!("{ops} ready {:?} after the broker healed", healed.elapsed());
    }
    poll(&projector_metrics, Duration::from_secs(30), |_, body| {
        status(body).as_deref() == Some("OK")
    })
    .await;
    poll(&metrics, Duration::from_secs(60), |_, body| {
        body.contains("orderflow_relay_backlog_events 0\n")
    })
    .await;
}

/// A stand-in OTLP/HTTP collector: answers every POST with 200 and hands over the path and
/// body of each.
async fn fake_collector(
    listen: SocketAddr,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    use tokio::io::AsyncWriteExt as _;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = TcpListener::bind(listen).await.expect("collector binds");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    // Headers, then a body of Content-Length bytes; keep-alive allowed.
                    let head_end = loop {
                        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buffer.len() < head_end + length {
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buffer[head_end..head_end + length].to_vec();
                    buffer.drain(..head_end + length);
                    let _ = tx.send((path, body));
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    rx
}

#[sqlx::test(migrations = false)]
async fn a_requests_correlation_id_reaches_the_spans_exported_over_otlp(pool: PgPool) {
    let database = database_url(&pool);
    let (collector, api) = (free_port().await, free_port().await);
    let mut received = fake_collector(collector).await;
    let child = Command::new(BIN)
        .args(["command", "--listen", &api.to_string()])
        .env("DATABASE_URL", &database)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("ORDERFLOW_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow starts");
    let _command = Role { _child: child };
    poll(
        &format!("http://{api}/ready"),
        Duration::from_secs(30),
        |s, _| s == 200,
    )
    .await;
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let response = reqwest::Client::new()
        .post(format!("http://{api}/api/users"))
        .header("X-Correlation-Id", &correlation_id)
        .json(&json!({"name": "Traced", "email": format!("traced-{correlation_id}@example.com")}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(Some((path, body))) = tokio::time::timeout_at(deadline, received.recv()).await
        else {
            panic!("no span with correlation id {correlation_id} reached the collector");
        };
        assert_eq!(path, "/v1/traces");
        if body
            .windows(correlation_id.len())
            .any(|w| w == correlation_id.as_bytes())
        {
            break;
        }
    }
}
