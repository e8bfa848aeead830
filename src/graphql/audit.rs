//! The audit log: `auditLog`, one event's entries for its organizer and admins, or the whole
//! platform's for admins. Read-only: nothing in the API changes or deletes an entry.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::connections::{Listed, TotalCount, connection, page_complexity};
use super::context::{ContextExt, require_viewer};
use super::ids::{parse_id, to_id};
use super::users::{UserView, load_user};
use crate::domain::audit::{self, AuditEntry};
use crate::domain::pagination::{Cursor, PageRequest};
use crate::domain::stats;
use crate::error::AppError;

impl Listed for AuditEntry {
    fn cursor(&self) -> Cursor {
        Cursor {
            at: self.at,
            id: self.id,
        }
    }
}

/// One organizer or admin action, recorded in the same transaction as the action.
pub struct AuditEntryView(AuditEntry);

#[Object(name = "AuditEntry")]
impl AuditEntryView {
    async fn id(&self) -> ID {
        to_id(self.0.id)
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// Who did it.
    async fn actor(&self, ctx: &Context<'_>) -> async_graphql::Result<UserView> {
        load_user(ctx, self.0.actor_id).await
    }
    async fn actor_id(&self) -> ID {
        to_id(self.0.actor_id)
    }
    /// What was done: `event.create`, `event.update`, `event.publish`, `event.cancel`,
    /// `user.set_role`, `user.revoke_sessions`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// What it was done to: `event` or `user`.
    async fn subject_type(&self) -> &str {
        &self.0.subject_type
    }
    async fn subject_id(&self) -> ID {
        to_id(self.0.subject_id)
    }
    async fn event_id(&self) -> Option<ID> {
        self.0.event_id.map(to_id)
    }
    /// The fields the action changed, as they were (null for a creation).
    async fn before(&self) -> Option<async_graphql::Json<serde_json::Value>> {
        self.0.before.clone().map(async_graphql::Json)
    }
    /// The fields the action changed, as they became.
    async fn after(&self) -> Option<async_graphql::Json<serde_json::Value>> {
        self.0.after.clone().map(async_graphql::Json)
    }
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Newest first. With `eventId`: that event's entries, for its organizer or an ADMIN
    /// (others FORBIDDEN, someone else's draft NOT_FOUND). Without: every entry, ADMIN only.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        event_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuditEntryView, TotalCount>> {
        let viewer = require_viewer(ctx).await?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let event_id = match event_id {
            Some(id) => {
                let id = parse_id(&id, "eventId")?;
                stats::event_for_analytics(&mut conn, &viewer, id).await?;
                Some(id)
            }
            None if viewer.is_admin() => None,
            None => {
                return Err(AppError::Forbidden("only admins can read the whole audit log").into());
            }
        };
        let entries = audit::list_entries(&mut conn, event_id, page).await?;
        let total_count = TotalCount::new(move |conn| {
            Box::pin(async move { audit::count_entries(conn, event_id).await })
        });
        Ok(connection(entries, &page, AuditEntryView, total_count))
    }
}
