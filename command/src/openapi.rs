//! The OpenAPI description of every route and body, served at `/api/openapi.json`.

use std::sync::LazyLock;

use axum::routing::get;
use axum::{Json, Router};
use orderflow_domain::money::Currency;
use orderflow_domain::order::MAX_LINE_QUANTITY;
use orderflow_domain::product::MAX_PRICE;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::extract::IF_MATCH_PATTERN;

use crate::startup::AppState;
use crate::{health, orders, products, sagas, streams, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "orderflow command API", description = "Commands that append events to the orderflow event store. \
        Writes accept `Idempotency-Key` and `If-Match`; errors are `{\"error\": {\"code\", \"message\"}}`. \
        Every route under /api but the OpenAPI document needs `Authorization: Bearer <JWT>` (registration also answers without one); \
        401 is UNAUTHENTICATED or TOKEN_EXPIRED, 403 FORBIDDEN, 429 RATE_LIMITED with Retry-After, 503 OVERLOADED or TIMEOUT with Retry-After."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        users::register, users::rename, users::change_email,
        products::create, products::change_price, products::restock,
        orders::create, orders::add_item, orders::update_quantity, orders::remove_item,
        orders::place, orders::cancel,
        sagas::list, sagas::show, sagas::retry,
        streams::read, health::health, health::ready, health::metrics,
    ),
    tags(
        (name = "users"), (name = "products"), (name = "orders"),
        (name = "sagas", description = "Fulfilment sagas: state, steps, resuming a stuck one"),
        (name = "streams", description = "The event store, read back"),
        (name = "operations"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme every operation names.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A JWT whose `sub` is the user id (customers) and whose `roles` hold `customer` and/or `admin`"))
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(document().clone()) }),
    )
}

/// The served document: what the annotations generate, made as precise as the server is
/// (see [`precise`]); built once.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
        precise(&mut document);
        document
    });
    &DOCUMENT
}

/// A name or reason as the domain takes it: trimmed, 1 to `max` characters, no control
/// characters (strings are matched as ASCII-or-not by the same rule).
fn text_pattern(max: usize) -> String {
    const TEXT: &str = r"[^\x00-\x1f\x7f-\x9f]";
    const EDGE: &str = r"[^\s\x00-\x1f\x7f-\x9f]";
    format!(r"^\s*{EDGE}(?:{TEXT}{{0,{}}}{EDGE})?\s*$", max - 2)
}

/// Patches the generated document with what the annotations cannot say:
/// - header formats: `If-Match` ([`IF_MATCH_PATTERN`]) and `Idempotency-Key`;
/// - body constraints the domain enforces: currency codes (any letter case), SKU, name,
///   email and reason formats, quantity and amount ranges;
/// - the statuses every route can answer besides its own: 400 (a header, path or query
///   that does not parse), 413 and 415 for bodies, 429 (`RATE_LIMITED`) and 503
///   (`OVERLOADED`, `TIMEOUT`, `DATABASE_UNAVAILABLE`), the last two with `Retry-After`;
/// - links from each create to the operations on what it created (`streamId`).
fn precise(document: &mut Value) {
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    let retry_after = json!({"Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0}}});
    for (path, item) in document["paths"].as_object_mut().into_iter().flatten() {
        for (_, operation) in item.as_object_mut().into_iter().flatten() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            for parameter in operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                match parameter["name"].as_str() {
                    Some("If-Match") => {
                        parameter["schema"] =
                            json!({"type": "string", "pattern": IF_MATCH_PATTERN});
                    }
                    Some("Idempotency-Key") => {
                        parameter["schema"] = json!({"type": "string",
                            "pattern": r"^(?!saga:)[!-~](?:[ -~]{0,253}[!-~])?$"});
                    }
                    _ => {}
                }
            }
            let api = path.starts_with("/api/") && path != "/api/openapi.json";
            let responses = operation
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses are an object");
            let mut answer = |status: &str, description: &str, headers: Option<&Value>| {
                let response = responses.entry(status).or_insert_with(|| {
                    json!({"description": description,
                           "content": {"application/json": {"schema": error.clone()}}})
                });
                if let Some(headers) = headers {
                    response["headers"] = headers.clone();
                }
            };
            // Any route, the probes included: a malformed X-Correlation-Id.
            answer(
                "400",
                "A header (X-Correlation-Id must be a UUID), path or query parameter that \
                 does not parse",
                None,
            );
            if api {
                answer("429", "RATE_LIMITED", Some(&retry_after));
                answer(
                    "503",
                    "OVERLOADED, TIMEOUT or DATABASE_UNAVAILABLE",
                    Some(&retry_after),
                );
            }
            if operation.contains_key("requestBody") {
                let responses = operation["responses"].as_object_mut().expect("an object");
                for (status, description) in [
                    ("400", "INVALID_BODY: not JSON, or not the documented shape"),
                    ("413", "PAYLOAD_TOO_LARGE"),
                    ("415", "UNSUPPORTED_MEDIA_TYPE: not application/json"),
                ] {
                    responses.entry(status).or_insert_with(|| {
                        json!({"description": description,
                               "content": {"application/json": {"schema": error.clone()}}})
                    });
                }
            }
        }
    }
    link_creates(document);
    constrain_bodies(document);
}

/// From each create's 201 (its `streamId`) to every operation on what it created.
fn link_creates(document: &mut Value) {
    const CREATES: [(&str, &[(&str, &str)]); 3] = [
        (
            "/api/users",
            &[
                ("/api/users/{id}/name", "post"),
                ("/api/users/{id}/email", "post"),
                ("/api/streams/{id}/events", "get"),
            ],
        ),
        (
            "/api/products",
            &[
                ("/api/products/{id}/price", "post"),
                ("/api/products/{id}/restock", "post"),
                ("/api/streams/{id}/events", "get"),
            ],
        ),
        (
            "/api/orders",
            &[
                ("/api/orders/{id}/items", "post"),
                ("/api/orders/{id}/items/{product_id}", "patch"),
                ("/api/orders/{id}/items/{product_id}", "delete"),
                ("/api/orders/{id}/place", "post"),
                ("/api/orders/{id}/cancel", "post"),
                ("/api/streams/{id}/events", "get"),
            ],
        ),
    ];
    for (create, targets) in CREATES {
        let links: Map<String, Value> = targets
            .iter()
            .filter(|(path, method)| document["paths"][*path].get(*method).is_some())
            .map(|(path, method)| {
                let name = format!("{method} {path}");
                let pointer = format!("#/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1"));
                (name, json!({"operationRef": pointer, "parameters": {"id": "$response.body#/streamId"}}))
            })
            .collect();
        if let Some(created) = document["paths"][create]["post"]["responses"].get_mut("201") {
            created["links"] = Value::Object(links);
        }
    }
    // A registered user can be given an order.
    if let Some(links) = document["paths"]["/api/users"]["post"]["responses"]["201"]
        .get_mut("links")
        .and_then(Value::as_object_mut)
    {
        links.insert(
            "post /api/orders".into(),
            json!({"operationRef": "#/paths/~1api~1orders/post",
                   "requestBody": {"userId": "$response.body#/streamId", "currency": "EUR"}}),
        );
    }
}

/// Formats and ranges the domain enforces on request bodies.
fn constrain_bodies(document: &mut Value) {
    let currency = Currency::codes()
        .map(|code| {
            code.chars()
                .map(|c| format!("[{}{}]", c, c.to_ascii_lowercase()))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("|");
    let currency = json!({"type": "string", "pattern": format!("^({currency})$"),
        "description": "ISO 4217 code (any letter case)"});
    let name = json!({"type": "string", "pattern": text_pattern(200),
        "description": "1 to 200 characters once trimmed, no control characters"});
    let email = json!({"type": "string",
        "pattern": r"^\s*[^\s@\x00-\x1f\x7f-\x9f]+@[^\s@.\x00-\x1f\x7f-\x9f]+(?:\.[^\s@.\x00-\x1f\x7f-\x9f]+)+\s*$",
        "description": "One @, something before it, a dotted domain after it; at most 254 characters once trimmed"});
    let line = json!({"type": "integer", "minimum": 1, "maximum": MAX_LINE_QUANTITY});
    let schemas = &mut document["components"]["schemas"];
    // Every request body refuses fields it does not know.
    for schema in [
        "RegisterUser",
        "RenameUser",
        "ChangeEmail",
        "CreateProduct",
        "ChangePrice",
        "Restock",
        "Money",
        "CreateOrder",
        "AddItem",
        "UpdateQuantity",
        "CancelOrder",
    ] {
        if let Some(schema) = schemas.get_mut(schema).and_then(Value::as_object_mut) {
            schema.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    let mut set = |schema: &str, property: &str, value: &Value| {
        if let Some(slot) = schemas[schema]["properties"].get_mut(property) {
            let description = slot.get("description").cloned();
            *slot = value.clone();
            if let Some(description) = description {
                slot["description"] = description;
            }
        }
    };
    set("Money", "currency", &currency);
    set(
        "Money",
        "amountMinor",
        &json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_PRICE}),
    );
    set("CreateOrder", "currency", &currency);
    for schema in ["RegisterUser", "RenameUser", "CreateProduct"] {
        set(schema, "name", &name);
    }
    for schema in ["RegisterUser", "ChangeEmail"] {
        set(schema, "email", &email);
    }
    set(
        "CreateProduct",
        "sku",
        &json!({"type": "string", "pattern": r"^\s*[A-Za-z0-9._-]{1,64}\s*$",
        "description": "1 to 64 of A-Z (any case), 0-9, '-', '_' and '.', trimmed"}),
    );
    set(
        "CreateProduct",
        "initialStock",
        &json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
    );
    set(
        "Restock",
        "quantity",
        &json!({"type": "integer", "minimum": 1, "maximum": u32::MAX}),
    );
    set("AddItem", "quantity", &line);
    set("UpdateQuantity", "quantity", &line);
    set(
        "CancelOrder",
        "reason",
        &json!({"type": "string", "pattern": text_pattern(500),
        "description": "1 to 500 characters once trimmed, no control characters"}),
    );
}
