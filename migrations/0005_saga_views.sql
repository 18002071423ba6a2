-- What the query service reads about sagas and payments: lookups for an order's timeline
-- and the saga list, and payment_view, the projector's view of payment streams.

-- An order's timeline includes the reservation events (StockReserved, ReservationReleased,
-- ReservationCommitted) of every product stream that names the order in its payload.
-- Compared as text: a cast to uuid in an index would make a malformed payload fail its
-- append.
create index events_product_order_idx on events ((payload ->> 'orderId'))
    where stream_type = 'product';

-- `sagas` without a state filter, oldest first (sagas_state_idx serves the filtered list).
create index sagas_created_idx on sagas (created_at, saga_id);

-- payment_view: an order's payment, one row per payment stream (the stream id is
-- orderflow_domain::saga::payment_id(order_id), so an order has at most one). Owned by the
-- projector like the views of 0002 (helper and checkpoint tables alike; a replay copies
-- them into `_shadow` tables and renames them in).
create table payment_view (
    order_id         uuid        not null,
    payment_id       uuid        not null,
    status           text        not null,
    -- Authorized or declined, and later captured: the same amount.
    amount_minor     bigint      not null,
    currency         text        not null,
    -- The provider's reference; null for a declined payment.
    authorization_id text,
    decline_reason   text,
    void_reason      text,
    authorized_at    timestamptz,
    declined_at      timestamptz,
    captured_at      timestamptz,
    voided_at        timestamptz,
    -- The payment stream's version applied.
    version          integer     not null,
    -- recorded_at of the last payment event applied.
    updated_at       timestamptz not null,
    constraint payment_view_pkey primary key (order_id),
    constraint payment_view_status_check
        check (status in ('authorized', 'declined', 'captured', 'voided'))
);

-- The order each payment stream pays for, from its first event: captures and voids do not
-- name the order.
create table payment_view_payments (
    payment_id uuid not null,
    order_id   uuid not null,
    constraint payment_view_payments_pkey primary key (payment_id)
);

create table payment_view_checkpoints (
    stream_id uuid    not null,
    version   integer not null,
    constraint payment_view_checkpoints_pkey primary key (stream_id)
);
