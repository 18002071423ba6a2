//! The GraphiQL playground, served entirely by this binary so it works with no internet:
//! a small page of ours plus GraphiQL, React and ReactDOM as published on the npm registry
//! (versions and licences in `query/assets/README.md`), embedded at build time.
//!
//! Asset paths carry the package version, so they are cached as immutable; the page
//! itself is revalidated, so an upgrade is picked up at once.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::startup::{GRAPHQL_PATH, WS_PATH};

/// Prefix of every playground asset.
pub const ASSETS_PATH: &str = "/playground";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const GRAPHIQL_JS: Asset = Asset {
    path: "/playground/graphiql-3.9.0.min.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../assets/graphiql.min.js"),
};

const GRAPHIQL_CSS: Asset = Asset {
    path: "/playground/graphiql-3.9.0.min.css",
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../assets/graphiql.min.css"),
};

const REACT_JS: Asset = Asset {
    path: "/playground/react-18.3.1.production.min.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../assets/react.production.min.js"),
};

const REACT_DOM_JS: Asset = Asset {
    path: "/playground/react-dom-18.3.1.production.min.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../assets/react-dom.production.min.js"),
};

const ASSETS: [&Asset; 4] = [&GRAPHIQL_JS, &GRAPHIQL_CSS, &REACT_JS, &REACT_DOM_JS];

/// The asset routes.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let (content_type, body) = (asset.content_type, asset.body);
        router.route(
            asset.path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    ],
                    body,
                )
            }),
        )
    })
}

/// The playground page, pointed at this service's endpoints on whatever host served it.
pub(crate) fn page() -> Response {
    let html = format!(
        r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>orderflow GraphQL</title>
  <link rel="stylesheet" href="{css}">
  <style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
  <div id="graphiql">Loading the playground&hellip;</div>
  <script src="{react}"></script>
  <script src="{react_dom}"></script>
  <script src="{graphiql}"></script>
  <script>
    const http = new URL("{graphql}", window.location.href);
    const ws = new URL("{ws}", window.location.href);
    ws.protocol = http.protocol === "https:" ? "wss:" : "ws:";
    // A token given as /#token=<JWT> is kept (and taken off the address bar); the headers
    // tab holds it for queries, connection_init carries it for subscriptions.
    const given = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (given) {{
      try {{ localStorage.setItem("orderflow.token", decodeURIComponent(given[1])); }} catch {{}}
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }}
    let token = null;
    try {{ token = localStorage.getItem("orderflow.token"); }} catch {{}}
    const authorization = "Bearer " + (token || "<paste a token from orderflow dev or orderflow token>");
    const fetcher = GraphiQL.createFetcher({{
      url: http.href,
      subscriptionUrl: ws.href,
      wsConnectionParams: token ? {{ authorization }} : {{}},
    }});
    const example = "# orderflow's read side: orders, users and products.\n" +
      "# Ctrl-Enter runs the query; the Docs button lists the schema.\n" +
      "{{\n  orders(first: 5) {{\n    totalCount\n    nodes {{ id status total {{ formatted }} user {{ name }} }}\n  }}\n}}\n";
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, {{
        fetcher,
        defaultQuery: example,
        defaultHeaders: JSON.stringify({{ Authorization: authorization }}, null, 2),
        defaultEditorToolsVisibility: token ? false : "headers",
      }})
    );
  </script>
</body>
</html>
"##,
        css = GRAPHIQL_CSS.path,
        react = REACT_JS.path,
        react_dom = REACT_DOM_JS.path,
        graphiql = GRAPHIQL_JS.path,
        graphql = GRAPHQL_PATH,
        ws = WS_PATH,
    );
    let mut response = Html(html).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_lives_under_the_playground_prefix_and_is_not_empty() {
        for asset in ASSETS {
            assert!(asset.path.starts_with(ASSETS_PATH), "{}", asset.path);
            assert!(asset.body.len() > 1000, "{}", asset.path);
        }
    }
}
