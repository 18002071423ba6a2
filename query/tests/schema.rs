//! The committed `query/schema.graphql` is the schema the code serves.

use std::path::Path;

#[test]
fn the_committed_schema_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let current = orderflow_query::schema_sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current).expect("schema.graphql written");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "query/schema.graphql is out of date with the code; regenerate it with\n\n    \
         UPDATE_SCHEMA=1 cargo test -p orderflow-query --test schema\n\nand commit the result"
    );
}
