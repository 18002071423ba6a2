//! The HTTP surface: the playground with its bundled assets, GET queries, the SDL, health.

mod common;

use common::spawn;
use serde_json::{json, Value};
use sqlx::PgPool;

/// Every `src` and `href` attribute of a page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(start) = rest.find(attribute) {
            rest = &rest[start + attribute.len()..];
            let end = rest.find('"').expect("a closing quote");
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

#[sqlx::test(migrations = "../migrations")]
async fn the_playground_is_served_with_its_own_assets_and_no_cdn(pool: PgPool) {
    let app = spawn(pool).await;
    let pages = [
        app.client.get(app.query_url("/")).send().await.unwrap(),
        app.client
            .get(app.query_url("/graphql"))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .send()
            .await
            .unwrap(),
    ];
    for page in pages {
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = page.text().await.unwrap();
        assert!(html.contains("GraphiQL.createFetcher"));
        assert!(html.contains("\"/graphql\"") && html.contains("\"/graphql/ws\""));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );

        let assets = references(&html);
        assert_eq!(assets.len(), 4, "{assets:?}");
        let mut kinds = Vec::new();
        for asset in assets {
            assert!(asset.starts_with("/playground/"), "{asset}");
            let response = app.client.get(app.query_url(&asset)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{asset}");
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable"));
            let body = response.bytes().await.unwrap();
            assert!(body.len() > 10_000, "{asset} is {} bytes", body.len());
            if asset.ends_with(".js") {
                assert_eq!(content_type, "text/javascript; charset=utf-8", "{asset}");
            } else {
                assert_eq!(content_type, "text/css; charset=utf-8", "{asset}");
            }
            kinds.push(content_type);
        }
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), 2, "JavaScript and CSS");
    }
    let missing = app
        .client
        .get(app.query_url("/playground/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[sqlx::test(migrations = "../migrations")]
async fn queries_are_answered_over_get_and_the_schema_is_published(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    let response = app
        .client
        .get(app.query_url("/graphql"))
        .query(&[
            ("query", "query($id: ID!) { order(id: $id) { status } }"),
            ("variables", &json!({"id": shop.order}).to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"data": {"order": {"status": "PLACED"}}}));

    let sdl = app
        .client
        .get(app.query_url("/graphql/schema.graphql"))
        .send()
        .await
        .unwrap();
    assert_eq!(sdl.status(), 200);
    assert_eq!(sdl.text().await.unwrap(), orderflow_query::schema_sdl());

    let health: Value = app
        .client
        .get(app.query_url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let ready = app
        .client
        .get(app.query_url("/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let nowhere = app
        .client
        .get(app.query_url("/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    let body: Value = nowhere.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NO_SUCH_ROUTE");
}
