//! A short-lived cache of answers to anonymous queries, the traffic of people browsing events.
//!
//! An answer is reused only while nothing it could depend on may have changed: each entry
//! remembers the *generation* it was computed at, which moves on with every change this
//! instance hears of (its own writes, and every seat or event update on the bus, local or
//! from other instances through Redis), and it expires after a TTL in any case, which bounds
//! staleness when Redis is down. Signed-in requests, mutations, subscriptions, batches,
//! persisted queries and answers with errors are never cached. PostgreSQL stays the truth:
//! the cache only ever repeats an answer it gave, and never for a booking.
//!
//! Caches outside (a CDN, the browser) get what HTTP gives them: `with_etag` below, and the
//! `Cache-Control` that `http::mod` sets per answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Marks an answer that came from the cache.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-evently-cache");
/// When full, the cache starts over rather than tracking what is least used.
const MAX_ENTRIES: usize = 1024;
/// Bigger answers are not kept.
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The method and media type: answers to the same query differ in their headers.
    variant: &'static str,
    query: String,
    operation_name: Option<String>,
    variables: String,
}

struct Entry {
    at: Instant,
    generation: u64,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

pub struct ResponseCache {
    ttl: Duration,
    /// Requests this instance served that may have written something.
    writes: AtomicU64,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl ResponseCache {
    /// `ttl` zero switches the cache off.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            writes: AtomicU64::new(0),
            entries: Mutex::default(),
        }
    }

    /// The key of a request whose answer may be cached, or `None`. Anything that might be a
    /// mutation or subscription is left alone (a keyword anywhere in the text is enough).
    pub fn key(&self, request: &async_graphql::Request, variant: &'static str) -> Option<Key> {
        let cacheable = !self.ttl.is_zero()
            && request.extensions.is_empty()
            && !request.query.contains("mutation")
            && !request.query.contains("subscription");
        cacheable.then(|| Key {
            variant,
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: serde_json::to_string(&request.variables).unwrap_or_default(),
        })
    }

    /// Call before serving a document that may change what others read: anything that names
    /// a mutation, or has no text (a persisted query, known only by its hash).
    pub fn note_write(&self, query: &str) {
        if query.is_empty() || query.contains("mutation") {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The generation to remember with an answer, read before computing it; `bus` is the
    /// bus's count of updates heard.
    pub fn generation(&self, bus: u64) -> u64 {
        bus.wrapping_add(self.writes.load(Ordering::Relaxed))
    }

    pub fn get(&self, key: &Key, generation: u64) -> Option<Response> {
        let entries = self.lock();
        let entry = entries.get(key)?;
        if entry.generation != generation || entry.at.elapsed() >= self.ttl {
            return None;
        }
        let mut headers = entry.headers.clone();
        headers.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
        Some((entry.status, headers, entry.body.clone()).into_response())
    }

    /// Keeps a successful answer computed at `generation` and returns it.
    pub async fn put(&self, key: Key, generation: u64, response: Response) -> Response {
        if response.status() != StatusCode::OK {
            return response;
        }
        let (parts, body) = response.into_parts();
        let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
            return crate::http::internal_error_response();
        };
        if body.len() > MAX_BODY_BYTES {
            return Response::from_parts(parts, axum::body::Body::from(body));
        }
        let entry = Entry {
            at: Instant::now(),
            generation,
            status: parts.status,
            headers: parts.headers.clone(),
            body: body.clone(),
        };
        {
            let mut entries = self.lock();
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, entry);
        }
        Response::from_parts(parts, axum::body::Body::from(body))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Gives a GET answer an `ETag` (a digest of its body) and answers 304 with no body when the
/// client's `If-None-Match` already names it. Only 200 answers get one: an error is not a
/// representation worth revalidating.
pub async fn with_etag(response: Response, if_none_match: Option<&HeaderValue>) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return crate::http::internal_error_response();
    };
    let digest = Sha256::digest(&body);
    let tag = format!("\"{:x}\"", digest);
    let matches = if_none_match
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.split(',').any(|candidate| {
                let candidate = candidate.trim();
                candidate == "*" || candidate.trim_start_matches("W/") == tag
            })
        });
    if let Ok(value) = HeaderValue::from_str(&tag) {
        parts.headers.insert(header::ETAG, value);
    }
    if matches {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}
