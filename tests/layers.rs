//! The layering of `src/`, read from the source text: every module's imports of other modules
//! of this crate (`use crate::…`, `use super::…`, `use self::…`, a child module by name, brace
//! lists over several lines, and paths written out in code such as `crate::realtime::Bus`),
//! printed as `module -> module` edges (`cargo test --test layers -- --nocapture`).
//!
//! What it holds the code to (issue 12):
//! - no cycle among the modules of `src/domain`: they import only downward;
//! - no edge between `domain` and `realtime`, either way: the domain returns what it changed
//!   and one place publishes it;
//! - no file in `src/` over 600 lines unless its module doc (`//!`) says why it is one piece,
//!   with the words "past 600 lines".
//!
//! A module is a file: `src/domain/events.rs` is `domain::events`, `src/realtime/mod.rs` is
//! `realtime`, `src/lib.rs` is `crate`. An import names the longest module its path reaches, so
//! `use crate::domain::{events::find_event, holds}` gives edges to `domain::events` and
//! `domain::holds`. Inline `mod tests { use super::*; }` is the file itself, not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file's size past which its module doc must say why it is one piece.
const MAX_LINES: usize = 600;
const REASON_WORDS: &str = "past 600 lines";

struct SourceFile {
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn module_name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

fn source_files(dir: &Path, src: &Path, out: &mut Vec<SourceFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, src, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(SourceFile { module, path, text });
        }
    }
}

/// The line without its `//` comment and with the insides of string literals blanked, so that
/// neither braces nor paths inside them count. Good enough for this codebase's sources.
fn code_of(line: &str) -> String {
    let mut code = String::with_capacity(line.len());
    let mut in_string = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    code.push('"');
                }
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            code.push('"');
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else if c == '\'' {
            // A char literal such as '{' would unbalance the braces; a lifetime is left alone.
            let rest: String = chars.clone().take(3).collect();
            if rest.starts_with("\\") || rest.chars().nth(1) == Some('\'') {
                let skip = if rest.starts_with('\\') { 3 } else { 2 };
                for _ in 0..skip {
                    chars.next();
                }
                code.push_str("' '");
            } else {
                code.push(c);
            }
        } else {
            code.push(c);
        }
    }
    code
}

#[derive(Debug, PartialEq, Clone)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Glob,
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                out.push(Token::PathSep);
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            '*' => out.push(Token::Glob),
            c if c.is_alphanumeric() || c == '_' => {
                let mut ident = c.to_string();
                while let Some(&next) = chars.peek() {
                    if next.is_alphanumeric() || next == '_' {
                        ident.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Ident(ident));
            }
            _ => {}
        }
    }
    out
}

/// Expands one use tree (`a::b::{c, d::{e, f}}`) into its paths.
fn use_paths(tokens: &[Token], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while let Some(token) = tokens.get(*at) {
        match token {
            Token::Ident(name) if name == "as" => {
                *at += 2;
                break;
            }
            Token::Ident(name) => {
                if name != "self" || path.len() == prefix.len() && prefix.is_empty() {
                    path.push(name.clone());
                }
                *at += 1;
            }
            Token::Open => {
                *at += 1;
                while let Some(token) = tokens.get(*at) {
                    match token {
                        Token::Close => {
                            *at += 1;
                            break;
                        }
                        Token::Comma => *at += 1,
                        _ => use_paths(tokens, at, &path, out),
                    }
                }
                return;
            }
            Token::Glob => {
                *at += 1;
                break;
            }
            Token::PathSep => *at += 1,
            Token::Close | Token::Comma => break,
        }
    }
    out.push(path);
}

/// The module a path names, seen from `current` (the file's module plus any inline modules it
/// is inside), or `None` for another crate's path.
fn resolve(
    path: &[String],
    current: &[String],
    modules: &BTreeSet<Vec<String>>,
    crate_aliases: &[&str],
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String>;
    let mut rest = path;
    if first == "crate" || crate_aliases.contains(&first.as_str()) {
        base = Vec::new();
        rest = &path[1..];
    } else if first == "super" || first == "self" {
        base = current.to_vec();
        while let Some(head) = rest.first() {
            match head.as_str() {
                "super" => {
                    base.pop();
                }
                "self" => {}
                _ => break,
            }
            rest = &rest[1..];
        }
    } else {
        let mut child = current.to_vec();
        child.push(first.clone());
        if !modules.contains(&child) {
            return None;
        }
        base = current.to_vec();
    }
    // The longest known module along the path; what follows it is an item.
    let mut target = base.clone();
    for segment in rest {
        base.push(segment.clone());
        if modules.contains(&base) {
            target = base.clone();
        } else {
            break;
        }
    }
    // Inline modules are part of their file.
    while !target.is_empty() && !modules.contains(&target) {
        target.pop();
    }
    Some(target)
}

/// Paths written out in code (`crate::x::y`, `super::z`), outside `use` statements.
fn written_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                continue;
            }
            let path: Vec<String> = code[at..]
                .split("::")
                .map(|part| {
                    part.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|part| !part.is_empty())
                .collect();
            out.push(path);
        }
    }
    out
}

/// Every module's edges to the other modules of the crate.
fn edges(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|file| file.module.clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let is_binary = file.path.file_name().is_some_and(|name| name == "main.rs");
        let aliases: &[&str] = if is_binary { &["evently"] } else { &[] };
        let from = if is_binary {
            "main".to_owned()
        } else {
            module_name(&file.module)
        };
        let mut found = BTreeSet::new();
        // Inline modules (name, brace depth they opened at) and the brace depth.
        let mut inline: Vec<(String, i64)> = Vec::new();
        let mut depth: i64 = 0;
        let mut statement: Option<String> = None;
        for line in file.text.lines() {
            let code = code_of(line);
            let trimmed = code.trim_start();
            let current: Vec<String> = file
                .module
                .iter()
                .cloned()
                .chain(inline.iter().map(|(name, _)| name.clone()))
                .collect();
            let mut add = |path: &[String]| {
                if let Some(target) = resolve(path, &current, &modules, aliases)
                    && target != file.module
                    && !(is_binary && target.is_empty())
                {
                    found.insert(module_name(&target));
                }
            };
            if statement.is_none() {
                let after_visibility = trimmed
                    .strip_prefix("pub(crate) ")
                    .or_else(|| trimmed.strip_prefix("pub(super) "))
                    .or_else(|| trimmed.strip_prefix("pub "))
                    .unwrap_or(trimmed);
                if after_visibility.starts_with("use ") {
                    statement = Some(String::new());
                }
            }
            if let Some(text) = statement.as_mut() {
                text.push_str(&code);
                text.push('\n');
                if code.contains(';') {
                    let text = statement.take().unwrap();
                    let body = &text[text.find("use ").unwrap() + 4..text.find(';').unwrap()];
                    let tokens = tokens(body);
                    let mut paths = Vec::new();
                    let mut at = 0;
                    while at < tokens.len() {
                        use_paths(&tokens, &mut at, &[], &mut paths);
                        at += 1;
                    }
                    for path in paths {
                        add(&path);
                    }
                }
            } else {
                for path in written_paths(&code) {
                    add(&path);
                }
            }
            let opens = code.matches('{').count() as i64;
            let closes = code.matches('}').count() as i64;
            let words: Vec<&str> = trimmed.split_whitespace().collect();
            let mod_at = words.iter().position(|word| *word == "mod");
            if let Some(at) = mod_at
                && code.contains('{')
                && words[..at]
                    .iter()
                    .all(|word| word.starts_with("pub") || word.starts_with("#["))
            {
                let name = words[at + 1].trim_end_matches('{').to_owned();
                inline.push((name, depth));
            }
            depth += opens - closes;
            while inline.last().is_some_and(|(_, opened)| depth <= *opened) {
                inline.pop();
            }
        }
        edges.entry(from).or_default().extend(found);
    }
    edges
}

fn under(module: &str, root: &str) -> bool {
    module == root || module.starts_with(&format!("{root}::"))
}

/// The groups of modules under `root` that import each other in a circle (strongly connected
/// components of more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>, root: &str) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = edges
        .keys()
        .chain(edges.values().flatten())
        .filter(|module| under(module, root))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let reach = |start: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(node) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if under(next, root) && seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|node| (*node, reach(node))).collect();
    let mut grouped = BTreeSet::new();
    let mut groups = Vec::new();
    for node in &nodes {
        if grouped.contains(*node) || !reachable[node].contains(*node) {
            continue;
        }
        let group: Vec<String> = nodes
            .iter()
            .filter(|other| reachable[node].contains(**other) && reachable[**other].contains(*node))
            .map(|other| (*other).clone())
            .collect();
        grouped.extend(group.iter().cloned());
        groups.push(group);
    }
    groups
}

/// The `//!` text of a file, its lines joined by spaces.
fn module_doc(text: &str) -> String {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("//!"))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn domain_modules_import_downward_and_never_the_realtime_bus() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &src, &mut files);
    let edges = edges(&files);

    println!("module -> module edges of src/ (from use lines and written-out paths):");
    for (from, targets) in &edges {
        for to in targets {
            println!("  {from} -> {to}");
        }
    }

    let mut problems = Vec::new();
    for group in cycles(&edges, "domain") {
        let inside: Vec<String> = group
            .iter()
            .flat_map(|from| {
                edges[from]
                    .iter()
                    .filter(|to| group.contains(to))
                    .map(move |to| format!("{from} -> {to}"))
            })
            .collect();
        problems.push(format!(
            "domain modules import each other in a circle: {} (edges: {})",
            group.join(", "),
            inside.join("; ")
        ));
    }
    for (from, targets) in &edges {
        for to in targets {
            let crosses = (under(from, "domain") && under(to, "realtime"))
                || (under(from, "realtime") && under(to, "domain"));
            if crosses {
                problems.push(format!("domain and realtime meet: {from} -> {to}"));
            }
        }
    }
    for file in &files {
        let lines = file.text.lines().count();
        if lines > MAX_LINES && !module_doc(&file.text).contains(REASON_WORDS) {
            problems.push(format!(
                "{} has {lines} lines and its module doc does not say why ({REASON_WORDS:?})",
                file.path.strip_prefix(&src).unwrap().display()
            ));
        }
    }

    println!("\nwhat breaks the layering:");
    for problem in &problems {
        println!("  {problem}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The reader itself, on sources written for it, so that a pass means the code is clean rather
/// than that nothing was read.
#[test]
fn the_reader_finds_edges_in_every_form_of_import() {
    let file = |path: &str, text: &str| {
        let module: Vec<String> = path
            .trim_end_matches(".rs")
            .split('/')
            .filter(|part| *part != "mod" && *part != "lib")
            .map(str::to_owned)
            .collect();
        SourceFile {
            module,
            path: PathBuf::from(path),
            text: text.to_owned(),
        }
    };
    let files = vec![
        file("lib.rs", "pub mod domain;\npub mod realtime;\n"),
        file(
            "domain/mod.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub use a::Thing;\n",
        ),
        file(
            "domain/a.rs",
            "use crate::{\n    domain::{b::X,\n        c},\n    error::AppError,\n};\nuse std::fmt;\n",
        ),
        file(
            "domain/b.rs",
            "fn f() { let s = \"crate::realtime::{\"; crate::domain::a::go(); }\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::c::Y;\n}\n",
        ),
        file(
            "domain/c.rs",
            "// use crate::realtime;\nuse super::a as first;\n",
        ),
        file("realtime/mod.rs", "use crate::domain::c;\n"),
        file("error.rs", "/// [`crate::domain`]\npub enum AppError {}\n"),
    ];
    let edges = edges(&files);
    let of = |module: &str| -> Vec<&str> { edges[module].iter().map(String::as_str).collect() };
    assert_eq!(of("domain"), ["domain::a"]);
    assert_eq!(of("domain::a"), ["domain::b", "domain::c", "error"]);
    assert_eq!(of("domain::b"), ["domain::a", "domain::c"]);
    assert_eq!(of("domain::c"), ["domain::a"]);
    assert_eq!(of("realtime"), ["domain::c"]);
    assert!(of("error").is_empty());
    assert_eq!(
        cycles(&edges, "domain"),
        [["domain::a", "domain::b", "domain::c"]
            .map(str::to_owned)
            .to_vec()]
    );
    assert!(
        module_doc("//! One piece: past 600\n//! lines because …\nfn f() {}")
            .contains(REASON_WORDS)
    );
}
