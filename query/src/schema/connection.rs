//! Cursor pagination shared by every list: `first` checked against the cap, opaque cursors
//! that name the list they come from, and `PageInfo`.
//!
//! Lists page forward (`first`/`after`). Orders are newest first, keyed by
//! `(createdAt, id)`; sagas are oldest first, keyed the same way; users and products are in
//! id order, which for UUIDv7 ids is the order they were created in.

use async_graphql::SimpleObject;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{DEFAULT_PAGE_SIZE, PAGE_SIZE_CEILING};
use crate::db::{OrderCursor, SagaCursor};
use crate::error::QueryError;

/// Where the list stands: Relay's `PageInfo`.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub(crate) struct PageInfo {
    /// More items follow the last one of this page.
    pub(crate) has_next_page: bool,
    /// This page starts after a cursor, so items precede it.
    pub(crate) has_previous_page: bool,
    /// Cursor of the first item; null on an empty page.
    pub(crate) start_cursor: Option<String>,
    /// Cursor of the last item, to pass as `after` for the next page; null on an empty page.
    pub(crate) end_cursor: Option<String>,
}

impl PageInfo {
    pub(crate) fn new(cursors: &[String], has_next_page: bool, after: bool) -> Self {
        Self {
            has_next_page,
            has_previous_page: after,
            start_cursor: cursors.first().cloned(),
            end_cursor: cursors.last().cloned(),
        }
    }
}

/// One page of a list: its nodes with their cursors, and where it sits in the list.
#[derive(Debug, Clone)]
pub(crate) struct Page<N> {
    nodes: Vec<N>,
    cursors: Vec<String>,
    has_next_page: bool,
    after: bool,
}

impl<N: Clone> Page<N> {
    /// `rows` as fetched with one extra row, which only says that a next page exists.
    pub(crate) fn new<R>(
        mut rows: Vec<R>,
        size: i64,
        after: bool,
        cursor: impl Fn(&R) -> String,
        node: impl Fn(R) -> N,
    ) -> Self {
        let has_next_page = rows.len() as i64 > size;
        rows.truncate(size as usize);
        Self {
            cursors: rows.iter().map(cursor).collect(),
            nodes: rows.into_iter().map(node).collect(),
            has_next_page,
            after,
        }
    }

    pub(crate) fn nodes(&self) -> Vec<N> {
        self.nodes.clone()
    }

    /// Each node with its cursor, as the list's edge type.
    pub(crate) fn edges<E>(&self, edge: impl Fn(String, N) -> E) -> Vec<E> {
        self.cursors
            .iter()
            .cloned()
            .zip(self.nodes.iter().cloned())
            .map(|(cursor, node)| edge(cursor, node))
            .collect()
    }

    pub(crate) fn page_info(&self) -> PageInfo {
        PageInfo::new(&self.cursors, self.has_next_page, self.after)
    }
}

/// The page size `first` asks for: the default when absent, refused when negative or above
/// `max` (refused rather than clamped, so a client never takes a short page for the end).
pub(crate) fn page_size(first: Option<i32>, max: u32) -> Result<i64, QueryError> {
    let Some(first) = first else {
        return Ok(i64::from(DEFAULT_PAGE_SIZE.min(max)));
    };
    if first < 0 {
        return Err(QueryError::bad_input(format!(
            "`first` must not be negative, got {first}"
        )));
    }
    if i64::from(first) > i64::from(max) {
        return Err(QueryError::bad_input(format!(
            "`first` must be at most {max}, got {first}"
        )));
    }
    Ok(i64::from(first))
}

/// The complexity of a list field: what one item costs times the items it may return.
/// Capped at the largest page size the service can be configured with, so an oversized
/// `first` is reported as such (BAD_USER_INPUT) rather than as a complex query.
/// A list costs at least [`LIST_BASE_COST`] whatever `first` says: each runs SQL of its own,
/// so a query aliasing `orders(first: 0)` thousands of times is refused, not run.
pub(crate) fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first.map_or(DEFAULT_PAGE_SIZE as usize, |first| {
        first.clamp(1, PAGE_SIZE_CEILING as i32) as usize
    });
    child_complexity
        .saturating_mul(items)
        .saturating_add(LIST_BASE_COST)
}

/// The complexity of a list before its items: its page and count statements.
pub(crate) const LIST_BASE_COST: usize = 25;

fn encode(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

fn decode<'a>(list: &str, cursor: &'a str, buffer: &'a mut String) -> Result<&'a str, QueryError> {
    let invalid = || QueryError::bad_input(format!("`after` is not a cursor of the {list} list"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    *buffer = String::from_utf8(bytes).map_err(|_| invalid())?;
    buffer
        .strip_prefix(list)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)
}

/// The cursor of an order in the orders list.
pub(crate) fn order_cursor(cursor: OrderCursor) -> String {
    time_id_cursor("orders", cursor.created_at, cursor.order_id)
}

pub(crate) fn parse_order_cursor(cursor: &str) -> Result<OrderCursor, QueryError> {
    let (created_at, order_id) = parse_time_id_cursor("orders", cursor)?;
    Ok(OrderCursor {
        created_at,
        order_id,
    })
}

/// The cursor of a saga in the sagas list.
pub(crate) fn saga_cursor(cursor: SagaCursor) -> String {
    time_id_cursor("sagas", cursor.created_at, cursor.saga_id)
}

pub(crate) fn parse_saga_cursor(cursor: &str) -> Result<SagaCursor, QueryError> {
    let (created_at, saga_id) = parse_time_id_cursor("sagas", cursor)?;
    Ok(SagaCursor {
        created_at,
        saga_id,
    })
}

/// The cursor of an item in a list ordered by a timestamp, then by id. Microseconds are
/// PostgreSQL's precision, so the cursor names the row exactly.
fn time_id_cursor(list: &str, at: DateTime<Utc>, id: Uuid) -> String {
    encode(&format!("{list}:{}:{id}", at.timestamp_micros()))
}

fn parse_time_id_cursor(list: &str, cursor: &str) -> Result<(DateTime<Utc>, Uuid), QueryError> {
    let mut buffer = String::new();
    let body = decode(list, cursor, &mut buffer)?;
    let invalid = || QueryError::bad_input(format!("`after` is not a cursor of the {list} list"));
    let (micros, id) = body.split_once(':').ok_or_else(invalid)?;
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let id = id.parse().map_err(|_| invalid())?;
    Ok((at, id))
}

/// The cursor of an item in a list ordered by id (`users`, `products`).
pub(crate) fn id_cursor(list: &str, id: Uuid) -> String {
    encode(&format!("{list}:{id}"))
}

pub(crate) fn parse_id_cursor(list: &str, cursor: &str) -> Result<Uuid, QueryError> {
    let mut buffer = String::new();
    let body = decode(list, cursor, &mut buffer)?;
    body.parse()
        .map_err(|_| QueryError::bad_input(format!("`after` is not a cursor of the {list} list")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_cursors_round_trip_to_the_microsecond() {
        let cursor = OrderCursor {
            created_at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
            order_id: Uuid::now_v7(),
        };
        assert_eq!(parse_order_cursor(&order_cursor(cursor)).unwrap(), cursor);
        let cursor = SagaCursor {
            created_at: cursor.created_at,
            saga_id: cursor.order_id,
        };
        assert_eq!(parse_saga_cursor(&saga_cursor(cursor)).unwrap(), cursor);
        assert!(parse_order_cursor(&saga_cursor(cursor)).is_err());
        assert!(parse_saga_cursor(&order_cursor(OrderCursor {
            created_at: cursor.created_at,
            order_id: cursor.saga_id,
        }))
        .is_err());
    }

    #[test]
    fn a_cursor_of_another_list_is_refused() {
        let id = Uuid::now_v7();
        let users = id_cursor("users", id);
        assert_eq!(parse_id_cursor("users", &users).unwrap(), id);
        assert!(parse_id_cursor("products", &users).is_err());
        assert!(parse_order_cursor(&users).is_err());
        assert!(parse_id_cursor("users", "not base64!").is_err());
    }

    #[test]
    fn first_defaults_and_is_refused_out_of_range() {
        assert_eq!(page_size(None, 100).unwrap(), i64::from(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(None, 5).unwrap(), 5);
        assert_eq!(page_size(Some(0), 100).unwrap(), 0);
        assert_eq!(page_size(Some(100), 100).unwrap(), 100);
        assert!(page_size(Some(101), 100).is_err());
        assert!(page_size(Some(-1), 100).is_err());
    }

    #[test]
    fn list_cost_grows_with_first_up_to_the_ceiling() {
        assert_eq!(page_cost(Some(10), 3), 30 + LIST_BASE_COST);
        assert_eq!(
            page_cost(None, 1),
            DEFAULT_PAGE_SIZE as usize + LIST_BASE_COST
        );
        assert_eq!(
            page_cost(Some(i32::MAX), 1),
            PAGE_SIZE_CEILING as usize + LIST_BASE_COST
        );
        assert_eq!(page_cost(Some(0), 7), 7 + LIST_BASE_COST);
        assert_eq!(page_cost(Some(-5), 7), 7 + LIST_BASE_COST);
    }
}
