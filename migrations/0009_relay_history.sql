-- The relay's offsets over time, for read-your-writes (`X-Min-Position`).
--
-- `relay_partitions` holds the offsets the relay has published to now. A read at position
-- P needs only those that covered P when the relay passed it: measured against today's,
-- views that lag behind the relay would keep a read of an event they applied long ago
-- waiting. So with its cursor, at most every 100 ms, the relay records a snapshot of its
-- offsets in every (stream type, partition); a read takes the first snapshot at or after P
-- (or, before there is one, today's offsets, which cover more). The relay keeps its last
-- 6,000 snapshots (10 minutes at the busiest).

create table relay_history (
    relay        text     not null,
    tx_id        bigint   not null,
    position     bigint   not null,
    stream_types text[]   not null,
    partitions   int[]    not null,
    next_offsets bigint[] not null,
    primary key (relay, tx_id, position)
);
