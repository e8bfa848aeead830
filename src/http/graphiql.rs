//! GraphiQL, served entirely from this binary: the server may run where browsers
//! cannot reach a CDN, so every script and stylesheet is vendored under
//! `assets/graphiql/` (see `scripts/vendor-graphiql.sh`) and embedded at compile time.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// The page only loads same-origin files (its Content-Security-Policy says so too). `subscriptionUrl` makes GraphiQL's bundled
/// graphql-ws client send the headers-editor contents (e.g. `Authorization`) as the
/// `connection_init` payload, so subscriptions authenticate like queries do.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Evently GraphiQL</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/graphiql/graphiql.min.css">
  <style>html, body, #graphiql { height: 100%; margin: 0; overflow: hidden; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="/graphiql/react.production.min.js"></script>
  <script src="/graphiql/react-dom.production.min.js"></script>
  <script src="/graphiql/graphiql.min.js"></script>
  <script src="/graphiql/evently-graphiql.js"></script>
</body>
</html>
"#;

/// The page's own script, served as a file so the Content-Security-Policy can forbid inline
/// scripts.
const PAGE_SCRIPT: &str = r#"const wsProtocol = location.protocol === "https:" ? "wss:" : "ws:";
const fetcher = GraphiQL.createFetcher({
  url: "/graphql",
  subscriptionUrl: `${wsProtocol}//${location.host}/graphql/ws`,
});
ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: "{\n  events(first: 5) {\n    edges {\n      node {\n        id\n        title\n        seatsAvailable\n      }\n    }\n  }\n}\n",
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: true,
  }),
);
"#;

/// Everything the page needs comes from this server; inline styles are GraphiQL's own.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// File names are not content-hashed, so a day bounds how long a browser keeps an
/// old copy after the vendored versions change.
const CACHE_CONTROL: &str = "public, max-age=86400";

/// GET /graphql (browser): the GraphiQL page.
pub async fn graphiql_page() -> impl IntoResponse {
    ([(header::CONTENT_SECURITY_POLICY, PAGE_CSP)], Html(PAGE))
}

/// GET /graphiql/{file}: one vendored asset, 404 for anything else.
pub async fn graphiql_asset(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "evently-graphiql.js" => (PAGE_SCRIPT.as_bytes(), JS),
        "graphiql.min.js" => (include_bytes!("../../assets/graphiql/graphiql.min.js"), JS),
        "graphiql.min.css" => (
            include_bytes!("../../assets/graphiql/graphiql.min.css"),
            CSS,
        ),
        "react.production.min.js" => (
            include_bytes!("../../assets/graphiql/react.production.min.js"),
            JS,
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
            JS,
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, CACHE_CONTROL),
        ],
        body,
    )
        .into_response()
}
