//! Promo and access codes: a discount (a percentage or a fixed amount) on the types a code
//! names (or all), used at most `maxUses` times (counted in the order's transaction, see
//! `orders::take_promo_use`), valid in a window; an access code also unlocks hidden types.
//! Codes are case-insensitive: `promo_codes_event_code_key` is unique on `lower(code)`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{MAX_PRICE, ensure_manager};
use crate::db::commerce::{DiscountKind, PromoCode};
use crate::db::models::Event;
use crate::db::schema::{promo_code_ticket_types, promo_codes};
use crate::domain::Viewer;
use crate::domain::audit::{self, Action};
use crate::domain::sale_rules::lock_event;
use crate::domain::stock::Stock;
use crate::error::{AppError, AppResult};

fn bad(field: &'static str, reason: &'static str, message: impl Into<String>) -> AppError {
    AppError::BadUserInput {
        message: message.into(),
        field: Some(field),
        reason: Some(reason),
    }
}

pub struct NewPromoCode {
    pub code: String,
    pub discount: DiscountKind,
    pub value: i64,
    pub max_uses: Option<i32>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub ticket_type_ids: Vec<Uuid>,
    pub unlocks_hidden: bool,
}

pub async fn create_promo_code(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event_id: Uuid,
    new: NewPromoCode,
) -> AppResult<PromoCode> {
    let code = new.code.trim().to_owned();
    if code.is_empty()
        || code.len() > 64
        || code.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "code",
            "INVALID_CODE",
            "a code is 1 to 64 characters without spaces",
        ));
    }
    match new.discount {
        DiscountKind::Percent if !(0..=100).contains(&new.value) => {
            return Err(bad("value", "INVALID_DISCOUNT", "a percentage is 0 to 100"));
        }
        DiscountKind::Fixed if !(0..=MAX_PRICE).contains(&new.value) => {
            return Err(bad(
                "value",
                "INVALID_DISCOUNT",
                "a fixed discount is 0 or more",
            ));
        }
        _ => {}
    }
    if new.max_uses.is_some_and(|m| m < 0) {
        return Err(bad(
            "maxUses",
            "INVALID_MAX_USES",
            "maxUses cannot be negative",
        ));
    }
    if let (Some(from), Some(until)) = (new.valid_from, new.valid_until)
        && until <= from
    {
        return Err(bad(
            "validUntil",
            "INVALID_WINDOW",
            "validUntil must be after validFrom",
        ));
    }
    let new = &new;
    let code = &code;
    conn.transaction(async move |conn| {
        let event = lock_event(conn, event_id).await?;
        ensure_manager(viewer, &event)?;
        let stock = Stock::load(conn, event_id).await?;
        if new
            .ticket_type_ids
            .iter()
            .any(|id| !stock.types.contains_key(id))
        {
            return Err(AppError::NotFound("ticket type"));
        }
        let promo = PromoCode {
            id: Uuid::new_v4(),
            event_id,
            code: code.clone(),
            discount_kind: new.discount,
            value: new.value,
            max_uses: new.max_uses,
            uses: 0,
            valid_from: new.valid_from,
            valid_until: new.valid_until,
            unlocks_hidden: new.unlocks_hidden,
            created_at: Utc::now(),
        };
        let inserted = diesel::insert_into(promo_codes::table)
            .values(&promo)
            .returning(PromoCode::as_returning())
            .get_result(conn)
            .await;
        let promo = match inserted {
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                return Err(AppError::Conflict(
                    "this event already has a promo code with this code".into(),
                ));
            }
            other => other?,
        };
        let mut ids = new.ticket_type_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        let links: Vec<_> = ids
            .iter()
            .map(|id| {
                (
                    promo_code_ticket_types::promo_code_id.eq(promo.id),
                    promo_code_ticket_types::ticket_type_id.eq(*id),
                )
            })
            .collect();
        diesel::insert_into(promo_code_ticket_types::table)
            .values(&links)
            .execute(conn)
            .await?;
        let what = Action::on_sales("promo_code.create", "promo_code", promo.id, event_id);
        audit::record(
            conn,
            viewer,
            what,
            None,
            Some(audit::promo_code_fields(&promo, &ids)),
        )
        .await?;
        Ok(promo)
    })
    .await
}

/// The event's promo code spelled `code` in any case.
pub async fn find_code(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    code: &str,
) -> AppResult<Option<PromoCode>> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Bool, Text};
    Ok(promo_codes::table
        .filter(promo_codes::event_id.eq(event_id))
        .filter(
            sql::<Bool>("lower(code) = lower(")
                .bind::<Text, _>(code.trim())
                .sql(")"),
        )
        .select(PromoCode::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The ticket types a code applies to; empty: all of the event's.
pub async fn code_types(conn: &mut AsyncPgConnection, promo_id: Uuid) -> AppResult<Vec<Uuid>> {
    Ok(promo_code_ticket_types::table
        .filter(promo_code_ticket_types::promo_code_id.eq(promo_id))
        .select(promo_code_ticket_types::ticket_type_id)
        .load(conn)
        .await?)
}

pub async fn event_promo_codes(
    conn: &mut AsyncPgConnection,
    viewer: &Viewer,
    event: &Event,
) -> AppResult<Vec<PromoCode>> {
    ensure_manager(viewer, event)?;
    Ok(promo_codes::table
        .filter(promo_codes::event_id.eq(event.id))
        .select(PromoCode::as_select())
        .order((promo_codes::created_at, promo_codes::id))
        .load(conn)
        .await?)
}

pub async fn find_promo(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<PromoCode> {
    use crate::domain::rows::OrNotFound;
    promo_codes::table
        .find(id)
        .select(PromoCode::as_select())
        .first(conn)
        .await
        .or_not_found("promo code")
}
