use orderflow_domain::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::claims::Claim;
use crate::event::{EventMetadata, NewEvent, StoredEvent, COLUMNS};
use crate::{unique_violation, StoreError};

/// An aggregate folded from its stream, with what an append needs to know about it.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    /// 0 for a stream with no events.
    pub version: i32,
    /// Global position of the stream's last event.
    pub last_position: Option<i64>,
    /// Events folded to get here (after the snapshot it started from, if any).
    pub folded: u32,
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub version: i32,
    pub first_position: i64,
    pub last_position: i64,
    /// The id the last appended event was given.
    pub last_event_id: Uuid,
}

/// Every event of a stream, in version order.
pub async fn load_events(
    conn: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!("select {COLUMNS} from events where stream_id = $1 order by version");
    Ok(sqlx::query_as(&sql).bind(stream_id).fetch_all(conn).await?)
}

/// Load and fold a stream. An append must be decided on committed versions only (read
/// before the appending statement starts, from here or from a cache filled by committed
/// writes): its transaction id is then allocated after the writers of what it read, so
/// each stream's versions stay in `tx_id` order for the gap-safe reader.
pub async fn load<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: Uuid,
) -> Result<Loaded<A>, StoreError> {
    load_after(conn, stream_id, None).await
}

/// Fold the events after `base` (a snapshot) onto it; from the first event without one.
pub async fn load_after<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: Uuid,
    base: Option<Loaded<A>>,
) -> Result<Loaded<A>, StoreError> {
    let after = base.as_ref().map_or(0, |base| base.version);
    let sql = format!(
        "select {COLUMNS} from events where stream_id = $1 and version > $2 order by version"
    );
    let events: Vec<StoredEvent> = sqlx::query_as(&sql)
        .bind(stream_id)
        .bind(after)
        .fetch_all(conn)
        .await?;
    if let Some(first) = events.first() {
        if first.stream_type != A::STREAM_TYPE {
            return Err(StoreError::WrongStreamType {
                stream_id,
                expected: A::STREAM_TYPE,
                actual: first.stream_type.clone(),
            });
        }
    }
    let mut loaded = base.unwrap_or(Loaded {
        state: A::default(),
        version: 0,
        last_position: None,
        folded: 0,
    });
    for stored in &events {
        loaded.state.apply(&stored.decode::<A::Event>()?);
        loaded.version = stored.version;
        loaded.last_position = Some(stored.position);
    }
    loaded.folded = u32::try_from(events.len()).unwrap_or(u32::MAX);
    Ok(loaded)
}

/// Append `events` after `expected_version`. Each event gets its own event id and the
/// rest of `metadata`. A concurrent append to the same stream is a [`StoreError::Conflict`].
pub async fn append(
    conn: &mut PgConnection,
    stream_id: Uuid,
    stream_type: &str,
    expected_version: i32,
    events: &[NewEvent],
    metadata: &EventMetadata,
) -> Result<AppendOutcome, StoreError> {
    let write = Write {
        stream_id,
        stream_type,
        expected_version,
        events,
        metadata,
        guards: &[],
        claims: &[],
        releases: &[],
        record: None,
    };
    match write.execute(conn).await? {
        Written::Appended(outcome) => Ok(outcome),
        Written::Stale => unreachable!("a write without guards is never stale"),
    }
}

/// Everything one command writes, done by a single statement (so a single round trip and
/// its own transaction when run on a pool): the events, the unique values it claims and
/// releases, and the response recorded under its idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub stream_id: Uuid,
    pub stream_type: &'a str,
    /// The version the decision was made on; the events get the versions after it.
    pub expected_version: i32,
    /// At least one.
    pub events: &'a [NewEvent],
    pub metadata: &'a EventMetadata,
    /// Other streams the decision read, at the version it read: if any has moved on,
    /// nothing is written and the answer is [`Written::Stale`].
    pub guards: &'a [(Uuid, i32)],
    pub claims: &'a [Claim],
    pub releases: &'a [Claim],
    /// The idempotency record to store with the events; its response is filled in here.
    pub record: Option<&'a Record<'a>>,
}

/// An idempotency key and what the caller will answer for it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub status: i16,
}

/// What a [`Write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Appended(AppendOutcome),
    /// A guarded stream has moved on: nothing was written.
    Stale,
}

impl Write<'_> {
    /// The statement for this write, with only the parts it needs: every part is planned
    /// and executed even when its arrays are empty, and this is the hottest statement.
    /// Parameters: `$1`..`$7` the events, then guards, claims, releases and the record,
    /// each numbered after the parts before it that are present.
    ///
    /// The events are inserted only when every guard holds; the releases and the
    /// idempotency record (`{streamId, version, position}`, the shape
    /// [`crate::idempotency::StoredResponse::response`] holds) only when events were
    /// inserted. A unique violation anywhere aborts the whole statement, claims included.
    fn statement(&self) -> String {
        let mut parts = Vec::new();
        let mut next = 8;
        let mut param = || {
            next += 1;
            next - 1
        };
        let mut holds = "true".to_owned();
        if !self.guards.is_empty() {
            let (ids, versions) = (param(), param());
            parts.push(format!(
                "guard as (select bool_and(coalesce((select max(e.version) from events e \
                 where e.stream_id = g.id), 0) = g.version) as ok \
                 from unnest(${ids}::uuid[], ${versions}::int[]) as g(id, version))"
            ));
            holds = "(select ok from guard)".to_owned();
        }
        if !self.claims.is_empty() {
            let (scopes, values) = (param(), param());
            parts.push(format!(
                "claimed as (insert into unique_claims (scope, value, stream_id) \
                 select c.scope, c.value, $1 from unnest(${scopes}::text[], ${values}::text[]) as c(scope, value) \
                 where {holds} and not exists (select 1 from unique_claims u \
                 where u.scope = c.scope and u.value = c.value and u.stream_id = $1))"
            ));
        }
        parts.push(format!(
            "appended as (insert into events \
             (stream_id, stream_type, version, event_type, schema_version, payload, metadata) \
             select $1, $2, v, t, s, p, m \
             from unnest($3::int[], $4::text[], $5::int2[], $6::jsonb[], $7::jsonb[]) as u(v, t, s, p, m) \
             where {holds} returning position)"
        ));
        if !self.releases.is_empty() {
            let (scopes, values) = (param(), param());
            parts.push(format!(
                "released as (delete from unique_claims u \
                 using unnest(${scopes}::text[], ${values}::text[]) as r(scope, value) \
                 where u.scope = r.scope and u.value = r.value and u.stream_id = $1 \
                 and exists (select 1 from appended))"
            ));
        }
        if self.record.is_some() {
            let (key, fingerprint, status, version) = (param(), param(), param(), param());
            parts.push(format!(
                "recorded as (insert into idempotency_keys (key, fingerprint, status, response) \
                 select ${key}, ${fingerprint}, ${status}, jsonb_build_object('streamId', $1, \
                 'version', ${version}::int, 'position', max(position)) \
                 from appended having count(*) > 0)"
            ));
        }
        format!(
            "with {} select min(position), max(position) from appended",
            parts.join(", ")
        )
    }

    /// Run the write as one statement. A concurrent append to the stream is
    /// [`StoreError::Conflict`], a value claimed by another stream [`StoreError::Taken`],
    /// a key recorded by a concurrent retry [`StoreError::KeyRecorded`].
    #[tracing::instrument(skip_all, fields(stream_id = %self.stream_id, expected_version = self.expected_version, count = self.events.len()), err(level = "debug"))]
    pub async fn execute(&self, conn: &mut PgConnection) -> Result<Written, StoreError> {
        assert!(!self.events.is_empty(), "a write needs at least one event");
        let count = self.events.len() as i32;
        let versions: Vec<i32> = (1..=count).map(|i| self.expected_version + i).collect();
        let types: Vec<&str> = self.events.iter().map(|e| e.event_type.as_str()).collect();
        let schemas: Vec<i16> = self.events.iter().map(|e| e.schema_version).collect();
        let payloads: Vec<&serde_json::Value> = self.events.iter().map(|e| &e.payload).collect();
        let event_ids: Vec<Uuid> = self.events.iter().map(|_| Uuid::now_v7()).collect();
        let metadatas = event_ids
            .iter()
            .map(|event_id| {
                serde_json::to_value(EventMetadata {
                    event_id: *event_id,
                    ..self.metadata.clone()
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .expect("metadata serializes");
        let columns = |claims: &[Claim]| -> (Vec<&'static str>, Vec<String>) {
            claims
                .iter()
                .map(|c| (c.scope.as_str(), c.value.clone()))
                .unzip()
        };
        let sql = self.statement();
        let mut query = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(&sql)
            .bind(self.stream_id)
            .bind(self.stream_type)
            .bind(&versions)
            .bind(&types)
            .bind(&schemas)
            .bind(&payloads)
            .bind(&metadatas);
        if !self.guards.is_empty() {
            let (ids, versions): (Vec<Uuid>, Vec<i32>) = self.guards.iter().copied().unzip();
            query = query.bind(ids).bind(versions);
        }
        if !self.claims.is_empty() {
            let (scopes, values) = columns(self.claims);
            query = query.bind(scopes).bind(values);
        }
        if !self.releases.is_empty() {
            let (scopes, values) = columns(self.releases);
            query = query.bind(scopes).bind(values);
        }
        let new_version = self.expected_version + count;
        if let Some(record) = self.record {
            query = query
                .bind(record.key)
                .bind(record.fingerprint)
                .bind(record.status)
                .bind(new_version);
        }
        let (first, last) = query
            .fetch_one(conn)
            .await
            .map_err(|err| self.refusal(err))?;
        Ok(match (first, last) {
            (Some(first_position), Some(last_position)) => Written::Appended(AppendOutcome {
                version: new_version,
                first_position,
                last_position,
                last_event_id: *event_ids.last().expect("at least one event"),
            }),
            _ => Written::Stale,
        })
    }

    /// Unique violations are facts about the write, named by their constraint.
    fn refusal(&self, err: sqlx::Error) -> StoreError {
        match unique_violation(&err) {
            Some("events_stream_version_key") => StoreError::Conflict {
                stream_id: self.stream_id,
                expected: self.expected_version,
            },
            Some("unique_claims_pkey") => {
                // A command claims at most a value or two: name the one the database did.
                let detail = match &err {
                    sqlx::Error::Database(db) => db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .and_then(|pg| pg.detail())
                        .unwrap_or("")
                        .to_owned(),
                    _ => String::new(),
                };
                let claim = self
                    .claims
                    .iter()
                    .find(|c| detail.contains(&format!("({}, {})", c.scope.as_str(), c.value)))
                    .or(self.claims.first())
                    .expect("only a write with claims violates unique_claims");
                StoreError::Taken {
                    scope: claim.scope,
                    value: claim.value.clone(),
                }
            }
            Some("idempotency_keys_pkey") => StoreError::KeyRecorded {
                key: self.record.map_or_else(String::new, |r| r.key.to_owned()),
            },
            _ => err.into(),
        }
    }
}
