//! Authentication as the binary sets it up: roles refuse to start without a key, tokens
//! minted by `orderflow token` are accepted, `orderflow dev` prints a working admin token,
//! and `/metrics` can move to a listener of its own.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{brokers, database_url, free_port, BIN};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const SECRET: &str = "binary-tests-secret-0123456789abcdef";

#[tokio::test]
async fn command_and_query_refuse_to_start_without_a_key() {
    for role in ["command", "query"] {
        let output = Command::new(BIN)
            .args([role, "--database-url", "postgres://127.0.0.1:1/none"])
            .env_remove("ORDERFLOW_AUTH_SECRET")
            .env_remove("ORDERFLOW_INSECURE_NO_AUTH")
            .output()
            .await
            .expect("orderflow runs");
        assert!(!output.status.success(), "{role} started without a key");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--insecure-no-auth"), "{role}: {stderr}");
    }
}

/// Wait for `url` to answer 200.
async fn ready(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = reqwest::get(url).await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn token(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("token")
        .args(args)
        .env("ORDERFLOW_AUTH_SECRET", SECRET)
        .output()
        .await
        .expect("orderflow token runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

// The role applies the migrations at start.
#[sqlx::test(migrations = false)]
async fn tokens_from_orderflow_token_are_accepted_and_metrics_can_move(pool: PgPool) {
    let (api, metrics) = (free_port().await, free_port().await);
    let _command = Command::new(BIN)
        .args([
            "command",
            "--listen",
            &api.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
        ])
        .env("DATABASE_URL", database_url(&pool))
        .env("ORDERFLOW_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow starts");
    ready(&format!("http://{api}/ready")).await;
    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("http://{api}/api/users"))
        .json(&json!({"name": "Tess", "email": "tess@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = registered["streamId"].as_str().unwrap().to_owned();
    let customer = token(&["--sub", &user, "--role", "customer", "--ttl", "5m"]).await;
    let order = client
        .post(format!("http://{api}/api/orders"))
        .bearer_auth(&customer)
        .json(&json!({"userId": user, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 201);
    let forbidden = client
        .get(format!("http://{api}/api/sagas"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let admin = token(&["--sub", "ops", "--role", "admin"]).await;
    let sagas = client
        .get(format!("http://{api}/api/sagas"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(sagas.status(), 200);
    // A customer's subject is a user id.
    let refused = Command::new(BIN)
        .args(["token", "--sub", "not-a-user", "--role", "customer"])
        .env("ORDERFLOW_AUTH_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());

    let moved = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    assert!(moved
        .text()
        .await
        .unwrap()
        .contains("http_request_duration_seconds"));
    let gone = reqwest::get(format!("http://{api}/metrics")).await.unwrap();
    assert_eq!(gone.status(), 404);
}

#[sqlx::test(migrations = false)]
async fn orderflow_dev_prints_an_admin_token_that_works(pool: PgPool) {
    let (api, query) = (free_port().await, free_port().await);
    let prefix = format!("auth{}", uuid::Uuid::new_v4().simple());
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&prefix);
    let mut dev = Command::new(BIN)
        .args([
            "dev",
            "--command-listen",
            &api.to_string(),
            "--query-listen",
            &query.to_string(),
            "--topic-prefix",
            &prefix,
            "--group-prefix",
            &format!("{prefix}.projector"),
        ])
        .env("DATABASE_URL", database_url(&pool))
        .env("KAFKA_BROKERS", brokers())
        .env("ORDERFLOW_HOME", &home)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow dev starts");
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let admin = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(token) = line.strip_prefix("  admin token   ") {
                return token.trim().to_owned();
            }
        }
        panic!("orderflow dev ended without printing an admin token");
    })
    .await
    .expect("the admin token line in time");
    ready(&format!("http://{query}/ready")).await;
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!("http://{query}/graphql"))
        .bearer_auth(&admin)
        .json(&json!({"query": "{ sagaCounts { state } users { totalCount } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("errors").is_none(), "{answer}");
    let without = client
        .post(format!("http://{query}/graphql"))
        .json(&json!({"query": "{ products { totalCount } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), 401);
    let secret = std::fs::read_to_string(home.join("auth-secret")).expect("dev's secret");
    assert!(secret.trim().len() >= 32);
}
