//! GraphQL over HTTP as the specification says (the "watershed" draft, judged by the npm
//! `graphql-http` package's audits, run by `tests/api/graphql_over_http.rs`): how a request is
//! read from a POST body or a GET URL, which media type an answer takes, and which status.
//!
//! This module owns the wire rules only; running the operation, the request budget and the
//! response cache stay in `http::mod`.
//!
//! - **Requests.** POST needs `Content-Type: application/json` (anything else, or none: 415);
//!   GET carries `query`, `operationName`, `variables` and `extensions` in the URL, the last
//!   two as JSON, and runs queries only (anything else: 405 with `Allow: POST`, so a link
//!   cannot make a browser book seats).
//! - **Media types.** `application/graphql-response+json` when the client lists it at least as
//!   high as `application/json`; `application/json` otherwise, including for `*/*` and for no
//!   `Accept` at all, which is what older clients and proxies understand.
//! - **Status.** With `application/json` every well-formed request gets 200, errors in the
//!   body, as before. With `application/graphql-response+json` a request that never reached
//!   execution (it did not parse, validate, or its variables did not fit) gets 400 and no
//!   `data` entry: there was no execution to report on.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{BatchRequest, BatchResponse};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error_response;

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
pub const JSON: &str = "application/json";

/// The media type an answer is written in, chosen from the request's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `application/json`: 200 for every well-formed request, errors in the body.
    Json,
    /// `application/graphql-response+json`: status codes that say whether anything ran.
    GraphqlResponseJson,
}

/// The media ranges of an `Accept` value with their weights (`q`, 1 when not given).
fn media_ranges(accept: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    accept.split(',').filter_map(|range| {
        let mut parts = range.split(';');
        let media = parts.next()?.trim().to_ascii_lowercase();
        if media.is_empty() {
            return None;
        }
        let q = parts
            .filter_map(|param| param.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        Some((media, q))
    })
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

impl Answer {
    /// The spec's choice: the new media type only when asked for by name, at least as much as
    /// plain JSON; wildcards and a missing `Accept` mean `application/json`. A client that
    /// accepts neither still gets JSON rather than a 406 (the spec allows both).
    pub fn negotiate(headers: &HeaderMap) -> Self {
        let Some(accept) = accept(headers) else {
            return Self::Json;
        };
        let (mut graphql_response, mut json) = (0.0f32, 0.0f32);
        for (media, q) in media_ranges(accept) {
            match media.as_str() {
                GRAPHQL_RESPONSE_JSON => graphql_response = graphql_response.max(q),
                JSON | "application/*" | "*/*" => json = json.max(q),
                _ => {}
            }
        }
        if graphql_response > 0.0 && graphql_response >= json {
            Self::GraphqlResponseJson
        } else {
            Self::Json
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => JSON,
            Self::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
        }
    }

    /// Writes a GraphQL answer in this media type with the status it calls for. A batch (not
    /// in the spec) answers 200 whatever its parts say, each part without `data` when it
    /// never ran, as a single request would.
    ///
    /// The answer is serialised straight from async-graphql's values into the body, fields in
    /// the order the query asked for them, as the spec says: building a `serde_json::Value` of
    /// it first cost a second allocation of every key and value of every answer.
    pub fn write(self, response: BatchResponse) -> Response {
        let headers = response.http_headers();
        let (status, body) = match &response {
            BatchResponse::Single(single) => {
                let status = match self {
                    Self::GraphqlResponseJson if never_ran(single) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::OK,
                };
                (status, serde_json::to_vec(&self.body(single)))
            }
            BatchResponse::Batch(all) => (
                StatusCode::OK,
                serde_json::to_vec(
                    &all.iter()
                        .map(|single| self.body(single))
                        .collect::<Vec<_>>(),
                ),
            ),
        };
        let mut response = match body {
            Ok(body) => (status, body).into_response(),
            // Only a map with non-string keys fails to serialise; async-graphql has none.
            Err(_) => return super::internal_error_response(),
        };
        response.headers_mut().extend(headers);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        response
    }

    fn body(self, response: &async_graphql::Response) -> Body<'_> {
        let without_data = self == Self::GraphqlResponseJson && never_ran(response);
        Body {
            data: (!without_data).then_some(&response.data),
            extensions: &response.extensions,
            errors: &response.errors,
        }
    }
}

/// One answer as written: async-graphql's `Response` but for `data`, left out when the
/// request never ran and the media type says so.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
}

/// Whether a response reports a request that failed before execution: no data, and errors
/// none of which has a path (a field's error always has one, even when it nulls `data`).
pub fn never_ran(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty())
}

/// Whether a GET is a person opening the API in a browser rather than a client asking for
/// data: the browser says it wants HTML, or nothing at all is asked (no query string) and
/// no JSON media type is named.
pub fn shows_graphiql(headers: &HeaderMap, raw_query: Option<&str>) -> bool {
    let ranges: Vec<_> = accept(headers)
        .map(media_ranges)
        .into_iter()
        .flatten()
        .collect();
    let wants = |wanted: &str| ranges.iter().any(|(media, q)| media == wanted && *q > 0.0);
    if wants("text/html") {
        return true;
    }
    raw_query.is_none_or(str::is_empty) && !wants(JSON) && !wants(GRAPHQL_RESPONSE_JSON)
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

/// Reads a POST body: JSON only, one request or a batch (a non-empty array of them).
#[allow(clippy::result_large_err)]
pub fn read_post(headers: &HeaderMap, body: &Bytes) -> Result<BatchRequest, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some(JSON) {
        let mut refusal = error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "a GraphQL POST must have `Content-Type: application/json`",
        );
        refusal
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static(JSON));
        return Err(refusal);
    }
    if body.is_empty() {
        return Err(bad_request("the request body is empty"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(&format!("the request is not a valid GraphQL request: {e}")))?;
    match value {
        Value::Object(fields) => Ok(BatchRequest::Single(request_from(fields)?)),
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|item| match item {
                Value::Object(fields) => request_from(fields),
                _ => Err(bad_request("each request of a batch must be a JSON object")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(BatchRequest::Batch),
        _ => Err(bad_request(
            "the request body must be a JSON object, or a non-empty array of them",
        )),
    }
}

/// One request from its JSON parameters, each checked for its type: `query` a string
/// (absent only when a persisted query stands for it), `operationName` a string,
/// `variables` and `extensions` maps; `null` counts as absent.
#[allow(clippy::result_large_err)]
fn request_from(mut fields: Map<String, Value>) -> Result<async_graphql::Request, Response> {
    fields.retain(|_, value| !value.is_null());
    let kinds = [
        ("query", "a string", Value::is_string as fn(&Value) -> bool),
        ("operationName", "a string", Value::is_string),
        ("variables", "a map", Value::is_object),
        ("extensions", "a map", Value::is_object),
    ];
    for (name, kind, fits) in kinds {
        if fields.get(name).is_some_and(|value| !fits(value)) {
            return Err(bad_request(&format!("`{name}` must be {kind}")));
        }
    }
    let persisted = fields
        .get("extensions")
        .is_some_and(|extensions| extensions.get("persistedQuery").is_some());
    if !fields.contains_key("query") && !persisted {
        return Err(bad_request("the request has no `query`"));
    }
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| bad_request(&format!("the request is not a valid GraphQL request: {e}")))
}

/// Reads a GET's URL parameters into the same JSON parameters a POST sends, so both are
/// checked alike: `variables` and `extensions` are JSON text in the URL.
#[allow(clippy::result_large_err)]
pub fn read_get(raw_query: Option<&str>) -> Result<async_graphql::Request, Response> {
    let mut fields = Map::new();
    for (name, value) in form_pairs(raw_query.unwrap_or_default()) {
        let value = match name.as_str() {
            "query" | "operationName" => Value::String(value),
            "variables" | "extensions" => serde_json::from_str(&value)
                .map_err(|e| bad_request(&format!("`{name}` is not URL-encoded JSON: {e}")))?,
            _ => continue,
        };
        fields.insert(name, value);
    }
    request_from(fields)
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded, `+` as a space.
fn form_pairs(raw: &str) -> impl Iterator<Item = (String, String)> + '_ {
    raw.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The operation a document runs given `operationName`, if it parses and names one.
fn selected<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a async_graphql::parser::types::OperationDefinition> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, operation)| &operation.node),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|operation| &operation.node)
        }
        _ => None,
    }
}

/// Whether a GET may run this document: only a query. A document that does not parse or
/// select an operation is let through, so execution reports why as it would for a POST.
pub fn runs_over_get(query: &str, operation_name: Option<&str>) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return true;
    };
    selected(&document, operation_name).is_none_or(|op| op.ty == OperationType::Query)
}

/// Whether the document's selected operation is a mutation (a GET event stream may carry a
/// subscription, never a mutation).
pub fn is_mutation(query: &str, operation_name: Option<&str>) -> bool {
    async_graphql::parser::parse_query(query).is_ok_and(|document| {
        selected(&document, operation_name).is_some_and(|op| op.ty == OperationType::Mutation)
    })
}

/// 405 for a mutation or subscription sent by GET.
pub fn method_not_allowed() -> Response {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "only queries may be sent with GET; send mutations and subscriptions with POST",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Root fields whose answer is the same for every anonymous caller and says nothing about
/// anyone: what browsing the catalogue reads. Anything else (`me`, `my…`, a hold, an event's
/// bookings, …) is per user, and its answer is never shared.
const PUBLIC_ROOT_FIELDS: &[&str] = &["events", "event", "venue", "venues", "__typename"];

/// Whether the selected operation of a document only reads public root fields (through
/// fragments too). A document that does not parse is not public.
pub fn reads_only_public_fields(query: &str, operation_name: Option<&str>) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    let Some(operation) = selected(&document, operation_name) else {
        return false;
    };
    operation.ty == OperationType::Query
        && public_selection(&document, &operation.selection_set.node, 0)
}

fn public_selection(document: &ExecutableDocument, set: &SelectionSet, depth: usize) -> bool {
    // Fragments spreading each other in a cycle fail validation; the bound only keeps this
    // walk finite before validation has run.
    depth < 32
        && set.items.iter().all(|item| match &item.node {
            Selection::Field(field) => PUBLIC_ROOT_FIELDS.contains(&field.node.name.node.as_str()),
            Selection::InlineFragment(fragment) => {
                public_selection(document, &fragment.node.selection_set.node, depth + 1)
            }
            Selection::FragmentSpread(spread) => document
                .fragments
                .get(&spread.node.fragment_name.node)
                .is_some_and(|fragment| {
                    public_selection(document, &fragment.node.selection_set.node, depth + 1)
                }),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_new_media_type_is_only_given_to_clients_that_name_it() {
        use Answer::*;
        assert_eq!(Answer::negotiate(&HeaderMap::new()), Json);
        assert_eq!(Answer::negotiate(&accepting("*/*")), Json);
        assert_eq!(Answer::negotiate(&accepting("application/json")), Json);
        assert_eq!(
            Answer::negotiate(&accepting(
                "application/graphql-response+json,application/json;q=0.9"
            )),
            GraphqlResponseJson
        );
        assert_eq!(
            Answer::negotiate(&accepting(
                "application/json, application/graphql-response+json;q=0.5"
            )),
            Json
        );
        assert_eq!(
            Answer::negotiate(&accepting("application/graphql-response+json")),
            GraphqlResponseJson
        );
    }

    #[test]
    fn graphiql_is_for_browsers_and_bare_urls() {
        let browser = accepting("text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(shows_graphiql(&browser, Some("query=%7B__typename%7D")));
        assert!(shows_graphiql(&HeaderMap::new(), None));
        assert!(!shows_graphiql(&accepting("*/*"), Some("query=x")));
        assert!(!shows_graphiql(&accepting("application/json"), None));
    }

    #[test]
    fn get_parameters_are_percent_decoded_json() {
        let request = read_get(Some(
            "query=query(%24id%3A+ID!)%7B+event(id%3A%24id)%7Bid%7D%7D&variables=%7B%22id%22%3A%221%22%7D",
        ))
        .unwrap();
        assert_eq!(request.query, "query($id: ID!){ event(id:$id){id}}");
        assert!(read_get(Some("variables=%7B%7D")).is_err(), "no query");
        assert!(
            read_get(Some("query=x&variables=%5B%5D")).is_err(),
            "an array"
        );
    }

    #[test]
    fn only_queries_run_over_get_and_only_catalogue_reads_are_public() {
        assert!(runs_over_get("{ events { edges { cursor } } }", None));
        assert!(!runs_over_get("mutation { logout }", None));
        assert!(!runs_over_get(
            "query A { me { id } } subscription B { x }",
            Some("B")
        ));
        assert!(reads_only_public_fields(
            "query { ...F } fragment F on Query { events { edges { cursor } } }",
            None
        ));
        assert!(!reads_only_public_fields(
            "{ events { edges { cursor } } me { id } }",
            None
        ));
        assert!(!reads_only_public_fields(
            "query { ... on Query { myBookings { edges { cursor } } } }",
            None
        ));
    }
}
