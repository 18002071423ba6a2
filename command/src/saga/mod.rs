//! The saga orchestrator: runs the fulfilment saga ([`orderflow_domain::saga`]) of every
//! placed order.
//!
//! Two loops share a process:
//! - the **intake** consumes the order topic (group `orderflow-saga`): `OrderPlaced` creates
//!   the saga's row in `sagas`, due now; `OrderCancelled` asks for a look at it. Nothing
//!   slow happens here, so one saga can never hold up the partition.
//! - the **driver** claims due rows (`FOR UPDATE SKIP LOCKED`, with a lease it renews while
//!   it works) and advances
//!   each saga as far as it can go: it folds the saga stream, feeds a passed deadline or a
//!   user's cancellation, performs the next [`Action`] and appends its result, until the
//!   saga finishes, is stuck, or waits for a retry. The row's wake-up time is the durable
//!   timer: a deadline, a retry or a dead claimer's lease brings the saga back to whichever
//!   instance is running.
//!
//! Store effects (reserve, confirm, release, ...) go through the same [`Writer`] as REST
//! commands, with the action's key as command id and a version guard on the saga stream,
//! so a command issued for a step the saga has since left is never written. Provider calls
//! carry the key as idempotency key. Saga inputs are appended at the version they were
//! decided on; a lost race re-reads.
//!
//! # Layout
//! - [`gateway`]: the payment provider port, its breaker and timeout, the simulator.
//! - [`rows`]: the `sagas` table.

pub mod gateway;
pub mod rows;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use orderflow_domain::order::{Order, OrderCommand, OrderStatus};
use orderflow_domain::payment::{Payment, PaymentCommand};
use orderflow_domain::product::{Product, ProductCommand};
use orderflow_domain::saga::{
    authorize_key, payment_id, saga_id, Action, Saga, SagaCommand, SagaLine, SagaStatus,
};
use orderflow_domain::{Aggregate, DomainError};
use orderflow_kafka::consumer::{close, commit, next_batch, subscribe, AssignmentWatch};
use orderflow_kafka::dlq::dead_letter;
use orderflow_kafka::topics::events_topic;
use orderflow_kafka::{envelope, Backoff, KafkaArgs};
use rand::Rng as _;
use rdkafka::message::Message as _;
use rdkafka::producer::FutureProducer;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::write::{Command, Dedupe, Executed, Meta, Refs, WriteError, Writer};
use gateway::{Authorize, GatewayError, PaymentGateway, Resilient, Settle};
use orderflow_store::Loaded;
use rows::{Claimed, Placed};

/// The consumer group every orchestrator instance joins.
pub const GROUP: &str = "orderflow-saga";

/// Who the saga's commands are recorded as.
pub const ACTOR: &str = "saga";

/// How the orchestrator runs sagas.
#[derive(Debug, Clone)]
pub struct SagaOptions {
    /// How long reserving stock, and authorizing the payment, may take before the saga
    /// compensates (`timeout`, or `payment_unavailable` when the provider kept failing).
    pub step_timeout: Duration,
    /// Failures of a completing or compensating action before the saga is parked as STUCK.
    pub max_attempts: u32,
    /// How long a claim holds a saga unless renewed (a claimer renews it while it works);
    /// a claimer that dies releases it after this. Longer than any one provider call.
    pub lease: Duration,
    /// How often due sagas are looked for when nothing woke the driver.
    pub poll: Duration,
    /// Sagas advanced at once by this instance.
    pub concurrency: usize,
    /// First pause after a failed action; doubles per failure up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Consumer group of the intake.
    pub group: String,
    /// This instance's name in `sagas.claimed_by`.
    pub instance: String,
}

impl Default for SagaOptions {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(30),
            max_attempts: 10,
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(250),
            concurrency: 64,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            group: GROUP.into(),
            instance: format!("{}-{}", std::process::id(), Uuid::now_v7().simple()),
        }
    }
}

/// Stock commands are serialized per product (by stripe) inside an instance, so a hot
/// product's reservations queue instead of failing on version conflicts. Across instances
/// they can still conflict; the write path retries those, and a command that still loses
/// counts as a failed attempt that is tried again (within the step's deadline).
const STRIPES: usize = 256;

/// Runs sagas; cheap to share between the intake and the driver.
pub struct Orchestrator<G> {
    writer: Writer,
    gateway: Resilient<G>,
    options: SagaOptions,
    stripes: Vec<tokio::sync::Mutex<()>>,
    wake: Notify,
}

/// The saga's row during an advance: written when its state or step changes, so
/// operators see where a saga is (and a new step's deadline) while it waits on a provider
/// call; the rest is written when the advance hands the saga back ([`rows::release`]).
#[derive(Debug)]
struct Mirror {
    shown: Option<(SagaStatus, orderflow_domain::saga::Step)>,
    /// When this advance began: steps that finished since feed the step-duration histogram.
    began: DateTime<Utc>,
    /// Steps (by index) whose duration is recorded already.
    timed: usize,
}

impl Default for Mirror {
    fn default() -> Self {
        Self {
            shown: None,
            began: Utc::now(),
            timed: 0,
        }
    }
}

impl Mirror {
    async fn sync(
        &mut self,
        pool: &sqlx::PgPool,
        saga_id: Uuid,
        loaded: &Loaded<Saga>,
    ) -> anyhow::Result<()> {
        let saga = &loaded.state;
        let shown = Some((saga.status(), saga.step()));
        if shown == self.shown {
            return Ok(());
        }
        rows::sync(pool, saga_id, saga, loaded.version)
            .await
            .context("mirroring the saga into its row")?;
        self.shown = shown;
        Ok(())
    }

    /// Record the duration of every step that finished during this advance.
    fn time_steps(&mut self, saga: &Saga) {
        for step in saga.steps().iter().skip(self.timed) {
            let Some(finished) = step.finished_at else {
                break;
            };
            if finished >= self.began {
                metrics::histogram!(
                    "orderflow_saga_step_duration_seconds",
                    "step" => step.name.as_str(),
                )
                .record((finished - step.started_at).num_milliseconds().max(0) as f64 / 1000.0);
            }
            self.timed += 1;
        }
    }
}

/// What a batch of actions came to.
enum Results {
    /// Feed these: successes first (so a refusal that compensates finds them recorded),
    /// at most one failure counted.
    Feed(Vec<SagaCommand>),
    /// The saga moved on meanwhile: read it again.
    Superseded,
    /// Nothing happened (the provider's breaker is open): look again after this.
    Later(Duration),
}

fn results(performed: Vec<Performed>) -> Results {
    let mut successes = Vec::new();
    let mut refusals = Vec::new();
    let mut failure = None;
    let mut later = None;
    for outcome in performed {
        match outcome {
            Performed::Superseded => return Results::Superseded,
            Performed::Later(pause) => later = Some(pause),
            Performed::Input(input @ SagaCommand::ActionFailed { .. }) => {
                failure.get_or_insert(input);
            }
            Performed::Input(
                input @ (SagaCommand::OutOfStock { .. }
                | SagaCommand::Declined { .. }
                | SagaCommand::CancelledByUser { .. }),
            ) => refusals.push(input),
            Performed::Input(input) => successes.push(input),
        }
    }
    successes.extend(refusals);
    successes.extend(failure);
    match (successes.is_empty(), later) {
        (true, Some(pause)) => Results::Later(pause),
        _ => Results::Feed(successes),
    }
}

/// Several inputs fed to a saga in one append, each decided on the state the ones before
/// it left.
struct Inputs {
    saga_id: Uuid,
    inputs: Vec<SagaCommand>,
}

impl Command for Inputs {
    type Target = Saga;

    fn stream_id(&self) -> Uuid {
        self.saga_id
    }

    async fn decide(
        &self,
        target: &Saga,
        _refs: &mut Refs<'_>,
    ) -> Result<Vec<orderflow_domain::saga::SagaEvent>, WriteError> {
        let mut state = target.clone();
        let mut events = Vec::new();
        for input in &self.inputs {
            let decided = state.handle(input.clone())?;
            for event in &decided {
                state.apply(event);
            }
            events.extend(decided);
        }
        Ok(events)
    }
}

/// What performing an action came to.
enum Performed {
    /// Feed this to the saga.
    Input(SagaCommand),
    /// The saga moved on meanwhile: read it again.
    Superseded,
    /// The provider's circuit is open: the call was not made, so it is no attempt; try
    /// again after this.
    Later(Duration),
}

/// The saga and its order, as the driver works on them.
struct Context {
    saga_id: Uuid,
    order_id: Uuid,
    user_id: Uuid,
    version: i32,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
}

impl<G: PaymentGateway> Orchestrator<G> {
    pub fn new(writer: Writer, gateway: Resilient<G>, options: SagaOptions) -> Arc<Self> {
        Arc::new(Self {
            writer,
            gateway,
            options,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            wake: Notify::new(),
        })
    }

    pub fn gateway(&self) -> &Resilient<G> {
        &self.gateway
    }

    /// Runs the intake and the driver until `shutdown` flips to true.
    pub async fn run(
        self: Arc<Self>,
        kafka: KafkaArgs,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let intake = tokio::spawn(self.clone().intake(kafka, shutdown.clone()));
        let driven = self.drive(shutdown).await;
        let taken = intake.await.context("the saga intake panicked")?;
        driven.and(taken)
    }

    /// Consumes the order topic into saga rows.
    pub async fn intake(
        self: Arc<Self>,
        kafka: KafkaArgs,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let topics = [events_topic(&kafka.topic_prefix, Order::STREAM_TYPE)];
        let group = self.options.group.clone();
        let mut consumer = subscribe(&kafka, &group, &topics).context("subscribing")?;
        let dead_letters: FutureProducer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .create()
            .context("creating the dead-letter producer")?;
        tracing::info!(%group, ?topics, "saga intake started");
        let mut backoff = Backoff::default();
        let mut assignment = AssignmentWatch::new(&group);
        while !*shutdown.borrow() {
            if assignment.must_rejoin(&consumer) {
                close(consumer).await;
                consumer = subscribe(&kafka, &group, &topics).context("subscribing again")?;
            }
            let batch = tokio::select! {
                batch = next_batch(&consumer, 500, Duration::from_millis(500), Duration::from_millis(5)) => batch,
                _ = shutdown.changed() => break,
            };
            let batch = match batch {
                Ok(batch) if batch.is_empty() => continue,
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(%err, "consuming the order topic failed; retrying");
                    if backoff.wait(&mut shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let mut placed = Vec::new();
            let mut cancelled = Vec::new();
            for message in &batch {
                let event = match envelope::decode(message) {
                    Ok(event) => event,
                    Err(err) => {
                        tracing::warn!(offset = message.offset(), %err, "dead-lettering a record that is not an event");
                        dead_letter(&dead_letters, message, &group, &err.to_string())
                            .await
                            .context("dead-lettering")?;
                        continue;
                    }
                };
                match event.event_type.as_str() {
                    "OrderPlaced" => placed.push(Placed {
                        saga_id: saga_id(event.stream_id),
                        order_id: event.stream_id,
                        event_id: event.metadata.event_id,
                        correlation_id: event.metadata.correlation_id,
                    }),
                    "OrderCancelled" => cancelled.push(event.stream_id),
                    _ => {}
                }
            }
            let pool = self.writer.pool();
            let stored = async {
                rows::create(pool, &placed).await?;
                rows::nudge_orders(pool, &cancelled).await
            };
            match stored.await {
                Ok(()) => {
                    backoff.reset();
                    if let Err(err) = commit(&consumer, &batch) {
                        tracing::warn!(%err, "committing offsets failed; the records will come again");
                    }
                    if !placed.is_empty() || !cancelled.is_empty() {
                        self.wake.notify_one();
                    }
                }
                Err(err) => {
                    // Nothing committed: a fresh subscription starts from the committed offsets.
                    tracing::error!(%err, "recording placed orders failed; retrying");
                    close(consumer).await;
                    if backoff.wait(&mut shutdown).await {
                        break;
                    }
                    consumer = subscribe(&kafka, &group, &topics).context("subscribing again")?;
                }
            }
        }
        tracing::info!("saga intake stopped");
        Ok(())
    }

    /// Claims due sagas and advances them, [`SagaOptions::concurrency`] at a time.
    pub async fn drive(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        tracing::info!(instance = %self.options.instance, "saga driver started");
        let mut running: JoinSet<()> = JoinSet::new();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !*shutdown.borrow() {
            let free = self.options.concurrency.saturating_sub(running.len());
            let mut full = false;
            if free > 0 {
                match rows::claim(
                    self.writer.pool(),
                    free,
                    self.options.lease,
                    &self.options.instance,
                )
                .await
                {
                    Ok(claimed) => {
                        backoff.reset();
                        full = claimed.len() == free;
                        for claim in claimed {
                            running.spawn(self.clone().run_claimed(claim));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "claiming due sagas failed; retrying");
                        if backoff.wait(&mut shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            if full && running.len() < self.options.concurrency {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.options.poll) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Sagas in flight finish their current action (provider calls have a timeout);
        // anything cut short is claimed again when its lease runs out.
        let grace = self.gateway.options().call_timeout + Duration::from_secs(5);
        if tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            running.abort_all();
        }
        tracing::info!("saga driver stopped");
        Ok(())
    }

    async fn run_claimed(self: Arc<Self>, claim: Claimed) {
        let mut last = None;
        let released = match self.advance(&claim, &mut last).await {
            Ok(wake) => {
                let mirror = last
                    .as_ref()
                    .map(|loaded: &Arc<Loaded<Saga>>| (&loaded.state, loaded.version));
                rows::release(self.writer.pool(), &claim, wake, mirror).await
            }
            Err(err) => {
                let errors = u32::try_from(claim.errors).unwrap_or(0);
                let pause = self.retry_in(errors.saturating_add(3));
                let error = format!("{err:#}");
                tracing::warn!(saga_id = %claim.saga_id, %error, errors = errors + 1, "advancing a saga failed; trying again later");
                rows::release_failed(self.writer.pool(), &claim, Utc::now() + pause, &error).await
            }
        };
        if let Err(err) = released {
            // The lease brings it back.
            tracing::warn!(saga_id = %claim.saga_id, %err, "releasing a saga failed");
        }
    }

    /// Advances one saga as far as it goes now; returns when it is next due (`None`: when
    /// something asks). `last` is left holding the saga as last read, for the row.
    #[tracing::instrument(skip_all, fields(
        saga_id = %claim.saga_id,
        order_id = %claim.order_id,
        correlation_id = %claim.correlation_id.unwrap_or(claim.order_id),
    ))]
    pub async fn advance(
        &self,
        claim: &Claimed,
        last: &mut Option<Arc<Loaded<Saga>>>,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
        let (saga_id, order_id) = (claim.saga_id, claim.order_id);
        let correlation_id = claim.correlation_id.unwrap_or(order_id);
        // Others write to the saga too (an operator's resume, another instance before its
        // lease ran out): the first read of every advance is the store's, unless the row
        // says the saga has not started (a start that raced another one fails on the
        // stream's version and reads again).
        let mut fresh = claim.version > 0;
        let mut order_checked = false;
        let mut mirror = Mirror::default();
        // The saga event the next commands follow from, when this advance wrote it.
        let mut causation_id: Option<Uuid> = None;
        // Results that lost a race to another writer of the saga: fed again after reading
        // it, so the saga records them (applied, or ignored as late).
        let mut carried: Vec<SagaCommand> = Vec::new();
        let mut renewed = tokio::time::Instant::now();
        loop {
            if renewed.elapsed() > self.options.lease / 3 {
                if !rows::renew(self.writer.pool(), claim, self.options.lease).await? {
                    tracing::info!("the claim was lost (its lease ran out); leaving the saga to its new holder");
                    *last = None;
                    return Ok(None);
                }
                renewed = tokio::time::Instant::now();
            }
            let loaded = if fresh || claim.version > 0 || last.is_some() {
                self.writer.read::<Saga>(saga_id, fresh).await?
            } else {
                Arc::new(Loaded {
                    state: Saga::default(),
                    version: 0,
                    last_position: None,
                    folded: 0,
                })
            };
            *last = Some(loaded.clone());
            fresh = false;
            let saga = &loaded.state;
            if !saga.exists() {
                let Some((start, placed)) = self.start_input(order_id).await? else {
                    tracing::warn!("no placed order for this saga; dropping it");
                    rows::forget(self.writer.pool(), saga_id).await?;
                    *last = None;
                    return Ok(None);
                };
                // A still placed order needs no second look for a cancellation.
                order_checked = placed;
                let meta = self.meta(correlation_id, claim.placed_event_id, Some(0), None);
                let start = crate::write::Decide::<Saga>::new(saga_id, start);
                match self.feed(&meta, &start).await? {
                    Some(event_id) => causation_id = Some(event_id),
                    None => fresh = true,
                }
                continue;
            }
            if !carried.is_empty() {
                let meta = self.meta(correlation_id, causation_id, Some(loaded.version), None);
                let inputs = Inputs {
                    saga_id,
                    inputs: std::mem::take(&mut carried),
                };
                match self.feed(&meta, &inputs).await? {
                    Some(event_id) => causation_id = Some(event_id),
                    None => {
                        carried = inputs.inputs;
                        fresh = true;
                        causation_id = None;
                    }
                }
                continue;
            }
            mirror.time_steps(saga);
            if saga.status().is_final() || saga.status() == SagaStatus::Stuck {
                return Ok(None);
            }
            mirror.sync(self.writer.pool(), saga_id, &loaded).await?;
            let now = Utc::now();
            if causation_id.is_none() {
                causation_id = self.event_id(saga_id, loaded.version).await?;
            }
            let plan = saga.plan().expect("a started saga has a plan");
            let context = Context {
                saga_id,
                order_id,
                user_id: plan.user_id,
                version: loaded.version,
                correlation_id,
                causation_id,
            };
            let cancelled = if !order_checked && saga.cancellable() {
                order_checked = true;
                let order = self.writer.read::<Order>(order_id, true).await?;
                (order.state.status() == Some(OrderStatus::Cancelled))
                    .then_some(SagaCommand::CancelledByUser { at: now })
            } else {
                None
            };
            let inputs = match (cancelled, saga.deadline()) {
                (Some(input), _) => vec![input],
                (None, Some(deadline)) if now >= deadline => {
                    let mut inputs = Vec::new();
                    // Calls an open breaker refused are no attempts; if it is still open
                    // when authorizing runs out of time, the provider was unavailable, and
                    // the saga should say so rather than `timeout`.
                    if saga.step() == orderflow_domain::saga::Step::Authorize
                        && saga.attempts() == 0
                        && !matches!(self.gateway.circuit(), gateway::Circuit::Closed { .. })
                    {
                        let action = saga.actions().into_iter().next();
                        if let Some(action) = action {
                            inputs.push(SagaCommand::ActionFailed {
                                action,
                                error: GatewayError::CircuitOpen.to_string(),
                                retry_at: now,
                                at: now,
                            });
                        }
                    }
                    inputs.push(SagaCommand::DeadlinePassed {
                        step: saga.step(),
                        at: now,
                    });
                    inputs
                }
                (None, deadline) => {
                    if let Some(retry_at) = saga.retry_at().filter(|at| *at > now) {
                        let due = deadline.map_or(retry_at, |d| d.min(retry_at));
                        if due - now > chrono::Duration::seconds(1) {
                            return Ok(Some(due));
                        }
                        tokio::time::sleep((due - now).to_std().unwrap_or_default()).await;
                        continue;
                    }
                    let mut actions = saga.actions();
                    if actions.is_empty() {
                        return Ok(None);
                    }
                    if !saga.independent() {
                        actions.truncate(1);
                    }
                    let performed = futures::future::try_join_all(
                        actions
                            .iter()
                            .map(|action| self.perform(&context, saga, action)),
                    )
                    .await?;
                    match results(performed) {
                        Results::Feed(inputs) => inputs,
                        Results::Superseded => {
                            fresh = true;
                            causation_id = None;
                            continue;
                        }
                        Results::Later(pause) => {
                            let due = now + pause;
                            return Ok(Some(deadline.map_or(due, |d| d.min(due))));
                        }
                    }
                }
            };
            let meta = self.meta(correlation_id, causation_id, Some(loaded.version), None);
            let inputs = Inputs { saga_id, inputs };
            match self.feed(&meta, &inputs).await? {
                Some(event_id) => causation_id = Some(event_id),
                None => {
                    carried = inputs.inputs;
                    fresh = true;
                    causation_id = None;
                }
            }
        }
    }

    /// The saga's start, and whether the order is still placed (not cancelled meanwhile).
    async fn start_input(&self, order_id: Uuid) -> anyhow::Result<Option<(SagaCommand, bool)>> {
        let order = self.writer.read::<Order>(order_id, true).await;
        let order = match order {
            Ok(order) => order,
            Err(WriteError::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err).context("reading the order"),
        };
        let state = &order.state;
        let (Some(user_id), Some(status)) = (state.user_id(), state.status()) else {
            return Ok(None);
        };
        if matches!(status, OrderStatus::Draft | OrderStatus::Confirmed) || state.lines().is_empty()
        {
            return Ok(None);
        }
        let start = SagaCommand::Start {
            order_id,
            user_id,
            total: state.total()?,
            lines: state
                .lines()
                .iter()
                .map(|line| SagaLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                })
                .collect(),
            step_timeout_ms: u64::try_from(self.options.step_timeout.as_millis())
                .unwrap_or(u64::MAX),
            max_attempts: self.options.max_attempts,
            at: Utc::now(),
        };
        Ok(Some((start, status == OrderStatus::Placed)))
    }

    /// Appends a saga input: the id of the event it wrote, or `None` when a race was lost
    /// and the saga must be read again.
    async fn feed<C: Command<Target = Saga>>(
        &self,
        meta: &Meta,
        input: &C,
    ) -> anyhow::Result<Option<Uuid>> {
        match self.writer.execute(meta, input).await {
            Ok(Executed::New(outcome)) if outcome.event_id.is_some() => Ok(outcome.event_id),
            Ok(_) => Ok(None),
            Err(
                WriteError::VersionMismatch { .. }
                | WriteError::Conflict { .. }
                | WriteError::Raced,
            ) => Ok(None),
            Err(err) => Err(err).context("recording a saga transition"),
        }
    }

    fn meta(
        &self,
        correlation_id: Uuid,
        causation_id: Option<Uuid>,
        expected_version: Option<i32>,
        dedupe: Option<Dedupe>,
    ) -> Meta {
        Meta {
            correlation_id,
            causation_id,
            actor: Some(ACTOR.into()),
            actor_roles: Vec::new(),
            owner: None,
            expected_version,
            dedupe,
        }
    }

    /// The id of the saga's event at `version`: what causes the commands it issues next.
    async fn event_id(&self, saga_id: Uuid, version: i32) -> anyhow::Result<Option<Uuid>> {
        let found: Option<(Uuid,)> = sqlx::query_as(
            "select (metadata->>'eventId')::uuid from events where stream_id = $1 and version = $2",
        )
        .bind(saga_id)
        .bind(version)
        .fetch_optional(self.writer.pool())
        .await
        .context("reading the saga's last event")?;
        Ok(found.map(|(id,)| id))
    }

    /// Runs `command` for `action` with the action's key as command id.
    async fn effect<C: Command>(
        &self,
        context: &Context,
        action: &Action,
        suffix: &str,
        command: &C,
    ) -> Result<Executed, WriteError> {
        let key = format!("{}{suffix}", action.key(context.saga_id));
        let dedupe = Dedupe {
            fingerprint: key.clone(),
            command_id: key,
            status: 200,
        };
        let meta = self.meta(
            context.correlation_id,
            context.causation_id,
            None,
            Some(dedupe),
        );
        self.writer.execute(&meta, command).await
    }

    /// A store command of the saga's, written only while `action` is still pending.
    fn guarded<'a, C: Command>(
        &self,
        context: &Context,
        action: &'a Action,
        inner: C,
    ) -> Guarded<'a, C> {
        Guarded {
            saga_id: context.saga_id,
            version: context.version,
            action,
            inner,
        }
    }

    fn stripe(&self, product_id: Uuid) -> &tokio::sync::Mutex<()> {
        let mut hasher = DefaultHasher::new();
        product_id.hash(&mut hasher);
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    fn retry_in(&self, attempts: u32) -> chrono::Duration {
        let doubled = self
            .options
            .retry_base
            .saturating_mul(1 << attempts.min(16))
            .min(self.options.retry_max);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        chrono::Duration::from_std(doubled.mul_f64(jitter)).unwrap_or(chrono::Duration::MAX)
    }

    /// What a failed action comes to: an attempt to record, with when to try again; or,
    /// when the provider's breaker refused the call (no call, so no attempt), a pause.
    fn failed<E: std::fmt::Display + 'static>(
        &self,
        saga: &Saga,
        action: &Action,
        error: E,
    ) -> Performed {
        let refused = (&error as &dyn std::any::Any).downcast_ref::<GatewayError>();
        if matches!(refused, Some(GatewayError::CircuitOpen)) {
            return Performed::Later(self.gateway.options().open_for);
        }
        let at = Utc::now();
        tracing::info!(action = action.name(), %error, attempts = saga.attempts() + 1, "a saga action failed");
        Performed::Input(SagaCommand::ActionFailed {
            action: action.clone(),
            error: error.to_string(),
            retry_at: at + self.retry_in(saga.attempts()),
            at,
        })
    }

    /// Performs `action` once and says what came of it.
    async fn perform(
        &self,
        context: &Context,
        saga: &Saga,
        action: &Action,
    ) -> anyhow::Result<Performed> {
        let order_id = context.order_id;
        let at = Utc::now();
        let input = |input: SagaCommand| Ok(Performed::Input(input));
        match action {
            Action::Reserve {
                product_id,
                quantity,
            } => {
                let reserve = ProductCommand::Reserve {
                    order_id,
                    quantity: *quantity,
                };
                let command = self.guarded(
                    context,
                    action,
                    crate::write::Decide::<Product>::existing(*product_id, reserve),
                );
                let result = {
                    let _serial = self.stripe(*product_id).lock().await;
                    self.effect(context, action, "", &command).await
                };
                match result {
                    Ok(_) | Err(WriteError::Rule(DomainError::ReservationExists { .. })) => {
                        input(SagaCommand::Reserved {
                            product_id: *product_id,
                            at,
                        })
                    }
                    Err(WriteError::Rule(rule)) => input(SagaCommand::OutOfStock {
                        product_id: *product_id,
                        detail: rule.to_string(),
                        at,
                    }),
                    Err(
                        err @ (WriteError::NotFound { .. } | WriteError::UnknownReference { .. }),
                    ) => input(SagaCommand::OutOfStock {
                        product_id: *product_id,
                        detail: err.to_string(),
                        at,
                    }),
                    Err(WriteError::Superseded) => Ok(Performed::Superseded),
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
            Action::Authorize { amount } => {
                let call = Authorize {
                    key: action.key(context.saga_id),
                    order_id,
                    user_id: context.user_id,
                    amount: *amount,
                };
                let answer = self.gateway.authorize(&call).await;
                let payment = payment_id(order_id);
                match answer {
                    Ok(authorization_id) => {
                        let record = PaymentCommand::Authorize {
                            order_id,
                            amount: *amount,
                            authorization_id: authorization_id.clone(),
                        };
                        match self.record_payment(context, action, payment, record).await {
                            Ok(()) => input(SagaCommand::Authorized {
                                authorization_id,
                                at,
                            }),
                            Err(err) => Ok(self.failed(saga, action, err)),
                        }
                    }
                    Err(GatewayError::Declined(detail)) => {
                        let record = PaymentCommand::Decline {
                            order_id,
                            amount: *amount,
                            reason: detail.clone(),
                        };
                        match self.record_payment(context, action, payment, record).await {
                            Ok(()) => input(SagaCommand::Declined { detail, at }),
                            Err(err) => Ok(self.failed(saga, action, err)),
                        }
                    }
                    // The saga gave this authorization up meanwhile (another instance
                    // compensated): nothing was authorized; read the saga again.
                    Err(GatewayError::Fenced) => Ok(Performed::Superseded),
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
            Action::ConfirmOrder {} => {
                let command = self.guarded(
                    context,
                    action,
                    crate::write::Decide::<Order>::existing(order_id, OrderCommand::Confirm),
                );
                match self.effect(context, action, "", &command).await {
                    Ok(_)
                    | Err(WriteError::Rule(DomainError::OrderClosed {
                        status: OrderStatus::Confirmed,
                    })) => input(SagaCommand::OrderConfirmed { at }),
                    Err(WriteError::Rule(DomainError::OrderClosed {
                        status: OrderStatus::Cancelled,
                    })) => input(SagaCommand::CancelledByUser { at }),
                    Err(WriteError::Superseded) => Ok(Performed::Superseded),
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
            Action::CommitReservation { product_id } => {
                let commit = ProductCommand::CommitReservation { order_id };
                let command = self.guarded(
                    context,
                    action,
                    crate::write::Decide::<Product>::existing(*product_id, commit),
                );
                let result = {
                    let _serial = self.stripe(*product_id).lock().await;
                    self.effect(context, action, "", &command).await
                };
                match result {
                    Ok(_) => input(SagaCommand::ReservationCommitted {
                        product_id: *product_id,
                        at,
                    }),
                    Err(WriteError::Superseded) => Ok(Performed::Superseded),
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
            Action::Capture { amount } => {
                let call = self.settle(context, action, Some(*amount));
                match self.gateway.capture(&call).await {
                    Ok(()) => match self
                        .record_payment(
                            context,
                            action,
                            payment_id(order_id),
                            PaymentCommand::Capture,
                        )
                        .await
                    {
                        Ok(()) => input(SagaCommand::Captured { at }),
                        Err(err) => Ok(self.failed(saga, action, err)),
                    },
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
            Action::Void {} => {
                let call = self.settle(context, action, None);
                match self.gateway.void(&call).await {
                    Ok(voided) => {
                        if let Some(authorization_id) = voided {
                            let payment = payment_id(order_id);
                            // The payment stream may not know of the authorization (its
                            // answer was lost): record it before its void.
                            let authorized = PaymentCommand::Authorize {
                                order_id,
                                amount: saga.plan().map_or(
                                    orderflow_domain::Money::zero(orderflow_domain::Currency::EUR),
                                    |plan| plan.total,
                                ),
                                authorization_id,
                            };
                            let reason = saga.reason().map_or("compensated", |r| r.as_str());
                            let void = PaymentCommand::Void {
                                reason: reason.into(),
                            };
                            let recorded = async {
                                self.record_payment(context, action, payment, authorized)
                                    .await?;
                                self.record_payment(context, action, payment, void).await
                            };
                            if let Err(err) = recorded.await {
                                return Ok(self.failed(saga, action, err));
                            }
                        }
                        input(SagaCommand::Voided { at })
                    }
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
            Action::Release { product_id } => {
                let release = ProductCommand::Release { order_id };
                let command = self.guarded(
                    context,
                    action,
                    crate::write::Decide::<Product>::existing(*product_id, release),
                );
                let result = {
                    let _serial = self.stripe(*product_id).lock().await;
                    self.effect(context, action, "", &command).await
                };
                match result {
                    // Nothing held (the reservation never happened) is released already.
                    Ok(_)
                    | Err(WriteError::Rule(DomainError::ReservationNotFound { .. }))
                    | Err(WriteError::NotFound { .. } | WriteError::UnknownReference { .. }) => {
                        input(SagaCommand::Released {
                            product_id: *product_id,
                            at,
                        })
                    }
                    Err(WriteError::Superseded) => Ok(Performed::Superseded),
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
            Action::CancelOrder { reason } => {
                let cancel = OrderCommand::Cancel {
                    reason: reason.as_str().into(),
                };
                let command = self.guarded(
                    context,
                    action,
                    crate::write::Decide::<Order>::existing(order_id, cancel),
                );
                match self.effect(context, action, "", &command).await {
                    Ok(_)
                    | Err(WriteError::Rule(DomainError::OrderClosed {
                        status: OrderStatus::Cancelled,
                    })) => input(SagaCommand::OrderCancelled { at }),
                    Err(WriteError::Superseded) => Ok(Performed::Superseded),
                    Err(err) => Ok(self.failed(saga, action, err)),
                }
            }
        }
    }

    fn settle(
        &self,
        context: &Context,
        action: &Action,
        amount: Option<orderflow_domain::Money>,
    ) -> Settle {
        Settle {
            key: action.key(context.saga_id),
            order_id: context.order_id,
            authorize_key: authorize_key(context.saga_id),
            amount,
        }
    }

    /// Records what the provider did on the order's payment stream. Not guarded by the
    /// saga: the provider's answer is a fact whatever step the saga is in. A repeat (same
    /// key) or a record the payment already reflects is fine.
    async fn record_payment(
        &self,
        context: &Context,
        action: &Action,
        payment: Uuid,
        command: PaymentCommand,
    ) -> Result<(), WriteError> {
        // The authorize action's answer starts the stream: written without reading it (a
        // repeat fails on the version and is answered from its command id). Anything else,
        // including an authorization a void found, reads it first.
        let (command, suffix) = match (action, &command) {
            (
                Action::Authorize { .. },
                PaymentCommand::Authorize { .. } | PaymentCommand::Decline { .. },
            ) => (
                crate::write::Decide::<Payment>::new(payment, command),
                ":payment",
            ),
            (_, PaymentCommand::Authorize { .. }) => (
                crate::write::Decide::<Payment>::existing(payment, command),
                ":payment-authorized",
            ),
            _ => (
                crate::write::Decide::<Payment>::existing(payment, command),
                ":payment",
            ),
        };
        match self.effect(context, action, suffix, &command).await {
            Ok(_)
            | Err(WriteError::Rule(
                DomainError::AlreadyExists { .. } | DomainError::PaymentNotAuthorized { .. },
            )) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

impl<G> std::fmt::Debug for Orchestrator<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A command the saga issues for `action`: decided only while the saga, at `version`, still
/// has `action` pending, and written only if the saga stream has not moved meanwhile.
struct Guarded<'a, C> {
    saga_id: Uuid,
    version: i32,
    action: &'a Action,
    inner: C,
}

impl<C: Command> Command for Guarded<'_, C> {
    type Target = C::Target;

    fn stream_id(&self) -> Uuid {
        self.inner.stream_id()
    }

    fn creates(&self) -> bool {
        self.inner.creates()
    }

    async fn decide(
        &self,
        target: &Self::Target,
        refs: &mut Refs<'_>,
    ) -> Result<Vec<<Self::Target as Aggregate>::Event>, WriteError> {
        let saga = refs.read::<Saga>(self.saga_id).await?;
        if saga.version != self.version || !saga.state.actions().contains(self.action) {
            return Err(WriteError::Superseded);
        }
        self.inner.decide(target, refs).await
    }
}
