//! A fuzz pass over the GraphQL service, against a real PostgreSQL: queries generated from
//! the schema's own SDL (random fields, aliases, fragments, arguments of the right and the
//! wrong types, depths beyond the limit), then the known abuse shapes (deep, wide, aliased,
//! fragment bombs, oversized, batched, nested values). Every answer is data or errors that
//! carry a documented code (never `INTERNAL`), the process keeps answering, and its memory
//! stays bounded.
//!
//! `FUZZ_CASES` sets how many generated queries run (default 400).

mod common;

use std::collections::{BTreeMap, HashSet};

use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{BaseType, Type, TypeKind, TypeSystemDefinition};
use common::spawn;
use serde_json::{json, Value};
use sqlx::PgPool;

/// Every code an error may carry (the README's table), `INTERNAL` excepted.
const CODES: &[&str] = &[
    "BAD_USER_INPUT",
    "STALE",
    "PERSISTED_QUERY_NOT_FOUND",
    "TOO_MANY_WATCHES",
    "TIMEOUT",
    "QUERY_TOO_DEEP",
    "QUERY_TOO_COMPLEX",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "BAD_REQUEST",
];

/// xorshift64*: the same queries for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Debug, Clone)]
struct Ty {
    name: String,
    list: bool,
    required: bool,
}

impl From<&Type> for Ty {
    fn from(ty: &Type) -> Self {
        let mut list = false;
        let mut base = &ty.base;
        while let BaseType::List(inner) = base {
            list = true;
            base = &inner.base;
        }
        let BaseType::Named(name) = base else {
            unreachable!("lists end in a name")
        };
        Ty {
            name: name.to_string(),
            list,
            required: !ty.nullable,
        }
    }
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    args: Vec<(String, Ty)>,
    ty: Ty,
}

#[derive(Debug, Clone)]
enum Kind {
    Object(Vec<Field>),
    Union(Vec<String>),
    Enum(Vec<String>),
    Input(Vec<(String, Ty)>),
    Scalar,
}

/// The schema as the service prints it (`query/schema.graphql`, kept equal by a test).
fn schema() -> BTreeMap<String, Kind> {
    let sdl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("query/schema.graphql");
    let document = parse_schema(&sdl).expect("the SDL parses");
    let mut types = BTreeMap::new();
    for definition in document.definitions {
        let TypeSystemDefinition::Type(definition) = definition else {
            continue;
        };
        let definition = definition.node;
        let fields = |fields: &[async_graphql::Positioned<
            async_graphql::parser::types::FieldDefinition,
        >]| {
            fields
                .iter()
                .map(|field| Field {
                    name: field.node.name.node.to_string(),
                    args: field
                        .node
                        .arguments
                        .iter()
                        .map(|arg| (arg.node.name.node.to_string(), Ty::from(&arg.node.ty.node)))
                        .collect(),
                    ty: Ty::from(&field.node.ty.node),
                })
                .collect()
        };
        let kind = match &definition.kind {
            TypeKind::Object(object) => Kind::Object(fields(&object.fields)),
            TypeKind::Interface(interface) => Kind::Object(fields(&interface.fields)),
            TypeKind::Union(union) => {
                Kind::Union(union.members.iter().map(|m| m.node.to_string()).collect())
            }
            TypeKind::Enum(e) => Kind::Enum(
                e.values
                    .iter()
                    .map(|v| v.node.value.node.to_string())
                    .collect(),
            ),
            TypeKind::InputObject(input) => Kind::Input(
                input
                    .fields
                    .iter()
                    .map(|f| (f.node.name.node.to_string(), Ty::from(&f.node.ty.node)))
                    .collect(),
            ),
            TypeKind::Scalar => Kind::Scalar,
        };
        types.insert(definition.name.node.to_string(), kind);
    }
    types
}

struct Generator {
    types: BTreeMap<String, Kind>,
    rng: Rng,
}

impl Generator {
    fn kind(&self, name: &str) -> Kind {
        self.types.get(name).cloned().unwrap_or(Kind::Scalar)
    }

    /// A random query on `Query`, up to `max_depth` levels deep.
    fn query(&mut self) -> String {
        let max_depth = 1 + self.rng.below(14);
        let body = self.selection("Query", 0, max_depth);
        if self.rng.chance(20) {
            format!("query Fuzz {body}")
        } else {
            body
        }
    }

    fn selection(&mut self, type_name: &str, depth: usize, max_depth: usize) -> String {
        match self.kind(type_name) {
            Kind::Object(fields) => {
                let mut chosen = Vec::new();
                for _ in 0..1 + self.rng.below(4) {
                    let field = self.rng.pick(&fields).clone();
                    let leaf =
                        !matches!(self.kind(&field.ty.name), Kind::Object(_) | Kind::Union(_));
                    if !leaf && depth + 1 >= max_depth {
                        continue;
                    }
                    let alias = if self.rng.chance(15) {
                        format!("a{}: ", self.rng.below(1000))
                    } else {
                        String::new()
                    };
                    let args = self.arguments(&field.args);
                    let sub = if leaf {
                        String::new()
                    } else {
                        format!(" {}", self.selection(&field.ty.name, depth + 1, max_depth))
                    };
                    chosen.push(format!("{alias}{}{args}{sub}", field.name));
                }
                if chosen.is_empty() {
                    chosen.push("__typename".into());
                }
                if self.rng.chance(10) {
                    let inner = chosen.join(" ");
                    return format!("{{ ... on {type_name} {{ {inner} }} }}");
                }
                format!("{{ {} }}", chosen.join(" "))
            }
            Kind::Union(members) => {
                let member = self.rng.pick(&members).clone();
                let inner = self.selection(&member, depth + 1, max_depth);
                format!("{{ __typename ... on {member} {inner} }}")
            }
            _ => String::new(),
        }
    }

    fn arguments(&mut self, args: &[(String, Ty)]) -> String {
        let mut given = Vec::new();
        for (name, ty) in args {
            if ty.required || self.rng.chance(50) {
                given.push(format!("{name}: {}", self.value(ty, 0)));
            }
        }
        if given.is_empty() {
            String::new()
        } else {
            format!("({})", given.join(", "))
        }
    }

    /// A literal of `ty`, now and then of another type, or a value out of its range.
    fn value(&mut self, ty: &Ty, depth: usize) -> String {
        if self.rng.chance(8) {
            let wrong = ["\"wrong\"", "42", "-1", "null", "[]", "{}", "true", "1.5"];
            return (*self.rng.pick(&wrong)).to_owned();
        }
        if ty.list && depth < 3 {
            let one = Ty {
                list: false,
                ..ty.clone()
            };
            let items: Vec<String> = (0..self.rng.below(4))
                .map(|_| self.value(&one, depth + 1))
                .collect();
            return format!("[{}]", items.join(", "));
        }
        match self.kind(&ty.name) {
            Kind::Enum(values) => self.rng.pick(&values).clone(),
            Kind::Input(fields) if depth < 4 => {
                let mut given = Vec::new();
                for (name, field) in &fields {
                    if field.required || self.rng.chance(50) {
                        given.push(format!("{name}: {}", self.value(field, depth + 1)));
                    }
                }
                format!("{{{}}}", given.join(", "))
            }
            _ => self.scalar(&ty.name),
        }
    }

    fn scalar(&mut self, name: &str) -> String {
        match name {
            "Int" => (*self.rng.pick(&[
                "0",
                "1",
                "-1",
                "100",
                "1001",
                "2147483647",
                "-2147483648",
                "99999999999",
            ]))
            .to_owned(),
            "Long" => (*self.rng.pick(&["0", "1", "-5", "9007199254740993", "123"])).to_owned(),
            "Float" => (*self.rng.pick(&["0.0", "1.5", "-1e308", "3"])).to_owned(),
            "Boolean" => (*self.rng.pick(&["true", "false"])).to_owned(),
            "UUID" | "ID" => (*self.rng.pick(&[
                "\"00000000-0000-0000-0000-000000000000\"",
                "\"01a22a00-0f72-74f6-8db4-eef257b78323\"",
                "\"not-a-uuid\"",
                "\"\"",
            ]))
            .to_owned(),
            "DateTime" => (*self.rng.pick(&[
                "\"2026-11-30T00:00:00Z\"",
                "\"yesterday\"",
                "\"9999-99-99T99:99:99Z\"",
            ]))
            .to_owned(),
            _ => (*self.rng.pick(&[
                "\"\"",
                "\"x\"",
                "\"\\u0000\\n\\\"quoted\\\"\"",
                "\"ünïcødé ✓\"",
                "\"YWJj\"",
            ]))
            .to_owned(),
        }
    }
}

/// An answer as the service promises: data, or errors each with a documented code.
fn check_answer(status: u16, body: &Value, what: &str) {
    assert!(
        [200, 400, 413].contains(&status),
        "{what}: HTTP {status}: {body}"
    );
    let errors = body.get("errors").and_then(Value::as_array);
    match errors {
        Some(errors) => {
            assert!(!errors.is_empty(), "{what}: an empty error list");
            for error in errors {
                let code = error["extensions"]["code"].as_str().unwrap_or("(none)");
                assert!(CODES.contains(&code), "{what}: code {code} in {body}");
            }
        }
        None => assert!(
            body.get("data").is_some(),
            "{what}: neither data nor errors: {body}"
        ),
    }
}

async fn post(app: &common::TestApp, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.query_url("/graphql"))
        .json(body)
        .send()
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// Resident memory of this process (the service runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

#[sqlx::test(migrations = "../migrations")]
async fn generated_and_abusive_queries_get_data_or_coded_errors_in_bounded_memory(pool: PgPool) {
    let app = spawn(pool).await;
    // Something to find: a user, a product and an order of it.
    let user = app.register_user("Fuzz User", "fuzz@example.com").await;
    let product = app.create_product("FUZZ-1", "Fuzz mug", 1200, 10).await;
    let order = app.create_order(user, "EUR").await;
    app.add_item(order, product, 2).await;
    app.project().await;
    let baseline = rss_kib();

    let cases: u64 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let mut generator = Generator {
        types: schema(),
        rng: Rng(0x9e37_79b9_7f4a_7c15),
    };
    let ids = [user.to_string(), product.to_string(), order.to_string()];
    let (mut answered, mut refused) = (0, 0);
    for case in 0..cases {
        let mut query = generator.query();
        // Now and then aim at what exists, so resolvers below the root run too.
        if case % 3 == 0 {
            query = query.replace(
                "01a22a00-0f72-74f6-8db4-eef257b78323",
                &ids[case as usize % 3],
            );
        }
        let (status, body) = post(&app, &json!({"query": query})).await;
        check_answer(status, &body, &query);
        if body.get("errors").is_some() {
            refused += 1;
        } else {
            answered += 1;
        }
    }
    // The generator reaches both sides: queries that run and queries that are refused.
    assert!(answered > cases / 10, "{answered} of {cases} ran");
    assert!(refused > cases / 10, "{refused} of {cases} were refused");

    // The known abuse shapes, each refused with a code.
    let deep = format!(
        "{{ {}__typename{} }}",
        "orders { nodes { user { ".repeat(30),
        " } } }".repeat(30)
    );
    let wide = format!("{{ orders {{ nodes {{ {} }} }} }}", "id ".repeat(20_000));
    let aliased = format!(
        "{{ {} }}",
        (0..5_000)
            .map(|i| format!("a{i}: orders(first: 100) {{ nodes {{ id }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut bomb = String::from("query { ...F0 } fragment F0 on Query { ...F1 ...F1 }");
    for level in 1..30 {
        bomb.push_str(&format!(
            " fragment F{level} on Query {{ ...F{} ...F{} }}",
            level + 1,
            level + 1
        ));
    }
    bomb.push_str(" fragment F30 on Query { __typename }");
    let cycle =
        "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }".to_owned();
    let brackets = format!(
        "{{ orders(filter: {}) {{ totalCount }} }}",
        "[".repeat(5_000)
    );
    let oversized = format!("{{ __typename }} # {}", "x".repeat(400 * 1024));
    let directives = format!("{{ __typename {} }}", "@skip(if: false) ".repeat(5_000));
    let shapes: Vec<(&str, Value)> = vec![
        ("deep", json!({"query": deep})),
        ("wide", json!({"query": wide})),
        ("aliased", json!({"query": aliased})),
        ("fragment bomb", json!({"query": bomb})),
        ("fragment cycle", json!({"query": cycle})),
        ("nested brackets", json!({"query": brackets})),
        ("oversized", json!({"query": oversized})),
        ("repeated directives", json!({"query": directives})),
        (
            "batched",
            Value::Array(
                (0..1_000)
                    .map(|_| json!({"query": "{ orders { totalCount } }"}))
                    .collect(),
            ),
        ),
        ("not a request", json!(["x", 1, null])),
        (
            "variables of the wrong shape",
            json!({"query": "query($f: Int) { orders(first: $f) { totalCount } }", "variables": {"f": {"deep": [[[[1]]]]}}}),
        ),
    ];
    let mut codes = BTreeMap::new();
    for (what, body) in &shapes {
        for _ in 0..3 {
            let (status, answer) = post(&app, body).await;
            check_answer(status, &answer, what);
            let errors = answer["errors"].as_array();
            assert!(
                errors.is_some_and(|e| !e.is_empty()),
                "{what} was not refused: {}",
                answer.to_string().chars().take(300).collect::<String>()
            );
            codes.insert(*what, answer["errors"][0]["extensions"]["code"].clone());
        }
    }
    let distinct: HashSet<String> = codes.values().map(|c| c.to_string()).collect();
    assert!(distinct.len() >= 3, "the shapes are told apart: {codes:?}");

    // Still serving, and memory bounded: 3 rounds of every shape and the generated
    // queries may not leave the process more than 256 MiB bigger.
    let data = app
        .data(&format!("{{ order(id: \"{order}\") {{ id }} }}"), json!({}))
        .await;
    assert_eq!(data["order"]["id"], order.to_string());
    let grown_mib = rss_kib().saturating_sub(baseline) / 1024;
    assert!(grown_mib < 256, "resident memory grew by {grown_mib} MiB");
    eprintln!(
        "{answered} generated queries ran, {refused} were refused; shapes refused with \
         {codes:?}; resident memory grew {grown_mib} MiB"
    );
}
