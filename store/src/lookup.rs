//! Lookups by a list of keys whose cached plans stay index lookups as a table grows.

/// The start of a `from` clause that looks rows up one key of the `uuid[]` parameter
/// `$param` at a time: follow it with a subquery on `k.id` that ends in `offset 0`, and its
/// alias, as [`by_keys`] does for a plain lookup; use this one for other shapes (a key
/// list in another parameter, a union of lookups).
///
/// PostgreSQL makes a prepared statement's generic plan at its sixth execution, from the
/// table as it is then, and keeps it until the table's plans are invalidated (by an
/// `ANALYZE`; autovacuum looks once a minute by default). `where id = any($1)` planned on
/// a young table of wide rows (`order_view`) is a sequential scan, and stayed one as the
/// table grew: in a 20 s freshness bench from an empty database, 0.3 ms a statement for a
/// few rows, two such statements a batch. Where its generic plan is an index scan, its
/// custom plans (which know how many keys there are) cost less, so PostgreSQL planned it
/// for every execution instead (`pg_stat_statements`: as many plans as calls, 0.08 ms
/// each). Here:
/// - the subquery (`offset 0` keeps PostgreSQL from merging it into a join) runs once per
///   key; on a table not yet analyzed (the planner assumes 10 pages) an index lookup costs
///   less than a scan, and each later `ANALYZE` plans it again from the table's size;
/// - the keys come from a sub-select, which hides their number from the planner: it then
///   costs every execution as it costs the generic plan, and keeps that plan instead of
///   planning each execution again (0.17 ms, more than the lookups).
pub fn each_key(param: u8) -> String {
    format!("unnest((select ${param}::uuid[])) as k(id) cross join lateral")
}

/// A whole lookup by the keys of `$1`: `select` (e.g. `select id, name from t where id =
/// k.id`, matching rows of one key `k.id`) run once per key as in [`each_key`], its rows
/// as `v`.
pub fn by_keys(select: &str) -> String {
    format!("select v.* from {} ({select} offset 0) v", each_key(1))
}
