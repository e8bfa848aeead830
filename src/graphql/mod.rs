//! The GraphQL schema: one query/mutation/subscription object per domain, merged here.

mod bookings;
pub mod context;
mod events;
pub mod loaders;
pub mod reservations;
pub mod seatmap;
pub mod seats;
mod subscription;
pub mod types;
mod users;
mod venues;

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
    NextValidation,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    MergedObject, MergedSubscription, Response, Schema, SchemaBuilder, ServerError, ServerResult,
    ValidationResult, Variables,
};
use futures_util::StreamExt;

use crate::app::AppState;
use crate::security::deadline::OperationDeadline;
use crate::security::document::DocumentLimits;
use crate::security::rate_limit::WebSocketBudget;

#[derive(MergedObject, Default)]
pub struct Query(
    events::EventQuery,
    bookings::BookingQuery,
    reservations::ReservationQuery,
    users::UserQuery,
    venues::VenueQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    users::UserMutation,
    bookings::BookingMutation,
    reservations::ReservationMutation,
    events::EventMutation,
    venues::VenueMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    subscription::AvailabilitySubscription,
    seatmap::SeatMapSubscription,
);

pub type EventlySchema = Schema<Query, Mutation, Subscription>;

/// The schema without application state: enough to print the SDL.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .extension(ErrorCodes)
}

/// The served schema, with the limits of `config.graphql` (README, "Security model").
pub fn build_schema(state: AppState) -> EventlySchema {
    let limits = &state.config.graphql;
    let mut builder = schema_builder()
        .extension(DocumentLimits {
            max_depth: limits.max_depth,
            max_document_bytes: limits.max_document_bytes,
            max_aliases: limits.max_aliases,
            max_directives: limits.max_directives,
            introspection: limits.introspection,
            parsed: Default::default(),
        })
        .extension(state.persisted_queries.clone())
        .extension(WebSocketBudget);
    if let Some(timeout) = limits.timeout {
        builder = builder.extension(OperationDeadline(timeout));
    }
    if limits.max_complexity > 0 {
        builder = builder.limit_complexity(limits.max_complexity);
    }
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if !limits.suggestions {
        builder = builder.disable_suggestions();
    }
    builder.data(state).finish()
}

pub fn sdl() -> String {
    schema_builder().finish().sdl()
}

/// Gives every error an `extensions.code`. Ours carry one already; async-graphql's own errors
/// get the codes Apollo clients know: a document that does not parse or validate, or an
/// argument value that cannot be coerced to its type (which is the caller's input).
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

fn with_code(mut error: ServerError, code: &'static str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

fn fill_codes(mut response: Response) -> Response {
    response.errors = response
        .errors
        .into_iter()
        .map(|e| with_code(e, "BAD_USER_INPUT"))
        .collect();
    response
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        fill_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(fill_codes).boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    // A value that does not fit its argument's type is the caller's input, as in
                    // Apollo Server; every other rule broken is a problem with the document.
                    let code = if e.message.starts_with("Invalid value for argument") {
                        "BAD_USER_INPUT"
                    } else {
                        "GRAPHQL_VALIDATION_FAILED"
                    };
                    with_code(e, code)
                })
                .collect()
        })
    }
}
