//! The providers an instance can take payments through: the manual one always, Stripe when it
//! is configured. Orders name theirs (`orders.provider`), so an order placed through one is
//! paid, reconciled and refunded through the same.

use std::sync::Arc;

use super::PaymentProvider;
use super::manual::ManualProvider;
use crate::db::commerce::Provider;

#[derive(Clone)]
pub struct Providers {
    manual: Arc<dyn PaymentProvider>,
    stripe: Option<Arc<dyn PaymentProvider>>,
}

impl Default for Providers {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Providers {
    pub fn new(stripe: Option<Arc<dyn PaymentProvider>>) -> Self {
        Self {
            manual: Arc::new(ManualProvider),
            stripe,
        }
    }

    /// The provider of an order or event; `None` for Stripe when it is not configured.
    pub fn get(&self, provider: Provider) -> Option<&Arc<dyn PaymentProvider>> {
        match provider {
            Provider::Manual => Some(&self.manual),
            Provider::Stripe => self.stripe.as_ref(),
        }
    }

    pub fn stripe_configured(&self) -> bool {
        self.stripe.is_some()
    }
}
