//! Business rules as plain async functions over `&mut AsyncPgConnection`. Multi-statement
//! writes run in one transaction; nothing here knows about GraphQL, HTTP or the realtime bus.
//! Every write returns a [`changes::Committed`]: its value and what it changed, which the App
//! announces after the commit (`App::commit`), the only place that does.
//!
//! # Layers
//!
//! Modules import only from layers below their own, so the booking path reads in one
//! direction (http → graphql resolver → a command here, or the booking queue → `App::commit`
//! → the realtime bus):
//!
//! 1. **Bottom: shared rules and vocabulary.** [`changes`] (`Committed`, `Changes`), [`rows`]
//!    (a row read by id or NOT_FOUND, the one booking insert), [`text`] (text checks),
//!    [`pagination`] (keyset pages), [`user_limits`] (per-user limits), and [`sale_rules`]
//!    (locking the event, who may buy, why it cannot be sold, what a request may ask; it reads
//!    the event through `rows`), and [`audit`] (the append-only audit log every organizer and
//!    admin command writes in its own transaction). No other domain import.
//! 2. **Middle: the inventory and where freed seats go.** [`inventory`] (an event's counters
//!    under its lock), [`seats`] (numbered seats), [`stock`] (ticket types' and quotas'
//!    counters), and [`freed_seats`] (hold expiry, waiting-list promotion and offers, which
//!    call each other by nature), which uses them and [`waitlist_orders`] (the orders offered
//!    to the waiting list of an event that sells ticket types).
//! 3. **Top: the commands.** [`bookings`], [`holds`], [`waitlist`], [`rsvp`], [`events`]
//!    (queries, rules, lifecycle), [`venues`], [`sweeps`] (the sweeper's transactions),
//!    [`auth`] and [`users`]. They import the layers below, and each other only one way:
//!    `users` hashes with `auth`'s `Passwords`.
//! 4. **Over the commands.** [`group_commit`], the onsale path's booking queue, books through
//!    `bookings` and checks sessions with `auth`; [`seed`] (demo data) creates through
//!    `users`, `venues` and `auth`; [`stats`] (analytics and the attendee export) only reads,
//!    exact at the moment it reads; [`session_cache`] keeps `auth`'s sessions per instance.
//!
//! [`Viewer`], the signed-in user, is defined here and used at every layer. Nothing here
//! imports `crate::realtime` (the bus's resync reads live in `realtime::resync`).

pub mod audit;
pub mod auth;
pub mod bookings;
pub mod changes;
pub mod commerce;
pub mod events;
pub mod freed_seats;
pub mod group_commit;
pub mod holds;
pub mod inventory;
pub mod pagination;
pub mod rows;
pub mod rsvp;
pub mod sale_rules;
pub mod seats;
pub mod seed;
pub mod session_cache;
pub mod stats;
pub mod stock;
pub mod sweeps;
pub mod text;
pub mod user_limits;
pub mod users;
pub mod venues;
pub mod waitlist;
pub mod waitlist_orders;

use crate::db::models::{Role, User};

/// The signed-in user of a request, re-read from the database on every request so that a role
/// change or a revoked session takes effect at once.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    pub session_id: uuid::Uuid,
}

impl Viewer {
    pub fn id(&self) -> uuid::Uuid {
        self.user.id
    }
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
    pub fn can_organize(&self) -> bool {
        matches!(self.user.role, Role::Organizer | Role::Admin)
    }
}

#[cfg(test)]
mod layering {
    //! The layers of this module's doc, checked from the `use` lines of every domain file.

    use std::path::{Path, PathBuf};

    /// Each domain module's rank: a module may import only modules of a lower rank (finer than
    /// the layers of the doc, which it refines). The root (`Viewer`) is below them all.
    const RANKS: &[(&str, u8)] = &[
        ("changes", 0),
        ("rows", 0),
        ("text", 0),
        ("pagination", 0),
        ("user_limits", 0),
        ("audit", 1),
        ("sale_rules", 1),
        ("inventory", 2),
        ("seats", 2),
        ("stock", 2),
        ("waitlist_orders", 3),
        ("freed_seats", 4),
        ("auth", 5),
        ("bookings", 5),
        ("commerce", 5),
        ("events", 5),
        ("holds", 5),
        ("rsvp", 5),
        ("sweeps", 5),
        ("venues", 5),
        ("waitlist", 5),
        ("users", 6),
        ("group_commit", 7),
        ("seed", 7),
        ("stats", 7),
        ("session_cache", 6),
    ];

    fn rank(module: &str) -> u8 {
        RANKS
            .iter()
            .find(|(name, _)| *name == module)
            .unwrap_or_else(|| panic!("domain module `{module}` has no rank: give it one"))
            .1
    }

    fn files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// The domain modules a file's `use` declarations (outside its tests) name. `own` is the
    /// file's module path below `domain`, to resolve `super`.
    fn imports(source: &str, own: &[String]) -> Vec<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut names = Vec::new();
        for statement in code.split(';') {
            let statement: String = statement
                .lines()
                .map(|line| line.split("//").next().unwrap_or_default().trim())
                .collect();
            let Some(path) = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
                .iter()
                .find_map(|prefix| statement.strip_prefix(prefix))
            else {
                continue;
            };
            assert!(
                !path.starts_with("crate::realtime"),
                "the domain imports the realtime bus: {statement}"
            );
            let segments: Vec<&str> = path.split("::").collect();
            let absolute: Vec<String> = match segments.first() {
                Some(&"crate") if segments.get(1) == Some(&"domain") => {
                    segments[2..].iter().map(|s| s.to_string()).collect()
                }
                Some(&"super") => {
                    // `super` of a module: its parent's path.
                    let mut base: Vec<String> = own[..own.len().saturating_sub(1)].to_vec();
                    let mut rest = &segments[1..];
                    while rest.first() == Some(&"super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().map(|s| s.to_string()));
                    base
                }
                _ => continue,
            };
            // `{a, b::c}` names several modules.
            let first = absolute.first().map(String::as_str).unwrap_or_default();
            let listed = first.trim_start_matches('{').trim_end_matches('}');
            for name in listed
                .split(',')
                .map(|n| n.split("::").next().unwrap_or_default())
            {
                if name.starts_with(char::is_lowercase) && name != "self" {
                    names.push(name.to_owned());
                }
            }
        }
        names
    }

    #[test]
    fn domain_modules_import_only_modules_below_them_and_never_the_bus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
        let mut found = Vec::new();
        files(&root, &mut found);
        let mut upward = Vec::new();
        for path in found {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut own: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if own.last().is_some_and(|last| last == "mod") {
                own.pop();
            }
            let Some(module) = own.first().cloned() else {
                continue; // The root: it declares the modules and defines `Viewer`.
            };
            let own_rank = rank(&module);
            let source = std::fs::read_to_string(&path).unwrap();
            for target in imports(&source, &own) {
                if target != module && rank(&target) >= own_rank {
                    upward.push(format!("{module} -> {target}"));
                }
            }
        }
        assert!(upward.is_empty(), "imports that do not go down: {upward:?}");
    }
}
