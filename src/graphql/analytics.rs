//! Analytics for organizers and admins: `eventStats`, `salesOverTime`, `organizerStats`,
//! `platformStats`, and `eventStatsUpdated`, the live figures of one event.
//!
//! Every figure is exact at the moment it is read: read from the committed rows in one
//! snapshot, never from a cache or a rollup (see `domain::stats`). The revenue figures' types
//! are in `revenue`.

use std::time::Duration;

use async_graphql::{Context, Enum, ID, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::context::{ContextExt, require_viewer};
use super::ids::{parse_id, to_id};
use super::revenue::{
    CurrencyAmount, CurrencyRevenue, PeriodRevenue, PromoCodeRevenue, TicketTypeRevenue, amounts,
    per_currency,
};
use crate::app::AppState;
use crate::domain::Viewer;
use crate::domain::stats::{self, periods, revenue};
use crate::error::{AppError, AppResult};
use crate::realtime::Topic;

/// An event's figures, all read in one snapshot at `readAt` (seats, bookings and revenue
/// alike): exact at that moment.
#[derive(SimpleObject, Clone, PartialEq)]
pub struct EventStats {
    pub event_id: ID,
    /// The event's version when read; it moves with every change of its seats.
    pub version: i32,
    pub capacity: i32,
    /// Seats in confirmed bookings.
    pub sold: i32,
    /// Seats kept by holds (checkouts in progress, waiting-list offers).
    pub held: i32,
    /// `capacity - sold - held`.
    pub available: i32,
    /// `sold ÷ capacity`, from 0 to 1 (0 when the capacity is 0).
    pub utilisation: f64,
    /// Bookings ever made, cancelled ones included.
    pub bookings: i32,
    /// Tickets of those bookings.
    pub tickets: i32,
    /// Bookings cancelled (by their buyer, or with the event).
    pub cancellations: i32,
    pub tickets_cancelled: i32,
    /// `cancellations ÷ bookings` (0 before the first booking).
    pub cancellation_rate: f64,
    /// Entries waiting for seats now.
    pub waitlist_length: i32,
    /// Waiting-list entries that were offered seats (or, for an RSVP, booked straight away).
    pub waitlist_promotions: i32,
    /// Offers that became bookings.
    pub waitlist_promotions_fulfilled: i32,
    /// For a free event: the RSVP answers. Null for a ticketed event.
    pub rsvp: Option<RsvpStats>,
    /// Attendees checked in. Always 0: check-in does not exist yet.
    pub check_ins: i32,
    /// Gross, discounts, refunded and net per currency: one entry for an event that sells
    /// tickets (zeros before its first paid order), none for one without ticket types.
    pub revenue: Vec<CurrencyRevenue>,
    /// The same per ticket type, every type of the event (zeros when it sold nothing).
    pub ticket_types: Vec<TicketTypeRevenue>,
    /// Uses, discount given and revenue of the orders using each promo code of the event.
    pub promo_codes: Vec<PromoCodeRevenue>,
    pub read_at: DateTime<Utc>,
}

#[derive(SimpleObject, Clone, PartialEq)]
pub struct RsvpStats {
    pub going: i32,
    pub waitlisted: i32,
    pub maybe: i32,
    pub not_going: i32,
}

fn count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl From<(stats::EventStats, revenue::EventRevenue)> for EventStats {
    fn from((s, money): (stats::EventStats, revenue::EventRevenue)) -> Self {
        Self {
            event_id: to_id(s.event_id),
            version: s.version,
            capacity: s.capacity,
            sold: s.sold,
            held: s.held,
            available: s.available,
            utilisation: s.utilisation(),
            bookings: count(s.bookings),
            tickets: count(s.tickets),
            cancellations: count(s.cancellations),
            tickets_cancelled: count(s.tickets_cancelled),
            cancellation_rate: s.cancellation_rate(),
            waitlist_length: count(s.waitlist_length),
            waitlist_promotions: count(s.promotions),
            waitlist_promotions_fulfilled: count(s.promotions_fulfilled),
            rsvp: s.free.then(|| RsvpStats {
                going: count(s.rsvp_going),
                waitlisted: count(s.rsvp_waitlisted),
                maybe: count(s.rsvp_maybe),
                not_going: count(s.rsvp_not_going),
            }),
            check_ins: 0,
            revenue: per_currency(&money.currencies),
            ticket_types: money.ticket_types.into_iter().map(Into::into).collect(),
            promo_codes: money.promo_codes.into_iter().map(Into::into).collect(),
            read_at: s.read_at,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum StatsInterval {
    /// Hours of the local clock: the hour repeated when clocks go back is two buckets.
    Hour,
    /// Days from local midnight to midnight: 23 or 25 hours when clocks change.
    Day,
}

impl From<StatsInterval> for periods::Interval {
    fn from(interval: StatsInterval) -> Self {
        match interval {
            StatsInterval::Hour => Self::Hour,
            StatsInterval::Day => Self::Day,
        }
    }
}

/// One bucket of time: `start` inclusive, `end` exclusive.
#[derive(SimpleObject, Clone)]
pub struct SalesBucket {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Bookings made in the bucket and their tickets (whether cancelled later or not).
    pub bookings: i32,
    pub tickets_sold: i32,
    /// Bookings cancelled in the bucket and their tickets.
    pub cancellations: i32,
    pub tickets_cancelled: i32,
    /// `ticketsSold - ticketsCancelled`.
    pub net_tickets: i32,
    /// Per currency: the totals of the orders paid in the bucket less the refunds that
    /// succeeded in it (currencies with no movement are left out).
    pub net_revenue: Vec<CurrencyAmount>,
}

impl From<periods::Bucket> for SalesBucket {
    fn from(b: periods::Bucket) -> Self {
        Self {
            start: b.start,
            end: b.end,
            bookings: count(b.bookings),
            tickets_sold: count(b.tickets_sold),
            cancellations: count(b.cancellations),
            tickets_cancelled: count(b.tickets_cancelled),
            net_tickets: count(b.tickets_sold - b.tickets_cancelled),
            net_revenue: Vec::new(),
        }
    }
}

/// Figures of a set of events over a period.
#[derive(SimpleObject, Clone)]
pub struct PeriodTotals {
    /// Events in the period (created before it ends, ending after it starts), with or
    /// without bookings.
    pub events: i32,
    pub bookings: i32,
    pub tickets_sold: i32,
    pub cancellations: i32,
    pub tickets_cancelled: i32,
    /// `cancellations ÷ bookings` of the period (0 without bookings).
    pub cancellation_rate: f64,
    /// Per currency: orders paid in the period (gross, discounts) and refunds that succeeded
    /// in it; net is what they leave.
    pub revenue: Vec<CurrencyRevenue>,
}

impl From<periods::Totals> for PeriodTotals {
    fn from(t: periods::Totals) -> Self {
        Self {
            events: count(t.events),
            bookings: count(t.bookings),
            tickets_sold: count(t.tickets_sold),
            cancellations: count(t.cancellations),
            tickets_cancelled: count(t.tickets_cancelled),
            cancellation_rate: t.cancellation_rate(),
            revenue: Vec::new(),
        }
    }
}

/// One event's figures over a period (0 when it sold nothing in it).
#[derive(SimpleObject, Clone)]
pub struct EventPeriodStats {
    pub event_id: ID,
    pub title: String,
    pub category: String,
    pub starts_at: DateTime<Utc>,
    pub capacity: i32,
    /// Seats in confirmed bookings now, whenever they were booked.
    pub sold_now: i32,
    pub bookings: i32,
    pub tickets_sold: i32,
    pub cancellations: i32,
    pub tickets_cancelled: i32,
    /// The event's revenue in the period, as in `PeriodTotals.revenue` (zeros for an event
    /// that sells but sold nothing in it; none for one without ticket types).
    pub revenue: Vec<CurrencyRevenue>,
}

impl From<periods::EventFigures> for EventPeriodStats {
    fn from(e: periods::EventFigures) -> Self {
        Self {
            event_id: to_id(e.event_id),
            title: e.title,
            category: e.category,
            starts_at: e.starts_at,
            capacity: e.capacity,
            sold_now: e.sold_now,
            bookings: count(e.bookings),
            tickets_sold: count(e.tickets_sold),
            cancellations: count(e.cancellations),
            tickets_cancelled: count(e.tickets_cancelled),
            revenue: Vec::new(),
        }
    }
}

/// Each event's figures with its revenue over the period.
fn with_revenue(
    events: Vec<periods::EventFigures>,
    money: &PeriodRevenue,
) -> Vec<EventPeriodStats> {
    events
        .into_iter()
        .map(|e| {
            let revenue = money.of_event(e.event_id);
            EventPeriodStats {
                revenue,
                ..EventPeriodStats::from(e)
            }
        })
        .collect()
}

/// Buckets with their net revenue (`revenue` holds one entry per bucket).
fn buckets_with_revenue(
    buckets: Vec<periods::Bucket>,
    revenue: Vec<Vec<(String, i64)>>,
) -> Vec<SalesBucket> {
    buckets
        .into_iter()
        .zip(revenue.into_iter().chain(std::iter::repeat_with(Vec::new)))
        .map(|(bucket, moved)| SalesBucket {
            net_revenue: amounts(moved),
            ..SalesBucket::from(bucket)
        })
        .collect()
}

/// The events that earned the most in one currency over a period.
#[derive(SimpleObject, Clone)]
pub struct RevenueRanking {
    pub currency: String,
    /// Most net revenue first (ties by start); events that sell in this currency but earned
    /// nothing in the period count as zero.
    pub events: Vec<EventPeriodStats>,
}

#[derive(SimpleObject, Clone)]
pub struct OrganizerStats {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub totals: PeriodTotals,
    /// The caller's events in the period, by start time.
    pub events: Vec<EventPeriodStats>,
}

#[derive(SimpleObject, Clone)]
pub struct CategoryStats {
    pub category: String,
    pub totals: PeriodTotals,
}

#[derive(SimpleObject, Clone)]
pub struct DayCount {
    /// The local midnight starting the day.
    pub start: DateTime<Utc>,
    pub count: i32,
}

#[derive(SimpleObject, Clone)]
pub struct PlatformStats {
    /// The first day's local midnight and the midnight after the last day.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub totals: PeriodTotals,
    pub new_users: i32,
    /// The events that sold the most tickets in the period, most first.
    pub top_events: Vec<EventPeriodStats>,
    /// Per currency (by code), the `top` events by net revenue in the period. Amounts of
    /// different currencies are never added or compared.
    pub top_events_by_revenue: Vec<RevenueRanking>,
    /// Every category with an event in the period, by name.
    pub categories: Vec<CategoryStats>,
    /// Bookings per local day.
    pub days: Vec<SalesBucket>,
    pub new_users_per_day: Vec<DayCount>,
}

/// The viewer may see analytics of several events: an organizer or an admin.
fn ensure_organizer(viewer: &Viewer) -> AppResult<()> {
    if viewer.can_organize() {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "only organizers and admins can see analytics",
        ))
    }
}

/// Reads the figures of an event the viewer may see analytics of.
pub async fn read_event_stats(
    app: &AppState,
    viewer: &Viewer,
    event_id: Uuid,
) -> AppResult<EventStats> {
    let mut conn = app.conn().await?;
    stats::event_for_analytics(&mut conn, viewer, event_id).await?;
    revenue::event_figures(&mut conn, event_id)
        .await?
        .map(EventStats::from)
        .ok_or(AppError::NotFound("event"))
}

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// The event's organizer or an ADMIN (others: FORBIDDEN; someone else's draft:
    /// NOT_FOUND). Exact at `readAt`.
    async fn event_stats(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<EventStats> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        Ok(read_event_stats(ctx.app(), &viewer, event_id).await?)
    }

    /// Tickets sold and cancelled, and net revenue, per hour or day of `timeZone` (an IANA
    /// name, default UTC), covering `from` to `to` (at most 8,784 buckets). Same access as
    /// `eventStats`. Exact when read.
    async fn sales_over_time(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        interval: StatsInterval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[graphql(default = "UTC")] time_zone: String,
    ) -> async_graphql::Result<Vec<SalesBucket>> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let tz = periods::time_zone(&time_zone)?;
        let bounds = stats::buckets(from, to, interval.into(), tz)?;
        let mut conn = ctx.app().conn().await?;
        stats::event_for_analytics(&mut conn, &viewer, event_id).await?;
        let buckets = stats::sales_over_time(&mut conn, event_id, &bounds).await?;
        let money = revenue::net_revenue_buckets(&mut conn, Some(event_id), &bounds).await?;
        Ok(buckets_with_revenue(buckets, money))
    }

    /// ORGANIZER or ADMIN: the caller's own events in the period (created before `to`,
    /// ending after `from`), each with what it sold and earned in the period (0 when
    /// nothing), and the totals (revenue per currency: every one of the caller's events,
    /// those listed and any other with a payment or refund in the period). Exact when read.
    async fn organizer_stats(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<OrganizerStats> {
        let viewer = require_viewer(ctx).await?;
        ensure_organizer(&viewer)?;
        let mut conn = ctx.app().conn().await?;
        let (totals, events) = stats::organizer_stats(&mut conn, viewer.id(), from, to).await?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let money = PeriodRevenue::new(
            revenue::period_revenue(&mut conn, Some(viewer.id()), from, to, &ids).await?,
        );
        Ok(OrganizerStats {
            from,
            to,
            totals: PeriodTotals {
                revenue: per_currency(&money.totals),
                ..PeriodTotals::from(totals)
            },
            events: with_revenue(events, &money),
        })
    }

    /// ADMIN: the platform over the days of `timeZone` (default UTC) from the one holding
    /// `from` to the one holding `to` (at most 366 × 24 days): totals (revenue per currency
    /// of every event), the `top` events by tickets and, per currency, by net revenue
    /// (default 10, at most 100), every category, bookings, net revenue and new users per
    /// day. Events without bookings count, as zeros. Exact when read.
    async fn platform_stats(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[graphql(default = "UTC")] time_zone: String,
        #[graphql(default = 10)] top: i32,
    ) -> async_graphql::Result<PlatformStats> {
        let viewer = require_viewer(ctx).await?;
        if !viewer.is_admin() {
            return Err(AppError::Forbidden("only admins can see platform analytics").into());
        }
        if !(0..=100).contains(&top) {
            return Err(AppError::bad_input("top", "`top` must be between 0 and 100").into());
        }
        let tz = periods::time_zone(&time_zone)?;
        let bounds = stats::buckets(from, to, periods::Interval::Day, tz)?;
        let mut conn = ctx.app().conn().await?;
        let platform = stats::platform_stats(&mut conn, &bounds, top as usize).await?;
        let (from, to) = (bounds[0], bounds[bounds.len() - 1]);
        let ids: Vec<Uuid> = platform.events.iter().map(|e| e.event_id).collect();
        let money =
            PeriodRevenue::new(revenue::period_revenue(&mut conn, None, from, to, &ids).await?);
        let day_money = revenue::net_revenue_buckets(&mut conn, None, &bounds).await?;
        let by_id: std::collections::HashMap<Uuid, &periods::EventFigures> =
            platform.events.iter().map(|e| (e.event_id, e)).collect();
        let top_events_by_revenue = money
            .top_by_net(&ids, top as usize)
            .into_iter()
            .map(|(currency, events)| RevenueRanking {
                currency,
                events: with_revenue(events.iter().map(|id| by_id[id].clone()).collect(), &money),
            })
            .collect();
        let category_events = |category: &str| {
            platform
                .events
                .iter()
                .filter(|e| e.category == category)
                .map(|e| e.event_id)
                .collect::<Vec<_>>()
        };
        Ok(PlatformStats {
            from,
            to,
            totals: PeriodTotals {
                revenue: per_currency(&money.totals),
                ..PeriodTotals::from(platform.totals)
            },
            new_users: count(platform.new_users),
            top_events: with_revenue(platform.top_events.clone(), &money),
            top_events_by_revenue,
            categories: platform
                .categories
                .iter()
                .map(|c| CategoryStats {
                    category: c.category.clone(),
                    totals: PeriodTotals {
                        revenue: money.of_events(category_events(&c.category)),
                        ..PeriodTotals::from(c.totals)
                    },
                })
                .collect(),
            days: buckets_with_revenue(platform.days.clone(), day_money),
            new_users_per_day: platform
                .new_users_per_day
                .into_iter()
                .map(|(start, n)| DayCount {
                    start,
                    count: count(n),
                })
                .collect(),
        })
    }
}

/// The least time between two messages of one `eventStatsUpdated`: at most four a second per
/// subscription, however fast the event sells.
pub const STATS_COALESCE: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct AnalyticsSubscription;

#[Subscription]
impl AnalyticsSubscription {
    /// The event's `eventStats` now, then again after changes of its seats or details, on
    /// any instance: at most four a second (changes in between are coalesced into the next
    /// message, which is read fresh), and never the same figures twice in a row. Same access
    /// as `eventStats`, checked when subscribing and against the event before each message
    /// (the caller as signed in when subscribing).
    async fn event_stats_updated(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<EventStats>> + use<>> {
        let viewer = require_viewer(ctx).await?;
        let event_id = parse_id(&event_id, "eventId")?;
        let app = ctx.app().clone();
        // Attach before the first read, so a change committed in between is not lost.
        let changes = futures_util::stream::select(
            app.bus.subscribe(Topic::Seats(event_id)),
            app.bus.subscribe(Topic::Event(event_id)),
        );
        let first = read_event_stats(&app, &viewer, event_id).await?;
        let state = LiveStats {
            app,
            viewer,
            event_id,
            changes: Box::pin(changes),
            last: None,
            pending: Some(first),
            sent_at: None,
        };
        Ok(futures_util::stream::unfold(state, LiveStats::next).boxed())
    }
}

struct LiveStats {
    app: AppState,
    viewer: Viewer,
    event_id: Uuid,
    changes: std::pin::Pin<Box<dyn Stream<Item = crate::realtime::Update> + Send>>,
    last: Option<EventStats>,
    pending: Option<EventStats>,
    sent_at: Option<tokio::time::Instant>,
}

impl LiveStats {
    async fn next(mut self) -> Option<(async_graphql::Result<EventStats>, Self)> {
        loop {
            if let Some(stats) = self.pending.take() {
                self.sent_at = Some(tokio::time::Instant::now());
                self.last = Some(stats.clone());
                return Some((Ok(stats), self));
            }
            // Wait for a change, then for the rest of the interval since the last message,
            // then swallow whatever else arrived: one fresh read covers them all.
            self.changes.next().await?;
            if let Some(sent_at) = self.sent_at {
                tokio::time::sleep_until(sent_at + STATS_COALESCE).await;
            }
            while let Some(Some(_)) = futures_util::FutureExt::now_or_never(self.changes.next()) {}
            match read_event_stats(&self.app, &self.viewer, self.event_id).await {
                Ok(stats) => {
                    // A change that moved nothing these figures show is not worth a message.
                    let same = self.last.as_ref().is_some_and(|last| {
                        EventStats {
                            read_at: last.read_at,
                            ..stats.clone()
                        } == *last
                    });
                    if !same {
                        self.pending = Some(stats);
                    }
                }
                Err(error) => return Some((Err(error.into()), self)),
            }
        }
    }
}
