//! What an organizer sets up to sell tickets for money: `Money`, `TicketType`, `Quota`,
//! `PromoCode`, an event's `sales` settings, and the mutations that create and change them.
//! Orders, payments and refunds are in `orders`.

use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::{ContextExt, require_viewer, viewer};
use super::ids::{parse_id, parse_ids, to_id};
use crate::app::AppState;
use crate::db::commerce::{self as rows, EventSales, PromoCode, Quota, TicketType};
use crate::db::models::Event;
use crate::domain::commerce::catalog::{self, NewTicketType, PaymentSettings, TicketTypePatch};
use crate::domain::commerce::codes::{self, NewPromoCode};
use crate::domain::commerce::manages;
use crate::error::AppError;

/// An amount of money: integer minor units (cents) of an ISO 4217 currency. No floats.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "MoneyInput")]
pub struct Money {
    /// Minor units: 1250 is 12.50 EUR (and 1250 JPY, which has no minor unit).
    pub amount: i32,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: &str) -> Self {
        Self {
            amount: i32::try_from(amount).unwrap_or(i32::MAX),
            currency: currency.to_owned(),
        }
    }
}

impl From<Money> for catalog::Money {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount.into(),
            currency: money.currency,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "rows::Provider")]
pub enum PaymentProvider {
    /// Bank transfer, invoice or at the door: the organizer marks orders paid.
    Manual,
    /// Cards through Stripe: the buyer confirms the `clientSecret` with Stripe.js.
    Stripe,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "rows::DiscountKind")]
pub enum DiscountKind {
    /// `value` percent off the lines it applies to (rounded down to a minor unit).
    Percent,
    /// `value` minor units off the lines it applies to.
    Fixed,
}

pub struct TicketTypeView {
    pub row: TicketType,
    /// The event's free seats, the outermost limit of every type.
    pub event_available: i32,
    /// The least of its quotas' free tickets, when it is in any.
    pub quota_available: Option<i32>,
    /// The free seats of its sections, when it is tied to some.
    pub section_available: Option<i32>,
}

#[Object(name = "TicketType")]
impl TicketTypeView {
    async fn id(&self) -> ID {
        to_id(self.row.id)
    }
    async fn name(&self) -> &str {
        &self.row.name
    }
    async fn description(&self) -> Option<&str> {
        self.row.description.as_deref()
    }
    async fn price(&self) -> Money {
        Money::new(self.row.price_amount, &self.row.currency)
    }
    /// Its own limit, apart from its quotas and the event's capacity; null: none.
    async fn quantity(&self) -> Option<i32> {
        self.row.quantity
    }
    async fn sales_start_at(&self) -> Option<DateTime<Utc>> {
        self.row.sales_start_at
    }
    async fn sales_end_at(&self) -> Option<DateTime<Utc>> {
        self.row.sales_end_at
    }
    async fn min_per_order(&self) -> i32 {
        self.row.min_per_order
    }
    async fn max_per_order(&self) -> i32 {
        self.row.max_per_order
    }
    /// Shown only to the organizer, admins, and buyers with a code that unlocks it.
    async fn hidden(&self) -> bool {
        self.row.hidden
    }
    /// Tickets of this type in paid orders.
    async fn sold(&self) -> i32 {
        self.row.sold
    }
    /// The sections of the event's seat map its seats are in (a theatre's tier: "Stalls" is
    /// section A); empty: any seat.
    async fn sections(&self) -> &[String] {
        &self.row.sections
    }
    /// Tickets of this type that can still be ordered: the least of its own quantity, its
    /// quotas, the free seats of its sections and the event's free seats.
    async fn available(&self) -> i32 {
        let own = self
            .row
            .quantity
            .map_or(i32::MAX, |q| q - self.row.held - self.row.sold);
        own.min(self.event_available)
            .min(self.quota_available.unwrap_or(i32::MAX))
            .min(self.section_available.unwrap_or(i32::MAX))
            .max(0)
    }
}

pub(super) async fn event_ticket_types(
    ctx: &Context<'_>,
    event: &Event,
    access_code: Option<&str>,
) -> async_graphql::Result<Vec<TicketTypeView>> {
    if event.currency.is_none() {
        return Ok(Vec::new());
    }
    let viewer = viewer(ctx).await?;
    let mut conn = ctx.app().conn().await?;
    let types =
        catalog::visible_ticket_types(&mut conn, viewer.as_ref(), event, access_code).await?;
    let stock = crate::domain::stock::Stock::load(&mut conn, event.id).await?;
    Ok(types
        .into_iter()
        .map(|row| TicketTypeView {
            quota_available: stock.quotas_of(row.id).map(|q| q.available).min(),
            section_available: stock.section_available(&row),
            event_available: event.seats_available,
            row,
        })
        .collect())
}

pub struct QuotaView(pub Quota);

#[Object(name = "Quota")]
impl QuotaView {
    async fn id(&self) -> ID {
        to_id(self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn size(&self) -> i32 {
        self.0.size
    }
    /// available + held + sold = size, always.
    async fn available(&self) -> i32 {
        self.0.available
    }
    async fn held(&self) -> i32 {
        self.0.held
    }
    async fn sold(&self) -> i32 {
        self.0.sold
    }
    async fn ticket_type_ids(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ID>> {
        let mut conn = ctx.app().conn().await?;
        let ids = catalog::quota_types(&mut conn, self.0.id).await?;
        Ok(ids.into_iter().map(to_id).collect())
    }
}

pub struct PromoCodeView(pub PromoCode);

#[Object(name = "PromoCode")]
impl PromoCodeView {
    async fn id(&self) -> ID {
        to_id(self.0.id)
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn discount(&self) -> DiscountKind {
        self.0.discount_kind.into()
    }
    async fn value(&self) -> i32 {
        i32::try_from(self.0.value).unwrap_or(i32::MAX)
    }
    async fn max_uses(&self) -> Option<i32> {
        self.0.max_uses
    }
    /// Orders placed with it (one whose hold expired unpaid gives its use back).
    async fn uses(&self) -> i32 {
        self.0.uses
    }
    async fn valid_from(&self) -> Option<DateTime<Utc>> {
        self.0.valid_from
    }
    async fn valid_until(&self) -> Option<DateTime<Utc>> {
        self.0.valid_until
    }
    async fn unlocks_hidden(&self) -> bool {
        self.0.unlocks_hidden
    }
    /// The types it applies to; empty: all of the event's.
    async fn ticket_type_ids(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ID>> {
        let mut conn = ctx.app().conn().await?;
        let ids = codes::code_types(&mut conn, self.0.id).await?;
        Ok(ids.into_iter().map(to_id).collect())
    }
}

pub struct EventSalesView {
    sales: EventSales,
    event: Event,
}

#[Object(name = "EventSales")]
impl EventSalesView {
    async fn payment_provider(&self) -> PaymentProvider {
        self.sales.payment_provider.into()
    }
    /// How long a manual payment may take: an order's seats are held this many days.
    async fn payment_window_days(&self) -> i32 {
        self.sales.payment_window_days
    }
    /// Buyers may cancel a paid order for a full refund until then; null: they may not.
    async fn refund_until(&self) -> Option<DateTime<Utc>> {
        self.sales.refund_until
    }
    /// Its quotas: for its organizer and admins (empty for anyone else).
    async fn quotas(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<QuotaView>> {
        let viewer = viewer(ctx).await?;
        if !manages(viewer.as_ref(), &self.event) {
            return Ok(Vec::new());
        }
        let mut conn = ctx.app().conn().await?;
        let quotas = catalog::event_quotas(&mut conn, self.event.id).await?;
        Ok(quotas.into_iter().map(QuotaView).collect())
    }
    /// Its promo and access codes: for its organizer and admins.
    async fn promo_codes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PromoCodeView>> {
        let viewer = require_viewer(ctx).await?;
        let mut conn = ctx.app().conn().await?;
        let codes = codes::event_promo_codes(&mut conn, &viewer, &self.event).await?;
        Ok(codes.into_iter().map(PromoCodeView).collect())
    }
}

pub(super) async fn event_sales(
    ctx: &Context<'_>,
    event: &Event,
) -> async_graphql::Result<EventSalesView> {
    let mut conn = ctx.app().conn().await?;
    let sales = crate::domain::commerce::event_sales(&mut conn, event.id).await?;
    Ok(EventSalesView {
        sales,
        event: event.clone(),
    })
}

/// Carries out the refunds recorded PENDING (a cancelled event's), apart from the request.
pub(super) fn send_refunds_in_background(app: &AppState) {
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(error) =
            crate::checkout::send_pending_refunds(&app, std::time::Duration::ZERO, 10_000).await
        {
            tracing::warn!(error = %error.message(), "sending a cancelled event's refunds failed");
        }
    });
}

#[derive(InputObject)]
pub struct CreateTicketTypeInput {
    pub name: String,
    pub description: Option<String>,
    pub price: Money,
    /// Its own limit; null: only its quotas and the event's capacity limit it.
    pub quantity: Option<i32>,
    pub sales_start_at: Option<DateTime<Utc>>,
    pub sales_end_at: Option<DateTime<Utc>>,
    /// Default 1.
    pub min_per_order: Option<i32>,
    /// Default the event's `maxPerBooking`.
    pub max_per_order: Option<i32>,
    #[graphql(default)]
    pub hidden: bool,
    /// At a seated event, the sections of its seat map this type sells seats in (a theatre's
    /// tiers); a seat elsewhere is refused (SEAT_NOT_IN_TICKET_TYPE). Default: any seat.
    #[graphql(default)]
    pub sections: Vec<String>,
}

#[derive(InputObject)]
pub struct UpdateTicketTypeInput {
    pub name: Option<String>,
    pub description: MaybeUndefined<String>,
    pub price: Option<Money>,
    pub quantity: MaybeUndefined<i32>,
    pub sales_start_at: MaybeUndefined<DateTime<Utc>>,
    pub sales_end_at: MaybeUndefined<DateTime<Utc>>,
    pub min_per_order: Option<i32>,
    pub max_per_order: Option<i32>,
    pub hidden: Option<bool>,
    /// The sections it sells seats in; [] for any seat; absent or null: unchanged.
    pub sections: Option<Vec<String>>,
}

fn patch<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

#[derive(InputObject)]
pub struct CreatePromoCodeInput {
    /// Case-insensitive; 1 to 64 characters without spaces.
    pub code: String,
    pub discount: DiscountKind,
    /// A percentage (0–100) or minor units.
    pub value: i32,
    /// Null: unlimited. Exact under any concurrency.
    pub max_uses: Option<i32>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    /// The types it applies to (and unlocks); empty: all of the event's.
    #[graphql(default)]
    pub ticket_type_ids: Vec<ID>,
    /// An access code: buyers who have it see (and may order) the hidden types it names.
    #[graphql(default)]
    pub unlocks_hidden: bool,
}

#[derive(InputObject)]
pub struct PaymentSettingsInput {
    /// STRIPE only when this server is configured for it.
    pub payment_provider: Option<PaymentProvider>,
    pub payment_window_days: Option<i32>,
    /// Until when buyers may cancel a paid order for a full refund; null: never.
    pub refund_until: MaybeUndefined<DateTime<Utc>>,
}

#[derive(Default)]
pub struct CommerceMutation;

#[Object]
impl CommerceMutation {
    /// The event's organizer or an admin. The event's first ticket type fixes its currency;
    /// from then on it sells only through `placeOrder`.
    async fn create_ticket_type(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        input: CreateTicketTypeInput,
    ) -> async_graphql::Result<TicketTypeView> {
        let viewer = &require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let new = NewTicketType {
            name: input.name,
            description: input.description,
            price: input.price.into(),
            quantity: input.quantity,
            sales_start_at: input.sales_start_at,
            sales_end_at: input.sales_end_at,
            min_per_order: input.min_per_order,
            max_per_order: input.max_per_order,
            hidden: input.hidden,
            sections: input.sections,
        };
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let created = catalog::create_ticket_type(&mut conn, viewer, event_id, new).await?;
        let row = app.commit(created);
        view_of(ctx, row).await
    }

    async fn update_ticket_type(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTicketTypeInput,
    ) -> async_graphql::Result<TicketTypeView> {
        let viewer = &require_viewer(ctx).await?;
        let id = parse_id(&id, "id")?;
        let change = TicketTypePatch {
            name: input.name,
            description: patch(input.description),
            price: input.price.map(Into::into),
            quantity: patch(input.quantity),
            sales_start_at: patch(input.sales_start_at),
            sales_end_at: patch(input.sales_end_at),
            min_per_order: input.min_per_order,
            max_per_order: input.max_per_order,
            hidden: input.hidden,
            sections: input.sections,
        };
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let updated = catalog::update_ticket_type(&mut conn, viewer, id, change).await?;
        let row = app.commit(updated);
        view_of(ctx, row).await
    }

    /// A limit shared by several ticket types ("Early bird and Regular together at most
    /// 300"). A ticket counts against every quota of its type.
    async fn create_quota(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        name: String,
        size: i32,
        ticket_type_ids: Vec<ID>,
    ) -> async_graphql::Result<QuotaView> {
        let viewer = &require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let ids = parse_ids(&ticket_type_ids, "ticketTypeIds")?;
        let mut conn = ctx.app().conn().await?;
        let quota = catalog::create_quota(&mut conn, viewer, event_id, name, size, ids).await?;
        Ok(QuotaView(quota))
    }

    async fn create_promo_code(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        input: CreatePromoCodeInput,
    ) -> async_graphql::Result<PromoCodeView> {
        let viewer = &require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let new = NewPromoCode {
            code: input.code,
            discount: input.discount.into(),
            value: input.value.into(),
            max_uses: input.max_uses,
            valid_from: input.valid_from,
            valid_until: input.valid_until,
            ticket_type_ids: parse_ids(&input.ticket_type_ids, "ticketTypeIds")?,
            unlocks_hidden: input.unlocks_hidden,
        };
        let mut conn = ctx.app().conn().await?;
        let code = codes::create_promo_code(&mut conn, viewer, event_id, new).await?;
        Ok(PromoCodeView(code))
    }

    /// How the event is paid for, and its refund policy.
    async fn update_payment_settings(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        input: PaymentSettingsInput,
    ) -> async_graphql::Result<EventSalesView> {
        let viewer = &require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let settings = PaymentSettings {
            provider: input.payment_provider.map(Into::into),
            payment_window_days: input.payment_window_days,
            refund_until: patch(input.refund_until),
        };
        let app = ctx.app();
        let mut conn = app.conn().await?;
        let stripe = app.payments.stripe_configured();
        let sales =
            catalog::update_payment_settings(&mut conn, viewer, event_id, settings, stripe).await?;
        let event = crate::domain::rows::find_event(&mut conn, event_id)
            .await?
            .ok_or(AppError::NotFound("event"))?;
        Ok(EventSalesView { sales, event })
    }
}

async fn view_of(ctx: &Context<'_>, row: TicketType) -> async_graphql::Result<TicketTypeView> {
    let mut conn = ctx.app().conn().await?;
    let event = crate::domain::rows::find_event(&mut conn, row.event_id)
        .await?
        .ok_or(AppError::NotFound("event"))?;
    let stock = crate::domain::stock::Stock::load(&mut conn, event.id).await?;
    Ok(TicketTypeView {
        quota_available: stock.quotas_of(row.id).map(|q| q.available).min(),
        section_available: stock.section_available(&row),
        event_available: event.seats_available,
        row,
    })
}
