//! Limits on the GraphQL document itself, for every transport: its size and bracket nesting
//! (checked before parsing), its field depth, aliases and directives (after), and a code for
//! async-graphql's own complexity limit so clients can tell the limits apart.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Positioned, ServerError, ServerResult, ValidationResult, Variables};

/// Brackets of any kind open at once. Far above what a depth-limited query needs, far below
/// what could exhaust the parser's stack.
const MAX_NESTING: usize = 64;

#[derive(Debug, Clone)]
pub struct DocumentLimits {
    /// Field nesting outside introspection; `0`: none.
    pub max_depth: usize,
    pub max_document_bytes: usize,
    pub max_aliases: usize,
    pub max_directives: usize,
    pub introspection: bool,
    /// Documents already parsed and found within these limits.
    pub parsed: Arc<ParsedDocuments>,
}

/// Queries most recently parsed, by their text. Clients send the same few documents over and
/// over (a page's queries, a checkout's mutation): cloning the parsed document costs a fraction
/// of parsing it again. Only documents that passed every limit are kept, so a hit needs no
/// checks. Bounded in entries and in each entry's size; when full it starts over, which an
/// attacker sending endless new documents can only keep empty, not grow.
#[derive(Debug, Default)]
pub struct ParsedDocuments {
    entries: std::sync::Mutex<HashMap<Box<str>, ExecutableDocument>>,
}

impl ParsedDocuments {
    const MAX_ENTRIES: usize = 256;
    const MAX_QUERY_BYTES: usize = 4096;

    fn get(&self, query: &str) -> Option<ExecutableDocument> {
        self.lock().get(query).cloned()
    }

    fn keep(&self, query: &str, document: &ExecutableDocument) {
        if query.len() > Self::MAX_QUERY_BYTES {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(query.into(), document.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, ExecutableDocument>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

pub fn limit_error(code: &'static str, message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    error
}

/// The checks on a document's text that come before anything parses it, in this order: its
/// size (`max_document_bytes`, `0`: none), then its bracket nesting. Whatever reads a
/// document outside the schema (the WebSocket's look at subscriptions it may share) runs them
/// first too.
pub fn check_text(query: &str, max_document_bytes: usize) -> ServerResult<()> {
    if max_document_bytes > 0 && query.len() > max_document_bytes {
        return Err(limit_error(
            "DOCUMENT_TOO_LARGE",
            format!(
                "the query is {} bytes; the limit is {max_document_bytes}",
                query.len()
            ),
        ));
    }
    if nesting(query) > MAX_NESTING {
        return Err(limit_error(
            "QUERY_TOO_DEEP",
            format!("the query nests brackets more than {MAX_NESTING} deep"),
        ));
    }
    Ok(())
}

/// The deepest bracket nesting outside strings and comments.
fn nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'(' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                // A block string ends at the next `"""` not escaped as `\"""`.
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

#[derive(Default)]
struct Counts {
    aliases: usize,
    directives: usize,
    /// `__schema` or `__type` fields.
    introspection: usize,
}

fn count_selection_set(set: &Positioned<SelectionSet>, counts: &mut Counts) {
    for selection in &set.node.items {
        counts.directives += selection.node.directives().len();
        match &selection.node {
            Selection::Field(field) => {
                counts.aliases += usize::from(field.node.alias.is_some());
                let name = field.node.name.node.as_str();
                counts.introspection += usize::from(is_introspection(name));
                count_selection_set(&field.node.selection_set, counts);
            }
            Selection::InlineFragment(fragment) => {
                count_selection_set(&fragment.node.selection_set, counts);
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}

fn is_introspection(name: &str) -> bool {
    name == "__schema" || name == "__type"
}

/// The deepest field nesting of a selection set, following fragments (each measured once, so
/// fragments spread many times cannot make this slow) and not counting introspection, which
/// tools such as GraphiQL send nested deeper than any real query.
fn depth(
    document: &ExecutableDocument,
    set: &SelectionSet,
    fragments: &mut HashMap<Name, usize>,
) -> usize {
    set.items
        .iter()
        .map(|selection| match &selection.node {
            Selection::Field(field) if is_introspection(&field.node.name.node) => 0,
            Selection::Field(field) => {
                1 + depth(document, &field.node.selection_set.node, fragments)
            }
            Selection::InlineFragment(fragment) => {
                depth(document, &fragment.node.selection_set.node, fragments)
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if let Some(known) = fragments.get(name) {
                    return *known;
                }
                // A cycle (already refused by the parser's recursion check) counts as flat.
                fragments.insert(name.clone(), 0);
                let measured = document.fragments.get(name).map_or(0, |fragment| {
                    depth(document, &fragment.node.selection_set.node, fragments)
                });
                fragments.insert(name.clone(), measured);
                measured
            }
        })
        .max()
        .unwrap_or(0)
}

fn max_depth(document: &ExecutableDocument) -> usize {
    let mut fragments = HashMap::new();
    document
        .operations
        .iter()
        .map(|(_, operation)| depth(document, &operation.node.selection_set.node, &mut fragments))
        .max()
        .unwrap_or(0)
}

fn count(document: &ExecutableDocument) -> Counts {
    let mut counts = Counts::default();
    for (_, operation) in document.operations.iter() {
        counts.directives += operation.node.directives.len();
        for variable in &operation.node.variable_definitions {
            counts.directives += variable.node.directives.len();
        }
        count_selection_set(&operation.node.selection_set, &mut counts);
    }
    for fragment in document.fragments.values() {
        counts.directives += fragment.node.directives.len();
        count_selection_set(&fragment.node.selection_set, &mut counts);
    }
    counts
}

#[async_graphql::async_trait::async_trait]
impl Extension for DocumentLimits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(document) = self.parsed.get(query) {
            return Ok(document);
        }
        check_text(query, self.max_document_bytes)?;
        let document = next.run(ctx, query, variables).await.map_err(|error| {
            if error
                .message
                .starts_with("The recursion depth of the query")
            {
                limit_error("QUERY_TOO_DEEP", error.message)
            } else {
                error
            }
        })?;
        if self.max_depth > 0 {
            let depth = max_depth(&document);
            if depth > self.max_depth {
                return Err(limit_error(
                    "QUERY_TOO_DEEP",
                    format!(
                        "the query nests fields {depth} deep; the limit is {}",
                        self.max_depth
                    ),
                ));
            }
        }
        let counts = count(&document);
        // With introspection off async-graphql answers `__schema` with null; say why instead.
        if !self.introspection && counts.introspection > 0 {
            return Err(limit_error(
                "INTROSPECTION_DISABLED",
                "introspection is disabled on this server",
            ));
        }
        if self.max_aliases > 0 && counts.aliases > self.max_aliases {
            return Err(limit_error(
                "TOO_MANY_ALIASES",
                format!(
                    "the query uses {} aliases; the limit is {}",
                    counts.aliases, self.max_aliases
                ),
            ));
        }
        if self.max_directives > 0 && counts.directives > self.max_directives {
            return Err(limit_error(
                "TOO_MANY_DIRECTIVES",
                format!(
                    "the query uses {} directives; the limit is {}",
                    counts.directives, self.max_directives
                ),
            ));
        }
        self.parsed.keep(query, &document);
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|error| {
                    let code = match error.message.as_str() {
                        "Query is too complex." => "QUERY_TOO_COMPLEX",
                        _ => return error,
                    };
                    let message = error.message.clone();
                    limit_error(code, message)
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{ParsedDocuments, nesting};

    #[test]
    fn parsed_documents_stay_bounded() {
        let parsed = ParsedDocuments::default();
        let document = async_graphql::parser::parse_query("{ a }").unwrap();
        parsed.keep("{ a }", &document);
        assert!(parsed.get("{ a }").is_some());
        assert!(parsed.get("{ b }").is_none());
        let huge = format!("{{ a }}{}", " ".repeat(ParsedDocuments::MAX_QUERY_BYTES));
        parsed.keep(&huge, &document);
        assert!(parsed.get(&huge).is_none(), "an oversized query was kept");
        for i in 0..ParsedDocuments::MAX_ENTRIES * 3 {
            parsed.keep(&format!("{{ a{i} }}"), &document);
            assert!(parsed.lock().len() <= ParsedDocuments::MAX_ENTRIES);
        }
    }

    #[test]
    fn nesting_ignores_brackets_in_strings_and_comments() {
        assert_eq!(nesting("{ a { b } }"), 2);
        assert_eq!(nesting(r#"{ a(s: "{{{{\"{{") { b { c } } }"#), 3);
        assert_eq!(nesting("# {{{{{{\n{ a }"), 1);
        assert_eq!(nesting(r#"{ a(s: """ {{{{ " \""" {{ """) }"#), 2);
        assert_eq!(nesting(r#"{ a(s: """a"b""") { b { c } } }"#), 3);
        assert_eq!(nesting(&"{".repeat(10_000)), 10_000);
    }
}
