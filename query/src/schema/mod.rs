//! The GraphQL schema: the query and subscription roots, the views they return, and what
//! resolvers share ([`Services`]).
//!
//! # Layout
//! - [`query`]: `order`, `orders`, `user`, `users`, `product`, `products`, `sagas`.
//! - [`subscription`]: the `orderUpdated` subscription.
//! - [`order`], [`user`], [`product`]: the views and their composition through the loader.
//! - [`saga`], [`payment`]: an order's fulfilment saga and its payment.
//! - [`connection`]: page sizes, cursors and `PageInfo`.
//! - [`money`]: the `Money` object and the `Long` scalar.

pub(crate) mod connection;
pub(crate) mod money;
pub(crate) mod order;
pub(crate) mod payment;
pub(crate) mod product;
pub(crate) mod query;
pub(crate) mod saga;
pub(crate) mod subscription;
pub(crate) mod user;

use std::sync::OnceLock;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, EmptyMutation, Schema, SchemaBuilder, ID};
use orderflow_store::auth::{AuthError, Caller, Scope};
use uuid::Uuid;

use crate::config::QueryOptions;
use crate::db::Db;
use crate::error::QueryError;
use crate::freshness::Freshness;
use crate::limits::Limits;

pub(crate) use query::QueryRoot;
pub(crate) use subscription::SubscriptionRoot;

/// The service's schema.
pub(crate) type AppSchema = Schema<QueryRoot, EmptyMutation, SubscriptionRoot>;

/// What every resolver reaches through the context.
pub(crate) struct Services {
    pub(crate) db: Db,
    pub(crate) loader: DataLoader<Db>,
    pub(crate) freshness: Freshness,
    /// The views' progress, for `X-Min-Position`.
    pub(crate) progress: crate::progress::Progress,
    /// The last 15 minutes of lag and relay backlog, when a lag monitor runs.
    pub(crate) ops_history: crate::ops::OpsHistory,
    pub(crate) options: QueryOptions,
}

/// The schema's types without data or limits: enough to print the SDL.
pub(crate) fn builder() -> SchemaBuilder<QueryRoot, EmptyMutation, SubscriptionRoot> {
    Schema::build(QueryRoot, EmptyMutation, SubscriptionRoot)
}

/// The schema that serves requests.
pub(crate) fn build(services: Services) -> AppSchema {
    let options = services.options.clone();
    builder()
        .data(services)
        .limit_complexity(options.max_complexity)
        .extension(Limits::new(&options))
        .finish()
}

/// The schema as SDL, as committed in `query/schema.graphql`.
pub fn sdl() -> String {
    static SDL: OnceLock<String> = OnceLock::new();
    SDL.get_or_init(|| builder().finish().sdl()).clone()
}

pub(crate) fn services<'a>(ctx: &Context<'a>) -> &'a Services {
    ctx.data_unchecked::<Services>()
}

/// Who asks: the HTTP handler or the WebSocket's `connection_init` put them in the
/// request's data. A request without one (it did not come through either) is refused, and
/// so is a token that expired since a connection began.
pub(crate) fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Caller, QueryError> {
    let caller = ctx
        .data_opt::<Caller>()
        .ok_or(QueryError::Unauthenticated(AuthError::Missing))?;
    match caller {
        Caller::Anonymous => Err(QueryError::Unauthenticated(AuthError::Missing)),
        caller if caller.expired() => Err(QueryError::Unauthenticated(AuthError::Expired)),
        caller => Ok(caller),
    }
}

/// What the caller may read of users' things: all (admins), or their own (customers).
pub(crate) fn scope(ctx: &Context<'_>) -> Result<Scope, QueryError> {
    caller(ctx)?.scope().ok_or_else(|| {
        QueryError::Forbidden("the token carries neither the customer nor the admin role".into())
    })
}

/// FORBIDDEN unless the caller is an admin.
pub(crate) fn require_admin(ctx: &Context<'_>) -> Result<(), QueryError> {
    match scope(ctx)? {
        Scope::All => Ok(()),
        Scope::User(_) => Err(QueryError::Forbidden(
            "this field needs the admin role".into(),
        )),
    }
}

/// An `ID` argument as the UUID every id is.
pub(crate) fn parse_id(argument: &str, id: &ID) -> Result<Uuid, QueryError> {
    id.parse().map_err(|_| {
        QueryError::bad_input(format!(
            "`{argument}` must be a UUID, got {:?}",
            id.as_str()
        ))
    })
}

/// The enum value stored as `value`; `what` names it in the error, which is internal: the
/// service and the code that writes the column disagree.
pub(crate) fn from_db<T: Copy>(
    all: &[T],
    as_db: fn(T) -> &'static str,
    what: &str,
    value: &str,
) -> Result<T, QueryError> {
    all.iter()
        .copied()
        .find(|known| as_db(*known) == value)
        .ok_or_else(|| QueryError::internal(anyhow::anyhow!("unknown {what} {value:?}")))
}
