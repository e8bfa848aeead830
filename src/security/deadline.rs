//! The per-request deadline for operations that do not come over HTTP (where the handler
//! bounds the whole request and answers 504): each query or mutation on a WebSocket gets the
//! same limit and, past it, a `TIMEOUT` error; its work is dropped and its transaction rolled
//! back. Subscriptions are long-lived by design and are not bounded.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::{Response, ServerError};

use super::document::limit_error;

/// Put into the data of HTTP requests, whose deadline the HTTP handler enforces.
#[derive(Debug, Clone, Copy)]
pub struct OverHttp;

pub struct OperationDeadline(pub Duration);

impl ExtensionFactory for OperationDeadline {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationDeadline(self.0))
    }
}

pub fn timeout_error(limit: Duration) -> ServerError {
    limit_error(
        "TIMEOUT",
        format!("the request took longer than {} ms", limit.as_millis()),
    )
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationDeadline {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if ctx.data_opt::<OverHttp>().is_some() {
            return next.run(ctx, operation_name).await;
        }
        match tokio::time::timeout(self.0, next.run(ctx, operation_name)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.0.as_millis() as u64,
                    "GraphQL operation timed out"
                );
                Response::from_errors(vec![timeout_error(self.0)])
            }
        }
    }
}
