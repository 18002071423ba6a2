-- Where each relay has published up to: the gap-safe (tx_id, position) cursor, stored after
-- the broker acknowledged everything before it.
create table relay_cursors (
    name       text        primary key,
    tx_id      bigint      not null,
    position   bigint      not null,
    updated_at timestamptz not null default now()
);
