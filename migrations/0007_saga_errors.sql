-- Failures to advance a saga at all (the database, an unreadable stream), counted until an
-- advance succeeds, with the last one: the saga's own state cannot record them. A claim's
-- holder is `claimed_by` = `<instance>/<token>`, renewed while it works.
alter table sagas
    add column errors     integer not null default 0,
    add column last_error text;
