//! Protection: depth, complexity, page size and time limits, and a code on every error.

mod common;

use std::time::Duration;

use common::{only_error, spawn, spawn_with};
use orderflow_query::QueryOptions;
use serde_json::json;
use sqlx::PgPool;

/// `orders → nodes → user` repeated `hops` times, ending in `name`.
fn nested(hops: usize) -> String {
    let mut query = String::from("name");
    for _ in 0..hops {
        query = format!("orders(first: 1) {{ nodes {{ user {{ {query} }} }} }}");
    }
    format!("{{ user(id: \"00000000-0000-0000-0000-000000000000\") {{ {query} }} }}")
}

#[sqlx::test(migrations = "../migrations")]
async fn deeply_nested_queries_are_rejected_before_they_run(pool: PgPool) {
    let app = spawn(pool).await;
    // user + 3 hops of orders/nodes/user + name: 1 + 9 + 1 = 11 levels, one over the limit.
    let (code, message) = app.error(&nested(3), json!({})).await;
    assert_eq!(code, "QUERY_TOO_DEEP");
    assert!(message.contains("limit of 10"), "{message}");
    let before = app.service.sql_statements();
    app.error(&nested(30), json!({})).await;
    assert_eq!(app.service.sql_statements(), before, "nothing ran");

    // Two hops fit (8 levels).
    let data = app.data(&nested(2), json!({})).await;
    assert_eq!(data["user"], serde_json::Value::Null);

    // Fragments do not hide depth.
    let via_fragments = r#"
        query { orders { ...O } }
        fragment O on OrderConnection { nodes { user { ...U } } }
        fragment U on User { orders { nodes { user { orders { nodes { user { orders { nodes { id } } } } } } } } }
    "#;
    assert_eq!(
        app.error(via_fragments, json!({})).await.0,
        "QUERY_TOO_DEEP"
    );

    // Brackets nested past the parser's stack are refused before it runs, whatever the
    // strings and comments before them (a block string with a lone quote, a comment
    // ended by a carriage return).
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    for prefix in [r#"search: """ " """, "#, "search: \"x\" # note\r "] {
        let query = format!("{{ products({prefix}lowStock: {deep}) {{ totalCount }} }}");
        let (code, message) = app.error(&query, json!({})).await;
        assert_eq!(code, "GRAPHQL_PARSE_FAILED", "{message}");
        assert!(message.contains("nests brackets"), "{message}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn introspection_stays_on_and_its_depth_does_not_count(pool: PgPool) {
    let app = spawn(pool).await;
    // The shape of GraphiQL's introspection: types → fields → type → ofType × 8.
    let mut type_ref = String::from("kind name");
    for _ in 0..8 {
        type_ref = format!("kind name ofType {{ {type_ref} }}");
    }
    let query = format!(
        "{{ __schema {{ queryType {{ name }} subscriptionType {{ name }} \
           types {{ name fields {{ name args {{ name type {{ {type_ref} }} }} type {{ {type_ref} }} }} }} }} }}"
    );
    let data = app.data(&query, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    assert_eq!(data["__schema"]["subscriptionType"]["name"], "Subscription");
    let types = data["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Money"));
}

#[sqlx::test(migrations = "../migrations")]
async fn queries_multiplying_lists_are_rejected_as_too_complex(pool: PgPool) {
    let app = spawn(pool).await;
    let query = r#"{ orders(first: 100) { nodes { user { orders(first: 100) { nodes { id status } } } } } }"#;
    let (code, message) = app.error(query, json!({})).await;
    assert_eq!(code, "QUERY_TOO_COMPLEX");
    assert!(message.contains("5000"), "{message}");
    // The same shape with small pages is fine.
    let small =
        r#"{ orders(first: 10) { nodes { user { orders(first: 10) { nodes { id status } } } } } }"#;
    app.data(small, json!({})).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_page_larger_than_the_cap_is_refused_not_clamped(pool: PgPool) {
    let app = spawn(pool).await;
    app.register_user("Ada", "ada@example.com").await;
    app.project().await;
    for list in ["orders", "users", "products"] {
        for first in [101, 1_000_000, -1] {
            let query = format!("{{ {list}(first: {first}) {{ totalCount }} }}");
            let (code, message) = app.error(&query, json!({})).await;
            assert_eq!(code, "BAD_USER_INPUT", "{list} {first}");
            assert!(message.contains("`first`"), "{message}");
        }
        app.data(
            &format!("{{ {list}(first: 100) {{ totalCount }} }}"),
            json!({}),
        )
        .await;
    }
    let nested = r#"{ users(first: 1) { nodes { orders(first: 500) { totalCount } } } }"#;
    assert_eq!(app.error(nested, json!({})).await.0, "BAD_USER_INPUT");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_query_running_past_the_timeout_answers_timeout(pool: PgPool) {
    // Deliberately inverted so that a minVersion wait outlives the query timeout.
    let options = QueryOptions {
        query_timeout: Duration::from_millis(200),
        min_version_timeout: Duration::from_secs(30),
        ..QueryOptions::default()
    };
    let app = spawn_with(pool, options).await;
    let query = r#"{ order(id: "0190a0c4-0000-7000-8000-000000000000", minVersion: 9) { id } }"#;
    let (code, message) = app.error(query, json!({})).await;
    assert_eq!(code, "TIMEOUT");
    assert!(message.contains("200 ms"), "{message}");
    assert_eq!(app.service.waiting_reads(), 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_kind_of_error_carries_a_code(pool: PgPool) {
    let app = spawn(pool).await;
    assert_eq!(
        app.error("{ orders { ", json!({})).await.0,
        "GRAPHQL_PARSE_FAILED"
    );
    assert_eq!(
        app.error("{ orders { nope } }", json!({})).await.0,
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(
        app.error("{ order { id } }", json!({})).await.0,
        "GRAPHQL_VALIDATION_FAILED"
    );
    let wrong_variable = app
        .graphql(
            "query($first: Int) { orders(first: $first) { totalCount } }",
            json!({"first": "many"}),
        )
        .await;
    for error in wrong_variable["errors"].as_array().unwrap() {
        assert_eq!(error["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    }
    assert_eq!(
        app.error(
            r#"{ orders(filter: {createdAfter: "yesterday"}) { totalCount } }"#,
            json!({})
        )
        .await
        .0,
        "BAD_USER_INPUT"
    );

    // Not a GraphQL request at all.
    let response = app
        .client
        .post(app.query_url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(only_error(&body).0, "BAD_REQUEST");

    let too_large = "x".repeat(300 * 1024);
    let response = app
        .client
        .post(app.query_url("/graphql"))
        .json(&json!({"query": too_large}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(only_error(&body).0, "BAD_REQUEST");
}

/// POST a body as it is; the JSON answer.
async fn post_raw(app: &common::TestApp, body: serde_json::Value) -> serde_json::Value {
    let response = app
        .client
        .post(app.query_url("/graphql"))
        .json(&body)
        .send()
        .await
        .expect("query sent");
    response.json().await.expect("JSON answer")
}

fn sha256(text: &str) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
}

#[sqlx::test(migrations = "../migrations")]
async fn persisted_queries_run_by_hash_once_registered_and_pass_the_same_checks(pool: PgPool) {
    let app = spawn(pool).await;
    let query = "query($id: ID!) { user(id: $id) { name } }";
    let hash = sha256(query);
    let variables = json!({"id": "00000000-0000-0000-0000-000000000001"});
    let by_hash = json!({"variables": variables,
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});

    // Unknown hash: the client is told to send the document.
    let answer = post_raw(&app, by_hash.clone()).await;
    assert_eq!(
        only_error(&answer),
        (
            "PERSISTED_QUERY_NOT_FOUND".to_owned(),
            "PersistedQueryNotFound".to_owned()
        )
    );
    // Document and hash: answered, and registered.
    let answer = post_raw(
        &app,
        json!({"query": query, "variables": variables,
               "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}}),
    )
    .await;
    assert_eq!(answer, json!({"data": {"user": null}}));
    // The hash alone now runs it.
    assert_eq!(
        post_raw(&app, by_hash).await,
        json!({"data": {"user": null}})
    );

    // A hash that is not the document's is refused, and nothing is registered under it.
    let other = sha256("{ __typename }");
    let answer = post_raw(
        &app,
        json!({"query": query, "variables": variables,
               "extensions": {"persistedQuery": {"version": 1, "sha256Hash": other}}}),
    )
    .await;
    assert_eq!(only_error(&answer).0, "BAD_USER_INPUT", "{answer}");
    let answer = post_raw(
        &app,
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": other}}}),
    )
    .await;
    assert_eq!(only_error(&answer).0, "PERSISTED_QUERY_NOT_FOUND");
    // A malformed extension is refused with a code.
    let answer = post_raw(
        &app,
        json!({"query": query, "extensions": {"persistedQuery": {"version": 2, "sha256Hash": hash}}}),
    )
    .await;
    assert_eq!(only_error(&answer).0, "BAD_USER_INPUT", "{answer}");

    // A document the checks or validation refuse is not registered: its hash stays unknown.
    for (document, code) in [
        (nested(3), "QUERY_TOO_DEEP"),
        ("{ nope }".to_owned(), "GRAPHQL_VALIDATION_FAILED"),
    ] {
        let refused_hash = sha256(&document);
        let answer = post_raw(
            &app,
            json!({"query": document, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": refused_hash}}}),
        )
        .await;
        assert_eq!(only_error(&answer).0, code, "{answer}");
        let answer = post_raw(
            &app,
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": refused_hash}}}),
        )
        .await;
        assert_eq!(
            only_error(&answer).0,
            "PERSISTED_QUERY_NOT_FOUND",
            "{answer}"
        );
    }

    // A registered document passes the checks each time it runs by hash: here the
    // complexity its variables give it.
    let costly =
        "query($n: Int) { users(first: $n) { nodes { orders(first: $n) { nodes { id } } } } }";
    let costly_hash = sha256(costly);
    let answer = post_raw(
        &app,
        json!({"query": costly, "variables": {"n": 5},
               "extensions": {"persistedQuery": {"version": 1, "sha256Hash": costly_hash}}}),
    )
    .await;
    assert_eq!(answer, json!({"data": {"users": {"nodes": []}}}));
    let answer = post_raw(
        &app,
        json!({"variables": {"n": 100},
               "extensions": {"persistedQuery": {"version": 1, "sha256Hash": costly_hash}}}),
    )
    .await;
    assert_eq!(only_error(&answer).0, "QUERY_TOO_COMPLEX", "{answer}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_repeated_document_is_checked_every_time_against_its_variables(pool: PgPool) {
    let app = spawn(pool).await;
    // The parsed document is kept; limits that depend on the variables still apply to
    // each request.
    // Complexity grows with `$n` squared: validation, which counts it, runs each time.
    let query =
        "query($n: Int) { users(first: $n) { nodes { orders(first: $n) { nodes { id } } } } }";
    let data = app.data(query, json!({"n": 5})).await;
    assert_eq!(data["users"]["nodes"], json!([]));
    let (code, _) = app.error(query, json!({"n": 100})).await;
    assert_eq!(code, "QUERY_TOO_COMPLEX");
    let data = app.data(query, json!({"n": 5})).await;
    assert_eq!(data["users"]["nodes"], json!([]));
    // A document that failed the checks is refused again (it is not kept).
    for _ in 0..2 {
        assert_eq!(app.error(&nested(3), json!({})).await.0, "QUERY_TOO_DEEP");
    }
}
