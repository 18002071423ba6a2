//! The gap-safe global reader against a real PostgreSQL.

use orderflow_store::{append, read_after, Cursor, EventMetadata, NewEvent, StoreError};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_type: "Tested".into(),
        schema_version: 1,
        payload: json!({ "n": n }),
    }
}

fn metadata() -> EventMetadata {
    EventMetadata {
        event_id: Uuid::nil(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        command_id: "test".into(),
        actor: None,
        actor_roles: Vec::new(),
    }
}

async fn read_all(pool: &PgPool, cursor: Cursor) -> Vec<i64> {
    read_after(pool, cursor, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload["n"].as_i64().unwrap())
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_transaction_that_commits_late_is_still_read(pool: PgPool) {
    let early = Uuid::now_v7();
    let late = Uuid::now_v7();
    let mut slow = pool.begin().await.unwrap();
    // The slow transaction takes its position first ...
    let slow_write = append(&mut slow, early, "test", 0, &[event(1)], &metadata())
        .await
        .unwrap();
    // ... a fast one takes a later position and commits first.
    let mut fast = pool.begin().await.unwrap();
    let fast_write = append(&mut fast, late, "test", 0, &[event(2)], &metadata())
        .await
        .unwrap();
    fast.commit().await.unwrap();
    assert!(fast_write.first_position > slow_write.first_position);

    // A reader following positions would now see 2 and move its cursor past 1.
    assert_eq!(read_all(&pool, Cursor::default()).await, Vec::<i64>::new());

    slow.commit().await.unwrap();
    // The horizon is cluster-wide: a transaction of another test may hold it back a while.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let events = loop {
        let events = read_after(&pool, Cursor::default(), 1000).await.unwrap();
        if events.len() == 2 || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let order: Vec<i64> = events
        .iter()
        .map(|e| e.payload["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, [1, 2]);
    // Reading on from the cursor of the first event returns the rest, and only that.
    assert_eq!(read_all(&pool, Cursor::after(&events[0])).await, [2]);
    assert_eq!(
        read_all(&pool, Cursor::after(&events[1])).await,
        Vec::<i64>::new()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_reader_pages_in_commit_order(pool: PgPool) {
    let stream = Uuid::now_v7();
    for n in 0..10 {
        let mut tx = pool.begin().await.unwrap();
        append(&mut tx, stream, "test", n as i32, &[event(n)], &metadata())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let mut cursor = Cursor::default();
    let mut seen = Vec::new();
    // The horizon is cluster-wide: a transaction another test holds open delays the reader,
    // so an empty page is only the end once nothing more can come.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = read_after(&pool, cursor, 3).await.unwrap();
        let Some(last) = page.last() else {
            if seen.len() >= 10 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        cursor = Cursor::after(last);
        seen.extend(page.iter().map(|e| e.version));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

#[sqlx::test(migrations = "../migrations")]
async fn appending_at_a_taken_version_is_a_conflict(pool: PgPool) {
    let stream = Uuid::now_v7();
    let mut tx = pool.begin().await.unwrap();
    append(
        &mut tx,
        stream,
        "test",
        0,
        &[event(1), event(2)],
        &metadata(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let err = append(&mut tx, stream, "test", 1, &[event(3)], &metadata())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { expected: 1, .. }),
        "{err:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn events_cannot_be_updated_or_deleted(pool: PgPool) {
    let mut tx = pool.begin().await.unwrap();
    append(&mut tx, Uuid::now_v7(), "test", 0, &[event(1)], &metadata())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let update = sqlx::query("update events set payload = '{}'")
        .execute(&pool)
        .await;
    assert!(update.is_err());
    let delete = sqlx::query("delete from events").execute(&pool).await;
    assert!(delete.is_err());
}

#[sqlx::test(migrations = "../migrations")]
async fn idempotent_responses_expire_after_the_retention(pool: PgPool) {
    use orderflow_store::idempotency::{expire, find, record, StoredResponse};
    let stored = StoredResponse {
        fingerprint: "f".into(),
        status: 201,
        response: json!({}),
    };
    let mut tx = pool.begin().await.unwrap();
    assert!(record(&mut tx, "old", &stored).await.unwrap());
    assert!(record(&mut tx, "new", &stored).await.unwrap());
    tx.commit().await.unwrap();
    sqlx::query(
        "update idempotency_keys set created_at = now() - interval '2 days' where key = 'old'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let day = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(expire(&pool, day).await.unwrap(), 1);
    assert!(find(&pool, "old").await.unwrap().is_none());
    assert!(find(&pool, "new").await.unwrap().is_some());
}
