//! Identical public subscriptions share one execution.
//!
//! Ten thousand browsers watching one event's seats send the same document with the same
//! variables. Executing it once per change and serializing the result once, then handing the
//! same bytes to every connection, turns the per-subscriber work into a copy and a write. Only
//! documents whose result cannot depend on who asks are shared: one `seatAvailability` field
//! (public, and `SeatAvailability` holds only scalars). Everything else runs per connection.
//!
//! The guarantees stay those of a subscription of one's own: the shared execution attaches to
//! the bus before reading its first state, and a late joiner starts from the newest result it
//! sent, so no change falls in between; results only move forward, and a slow connection skips
//! to the newest one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Data, Response};
use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::error::REQUEST_ID;
use crate::graphql::EventlySchema;
use crate::graphql::context::Caller;
use crate::graphql::loaders;

/// One result of a shared execution, serialized once.
#[derive(Debug, Clone)]
pub enum Frame {
    /// An execution result, the payload of `next`.
    Next(Arc<Payload>),
    /// The JSON list of errors of an operation refused before execution: an `error` message.
    Error(Arc<str>),
    /// The execution ended.
    Complete,
}

impl Frame {
    fn is_last(&self) -> bool {
        !matches!(self, Self::Next(_))
    }
}

/// The JSON of an execution result (`{"data":…}`), and the whole message around it as the
/// first connection to send it wrote it. Connections whose operation has the same id (clients
/// that number their operations, as subscriptions-transport-ws does, or graphql-ws with a
/// counting `generateID`) send the very same text and share its bytes; the others splice the
/// shared JSON into a message of their own, one allocation and copy each.
#[derive(Debug)]
pub struct Payload {
    json: Box<str>,
    message: OnceLock<(Box<str>, &'static str, Utf8Bytes)>,
}

impl Payload {
    fn new(json: String) -> Self {
        Self {
            json: json.into(),
            message: OnceLock::new(),
        }
    }

    #[cfg(test)]
    fn json(&self) -> &str {
        &self.json
    }

    /// The text of the `kind` message of operation `id` around this result: shared with the
    /// connections whose operation has the same id and kind, else written by `write`.
    pub fn message(
        &self,
        id: &str,
        kind: &'static str,
        write: impl Fn(&str, &'static str, &str) -> Utf8Bytes,
    ) -> Utf8Bytes {
        let (shared_id, shared_kind, text) = self
            .message
            .get_or_init(|| (id.into(), kind, write(id, kind, &self.json)));
        if **shared_id == *id && *shared_kind == kind {
            text.clone()
        } else {
            write(id, kind, &self.json)
        }
    }
}

/// The shared executions of one server, by request.
pub struct Fanout {
    schema: EventlySchema,
    app: AppState,
    running: Mutex<HashMap<String, Weak<Shared>>>,
}

/// What the execution and its subscribers share: the newest result and the end, rather than a
/// queue, since a subscriber only ever wants the newest (see `Subscriber`), and a waker per
/// subscriber. A subscriber with nothing new to send checks one counter and registers its
/// waker in a slot of its own: no lock shared by thousands of connections on every update, as
/// a broadcast channel's list of waiters would be.
struct Core {
    /// Bumped (under `state`'s lock) with every frame; a subscriber that has seen this many
    /// has nothing to send.
    sequence: AtomicU64,
    state: Mutex<State>,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct State {
    sequence: u64,
    /// The newest result and its sequence number.
    newest: Option<(u64, Frame)>,
    /// A last frame (`Error` or `Complete`), sent after the newest result.
    end: Option<Frame>,
}

#[derive(Default)]
struct Wakers {
    next_key: u64,
    by_key: HashMap<u64, Arc<AtomicWaker>>,
}

impl Core {
    fn new() -> Self {
        Self {
            sequence: AtomicU64::new(0),
            state: Mutex::default(),
            wakers: Mutex::default(),
        }
    }

    fn publish(&self, frame: Frame) {
        {
            let mut state = lock(&self.state);
            state.sequence += 1;
            let sequence = state.sequence;
            if frame.is_last() {
                state.end = Some(frame);
            } else {
                state.newest = Some((sequence, frame));
            }
            self.sequence.store(sequence, Ordering::Release);
        }
        for waker in lock(&self.wakers).by_key.values() {
            waker.wake();
        }
    }

    fn has_ended(&self) -> bool {
        lock(&self.state).end.is_some()
    }

    fn subscribe(self: &Arc<Self>, shared: Arc<Shared>) -> Subscriber {
        let waker = Arc::new(AtomicWaker::new());
        let key = {
            let mut wakers = lock(&self.wakers);
            let key = wakers.next_key;
            wakers.next_key += 1;
            wakers.by_key.insert(key, waker.clone());
            key
        };
        Subscriber {
            core: self.clone(),
            waker,
            key,
            checked: 0,
            sent: 0,
            done: false,
            _shared: shared,
        }
    }
}

/// Held by every subscriber; the execution stops when the last one is gone.
struct Shared {
    core: Arc<Core>,
    stop: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fanout {
    pub fn new(schema: EventlySchema, app: AppState) -> Self {
        Self {
            schema,
            app,
            running: Mutex::default(),
        }
    }

    /// The key under which `request` can be shared, if its result is the same for everyone.
    pub fn shareable(
        query: &str,
        operation_name: Option<&str>,
        variables: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Option<String> {
        let document = async_graphql::parser::parse_query(query).ok()?;
        if !document.fragments.is_empty() {
            return None;
        }
        let operation = match &document.operations {
            DocumentOperations::Single(operation) => operation,
            DocumentOperations::Multiple(operations) if operations.len() == 1 => {
                let (name, operation) = operations.iter().next()?;
                if operation_name.is_some_and(|wanted| wanted != name.as_str()) {
                    return None;
                }
                operation
            }
            DocumentOperations::Multiple(_) => return None,
        };
        let operation = &operation.node;
        if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
            return None;
        }
        let [root] = operation.selection_set.node.items.as_slice() else {
            return None;
        };
        let Selection::Field(field) = &root.node else {
            return None;
        };
        if field.node.name.node != "seatAvailability" || !field.node.directives.is_empty() {
            return None;
        }
        let variables = variables.map(|v| serde_json::to_string(v).unwrap_or_default());
        Some(format!(
            "{}\u{0}{}\u{0}{query}",
            operation_name.unwrap_or_default(),
            variables.unwrap_or_default()
        ))
    }

    /// Joins the running execution of `key`, starting it if there is none.
    pub fn join(
        &self,
        key: String,
        request: impl FnOnce() -> async_graphql::Request,
    ) -> impl Stream<Item = Frame> + Send + 'static {
        let mut running = lock(&self.running);
        let live = running
            .get(&key)
            .and_then(Weak::upgrade)
            .filter(|shared| !shared.core.has_ended());
        let shared = match live {
            Some(shared) => shared,
            None => {
                running.retain(|_, shared| shared.strong_count() > 0);
                let shared = self.start(request());
                running.insert(key, Arc::downgrade(&shared));
                shared
            }
        };
        drop(running);
        shared.core.clone().subscribe(shared)
    }

    fn start(&self, request: async_graphql::Request) -> Arc<Shared> {
        let core = Arc::new(Core::new());
        let stop = CancellationToken::new();
        // Public by construction: run as nobody in particular.
        let mut data = Data::default();
        data.insert(Caller::Anonymous);
        loaders::install(&self.app, &mut data);
        let results = self
            .schema
            .execute_stream_with_session_data(request, Arc::new(data));
        let execution = drive(core.clone(), results, stop.clone());
        tokio::spawn(REQUEST_ID.scope("shared-subscription".to_owned(), execution));
        Arc::new(Shared { core, stop })
    }
}

async fn drive(
    core: Arc<Core>,
    mut results: futures_util::stream::BoxStream<'static, Response>,
    stop: CancellationToken,
) {
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = results.next() => result,
        };
        let frame = match result {
            None => Frame::Complete,
            Some(response) if super::ws::ends_operation(&response) => {
                Frame::Error(serialize(&response.errors).into())
            }
            Some(response) => Frame::Next(Arc::new(Payload::new(serialize(&response)))),
        };
        let last = frame.is_last();
        core.publish(frame);
        if last {
            return;
        }
    }
}

fn serialize(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot serialize a subscription result");
        r#"{"errors":[{"message":"internal server error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#.to_owned()
    })
}

/// One connection's view of a shared execution: the newest result so far, then each later
/// one, skipping to the newest when it falls behind, and then the end (never skipped, nor the
/// result before it).
struct Subscriber {
    core: Arc<Core>,
    waker: Arc<AtomicWaker>,
    key: u64,
    /// The sequence number of the core's state when this subscriber last found nothing more
    /// to send in it.
    checked: u64,
    /// The sequence number of the newest result sent.
    sent: u64,
    done: bool,
    _shared: Arc<Shared>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        lock(&self.core.wakers).by_key.remove(&self.key);
    }
}

impl Stream for Subscriber {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // Registered before looking, so a frame published meanwhile wakes this task again.
        this.waker.register(cx.waker());
        if this.core.sequence.load(Ordering::Acquire) == this.checked {
            return Poll::Pending;
        }
        let state = lock(&this.core.state);
        if let Some((sequence, frame)) = &state.newest
            && *sequence > this.sent
        {
            if this.sent > 0 && *sequence > this.sent + 1 {
                // Skipped: superseded by this newer one.
                let missed = *sequence - this.sent - 1;
                crate::telemetry::metrics::record_dropped("fanout", missed);
            }
            this.sent = *sequence;
            // With an end waiting, look again at the next poll.
            if state.end.is_none() {
                this.checked = state.sequence;
            }
            return Poll::Ready(Some(frame.clone()));
        }
        if let Some(end) = &state.end {
            this.done = true;
            return Poll::Ready(Some(end.clone()));
        }
        this.checked = state.sequence;
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(core: &Arc<Core>) -> Subscriber {
        let shared = Arc::new(Shared {
            core: core.clone(),
            stop: CancellationToken::new(),
        });
        core.subscribe(shared)
    }

    fn next(text: &str) -> Frame {
        Frame::Next(Arc::new(Payload::new(text.to_owned())))
    }

    fn text(frame: Option<Frame>) -> String {
        match frame {
            Some(Frame::Next(payload)) => payload.json().to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_the_newest_result_and_still_the_end() {
        let core = Arc::new(Core::new());
        core.publish(next("0"));
        let mut late = subscriber(&core);
        assert_eq!(
            text(late.next().await),
            "0",
            "a joiner starts from the newest result"
        );
        for i in 1..=48 {
            core.publish(next(&i.to_string()));
        }
        core.publish(Frame::Complete);
        assert_eq!(text(late.next().await), "48");
        assert!(matches!(late.next().await, Some(Frame::Complete)));
        assert!(late.next().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_by_each_result_and_by_the_end() {
        let core = Arc::new(Core::new());
        let mut subscriber = subscriber(&core);
        let publisher = {
            let core = core.clone();
            async move {
                for i in 1..=3 {
                    tokio::task::yield_now().await;
                    core.publish(next(&i.to_string()));
                }
                tokio::task::yield_now().await;
                core.publish(Frame::Complete);
            }
        };
        let receiver = async {
            let mut seen = Vec::new();
            while let Some(frame) = subscriber.next().await {
                seen.push(text(Some(frame)));
            }
            seen
        };
        let ((), seen) = tokio::join!(publisher, receiver);
        assert_eq!(seen.last().map(String::as_str), Some("Some(Complete)"));
        assert_eq!(
            seen.get(seen.len().wrapping_sub(2)).map(String::as_str),
            Some("3"),
            "the result before the end is never skipped: {seen:?}"
        );
        let numbers: Vec<u32> = seen.iter().filter_map(|s| s.parse().ok()).collect();
        assert!(numbers.is_sorted(), "results only move forward: {seen:?}");
    }

    #[test]
    fn the_last_subscriber_leaving_stops_the_execution_and_its_waker_goes() {
        let core = Arc::new(Core::new());
        let first = subscriber(&core);
        assert_eq!(lock(&core.wakers).by_key.len(), 1);
        let stop = first._shared.stop.clone();
        drop(first);
        assert!(stop.is_cancelled());
        assert!(lock(&core.wakers).by_key.is_empty());
    }

    #[test]
    fn connections_with_the_same_operation_id_share_one_message() {
        let payload = Payload::new(r#"{"data":1}"#.to_owned());
        let write = |id: &str, kind: &'static str, json: &str| -> Utf8Bytes {
            format!("{id}/{kind}/{json}").into()
        };
        let first = payload.message("1", "next", write);
        let same = payload.message("1", "next", write);
        assert_eq!(first.as_str(), r#"1/next/{"data":1}"#);
        assert_eq!(
            first.as_str().as_ptr(),
            same.as_str().as_ptr(),
            "the same bytes, not a copy"
        );
        assert_eq!(
            payload.message("2", "next", write).as_str(),
            r#"2/next/{"data":1}"#
        );
        assert_eq!(
            payload.message("1", "data", write).as_str(),
            r#"1/data/{"data":1}"#
        );
    }

    fn key(query: &str, name: Option<&str>) -> Option<String> {
        let variables = serde_json::json!({ "id": "e1" });
        Fanout::shareable(query, name, variables.as_object())
    }

    #[test]
    fn only_a_lone_seat_availability_field_is_shared() {
        let seats =
            "subscription($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }";
        assert!(key(seats, None).is_some());
        assert!(
            key(
                "subscription S($id: ID!) { a: seatAvailability(eventId: $id) { version } }",
                Some("S")
            )
            .is_some()
        );
        // Caller-dependent or anything more: each connection runs its own.
        for query in [
            "subscription { myBookingUpdates { id } }",
            "subscription($id: ID!) { eventUpdated(eventId: $id) { id } }",
            "subscription($id: ID!) { seatAvailability(eventId: $id) { version } x: seatAvailability(eventId: $id) { version } }",
            "subscription($id: ID!) @skip(if: false) { seatAvailability(eventId: $id) { version } }",
            "subscription($id: ID!) { ...F } fragment F on Subscription { seatAvailability(eventId: $id) { version } }",
            "query($id: ID!) { event(id: $id) { id } }",
            "subscription {",
        ] {
            assert!(key(query, None).is_none(), "{query}");
        }
        assert!(
            key(
                "subscription S($id: ID!) { seatAvailability(eventId: $id) { version } }",
                Some("T")
            )
            .is_none()
        );
    }

    #[test]
    fn the_key_separates_documents_and_variables() {
        let seats = "subscription($id: ID!) { seatAvailability(eventId: $id) { version } }";
        let other = serde_json::json!({ "id": "e2" });
        assert_ne!(
            key(seats, None),
            Fanout::shareable(seats, None, other.as_object())
        );
        assert_ne!(
            key(seats, None),
            key(
                "subscription($id: ID!) { seatAvailability(eventId: $id) { capacity } }",
                None
            )
        );
    }
}
