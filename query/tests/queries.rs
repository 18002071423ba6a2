//! Queries against read models built by the real projectors from real commands.

mod common;

use std::time::Duration;

use common::{spawn, spawn_with, TestApp};
use orderflow_query::QueryOptions;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const ORDER: &str = r#"query($id: ID!) {
  order(id: $id) {
    id version status currency userId itemCount createdAt placedAt confirmedAt cancelledAt
    cancelReason updatedAt
    total { amountMinor currency formatted }
    user { id name email }
    items {
      productId productName quantity
      unitPrice { amountMinor formatted }
      lineTotal { amountMinor formatted }
      product { id sku name onHand price { formatted } }
    }
    events { type version position schemaVersion recordedAt data }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn an_order_is_composed_with_its_user_items_live_products_and_events(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;

    let data = app.data(ORDER, json!({"id": shop.order})).await;
    let order = &data["order"];
    assert_eq!(order["id"], shop.order.to_string());
    assert_eq!(order["version"], 4);
    assert_eq!(order["status"], "PLACED");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["userId"], shop.user.to_string());
    assert_eq!(order["itemCount"], 3);
    assert_eq!(
        order["total"],
        json!({"amountMinor": 2999, "currency": "EUR", "formatted": "29.99 EUR"})
    );
    assert!(order["placedAt"].is_string());
    assert!(order["confirmedAt"].is_null() && order["cancelledAt"].is_null());
    assert_eq!(
        order["user"],
        json!({"id": shop.user.to_string(), "name": "Ada Lovelace", "email": "ada@example.com"})
    );

    let items = order["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["productId"], shop.mug.to_string());
    assert_eq!(items[0]["productName"], "Coffee mug");
    assert_eq!(items[0]["quantity"], 2);
    assert_eq!(items[0]["unitPrice"]["formatted"], "12.50 EUR");
    assert_eq!(items[0]["lineTotal"]["amountMinor"], 2500);
    assert_eq!(items[0]["product"]["sku"], "MUG-01");
    assert_eq!(items[1]["product"]["name"], "Green tea");

    let events = order["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["OrderCreated", "ItemAdded", "ItemAdded", "OrderPlaced"]
    );
    let versions: Vec<i64> = events
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(events[0]["data"]["userId"], shop.user.to_string());
    assert_eq!(events[3]["data"]["total"]["amountMinor"], 2999);
    assert!(events[0]["recordedAt"].is_string());

    // The product is live: a restock shows on the order's item once projected, while the
    // item keeps the price it was added at.
    app.restock(shop.mug, 5).await;
    app.command(
        &format!("/api/products/{}/price", shop.mug),
        json!({"price": {"amountMinor": 1500, "currency": "EUR"}}),
    )
    .await;
    app.project().await;
    let data = app.data(ORDER, json!({"id": shop.order})).await;
    let mug = &data["order"]["items"][0];
    assert_eq!(mug["product"]["onHand"], 15);
    assert_eq!(mug["product"]["price"]["formatted"], "15.00 EUR");
    assert_eq!(mug["unitPrice"]["formatted"], "12.50 EUR");
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_ids_answer_null_and_malformed_ids_are_bad_user_input(pool: PgPool) {
    let app = spawn(pool).await;
    app.shop().await;
    let unknown = Uuid::now_v7();
    let data = app
        .data(
            "query($id: ID!) { order(id: $id) { id } user(id: $id) { id } product(id: $id) { id } }",
            json!({"id": unknown}),
        )
        .await;
    assert_eq!(data, json!({"order": null, "user": null, "product": null}));

    for field in ["order", "user", "product"] {
        let query = format!(r#"{{ {field}(id: "not-a-uuid") {{ id }} }}"#);
        let (code, message) = app.error(&query, json!({})).await;
        assert_eq!(code, "BAD_USER_INPUT", "{field}");
        assert!(message.contains("UUID"), "{message}");
    }
    let (code, _) = app
        .error(
            r#"{ orders(filter: {userId: "42"}) { totalCount } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
}

const ORDERS: &str = r#"query($filter: OrderFilterInput, $first: Int, $after: String) {
  orders(filter: $filter, first: $first, after: $after) {
    totalCount
    edges { cursor node { id status } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"#;

fn ids(connection: &Value) -> Vec<Uuid> {
    connection["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Two users; Ada has a draft, a placed, a cancelled and a confirmed order, Bob one draft.
/// Returns (ada, bob, ada's orders oldest first, bob's order).
async fn orders_of_two_users(app: &TestApp) -> (Uuid, Uuid, Vec<Uuid>, Uuid) {
    let ada = app.register_user("Ada", "ada@example.com").await;
    let bob = app.register_user("Bob", "bob@example.com").await;
    let mug = app.create_product("MUG-01", "Mug", 1000, 100).await;
    let mut orders = Vec::new();
    for ending in ["draft", "placed", "cancelled", "confirmed"] {
        let order = app.create_order(ada, "EUR").await;
        app.add_item(order, mug, 1).await;
        match ending {
            "placed" => {
                app.place(order).await;
            }
            "cancelled" => {
                app.cancel(order, "changed my mind").await;
            }
            "confirmed" => {
                app.place(order).await;
                app.confirm(order).await;
            }
            _ => {}
        }
        orders.push(order);
    }
    let bobs = app.create_order(bob, "EUR").await;
    app.project().await;
    (ada, bob, orders, bobs)
}

#[sqlx::test(migrations = "../migrations")]
async fn orders_are_filtered_by_user_status_and_creation_time(pool: PgPool) {
    let app = spawn(pool).await;
    let (ada, bob, adas, bobs) = orders_of_two_users(&app).await;

    let all = app.data(ORDERS, json!({})).await;
    assert_eq!(all["orders"]["totalCount"], 5);
    let mut newest_first: Vec<Uuid> = adas.clone();
    newest_first.push(bobs);
    newest_first.reverse();
    assert_eq!(ids(&all["orders"]), newest_first);

    let of_bob = app.data(ORDERS, json!({"filter": {"userId": bob}})).await;
    assert_eq!(ids(&of_bob["orders"]), [bobs]);
    assert_eq!(of_bob["orders"]["totalCount"], 1);

    for (status, expected) in [
        ("DRAFT", vec![bobs, adas[0]]),
        ("PLACED", vec![adas[1]]),
        ("CANCELLED", vec![adas[2]]),
        ("CONFIRMED", vec![adas[3]]),
    ] {
        let data = app
            .data(ORDERS, json!({"filter": {"status": status}}))
            .await;
        assert_eq!(ids(&data["orders"]), expected, "{status}");
        for edge in data["orders"]["edges"].as_array().unwrap() {
            assert_eq!(edge["node"]["status"], status);
        }
    }
    let adas_drafts = app
        .data(
            ORDERS,
            json!({"filter": {"userId": ada, "status": "DRAFT"}}),
        )
        .await;
    assert_eq!(ids(&adas_drafts["orders"]), [adas[0]]);

    // Creation times come from the events' recorded_at; take them from the view.
    let created: Vec<String> = {
        let data = app
            .data(
                "query($first: Int) { orders(first: $first) { nodes { createdAt } } }",
                json!({"first": 5}),
            )
            .await;
        data["orders"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["createdAt"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest first: created[4] is Ada's first order, created[0] Bob's.
    let after_first = app
        .data(ORDERS, json!({"filter": {"createdAfter": created[4]}}))
        .await;
    assert_eq!(ids(&after_first["orders"]), newest_first[..4]);
    let before_last = app
        .data(ORDERS, json!({"filter": {"createdBefore": created[0]}}))
        .await;
    assert_eq!(ids(&before_last["orders"]), newest_first[1..]);
    let between = app
        .data(
            ORDERS,
            json!({"filter": {"createdAfter": created[4], "createdBefore": created[0]}}),
        )
        .await;
    assert_eq!(ids(&between["orders"]), newest_first[1..4]);
    assert_eq!(between["orders"]["totalCount"], 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn orders_page_forward_with_cursors_to_an_empty_last_page(pool: PgPool) {
    let app = spawn(pool).await;
    let (_, _, adas, bobs) = orders_of_two_users(&app).await;
    let mut newest_first = adas.clone();
    newest_first.push(bobs);
    newest_first.reverse();

    let first = app.data(ORDERS, json!({"first": 2})).await;
    let page = &first["orders"];
    assert_eq!(ids(page), newest_first[..2]);
    assert_eq!(page["totalCount"], 5);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(page["pageInfo"]["startCursor"], page["edges"][0]["cursor"]);
    assert_eq!(page["pageInfo"]["endCursor"], page["edges"][1]["cursor"]);

    let second = app
        .data(
            ORDERS,
            json!({"first": 2, "after": page["pageInfo"]["endCursor"]}),
        )
        .await;
    let page = &second["orders"];
    assert_eq!(ids(page), newest_first[2..4]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], true);

    // The last page is short and says so.
    let last = app
        .data(
            ORDERS,
            json!({"first": 2, "after": page["pageInfo"]["endCursor"]}),
        )
        .await;
    let page = &last["orders"];
    assert_eq!(ids(page), newest_first[4..]);
    assert_eq!(page["pageInfo"]["hasNextPage"], false);

    // After the last item: an empty page without cursors.
    let empty = app
        .data(
            ORDERS,
            json!({"first": 2, "after": page["pageInfo"]["endCursor"]}),
        )
        .await;
    let page = &empty["orders"];
    assert_eq!(ids(page), Vec::<Uuid>::new());
    assert_eq!(
        page["pageInfo"],
        json!({"hasNextPage": false, "hasPreviousPage": true, "startCursor": null, "endCursor": null})
    );
    assert_eq!(page["totalCount"], 5);

    // An exact fit: a page of all five has no next page; `first: 0` returns nothing.
    let exact = app.data(ORDERS, json!({"first": 5})).await;
    assert_eq!(exact["orders"]["pageInfo"]["hasNextPage"], false);
    let none = app.data(ORDERS, json!({"first": 0})).await;
    assert_eq!(ids(&none["orders"]), Vec::<Uuid>::new());
    assert_eq!(none["orders"]["pageInfo"]["hasNextPage"], true);

    // A cursor of another list, or garbage, is the client's mistake.
    let users = app
        .data("{ users(first: 1) { pageInfo { endCursor } } }", json!({}))
        .await;
    let users_cursor = users["users"]["pageInfo"]["endCursor"].clone();
    for bad in [users_cursor, json!("garbage")] {
        let (code, _) = app.error(ORDERS, json!({"after": bad})).await;
        assert_eq!(code, "BAD_USER_INPUT");
    }
}

const USER: &str = r#"query($id: ID!, $filter: UserOrderFilterInput, $first: Int, $after: String) {
  user(id: $id) {
    id name email registeredAt version orderCount lastOrderAt
    spent { amountMinor currency formatted }
    orders(filter: $filter, first: $first, after: $after) {
      totalCount
      nodes { id status }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn a_user_shows_statistics_and_pages_through_their_orders(pool: PgPool) {
    let app = spawn(pool).await;
    let (ada, _, adas, _) = orders_of_two_users(&app).await;
    // A confirmed order in another currency is reported apart, never added up.
    let pound = app
        .command(
            "/api/products",
            json!({"sku": "TEA-GB", "name": "Tea", "price": {"amountMinor": 350, "currency": "GBP"},
                   "initialStock": 10}),
        )
        .await;
    let pound = common::stream_id(&pound);
    let in_gbp = app.create_order(ada, "GBP").await;
    app.add_item(in_gbp, pound, 2).await;
    app.place(in_gbp).await;
    app.confirm(in_gbp).await;
    app.project().await;

    let data = app.data(USER, json!({"id": ada, "first": 2})).await;
    let user = &data["user"];
    assert_eq!(user["name"], "Ada");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["version"], 1);
    assert_eq!(user["orderCount"], 5);
    assert_eq!(
        user["spent"],
        json!([
            {"amountMinor": 1000, "currency": "EUR", "formatted": "10.00 EUR"},
            {"amountMinor": 700, "currency": "GBP", "formatted": "7.00 GBP"},
        ])
    );
    assert!(user["lastOrderAt"].is_string());

    let orders = &user["orders"];
    assert_eq!(orders["totalCount"], 5);
    assert_eq!(ids(orders), [in_gbp, adas[3]]);
    assert_eq!(orders["pageInfo"]["hasNextPage"], true);
    let next = app
        .data(
            USER,
            json!({"id": ada, "first": 10, "after": orders["pageInfo"]["endCursor"]}),
        )
        .await;
    assert_eq!(ids(&next["user"]["orders"]), [adas[2], adas[1], adas[0]]);
    assert_eq!(next["user"]["orders"]["pageInfo"]["hasNextPage"], false);

    let confirmed = app
        .data(USER, json!({"id": ada, "filter": {"status": "CONFIRMED"}}))
        .await;
    assert_eq!(ids(&confirmed["user"]["orders"]), [in_gbp, adas[3]]);
    assert_eq!(confirmed["user"]["orders"]["totalCount"], 2);
}

const USERS: &str = r#"query($search: String, $first: Int, $after: String) {
  users(search: $search, first: $first, after: $after) {
    totalCount
    nodes { id name }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn users_are_searched_by_name_or_email_and_paged_in_registration_order(pool: PgPool) {
    let app = spawn(pool).await;
    let ada = app.register_user("Ada Lovelace", "ada@example.com").await;
    let grace = app.register_user("Grace Hopper", "grace@navy.mil").await;
    let alan = app.register_user("Alan Turing", "alan@example.com").await;
    let percent = app.register_user("Ms 100%", "percent@example.org").await;
    app.project().await;

    let all = app.data(USERS, json!({})).await;
    assert_eq!(ids(&all["users"]), [ada, grace, alan, percent]);
    assert_eq!(all["users"]["totalCount"], 4);

    let by_email = app.data(USERS, json!({"search": "EXAMPLE.COM"})).await;
    assert_eq!(ids(&by_email["users"]), [ada, alan]);
    assert_eq!(by_email["users"]["totalCount"], 2);
    let by_name = app.data(USERS, json!({"search": "hopper"})).await;
    assert_eq!(ids(&by_name["users"]), [grace]);
    // LIKE wildcards in a search are plain characters.
    let literal = app.data(USERS, json!({"search": "%"})).await;
    assert_eq!(ids(&literal["users"]), [percent]);
    let nobody = app.data(USERS, json!({"search": "nobody"})).await;
    assert_eq!(ids(&nobody["users"]), Vec::<Uuid>::new());
    assert_eq!(nobody["users"]["totalCount"], 0);

    let first = app.data(USERS, json!({"first": 3})).await;
    assert_eq!(ids(&first["users"]), [ada, grace, alan]);
    assert_eq!(first["users"]["pageInfo"]["hasNextPage"], true);
    let rest = app
        .data(
            USERS,
            json!({"first": 3, "after": first["users"]["pageInfo"]["endCursor"]}),
        )
        .await;
    assert_eq!(ids(&rest["users"]), [percent]);
    assert_eq!(rest["users"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(rest["users"]["pageInfo"]["hasPreviousPage"], true);
}

const PRODUCTS: &str = r#"query($search: String, $lowStock: Int, $first: Int, $after: String) {
  products(search: $search, lowStock: $lowStock, first: $first, after: $after) {
    totalCount
    nodes { id sku name onHand reserved unitsSold version price { formatted } revenue { amountMinor currency } }
    pageInfo { hasNextPage endCursor }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn products_are_searched_filtered_by_low_stock_and_show_their_sales(pool: PgPool) {
    let app = spawn(pool).await;
    let shop = app.shop().await;
    let cup = app.create_product("CUP-01", "Espresso cup", 800, 50).await;
    app.confirm(shop.order).await;
    app.project().await;

    let all = app.data(PRODUCTS, json!({})).await;
    assert_eq!(ids(&all["products"]), [shop.mug, shop.tea, cup]);
    assert_eq!(all["products"]["totalCount"], 3);
    let mug = &all["products"]["nodes"][0];
    assert_eq!(mug["sku"], "MUG-01");
    assert_eq!(mug["price"]["formatted"], "12.50 EUR");
    assert_eq!(mug["unitsSold"], 2);
    assert_eq!(
        mug["revenue"],
        json!({"amountMinor": 2500, "currency": "EUR"})
    );

    let search = app.data(PRODUCTS, json!({"search": "mug"})).await;
    assert_eq!(ids(&search["products"]), [shop.mug]);
    let by_sku = app.data(PRODUCTS, json!({"search": "cup-"})).await;
    assert_eq!(ids(&by_sku["products"]), [cup]);

    let low = app.data(PRODUCTS, json!({"lowStock": 10})).await;
    let low_ids = ids(&low["products"]);
    for node in low["products"]["nodes"].as_array().unwrap() {
        assert!(node["onHand"].as_i64().unwrap() <= 10, "{node}");
    }
    assert!(low_ids.contains(&shop.tea) && !low_ids.contains(&cup));
    assert_eq!(low["products"]["totalCount"], low_ids.len());
    let low_tea = app
        .data(PRODUCTS, json!({"lowStock": 10, "search": "tea"}))
        .await;
    assert_eq!(ids(&low_tea["products"]), [shop.tea]);

    let first = app.data(PRODUCTS, json!({"first": 2})).await;
    assert_eq!(ids(&first["products"]), [shop.mug, shop.tea]);
    let rest = app
        .data(
            PRODUCTS,
            json!({"first": 2, "after": first["products"]["pageInfo"]["endCursor"]}),
        )
        .await;
    assert_eq!(ids(&rest["products"]), [cup]);
    assert_eq!(rest["products"]["pageInfo"]["hasNextPage"], false);

    let one = app
        .data(
            "query($id: ID!) { product(id: $id) { name onHand } }",
            json!({"id": cup}),
        )
        .await;
    assert_eq!(
        one["product"],
        json!({"name": "Espresso cup", "onHand": 50})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_page_of_fifty_orders_with_users_and_products_costs_a_constant_number_of_statements(
    pool: PgPool,
) {
    // Resolvers may register their ids over several executor turns (a list of more than
    // 30 items is polled through FuturesUnordered, which yields when its futures do), and
    // on a busy machine a 2 ms batch window can close between turns. What is under test is
    // that statements do not grow with the page, so give the window room.
    let options = QueryOptions {
        batch_delay: Duration::from_millis(50),
        ..QueryOptions::default()
    };
    let app = spawn_with(pool, options).await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(
            app.register_user(&format!("User {i}"), &format!("user{i}@example.com"))
                .await,
        );
    }
    let mut products = Vec::new();
    for i in 0..4 {
        products.push(
            app.create_product(&format!("SKU-{i}"), &format!("Product {i}"), 100 + i, 1000)
                .await,
        );
    }
    for i in 0..50 {
        let order = app.create_order(users[i % users.len()], "EUR").await;
        for product in products.iter().take(1 + i % 3) {
            app.add_item(order, *product, 1).await;
        }
    }
    app.project().await;

    let orders = r#"query($first: Int) { orders(first: $first) { nodes {
        id total { formatted }
        user { id name orderCount }
        items { quantity product { id name onHand } }
    } } }"#;
    let statements = |first: i64| {
        let app = &app;
        async move {
            let before = app.service.sql_statements();
            let data = app.data(orders, json!({"first": first})).await;
            let nodes = data["orders"]["nodes"].as_array().unwrap();
            assert_eq!(nodes.len() as i64, first);
            for node in nodes {
                assert!(node["user"]["name"].is_string(), "{node}");
                for item in node["items"].as_array().unwrap() {
                    assert!(item["product"]["name"].is_string(), "{item}");
                }
            }
            app.service.sql_statements() - before
        }
    };
    let for_five = statements(5).await;
    let for_fifty = statements(50).await;
    // The page, its users, its products.
    assert_eq!(for_fifty, 3);
    assert_eq!(for_five, for_fifty);

    // Users with their orders and those orders' products: also constant.
    let users_query = r#"query($first: Int) { users(first: $first) { nodes {
        name
        orders(first: 20) { totalCount nodes { id items { product { name } } } }
    } } }"#;
    let before = app.service.sql_statements();
    let data = app.data(users_query, json!({"first": 5})).await;
    let spent = app.service.sql_statements() - before;
    let nodes = data["users"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    for node in nodes {
        assert_eq!(node["orders"]["totalCount"], 10);
        assert_eq!(node["orders"]["nodes"].as_array().unwrap().len(), 10);
    }
    // Users, their orders, the orders' counts, the products.
    assert_eq!(spent, 4);
    let before = app.service.sql_statements();
    app.data(users_query, json!({"first": 1})).await;
    assert_eq!(app.service.sql_statements() - before, spent);
}
