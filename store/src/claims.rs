//! Values unique across streams, claimed inside the appending transaction so that two
//! concurrent registrations of one email end as one success and one [`StoreError::Taken`].

use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// Claim `value` in `scope` for `stream_id`; claiming a value the stream already holds is a no-op.
pub async fn claim(
    conn: &mut PgConnection,
    scope: &str,
    value: &str,
    stream_id: Uuid,
) -> Result<(), StoreError> {
    // `on conflict do nothing` waits for a concurrent claimant to finish, so the owner read
    // below sees whoever won.
    let inserted = sqlx::query(
        "insert into unique_claims (scope, value, stream_id) values ($1, $2, $3) \
         on conflict (scope, value) do nothing",
    )
    .bind(scope)
    .bind(value)
    .bind(stream_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(());
    }
    let owner: Option<Uuid> =
        sqlx::query_scalar("select stream_id from unique_claims where scope = $1 and value = $2")
            .bind(scope)
            .bind(value)
            .fetch_optional(&mut *conn)
            .await?;
    match owner {
        Some(owner) if owner == stream_id => Ok(()),
        _ => Err(StoreError::Taken {
            scope: scope.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// Give up a stream's claim on `value` (an email change frees the old address).
pub async fn release(
    conn: &mut PgConnection,
    scope: &str,
    value: &str,
    stream_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("delete from unique_claims where scope = $1 and value = $2 and stream_id = $3")
        .bind(scope)
        .bind(value)
        .bind(stream_id)
        .execute(conn)
        .await?;
    Ok(())
}
