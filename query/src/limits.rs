//! [`Limits`]: the schema extension that protects the service and gives every error an
//! `extensions.code`.
//!
//! - Depth: counted on the parsed document, fragments followed, introspection fields
//!   (`__schema`, `__type`, ...) left out so GraphiQL's deep introspection query still works;
//!   introspection has limits of its own instead ([`Introspection`]).
//! - Complexity: async-graphql's own count (`limit_complexity`), its error given a code.
//! - Time: each execution is bounded by the query timeout (subscriptions are not).
//! - Read-your-writes: an operation of a request that carries `X-Min-Position` waits for
//!   the views it reads first ([`crate::progress::hold`],
//!   [`crate::progress::OperationViews`]). One extension does all of this: every
//!   extension adds a layer to the resolution of every field.
//! - Documents: a document that passed the checks and validation is kept, parsed, by its
//!   text (an LRU of at most [`DOCUMENTS`] documents of at most [`MAX_KEPT_DOCUMENT`] bytes,
//!   and of at most [`KEPT_BYTES`] of parsed documents by [`kept_bytes`]' estimate), so a
//!   repeated query is not parsed again; validation runs every time (it depends on the
//!   variables).
//! - Persisted queries (Apollo's convention): a request whose `extensions.persistedQuery`
//!   carries `sha256Hash` and a document registers the document under that hash (when they
//!   match); one that carries the hash alone runs the registered document, or fails with
//!   PERSISTED_QUERY_NOT_FOUND so the client sends the document again. A document is
//!   registered only once it has passed the checks and validation, and runs through them
//!   again each time.
//! - Codes: parse and validation errors get theirs where they arise; whatever still has
//!   none when the response leaves (input coercion during execution) is BAD_USER_INPUT, as
//!   resolvers only raise coded errors. INTERNAL errors are logged with their cause here.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextRequest, NextSubscribe, NextValidation,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{
    Name, Positioned, Request, Response, ServerError, ServerResult, ValidationResult, Variables,
};
use futures::StreamExt as _;
use lru::LruCache;
use sha2::Digest as _;

use crate::config::QueryOptions;
use crate::error::{code, code_of, server_error, set_code};
use crate::progress::{MinPosition, OperationViews, ViewSet};

/// The message async-graphql's complexity check fails with.
const TOO_COMPLEX: &str = "Query is too complex.";

/// Checked documents kept parsed, and persisted documents kept by hash, per process.
pub(crate) const DOCUMENTS: usize = 1024;
/// Longest document kept (parsed, or by hash); longer ones are parsed every time.
pub(crate) const MAX_KEPT_DOCUMENT: usize = 16 * 1024;
/// Most memory the parsed documents kept may take, by [`kept_bytes`]' estimate.
pub(crate) const KEPT_BYTES: usize = 32 * 1024 * 1024;

/// A document's text and its parsed form.
type Kept = (String, Arc<ExecutableDocument>);

/// Creates the per-request [`Extension`]; the document caches are shared by all.
#[derive(Clone)]
pub(crate) struct Limits {
    max_depth: usize,
    max_complexity: usize,
    query_timeout: Duration,
    /// Document text → the parsed document, once it passed every check and validation.
    parsed: Arc<Mutex<KeptDocuments>>,
    /// This request's document, parsed and checked, kept once it also passes validation
    /// (each request has its own).
    pending: Arc<Mutex<Option<Kept>>>,
    /// This request's persisted-query registration (hash, document), made once its
    /// document passes validation (each request has its own).
    registering: Arc<Mutex<Option<(String, String)>>>,
    /// SHA-256 (hex) → document text, registered by persisted-query requests.
    persisted: Arc<Mutex<LruCache<String, String>>>,
    /// The views each operation of this request's document reads, when it carries
    /// `X-Min-Position` (each request has its own).
    reads: Arc<Mutex<Option<OperationViews>>>,
}

impl Limits {
    pub(crate) fn new(options: &QueryOptions) -> Self {
        let capacity = NonZeroUsize::new(DOCUMENTS).expect("not zero");
        Self {
            max_depth: options.max_depth,
            max_complexity: options.max_complexity,
            query_timeout: options.query_timeout,
            parsed: Arc::new(Mutex::new(KeptDocuments {
                documents: LruCache::new(capacity),
                bytes: 0,
            })),
            persisted: Arc::new(Mutex::new(LruCache::new(capacity))),
            pending: Arc::default(),
            registering: Arc::default(),
            reads: Arc::default(),
        }
    }

    /// Check, parse and size a document not kept yet (the checks before async-graphql's
    /// own parse, which runs last); it is kept once it passes validation too.
    async fn parse_checked(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // The parser recurses on nested values; refuse deep brackets before it overflows.
        let nesting = bracket_nesting(query);
        if nesting > MAX_NESTING {
            return Err(server_error(
                code::GRAPHQL_PARSE_FAILED,
                format!("the query nests brackets {nesting} levels deep, more than {MAX_NESTING}"),
            ));
        }
        // async-graphql's own parse step walks fragment spreads without remembering them,
        // which is exponential: size the query from a parse of our own before it runs.
        let parsed = async_graphql::parser::parse_query(query)
            .map_err(|err| server_error(code::GRAPHQL_PARSE_FAILED, err.to_string()))?;
        // The checks below, and async-graphql's validation, recurse through fragment
        // spreads: bound the chains first (every fragment's, spread or not).
        let chain = spread_chain(&parsed);
        if chain == usize::MAX {
            return Err(server_error(
                code::GRAPHQL_VALIDATION_FAILED,
                "fragments spread each other in a cycle".to_owned(),
            ));
        }
        if chain > MAX_SPREAD_CHAIN {
            return Err(server_error(
                code::QUERY_TOO_DEEP,
                format!("fragments spread each other {chain} deep, more than {MAX_SPREAD_CHAIN}"),
            ));
        }
        match expanded_size(&parsed) {
            None => {
                return Err(server_error(
                    code::GRAPHQL_VALIDATION_FAILED,
                    "fragments spread each other in a cycle".to_owned(),
                ))
            }
            Some(size) if size > MAX_EXPANDED_FIELDS => {
                return Err(server_error(
                    code::QUERY_TOO_COMPLEX,
                    format!(
                        "the query expands to {size} selections through its fragments, \
                         more than {MAX_EXPANDED_FIELDS}"
                    ),
                ))
            }
            Some(_) => {}
        }
        if let Some(directive) = repeated_directive(&parsed) {
            return Err(server_error(
                code::GRAPHQL_VALIDATION_FAILED,
                format!("the directive @{directive} appears more than once in one place"),
            ));
        }
        let depth = depth(&parsed);
        if depth > self.max_depth {
            return Err(server_error(
                code::QUERY_TOO_DEEP,
                format!(
                    "the query nests fields {depth} levels deep, more than the limit of {}",
                    self.max_depth
                ),
            ));
        }
        let introspection = Introspection::of(&parsed);
        if let Some(refusal) = introspection.refusal() {
            return Err(server_error(code::QUERY_TOO_COMPLEX, refusal));
        }
        // async-graphql's own parse adds its recursion and directive checks.
        let document = next.run(ctx, query, variables).await.map_err(|mut err| {
            set_code(&mut err, code::GRAPHQL_PARSE_FAILED);
            err
        })?;
        if query.len() <= MAX_KEPT_DOCUMENT {
            *self.pending.lock().expect("not poisoned") =
                Some((query.to_owned(), Arc::new(document.clone())));
        }
        Ok(document)
    }

    /// Fill in or register the document of a persisted-query request.
    fn persisted_query(&self, request: &mut Request) -> ServerResult<()> {
        let Some(value) = request.extensions.remove("persistedQuery") else {
            return Ok(());
        };
        let hash = match &value {
            async_graphql::Value::Object(fields) => match (
                fields.get("version"),
                fields.get("sha256Hash"),
            ) {
                (
                    Some(async_graphql::Value::Number(version)),
                    Some(async_graphql::Value::String(hash)),
                ) if version.as_u64() == Some(1) => hash.to_ascii_lowercase(),
                _ => return Err(server_error(
                    code::BAD_USER_INPUT,
                    "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<hex>\"}"
                        .to_owned(),
                )),
            },
            _ => {
                return Err(server_error(
                    code::BAD_USER_INPUT,
                    "extensions.persistedQuery must be an object".to_owned(),
                ))
            }
        };
        if request.query.is_empty() {
            let known = self
                .persisted
                .lock()
                .expect("not poisoned")
                .get(&hash)
                .cloned();
            return match known {
                Some(query) => {
                    request.query = query;
                    Ok(())
                }
                None => Err(server_error(
                    code::PERSISTED_QUERY_NOT_FOUND,
                    "PersistedQueryNotFound".to_owned(),
                )),
            };
        }
        let actual = format!("{:x}", sha2::Sha256::digest(request.query.as_bytes()));
        if actual != hash {
            return Err(server_error(
                code::BAD_USER_INPUT,
                format!("extensions.persistedQuery.sha256Hash is {hash} but the document's SHA-256 is {actual}"),
            ));
        }
        if request.query.len() <= MAX_KEPT_DOCUMENT {
            *self.registering.lock().expect("not poisoned") = Some((hash, request.query.clone()));
        }
        Ok(())
    }
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Self {
            pending: Arc::default(),
            registering: Arc::default(),
            reads: Arc::default(),
            ..self.clone()
        })
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.persisted_query(&mut request)?;
        next.run(ctx, request).await
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        finish(&mut response.errors);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                finish(&mut response.errors);
                response
            })
            .boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let kept = self.parsed.lock().expect("not poisoned").get(query);
        let document = match kept {
            Some(document) => ExecutableDocument::clone(&document),
            None => self.parse_checked(ctx, query, variables, next).await?,
        };
        if ctx.data_opt::<MinPosition>().is_some() {
            *self.reads.lock().expect("not poisoned") =
                Some(OperationViews::of(&document, &ctx.schema_env.registry));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let validated = next.run(ctx).await;
        // Only a document that passed validation too is kept, or registered.
        if validated.is_ok() {
            if let Some((query, document)) = self.pending.lock().expect("not poisoned").take() {
                self.parsed
                    .lock()
                    .expect("not poisoned")
                    .put(query, document);
            }
            if let Some((hash, query)) = self.registering.lock().expect("not poisoned").take() {
                self.persisted
                    .lock()
                    .expect("not poisoned")
                    .put(hash, query);
            }
        }
        validated.map_err(|mut errors| {
            for err in &mut errors {
                if err.message == TOO_COMPLEX {
                    err.message = format!(
                        "the query's complexity is above the limit of {}; ask for fewer items \
                         (`first`) or fewer nested lists",
                        self.max_complexity
                    );
                    set_code(err, code::QUERY_TOO_COMPLEX);
                } else {
                    set_code(err, code::GRAPHQL_VALIDATION_FAILED);
                }
            }
            errors
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        // Read-your-writes first: its wait has a bound of its own, shorter than the timeout.
        // The views the operation reads (all when they were not worked out).
        let reads = self
            .reads
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map_or(ViewSet::ALL, |views| views.get(operation_name));
        if let Err(error) = crate::progress::hold(ctx, reads).await {
            return Response::from_errors(vec![error]);
        }
        match tokio::time::timeout(self.query_timeout, next.run(ctx, operation_name)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(
                    operation = operation_name,
                    timeout_ms = self.query_timeout.as_millis() as u64,
                    "a query ran past the timeout"
                );
                Response::from_errors(vec![server_error(
                    code::TIMEOUT,
                    format!(
                        "the query did not finish within {} ms",
                        self.query_timeout.as_millis()
                    ),
                )])
            }
        }
    }
}

/// Log internal errors with their cause, and code whatever has no code yet.
fn finish(errors: &mut [ServerError]) {
    for err in errors {
        if code_of(err) == Some(code::INTERNAL) {
            match err.source::<anyhow::Error>() {
                Some(cause) => tracing::error!(error = ?cause, path = ?err.path, "query failed"),
                None => tracing::error!(message = %err.message, path = ?err.path, "query failed"),
            }
        }
        set_code(err, code::BAD_USER_INPUT);
    }
}

/// Parsed documents by their text, least recently used first out, within [`DOCUMENTS`]
/// documents and [`KEPT_BYTES`] by [`kept_bytes`].
pub(crate) struct KeptDocuments {
    documents: LruCache<String, (Arc<ExecutableDocument>, usize)>,
    bytes: usize,
}

impl KeptDocuments {
    fn get(&mut self, query: &str) -> Option<Arc<ExecutableDocument>> {
        self.documents
            .get(query)
            .map(|(document, _)| document.clone())
    }

    fn put(&mut self, query: String, document: Arc<ExecutableDocument>) {
        let weight = kept_bytes(&query, &document);
        if weight > KEPT_BYTES {
            return;
        }
        if let Some((_, old)) = self.documents.pop(&query) {
            self.bytes -= old;
        }
        while self.bytes + weight > KEPT_BYTES || self.documents.len() >= self.documents.cap().get()
        {
            match self.documents.pop_lru() {
                Some((_, (_, old))) => self.bytes -= old,
                None => break,
            }
        }
        self.documents.put(query, (document, weight));
        self.bytes += weight;
    }
}

/// An upper estimate of the memory a parsed document takes: its text, and a few hundred
/// bytes for each node (selection, argument, directive, value, variable). A document's
/// parse can take a hundred times its text (`...F ` is five bytes and a node).
pub(crate) fn kept_bytes(query: &str, document: &ExecutableDocument) -> usize {
    use async_graphql_value::{ConstValue, Value};
    const NODE_BYTES: usize = 256;
    fn const_nodes(value: &ConstValue) -> usize {
        1 + match value {
            ConstValue::List(items) => items.iter().map(const_nodes).sum(),
            ConstValue::Object(fields) => fields.values().map(const_nodes).sum(),
            _ => 0,
        }
    }
    fn value_nodes(value: &Value) -> usize {
        1 + match value {
            Value::List(items) => items.iter().map(value_nodes).sum(),
            Value::Object(fields) => fields.values().map(value_nodes).sum(),
            _ => 0,
        }
    }
    fn arguments(arguments: &[(Positioned<Name>, Positioned<Value>)]) -> usize {
        arguments
            .iter()
            .map(|(_, v)| 1 + value_nodes(&v.node))
            .sum()
    }
    fn directives(directives: &[Positioned<Directive>]) -> usize {
        directives
            .iter()
            .map(|d| 1 + arguments(&d.node.arguments))
            .sum()
    }
    fn set(selection_set: &SelectionSet) -> usize {
        selection_set
            .items
            .iter()
            .map(|selection| {
                1 + match &selection.node {
                    Selection::Field(field) => {
                        arguments(&field.node.arguments)
                            + directives(&field.node.directives)
                            + set(&field.node.selection_set.node)
                    }
                    Selection::InlineFragment(inline) => {
                        directives(&inline.node.directives) + set(&inline.node.selection_set.node)
                    }
                    Selection::FragmentSpread(spread) => directives(&spread.node.directives),
                }
            })
            .sum()
    }
    let operations: usize = document
        .operations
        .iter()
        .map(|(_, operation)| {
            let operation = &operation.node;
            1 + operation
                .variable_definitions
                .iter()
                .map(|v| {
                    1 + v
                        .node
                        .default_value
                        .as_ref()
                        .map_or(0, |d| const_nodes(&d.node))
                })
                .sum::<usize>()
                + directives(&operation.directives)
                + set(&operation.selection_set.node)
        })
        .sum();
    let fragments: usize = document
        .fragments
        .values()
        .map(|f| 1 + directives(&f.node.directives) + set(&f.node.selection_set.node))
        .sum();
    query.len() + (operations + fragments) * NODE_BYTES
}

/// Deepest bracket nesting (`{`, `[`, `(`) a query text may have.
const MAX_NESTING: usize = 64;
/// Most fields a query may expand to once its fragments are spread.
const MAX_EXPANDED_FIELDS: u64 = 10_000;
/// Longest chain of fragments spreading one another (a fragment spreading one that spreads
/// one ...); the checks that follow spreads recurse that deep.
const MAX_SPREAD_CHAIN: usize = 32;

/// The longest chain of fragment spreads (`A` spreading `B` is 2), from any fragment whether
/// an operation spreads it or not (async-graphql's cycle check walks them all), computed
/// without recursing through spreads; a cycle counts as `usize::MAX`.
fn spread_chain(document: &ExecutableDocument) -> usize {
    /// The fragments spread anywhere in a selection set (recursing only into its own
    /// nesting, which the bracket count bounds).
    fn spreads<'a>(selection_set: &'a SelectionSet, found: &mut Vec<&'a Name>) {
        for selection in &selection_set.items {
            match &selection.node {
                Selection::Field(field) => spreads(&field.node.selection_set.node, found),
                Selection::InlineFragment(inline) => {
                    spreads(&inline.node.selection_set.node, found)
                }
                Selection::FragmentSpread(spread) => found.push(&spread.node.fragment_name.node),
            }
        }
    }
    let mut graph: HashMap<&Name, Vec<&Name>> = HashMap::new();
    for (name, fragment) in &document.fragments {
        let mut found = Vec::new();
        spreads(&fragment.node.selection_set.node, &mut found);
        found.retain(|spread| document.fragments.contains_key(*spread));
        graph.insert(name, found);
    }
    // Longest path from each fragment, by an explicit depth-first stack.
    let mut longest: HashMap<&Name, usize> = HashMap::new();
    let mut on_stack: HashSet<&Name> = HashSet::new();
    for start in graph.keys() {
        if longest.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&Name, usize)> = vec![(start, 0)];
        on_stack.insert(start);
        while let Some((name, next)) = stack.last_mut() {
            let children = &graph[name];
            if let Some(child) = children.get(*next) {
                *next += 1;
                if on_stack.contains(child) {
                    return usize::MAX;
                }
                if !longest.contains_key(child) {
                    on_stack.insert(child);
                    stack.push((child, 0));
                }
            } else {
                let depth = 1 + children.iter().map(|c| longest[c]).max().unwrap_or(0);
                longest.insert(name, depth);
                on_stack.remove(name);
                stack.pop();
            }
        }
    }
    longest.values().copied().max().unwrap_or(0)
}

/// The deepest nesting of brackets outside strings and comments, as the parser splits
/// them (async-graphql's grammar): a comment ends at a line terminator (`\n`, `\r`); a
/// block string (`"""`) at the next `"""` not escaped as `\"""`; a string at its closing
/// quote. Wherever the parser could read code, brackets are counted: a string that meets
/// a line end (the parser refuses it) or a block string that never ends (the parser reads
/// `""` and a string) gives the rest of the text back to the count.
fn bracket_nesting(query: &str) -> usize {
    let text = query.as_bytes();
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, 0usize);
    let line_end = |b: u8| b == b'\n' || b == b'\r';
    while at < text.len() {
        match text[at] {
            b'#' => {
                while at < text.len() && !line_end(text[at]) {
                    at += 1;
                }
                continue;
            }
            b'"' if text[at..].starts_with(b"\"\"\"") => {
                let mut end = at + 3;
                let closed = loop {
                    if end >= text.len() {
                        break false;
                    }
                    if text[end..].starts_with(b"\\\"\"\"") {
                        end += 4;
                    } else if text[end..].starts_with(b"\"\"\"") {
                        break true;
                    } else {
                        end += 1;
                    }
                };
                // Unclosed, it is an empty string and a string beginning at the third quote.
                at = if closed { end + 3 } else { at + 2 };
                continue;
            }
            b'"' => {
                at += 1;
                while at < text.len() && text[at] != b'"' && !line_end(text[at]) {
                    if text[at] == b'\\' && at + 1 < text.len() && !line_end(text[at + 1]) {
                        at += 1;
                    }
                    at += 1;
                }
                if at < text.len() && text[at] == b'"' {
                    at += 1;
                }
                continue;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    deepest
}

/// How many selections (fields, spreads, inline fragments) the operations expand to with
/// every fragment spread in place, introspection included; each fragment is sized once.
/// `None` when fragments spread each other in a cycle.
pub(crate) fn expanded_size(document: &ExecutableDocument) -> Option<u64> {
    let mut sizes = FragmentSizes {
        document,
        known: HashMap::new(),
        visiting: Vec::new(),
    };
    let mut total = 0u64;
    for (_, operation) in document.operations.iter() {
        total = total.saturating_add(sizes.of(&operation.node.selection_set)?);
    }
    Some(total)
}

struct FragmentSizes<'a> {
    document: &'a ExecutableDocument,
    known: HashMap<&'a Name, u64>,
    visiting: Vec<&'a Name>,
}

impl<'a> FragmentSizes<'a> {
    fn of(&mut self, selection_set: &'a Positioned<SelectionSet>) -> Option<u64> {
        let mut total = 0u64;
        for selection in &selection_set.node.items {
            let inner = match &selection.node {
                Selection::Field(field) => self.of(&field.node.selection_set)?,
                Selection::InlineFragment(inline) => self.of(&inline.node.selection_set)?,
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node)?
                }
            };
            total = total.saturating_add(1).saturating_add(inner);
        }
        Some(total)
    }

    fn fragment(&mut self, name: &'a Name) -> Option<u64> {
        if let Some(size) = self.known.get(name) {
            return Some(*size);
        }
        if self.visiting.contains(&name) {
            return None;
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return Some(0);
        };
        self.visiting.push(name);
        let size = self.of(&fragment.node.selection_set);
        self.visiting.pop();
        let size = size?;
        self.known.insert(name, size);
        Some(size)
    }
}

/// A directive used twice in one place, which GraphQL's "directives are unique per
/// location" rule forbids (none of this schema's directives is repeatable) and
/// async-graphql does not check: thousands of `@skip` on one field would otherwise all be
/// parsed, validated and evaluated.
pub(crate) fn repeated_directive(document: &ExecutableDocument) -> Option<String> {
    fn once(directives: &[Positioned<Directive>]) -> Option<String> {
        let mut seen = HashSet::new();
        directives
            .iter()
            .find(|directive| !seen.insert(&directive.node.name.node))
            .map(|directive| directive.node.name.node.to_string())
    }
    fn walk(selection_set: &Positioned<SelectionSet>) -> Option<String> {
        selection_set
            .node
            .items
            .iter()
            .find_map(|selection| match &selection.node {
                Selection::Field(field) => {
                    once(&field.node.directives).or_else(|| walk(&field.node.selection_set))
                }
                Selection::InlineFragment(inline) => {
                    once(&inline.node.directives).or_else(|| walk(&inline.node.selection_set))
                }
                Selection::FragmentSpread(spread) => once(&spread.node.directives),
            })
    }
    document
        .operations
        .iter()
        .find_map(|(_, operation)| {
            once(&operation.node.directives).or_else(|| walk(&operation.node.selection_set))
        })
        .or_else(|| {
            document.fragments.values().find_map(|fragment| {
                once(&fragment.node.directives).or_else(|| walk(&fragment.node.selection_set))
            })
        })
}

/// Introspection's list fields: each one nested in another multiplies the answer by the
/// size of the schema.
const INTROSPECTION_LISTS: [&str; 8] = [
    "types",
    "fields",
    "args",
    "inputFields",
    "interfaces",
    "possibleTypes",
    "enumValues",
    "directives",
];
/// Deepest nesting of introspection's list fields (GraphiQL's query: types → fields →
/// args).
const MAX_INTROSPECTION_LISTS: usize = 3;
/// Most `__schema` and `__type` fields a query may expand to.
const MAX_INTROSPECTION_ROOTS: u64 = 10;
/// What each introspection list is taken to hold, for [`MAX_INTROSPECTION_COST`].
const INTROSPECTION_LIST_GUESS: u64 = 10;
/// Most introspection work a query may ask for: each selection below `__schema`/`__type`,
/// fragments spread, counts [`INTROSPECTION_LIST_GUESS`] to the power of the lists around
/// it (GraphiQL 3.9's, which the playground sends, costs 49,428).
const MAX_INTROSPECTION_COST: u64 = 200_000;

/// What a query asks of introspection, fragments followed. Introspection is outside the
/// depth limit and async-graphql counts its fields with no multiplier for lists, so a few
/// hundred bytes could otherwise ask for an answer that grows with the schema's size to
/// the power of the nesting, or for the same work many times (under aliases, or the same
/// field or fragment repeated, which async-graphql resolves once per selection before it
/// merges them). So: at most [`MAX_INTROSPECTION_ROOTS`] `__schema`/`__type` fields, list
/// fields nested at most [`MAX_INTROSPECTION_LISTS`] deep, no aliases below them, and at
/// most [`MAX_INTROSPECTION_COST`] of work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Introspection {
    roots: u64,
    lists: usize,
    aliased: bool,
    cost: u64,
}

impl Introspection {
    pub(crate) fn of(document: &ExecutableDocument) -> Self {
        let mut walk = IntrospectionWalk {
            document,
            known: HashMap::new(),
            visiting: Vec::new(),
        };
        let mut total = Self::default();
        for (_, operation) in document.operations.iter() {
            total.add(walk.of(&operation.node.selection_set, false));
        }
        total
    }

    fn add(&mut self, part: Self) {
        self.roots = self.roots.saturating_add(part.roots);
        self.lists = self.lists.max(part.lists);
        self.aliased |= part.aliased;
        self.cost = self.cost.saturating_add(part.cost);
    }

    /// Why the query is refused, if it is.
    fn refusal(self) -> Option<String> {
        if self.roots > MAX_INTROSPECTION_ROOTS {
            Some(format!(
                "the query asks for __schema or __type {} times, more than {MAX_INTROSPECTION_ROOTS}",
                self.roots
            ))
        } else if self.lists > MAX_INTROSPECTION_LISTS {
            Some(format!(
                "the query nests introspection's lists {} deep, more than {MAX_INTROSPECTION_LISTS}",
                self.lists
            ))
        } else if self.aliased {
            Some("aliases are not allowed inside __schema or __type".to_owned())
        } else if self.cost > MAX_INTROSPECTION_COST {
            Some(format!(
                "the query asks introspection for about {} resolutions, more than \
                 {MAX_INTROSPECTION_COST}; ask for each part once",
                self.cost
            ))
        } else {
            None
        }
    }
}

/// Each fragment is walked once per side (inside introspection or not), so spreads cannot
/// make it exponential; a cycle counts as nothing (validation rejects it).
struct IntrospectionWalk<'a> {
    document: &'a ExecutableDocument,
    known: HashMap<(&'a Name, bool), Introspection>,
    visiting: Vec<(&'a Name, bool)>,
}

impl<'a> IntrospectionWalk<'a> {
    fn of(&mut self, selection_set: &'a Positioned<SelectionSet>, inside: bool) -> Introspection {
        let mut total = Introspection::default();
        for selection in &selection_set.node.items {
            let part = match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let root = !inside && (name == "__schema" || name == "__type");
                    let mut part = self.of(&field.node.selection_set, inside || root);
                    part.roots += u64::from(root);
                    if inside {
                        let list = INTROSPECTION_LISTS.contains(&name);
                        part.lists += usize::from(list);
                        if list {
                            part.cost = part.cost.saturating_mul(INTROSPECTION_LIST_GUESS);
                        }
                        part.cost = part.cost.saturating_add(1);
                        part.aliased |= field
                            .node
                            .alias
                            .as_ref()
                            .is_some_and(|alias| alias.node != field.node.name.node);
                    }
                    part
                }
                Selection::InlineFragment(inline) => self.of(&inline.node.selection_set, inside),
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node, inside)
                }
            };
            total.add(part);
        }
        total
    }

    fn fragment(&mut self, name: &'a Name, inside: bool) -> Introspection {
        if let Some(known) = self.known.get(&(name, inside)) {
            return *known;
        }
        if self.visiting.contains(&(name, inside)) {
            return Introspection::default();
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return Introspection::default();
        };
        self.visiting.push((name, inside));
        let found = self.of(&fragment.node.selection_set, inside);
        self.visiting.pop();
        self.known.insert((name, inside), found);
        found
    }
}

/// The deepest field nesting of any operation, introspection fields excluded.
pub(crate) fn depth(document: &ExecutableDocument) -> usize {
    let mut fragments = FragmentDepths {
        document,
        known: HashMap::new(),
        visiting: Vec::new(),
    };
    document
        .operations
        .iter()
        .map(|(_, operation)| fragments.of(&operation.node.selection_set))
        .max()
        .unwrap_or(0)
}

/// Each fragment's depth is computed once, so fragments spreading others many times cannot
/// make the count exponential; a cycle counts as nothing (validation rejects it).
struct FragmentDepths<'a> {
    document: &'a ExecutableDocument,
    known: HashMap<&'a Name, usize>,
    visiting: Vec<&'a Name>,
}

impl<'a> FragmentDepths<'a> {
    fn of(&mut self, selection_set: &'a Positioned<SelectionSet>) -> usize {
        let mut deepest = 0;
        for selection in &selection_set.node.items {
            let depth = match &selection.node {
                Selection::Field(field) if field.node.name.node.starts_with("__") => 0,
                Selection::Field(field) => 1 + self.of(&field.node.selection_set),
                Selection::InlineFragment(inline) => self.of(&inline.node.selection_set),
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node),
            };
            deepest = deepest.max(depth);
        }
        deepest
    }

    fn fragment(&mut self, name: &'a Name) -> usize {
        if let Some(depth) = self.known.get(name) {
            return *depth;
        }
        if self.visiting.contains(&name) {
            return 0;
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return 0;
        };
        self.visiting.push(name);
        let depth = self.of(&fragment.node.selection_set);
        self.visiting.pop();
        self.known.insert(name, depth);
        depth
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;
    use crate::error::QueryError;

    fn depth_of(query: &str) -> usize {
        depth(&parse_query(query).unwrap())
    }

    #[test]
    fn depth_counts_nested_fields_through_fragments() {
        assert_eq!(depth_of("{ a }"), 1);
        assert_eq!(depth_of("{ a { b { c } } d }"), 3);
        assert_eq!(
            depth_of("query { a { ...F } } fragment F on T { b { ... on T { c } } }"),
            3
        );
    }

    fn introspection_of(query: &str) -> Option<String> {
        Introspection::of(&parse_query(query).unwrap()).refusal()
    }

    #[test]
    fn introspection_is_limited_in_roots_list_nesting_and_aliases() {
        // GraphiQL's shape passes: types → fields → args, type → ofType chains.
        let graphiql = "{ __schema { types { ...T } directives { name args { ...V } } } } \
            fragment T on __Type { name fields { name args { ...V } type { ...R } } \
            inputFields { ...V } interfaces { ...R } enumValues { name } possibleTypes { ...R } } \
            fragment V on __InputValue { name type { ...R } } \
            fragment R on __Type { kind name ofType { kind name ofType { kind name } } }";
        assert_eq!(introspection_of(graphiql), None);
        let cost = Introspection::of(&parse_query(graphiql).unwrap()).cost;
        assert!(
            (10_000..MAX_INTROSPECTION_COST / 2).contains(&cost),
            "{cost}"
        );
        assert_eq!(
            introspection_of("{ a: __type(name: \"A\") { name } b: __type(name: \"B\") { name } }"),
            None
        );
        // A fourth list inside the others, also through a fragment.
        let deep = "{ __type(name: \"Order\") { fields { type { fields { type { fields { \
            type { fields { name } } } } } } } } }";
        assert!(introspection_of(deep).unwrap().contains("lists 4 deep"));
        let via_fragment = "{ __schema { types { ...F } } } \
            fragment F on __Type { fields { type { fields { type { fields { name } } } } } }";
        assert!(introspection_of(via_fragment)
            .unwrap()
            .contains("lists 4 deep"));
        // Repeated under aliases inside, or at the root past the cap (spreads count).
        assert!(introspection_of(
            "{ __schema { types { a: fields { name } b: fields { name } } } }"
        )
        .unwrap()
        .contains("aliases"));
        let mut many = String::from("{ ...F ...F } fragment F on Query {");
        for i in 0..6 {
            many.push_str(&format!(" s{i}: __schema {{ queryType {{ name }} }}"));
        }
        many.push_str(" }");
        assert!(introspection_of(&many).unwrap().contains("12 times"));
        // The same work asked for many times, without aliases.
        let mut repeated = String::from("{ __schema { types {");
        repeated.push_str(&" ...X".repeat(200));
        repeated.push_str(" } } } fragment X on __Type { fields { type { fields { name } } } }");
        assert!(introspection_of(&repeated).unwrap().contains("resolutions"));
        let mut repeated = String::from("{ __schema { types { fields {");
        repeated.push_str(&" args { name }".repeat(300));
        repeated.push_str(" } } } }");
        assert!(introspection_of(&repeated).unwrap().contains("resolutions"));
        // Our own fields named like introspection's lists are not introspection.
        assert_eq!(
            introspection_of("{ a: types { b: fields { c: args { d: types { e } } } } }"),
            None
        );
    }

    #[test]
    fn kept_documents_stay_within_their_memory_budget() {
        // Five bytes of text per node: the parse is far larger than the text.
        let spreads = "...F ".repeat(3_000);
        let mut kept = KeptDocuments {
            documents: LruCache::new(NonZeroUsize::new(DOCUMENTS).unwrap()),
            bytes: 0,
        };
        for i in 0..100 {
            let query = format!("{{ {spreads} }} fragment F on Query {{ __typename }} # {i}");
            let document = Arc::new(parse_query(&query).unwrap());
            assert!(kept_bytes(&query, &document) > 3_000 * 256);
            kept.put(query, document);
            assert!(kept.bytes <= KEPT_BYTES);
        }
        assert!(kept.documents.len() < 50, "{}", kept.documents.len());
        let sum: usize = kept.documents.iter().map(|(_, (_, bytes))| bytes).sum();
        assert_eq!(kept.bytes, sum);
        // Small documents fill the count, the large ones going first.
        for i in 0..DOCUMENTS {
            let query = format!("{{ a{i} }}");
            let document = Arc::new(parse_query(&query).unwrap());
            kept.put(query, document);
        }
        assert_eq!(kept.documents.len(), DOCUMENTS);
        assert!(kept.get("{ a0 }").is_some());
        assert!(kept
            .documents
            .iter()
            .all(|(query, _)| !query.contains("...F")));
        let sum: usize = kept.documents.iter().map(|(_, (_, bytes))| bytes).sum();
        assert_eq!(kept.bytes, sum);
    }

    #[test]
    fn fragment_chains_are_measured_without_recursing_through_them() {
        let chain = |n: usize| {
            let mut query = String::from("{ ...F0 }");
            for i in 0..n {
                query.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
            }
            query.push_str(&format!(" fragment F{n} on Query {{ a }}"));
            spread_chain(&parse_query(&query).unwrap())
        };
        assert_eq!(chain(0), 1);
        assert_eq!(chain(3), 4);
        // Deeper than any recursion would survive.
        assert_eq!(chain(200_000), 200_001);
        // Fragments no operation spreads count too.
        let unused =
            "{ a } fragment A on Q { ...B } fragment B on Q { ...C } fragment C on Q { c }";
        assert_eq!(spread_chain(&parse_query(unused).unwrap()), 3);
        let cycle = "{ ...A } fragment A on Q { a { ...B } } fragment B on Q { ...A }";
        assert_eq!(spread_chain(&parse_query(cycle).unwrap()), usize::MAX);
        let diamond = "{ ...A ...B } fragment A on Q { ...C } fragment B on Q { x { ...C } } \
                       fragment C on Q { c }";
        assert_eq!(spread_chain(&parse_query(diamond).unwrap()), 2);
    }

    #[test]
    fn introspection_fields_do_not_count() {
        assert_eq!(
            depth_of("{ __schema { types { fields { type { ofType { ofType { name } } } } } } }"),
            0
        );
        assert_eq!(depth_of("{ a { __typename } }"), 1);
    }

    #[test]
    fn a_directive_repeated_in_one_place_is_found_anywhere() {
        let repeated =
            |query: &str| repeated_directive(&async_graphql::parser::parse_query(query).unwrap());
        assert_eq!(repeated("{ a @skip(if: false) b @skip(if: true) }"), None);
        assert_eq!(repeated("{ a @skip(if: false) @include(if: true) }"), None);
        assert_eq!(
            repeated("{ a { b @skip(if: false) @skip(if: true) } }"),
            Some("skip".into())
        );
        assert_eq!(
            repeated(
                "{ ...F } fragment F on Query { ... @include(if: true) @include(if: true) { a } }"
            ),
            Some("include".into())
        );
    }

    #[test]
    fn fragment_cycles_and_fan_out_terminate() {
        assert_eq!(
            depth_of("{ ...A } fragment A on Q { a { ...B } } fragment B on Q { b { ...A } }"),
            2
        );
        let mut query = String::from("{ ...F0 }");
        for i in 0..40 {
            query.push_str(&format!(
                " fragment F{i} on Q {{ x {{ ...F{n} ...F{n} }} }}",
                n = i + 1
            ));
        }
        query.push_str(" fragment F40 on Q { y }");
        assert_eq!(depth_of(&query), 41);
    }

    #[test]
    fn brackets_are_counted_outside_strings_and_comments() {
        assert_eq!(bracket_nesting("{ a(x: [[1]]) { b } }"), 4);
        assert_eq!(bracket_nesting("{ a(s: \"[[[[\\\"{{\") } # [[[[\n"), 2);
        let deep = format!("{{ a(x: {}1{}) }}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(bracket_nesting(&deep), 5002);
        // Block strings: a lone quote inside does not open a string, an escaped triple
        // quote does not close one, brackets inside do not count.
        assert_eq!(bracket_nesting(r#"{ a(s: """ " """, x: [[1]]) }"#), 4);
        assert_eq!(bracket_nesting(r#"{ a(s: """ \""" [[[ """, x: [1]) }"#), 3);
        assert_eq!(bracket_nesting(r#"{ a(s: """ [[[ """) }"#), 2);
        // An unclosed block string is an empty string and a string that ends at the line.
        assert_eq!(bracket_nesting("{ a(s: \"\"\"\n[[[1]]]) }"), 5);
        // A comment ends at a carriage return too; a string does not go past a line end.
        assert_eq!(bracket_nesting("{ a # note\r(x: [[1]]) }"), 4);
        assert_eq!(bracket_nesting("{ a(s: \"open\n[[[1]]]) }"), 5);
        assert_eq!(bracket_nesting("{ a(s: \"\\\"[[\") }"), 2);
    }

    #[test]
    fn fragment_fan_out_is_sized_without_expanding_it() {
        let mut query = String::from("{ ...F0 }");
        for i in 0..40 {
            query.push_str(&format!(
                " fragment F{i} on Q {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        query.push_str(" fragment F40 on Q { __typename }");
        // Each level: the two spreads plus what they expand to.
        assert_eq!(
            expanded_size(&parse_query(&query).unwrap()),
            Some(3 * (1u64 << 40) - 1)
        );
        assert_eq!(
            expanded_size(&parse_query("{ a { b c } d }").unwrap()),
            Some(4)
        );
        assert_eq!(
            expanded_size(&parse_query("{ ...A } fragment A on Q { ...A ...A }").unwrap()),
            None
        );
    }

    #[test]
    fn resolver_errors_keep_their_code() {
        let err: async_graphql::Error = QueryError::bad_input("nope").into();
        let mut server = err.into_server_error(async_graphql::Pos::default());
        finish(std::slice::from_mut(&mut server));
        assert_eq!(code_of(&server), Some(code::BAD_USER_INPUT));
    }
}
