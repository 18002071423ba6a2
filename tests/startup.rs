//! Roles started while PostgreSQL cannot serve wait for it and start when it is back; a
//! database that answers with a refusal fails them at once.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{database_url, BIN};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::timeout;

#[sqlx::test(migrations = false)]
async fn a_role_started_while_the_database_drops_connections_starts_when_it_is_back(pool: PgPool) {
    let options = pool.connect_options();
    let database = format!("{}:{}", options.get_host(), options.get_port());
    // A port in front of the database that, until `up`, closes every connection at once
    // (what a client of a restarting server sees), then passes them through.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let gate = up.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !gate.load(Ordering::SeqCst) {
                continue;
            }
            let database = database.clone();
            tokio::spawn(async move {
                let mut server = TcpStream::connect(&database).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let url = format!(
        "postgres://{}@{port}/{}",
        options.get_username(),
        options
            .get_database()
            .expect("the test database has a name")
    );
    let mut migrate = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow starts");
    // Logs go to stdout.
    let mut log = BufReader::new(migrate.stdout.take().unwrap()).lines();
    timeout(Duration::from_secs(30), async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.contains("cannot reach the database") {
                return;
            }
        }
        panic!("orderflow migrate ended without saying it waits for the database");
    })
    .await
    .expect("orderflow migrate says it waits for the database");
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        migrate.try_wait().unwrap().is_none(),
        "orderflow migrate gave up while the database dropped its connections"
    );

    up.store(true, Ordering::SeqCst);
    let status = timeout(Duration::from_secs(60), migrate.wait())
        .await
        .expect("orderflow migrate finishes once the database is back")
        .unwrap();
    assert!(status.success(), "{status}");
    let events: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_name = 'events'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 1, "the migrations were applied");
}

#[sqlx::test(migrations = false)]
async fn a_database_that_refuses_the_role_fails_it_at_once(pool: PgPool) {
    let url = database_url(&pool);
    let (base, _) = url.rsplit_once('/').unwrap();
    let migrate = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", format!("{base}/no_such_database"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow starts");
    let output = timeout(Duration::from_secs(30), migrate.wait_with_output())
        .await
        .expect("orderflow migrate does not wait for a database that refuses it")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stderr.contains("no_such_database"), "{stderr}");
    assert!(!stdout.contains("cannot reach the database"), "{stdout}");
}
