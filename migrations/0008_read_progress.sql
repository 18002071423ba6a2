-- How far each view has applied, for read-your-writes (`X-Min-Position`).
--
-- The relay records, with its cursor and in the same statement, the next offset past the
-- last record the broker acknowledged in each (stream type, partition). Each projector
-- records, in the transaction that applies a batch, the next offset past the last record it
-- consumed from each (stream type, partition), dead letters and duplicates included. Once
-- the relay's cursor is at or past an event, the relay's offsets then cover it (whatever
-- order retries put records in); a view has applied it once its offsets reach those.
--
-- On a deployment upgraded to this, the relay fills `relay_partitions` as it publishes:
-- a partition published to only before the upgrade has no row until it is published to
-- again, and a view's lag there is not seen meanwhile. (The broker's high watermarks would
-- seed it, but tansu, the broker the tests run on, under-reports them.)

create table relay_partitions (
    relay       text        not null,
    stream_type text        not null,
    partition   int         not null,
    next_offset bigint      not null,
    updated_at  timestamptz not null default now(),
    primary key (relay, stream_type, partition)
);

create table projection_progress (
    projection  text        not null,
    stream_type text        not null,
    partition   int         not null,
    next_offset bigint      not null,
    -- The position of the last event applied from the partition, and when.
    position    bigint,
    applied_at  timestamptz not null default now(),
    primary key (projection, stream_type, partition)
);
