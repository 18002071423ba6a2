//! The write path, free of any transport: REST handlers call it, and so can anything else
//! that issues commands. [`Writer::execute`] runs one [`Command`] top to bottom:
//!
//! 1. a command id that already answered is answered again (idempotency: found by its
//!    recorded key when the repeat writes, or looked up when the repeat is refused);
//! 2. the target stream is loaded (from the [`AggregateCache`] when it holds it) and held to
//!    the expected version, if one was given;
//! 3. the command decides, loading any other stream it reads through [`Refs`] (a stream
//!    whose state the decision uses becomes a version guard on the write); a refusal or a
//!    no-op decided on cached state is decided again on the store's, since only an append
//!    checks versions;
//! 4. one statement appends the events, claims and releases the unique values that changed,
//!    and records the idempotent response ([`orderflow_store::Write`]);
//! 5. a lost race (the stream or a guarded one moved on, a deadlock) reloads and decides
//!    again, [`MAX_ATTEMPTS`] attempts in all; with an expected version it is a mismatch
//!    instead.

use std::future::Future;
use std::sync::Arc;

use orderflow_domain::order::Order;
use orderflow_domain::payment::Payment;
use orderflow_domain::product::Product;
use orderflow_domain::saga::Saga;
use orderflow_domain::user::User;
use orderflow_domain::{Aggregate, DomainError};
use orderflow_store::claims::{Claim, ClaimScope};
use orderflow_store::idempotency::{self, StoredResponse};
use orderflow_store::signal::AppendSignal;
use orderflow_store::snapshot::{self, SNAPSHOT_EVERY};
use orderflow_store::{EventMetadata, Loaded, NewEvent, Record, StoreError, Write, Written};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::cache::{AggregateCache, Cached};

/// How often a command is decided in all when it keeps losing races for its streams.
pub const MAX_ATTEMPTS: u32 = 5;

/// What a successful command wrote (or, for a no-op, where the stream stands); also the
/// body of every successful command response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WriteResponse)]
pub struct Outcome {
    pub stream_id: Uuid,
    /// The stream's version after the command (unchanged when the command was a no-op).
    pub version: i32,
    /// Global position of the stream's last event.
    pub position: Option<i64>,
    /// The id of the last event this command wrote, for the causation of what it sets off
    /// in-process; not part of the HTTP answer (nor of a replayed one).
    #[serde(skip)]
    pub event_id: Option<Uuid>,
}

/// A command's answer: new, or the one recorded for its command id earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    New(Outcome),
    /// `status` is what the first caller recorded with it.
    Replayed {
        outcome: Outcome,
        status: i16,
    },
}

/// Who asks, and under which identity the command runs.
#[derive(Debug, Clone)]
pub struct Meta {
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// Who asks (a token's subject), recorded in every event's metadata with their roles.
    pub actor: Option<String>,
    pub actor_roles: Vec<String>,
    /// The user whose streams this caller may change (a customer): any other stream is
    /// answered as not found, so a customer cannot learn what exists beyond their own.
    pub owner: Option<Uuid>,
    /// The stream version the caller decided on; a different one is refused.
    pub expected_version: Option<i32>,
    /// With a command id, the command runs at most once.
    pub dedupe: Option<Dedupe>,
}

/// A command id whose first answer is recorded and given back to every repeat.
#[derive(Debug, Clone)]
pub struct Dedupe {
    pub command_id: String,
    /// Identifies the request under that id: the same id with another request is refused.
    pub fingerprint: String,
    /// What the caller answers for this command, recorded with the outcome.
    pub status: i16,
}

/// Every way a command fails.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A business rule said no.
    #[error(transparent)]
    Rule(#[from] DomainError),
    /// The command's own stream is of another type than it addresses.
    #[error("{stream_type} {stream_id} does not exist")]
    NotFound {
        stream_type: &'static str,
        stream_id: Uuid,
    },
    /// A stream the command refers to does not exist (or is another type).
    #[error("{stream_type} {stream_id} does not exist")]
    UnknownReference {
        stream_type: &'static str,
        stream_id: Uuid,
    },
    /// The caller's expected version is not the stream's.
    #[error("the stream is at version {current}, not {expected}")]
    VersionMismatch { expected: i32, current: i32 },
    /// Still losing races after [`MAX_ATTEMPTS`].
    #[error("stream {stream_id} was changed concurrently; retry")]
    Conflict { stream_id: Uuid },
    /// Still deadlocking with other commands after [`MAX_ATTEMPTS`].
    #[error("the command raced another one; retry")]
    Raced,
    /// A unique value belongs to another stream.
    #[error("{scope} {value:?} is already taken")]
    Taken { scope: ClaimScope, value: String },
    /// The command id answered a different request.
    #[error("this command id was already used for a different request")]
    CommandIdReused,
    /// Stored events break a rule every stream of their type keeps.
    #[error("a stored stream breaks an invariant: {0}")]
    Broken(&'static str),
    /// The saga step this command was issued for has been left (another orchestrator
    /// instance moved the saga on): nothing was written.
    #[error("the saga moved on before this command was written")]
    Superseded,
    /// A recorded response this version cannot read.
    #[error("the recorded response cannot be read")]
    StoredResponse(#[source] serde_json::Error),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Taken { scope, value } => Self::Taken { scope, value },
            other => Self::Store(other),
        }
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

/// Values an aggregate holds that must be unique across streams of its type.
pub trait Unique: Aggregate {
    fn unique_values(&self) -> Vec<Claim> {
        Vec::new()
    }
}

impl Unique for User {
    fn unique_values(&self) -> Vec<Claim> {
        self.email()
            .map(|email| Claim {
                scope: ClaimScope::Email,
                value: email.to_owned(),
            })
            .into_iter()
            .collect()
    }
}

impl Unique for Product {
    fn unique_values(&self) -> Vec<Claim> {
        self.sku()
            .map(|sku| Claim {
                scope: ClaimScope::Sku,
                value: sku.to_owned(),
            })
            .into_iter()
            .collect()
    }
}

/// Whose a stream is, for customers (see [`Meta::owner`]): an order is its user's, a user
/// stream is that user's own; products, payments and sagas are nobody's.
pub trait Owned: Aggregate {
    fn owner(&self, _stream_id: Uuid) -> Option<Uuid> {
        None
    }
}

impl Owned for Order {
    fn owner(&self, _stream_id: Uuid) -> Option<Uuid> {
        self.user_id()
    }
}

impl Owned for User {
    fn owner(&self, stream_id: Uuid) -> Option<Uuid> {
        Some(stream_id)
    }
}

impl Owned for Product {}
impl Owned for Payment {}
impl Owned for Saga {}

impl Unique for Order {}
impl Unique for Payment {}
impl Unique for Saga {}

/// How the write path reads a stream from the store: every event, or (for streams that
/// grow long) the latest snapshot and the events after it.
pub trait Storage: Aggregate<Event: Send> + Send + Sync {
    /// Whether appends leave snapshots behind.
    const SNAPSHOTS: bool = false;

    fn load_from_store(
        conn: &mut PgConnection,
        id: Uuid,
    ) -> impl Future<Output = Result<Loaded<Self>, StoreError>> + Send {
        orderflow_store::load::<Self>(conn, id)
    }

    /// Store `loaded` as the stream's snapshot (only called when [`Storage::SNAPSHOTS`]).
    fn save_snapshot(
        _conn: &mut PgConnection,
        _id: Uuid,
        _loaded: &Loaded<Self>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

impl Storage for Order {}
impl Storage for Payment {}
impl Storage for Saga {}
impl Storage for User {}

/// Products grow with every reservation: they load from snapshots.
impl Storage for Product {
    const SNAPSHOTS: bool = true;

    fn load_from_store(
        conn: &mut PgConnection,
        id: Uuid,
    ) -> impl Future<Output = Result<Loaded<Self>, StoreError>> + Send {
        snapshot::load_snapshotted::<Self>(conn, id)
    }

    fn save_snapshot(
        conn: &mut PgConnection,
        id: Uuid,
        loaded: &Loaded<Self>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        snapshot::save(conn, id, loaded)
    }
}

/// An aggregate the write path can load, cache and append to.
pub trait Stream: Unique + Owned + Storage + Send + Sync + 'static {}
impl<A: Unique + Owned + Storage + Send + Sync + 'static> Stream for A where A::Event: Send + Sync {}

/// One command against one stream.
pub trait Command: Send + Sync {
    type Target: Stream;

    fn stream_id(&self) -> Uuid;

    /// Whether the stream is new by construction (an id the caller just made): it is not
    /// loaded, and it starts at version 0.
    fn creates(&self) -> bool {
        false
    }

    /// Decide against the target's state, reading any other stream through `refs`.
    fn decide(
        &self,
        target: &Self::Target,
        refs: &mut Refs<'_>,
    ) -> impl Future<Output = Result<Vec<<Self::Target as Aggregate>::Event>, WriteError>> + Send;
}

/// A command that needs nothing but its stream's state.
#[derive(Debug, Clone)]
pub struct Decide<A: Aggregate> {
    stream_id: Uuid,
    command: A::Command,
    creates: bool,
}

impl<A: Aggregate> Decide<A> {
    /// On a stream whose id was just made for it.
    pub fn new(stream_id: Uuid, command: A::Command) -> Self {
        Self {
            stream_id,
            command,
            creates: true,
        }
    }

    /// On a stream that may exist.
    pub fn existing(stream_id: Uuid, command: A::Command) -> Self {
        Self {
            stream_id,
            command,
            creates: false,
        }
    }
}

impl<A> Command for Decide<A>
where
    A: Stream,
    A::Command: Clone + Send + Sync,
{
    type Target = A;

    fn stream_id(&self) -> Uuid {
        self.stream_id
    }

    fn creates(&self) -> bool {
        self.creates
    }

    async fn decide(&self, target: &A, _refs: &mut Refs<'_>) -> Result<Vec<A::Event>, WriteError> {
        Ok(target.handle(self.command.clone())?)
    }
}

/// Streams a decision reads besides its own; the write is guarded on their versions.
pub struct Refs<'w> {
    writer: &'w Writer,
    guards: Vec<(Uuid, i32)>,
    /// Read from the store, not the cache (deciding again after a refusal or a lost race).
    fresh: bool,
    /// Whether any stream came from the cache.
    used_cache: bool,
}

impl Refs<'_> {
    /// A stream the command refers to, which must exist, and whose state the decision
    /// uses: the write only happens if it is still at the version read here.
    pub async fn read<A: Stream>(&mut self, id: Uuid) -> Result<Arc<Loaded<A>>, WriteError> {
        let loaded = self.exists::<A>(id).await?;
        self.guards.push((id, loaded.version));
        Ok(loaded)
    }

    /// A stream that must exist, whatever its state (streams are never deleted, so this
    /// needs no guard).
    pub async fn exists<A: Stream>(&mut self, id: Uuid) -> Result<Arc<Loaded<A>>, WriteError> {
        match self
            .writer
            .load::<A>(id, self.fresh, &mut self.used_cache)
            .await
        {
            Ok(loaded) if loaded.version > 0 => Ok(loaded),
            Ok(_) | Err(WriteError::NotFound { .. }) => Err(WriteError::UnknownReference {
                stream_type: A::STREAM_TYPE,
                stream_id: id,
            }),
            Err(other) => Err(other),
        }
    }
}

/// Executes commands; cheap to clone, one per process.
#[derive(Debug, Clone)]
pub struct Writer {
    pool: PgPool,
    cache: Arc<AggregateCache>,
    /// Wakes the relay after each append.
    appended: AppendSignal,
}

impl Writer {
    /// `cache_capacity` aggregates are kept in memory (0: every command reads its streams).
    /// Each append is announced on [`EVENTS_APPENDED`](orderflow_store::signal) for the
    /// relay. Must be called inside a Tokio runtime.
    pub fn new(pool: PgPool, cache_capacity: usize) -> Self {
        Self {
            appended: AppendSignal::start(&pool),
            pool,
            cache: Arc::new(AggregateCache::new(cache_capacity)),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A stream's state as the write path sees it: from the cache unless `fresh`. A
    /// stream never written is at version 0.
    pub async fn read<A: Stream>(
        &self,
        id: Uuid,
        fresh: bool,
    ) -> Result<Arc<Loaded<A>>, WriteError> {
        self.load::<A>(id, fresh, &mut false).await
    }

    #[tracing::instrument(skip_all, fields(stream_id = %command.stream_id()), err(level = "debug"))]
    pub async fn execute<C: Command>(
        &self,
        meta: &Meta,
        command: &C,
    ) -> Result<Executed, WriteError> {
        let result = self.decide_and_write(meta, command).await;
        // A repeat of an answered command id is found without a lookup when it writes (the
        // key is recorded by the same statement as the events, so the repeat's write fails
        // on it and is answered from it). Only a repeat that fails before writing (a
        // refusal, a moved version) needs the lookup, so new commands skip it.
        match (&meta.dedupe, result) {
            (Some(dedupe), Err(err)) if !matches!(err, WriteError::Store(_)) => {
                match idempotency::find(&self.pool, &dedupe.command_id).await? {
                    Some(stored) => replay(stored, dedupe),
                    None => Err(err),
                }
            }
            (_, result) => result,
        }
    }

    async fn decide_and_write<C: Command>(
        &self,
        meta: &Meta,
        command: &C,
    ) -> Result<Executed, WriteError> {
        let stream_id = command.stream_id();
        let metadata = EventMetadata {
            event_id: Uuid::nil(),
            correlation_id: meta.correlation_id,
            causation_id: meta.causation_id,
            command_id: meta
                .dedupe
                .as_ref()
                .map_or_else(|| Uuid::now_v7().to_string(), |d| d.command_id.clone()),
            actor: meta.actor.clone(),
            actor_roles: meta.actor_roles.clone(),
        };
        let record = meta.dedupe.as_ref().map(|d| Record {
            key: &d.command_id,
            fingerprint: &d.fingerprint,
            status: d.status,
        });
        let mut fresh = false;
        let mut attempt = 1;
        loop {
            let mut used_cache = false;
            let target = match command.creates() {
                true => Arc::new(Loaded {
                    state: C::Target::default(),
                    version: 0,
                    last_position: None,
                    folded: 0,
                }),
                false => {
                    self.load_expected::<C::Target>(stream_id, meta, fresh, &mut used_cache)
                        .await?
                }
            };
            let mut refs = Refs {
                writer: self,
                guards: Vec::new(),
                fresh,
                used_cache,
            };
            let decided = command.decide(&target.state, &mut refs).await;
            // Only an append checks the versions a decision was made on: a refusal or a
            // no-op decided on cached state is decided again on the store's.
            let unchecked = match &decided {
                Ok(events) => events.is_empty(),
                Err(err) => matches!(
                    err,
                    WriteError::Rule(_) | WriteError::Broken(_) | WriteError::Superseded
                ),
            };
            if unchecked && refs.used_cache {
                fresh = true;
                continue;
            }
            let decided = decided?;
            if decided.is_empty() {
                let outcome = Outcome {
                    stream_id,
                    version: target.version,
                    position: target.last_position,
                    event_id: None,
                };
                return self.record_no_op(outcome, meta.dedupe.as_ref()).await;
            }
            let mut after = target.state.clone();
            for event in &decided {
                after.apply(event);
            }
            let (before_values, after_values) =
                (target.state.unique_values(), after.unique_values());
            let claims: Vec<Claim> = after_values
                .iter()
                .filter(|v| !before_values.contains(v))
                .cloned()
                .collect();
            let releases: Vec<Claim> = before_values
                .into_iter()
                .filter(|v| !after_values.contains(v))
                .collect();
            let events: Vec<NewEvent> = decided.iter().map(NewEvent::from_domain).collect();
            let write = Write {
                stream_id,
                stream_type: C::Target::STREAM_TYPE,
                expected_version: target.version,
                events: &events,
                metadata: &metadata,
                guards: &refs.guards,
                claims: &claims,
                releases: &releases,
                record: record.as_ref(),
            };
            let mut conn = self.pool.acquire().await?;
            let lost = match write.execute(&mut conn).await {
                Ok(Written::Appended(appended)) => {
                    self.appended.appended();
                    metrics::counter!(
                        "orderflow_events_appended_total",
                        "stream_type" => C::Target::STREAM_TYPE,
                    )
                    .increment(events.len() as u64);
                    let loaded = Arc::new(Loaded {
                        state: after,
                        version: appended.version,
                        last_position: Some(appended.last_position),
                        folded: 0,
                    });
                    let every = i32::try_from(SNAPSHOT_EVERY).unwrap_or(i32::MAX);
                    if C::Target::SNAPSHOTS && target.version / every != appended.version / every {
                        // Only a cache of the fold: failing to write one costs a longer load.
                        if let Err(err) =
                            C::Target::save_snapshot(&mut conn, stream_id, &loaded).await
                        {
                            tracing::warn!(%stream_id, %err, "writing a snapshot failed");
                        }
                    }
                    self.cache.put(C::Target::STREAM_TYPE, stream_id, loaded);
                    return Ok(Executed::New(Outcome {
                        stream_id,
                        version: appended.version,
                        position: Some(appended.last_position),
                        event_id: Some(appended.last_event_id),
                    }));
                }
                Ok(Written::Stale) => {
                    for (id, _) in &refs.guards {
                        self.cache.forget(*id);
                    }
                    Lost::Reference
                }
                Err(StoreError::Conflict { .. }) => {
                    self.cache.forget(stream_id);
                    Lost::Stream
                }
                Err(StoreError::Raced(_)) => Lost::Deadlock,
                Err(err @ (StoreError::KeyRecorded { .. } | StoreError::Taken { .. })) => {
                    Lost::Final(err.into())
                }
                Err(other) => return Err(other.into()),
            };
            drop(conn);
            // The race may have been lost to a repeat of this very command: answer as it did.
            if let Some(dedupe) = &meta.dedupe {
                if let Some(stored) = idempotency::find(&self.pool, &dedupe.command_id).await? {
                    return replay(stored, dedupe);
                }
            }
            let error = match lost {
                Lost::Final(error) => return Err(error),
                Lost::Stream => match meta.expected_version {
                    // The caller decided on a version that is gone: say which is current.
                    Some(expected) => {
                        let current = self
                            .load::<C::Target>(stream_id, true, &mut false)
                            .await?
                            .version;
                        return Err(WriteError::VersionMismatch { expected, current });
                    }
                    None => WriteError::Conflict { stream_id },
                },
                Lost::Reference => WriteError::Conflict { stream_id },
                Lost::Deadlock => WriteError::Raced,
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(attempt, %error, "lost a race; deciding again");
            attempt += 1;
            fresh = true;
        }
    }

    /// The target stream, held to the caller's expected version. A cached state that
    /// disagrees with it is checked against the store before the caller is refused.
    async fn load_expected<A: Stream>(
        &self,
        id: Uuid,
        meta: &Meta,
        fresh: bool,
        used_cache: &mut bool,
    ) -> Result<Arc<Loaded<A>>, WriteError> {
        let loaded = self.load::<A>(id, fresh, used_cache).await?;
        // Before the version check, whose answer would tell a stranger the stream's version.
        // An owner never changes, so a cached state answers this as well as a fresh one.
        if meta.owner.is_some() && loaded.state.owner(id) != meta.owner {
            return Err(WriteError::NotFound {
                stream_type: A::STREAM_TYPE,
                stream_id: id,
            });
        }
        let Some(expected) = meta.expected_version else {
            return Ok(loaded);
        };
        let loaded = match (loaded.version == expected, *used_cache) {
            (false, true) => {
                *used_cache = false;
                self.load::<A>(id, true, used_cache).await?
            }
            _ => loaded,
        };
        if loaded.version != expected {
            return Err(WriteError::VersionMismatch {
                expected,
                current: loaded.version,
            });
        }
        Ok(loaded)
    }

    /// A stream's state: from the cache unless `fresh` (then `used_cache` is set), else
    /// read and folded (and cached).
    async fn load<A: Stream>(
        &self,
        id: Uuid,
        fresh: bool,
        used_cache: &mut bool,
    ) -> Result<Arc<Loaded<A>>, WriteError> {
        if !fresh {
            match self.cache.get::<A>(A::STREAM_TYPE, id) {
                Cached::Hit(loaded) => {
                    *used_cache = true;
                    return Ok(loaded);
                }
                Cached::OtherType(_) => {
                    return Err(WriteError::NotFound {
                        stream_type: A::STREAM_TYPE,
                        stream_id: id,
                    })
                }
                Cached::Miss => {}
            }
        }
        let mut conn = self.pool.acquire().await?;
        let loaded = match A::load_from_store(&mut conn, id).await {
            Ok(loaded) => Arc::new(loaded),
            Err(StoreError::WrongStreamType { .. }) => {
                return Err(WriteError::NotFound {
                    stream_type: A::STREAM_TYPE,
                    stream_id: id,
                })
            }
            Err(other) => return Err(other.into()),
        };
        self.cache.put(A::STREAM_TYPE, id, loaded.clone());
        Ok(loaded)
    }

    /// A command that changed nothing still answers its command id the same way next time.
    async fn record_no_op(
        &self,
        outcome: Outcome,
        dedupe: Option<&Dedupe>,
    ) -> Result<Executed, WriteError> {
        let Some(dedupe) = dedupe else {
            return Ok(Executed::New(outcome));
        };
        let stored = StoredResponse {
            fingerprint: dedupe.fingerprint.clone(),
            status: dedupe.status,
            response: serde_json::to_value(outcome).expect("an outcome serializes"),
        };
        let mut conn = self.pool.acquire().await?;
        if idempotency::record(&mut conn, &dedupe.command_id, &stored).await? {
            return Ok(Executed::New(outcome));
        }
        let stored = idempotency::find(&mut *conn, &dedupe.command_id)
            .await?
            .ok_or_else(|| StoreError::KeyRecorded {
                key: dedupe.command_id.clone(),
            })?;
        replay(stored, dedupe)
    }
}

/// Why a write did not happen.
enum Lost {
    /// Another command appended to the stream first.
    Stream,
    /// A stream the decision read has moved on.
    Reference,
    /// Deadlocked with another command (e.g. two users swapping emails).
    Deadlock,
    /// Deciding again cannot help.
    Final(WriteError),
}

fn replay(stored: StoredResponse, dedupe: &Dedupe) -> Result<Executed, WriteError> {
    if stored.fingerprint != dedupe.fingerprint {
        return Err(WriteError::CommandIdReused);
    }
    let outcome: Outcome =
        serde_json::from_value(stored.response).map_err(WriteError::StoredResponse)?;
    Ok(Executed::Replayed {
        outcome,
        status: stored.status,
    })
}
