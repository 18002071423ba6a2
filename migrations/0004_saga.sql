-- The fulfilment saga's schedule and queryable state. The saga stream (stream type `saga`)
-- is the truth; a row mirrors it (state, step, reason, attempts, deadline as columns) and
-- says when an orchestrator should next look at it. A row is created from `OrderPlaced`
-- before its stream exists, so a crash never leaves a saga nobody will run.
create table sagas (
    saga_id          uuid        primary key,
    order_id         uuid        not null unique,
    -- The OrderPlaced event that started it: the causation of its first commands.
    placed_event_id  uuid,
    -- The order's correlation id, carried by every command the saga issues.
    correlation_id   uuid,
    state            text        not null default 'RUNNING'
        check (state in ('RUNNING', 'COMPENSATING', 'CONFIRMED', 'CANCELLED', 'STUCK')),
    step             text        not null default 'reserve'
        check (step in ('reserve', 'authorize', 'complete', 'compensate')),
    reason           text,
    detail           text,
    attempts         integer     not null default 0,
    deadline         timestamptz,
    retry_at         timestamptz,
    -- Due for an orchestrator at this time; null when there is nothing it can do (finished
    -- or stuck). Claims push it forward by a lease, so a crashed claimer's sagas come back.
    wake_at          timestamptz,
    -- Bumped by whoever asks for a look while an orchestrator may hold the saga (a user's
    -- cancellation, an operator's retry), so finishing that orchestrator cannot lose the ask.
    nudges           integer     not null default 0,
    claimed_by       text,
    -- Version of the saga stream this row mirrors; older writes never overwrite newer.
    version          integer     not null default 0,
    steps            jsonb       not null default '[]',
    started_at       timestamptz,
    finished_at      timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);

create index sagas_due_idx on sagas (wake_at) where wake_at is not null;
create index sagas_state_idx on sagas (state, created_at, saga_id);

-- The simulated payment provider's memory: one row per idempotency key, so a repeated call
-- answers as the first did, as real providers do. Kept in the database so it outlives an
-- orchestrator restart and tests can count what was authorized, captured and voided.
create table simulated_payments (
    key              text        primary key,
    operation        text        not null check (operation in ('authorize', 'capture', 'void')),
    order_id         uuid        not null,
    amount_minor     bigint,
    currency         text,
    -- authorized / declined / captured / voided / nothing (a void with nothing to void)
    outcome          text        not null,
    authorization_id text,
    detail           text,
    created_at       timestamptz not null default now()
);

create index simulated_payments_order_idx on simulated_payments (order_id);
