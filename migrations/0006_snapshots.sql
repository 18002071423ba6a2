-- The latest snapshot of long streams (products grow with every reservation): loading
-- reads it and only the events after it. A snapshot is a cache of a fold of the events,
-- never a source of truth: one of another format, or one that cannot be read, is ignored
-- and replaced.
create table snapshots (
    stream_id   uuid        primary key,
    stream_type text        not null,
    -- The aggregate's snapshot format (`Snapshot::SNAPSHOT_FORMAT`).
    format      smallint    not null,
    version     integer     not null check (version > 0),
    -- Global position of the event at `version`.
    position    bigint      not null,
    state       jsonb       not null,
    taken_at    timestamptz not null default now()
);
