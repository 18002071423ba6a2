//! Roles started while PostgreSQL cannot serve wait for it and start when it is back; a
//! database that answers with a refusal fails them at once.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{brokers, database_url, free_port, BIN};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

/// A port in front of the test's database that, until the flag is set, closes every
/// connection at once (what a client of a restarting server sees), then passes them
/// through; and the database's URL through it.
async fn gate(pool: &PgPool) -> (String, Arc<AtomicBool>) {
    let options = pool.connect_options();
    let database = format!("{}:{}", options.get_host(), options.get_port());
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
    (url, up)
}

/// `orderflow <args>` on `url`, once it has said it waits for the database and is still
/// running a second later; with its log (stdout) from there on.
async fn waiting_for_the_database(
    args: &[&str],
    url: &str,
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut role = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow starts");
    let mut log = BufReader::new(role.stdout.take().unwrap()).lines();
    until_logged(
        &mut log,
        "cannot reach the database",
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        role.try_wait().unwrap().is_none(),
        "orderflow {args:?} gave up while the database dropped its connections"
    );
    (role, log)
}

/// Read `log` until a line contains `text`; fails if the process ends first or `within`
/// passes.
async fn until_logged(log: &mut Lines<BufReader<ChildStdout>>, text: &str, within: Duration) {
    timeout(within, async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.contains(text) {
                return;
            }
        }
        panic!("orderflow ended without logging {text:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("orderflow did not log {text:?} within {within:?}"));
}

#[sqlx::test(migrations = false)]
async fn a_role_started_while_the_database_drops_connections_starts_when_it_is_back(pool: PgPool) {
    let (url, up) = gate(&pool).await;
    let (mut migrate, mut log) = waiting_for_the_database(&["migrate"], &url).await;
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
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

/// The role the fault suite once lost to a database restart: it runs until stopped, so
/// "started" is its driver's log line, after the migrations and the topics.
#[sqlx::test(migrations = false)]
async fn the_saga_started_while_the_database_drops_connections_runs_when_it_is_back(pool: PgPool) {
    let (url, up) = gate(&pool).await;
    let prefix = format!("startup{}", uuid::Uuid::new_v4().simple());
    let ops = free_port().await.to_string();
    let brokers = brokers();
    let args = [
        "saga",
        "--kafka-brokers",
        &brokers,
        "--topic-prefix",
        &prefix,
        "--ops-listen",
        &ops,
    ];
    let (mut saga, mut log) = waiting_for_the_database(&args, &url).await;
    up.store(true, Ordering::SeqCst);
    until_logged(&mut log, "saga driver started", Duration::from_secs(60)).await;
    assert!(saga.try_wait().unwrap().is_none(), "the saga keeps running");
    let sagas: i64 = sqlx::query_scalar("select count(*) from sagas")
        .fetch_one(&pool)
        .await
        .expect("the saga migrated the database it waited for");
    assert_eq!(sagas, 0);
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
