-- Read models: denormalized views for the query service, built by the projector.
--
-- Each projection owns three tables and reads no other projection's, so each is rebuilt on
-- its own (a replay fills `<table>_shadow` copies made with `like ... including all` and
-- renames them in, restoring these index names):
--   the view           what queries read;
--   a helper table     facts from other streams the view needs, private to the projection,
--                      so events converge whatever order they arrive in across streams;
--   <view>_checkpoints the last version applied per stream: a version at or below it is a
--                      duplicate, a version past the next one is a gap filled from the store.
-- Timestamps are the `recorded_at` of the event that set them, never the projector's clock,
-- so a replay reproduces the live tables exactly. Amounts are minor units.

-- order_view: an order with its items and totals and its owner's current name and email.
create table order_view (
    order_id      uuid        not null,
    user_id       uuid        not null,
    -- Null until the owner's UserRegistered is projected; follows renames and email changes.
    user_name     text,
    user_email    text,
    status        text        not null,
    currency      text        not null,
    -- [{productId, productName, unitPrice {amountMinor, currency}, quantity,
    --   lineTotal {amountMinor, currency}}], in the order products were first added.
    items         jsonb       not null default '[]',
    -- Sum of the items' quantities.
    item_count    integer     not null default 0,
    total_minor   bigint      not null default 0,
    created_at    timestamptz not null,
    placed_at     timestamptz,
    confirmed_at  timestamptz,
    cancelled_at  timestamptz,
    cancel_reason text,
    -- The order stream's version applied: what `minVersion` reads wait for.
    version       integer     not null,
    -- recorded_at of the last order event applied.
    updated_at    timestamptz not null,
    constraint order_view_pkey primary key (order_id),
    constraint order_view_status_check
        check (status in ('draft', 'placed', 'confirmed', 'cancelled'))
);

create index order_view_user_idx on order_view (user_id, created_at desc, order_id desc);
create index order_view_status_idx on order_view (status, created_at desc, order_id desc);
create index order_view_created_idx on order_view (created_at desc, order_id desc);

-- The users order_view has seen, fed by user events.
create table order_view_users (
    user_id uuid not null,
    name    text not null,
    email   text not null,
    constraint order_view_users_pkey primary key (user_id)
);

create table order_view_checkpoints (
    stream_id uuid    not null,
    version   integer not null,
    constraint order_view_checkpoints_pkey primary key (stream_id)
);

-- user_view: a user with order statistics. A row appears with the first event about the
-- user, so an order projected before its user's registration still counts; until then
-- name, email and registered_at are null (lists of users filter on registered_at).
create table user_view (
    user_id       uuid        not null,
    name          text,
    email         text,
    registered_at timestamptz,
    -- Orders created by the user, whatever their status.
    order_count   bigint      not null default 0,
    -- Spent on confirmed orders, per currency: {"EUR": 1234, "USD": 500}; one key per
    -- currency ever confirmed, so amounts in different currencies are never added up.
    spent         jsonb       not null default '{}',
    -- created_at of the user's latest order.
    last_order_at timestamptz,
    -- The user stream's version applied; 0 while only orders mention the user.
    version       integer     not null default 0,
    constraint user_view_pkey primary key (user_id)
);

create index user_view_email_idx on user_view (email);

-- Orders created and not yet confirmed or cancelled: whom to credit, and how much once
-- placed.
create table user_view_orders (
    order_id    uuid   not null,
    user_id     uuid   not null,
    currency    text   not null,
    total_minor bigint,
    constraint user_view_orders_pkey primary key (order_id)
);

create table user_view_checkpoints (
    stream_id uuid    not null,
    version   integer not null,
    constraint user_view_checkpoints_pkey primary key (stream_id)
);

-- product_view: a product with its stock and sales. Stock columns follow the product
-- stream (on_hand is available to reserve); revenue_minor sums confirmed orders' line
-- totals for the product, in its currency. A confirmed order projected before the
-- product's creation makes the row appear with null sku, name and price until then.
create table product_view (
    product_id    uuid    not null,
    sku           text,
    name          text,
    price_minor   bigint,
    currency      text,
    on_hand       bigint  not null default 0,
    reserved      bigint  not null default 0,
    units_sold    bigint  not null default 0,
    revenue_minor bigint  not null default 0,
    -- The product stream's version applied; 0 while only orders mention the product.
    version       integer not null default 0,
    constraint product_view_pkey primary key (product_id)
);

create index product_view_sku_idx on product_view (sku);

-- Placed orders not yet confirmed or cancelled, with their lines:
-- [{productId, quantity, totalMinor}].
create table product_view_order_lines (
    order_id uuid  not null,
    lines    jsonb not null,
    constraint product_view_order_lines_pkey primary key (order_id)
);

create table product_view_checkpoints (
    stream_id uuid    not null,
    version   integer not null,
    constraint product_view_checkpoints_pkey primary key (stream_id)
);
