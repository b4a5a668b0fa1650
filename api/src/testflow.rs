//! Test mode (`recovery.test_mode`): `POST /ocart/v1/recovery/test/trigger` makes a dummy cart
//! for an address the store owner gives, marks it abandoned at once, and opens its run so the
//! first message falls due about 30 seconds later, through the same dispatcher, guards and
//! channels as any other (CartBay's "Trigger Test Flow").

use chrono::Duration;
use ocart_domain::cart::{
    cart_id_for_session, session_token_hash, CaptureCart, CartCommand, Consent,
};
use ocart_domain::recovery::{RunCommand, RunStart, Step};
use ocart_domain::{CartItem, CartTotals, Currency, Email, PersonalField, Source, Stage};
use ocart_projections::queries::recovery as q;
use ocart_projections::CommandMeta;
use serde::Serialize;

use crate::core::{random_secret, Core};

/// How long after the trigger the first message falls due.
pub const TEST_DELAY_SECS: i64 = 30;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TestFlow {
    pub cart_id: String,
    pub run_id: String,
    pub sequence_id: String,
    pub first_message_due_at: chrono::DateTime<chrono::Utc>,
    pub position: Option<i64>,
}

impl Core {
    /// Starts a test flow to `email`. `None` when no active sequence handles abandoned carts.
    pub async fn trigger_test(
        &self,
        email: &Email,
        meta: &CommandMeta,
    ) -> anyhow::Result<Option<TestFlow>> {
        let Some(sequence) = q::sequence_for_trigger(&self.db, "cart_abandoned").await? else {
            return Ok(None);
        };
        let steps: Vec<Step> = serde_json::from_value(sequence.steps.0.clone())?;
        let Some(first) = steps.first() else {
            return Ok(None);
        };
        let session = random_secret("test_");
        let cart_id = cart_id_for_session(&session).to_string();
        let subject = self.vault.subject_for_email(email);
        let capture = CaptureCart {
            session_token_hash: session_token_hash(&session),
            email: PersonalField {
                sealed: self.vault.seal(&subject, email.as_str()).await?,
                subject,
            },
            phone: None,
            name: None,
            name_hash: None,
            consent: Consent {
                given: Some(true),
                text: Some("OCart test flow (recovery.test_mode)".into()),
            },
            consent_required: true,
            source: Source::Api,
            stage: Stage::Checkout,
            currency: Currency::parse("currency", "USD")?,
            items: vec![CartItem {
                product_id: ocart_domain::ProductId::Number(1),
                variation_id: None,
                sku: Some("OCART-TEST".into()),
                name: "Test product".into(),
                quantity: 1,
                unit_price: 1000,
                categories: vec![],
                image_url: None,
                subscription: false,
            }],
            totals: CartTotals {
                subtotal: 1000,
                total: 1000,
                ..Default::default()
            },
            at: meta.at,
        };
        self.carts
            .execute(&cart_id, CartCommand::Capture(Box::new(capture)), meta)
            .await?;
        let abandoned = self
            .carts
            .execute(
                &cart_id,
                CartCommand::MarkAbandoned {
                    at: meta.at,
                    threshold_min: 0,
                    forced: true,
                },
                meta,
            )
            .await?;
        let event = abandoned
            .events
            .first()
            .ok_or_else(|| anyhow::anyhow!("the test cart was not abandoned"))?;
        // The run the opener would open for this abandonment (same id, so the opener's own
        // start changes nothing), dated so that step 1 falls due in 30 seconds.
        let run_id = ocart_processors::recovery::run_id_for(&cart_id, &event.event_id);
        let due = meta.at + Duration::seconds(TEST_DELAY_SECS);
        let start = RunStart {
            run_id: run_id.clone(),
            cart_id: cart_id.clone(),
            sequence_id: sequence.sequence_id.clone(),
            abandoned_at: due - Duration::minutes(first.delay_min),
            email_hash: Some(self.vault.subject_for_email(email).as_str().to_owned()),
            phone_hash: None,
            steps,
        };
        let outcome = self
            .runs
            .execute(
                &run_id,
                RunCommand::Start {
                    start: Box::new(start),
                    at: meta.at,
                },
                meta,
            )
            .await?;
        Ok(Some(TestFlow {
            cart_id,
            run_id,
            sequence_id: sequence.sequence_id,
            first_message_due_at: due,
            position: outcome.last_position(),
        }))
    }
}
