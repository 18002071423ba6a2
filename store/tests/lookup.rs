//! Lookups by a list of keys ([`by_keys`]) against a real PostgreSQL: on a young table (as
//! every table is right after the migrations), the plan PostgreSQL caches is an index
//! lookup, and it is kept instead of being made again for each execution.

use orderflow_store::lookup::by_keys;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

fn lookup_sql() -> String {
    by_keys("select user_id, name, email, version from user_view where user_id = k.id")
}

/// How many generic and custom plans this connection has made for its prepared statements
/// whose text contains `fragment`.
async fn plans(conn: &mut PgConnection, fragment: &str) -> (i64, i64) {
    sqlx::query_as(
        "select coalesce(sum(generic_plans), 0)::int8, coalesce(sum(custom_plans), 0)::int8 \
         from pg_prepared_statements where statement like '%' || $1 || '%'",
    )
    .bind(fragment)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_lookup_by_keys_is_planned_once_as_index_lookups(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let registered = Uuid::now_v7();
    sqlx::query(
        "insert into user_view (user_id, name, email, registered_at, version) \
         values ($1, 'Ada', 'ada@example.com', now(), 1)",
    )
    .bind(registered)
    .execute(&mut *conn)
    .await
    .unwrap();

    // Executions with 1 to 20 keys, one of them a row that exists.
    for n in 1..=20usize {
        let mut keys: Vec<Uuid> = (1..n).map(|_| Uuid::now_v7()).collect();
        keys.push(registered);
        let found: Vec<(Uuid, String)> = sqlx::query_as(&lookup_sql())
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, name, _email, _version): (Uuid, String, String, i32)| (id, name))
            .collect();
        assert_eq!(found, vec![(registered, "Ada".to_owned())], "{n} keys");
    }

    // PostgreSQL plans the first five executions for their values, then compares the
    // generic plan's cost with theirs, to which it adds a charge for planning. Keys it
    // cannot count make the plans' own costs equal, so the generic plan wins: from then on
    // it runs that plan, made once.
    let (generic, custom) = plans(&mut conn, "user_id = k.id").await;
    assert_eq!(custom, 5, "custom plans");
    assert_eq!(generic, 15, "executions of the generic plan");

    // That generic plan, made on a table the planner has no statistics for, looks each key
    // up in the primary key's index.
    sqlx::raw_sql(&format!(
        "set plan_cache_mode = force_generic_plan; prepare lookup(uuid[]) as {}",
        lookup_sql()
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("explain execute lookup('{}')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using user_view_pkey"), "{plan}");
    assert!(!plan.contains("Seq Scan on user_view"), "{plan}");
}
