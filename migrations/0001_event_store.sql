-- The event store: the append-only source of truth and the outbox the relay publishes from.
create table events (
    position       bigint generated always as identity primary key,
    stream_id      uuid        not null,
    stream_type    text        not null,
    version        integer     not null check (version > 0),
    event_type     text        not null,
    schema_version smallint    not null default 1,
    payload        jsonb       not null,
    metadata       jsonb       not null,
    recorded_at    timestamptz not null default now(),
    -- Positions are allocated before commit; readers order by (tx_id, position) and stay
    -- below the oldest running transaction so a late committer is never skipped.
    tx_id          xid8        not null default pg_current_xact_id(),
    constraint events_stream_version_key unique (stream_id, version)
);

create index events_tx_position_idx on events (tx_id, position);

-- Events are never updated or deleted.
create function events_are_immutable() returns trigger language plpgsql as $$
begin
    raise exception 'events are append-only (% on events)', tg_op;
end $$;

create trigger events_append_only
    before update or delete on events
    for each row execute function events_are_immutable();

-- Values unique across streams (user email, product sku), claimed in the same transaction
-- as the append that needs them.
create table unique_claims (
    scope     text not null,
    value     text not null,
    stream_id uuid not null,
    constraint unique_claims_pkey primary key (scope, value)
);

create index unique_claims_stream_idx on unique_claims (stream_id);

-- Idempotent commands: the first response for an Idempotency-Key, stored in the
-- transaction that appended its events, returned again for every retry.
create table idempotency_keys (
    key          text        primary key,
    fingerprint  text        not null,
    status       smallint    not null,
    response     jsonb       not null,
    created_at   timestamptz not null default now()
);
