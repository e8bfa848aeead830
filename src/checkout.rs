//! The order path across the database and the payment provider. No transaction (and no pooled
//! connection) is held across a provider call: each step is a domain transaction that commits
//! and is announced (`App::commit`), then the provider is called, then its answer is recorded
//! in another transaction.
//!
//! - Placing an order: the order and its hold commit, the intent is created with the order's
//!   id as the idempotency key, the intent is recorded. A retry with the same idempotency key
//!   returns the same order and creates its intent if that step was missed.
//! - A provider event (a verified webhook, a reconciliation, a manual payment) is applied once
//!   ([`apply_provider_event`]); a payment that came too late is refunded at once.
//! - A refund is recorded PENDING, sent with its id as the idempotency key, then applied
//!   ([`send_refund`]); the sweeper retries those the provider could not be reached for.
//! - Reconciliation ([`reconcile`]) retrieves the intents of orders pending (or expired) too
//!   long, in case a webhook never came.

use std::time::Duration;

use uuid::Uuid;

use crate::app::App;
use crate::db::commerce::{Order, OrderStatus, Provider};
use crate::domain::Viewer;
use crate::domain::commerce::payments::{self as order_payments, EventKey, PaymentOutcome};
use crate::domain::commerce::refunds::{self, RefundOutcome, RefundRequest, RefundStarted};
use crate::domain::commerce::{find_order, listing, orders};
use crate::error::{AppError, AppResult};
use crate::payments::{
    IntentStatus, NewIntent, NewRefund, PaymentError, ProviderEvent, ProviderEventKind,
    RefundStatus,
};

/// Places an order and creates its payment intent (see the module documentation). When the
/// provider cannot be reached the order is still returned, without a `clientSecret`: placing
/// it again with the same idempotency key tries again.
pub async fn place_order(
    app: &App,
    viewer: &Viewer,
    request: orders::OrderRequest,
) -> AppResult<Order> {
    let stripe = app.payments.stripe_configured();
    // Through the onsale path, which batches the orders of a busy event.
    let order = app.commit(app.onsale.place_order(viewer, request, stripe).await?);
    ensure_intent(app, order).await
}

/// Creates and records the intent of a pending order that has none yet.
pub async fn ensure_intent(app: &App, order: Order) -> AppResult<Order> {
    if order.status != OrderStatus::PendingPayment || order.intent_id.is_some() {
        return Ok(order);
    }
    let Some(provider) = app.payments.get(order.provider) else {
        return Ok(order);
    };
    let idempotency_key = format!("order-{}", order.id);
    let created = provider
        .create_intent(NewIntent {
            order_id: order.id,
            amount: order.total,
            currency: &order.currency,
            idempotency_key: &idempotency_key,
            description: None,
        })
        .await;
    let intent = match created {
        Ok(intent) => intent,
        Err(error) => {
            tracing::warn!(order_id = %order.id, %error, "creating a payment intent failed");
            return Ok(order);
        }
    };
    let mut conn = app.conn().await?;
    let recorded = orders::record_intent(
        &mut conn,
        order.id,
        &intent.id,
        intent.client_secret.as_deref(),
    )
    .await?;
    Ok(app.commit(recorded))
}

/// Applies a provider's event once. An error means it could not be applied (the webhook
/// answers non-2xx, so the provider sends it again).
pub async fn apply_provider_event(
    app: &App,
    provider: Provider,
    event: &ProviderEvent,
) -> AppResult<()> {
    let kind = match &event.kind {
        ProviderEventKind::PaymentSucceeded { .. } => "payment.succeeded",
        ProviderEventKind::PaymentFailed { .. } => "payment.failed",
        ProviderEventKind::PaymentCanceled { .. } => "payment.canceled",
        ProviderEventKind::RefundUpdated { .. } => "refund.updated",
        ProviderEventKind::Ignored { .. } => "ignored",
    };
    let key = EventKey {
        provider,
        id: &event.id,
        created: event.created,
        kind,
    };
    let intent = match &event.kind {
        ProviderEventKind::PaymentSucceeded { intent }
        | ProviderEventKind::PaymentFailed { intent, .. }
        | ProviderEventKind::PaymentCanceled { intent } => Some(intent),
        _ => None,
    };
    let mut conn = app.conn().await?;
    let Some(intent) = intent else {
        // Refund updates: our refunds are applied when the provider answers the request, so
        // a later update only confirms it.
        order_payments::record_event(&mut conn, &key).await?;
        return Ok(());
    };
    let order = match listing::order_of_intent(&mut conn, provider, &intent.id).await? {
        Some(order) => order,
        None => match intent.order_id {
            // The webhook may come before the intent was recorded: the metadata names it.
            Some(order_id) => find_order(&mut conn, order_id).await?,
            None => {
                tracing::warn!(intent = %intent.id, "a payment event for no known order");
                order_payments::record_event(&mut conn, &key).await?;
                return Ok(());
            }
        },
    };
    match &event.kind {
        ProviderEventKind::PaymentSucceeded { intent } => {
            let paid =
                order_payments::payment_succeeded(&mut conn, &key, order.id, intent.amount, None)
                    .await?;
            drop(conn);
            let PaymentOutcome { refund, .. } = app.commit(paid);
            if let Some(refund) = refund {
                send_refund(app, refund.id).await?;
            }
        }
        ProviderEventKind::PaymentFailed { message, .. } => {
            let failed =
                order_payments::payment_failed(&mut conn, &key, order.id, message.as_deref())
                    .await?;
            app.commit(failed);
        }
        ProviderEventKind::PaymentCanceled { .. } => {
            let cancelled = order_payments::payment_canceled(&mut conn, &key, order.id).await?;
            app.commit(cancelled);
        }
        _ => {}
    }
    Ok(())
}

/// The organizer received a manual payment.
pub async fn mark_order_paid(
    app: &App,
    viewer: &Viewer,
    order_id: Uuid,
    reference: Option<&str>,
) -> AppResult<Order> {
    let outcome = {
        let mut conn = app.conn().await?;
        app.commit(order_payments::mark_order_paid(&mut conn, viewer, order_id, reference).await?)
    };
    if let Some(refund) = &outcome.refund {
        send_refund(app, refund.id).await?;
        let mut conn = app.conn().await?;
        return find_order(&mut conn, order_id).await;
    }
    Ok(outcome.order)
}

/// The organizer's refund, carried out through the provider before answering.
pub async fn refund_order(
    app: &App,
    viewer: &Viewer,
    order_id: Uuid,
    request: RefundRequest,
) -> AppResult<Order> {
    let started = {
        let mut conn = app.conn().await?;
        app.commit(refunds::refund_order(&mut conn, viewer, order_id, request).await?)
    };
    finish(app, started).await
}

/// The buyer's cancellation (and refund, under the event's policy).
pub async fn cancel_order(app: &App, viewer: &Viewer, order_id: Uuid) -> AppResult<Order> {
    let started = {
        let mut conn = app.conn().await?;
        app.commit(refunds::cancel_order(&mut conn, viewer, order_id).await?)
    };
    // A cancelled intent cannot be paid any more; best effort (the hold is gone either way,
    // and a payment that still comes is refunded as a late one).
    if started.order.status == OrderStatus::Cancelled
        && let (Some(intent_id), Some(provider)) = (
            &started.order.intent_id,
            app.payments.get(started.order.provider),
        )
        && started.order.provider == Provider::Stripe
        && let Err(error) = provider.cancel_intent(intent_id).await
    {
        tracing::info!(order_id = %order_id, %error, "cancelling the payment intent failed");
    }
    finish(app, started).await
}

async fn finish(app: &App, started: RefundStarted) -> AppResult<Order> {
    let Some(refund) = started.refund else {
        return Ok(started.order);
    };
    send_refund(app, refund.id).await?;
    let mut conn = app.conn().await?;
    find_order(&mut conn, started.order.id).await
}

/// Sends a pending refund to its order's provider and applies the answer. One the provider
/// could not be reached for stays PENDING for the sweeper.
pub async fn send_refund(app: &App, refund_id: Uuid) -> AppResult<()> {
    let pending = {
        let mut conn = app.conn().await?;
        refunds::refund_to_send(&mut conn, refund_id).await?
    };
    let Some((refund, order)) = pending else {
        return Ok(());
    };
    let outcome = match (app.payments.get(order.provider), &order.intent_id) {
        (Some(provider), Some(intent_id)) => {
            let key = refund.id.to_string();
            let answer = provider
                .refund(NewRefund {
                    intent_id,
                    amount: refund.amount,
                    idempotency_key: &key,
                    reason: refund.reason.as_deref(),
                })
                .await;
            match answer {
                Ok(done) if done.status != RefundStatus::Failed => RefundOutcome::Succeeded {
                    provider_refund_id: done.id,
                },
                Ok(_) => RefundOutcome::Failed {
                    message: "the provider reported the refund failed".into(),
                },
                Err(PaymentError::Refused { code, message }) => RefundOutcome::Failed {
                    message: format!("{code}: {message}"),
                },
                Err(error) => {
                    tracing::warn!(%refund_id, %error, "a refund could not be sent; retrying later");
                    return Ok(());
                }
            }
        }
        (None, _) => {
            tracing::warn!(%refund_id, "a refund waits for its provider to be configured");
            return Ok(());
        }
        // A manual order without an intent (never expected): recorded as paid back by hand.
        (Some(_), None) => RefundOutcome::Succeeded {
            provider_refund_id: format!("manual_refund_{}", refund.id),
        },
    };
    let mut conn = app.conn().await?;
    let finished = refunds::finish_refund(&mut conn, refund.id, outcome).await?;
    app.commit(finished);
    Ok(())
}

/// Refunds the sweeper carries out: those the provider could not take when first sent, and
/// those a cancelled event recorded. Returns how many were sent.
pub async fn send_pending_refunds(app: &App, age: Duration, limit: i64) -> AppResult<usize> {
    let ids = {
        let mut conn = app.conn().await?;
        let age = chrono::Duration::from_std(age).unwrap_or_default();
        refunds::pending_refunds(&mut conn, age, limit).await?
    };
    for id in &ids {
        if let Err(error) = send_refund(app, *id).await {
            tracing::warn!(refund_id = %id, error = %error.message(), "sending a refund failed");
        }
    }
    Ok(ids.len())
}

/// Retrieves the intents of card orders that have waited `age` without news and applies what
/// the provider says (as an event `reconcile:<intent>:<status>`, so once). Returns how many it
/// looked at.
pub async fn reconcile(app: &App, age: Duration, limit: i64) -> AppResult<usize> {
    let Some(provider) = app.payments.get(Provider::Stripe).cloned() else {
        return Ok(0);
    };
    let due = {
        let mut conn = app.conn().await?;
        let age = chrono::Duration::from_std(age).unwrap_or_default();
        crate::domain::commerce::listing::due_for_reconciliation(&mut conn, age, limit).await?
    };
    for (order_id, intent_id) in &due {
        let intent = match provider.retrieve_intent(intent_id).await {
            Ok(intent) => intent,
            Err(error) => {
                tracing::info!(%order_id, %error, "reconciliation could not retrieve an intent");
                continue;
            }
        };
        let kind = match intent.status {
            IntentStatus::Succeeded => ProviderEventKind::PaymentSucceeded { intent },
            IntentStatus::Canceled => ProviderEventKind::PaymentCanceled { intent },
            IntentStatus::AwaitingBuyer | IntentStatus::Processing => continue,
        };
        let status = match &kind {
            ProviderEventKind::PaymentSucceeded { .. } => "succeeded",
            _ => "canceled",
        };
        let event = ProviderEvent {
            id: format!("reconcile:{intent_id}:{status}"),
            created: chrono::Utc::now().timestamp(),
            kind,
        };
        if let Err(error) = apply_provider_event(app, Provider::Stripe, &event).await {
            tracing::warn!(%order_id, error = %error.message(), "reconciliation could not apply");
        }
    }
    Ok(due.len())
}

impl From<PaymentError> for AppError {
    fn from(error: PaymentError) -> Self {
        match error {
            PaymentError::Unavailable(_) => AppError::Unavailable,
            other => AppError::Internal(other.into()),
        }
    }
}
