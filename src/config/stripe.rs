//! Stripe's settings: on only when `STRIPE_SECRET_KEY` is set, and then the webhook secret is
//! required too (without it no payment could be confirmed). The keys are [`Secret`]s, hidden
//! from `Debug`.

use std::time::Duration;

use super::{ConfigError, Secret, parse_or};

#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `STRIPE_API_BASE`, default `https://api.stripe.com` (tests point it at a stand-in).
    pub api_base: String,
    /// `STRIPE_SECRET_KEY`: `sk_…` (or a restricted `rk_…` key).
    pub secret_key: Secret,
    /// `STRIPE_WEBHOOK_SECRET`: the endpoint's signing secret, `whsec_…`.
    pub webhook_secret: Secret,
    /// `STRIPE_WEBHOOK_TOLERANCE_SECS` (default 300, Stripe's): how far a webhook's signed
    /// timestamp may be from now.
    pub webhook_tolerance: Duration,
}

pub(super) fn stripe_config(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<StripeConfig>, ConfigError> {
    let Some(secret_key) = lookup("STRIPE_SECRET_KEY") else {
        if lookup("STRIPE_WEBHOOK_SECRET").is_some() {
            return Err(ConfigError::Missing("STRIPE_SECRET_KEY"));
        }
        return Ok(None);
    };
    if !secret_key.starts_with("sk_") && !secret_key.starts_with("rk_") {
        return Err(ConfigError::Invalid {
            name: "STRIPE_SECRET_KEY",
            value: "(hidden)".into(),
            reason: "expected a Stripe secret key (sk_…) or restricted key (rk_…)".into(),
        });
    }
    let webhook_secret =
        lookup("STRIPE_WEBHOOK_SECRET").ok_or(ConfigError::Missing("STRIPE_WEBHOOK_SECRET"))?;
    let api_base = lookup("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
    if !api_base.starts_with("https://") && !api_base.starts_with("http://") {
        return Err(ConfigError::Invalid {
            name: "STRIPE_API_BASE",
            value: api_base,
            reason: "expected an http(s):// URL".into(),
        });
    }
    let tolerance: u64 = parse_or(lookup, "STRIPE_WEBHOOK_TOLERANCE_SECS", 300)?;
    if tolerance == 0 {
        return Err(ConfigError::Invalid {
            name: "STRIPE_WEBHOOK_TOLERANCE_SECS",
            value: "0".into(),
            reason: "must be at least 1: every signed webhook must be recent".into(),
        });
    }
    Ok(Some(StripeConfig {
        api_base: api_base.trim_end_matches('/').to_owned(),
        secret_key: Secret::new(secret_key),
        webhook_secret: Secret::new(webhook_secret),
        webhook_tolerance: Duration::from_secs(tolerance),
    }))
}
