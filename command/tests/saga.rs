//! The fulfilment saga against a real PostgreSQL (and, for the intake, a real
//! Kafka-protocol broker): outcomes, compensation, failures, restarts and races.
//!
//! Most tests hand placed orders to the driver as the intake would (a row per
//! `OrderPlaced`, read from the store) so they control timing; the pipeline tests run the
//! whole path through the relay and the broker.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::kafka::{brokers, fresh_topics};
use common::{spawn_app, TestApp};
use orderflow_command::relay::{self, RelayOptions};
use orderflow_command::saga::gateway::{
    Authorize, Circuit, GatewayError, Operation, PaymentGateway, ResilienceOptions, Resilient,
    Settle, SimulatedGateway, SimulatorArgs,
};
use orderflow_command::saga::rows::{self, Placed, SagaRow};
use orderflow_command::saga::{Orchestrator, SagaOptions};
use orderflow_command::write::Writer;
use orderflow_domain::saga::saga_id;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The simulator behind a gate: authorize calls wait for a permit, so a test can act while
/// the saga is mid-authorization.
#[derive(Clone)]
struct Gated {
    inner: SimulatedGateway,
    gate: Arc<Semaphore>,
}

impl PaymentGateway for Gated {
    async fn authorize(&self, call: &Authorize) -> Result<String, GatewayError> {
        let permit = self.gate.acquire().await.expect("gate open");
        permit.forget();
        self.inner.authorize(call).await
    }
    async fn capture(&self, call: &Settle) -> Result<(), GatewayError> {
        self.inner.capture(call).await
    }
    async fn void(&self, call: &Settle) -> Result<Option<String>, GatewayError> {
        self.inner.void(call).await
    }
}

/// The simulator whose first `slow` authorize answers come too late: the call takes
/// effect, then the answer is lost to the caller's timeout.
#[derive(Clone)]
struct LateAnswers {
    inner: SimulatedGateway,
    slow: Arc<std::sync::atomic::AtomicU32>,
}

impl PaymentGateway for LateAnswers {
    async fn authorize(&self, call: &Authorize) -> Result<String, GatewayError> {
        let answer = self.inner.authorize(call).await;
        let left = self.slow.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.slow
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        answer
    }
    async fn capture(&self, call: &Settle) -> Result<(), GatewayError> {
        self.inner.capture(call).await
    }
    async fn void(&self, call: &Settle) -> Result<Option<String>, GatewayError> {
        self.inner.void(call).await
    }
}

/// The simulator, except that one call of `hang` takes effect and then never answers: an
/// orchestrator killed while waiting on it dies after that step's effect, before
/// recording it.
#[derive(Clone)]
struct HangsAfter {
    inner: SimulatedGateway,
    hang: Operation,
    entered: Arc<tokio::sync::Notify>,
}

impl HangsAfter {
    async fn maybe_hang(&self, operation: Operation) {
        if operation == self.hang {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

impl PaymentGateway for HangsAfter {
    async fn authorize(&self, call: &Authorize) -> Result<String, GatewayError> {
        let answer = self.inner.authorize(call).await;
        self.maybe_hang(Operation::Authorize).await;
        answer
    }
    async fn capture(&self, call: &Settle) -> Result<(), GatewayError> {
        let answer = self.inner.capture(call).await;
        self.maybe_hang(Operation::Capture).await;
        answer
    }
    async fn void(&self, call: &Settle) -> Result<Option<String>, GatewayError> {
        let answer = self.inner.void(call).await;
        self.maybe_hang(Operation::Void).await;
        answer
    }
}

fn options(group: &str) -> SagaOptions {
    SagaOptions {
        step_timeout: Duration::from_secs(20),
        max_attempts: 3,
        lease: Duration::from_secs(2),
        poll: Duration::from_millis(50),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        group: group.into(),
        ..SagaOptions::default()
    }
}

fn resilience() -> ResilienceOptions {
    ResilienceOptions {
        call_timeout: Duration::from_secs(2),
        failure_threshold: 50,
        open_for: Duration::from_millis(500),
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops gracefully.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }

    /// Dies on the spot, as a killed process would: whatever it was doing stops mid-way.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A driver (no intake) over `pool`.
fn drive<G: PaymentGateway>(pool: &PgPool, gateway: G, options: SagaOptions) -> Running {
    let writer = Writer::new(pool.clone(), 10_000);
    let orchestrator = Orchestrator::new(writer, Resilient::new(gateway, resilience()), options);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(orchestrator.drive(shutdown));
    Running { stop, task }
}

fn simulator(pool: &PgPool, args: SimulatorArgs) -> SimulatedGateway {
    SimulatedGateway::new(pool.clone(), args)
}

/// A customer and a shop, through the REST API.
struct Shop {
    app: TestApp,
    user: Uuid,
    tag: String,
}

impl Shop {
    async fn open(pool: PgPool) -> Self {
        let app = spawn_app(pool).await;
        let tag = Uuid::new_v4().simple().to_string()[..8].to_owned();
        let user = app
            .register_user("Ada", &format!("ada-{tag}@example.com"))
            .await;
        Self { app, user, tag }
    }

    async fn product(&self, name: &str, price: i64, stock: u32) -> Uuid {
        self.app
            .create_product(&format!("{name}-{}", self.tag), price, stock)
            .await
    }

    /// A placed order for `lines`; its saga is due (as the intake would make it).
    async fn place(&self, lines: &[(Uuid, u32)]) -> Uuid {
        let order = self.draft(lines).await;
        let response = self
            .app
            .post(format!("/api/orders/{order}/place"), json!({}))
            .await;
        assert_eq!(response.status(), 200);
        hand_over(&self.app.pool, order).await;
        order
    }

    async fn draft(&self, lines: &[(Uuid, u32)]) -> Uuid {
        let order = self.app.create_order(self.user).await;
        for (product, quantity) in lines {
            let response = self
                .app
                .post(
                    format!("/api/orders/{order}/items"),
                    json!({"productId": product, "quantity": quantity}),
                )
                .await;
            assert_eq!(response.status(), 200);
        }
        order
    }
}

/// Cancels `order` as its user while its saga waits on the gated authorize call, then lets
/// `answers` authorize calls through.
async fn cancel_while_authorizing(
    shop: &Shop,
    order: Uuid,
    gate: &Semaphore,
    reason: &str,
    answers: usize,
) {
    wait_for(&shop.app.pool, order, Duration::from_secs(10), |row| {
        row.step == "authorize"
    })
    .await;
    let response = shop
        .app
        .post(
            format!("/api/orders/{order}/cancel"),
            json!({ "reason": reason }),
        )
        .await;
    assert_eq!(response.status(), 200);
    gate.add_permits(answers);
}

/// What the intake does for an `OrderPlaced`: the saga's row, due now.
async fn hand_over(pool: &PgPool, order: Uuid) {
    let (event_id, correlation_id): (Uuid, Uuid) = sqlx::query_as(
        "select (metadata->>'eventId')::uuid, (metadata->>'correlationId')::uuid from events \
         where stream_id = $1 and event_type = 'OrderPlaced'",
    )
    .bind(order)
    .fetch_one(pool)
    .await
    .unwrap();
    let placed = Placed {
        saga_id: saga_id(order),
        order_id: order,
        event_id,
        correlation_id,
    };
    rows::create(pool, &[placed]).await.unwrap();
}

/// Polls the saga's row until `done` holds.
async fn wait_for(
    pool: &PgPool,
    order: Uuid,
    timeout: Duration,
    done: impl Fn(&SagaRow) -> bool,
) -> SagaRow {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let row = rows::get(pool, order).await.unwrap();
        if let Some(row) = row.filter(|row| done(row)) {
            return row;
        }
        if tokio::time::Instant::now() > deadline {
            let row = rows::get(pool, order).await.unwrap();
            panic!("saga of order {order} did not get there: {row:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(pool: &PgPool, order: Uuid) -> SagaRow {
    wait_for(pool, order, Duration::from_secs(30), |row| {
        matches!(row.state.as_str(), "CONFIRMED" | "CANCELLED")
    })
    .await
}

async fn event_types(pool: &PgPool, stream: Uuid) -> Vec<String> {
    sqlx::query_scalar("select event_type from events where stream_id = $1 order by version")
        .bind(stream)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn order_status(app: &TestApp, order: Uuid) -> (String, Option<String>) {
    let stream = app.stream(order).await;
    let last = stream["events"].as_array().unwrap().last().unwrap().clone();
    (
        last["eventType"].as_str().unwrap().to_owned(),
        last["data"]["reason"].as_str().map(str::to_owned),
    )
}

/// The simulated provider's ledger for an order: (operation, outcome) in call order.
async fn ledger(pool: &PgPool, order: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "select operation, outcome from simulated_payments where order_id = $1 order by created_at",
    )
    .bind(order)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Stock figures as the product stream says: (available, reserved, sold).
async fn stock(pool: &PgPool, product: Uuid) -> (i64, i64, i64) {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "select event_type, payload from events where stream_id = $1 order by version",
    )
    .bind(product)
    .fetch_all(pool)
    .await
    .unwrap();
    let (mut available, mut reserved, mut sold) = (0, 0, 0);
    for (event_type, payload) in rows {
        let quantity = |field: &str| payload[field].as_i64().unwrap();
        match event_type.as_str() {
            "ProductCreated" => available = quantity("initialStock"),
            "Restocked" => available += quantity("quantity"),
            "StockReserved" => {
                available -= quantity("quantity");
                reserved += quantity("quantity");
            }
            "ReservationReleased" => {
                reserved -= quantity("quantity");
                available += quantity("quantity");
            }
            "ReservationCommitted" => {
                reserved -= quantity("quantity");
                sold += quantity("quantity");
            }
            _ => {}
        }
        assert!(available >= 0 && reserved >= 0, "stock went negative");
    }
    (available, reserved, sold)
}

fn step<'a>(row: &'a SagaRow, name: &str) -> &'a Value {
    row.steps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} step in {:#?}", row.steps))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_placed_order_is_reserved_authorized_confirmed_committed_and_captured(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 1250, 5).await;
    let cup = shop.product("CUP", 300, 5).await;
    let driver = drive(
        &pool,
        simulator(&pool, SimulatorArgs::default()),
        options("g"),
    );
    let order = shop.place(&[(mug, 2), (cup, 1)]).await;

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CONFIRMED");
    assert_eq!(row.reason, None);
    assert_eq!(row.saga_id, saga_id(order));
    assert!(row.finished_at.is_some() && row.wake_at.is_none());
    let steps: Vec<(&str, &str)> = row
        .steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("reserve", "DONE"),
            ("authorize", "DONE"),
            ("complete", "DONE")
        ]
    );
    assert_eq!(order_status(&shop.app, order).await.0, "OrderConfirmed");
    assert_eq!(stock(&pool, mug).await, (3, 0, 2));
    assert_eq!(stock(&pool, cup).await, (4, 0, 1));
    assert_eq!(
        ledger(&pool, order).await,
        [
            ("authorize".to_owned(), "authorized".to_owned()),
            ("capture".to_owned(), "captured".to_owned())
        ]
    );
    let payment = orderflow_domain::saga::payment_id(order);
    assert_eq!(
        event_types(&pool, payment).await,
        ["PaymentAuthorized", "PaymentCaptured"]
    );
    let saga = event_types(&pool, saga_id(order)).await;
    assert_eq!(saga.first().map(String::as_str), Some("SagaStarted"));
    assert_eq!(saga.last().map(String::as_str), Some("SagaConfirmed"));

    // The saga's commands carry the order's correlation id, the saga as actor, and the
    // saga event that called for them as causation.
    let placed: Value = sqlx::query_scalar(
        "select metadata from events where stream_id = $1 and event_type = 'OrderPlaced'",
    )
    .bind(order)
    .fetch_one(&pool)
    .await
    .unwrap();
    let confirmed: Value = sqlx::query_scalar(
        "select metadata from events where stream_id = $1 and event_type = 'OrderConfirmed'",
    )
    .bind(order)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(confirmed["correlationId"], placed["correlationId"]);
    assert_eq!(confirmed["actor"], "saga");
    assert_eq!(
        confirmed["commandId"],
        format!("saga:{}:confirm", saga_id(order))
    );
    let cause: String =
        sqlx::query_scalar("select event_type from events where metadata->>'eventId' = $1")
            .bind(confirmed["causationId"].as_str().unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(cause, "SagaPaymentAuthorized");
    let started: Value = sqlx::query_scalar(
        "select metadata from events where stream_id = $1 and event_type = 'SagaStarted'",
    )
    .bind(saga_id(order))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(started["causationId"], placed["eventId"]);

    // The REST view of the saga, by order id and by saga id.
    let response = shop.app.get(&format!("/api/sagas/{order}")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["state"], "CONFIRMED");
    assert_eq!(body["sagaId"], saga_id(order).to_string());
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn out_of_stock_on_the_second_of_three_lines_releases_the_others(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 100, 5).await;
    let cup = shop.product("CUP", 100, 1).await;
    let pan = shop.product("PAN", 100, 5).await;
    let driver = drive(
        &pool,
        simulator(&pool, SimulatorArgs::default()),
        options("g"),
    );
    let order = shop.place(&[(mug, 1), (cup, 2), (pan, 1)]).await;

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CANCELLED");
    assert_eq!(row.reason.as_deref(), Some("out_of_stock"));
    assert!(row.detail.unwrap().contains("only 1 in stock"));
    assert_eq!(
        order_status(&shop.app, order).await,
        ("OrderCancelled".into(), Some("out_of_stock".into()))
    );
    assert_eq!(
        event_types(&pool, mug).await,
        ["ProductCreated", "StockReserved", "ReservationReleased"]
    );
    assert_eq!(event_types(&pool, cup).await, ["ProductCreated"]);
    // Lines are reserved together: the third one was, and is released too.
    assert_eq!(
        event_types(&pool, pan).await,
        ["ProductCreated", "StockReserved", "ReservationReleased"]
    );
    assert_eq!(stock(&pool, mug).await, (5, 0, 0));
    assert_eq!(stock(&pool, cup).await, (1, 0, 0));
    assert_eq!(stock(&pool, pan).await, (5, 0, 0));
    assert!(
        ledger(&pool, order).await.is_empty(),
        "never reached payment"
    );
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_declined_payment_releases_the_stock_and_cancels_with_the_reason(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let tv = shop.product("TV", 150_000, 3).await;
    let args = SimulatorArgs {
        decline_above: Some(100_000),
        ..SimulatorArgs::default()
    };
    let driver = drive(&pool, simulator(&pool, args), options("g"));
    let order = shop.place(&[(tv, 1)]).await;

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CANCELLED");
    assert_eq!(row.reason.as_deref(), Some("payment_declined"));
    assert_eq!(step(&row, "authorize")["status"], "FAILED");
    assert_eq!(stock(&pool, tv).await, (3, 0, 0));
    assert_eq!(
        ledger(&pool, order).await,
        [("authorize".to_owned(), "declined".to_owned())],
        "a decline is never retried, and there is nothing to void"
    );
    let payment = orderflow_domain::saga::payment_id(order);
    assert_eq!(event_types(&pool, payment).await, ["PaymentDeclined"]);
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_provider_that_fails_for_a_while_is_retried_until_it_answers(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 5).await;
    let gateway = simulator(&pool, SimulatorArgs::default());
    gateway.fail_next(Operation::Authorize, 2);
    gateway.fail_next(Operation::Capture, 1);
    let driver = drive(&pool, gateway, options("g"));
    let order = shop.place(&[(mug, 1)]).await;

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CONFIRMED");
    assert_eq!(step(&row, "authorize")["attempts"], 2);
    assert_eq!(step(&row, "complete")["attempts"], 1);
    assert_eq!(
        ledger(&pool, order).await,
        [
            ("authorize".to_owned(), "authorized".to_owned()),
            ("capture".to_owned(), "captured".to_owned())
        ]
    );
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_provider_timing_out_then_recovering_authorizes_once_and_confirms(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 5).await;
    let gateway = LateAnswers {
        inner: simulator(&pool, SimulatorArgs::default()),
        slow: Arc::new(std::sync::atomic::AtomicU32::new(2)),
    };
    let resilience = ResilienceOptions {
        call_timeout: Duration::from_millis(300),
        ..resilience()
    };
    let writer = Writer::new(pool.clone(), 1000);
    let orchestrator = Orchestrator::new(writer, Resilient::new(gateway, resilience), options("g"));
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(orchestrator.drive(shutdown));
    let order = shop.place(&[(mug, 1)]).await;

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CONFIRMED");
    let authorize = step(&row, "authorize");
    assert_eq!(
        authorize["attempts"], 2,
        "two calls timed out: {:#?}",
        row.steps
    );
    assert!(authorize["detail"]
        .as_str()
        .unwrap()
        .contains("no answer within"));
    assert_eq!(
        ledger(&pool, order).await,
        [
            ("authorize".to_owned(), "authorized".to_owned()),
            ("capture".to_owned(), "captured".to_owned())
        ],
        "the calls whose answers were lost authorized once, under one key"
    );
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_lost_answer_is_retried_with_the_same_key_and_authorizes_once(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 50).await;
    // Half the calls fail; half of those after taking effect, like a timed-out answer.
    let args = SimulatorArgs {
        failure_rate: 0.5,
        ..SimulatorArgs::default()
    };
    let options = SagaOptions {
        max_attempts: 30,
        ..options("g")
    };
    let driver = drive(&pool, simulator(&pool, args), options);
    let mut orders = Vec::new();
    for _ in 0..8 {
        orders.push(shop.place(&[(mug, 1)]).await);
    }
    for order in &orders {
        let row = finished(&pool, *order).await;
        assert_eq!(row.state, "CONFIRMED", "{row:#?}");
        let ledger = ledger(&pool, *order).await;
        assert_eq!(
            ledger.len(),
            2,
            "one authorization, one capture: {ledger:?}"
        );
    }
    assert_eq!(stock(&pool, mug).await, (42, 0, 8));
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_outage_opens_the_breaker_and_the_saga_cancels_as_payment_unavailable(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 5).await;
    let gateway = simulator(&pool, SimulatorArgs::default());
    gateway.set_outage(true);
    let writer = Writer::new(pool.clone(), 1000);
    let options = SagaOptions {
        step_timeout: Duration::from_secs(2),
        max_attempts: 100,
        ..options("g")
    };
    let resilience = ResilienceOptions {
        failure_threshold: 2,
        open_for: Duration::from_secs(1),
        ..resilience()
    };
    let orchestrator = Orchestrator::new(writer, Resilient::new(gateway, resilience), options);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(orchestrator.clone().drive(shutdown));
    let order = shop.place(&[(mug, 1)]).await;

    // The provider cannot be reached within the step's deadline: the saga compensates, and
    // keeps trying to void whatever the failed calls may have authorized.
    let row = wait_for(&pool, order, Duration::from_secs(10), |row| {
        row.state == "COMPENSATING"
    })
    .await;
    assert_eq!(row.reason.as_deref(), Some("payment_unavailable"));
    let authorize = step(&row, "authorize");
    // Two failures open the breaker; while open it refuses calls without making them (no
    // attempt), and lets one probe through per second. Without it, retrying every 200 ms
    // at most would have made ten attempts or more in the two seconds.
    let attempts = authorize["attempts"].as_u64().unwrap();
    assert!(
        (2..=3).contains(&attempts),
        "calls the open breaker refused are not attempts: {:#?}",
        row.steps
    );
    assert!(authorize["detail"]
        .as_str()
        .unwrap()
        .contains("provider outage"));
    assert!(
        matches!(
            orchestrator.gateway().circuit(),
            Circuit::Open { .. } | Circuit::HalfOpen { .. }
        ),
        "{:?}",
        orchestrator.gateway().circuit()
    );
    orchestrator.gateway().inner().set_outage(false);

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CANCELLED");
    assert_eq!(row.reason.as_deref(), Some("payment_unavailable"));
    assert_eq!(
        orchestrator.gateway().circuit(),
        Circuit::Closed { failures: 0 },
        "a probe closed it"
    );
    assert_eq!(stock(&pool, mug).await, (5, 0, 0));
    assert_eq!(
        ledger(&pool, order).await,
        [
            ("authorize".to_owned(), "fenced".to_owned()),
            ("void".to_owned(), "nothing".to_owned())
        ],
        "nothing was authorized; the key is fenced"
    );
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_cancelling_mid_saga_gets_the_authorization_voided_and_stock_back(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 5).await;
    let gate = Arc::new(Semaphore::new(0));
    let gateway = Gated {
        inner: simulator(&pool, SimulatorArgs::default()),
        gate: gate.clone(),
    };
    let driver = drive(&pool, gateway, options("g"));
    let order = shop.place(&[(mug, 2)]).await;
    cancel_while_authorizing(&shop, order, &gate, "changed my mind", 1).await;

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CANCELLED");
    assert_eq!(row.reason.as_deref(), Some("cancelled_by_user"));
    assert_eq!(
        order_status(&shop.app, order).await,
        ("OrderCancelled".into(), Some("changed my mind".into())),
        "the user's cancellation stands; the saga does not cancel again"
    );
    assert_eq!(
        ledger(&pool, order).await,
        [
            ("authorize".to_owned(), "authorized".to_owned()),
            ("void".to_owned(), "voided".to_owned())
        ]
    );
    assert_eq!(stock(&pool, mug).await, (5, 0, 0));
    let payment = orderflow_domain::saga::payment_id(order);
    assert_eq!(
        event_types(&pool, payment).await,
        ["PaymentAuthorized", "PaymentVoided"]
    );
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_compensation_that_fails_twice_is_retried_and_then_succeeds(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 5).await;
    let gate = Arc::new(Semaphore::new(0));
    let inner = simulator(&pool, SimulatorArgs::default());
    inner.fail_next(Operation::Void, 2);
    let gateway = Gated {
        inner,
        gate: gate.clone(),
    };
    let driver = drive(&pool, gateway, options("g"));
    let order = shop.place(&[(mug, 1)]).await;
    cancel_while_authorizing(&shop, order, &gate, "no", 1).await;

    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CANCELLED");
    let compensate = step(&row, "compensate");
    assert_eq!(compensate["attempts"], 2);
    assert_eq!(compensate["status"], "DONE");
    assert_eq!(
        ledger(&pool, order).await,
        [
            ("authorize".to_owned(), "authorized".to_owned()),
            ("void".to_owned(), "voided".to_owned())
        ]
    );
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_compensation_that_keeps_failing_parks_the_saga_as_stuck_until_retried(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 5).await;
    let gate = Arc::new(Semaphore::new(0));
    let inner = simulator(&pool, SimulatorArgs::default());
    inner.fail_next(Operation::Void, 1000);
    let gateway = Gated {
        inner: inner.clone(),
        gate: gate.clone(),
    };
    let driver = drive(&pool, gateway, options("g"));
    let order = shop.place(&[(mug, 1)]).await;
    // Another order goes on while this one is stuck.
    let other = shop.place(&[(mug, 1)]).await;
    cancel_while_authorizing(&shop, order, &gate, "no", 2).await;

    let row = wait_for(&pool, order, Duration::from_secs(30), |row| {
        row.state == "STUCK"
    })
    .await;
    assert_eq!(row.step, "compensate");
    assert_eq!(row.attempts, 3, "max attempts");
    assert!(row
        .detail
        .as_deref()
        .unwrap()
        .contains("void failed 3 times"));
    assert!(
        row.wake_at.is_none(),
        "nothing runs it until an operator does"
    );
    assert_eq!(finished(&pool, other).await.state, "CONFIRMED");
    let response = shop.app.get("/api/sagas?state=STUCK").await;
    let stuck: Vec<Value> = response.json().await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0]["orderId"], order.to_string());

    // Retrying a saga that is not stuck is refused; retrying this one finishes it.
    let response = shop
        .app
        .post(format!("/api/sagas/{other}/retry"), json!({}))
        .await;
    assert_eq!(
        common::error_of(response).await,
        (422, "SAGA_NOT_STUCK".into())
    );
    inner.fail_next(Operation::Void, 0);
    let response = shop
        .app
        .post(format!("/api/sagas/{order}/retry"), json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let row = finished(&pool, order).await;
    assert_eq!(row.state, "CANCELLED");
    assert_eq!(row.reason.as_deref(), Some("cancelled_by_user"));
    assert_eq!(stock(&pool, mug).await, (4, 0, 1));
    let response = shop
        .app
        .post(format!("/api/sagas/{}/retry", Uuid::new_v4()), json!({}))
        .await;
    assert_eq!(common::error_of(response).await, (404, "NOT_FOUND".into()));
    driver.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deadline_that_passes_while_no_orchestrator_runs_compensates_once_one_starts(
    pool: PgPool,
) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 5).await;
    let options = SagaOptions {
        step_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(1),
        ..options("g")
    };
    // The provider never answers this one; it dies mid-authorization.
    let hung = Gated {
        inner: simulator(&pool, SimulatorArgs::default()),
        gate: Arc::new(Semaphore::new(0)),
    };
    let first = drive(&pool, hung, options.clone());
    let order = shop.place(&[(mug, 1)]).await;
    let row = wait_for(&pool, order, Duration::from_secs(10), |row| {
        row.step == "authorize"
    })
    .await;
    first.kill().await;
    let deadline = row.deadline.expect("authorize has a deadline");
    let until = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until + Duration::from_millis(500)).await;
    let stale = rows::get(&pool, order).await.unwrap().unwrap();
    assert_eq!(stale.state, "RUNNING", "nobody was running");

    let started = tokio::time::Instant::now();
    let second = drive(&pool, simulator(&pool, SimulatorArgs::default()), options);
    let row = finished(&pool, order).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(row.state, "CANCELLED");
    assert_eq!(row.reason.as_deref(), Some("timeout"));
    assert_eq!(stock(&pool, mug).await, (5, 0, 0));
    assert_eq!(
        ledger(&pool, order).await,
        [
            ("authorize".to_owned(), "fenced".to_owned()),
            ("void".to_owned(), "nothing".to_owned())
        ],
        "the authorization in doubt was voided by key, and the key fenced"
    );
    // The authorize call that was in flight, arriving now, is refused.
    let late = simulator(&pool, SimulatorArgs::default())
        .authorize(&Authorize {
            key: orderflow_domain::saga::authorize_key(saga_id(order)),
            order_id: order,
            user_id: shop.user,
            amount: orderflow_domain::Money::new(500, orderflow_domain::Currency::EUR),
        })
        .await;
    assert_eq!(late, Err(GatewayError::Fenced));
    second.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_hundred_orders_for_ten_units_confirm_exactly_ten(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let hot = shop.product("HOT", 999, 10).await;
    let mut drafts = Vec::new();
    for _ in 0..100 {
        drafts.push(shop.draft(&[(hot, 1)]).await);
    }
    let driver = drive(
        &pool,
        simulator(&pool, SimulatorArgs::default()),
        options("g"),
    );
    let placing = drafts.iter().map(|order| {
        let app = &shop.app;
        async move {
            let response = app
                .post(format!("/api/orders/{order}/place"), json!({}))
                .await;
            assert_eq!(response.status(), 200);
            hand_over(&app.pool, *order).await;
        }
    });
    futures::future::join_all(placing).await;

    let mut outcomes: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for order in &drafts {
        let row = finished(&pool, *order).await;
        *outcomes.entry((row.state, row.reason)).or_default() += 1;
        let ledger = ledger(&pool, *order).await;
        let expected: &[(&str, &str)] = match ledger.is_empty() {
            true => &[],
            false => &[("authorize", "authorized"), ("capture", "captured")],
        };
        let ledger: Vec<(&str, &str)> = ledger
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            ledger, expected,
            "captured when confirmed, never authorized otherwise"
        );
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([
            (
                ("CANCELLED".to_owned(), Some("out_of_stock".to_owned())),
                90
            ),
            (("CONFIRMED".to_owned(), None), 10),
        ])
    );
    assert_eq!(stock(&pool, hot).await, (0, 0, 10));
    let captured: i64 =
        sqlx::query_scalar("select count(*) from simulated_payments where outcome = 'captured'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(captured, 10);
    driver.stop().await;
}

/// No stream of the store holds an effect twice, and every saga ended once.
async fn assert_exactly_once(pool: &PgPool, orders: &[Uuid]) {
    let doubled: i64 = sqlx::query_scalar(
        "select count(*) from (select stream_id, event_type, payload->>'orderId' \
         from events where event_type in ('StockReserved', 'ReservationReleased', 'ReservationCommitted') \
         group by 1, 2, 3 having count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        doubled, 0,
        "a reservation was taken, released or committed twice"
    );
    for order in orders {
        let saga = event_types(pool, saga_id(*order)).await;
        let ends = saga
            .iter()
            .filter(|t| *t == "SagaConfirmed" || *t == "SagaCancelled")
            .count();
        assert_eq!(ends, 1, "{saga:?}");
        let ledger = ledger(pool, *order).await;
        let mut operations: Vec<&str> = ledger.iter().map(|(o, _)| o.as_str()).collect();
        let all = operations.len();
        operations.dedup();
        assert_eq!(
            all,
            operations.len(),
            "a provider call repeated: {ledger:?}"
        );
        let order_events = event_types(pool, *order).await;
        let closings = order_events
            .iter()
            .filter(|t| *t == "OrderConfirmed" || *t == "OrderCancelled")
            .count();
        assert_eq!(closings, 1, "{order_events:?}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn orchestrators_killed_mid_saga_and_restarted_finish_every_saga_exactly_once(pool: PgPool) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 100, 1000).await;
    let cup = shop.product("CUP", 100, 1000).await;
    let args = SimulatorArgs {
        latency: Duration::from_millis(15),
        ..SimulatorArgs::default()
    };
    let options = SagaOptions {
        lease: Duration::from_millis(300),
        ..options("g")
    };
    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(shop.place(&[(mug, 1), (cup, 2)]).await);
    }
    // Kill at staggered moments so deaths land after each kind of step.
    let mut kills = 0;
    for pause in [10, 25, 40, 60, 80, 110, 150, 200] {
        let running = drive(&pool, simulator(&pool, args.clone()), options.clone());
        tokio::time::sleep(Duration::from_millis(pause)).await;
        running.kill().await;
        kills += 1;
    }
    let last = drive(&pool, simulator(&pool, args), options);
    for order in &orders {
        assert_eq!(finished(&pool, *order).await.state, "CONFIRMED");
    }
    assert_exactly_once(&pool, &orders).await;
    assert_eq!(stock(&pool, mug).await, (980, 0, 20));
    assert_eq!(stock(&pool, cup).await, (960, 0, 40));
    assert_eq!(kills, 8);
    last.stop().await;
}

struct Pipeline {
    stops: Vec<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Pipeline {
    async fn stop(self) {
        for stop in &self.stops {
            stop.send(true).unwrap();
        }
        for task in self.tasks {
            task.await.unwrap().unwrap();
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn two_orchestrators_fed_every_event_twice_through_kafka_finish_each_saga_once(pool: PgPool) {
    let topics = fresh_topics(&brokers()).await;
    let kafka = topics.args().clone();
    let group = format!("{}.saga", kafka.topic_prefix);
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 100, 1000).await;
    let mut pipeline = Pipeline {
        stops: Vec::new(),
        tasks: Vec::new(),
    };
    // Two relays with their own cursors publish every event twice.
    for name in ["one", "two"] {
        let (stop, shutdown) = watch::channel(false);
        let options = RelayOptions {
            name: name.into(),
            ..RelayOptions::default()
        };
        pipeline.tasks.push(tokio::spawn(relay::run(
            pool.clone(),
            kafka.clone(),
            options,
            shutdown,
        )));
        pipeline.stops.push(stop);
    }
    for _ in 0..2 {
        let (stop, shutdown) = watch::channel(false);
        let orchestrator = Orchestrator::new(
            Writer::new(pool.clone(), 1000),
            Resilient::new(simulator(&pool, SimulatorArgs::default()), resilience()),
            options(&group),
        );
        pipeline
            .tasks
            .push(tokio::spawn(orchestrator.run(kafka.clone(), shutdown)));
        pipeline.stops.push(stop);
    }
    let mut orders = Vec::new();
    for _ in 0..12 {
        let order = shop.draft(&[(mug, 1)]).await;
        let response = shop
            .app
            .post(format!("/api/orders/{order}/place"), json!({}))
            .await;
        assert_eq!(response.status(), 200);
        orders.push(order);
    }
    // One is cancelled by its user right away: the intake's OrderCancelled reaches it.
    let cancelled = shop.draft(&[(mug, 1)]).await;
    shop.app
        .post(format!("/api/orders/{cancelled}/place"), json!({}))
        .await;
    shop.app
        .post(
            format!("/api/orders/{cancelled}/cancel"),
            json!({"reason": "oops"}),
        )
        .await;

    for order in &orders {
        let row = wait_for(&pool, *order, Duration::from_secs(60), |row| {
            row.state == "CONFIRMED"
        })
        .await;
        assert_eq!(row.state, "CONFIRMED");
    }
    let row = wait_for(&pool, cancelled, Duration::from_secs(60), |row| {
        row.state == "CANCELLED"
    })
    .await;
    assert_eq!(row.reason.as_deref(), Some("cancelled_by_user"));
    orders.push(cancelled);
    assert_exactly_once(&pool, &orders).await;
    assert_eq!(stock(&pool, mug).await, (988, 0, 12));
    let claimers: i64 = sqlx::query_scalar(
        "select count(distinct claimed_by) from sagas where claimed_by is not null",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(claimers, 0, "every claim was handed back");
    pipeline.stop().await;
    drop(topics);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_orchestrator_killed_after_each_step_in_turn_is_finished_by_the_next_exactly_once(
    pool: PgPool,
) {
    let shop = Shop::open(pool.clone()).await;
    let mug = shop.product("MUG", 500, 10).await;
    let options = SagaOptions {
        lease: Duration::from_secs(1),
        ..options("g")
    };
    let resilience = ResilienceOptions {
        call_timeout: Duration::from_secs(3600),
        ..resilience()
    };
    // Killed while the provider holds the answer of: the authorization (stock reserved,
    // payment authorized, neither recorded), the capture (order confirmed, reservation
    // committed, payment captured), and the void of a cancelled order (compensating).
    let mut orders = Vec::new();
    for (hang, cancel) in [
        (Operation::Authorize, false),
        (Operation::Capture, false),
        (Operation::Void, true),
    ] {
        let entered = Arc::new(tokio::sync::Notify::new());
        let gateway = HangsAfter {
            inner: simulator(&pool, SimulatorArgs::default()),
            hang,
            entered: entered.clone(),
        };
        let gate = Arc::new(Semaphore::new(usize::from(!cancel)));
        let gated = Gated {
            inner: simulator(&pool, SimulatorArgs::default()),
            gate: gate.clone(),
        };
        let writer = Writer::new(pool.clone(), 1000);
        let (stop, shutdown) = watch::channel(false);
        let task = if cancel {
            // The user cancels while authorization waits; the void is where it dies.
            let orchestrator = Orchestrator::new(
                writer,
                Resilient::new(
                    Both {
                        first: gated,
                        then: gateway,
                    },
                    resilience,
                ),
                options.clone(),
            );
            tokio::spawn(orchestrator.drive(shutdown))
        } else {
            let orchestrator =
                Orchestrator::new(writer, Resilient::new(gateway, resilience), options.clone());
            tokio::spawn(orchestrator.drive(shutdown))
        };
        let order = shop.place(&[(mug, 2)]).await;
        if cancel {
            cancel_while_authorizing(&shop, order, &gate, "no", 1).await;
        }
        tokio::time::timeout(Duration::from_secs(20), entered.notified())
            .await
            .expect("the hanging call was reached");
        task.abort();
        let _ = task.await;
        drop(stop);

        let next = drive(
            &pool,
            simulator(&pool, SimulatorArgs::default()),
            options.clone(),
        );
        let row = finished(&pool, order).await;
        let expected = if cancel { "CANCELLED" } else { "CONFIRMED" };
        assert_eq!(row.state, expected, "killed during {hang:?}: {row:#?}");
        next.stop().await;
        orders.push(order);
    }
    assert_exactly_once(&pool, &orders).await;
    assert_eq!(stock(&pool, mug).await, (6, 0, 4));
    for (order, expected) in orders.iter().zip([
        &[("authorize", "authorized"), ("capture", "captured")][..],
        &[("authorize", "authorized"), ("capture", "captured")][..],
        &[("authorize", "authorized"), ("void", "voided")][..],
    ]) {
        let ledger = ledger(&pool, *order).await;
        let ledger: Vec<(&str, &str)> = ledger
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(ledger, expected, "each provider call once");
    }
}

/// Authorize through `first`, capture and void through `then`.
#[derive(Clone)]
struct Both<A, B> {
    first: A,
    then: B,
}

impl<A: PaymentGateway, B: PaymentGateway> PaymentGateway for Both<A, B> {
    async fn authorize(&self, call: &Authorize) -> Result<String, GatewayError> {
        self.first.authorize(call).await
    }
    async fn capture(&self, call: &Settle) -> Result<(), GatewayError> {
        self.then.capture(call).await
    }
    async fn void(&self, call: &Settle) -> Result<Option<String>, GatewayError> {
        self.then.void(call).await
    }
}
