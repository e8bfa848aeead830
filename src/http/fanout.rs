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
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Data, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::error::REQUEST_ID;
use crate::graphql::EventlySchema;
use crate::graphql::context::Caller;
use crate::graphql::loaders;

/// Results a slow connection may fall behind by before it skips to the newest.
const CAPACITY: usize = 16;

/// One result of a shared execution, serialized once.
#[derive(Debug, Clone)]
pub enum Frame {
    /// The JSON of an execution result (`{"data":…}`), the payload of `next`.
    Next(Arc<str>),
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

/// The shared executions of one server, by request.
pub struct Fanout {
    schema: EventlySchema,
    app: AppState,
    running: Mutex<HashMap<String, Weak<Shared>>>,
}

/// What the execution and its subscribers share.
struct Core {
    sender: broadcast::Sender<Frame>,
    /// The newest frame, for subscribers joining later.
    latest: Mutex<Option<Frame>>,
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
        let live = running.get(&key).and_then(Weak::upgrade).filter(|shared| {
            !lock(&shared.core.latest)
                .as_ref()
                .is_some_and(Frame::is_last)
        });
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
        let (receiver, first) = {
            let latest = lock(&shared.core.latest);
            (shared.core.sender.subscribe(), latest.clone())
        };
        Subscriber {
            first,
            receiver: BroadcastStream::new(receiver),
            done: false,
            _shared: shared,
        }
    }

    fn start(&self, request: async_graphql::Request) -> Arc<Shared> {
        let core = Arc::new(Core {
            sender: broadcast::channel(CAPACITY).0,
            latest: Mutex::new(None),
        });
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
            Some(response) => Frame::Next(serialize(&response).into()),
        };
        let last = frame.is_last();
        {
            let mut latest = lock(&core.latest);
            *latest = Some(frame.clone());
            // No receivers only means every subscriber left a moment ago.
            let _ = core.sender.send(frame);
        }
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

/// One connection's view of a shared execution: the newest frame so far, then each later one,
/// skipping to the newest when it falls behind, up to the last.
struct Subscriber {
    /// The newest frame when this subscriber joined, or a last frame held back.
    first: Option<Frame>,
    receiver: BroadcastStream<Frame>,
    done: bool,
    _shared: Arc<Shared>,
}

impl Stream for Subscriber {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        if self.done {
            return Poll::Ready(None);
        }
        // A last frame held back behind the result before it.
        if self.first.as_ref().is_some_and(Frame::is_last) {
            self.done = true;
            return Poll::Ready(self.first.take());
        }
        let mut newest = self.first.take();
        loop {
            match Pin::new(&mut self.receiver).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_last() => {
                    // Results may be skipped, but not the last one before the end.
                    if newest.is_some() {
                        self.first = Some(frame);
                        cx.waker().wake_by_ref();
                    } else {
                        newest = Some(frame);
                    }
                    break;
                }
                Poll::Ready(Some(Ok(frame))) => newest = Some(frame),
                // Lagged: what was missed is superseded by what is still buffered.
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    crate::telemetry::metrics::record_dropped("fanout", missed);
                }
                // The sender lives in the core this subscriber holds, so it cannot close:
                // the stream ends after a last frame.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        match newest {
            Some(frame) => {
                self.done = frame.is_last();
                Poll::Ready(Some(frame))
            }
            None => Poll::Pending,
        }
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
        Subscriber {
            first: lock(&core.latest).clone(),
            receiver: BroadcastStream::new(core.sender.subscribe()),
            done: false,
            _shared: shared,
        }
    }

    fn publish(core: &Core, frame: Frame) {
        *lock(&core.latest) = Some(frame.clone());
        let _ = core.sender.send(frame);
    }

    fn next(text: &str) -> Frame {
        Frame::Next(text.into())
    }

    fn text(frame: Option<Frame>) -> String {
        match frame {
            Some(Frame::Next(text)) => text.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_the_newest_result_and_still_the_end() {
        let core = Arc::new(Core {
            sender: broadcast::channel(CAPACITY).0,
            latest: Mutex::new(None),
        });
        publish(&core, next("0"));
        let mut late = subscriber(&core);
        assert_eq!(
            text(late.next().await),
            "0",
            "a joiner starts from the newest result"
        );
        for i in 1..=(CAPACITY * 3) {
            publish(&core, next(&i.to_string()));
        }
        publish(&core, Frame::Complete);
        assert_eq!(text(late.next().await), (CAPACITY * 3).to_string());
        assert!(matches!(late.next().await, Some(Frame::Complete)));
        assert!(late.next().await.is_none());
    }

    #[test]
    fn the_last_subscriber_leaving_stops_the_execution() {
        let core = Arc::new(Core {
            sender: broadcast::channel(CAPACITY).0,
            latest: Mutex::new(None),
        });
        let first = subscriber(&core);
        let stop = first._shared.stop.clone();
        drop(first);
        assert!(stop.is_cancelled());
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
