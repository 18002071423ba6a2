//! Rebuilding read models from the event store and swapping them in, against a real
//! PostgreSQL, a database per test.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    actual, all_events, apply, assert_all_match_the_store, assert_same, deliver, expected,
    shuffle_across_streams, Rng, Workload,
};
use orderflow_projector::{replay, OrderView, ReplayOptions, PROJECTIONS};
use orderflow_store::{read_after, Cursor};
use sqlx::PgPool;
use tokio::sync::watch;

fn quiet(batch_size: i64) -> ReplayOptions {
    ReplayOptions {
        batch_size,
        progress: false,
    }
}

/// Index and constraint names of every read-model table, and every table's name.
async fn schema(pool: &PgPool) -> BTreeMap<String, Vec<String>> {
    let mut schema = BTreeMap::new();
    for &projection in PROJECTIONS {
        for table in projection.tables().all() {
            let indexes: Vec<String> = sqlx::query_scalar(
                "select c.relname::text from pg_index i join pg_class c on c.oid = i.indexrelid \
                 where i.indrelid = $1::text::regclass \
                 union all select conname::text from pg_constraint \
                 where conrelid = $1::text::regclass order by 1",
            )
            .bind(table)
            .fetch_all(pool)
            .await
            .unwrap();
            schema.insert(table.to_owned(), indexes);
        }
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    schema.insert("(tables)".into(), tables);
    schema
}

#[sqlx::test(migrations = "../migrations")]
async fn replay_gives_the_same_read_models_as_live_delivery(pool: PgPool) {
    let mut workload = Workload::new(7);
    workload.run(&pool, 500).await;
    let events = all_events(&pool).await;
    let mut rng = Rng::new(3);
    let mut live = Vec::new();
    for &projection in PROJECTIONS {
        let delivered = shuffle_across_streams(events.clone(), &mut rng);
        assert_eq!(deliver(&pool, projection, &delivered, &mut rng).await, []);
        live.push(actual(&pool, projection).await);
    }

    for (projection, live) in PROJECTIONS.iter().copied().zip(live) {
        // Small pages, so the replay reads many of them.
        let report = replay(&pool, projection, quiet(97)).await.unwrap();
        assert_eq!(report.events, events.len() as u64, "{projection}");
        assert_eq!(report.rejected, 0);
        let replayed = actual(&pool, projection).await;
        assert_eq!(replayed, live, "{projection}");
        assert_same(projection, &replayed, &expected(projection, &events));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn replaying_twice_keeps_table_index_and_constraint_names_and_live_delivery_goes_on(
    pool: PgPool,
) {
    let migrated = schema(&pool).await;
    let mut workload = Workload::new(11);
    workload.run(&pool, 200).await;
    for round in 0..2 {
        for &projection in PROJECTIONS {
            replay(&pool, projection, quiet(1000)).await.unwrap();
        }
        assert_eq!(schema(&pool).await, migrated, "after replay {round}");
        assert_all_match_the_store(&pool).await;
    }

    // Workers whose statements were prepared against the replaced tables go on.
    let before = all_events(&pool).await.len();
    workload.run(&pool, 100).await;
    let events = all_events(&pool).await;
    for &projection in PROJECTIONS {
        assert_eq!(apply(&pool, projection, &events[before..]).await, []);
    }
    assert_all_match_the_store(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn replay_over_tables_a_live_worker_filled_starts_from_scratch(pool: PgPool) {
    let mut workload = Workload::new(5);
    workload.run(&pool, 200).await;
    let events = all_events(&pool).await;
    // The live worker saw only half of the events, and a stale shadow table lies around.
    for &projection in PROJECTIONS {
        assert_eq!(
            apply(&pool, projection, &events[..events.len() / 2]).await,
            []
        );
    }
    sqlx::query("create table order_view_shadow (junk int)")
        .execute(&pool)
        .await
        .unwrap();
    for &projection in PROJECTIONS {
        replay(&pool, projection, quiet(10_000)).await.unwrap();
    }
    assert_all_match_the_store(&pool).await;
}

/// A live worker: reads the store in commit order as the relay publishes it, and applies
/// pages of random size (sometimes twice) to every projection until told to stop and
/// caught up.
async fn live_worker(pool: PgPool, mut stop: watch::Receiver<bool>, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let mut cursor = Cursor::default();
    let mut applied = 0;
    loop {
        let stopping = *stop.borrow_and_update();
        let limit = 1 + rng.below(80) as i64;
        let page = read_after(&pool, cursor, limit).await.unwrap();
        match page.last() {
            Some(last) => cursor = Cursor::after(last),
            None if stopping => {
                let total: i64 = sqlx::query_scalar("select count(*) from events")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if applied as i64 == total {
                    return applied;
                }
                tokio::task::yield_now().await;
                continue;
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_millis(20), stop.changed()).await;
                continue;
            }
        }
        let repeats = if rng.chance(10) { 2 } else { 1 };
        for _ in 0..repeats {
            for &projection in PROJECTIONS {
                assert_eq!(apply(&pool, projection, &page).await, [], "{projection}");
            }
        }
        applied += page.len();
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn replay_while_writes_and_live_delivery_go_on_ends_equal_to_the_fold(pool: PgPool) {
    let mut workload = Workload::new(99);
    workload.run(&pool, 400).await;
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(live_worker(pool.clone(), stopped, 17));
    let writer_pool = pool.clone();
    let writer = tokio::spawn(async move {
        workload.run(&writer_pool, 400).await;
        workload
    });

    // Replays run while the writer appends and the worker applies; each replay sees a
    // different point of the stream, and some run twice.
    let mut replays = 0;
    while !writer.is_finished() || replays <= PROJECTIONS.len() {
        let projection = PROJECTIONS[replays % PROJECTIONS.len()];
        let report = replay(&pool, projection, quiet(50)).await.unwrap();
        assert_eq!(report.rejected, 0);
        replays += 1;
    }
    let workload = writer.await.unwrap();
    assert!(workload.appended > 300, "{}", workload.appended);
    stop.send(true).unwrap();
    let applied = tokio::time::timeout(Duration::from_secs(120), worker)
        .await
        .expect("the live worker catches up")
        .unwrap();
    assert_eq!(applied, all_events(&pool).await.len());
    assert_all_match_the_store(&pool).await;
}

/// Whether a request for an ACCESS EXCLUSIVE lock on `order_view` waits (the swap's).
async fn swap_waits_for_order_view(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "select exists (select from pg_locks \
         where locktype = 'relation' and relation = 'order_view'::regclass \
           and database = (select oid from pg_database where datname = current_database()) \
           and mode = 'AccessExclusiveLock' and not granted)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_swap_stuck_behind_a_long_read_lets_other_reads_through_and_swaps_in_after_it(
    pool: PgPool,
) {
    let mut workload = Workload::new(23);
    workload.run(&pool, 200).await;
    let events = all_events(&pool).await;
    for &projection in PROJECTIONS {
        assert_eq!(apply(&pool, projection, &events).await, []);
    }

    // A long read holds order_view while the replay comes to swap.
    let mut long_read = pool.begin().await.unwrap();
    sqlx::query("lock table order_view in access share mode")
        .execute(&mut *long_read)
        .await
        .unwrap();
    // Polled on this task (its future is not `Send`), alongside what the test does meanwhile.
    let replaying = replay(&pool, &OrderView, quiet(50));
    tokio::pin!(replaying);
    let meanwhile = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !swap_waits_for_order_view(&pool).await {
            assert!(
                Instant::now() < deadline,
                "the swap never asked for its lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // For several of the swap's lock timeouts, other reads of order_view still answer,
        // and events appended meanwhile are for the swap's catch-up to read.
        let mut reader = pool.acquire().await.unwrap();
        let mut reads_behind_the_swap = 0;
        let until = Instant::now() + Duration::from_secs(7);
        while Instant::now() < until {
            if swap_waits_for_order_view(&pool).await {
                reads_behind_the_swap += 1;
            }
            let read = tokio::time::timeout(
                Duration::from_secs(3),
                sqlx::query_scalar::<_, i64>("select count(*) from order_view")
                    .fetch_one(&mut *reader),
            )
            .await
            .expect("a read of order_view answers while the swap waits");
            assert!(read.unwrap() > 0);
            workload.step(&pool).await;
        }
        assert!(reads_behind_the_swap > 0);
    };
    tokio::select! {
        done = &mut replaying => panic!("the replay swapped in under a long read: {done:?}"),
        () = meanwhile => {}
    }

    long_read.commit().await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), replaying)
        .await
        .expect("the replay swaps in once the long read is over")
        .unwrap();
    let all = all_events(&pool).await;
    assert!(all.len() > events.len());
    assert_eq!(report.events, all.len() as u64);
    assert_eq!(report.rejected, 0);
    // The other projections had no live worker meanwhile.
    for projection in PROJECTIONS
        .iter()
        .copied()
        .filter(|p| p.name() != "order_view")
    {
        assert_eq!(apply(&pool, projection, &all[events.len()..]).await, []);
    }
    assert_all_match_the_store(&pool).await;
}
