-- How far each view has applied, in the event log's own terms, for read-your-writes
-- (`X-Min-Position`) and staleness.
--
-- The relay records, with its cursor and in the same transaction, the cursor of the last
-- event it published to each (stream type, partition). Each projector records, in the
-- transaction that applies a batch, the cursor of the last event it applied from each
-- (stream type, partition). Records of a partition are in cursor order, so a view has
-- applied every event up to cursor C once the relay's cursor is at or past C and, in every
-- partition the relay published to, the view's cursor is at or past C or at or past the
-- relay's last one there.

create table relay_partitions (
    relay       text        not null,
    stream_type text        not null,
    partition   int         not null,
    tx_id       bigint      not null,
    position    bigint      not null,
    updated_at  timestamptz not null default now(),
    primary key (relay, stream_type, partition)
);

create table projection_progress (
    projection  text        not null,
    stream_type text        not null,
    partition   int         not null,
    tx_id       bigint      not null,
    position    bigint      not null,
    -- When the last applied event was committed to the store, and when it was applied.
    recorded_at timestamptz not null,
    applied_at  timestamptz not null default now(),
    primary key (projection, stream_type, partition)
);
