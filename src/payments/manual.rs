//! The manual provider: bank transfer, invoice or paying at the door. Nothing to call: an
//! intent is a local id, the organizer (or an admin) marks the order paid with a reference
//! (`markOrderPaid`), and a refund is recorded as done at once (the organizer pays it back by
//! hand).

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    Intent, IntentStatus, NewIntent, NewRefund, PaymentError, PaymentProvider, ProviderKind,
    Refund, RefundStatus,
};

#[derive(Debug, Default, Clone, Copy)]
pub struct ManualProvider;

/// The intent id of a manual payment: derived from the order, so a repeated create gives the
/// same one.
pub fn intent_id(order_id: Uuid) -> String {
    format!("manual_{}", order_id.simple())
}

#[async_trait]
impl PaymentProvider for ManualProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Manual
    }

    async fn create_intent(&self, new: NewIntent<'_>) -> Result<Intent, PaymentError> {
        Ok(Intent {
            id: intent_id(new.order_id),
            client_secret: None,
            status: IntentStatus::AwaitingBuyer,
            amount: new.amount,
            currency: new.currency.to_owned(),
            order_id: Some(new.order_id),
        })
    }

    async fn retrieve_intent(&self, _intent_id: &str) -> Result<Intent, PaymentError> {
        // The database is the only record of a manual payment.
        Err(PaymentError::Unsupported)
    }

    async fn cancel_intent(&self, _intent_id: &str) -> Result<Intent, PaymentError> {
        Err(PaymentError::Unsupported)
    }

    async fn refund(&self, new: NewRefund<'_>) -> Result<Refund, PaymentError> {
        Ok(Refund {
            id: format!("manual_refund_{}", new.idempotency_key),
            amount: new.amount,
            status: RefundStatus::Succeeded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_intent_is_the_same_for_the_same_order_and_refunds_at_once() {
        let order_id = Uuid::new_v4();
        let new = || NewIntent {
            order_id,
            amount: 1500,
            currency: "EUR",
            idempotency_key: "k",
            description: None,
        };
        let first = ManualProvider.create_intent(new()).await.unwrap();
        let again = ManualProvider.create_intent(new()).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(first.client_secret, None);
        let refund = ManualProvider
            .refund(NewRefund {
                intent_id: &first.id,
                amount: 500,
                idempotency_key: "r1",
                reason: None,
            })
            .await
            .unwrap();
        assert_eq!(refund.status, RefundStatus::Succeeded);
        assert_eq!(refund.amount, 500);
    }
}
