-- The write path's floor: one durable transaction appending one event, as a command does,
-- without any of the command's work (no read, no decision, no idempotency record). pgbench
-- runs it at 32 clients (`orderflow bench ceiling`, and first in `orderflow bench all`) for
-- the figure the write path is read against.
insert into events (stream_id, stream_type, version, event_type, payload, metadata)
values (gen_random_uuid(), 'order', 1, 'OrderCreated',
        '{"userId": "01a22a00-0f72-74f6-8db4-eef257b78323", "currency": "EUR"}',
        '{"eventId": "01a22a00-0f72-74f6-8db4-eef257b78324", "correlationId": "01a22a00-0f72-74f6-8db4-eef257b78325", "commandId": "pgbench", "actor": "bench", "actorRoles": ["admin"]}');
