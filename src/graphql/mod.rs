//! The GraphQL schema: one file per domain, each with its objects, inputs, queries, mutations
//! and subscriptions, merged here. The order of the merges is the order of the fields of
//! `Query`, `Mutation` and `Subscription` in `schema.graphql`.
//!
//! Shared pieces live once each: ids in `ids`, cursors and connections in `connections`, error
//! codes in `error_codes`, the caller in `context`, the DataLoaders in `loaders`.

mod analytics;
mod audit;
mod auth;
mod bookings;
mod commerce;
mod connections;
pub mod context;
mod error_codes;
mod event_inputs;
mod events;
mod holds;
mod ids;
pub mod loaders;
mod orders;
mod reservations;
mod revenue;
mod rsvp;
pub mod seats;
mod users;
mod venues;
mod waitlist;

use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};

use crate::app::AppState;
use crate::security::deadline::OperationDeadline;
use crate::security::document::DocumentLimits;
use crate::security::rate_limit::WebSocketBudget;
use error_codes::ErrorCodes;

#[derive(MergedObject, Default)]
pub struct Query(
    events::EventQuery,
    bookings::BookingQuery,
    holds::HoldQuery,
    waitlist::WaitlistQuery,
    users::UserQuery,
    venues::VenueQuery,
    analytics::AnalyticsQuery,
    audit::AuditQuery,
    orders::OrderQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    auth::AuthMutation,
    users::UserMutation,
    bookings::BookingMutation,
    holds::HoldMutation,
    waitlist::WaitlistMutation,
    rsvp::RsvpMutation,
    events::EventMutation,
    venues::VenueMutation,
    commerce::CommerceMutation,
    orders::OrderMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    events::EventSubscription,
    reservations::ReservationSubscription,
    seats::SeatSubscription,
    analytics::AnalyticsSubscription,
    orders::OrderSubscription,
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
    // Outside the document cache (`DocumentLimits`), so it sees every document parsed.
    .extension(crate::telemetry::metrics::OperationMetrics)
    .extension(crate::telemetry::traces::OperationSpan)
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
