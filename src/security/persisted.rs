//! Persisted queries, as a schema extension so HTTP and WebSocket behave alike.
//!
//! - Automatic persisted queries (Apollo's protocol): a client sends
//!   `extensions.persistedQuery = { version: 1, sha256Hash }` without the query; an unknown
//!   hash gets `PERSISTED_QUERY_NOT_FOUND`, and the client resends hash and query, which
//!   registers it. Registered queries live in Redis (shared by instances, a day each) and in
//!   a bounded in-process map.
//! - Allow-list mode: only the operations of a JSON file `{ "<sha256>": "<query>" }` run,
//!   whether sent by hash or in full; anything else gets `PERSISTED_QUERY_NOT_ALLOWED`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation,
};
use async_graphql::{Request, ServerError, ServerResult, ValidationResult};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::SharedRedis;
use super::document::limit_error;

/// Registered queries kept by one instance; beyond this the map starts over.
const LOCAL_CAPACITY: usize = 10_000;
const REDIS_TTL_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
struct PersistedQuery {
    version: i32,
    #[serde(rename = "sha256Hash")]
    sha256_hash: String,
}

#[derive(Clone)]
pub struct PersistedQueries {
    inner: Arc<Inner>,
}

struct Inner {
    redis: SharedRedis,
    automatic: bool,
    max_document_bytes: usize,
    allowlist: Option<HashMap<String, String>>,
    local: Mutex<HashMap<String, String>>,
}

fn sha256_hex(query: &str) -> String {
    format!("{:x}", Sha256::digest(query.as_bytes()))
}

/// Reads an allow-list file: a JSON object from SHA-256 hex digests to queries. Each digest
/// must match its query, so a typo cannot silently allow something else.
pub fn load_allowlist(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let entries: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a JSON object of hash → query: {e}",
            path.display()
        )
    })?;
    for (hash, query) in &entries {
        anyhow::ensure!(
            *hash == sha256_hex(query),
            "{}: {hash} is not the SHA-256 of its query",
            path.display()
        );
    }
    Ok(entries)
}

impl PersistedQueries {
    pub fn new(
        redis: SharedRedis,
        automatic: bool,
        max_document_bytes: usize,
        allowlist: Option<HashMap<String, String>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                automatic,
                max_document_bytes,
                allowlist,
                local: Mutex::default(),
            }),
        }
    }
}

impl PersistedQueries {
    /// The text a request sent by hash alone stands for, when this server knows it (from the
    /// allow-list, or registered earlier); the request itself is left as it is. HTTP asks
    /// before running a GET, which may only carry a query.
    pub async fn known_query(&self, request: &Request) -> Option<String> {
        let value = request.extensions.get("persistedQuery")?.clone();
        let persisted: PersistedQuery = async_graphql::from_value(value).ok()?;
        let hash = persisted.sha256_hash.to_ascii_lowercase();
        match &self.inner.allowlist {
            Some(allowlist) => allowlist.get(&hash).cloned(),
            None if self.inner.automatic => self.inner.lookup(&hash).await,
            None => None,
        }
    }
}

impl ExtensionFactory for PersistedQueries {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PersistedQueriesForRequest {
            inner: self.inner.clone(),
            to_register: Mutex::default(),
        })
    }
}

/// The extension as one request sees it: a query sent with its hash is registered only once
/// it has parsed and validated, so nobody can fill the store with garbage.
struct PersistedQueriesForRequest {
    inner: Arc<Inner>,
    to_register: Mutex<Option<(String, String)>>,
}

fn bad_request(message: &str) -> ServerError {
    limit_error("BAD_REQUEST", message)
}

impl Inner {
    async fn lookup(&self, hash: &str) -> Option<String> {
        let key = self.redis.key(&format!("apq:{hash}"));
        let shared = self
            .redis
            .run(|mut conn| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut conn)
                    .await
            })
            .await
            .flatten();
        match shared {
            Some(query) => Some(query),
            None => self
                .local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(hash)
                .cloned(),
        }
    }

    async fn register(&self, hash: &str, query: &str) {
        if self.max_document_bytes > 0 && query.len() > self.max_document_bytes {
            return;
        }
        {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if local.len() >= LOCAL_CAPACITY {
                local.clear();
            }
            local.insert(hash.to_owned(), query.to_owned());
        }
        let key = self.redis.key(&format!("apq:{hash}"));
        let query = query.to_owned();
        self.redis
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(query)
                    .arg("EX")
                    .arg(REDIS_TTL_SECS)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
    }

    /// Resolves the request's persisted query; returns the (hash, query) to register once the
    /// query proves valid.
    async fn prepare(
        &self,
        mut request: Request,
    ) -> ServerResult<(Request, Option<(String, String)>)> {
        let persisted = match request.extensions.remove("persistedQuery") {
            None => None,
            Some(value) => {
                let persisted: PersistedQuery = async_graphql::from_value(value)
                    .map_err(|_| bad_request("`extensions.persistedQuery` is malformed"))?;
                if persisted.version != 1 {
                    return Err(limit_error(
                        "PERSISTED_QUERY_NOT_SUPPORTED",
                        "only version 1 of persisted queries is supported",
                    ));
                }
                let hash = persisted.sha256_hash.to_ascii_lowercase();
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad_request("`sha256Hash` is not a SHA-256 hex digest"));
                }
                Some(hash)
            }
        };
        if let Some(allowlist) = &self.allowlist {
            let not_allowed = || {
                limit_error(
                    "PERSISTED_QUERY_NOT_ALLOWED",
                    "this server only runs its registered operations",
                )
            };
            let hash = match persisted {
                Some(hash) if request.query.is_empty() => hash,
                Some(hash) if hash == sha256_hex(&request.query) => hash,
                Some(_) => return Err(not_allowed()),
                None => sha256_hex(&request.query),
            };
            request.query = allowlist.get(&hash).ok_or_else(not_allowed)?.clone();
            return Ok((request, None));
        }
        let Some(hash) = persisted else {
            return Ok((request, None));
        };
        if !self.automatic {
            return Err(limit_error(
                "PERSISTED_QUERY_NOT_SUPPORTED",
                "persisted queries are disabled on this server",
            ));
        }
        if request.query.is_empty() {
            request.query = self.lookup(&hash).await.ok_or_else(|| {
                limit_error("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
            })?;
            Ok((request, None))
        } else if hash == sha256_hex(&request.query) {
            let query = request.query.clone();
            Ok((request, Some((hash, query))))
        } else {
            Err(bad_request("provided sha does not match query"))
        }
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for PersistedQueriesForRequest {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let (request, to_register) = self.inner.prepare(request).await?;
        *self.to_register.lock().unwrap_or_else(|e| e.into_inner()) = to_register;
        next.run(ctx, request).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let to_register = self
            .to_register
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((hash, query)) = to_register {
            self.inner.register(&hash, &query).await;
        }
        Ok(result)
    }
}
