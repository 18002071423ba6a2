//! The payment provider port, the resilience every call goes through, and a simulated
//! provider for development, tests and benchmarks.
//!
//! Every call carries the saga action's idempotency key: a provider answers a repeated key
//! with its first answer, so retrying a call whose outcome is unknown (a timeout) never
//! authorizes, captures or voids twice.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orderflow_domain::Money;
use orderflow_store::config::parse_duration;
use rand::Rng as _;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

/// How a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A business refusal: final, never retried.
    #[error("declined: {0}")]
    Declined(String),
    /// Worth retrying: a timeout, an error, an outage. The call may or may not have taken
    /// effect; retrying with the same key is safe.
    #[error("{0}")]
    Transient(String),
    /// The circuit breaker is open: the call was not even tried.
    #[error("the payment provider is unavailable (circuit open)")]
    CircuitOpen,
    /// An authorize call whose key a void already fenced: it arrived after the saga gave
    /// the authorization up, and authorized nothing. Not a decline of the customer's.
    #[error("the authorization was voided before this call arrived")]
    Fenced,
}

/// Authorize `amount` for an order.
#[derive(Debug, Clone)]
pub struct Authorize {
    pub key: String,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: Money,
}

/// Capture or void what the call with `authorize_key` authorized.
#[derive(Debug, Clone)]
pub struct Settle {
    pub key: String,
    pub order_id: Uuid,
    pub authorize_key: String,
    pub amount: Option<Money>,
}

/// A payment provider. Implementations must honour idempotency keys.
pub trait PaymentGateway: Send + Sync + 'static {
    /// The provider's authorization id.
    fn authorize(
        &self,
        call: &Authorize,
    ) -> impl Future<Output = Result<String, GatewayError>> + Send;
    fn capture(&self, call: &Settle) -> impl Future<Output = Result<(), GatewayError>> + Send;
    /// The authorization it voided, if there was one (none is a success too). A void must
    /// also fence the authorize key: an authorize call with it that arrives afterwards
    /// (sent before the void, delivered late) is refused with [`GatewayError::Fenced`], so
    /// nothing stays authorized.
    fn void(
        &self,
        call: &Settle,
    ) -> impl Future<Output = Result<Option<String>, GatewayError>> + Send;
}

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy)]
pub struct ResilienceOptions {
    /// A call slower than this is a transient failure (its outcome unknown).
    pub call_timeout: Duration,
    /// Consecutive transient failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before one probe call is let through.
    pub open_for: Duration,
}

impl Default for ResilienceOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight since `since`; its result closes or reopens the circuit. A
    /// probe that never answers (its caller gave up) lets another through after `open_for`.
    HalfOpen {
        since: Instant,
    },
}

/// A gateway behind a per-call timeout and a circuit breaker. Declines are answers, not
/// failures: they neither count towards opening nor are retried.
#[derive(Debug)]
pub struct Resilient<G> {
    inner: G,
    options: ResilienceOptions,
    circuit: Mutex<Circuit>,
}

impl<G: PaymentGateway> Resilient<G> {
    pub fn new(inner: G, options: ResilienceOptions) -> Self {
        Self {
            inner,
            options,
            circuit: Mutex::new(Circuit::Closed { failures: 0 }),
        }
    }

    pub fn options(&self) -> ResilienceOptions {
        self.options
    }

    pub fn inner(&self) -> &G {
        &self.inner
    }

    pub fn circuit(&self) -> Circuit {
        *self.circuit.lock().expect("breaker lock")
    }

    fn admit(&self) -> Result<(), GatewayError> {
        let mut circuit = self.circuit.lock().expect("breaker lock");
        match *circuit {
            Circuit::Closed { .. } => Ok(()),
            Circuit::Open { until } if Instant::now() >= until => {
                *circuit = Circuit::HalfOpen {
                    since: Instant::now(),
                };
                Ok(())
            }
            Circuit::HalfOpen { since } if since.elapsed() >= self.options.open_for => {
                *circuit = Circuit::HalfOpen {
                    since: Instant::now(),
                };
                Ok(())
            }
            Circuit::Open { .. } | Circuit::HalfOpen { .. } => Err(GatewayError::CircuitOpen),
        }
    }

    fn record(&self, failed: bool) {
        let mut circuit = self.circuit.lock().expect("breaker lock");
        *circuit = match (*circuit, failed) {
            (_, false) => Circuit::Closed { failures: 0 },
            (Circuit::Closed { failures }, true)
                if failures + 1 < self.options.failure_threshold =>
            {
                Circuit::Closed {
                    failures: failures + 1,
                }
            }
            (Circuit::Open { until }, true) => Circuit::Open { until },
            (_, true) => {
                tracing::warn!(open_for = ?self.options.open_for, "payment provider failing; circuit opened");
                Circuit::Open {
                    until: Instant::now() + self.options.open_for,
                }
            }
        };
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        self.admit()?;
        let result = match tokio::time::timeout(self.options.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Transient(format!(
                "no answer within {:?}",
                self.options.call_timeout
            ))),
        };
        self.record(matches!(result, Err(GatewayError::Transient(_))));
        result
    }

    pub async fn authorize(&self, call: &Authorize) -> Result<String, GatewayError> {
        self.call(self.inner.authorize(call)).await
    }

    pub async fn capture(&self, call: &Settle) -> Result<(), GatewayError> {
        self.call(self.inner.capture(call)).await
    }

    pub async fn void(&self, call: &Settle) -> Result<Option<String>, GatewayError> {
        self.call(self.inner.void(call)).await
    }
}

/// How the simulated provider behaves; flags of `orderflow saga` and `orderflow dev`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimulatorArgs {
    /// Simulated provider: delay of every call.
    #[arg(long = "gateway-latency", env = "ORDERFLOW_GATEWAY_LATENCY", default_value = "0ms", value_parser = parse_duration)]
    pub latency: Duration,
    /// Simulated provider: decline authorizations above this many minor units (e.g. 100000
    /// declines anything over 1,000.00).
    #[arg(
        long = "gateway-decline-above",
        env = "ORDERFLOW_GATEWAY_DECLINE_ABOVE"
    )]
    pub decline_above: Option<i64>,
    /// Simulated provider: decline every authorization for these user ids.
    #[arg(
        long = "gateway-decline-user",
        env = "ORDERFLOW_GATEWAY_DECLINE_USERS",
        value_delimiter = ','
    )]
    pub decline_users: Vec<Uuid>,
    /// Simulated provider: share of calls (0 to 1) that fail transiently; half of those
    /// fail after taking effect, as a lost answer would.
    #[arg(long = "gateway-failure-rate", env = "ORDERFLOW_GATEWAY_FAILURE_RATE", default_value_t = 0.0,
          value_parser = parse_rate)]
    pub failure_rate: f64,
    /// Simulated provider: start with an outage (every call fails transiently).
    #[arg(long = "gateway-outage", env = "ORDERFLOW_GATEWAY_OUTAGE")]
    pub outage: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a rate between 0 and 1")),
    }
}

/// Which call an injected failure hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Authorize,
    Capture,
    Void,
}

impl Operation {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Capture => "capture",
            Self::Void => "void",
        }
    }
}

/// One answer of the simulated provider.
struct Entry<'a> {
    key: &'a str,
    operation: Operation,
    order_id: Uuid,
    amount: Option<Money>,
    outcome: &'a str,
    authorization_id: Option<&'a str>,
    detail: Option<&'a str>,
}

/// A provider that keeps its ledger in PostgreSQL (`simulated_payments`), so it remembers
/// keys across orchestrator restarts and tests can count what it did.
#[derive(Debug, Clone)]
pub struct SimulatedGateway {
    pool: PgPool,
    args: SimulatorArgs,
    outage: Arc<AtomicBool>,
    /// Failures still to inject per operation, for tests.
    scripted: Arc<Mutex<HashMap<Operation, u32>>>,
    decline_users: Arc<HashSet<Uuid>>,
}

impl SimulatedGateway {
    pub fn new(pool: PgPool, args: SimulatorArgs) -> Self {
        Self {
            pool,
            outage: Arc::new(AtomicBool::new(args.outage)),
            decline_users: Arc::new(args.decline_users.iter().copied().collect()),
            args,
            scripted: Arc::default(),
        }
    }

    /// Starts or ends an outage.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    /// The next `times` calls of `operation` fail transiently (before taking effect).
    pub fn fail_next(&self, operation: Operation, times: u32) {
        self.scripted
            .lock()
            .expect("script lock")
            .insert(operation, times);
    }

    /// Fails the call before it takes effect, or says whether to fail it after.
    async fn trouble(&self, operation: Operation) -> Result<bool, GatewayError> {
        if !self.args.latency.is_zero() {
            tokio::time::sleep(self.args.latency).await;
        }
        if self.outage.load(Ordering::SeqCst) {
            return Err(GatewayError::Transient(
                "provider outage (simulated)".into(),
            ));
        }
        {
            let mut scripted = self.scripted.lock().expect("script lock");
            if let Some(left) = scripted.get_mut(&operation).filter(|left| **left > 0) {
                *left -= 1;
                return Err(GatewayError::Transient(format!(
                    "{} failed (simulated)",
                    operation.as_str()
                )));
            }
        }
        if self.args.failure_rate > 0.0 && rand::thread_rng().gen_bool(self.args.failure_rate) {
            if rand::thread_rng().gen_bool(0.5) {
                return Err(GatewayError::Transient(format!(
                    "{} failed (simulated)",
                    operation.as_str()
                )));
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn lost_answer(operation: Operation) -> GatewayError {
        GatewayError::Transient(format!(
            "{} timed out after taking effect (simulated)",
            operation.as_str()
        ))
    }

    fn ledger_error(err: sqlx::Error) -> GatewayError {
        GatewayError::Transient(format!("provider ledger: {err}"))
    }

    /// The row for the entry's key: the one just inserted, or the first answer given for it.
    async fn remember(
        &self,
        entry: Entry<'_>,
    ) -> Result<(String, Option<String>, Option<String>), GatewayError> {
        sqlx::query_as(
            "with inserted as (insert into simulated_payments \
             (key, operation, order_id, amount_minor, currency, outcome, authorization_id, detail) \
             values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (key) do nothing \
             returning outcome, authorization_id, detail) \
             select outcome, authorization_id, detail from inserted \
             union all select outcome, authorization_id, detail from simulated_payments \
             where key = $1 and not exists (select 1 from inserted)",
        )
        .bind(entry.key)
        .bind(entry.operation.as_str())
        .bind(entry.order_id)
        .bind(entry.amount.map(|a| a.amount_minor))
        .bind(entry.amount.map(|a| a.currency.to_string()))
        .bind(entry.outcome)
        .bind(entry.authorization_id)
        .bind(entry.detail)
        .fetch_one(&self.pool)
        .await
        .map_err(Self::ledger_error)
    }
}

impl PaymentGateway for SimulatedGateway {
    async fn authorize(&self, call: &Authorize) -> Result<String, GatewayError> {
        let lose_answer = self.trouble(Operation::Authorize).await?;
        let decline = if self.decline_users.contains(&call.user_id) {
            Some("the card holder's bank refused (simulated)".to_owned())
        } else {
            self.args
                .decline_above
                .filter(|limit| call.amount.amount_minor > *limit)
                .map(|limit| format!("amount above the limit of {limit} (simulated)"))
        };
        let new_id = format!("sim-{}", Uuid::now_v7());
        let (outcome, authorization_id, detail) = match &decline {
            Some(reason) => {
                self.remember(Entry {
                    key: &call.key,
                    operation: Operation::Authorize,
                    order_id: call.order_id,
                    amount: Some(call.amount),
                    outcome: "declined",
                    authorization_id: None,
                    detail: Some(reason),
                })
                .await?
            }
            None => {
                self.remember(Entry {
                    key: &call.key,
                    operation: Operation::Authorize,
                    order_id: call.order_id,
                    amount: Some(call.amount),
                    outcome: "authorized",
                    authorization_id: Some(&new_id),
                    detail: None,
                })
                .await?
            }
        };
        if lose_answer {
            return Err(Self::lost_answer(Operation::Authorize));
        }
        match (outcome.as_str(), authorization_id) {
            ("authorized", Some(id)) => Ok(id),
            ("fenced", _) => Err(GatewayError::Fenced),
            _ => Err(GatewayError::Declined(
                detail.unwrap_or_else(|| "declined".into()),
            )),
        }
    }

    async fn capture(&self, call: &Settle) -> Result<(), GatewayError> {
        let lose_answer = self.trouble(Operation::Capture).await?;
        let (outcome, _) = self.settle(call, Operation::Capture).await?;
        if lose_answer {
            return Err(Self::lost_answer(Operation::Capture));
        }
        match outcome.as_str() {
            "captured" => Ok(()),
            _ => Err(GatewayError::Declined("nothing was authorized".into())),
        }
    }

    async fn void(&self, call: &Settle) -> Result<Option<String>, GatewayError> {
        let lose_answer = self.trouble(Operation::Void).await?;
        // Fence the authorization first: an authorize call still in flight with that key
        // then finds it refused instead of authorizing after the void. Racing inserts of
        // one key are serialized by its primary key, so the void sees whichever won.
        sqlx::query(
            "insert into simulated_payments (key, operation, order_id, outcome, detail) \
             values ($1, 'authorize', $2, 'fenced', 'voided before it was authorized') \
             on conflict (key) do nothing",
        )
        .bind(&call.authorize_key)
        .bind(call.order_id)
        .execute(&self.pool)
        .await
        .map_err(Self::ledger_error)?;
        let (outcome, authorization_id) = self.settle(call, Operation::Void).await?;
        if lose_answer {
            return Err(Self::lost_answer(Operation::Void));
        }
        Ok(authorization_id.filter(|_| outcome == "voided"))
    }
}

impl SimulatedGateway {
    /// Captures or voids what `call.authorize_key` authorized, in one statement: the
    /// outcome first given for `call.key` (`captured`/`voided`, or `nothing` when nothing
    /// was authorized) and the authorization it settled.
    async fn settle(
        &self,
        call: &Settle,
        operation: Operation,
    ) -> Result<(String, Option<String>), GatewayError> {
        let done = match operation {
            Operation::Capture => "captured",
            Operation::Authorize | Operation::Void => "voided",
        };
        sqlx::query_as(
            "with auth as (select authorization_id from simulated_payments \
             where key = $2 and outcome = 'authorized'), \
             inserted as (insert into simulated_payments \
             (key, operation, order_id, amount_minor, currency, outcome, authorization_id) \
             select $1, $3, $4, $5, $6, \
             case when exists (select 1 from auth) then $7 else 'nothing' end, \
             (select authorization_id from auth) \
             on conflict (key) do nothing returning outcome, authorization_id) \
             select outcome, authorization_id from inserted union all \
             select outcome, authorization_id from simulated_payments \
             where key = $1 and not exists (select 1 from inserted)",
        )
        .bind(&call.key)
        .bind(&call.authorize_key)
        .bind(operation.as_str())
        .bind(call.order_id)
        .bind(call.amount.map(|a| a.amount_minor))
        .bind(call.amount.map(|a| a.currency.to_string()))
        .bind(done)
        .fetch_one(&self.pool)
        .await
        .map_err(Self::ledger_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flaky {
        fail: AtomicBool,
    }

    impl PaymentGateway for Flaky {
        async fn authorize(&self, _call: &Authorize) -> Result<String, GatewayError> {
            if self.fail.load(Ordering::SeqCst) {
                Err(GatewayError::Transient("down".into()))
            } else {
                Ok("ok".into())
            }
        }
        async fn capture(&self, _call: &Settle) -> Result<(), GatewayError> {
            Err(GatewayError::Declined("no".into()))
        }
        async fn void(&self, _call: &Settle) -> Result<Option<String>, GatewayError> {
            std::future::pending().await
        }
    }

    fn call() -> Authorize {
        Authorize {
            key: "k".into(),
            order_id: Uuid::nil(),
            user_id: Uuid::nil(),
            amount: Money::new(1, orderflow_domain::Currency::EUR),
        }
    }

    fn settle() -> Settle {
        Settle {
            key: "v".into(),
            order_id: Uuid::nil(),
            authorize_key: "k".into(),
            amount: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_failures_fails_fast_and_a_probe_closes_it() {
        let options = ResilienceOptions {
            call_timeout: Duration::from_secs(1),
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        };
        let gateway = Resilient::new(
            Flaky {
                fail: AtomicBool::new(true),
            },
            options,
        );
        for _ in 0..3 {
            assert!(matches!(
                gateway.authorize(&call()).await,
                Err(GatewayError::Transient(_))
            ));
        }
        assert!(matches!(gateway.circuit(), Circuit::Open { .. }));
        gateway.inner().fail.store(false, Ordering::SeqCst);
        assert_eq!(
            gateway.authorize(&call()).await,
            Err(GatewayError::CircuitOpen),
            "fails fast while open, without calling"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            gateway.authorize(&call()).await,
            Ok("ok".into()),
            "the probe"
        );
        assert_eq!(gateway.circuit(), Circuit::Closed { failures: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_declines_and_slow_calls_are_classified() {
        let options = ResilienceOptions {
            call_timeout: Duration::from_secs(1),
            failure_threshold: 1,
            open_for: Duration::from_secs(10),
        };
        let gateway = Resilient::new(
            Flaky {
                fail: AtomicBool::new(true),
            },
            options,
        );
        assert!(gateway.authorize(&call()).await.is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(
            gateway.authorize(&call()).await,
            Err(GatewayError::Transient(_))
        ));
        assert!(
            matches!(gateway.circuit(), Circuit::Open { .. }),
            "reopened"
        );

        let gateway = Resilient::new(
            Flaky {
                fail: AtomicBool::new(false),
            },
            ResilienceOptions {
                failure_threshold: 2,
                ..options
            },
        );
        for _ in 0..3 {
            assert_eq!(
                gateway.capture(&settle()).await,
                Err(GatewayError::Declined("no".into()))
            );
        }
        assert_eq!(
            gateway.circuit(),
            Circuit::Closed { failures: 0 },
            "a decline is an answer"
        );
        let slow = gateway.void(&settle()).await;
        assert!(
            matches!(&slow, Err(GatewayError::Transient(m)) if m.contains("no answer within")),
            "{slow:?}"
        );
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("x").is_err());
    }
}
