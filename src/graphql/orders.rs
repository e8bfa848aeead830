//! Orders: the `Order` object with its lines, payment and tickets; `placeOrder`, `cancelOrder`,
//! `markOrderPaid`, `refundOrder`; `order`, `myOrders`, `eventOrders`; and `orderUpdated`,
//! which sends the order again each time it moves.
//!
//! The resolvers go through `crate::checkout`, which calls the payment provider between
//! transactions, never inside one.

use async_graphql::connection::Connection;
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, InputObject, Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, stream};

use super::commerce::{Money, PaymentProvider, TicketTypeView};
use super::connections::{TotalCount, connection, page_complexity};
use super::context::{ContextExt, require_viewer};
use super::events::{EventView, load_event};
use super::ids::{parse_id, parse_ids, to_id};
use super::loaders::{TicketSeatLoader, TicketTypeLoader};
use super::seats::SeatView;
use super::users::{UserView, load_user};
use crate::checkout;
use crate::db::commerce::{self as rows, Order, OrderLine, Refund, Ticket};
use crate::domain::commerce::listing;
use crate::domain::commerce::orders::{LineRequest, OrderRequest};
use crate::domain::commerce::refunds::{RefundRequest, order_refunds};
use crate::domain::pagination::PageRequest;
use crate::domain::seats::SeatOwner;
use crate::error::AppError;
use crate::realtime::{Topic, Update};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "rows::OrderStatus")]
pub enum OrderStatus {
    /// Placed; its seats are held until `expiresAt` while the buyer pays.
    PendingPayment,
    /// Paid: its tickets are valid.
    Paid,
    /// Not paid in time: its seats went back on sale.
    Expired,
    /// Cancelled before it was paid.
    Cancelled,
    PartiallyRefunded,
    Refunded,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "rows::TicketStatus")]
pub enum TicketStatus {
    Valid,
    Refunded,
    /// Its event was cancelled.
    Cancelled,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "rows::RefundStatus")]
pub enum RefundStatus {
    /// Sent (or about to be) to the payment provider.
    Pending,
    Succeeded,
    Failed,
}

pub struct OrderView(pub Order);

#[Object(name = "Order")]
impl OrderView {
    pub(crate) async fn id(&self) -> ID {
        to_id(self.0.id)
    }
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }
    pub(crate) async fn event(&self, ctx: &Context<'_>) -> async_graphql::Result<EventView> {
        load_event(ctx, self.0.event_id).await
    }
    pub(crate) async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<UserView> {
        load_user(ctx, self.0.user_id).await
    }
    /// How many tickets the order is for: its lines' quantities together.
    pub(crate) async fn quantity(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let mut conn = ctx.app().conn().await?;
        let lines = listing::order_lines(&mut conn, self.0.id).await?;
        Ok(lines.iter().map(|line| line.quantity).sum())
    }
    async fn lines(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<OrderLineView>> {
        let mut conn = ctx.app().conn().await?;
        let lines = listing::order_lines(&mut conn, self.0.id).await?;
        Ok(lines
            .into_iter()
            .map(|line| OrderLineView {
                line,
                currency: self.0.currency.clone(),
            })
            .collect())
    }
    async fn subtotal(&self) -> Money {
        Money::new(self.0.subtotal, &self.0.currency)
    }
    async fn discount(&self) -> Money {
        Money::new(self.0.discount, &self.0.currency)
    }
    /// subtotal − discount: what the buyer pays.
    async fn total(&self) -> Money {
        Money::new(self.0.total, &self.0.currency)
    }
    /// Until when its seats are held while it waits for payment.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    async fn payment(&self) -> PaymentView {
        PaymentView(self.0.clone())
    }
    /// One per seat once it is PAID.
    async fn tickets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TicketView>> {
        let mut conn = ctx.app().conn().await?;
        let tickets = listing::order_tickets(&mut conn, self.0.id).await?;
        Ok(tickets.into_iter().map(TicketView).collect())
    }
    async fn refunds(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<RefundView>> {
        let mut conn = ctx.app().conn().await?;
        let refunds = order_refunds(&mut conn, self.0.id).await?;
        Ok(refunds
            .into_iter()
            .map(|refund| RefundView {
                refund,
                currency: self.0.currency.clone(),
            })
            .collect())
    }
    /// Why it is where it is, for the buyer: a payment that came after the hold expired and
    /// was refunded because the seats were gone, a cancelled event, a failed payment.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// Goes up by one with every change (as `orderUpdated` sends it).
    async fn version(&self) -> i32 {
        self.0.version
    }
    pub(crate) async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.0.paid_at
    }
}

pub struct OrderLineView {
    line: OrderLine,
    currency: String,
}

#[Object(name = "OrderLine")]
impl OrderLineView {
    async fn id(&self) -> ID {
        to_id(self.line.id)
    }
    async fn ticket_type(&self, ctx: &Context<'_>) -> async_graphql::Result<TicketTypeView> {
        load_ticket_type(ctx, self.line.ticket_type_id).await
    }
    async fn quantity(&self) -> i32 {
        self.line.quantity
    }
    async fn unit_price(&self) -> Money {
        Money::new(self.line.unit_price, &self.currency)
    }
    /// unitPrice × quantity, before the order's discount.
    async fn total(&self) -> Money {
        Money::new(self.line.total, &self.currency)
    }
    /// A seated event's seats of this line.
    async fn seats(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SeatView>> {
        match self.line.booking_id {
            Some(booking) => super::seats::seats_of(ctx, SeatOwner::Booking(booking)).await,
            None => Ok(Vec::new()),
        }
    }
    /// Whether it was refunded (its tickets are no longer valid).
    async fn refunded(&self) -> bool {
        self.line.refund_id.is_some()
    }
}

pub struct PaymentView(Order);

#[Object(name = "Payment")]
impl PaymentView {
    async fn provider(&self) -> PaymentProvider {
        self.0.provider.into()
    }
    /// `awaiting_buyer`, `succeeded` or `failed` (the buyer may try again).
    async fn status(&self) -> &str {
        &self.0.payment_status
    }
    /// What Stripe.js confirms the payment with; null for manual payments, and until the
    /// intent is created (place the order again with the same idempotencyKey).
    async fn client_secret(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<&str>> {
        let viewer = require_viewer(ctx).await?;
        Ok(self
            .0
            .client_secret
            .as_deref()
            .filter(|_| viewer.id() == self.0.user_id))
    }
    async fn amount_paid(&self) -> Money {
        Money::new(self.0.amount_paid, &self.0.currency)
    }
    async fn amount_refunded(&self) -> Money {
        Money::new(self.0.amount_refunded, &self.0.currency)
    }
    /// The reference given when a manual payment was marked received.
    async fn reference(&self) -> Option<&str> {
        self.0.payment_reference.as_deref()
    }
}

pub struct TicketView(pub Ticket);

#[Object(name = "Ticket")]
impl TicketView {
    async fn id(&self) -> ID {
        to_id(self.0.id)
    }
    async fn ticket_type(&self, ctx: &Context<'_>) -> async_graphql::Result<TicketTypeView> {
        load_ticket_type(ctx, self.0.ticket_type_id).await
    }
    /// The seat of a seated event; null for general admission.
    async fn seat(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<SeatView>> {
        let Some(seat_id) = self.0.seat_id else {
            return Ok(None);
        };
        let seat = ctx
            .data_unchecked::<DataLoader<TicketSeatLoader>>()
            .load_one(seat_id)
            .await?;
        Ok(seat.map(SeatView))
    }
    /// What the door scans: random and unguessable.
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn status(&self) -> TicketStatus {
        self.0.status.into()
    }
    /// For check-in (a later issue).
    async fn checked_in_at(&self) -> Option<DateTime<Utc>> {
        self.0.checked_in_at
    }
}

pub struct RefundView {
    refund: Refund,
    currency: String,
}

#[Object(name = "Refund")]
impl RefundView {
    async fn id(&self) -> ID {
        to_id(self.refund.id)
    }
    async fn amount(&self) -> Money {
        Money::new(self.refund.amount, &self.currency)
    }
    async fn status(&self) -> RefundStatus {
        self.refund.status.into()
    }
    async fn reason(&self) -> Option<&str> {
        self.refund.reason.as_deref()
    }
    async fn line_ids(&self) -> Vec<ID> {
        self.refund.line_ids.iter().copied().map(to_id).collect()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.refund.created_at
    }
}

#[derive(InputObject)]
pub struct OrderLineInput {
    pub ticket_type_id: ID,
    /// Defaults to the number of `seatIds`, or 1.
    pub quantity: Option<i32>,
    /// Particular seats of a seated event.
    #[graphql(default)]
    pub seat_ids: Vec<ID>,
}

#[derive(InputObject)]
pub struct PlaceOrderInput {
    pub event_id: ID,
    pub lines: Vec<OrderLineInput>,
    /// A promo or access code, in any case.
    pub promo_code: Option<String>,
    /// The same key always returns the same order (send one per checkout).
    pub idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct RefundOrderInput {
    /// Lines to refund whole: their seats go back on sale. Leave out (with `amount`) to
    /// refund an amount only; leave both out to refund everything left.
    #[graphql(default)]
    pub lines: Vec<ID>,
    /// Minor units; by default what the lines came to after the discount.
    pub amount: Option<i32>,
    pub reason: Option<String>,
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// The order, for its buyer, the event's organizer and admins.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<OrderView> {
        let viewer = require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let mut conn = ctx.app().conn().await?;
        Ok(OrderView(
            listing::visible_order(&mut conn, &viewer, id).await?,
        ))
    }

    /// The signed-in user's orders, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn my_orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, OrderView, TotalCount>> {
        let viewer = require_viewer(ctx).await?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = listing::user_orders(&mut conn, viewer.id(), page).await?;
        let user_id = viewer.id();
        let total_count =
            TotalCount::new(move |conn| Box::pin(listing::count_user_orders(conn, user_id)));
        Ok(connection(rows, &page, OrderView, total_count))
    }

    /// An event's orders, newest first: for its organizer and admins.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn event_orders(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, OrderView, TotalCount>> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let page = PageRequest::new(first, after.as_deref())?;
        let mut conn = ctx.app().conn().await?;
        let rows = listing::event_orders(&mut conn, &viewer, event_id, page).await?;
        let total_count =
            TotalCount::new(move |conn| Box::pin(listing::count_event_orders(conn, event_id)));
        Ok(connection(rows, &page, OrderView, total_count))
    }
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Orders tickets: holds their seats until paid (or `expiresAt`), and returns the order
    /// with its payment (`clientSecret` for Stripe.js). A free order is PAID at once.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<OrderView> {
        let viewer = require_viewer(ctx).await?;
        let mut lines = Vec::with_capacity(input.lines.len());
        for line in &input.lines {
            lines.push(LineRequest {
                ticket_type_id: parse_id(&line.ticket_type_id, "ticketTypeId")?,
                quantity: line.quantity,
                seat_ids: parse_ids(&line.seat_ids, "seatIds")?,
            });
        }
        let request = OrderRequest {
            event_id: parse_id(&input.event_id, "eventId")?,
            lines,
            promo_code: input.promo_code,
            idempotency_key: input.idempotency_key,
        };
        let order = checkout::place_order(ctx.app(), &viewer, request).await?;
        Ok(OrderView(order))
    }

    /// The buyer (or an admin): a pending order is cancelled at once; a paid one is refunded
    /// in full while the event's `refundUntil` has not passed (then BAD_USER_INPUT with reason
    /// REFUND_PERIOD_OVER, or REFUNDS_NOT_OFFERED when the event has none).
    async fn cancel_order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<OrderView> {
        let viewer = require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        Ok(OrderView(
            checkout::cancel_order(ctx.app(), &viewer, id).await?,
        ))
    }

    /// The event's organizer or an admin: a manual payment was received. Marking it again
    /// returns the order as it is.
    async fn mark_order_paid(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        reference: Option<String>,
    ) -> async_graphql::Result<OrderView> {
        let viewer = require_viewer(ctx).await?;
        let id = parse_id(&order_id, "orderId")?;
        let order = checkout::mark_order_paid(ctx.app(), &viewer, id, reference.as_deref()).await?;
        Ok(OrderView(order))
    }

    /// The event's organizer or an admin: refunds lines (their seats go back on sale), an
    /// amount, or everything left, through the order's payment provider.
    async fn refund_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        input: Option<RefundOrderInput>,
    ) -> async_graphql::Result<OrderView> {
        let viewer = require_viewer(ctx).await?;
        let id = parse_id(&order_id, "orderId")?;
        let input = input.unwrap_or(RefundOrderInput {
            lines: Vec::new(),
            amount: None,
            reason: None,
        });
        let request = RefundRequest {
            line_ids: parse_ids(&input.lines, "lines")?,
            amount: input.amount.map(Into::into),
            reason: input.reason,
        };
        Ok(OrderView(
            checkout::refund_order(ctx.app(), &viewer, id, request).await?,
        ))
    }
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order now, then again each time it moves (paid, expired, refunded, its payment
    /// failed): for its buyer, the event's organizer and admins. Wait on this after
    /// confirming the payment with Stripe.js: it arrives PAID with its tickets.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<OrderView>> + use<>> {
        let viewer = require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let app = ctx.app().clone();
        let updates = app.bus.subscribe(Topic::Order(id));
        let first = {
            let mut conn = app.conn().await?;
            listing::visible_order(&mut conn, &viewer, id).await?
        };
        let mut seen = first.version;
        let later = updates
            .filter_map(move |update| {
                let version = match update {
                    Update::Order(update) => Some(update.version),
                    _ => None,
                };
                std::future::ready(version)
            })
            .filter_map(move |version| {
                let app = app.clone();
                async move {
                    if version <= seen {
                        return None;
                    }
                    let mut conn = app.conn().await.ok()?;
                    let order = crate::domain::commerce::find_order(&mut conn, id)
                        .await
                        .ok()?;
                    Some(order)
                }
            })
            .filter(move |order| {
                let newer = order.version > seen;
                if newer {
                    seen = order.version;
                }
                std::future::ready(newer)
            });
        Ok(stream::once(std::future::ready(first))
            .chain(later)
            .map(|order| Ok(OrderView(order))))
    }
}

/// An order line's or a ticket's type, batched with the other lookups of the request. Its
/// availability is not shown here (`Event.ticketTypes` has it).
pub(crate) async fn load_ticket_type(
    ctx: &Context<'_>,
    id: uuid::Uuid,
) -> async_graphql::Result<TicketTypeView> {
    let row = ctx
        .data_unchecked::<DataLoader<TicketTypeLoader>>()
        .load_one(id)
        .await?
        .ok_or(AppError::NotFound("ticket type"))?;
    Ok(TicketTypeView {
        row,
        event_available: i32::MAX,
        quota_available: None,
        section_available: None,
    })
}
