//! Demo data for trying the API: users with known passwords and a spread of upcoming events,
//! a few of them nearly sold out. Safe to run any number of times: what exists is kept.

use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Viewer;
use super::auth::Passwords;
use super::rows::insert_booking;
use super::users::{NewUser, create_user};
use super::venues::{NewVenue, RowLayout, SectionLayout, create_venue};
use crate::db::DbPool;
use crate::db::models::{Booking, Event, EventStatus, Role, User};
use crate::db::schema::{events, users};
use crate::error::AppResult;

pub struct DemoAccount {
    pub email: &'static str,
    pub password: &'static str,
    pub name: &'static str,
    pub role: Role,
}

pub const DEMO_ACCOUNTS: [DemoAccount; 4] = [
    DemoAccount {
        email: "admin@evently.test",
        password: "admin-demo-pass",
        name: "Ada Admin",
        role: Role::Admin,
    },
    DemoAccount {
        email: "organizer@evently.test",
        password: "organizer-demo-pass",
        name: "Olu Organizer",
        role: Role::Organizer,
    },
    DemoAccount {
        email: "stage@evently.test",
        password: "stage-demo-pass",
        name: "Sam Stage",
        role: Role::Organizer,
    },
    DemoAccount {
        email: "user@evently.test",
        password: "user-demo-pass",
        name: "Uma User",
        role: Role::User,
    },
];

struct DemoEvent {
    title: &'static str,
    category: &'static str,
    venue: &'static str,
    days_ahead: i64,
    hours: i64,
    capacity: i32,
    /// Seats already taken by the demo user, to show nearly sold-out events.
    booked: i32,
    description: &'static str,
    kind: DemoKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DemoKind {
    Ticketed,
    /// Free: takes RSVPs.
    Free,
    /// Not published yet: only its organizer and admins see it.
    Draft,
}

const DEMO_EVENTS: [DemoEvent; 14] = [
    DemoEvent {
        title: "The Midnight Echoes — Live",
        category: "Music",
        venue: "Harbour Arena",
        days_ahead: 7,
        hours: 3,
        capacity: 5000,
        booked: 0,
        description: "Synth-pop headliners on their first tour in five years.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Jazz at the Lighthouse",
        category: "Music",
        venue: "Lighthouse Club",
        days_ahead: 3,
        hours: 2,
        capacity: 120,
        booked: 117,
        description: "An intimate late set. Almost gone.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Symphony No. 9 under the Stars",
        category: "Music",
        venue: "Riverside Park Bowl",
        days_ahead: 21,
        hours: 3,
        capacity: 2500,
        booked: 0,
        description: "Open-air Beethoven with the city orchestra and choir.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "City Derby: Reds vs Blues",
        category: "Sports",
        venue: "Harbour Arena",
        days_ahead: 10,
        hours: 2,
        capacity: 18000,
        booked: 0,
        description: "The season's biggest match.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Championship Boxing Night",
        category: "Sports",
        venue: "Old Town Hall",
        days_ahead: 14,
        hours: 4,
        capacity: 800,
        booked: 795,
        description: "Title fight plus four undercard bouts.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Hamlet",
        category: "Theatre",
        venue: "Royal Court Theatre",
        days_ahead: 5,
        hours: 3,
        capacity: 450,
        booked: 0,
        description: "A bold modern staging of the classic.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "The Improv Hour",
        category: "Comedy",
        venue: "Basement Laughs",
        days_ahead: 2,
        hours: 1,
        capacity: 60,
        booked: 58,
        description: "Your suggestions, their chaos.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Stand-up Showcase",
        category: "Comedy",
        venue: "Basement Laughs",
        days_ahead: 9,
        hours: 2,
        capacity: 60,
        booked: 0,
        description: "Five rising comics, one night.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "RustConf Community Day",
        category: "Conference",
        venue: "Convention Centre Hall B",
        days_ahead: 30,
        hours: 8,
        capacity: 1000,
        booked: 0,
        description: "Talks, workshops and hallway track.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Frontend Futures Summit",
        category: "Conference",
        venue: "Convention Centre Hall A",
        days_ahead: 45,
        hours: 8,
        capacity: 1500,
        booked: 0,
        description: "GraphQL, edge rendering and everything in between.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Street Food Festival",
        category: "Festival",
        venue: "Riverside Park",
        days_ahead: 12,
        hours: 10,
        capacity: 3000,
        booked: 0,
        description: "Sixty stalls, live DJs, family friendly.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Poetry Slam Finals",
        category: "Arts",
        venue: "Royal Court Theatre Studio",
        days_ahead: 6,
        hours: 2,
        capacity: 90,
        booked: 89,
        description: "One seat left for the finals.",
        kind: DemoKind::Ticketed,
    },
    DemoEvent {
        title: "Rust Meetup: Async in Practice",
        category: "Tech",
        venue: "Foundry Co-working",
        days_ahead: 9,
        hours: 3,
        capacity: 40,
        booked: 0,
        description: "Free evening meetup: talks, pizza, questions. RSVP to save a seat.",
        kind: DemoKind::Free,
    },
    DemoEvent {
        title: "Winter Gala (draft)",
        category: "Music",
        venue: "Grand Hall",
        days_ahead: 60,
        hours: 4,
        capacity: 800,
        booked: 0,
        description: "Not announced yet: visible to its organizer and admins only.",
        kind: DemoKind::Draft,
    },
];

/// Fixed ids make the seed idempotent and let documentation point at a demo event.
fn demo_event_id(index: usize) -> Uuid {
    Uuid::from_u128(0x0e7e_0000_0000_4000_8000_0000_0000_0000 + index as u128 + 1)
}

pub struct SeedReport {
    pub users_created: usize,
    pub events_created: usize,
}

pub async fn seed_demo(pool: &DbPool, passwords: &Passwords) -> AppResult<SeedReport> {
    let mut users_created = 0;
    let mut accounts = Vec::new();
    for account in &DEMO_ACCOUNTS {
        let existing: Option<User> = {
            let mut conn = pool.get().await?;
            users::table
                .filter(users::email.eq(account.email))
                .select(User::as_select())
                .first(&mut conn)
                .await
                .optional()?
        };
        let user = match existing {
            Some(user) => user,
            None => {
                users_created += 1;
                let new = NewUser {
                    email: account.email,
                    password: account.password,
                    name: account.name,
                    role: account.role,
                };
                create_user(pool, passwords, new).await?
            }
        };
        accounts.push(user);
    }
    let organizers = [accounts[1].id, accounts[2].id];
    let fan = accounts[3].id;

    let mut conn = pool.get().await?;
    let events_created = conn
        .transaction(async move |conn| {
            let mut created = 0;
            let now = Utc::now();
            for (index, demo) in DEMO_EVENTS.iter().enumerate() {
                // Whole hours in the evening keep the listing tidy.
                let day = (now + Duration::days(demo.days_ahead)).date_naive();
                let starts_at = day.and_hms_opt(19, 0, 0).unwrap_or_default().and_utc();
                let event = Event {
                    id: demo_event_id(index),
                    organizer_id: organizers[index % organizers.len()],
                    title: demo.title.into(),
                    description: Some(demo.description.into()),
                    category: demo.category.into(),
                    venue: demo.venue.into(),
                    starts_at,
                    ends_at: starts_at + Duration::hours(demo.hours),
                    capacity: demo.capacity,
                    seats_available: demo.capacity - demo.booked,
                    max_per_booking: 10,
                    status: if demo.kind == DemoKind::Draft {
                        EventStatus::Draft
                    } else {
                        EventStatus::Published
                    },
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    seats_held: 0,
                    venue_id: None,
                    free: demo.kind == DemoKind::Free,
                    sales_start_at: None,
                    sales_end_at: None,
                    max_per_user: None,
                    hold_minutes: Event::DEFAULT_HOLD_MINUTES,
                    offer_minutes: Event::DEFAULT_OFFER_MINUTES,
                    published_at: (demo.kind != DemoKind::Draft).then_some(now),
                    currency: None,
                };
                let inserted = diesel::insert_into(events::table)
                    .values(&event)
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    continue;
                }
                created += 1;
                // The seats already taken are real bookings, so the availability invariant
                // holds for demo data too.
                let mut remaining = demo.booked;
                while remaining > 0 {
                    let quantity = remaining.min(event.max_per_booking);
                    remaining -= quantity;
                    let booking = Booking::confirmed(event.id, fan, quantity, None, now);
                    insert_booking(conn, &booking).await?;
                }
            }
            Ok::<_, crate::error::AppError>(created)
        })
        .await?;
    let seated_created = seed_seated_event(&mut conn, &accounts[1]).await?;
    let sales_created = seed_sales(&mut conn, &accounts[1]).await?;
    Ok(SeedReport {
        users_created,
        events_created: events_created + usize::from(seated_created) + sales_created,
    })
}

/// A theatre with a seat layout and a play there, to try seat maps with. Returns whether it was
/// created (it is kept when it exists).
async fn seed_seated_event(conn: &mut AsyncPgConnection, organizer: &User) -> AppResult<bool> {
    let id = demo_event_id(100);
    let exists: Option<Uuid> = events::table
        .find(id)
        .select(events::id)
        .first(conn)
        .await
        .optional()?;
    if exists.is_some() {
        return Ok(false);
    }
    let row = |label: &str, seats| RowLayout {
        label: label.into(),
        seats,
    };
    let layout = NewVenue {
        name: "Blue Room Theatre".into(),
        address: Some("12 Quay Street".into()),
        sections: vec![
            SectionLayout {
                name: "Stalls".into(),
                rows: vec![row("A", 10), row("B", 12), row("C", 12)],
            },
            SectionLayout {
                name: "Balcony".into(),
                rows: vec![row("A", 8), row("B", 8)],
            },
        ],
    };
    let owner = Viewer {
        user: organizer.clone(),
        session_id: Uuid::nil(),
    };
    let venue = create_venue(conn, &owner, layout).await?;
    let now = Utc::now();
    let starts_at = (now + Duration::days(12))
        .date_naive()
        .and_hms_opt(19, 30, 0)
        .unwrap_or_default()
        .and_utc();
    let capacity = venue.seat_count();
    let event = Event {
        id,
        organizer_id: organizer.id,
        title: "The Glass Menagerie".into(),
        description: Some("Pick your seats on the seat map: stalls and balcony.".into()),
        category: "Theatre".into(),
        venue: venue.venue.name.clone(),
        starts_at,
        ends_at: starts_at + Duration::hours(2),
        capacity,
        seats_available: capacity,
        max_per_booking: 6,
        status: EventStatus::Published,
        version: 1,
        created_at: now,
        updated_at: now,
        seats_held: 0,
        venue_id: Some(venue.venue.id),
        free: false,
        sales_start_at: None,
        sales_end_at: None,
        max_per_user: Some(6),
        hold_minutes: Event::DEFAULT_HOLD_MINUTES,
        offer_minutes: Event::DEFAULT_OFFER_MINUTES,
        published_at: Some(now),
        currency: None,
    };
    diesel::insert_into(events::table)
        .values(&event)
        .execute(conn)
        .await?;
    Ok(true)
}

/// The promo code `seed-demo` prints to try, and the access code of the concert's hidden type.
pub const DEMO_PROMO_CODE: &str = "SUMMER10";
pub const DEMO_ACCESS_CODE: &str = "BACKSTAGE";

/// Paid sales to try: a concert with three ticket types (one hidden behind an access code)
/// and a quota shared by two of them, a free meetup whose orders are paid at once, and the
/// theatre's seats in two priced tiers. Kept when they exist. Returns how many events it made.
async fn seed_sales(conn: &mut AsyncPgConnection, organizer: &User) -> AppResult<usize> {
    use super::commerce::catalog::{self, Money, NewTicketType};
    use super::commerce::codes::{self, NewPromoCode};
    use crate::db::commerce::DiscountKind;

    let owner = Viewer {
        user: organizer.clone(),
        session_id: Uuid::nil(),
    };
    let price = |name: &str, cents: i64, quantity: Option<i32>, hidden: bool| NewTicketType {
        name: name.into(),
        description: None,
        price: Money {
            amount: cents,
            currency: "EUR".into(),
        },
        quantity,
        sales_start_at: None,
        sales_end_at: None,
        min_per_order: None,
        max_per_order: None,
        hidden,
        sections: Vec::new(),
    };
    let tier = |name: &str, cents: i64| NewTicketType {
        sections: vec![name.into()],
        ..price(name, cents, None, false)
    };
    let mut created = 0;
    let now = Utc::now();
    let evening = |days: i64| {
        (now + Duration::days(days))
            .date_naive()
            .and_hms_opt(20, 0, 0)
            .unwrap_or_default()
            .and_utc()
    };
    let plain = |id: Uuid, title: &str, venue: &str, days: i64, capacity: i32| Event {
        id,
        organizer_id: organizer.id,
        title: title.into(),
        description: None,
        category: "Music".into(),
        venue: venue.into(),
        starts_at: evening(days),
        ends_at: evening(days) + Duration::hours(3),
        capacity,
        seats_available: capacity,
        max_per_booking: 10,
        status: EventStatus::Published,
        version: 1,
        created_at: now,
        updated_at: now,
        seats_held: 0,
        venue_id: None,
        free: false,
        sales_start_at: None,
        sales_end_at: None,
        max_per_user: None,
        hold_minutes: Event::DEFAULT_HOLD_MINUTES,
        offer_minutes: Event::DEFAULT_OFFER_MINUTES,
        published_at: Some(now),
        currency: None,
    };
    let concert = plain(
        demo_event_id(200),
        "Summer Concert",
        "Harbour Stage",
        30,
        500,
    );
    if diesel::insert_into(events::table)
        .values(&concert)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?
        == 1
    {
        created += 1;
        let early = catalog::create_ticket_type(
            conn,
            &owner,
            concert.id,
            price("Early Bird", 2900, Some(100), false),
        )
        .await?
        .value;
        let regular = catalog::create_ticket_type(
            conn,
            &owner,
            concert.id,
            price("Regular", 3900, None, false),
        )
        .await?
        .value;
        let backstage = catalog::create_ticket_type(
            conn,
            &owner,
            concert.id,
            price("Backstage", 9900, Some(20), true),
        )
        .await?
        .value;
        catalog::create_quota(
            conn,
            &owner,
            concert.id,
            "Early Bird and Regular".into(),
            400,
            vec![early.id, regular.id],
        )
        .await?;
        let code = |code: &str, value: i64, types: Vec<Uuid>, unlocks_hidden: bool| NewPromoCode {
            code: code.into(),
            discount: DiscountKind::Percent,
            value,
            max_uses: Some(100),
            valid_from: None,
            valid_until: None,
            ticket_type_ids: types,
            unlocks_hidden,
        };
        codes::create_promo_code(
            conn,
            &owner,
            concert.id,
            code(DEMO_PROMO_CODE, 10, Vec::new(), false),
        )
        .await?;
        codes::create_promo_code(
            conn,
            &owner,
            concert.id,
            code(DEMO_ACCESS_CODE, 0, vec![backstage.id], true),
        )
        .await?;
    }
    let meetup = Event {
        category: "Tech".into(),
        ..plain(demo_event_id(201), "Rust Meetup", "Library Hall", 9, 60)
    };
    if diesel::insert_into(events::table)
        .values(&meetup)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?
        == 1
    {
        created += 1;
        catalog::create_ticket_type(conn, &owner, meetup.id, price("Community", 0, None, false))
            .await?;
    }
    // The theatre's two sections as tiers: each type sells the seats of its section.
    let theatre = demo_event_id(100);
    let theatre_currency: Option<Option<String>> = events::table
        .find(theatre)
        .select(events::currency)
        .first(conn)
        .await
        .optional()?;
    if theatre_currency == Some(None) {
        catalog::create_ticket_type(conn, &owner, theatre, tier("Stalls", 4500)).await?;
        catalog::create_ticket_type(conn, &owner, theatre, tier("Balcony", 3000)).await?;
    }
    Ok(created)
}
