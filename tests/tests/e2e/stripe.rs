//! The Stripe adapter against the fake Stripe: the contract the charger relies on (one key,
//! one charge; an answer it cannot read is unknown, never declined), 3DS, refunds. No app:
//! these talk to the adapter directly.

use std::sync::Arc;

use ocart_domain::{Currency, Money};
use ocart_processors::gateways::stripe::Stripe;
use ocart_processors::gateways::{
    ChargeOutcome, ChargeRequest, Gateway, RefundOutcome, RefundRequest,
};
use ocart_tests::{
    FakeStripe, PM_3DS, PM_DECLINED, PM_INSUFFICIENT_FUNDS, PM_VISA, STRIPE_KEY,
    STRIPE_WEBHOOK_SECRET,
};

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR).unwrap()
}

fn request(key: &str, minor: i64, method: &str) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.into(),
        amount: eur(minor),
        customer: Some("cus_ocart".into()),
        payment_method: method.into(),
        description: "One-click upsell".into(),
        invoice_id: format!("inv-{key}"),
        return_url: Some("https://shop.example/ocart/return".into()),
        metadata: vec![
            ("acceptance_id".into(), format!("acc-{key}")),
            ("offer_id".into(), "offer-1".into()),
        ],
    }
}

async fn setup() -> (FakeStripe, Stripe) {
    let fake = FakeStripe::start().await;
    let stripe = Stripe::from_config(&fake.stripe_config()).unwrap();
    (fake, stripe)
}

fn succeeded(outcome: &ChargeOutcome) -> String {
    match outcome {
        ChargeOutcome::Succeeded { charge_ref } => charge_ref.clone(),
        other => panic!("expected succeeded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_charge_speaks_stripe_and_succeeds() {
    let (fake, stripe) = setup().await;
    let outcome = stripe.charge(&request("k-ok", 1250, PM_VISA)).await;
    let pi = succeeded(&outcome);
    assert_eq!(fake.charges(), 1);
    let intent = fake.intent(&pi);
    assert_eq!(intent["amount"], 1250);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["metadata"]["acceptance_id"], "acc-k-ok");
    assert_eq!(intent["metadata"]["invoice_id"], "inv-k-ok");
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/payment_intents");
    assert_eq!(sent.idempotency_key.as_deref(), Some("k-ok"));
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(sent.stripe_version.is_some());
    assert!(sent.user_agent.as_deref().unwrap().starts_with("OCart/"));
    assert_eq!(sent.param("confirm"), Some("true"));
    assert_eq!(sent.param("amount"), Some("1250"));
    assert_eq!(sent.param("currency"), Some("eur"), "lower case");
    assert_eq!(sent.param("payment_method"), Some(PM_VISA));
    assert_eq!(sent.param("metadata[offer_id]"), Some("offer-1"));
    assert_eq!(sent.param("customer"), Some("cus_ocart"));
    assert_eq!(sent.param("payment_method_types[]"), Some("card"));
    assert_eq!(
        sent.param("return_url"),
        Some("https://shop.example/ocart/return")
    );
    assert_eq!(
        sent.param("off_session"),
        None,
        "a customer-initiated charge"
    );
    // A read-back says the same.
    assert_eq!(stripe.retrieve(&pi).await, outcome);
    let state = stripe.state();
    assert_eq!(
        (state.id, state.mode, state.webhooks),
        ("stripe", "test", true)
    );
    assert!(!format!("{state:?}").contains(STRIPE_KEY));
}

#[tokio::test]
async fn a_repeat_with_the_same_key_answers_the_first_outcome() {
    let (fake, stripe) = setup().await;
    let first = stripe.charge(&request("k-repeat", 900, PM_VISA)).await;
    let again = stripe.charge(&request("k-repeat", 900, PM_VISA)).await;
    assert_eq!(again, first);
    succeeded(&first);
    assert_eq!(fake.charges(), 1);
    assert_eq!(fake.creates(), 2);
}

#[tokio::test]
async fn the_same_key_with_another_amount_is_unknown_and_charges_nothing() {
    let (fake, stripe) = setup().await;
    succeeded(&stripe.charge(&request("k-other", 900, PM_VISA)).await);
    let other = stripe.charge(&request("k-other", 901, PM_VISA)).await;
    assert!(
        matches!(&other, ChargeOutcome::Unknown { reason, .. } if reason.contains("idempotency_error")),
        "{other:?}"
    );
    assert_eq!(fake.charges(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_charges_with_one_key_charge_once() {
    let (fake, stripe) = setup().await;
    fake.delay_ms(300);
    let stripe = Arc::new(stripe);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let stripe = stripe.clone();
            tokio::spawn(async move { stripe.charge(&request("k-race", 700, PM_VISA)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert!(
        !outcomes
            .iter()
            .any(|o| matches!(o, ChargeOutcome::Declined { .. })),
        "{outcomes:?}"
    );
    let won = outcomes
        .iter()
        .filter(|o| matches!(o, ChargeOutcome::Succeeded { .. }))
        .count();
    assert!(won >= 1, "{outcomes:?}");
    assert_eq!(fake.charges(), 1);
    assert_eq!(fake.creates(), 20);
    // Once the first finished, the key answers its outcome.
    fake.delay_ms(0);
    let after = stripe.charge(&request("k-race", 700, PM_VISA)).await;
    assert!(outcomes.contains(&after));
    succeeded(&after);
}

#[tokio::test]
async fn declines_carry_the_decline_code() {
    let (fake, stripe) = setup().await;
    let outcome = stripe.charge(&request("k-decline", 500, PM_DECLINED)).await;
    let ChargeOutcome::Declined {
        charge_ref: Some(pi),
        code,
        message,
    } = outcome
    else {
        panic!("expected declined, got {outcome:?}");
    };
    assert_eq!(code, "generic_decline");
    assert_eq!(message, "Your card was declined.");
    assert_eq!(fake.intent(&pi)["status"], "requires_payment_method");
    // The read-back agrees.
    assert!(matches!(
        stripe.retrieve(&pi).await,
        ChargeOutcome::Declined { code, .. } if code == "generic_decline"
    ));
    let funds = stripe
        .charge(&request("k-funds", 500, PM_INSUFFICIENT_FUNDS))
        .await;
    assert!(
        matches!(&funds, ChargeOutcome::Declined { code, .. } if code == "insufficient_funds"),
        "{funds:?}"
    );
    fake.decline_next(1);
    let switched = stripe.charge(&request("k-switch", 500, PM_VISA)).await;
    assert!(
        matches!(&switched, ChargeOutcome::Declined { code, .. } if code == "generic_decline"),
        "{switched:?}"
    );
    assert_eq!(fake.charges(), 0);
}

#[tokio::test]
async fn three_ds_requires_action_then_the_read_back_succeeds() {
    let (fake, stripe) = setup().await;
    let outcome = stripe.charge(&request("k-3ds", 2000, PM_3DS)).await;
    let ChargeOutcome::RequiresAction {
        charge_ref,
        action_url,
        client_secret,
    } = outcome
    else {
        panic!("expected requires action, got {outcome:?}");
    };
    assert!(action_url.unwrap().contains(&charge_ref));
    assert!(client_secret
        .unwrap()
        .starts_with(&format!("{charge_ref}_secret_")));
    assert_eq!(fake.charges(), 0);
    // Before the shopper finishes, the read-back still requires action.
    assert!(matches!(
        stripe.complete_action(&charge_ref, "k-3ds").await,
        ChargeOutcome::RequiresAction { .. }
    ));
    assert!(fake.complete_3ds(&charge_ref));
    assert_eq!(
        stripe.complete_action(&charge_ref, "k-3ds").await,
        ChargeOutcome::Succeeded {
            charge_ref: charge_ref.clone()
        }
    );
    assert_eq!(fake.charges(), 1);
}

#[tokio::test]
async fn a_failed_3ds_is_declined_on_read_back() {
    let (fake, stripe) = setup().await;
    let outcome = stripe.charge(&request("k-3ds-fail", 2000, PM_3DS)).await;
    let pi = outcome.charge_ref().unwrap().to_owned();
    assert!(fake.fail_3ds(&pi));
    let read = stripe.complete_action(&pi, "k-3ds-fail").await;
    assert!(
        matches!(&read, ChargeOutcome::Declined { code, .. } if code == "payment_intent_authentication_failure"),
        "{read:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_unknown_and_the_replay_succeeds_once() {
    let (fake, stripe) = setup().await;
    fake.drop_after_charge(1);
    let lost = stripe.charge(&request("k-drop", 1500, PM_VISA)).await;
    assert!(
        matches!(
            &lost,
            ChargeOutcome::Unknown {
                charge_ref: None,
                ..
            }
        ),
        "{lost:?}"
    );
    assert_eq!(fake.charges(), 1, "the charge happened");
    let replay = stripe.charge(&request("k-drop", 1500, PM_VISA)).await;
    succeeded(&replay);
    assert_eq!(fake.charges(), 1);
}

#[tokio::test]
async fn a_5xx_is_unknown_never_declined() {
    let (fake, stripe) = setup().await;
    fake.fail_5xx_next(1);
    let outcome = stripe.charge(&request("k-5xx", 1500, PM_VISA)).await;
    assert!(
        matches!(&outcome, ChargeOutcome::Unknown { reason, .. } if reason.contains("500")),
        "{outcome:?}"
    );
    assert_eq!(fake.charges(), 0);
    // Nothing answers at all: unknown too.
    let nowhere = Stripe::from_config(
        &serde_json::from_value(serde_json::json!({
            "secret_key": STRIPE_KEY,
            "api_base": format!("http://127.0.0.1:{}", ocart_tests::free_port()),
            "timeout_secs": 2,
        }))
        .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        nowhere.charge(&request("k-nowhere", 1500, PM_VISA)).await,
        ChargeOutcome::Unknown { .. }
    ));
}

#[tokio::test]
async fn a_wrong_key_is_declined_as_authentication_failed_without_the_key() {
    let fake = FakeStripe::start().await;
    let wrong_key = "sk_test_wrongwrongwrong";
    let stripe = Stripe::from_config(&fake.stripe_config_with_key(wrong_key)).unwrap();
    let outcome = stripe.charge(&request("k-auth", 1500, PM_VISA)).await;
    let ChargeOutcome::Declined { code, message, .. } = &outcome else {
        panic!("expected declined, got {outcome:?}");
    };
    assert_eq!(code, "authentication_failed");
    let shown = format!("{outcome:?} {message} {stripe:?}");
    assert!(
        !shown.contains(wrong_key) && !shown.contains("wrongwrong"),
        "{shown}"
    );
    assert_eq!(fake.charges(), 0);
    // A read-back that is refused proves nothing about the charge.
    assert!(matches!(
        stripe.retrieve("pi_anything").await,
        ChargeOutcome::Unknown { .. }
    ));
}

#[tokio::test]
async fn a_missing_intent_reads_back_unknown() {
    let (_fake, stripe) = setup().await;
    let outcome = stripe.retrieve("pi_missing/../x").await;
    assert!(
        matches!(&outcome, ChargeOutcome::Unknown { charge_ref: Some(r), reason } if r == "pi_missing/../x" && reason.contains("404")),
        "{outcome:?}"
    );
}

fn refund(key: &str, pi: &str, minor: i64) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.into(),
        charge_ref: pi.into(),
        amount: eur(minor),
        reason: Some("the shopper asked".into()),
    }
}

#[tokio::test]
async fn refunds_partial_full_idempotent_and_bounded() {
    let (fake, stripe) = setup().await;
    let pi = succeeded(&stripe.charge(&request("k-refund", 1000, PM_VISA)).await);
    let partial = stripe.refund(&refund("r-1", &pi, 300)).await;
    let RefundOutcome::Refunded { refund_ref } = &partial else {
        panic!("expected refunded, got {partial:?}");
    };
    assert!(refund_ref.starts_with("re_"));
    let sent = fake.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/refunds");
    assert_eq!(sent.param("reason"), Some("requested_by_customer"));
    assert_eq!(sent.idempotency_key.as_deref(), Some("r-1"));
    // The same refund again: the same answer, no second refund.
    assert_eq!(stripe.refund(&refund("r-1", &pi, 300)).await, partial);
    assert_eq!(fake.refunds_of(&pi).len(), 1);
    // More than is left is refused.
    let over = stripe.refund(&refund("r-2", &pi, 701)).await;
    assert!(
        matches!(&over, RefundOutcome::Failed { code, .. } if code == "amount_too_large"),
        "{over:?}"
    );
    // The rest.
    assert!(matches!(
        stripe.refund(&refund("r-3", &pi, 700)).await,
        RefundOutcome::Refunded { .. }
    ));
    let total: i64 = fake
        .refunds_of(&pi)
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 1000);
    let again = stripe.refund(&refund("r-4", &pi, 1)).await;
    assert!(
        matches!(&again, RefundOutcome::Failed { code, .. } if code == "charge_already_refunded"),
        "{again:?}"
    );
    assert_eq!(fake.refunds_of(&pi).len(), 2);
}

#[tokio::test]
async fn signed_events_verify_under_the_webhook_secret() {
    let (fake, stripe) = setup().await;
    let pi = succeeded(&stripe.charge(&request("k-event", 1000, PM_VISA)).await);
    let (body, header) = fake.signed_event("payment_intent.succeeded", &pi);
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "payment_intent.succeeded");
    assert_eq!(event["data"]["object"]["id"], pi.as_str());
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        ocart_api::gateways::stripe_signature::verify(
            &header,
            &body,
            &[STRIPE_WEBHOOK_SECRET],
            now
        ),
        Ok(())
    );
    let mut config = ocart_api::Config::default();
    fake.configure(&mut config);
    assert!(config.gateways.stripe.is_some());
}
