//! The PayPal adapter's contract, against the fake PayPal (no app, no storage): charges and
//! their replays, declines, the payer action, lost answers, tokens, refunds and webhooks.

use ocart_domain::{Currency, Money};
use ocart_processors::gateways::paypal::PayPal;
use ocart_processors::gateways::{
    ChargeOutcome, ChargeRequest, Gateway, RefundOutcome, RefundRequest,
};
use ocart_tests::{FakePayPal, VAULT_DECLINED, VAULT_OK, VAULT_PAYER_ACTION};

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::parse("currency", "USD").unwrap()).unwrap()
}

fn charge(key: &str, vault_id: &str, amount: Money) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.into(),
        amount,
        customer: None,
        payment_method: vault_id.into(),
        description: "One-click upsell".into(),
        invoice_id: format!("inv-{key}"),
        return_url: Some("https://shop.example/return".into()),
        metadata: vec![("acceptance_id".into(), key.into())],
    }
}

fn refund(key: &str, charge_ref: &str, minor: i64) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.into(),
        charge_ref: charge_ref.into(),
        amount: usd(minor),
        reason: Some("changed their mind".into()),
    }
}

async fn succeeded(paypal: &PayPal, request: &ChargeRequest) -> String {
    match paypal.charge(request).await {
        ChargeOutcome::Succeeded { charge_ref } => charge_ref,
        other => panic!("expected a success, got {other:?}"),
    }
}

#[tokio::test]
async fn paypal_charge_succeeds_and_a_replay_answers_the_same_order() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    let request = charge("acc-1", VAULT_OK, usd(1234));
    let order_id = succeeded(&paypal, &request).await;
    let order = fake.order(&order_id).expect("the fake kept the order");
    assert_eq!(order.value, "12.34");
    assert_eq!(order.currency, "USD");
    assert_eq!(order.purchase_unit["invoice_id"], "inv-acc-1");
    assert_eq!(order.purchase_unit["custom_id"], "acc-1");
    assert_eq!(order.payment_source["paypal"]["vault_id"], VAULT_OK);

    assert_eq!(
        succeeded(&paypal, &request).await,
        order_id,
        "a replay names the first order"
    );
    assert_eq!(
        paypal.retrieve(&order_id).await,
        ChargeOutcome::Succeeded {
            charge_ref: order_id.clone()
        }
    );
    assert_eq!((fake.orders(), fake.captures()), (1, 1), "one charge");

    // A saved card, and a currency with no decimals.
    let jpy = Money::new(500, Currency::parse("currency", "JPY").unwrap()).unwrap();
    let card = succeeded(&paypal, &charge("acc-2", "card:vault_card", jpy)).await;
    let order = fake.order(&card).unwrap();
    assert_eq!(order.value, "500");
    assert_eq!(order.payment_source["card"]["vault_id"], "vault_card");
    assert_eq!(fake.captures(), 2);
}

#[tokio::test]
async fn paypal_twenty_concurrent_charges_with_one_key_capture_once() {
    let fake = FakePayPal::start().await;
    let paypal = std::sync::Arc::new(fake.adapter());
    let request = charge("acc-race", VAULT_OK, usd(1999));
    let answers = futures::future::join_all((0..20).map(|_| {
        let paypal = paypal.clone();
        let request = request.clone();
        async move { paypal.charge(&request).await }
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|a| !matches!(a, ChargeOutcome::Declined { .. })),
        "{answers:?}"
    );
    let refs: std::collections::HashSet<_> =
        answers.iter().filter_map(|a| a.charge_ref()).collect();
    assert_eq!(refs.len(), 1, "one order: {answers:?}");
    assert_eq!((fake.orders(), fake.captures()), (1, 1));
}

#[tokio::test]
async fn paypal_a_key_still_in_flight_is_unknown_never_declined() {
    let fake = FakePayPal::start().await;
    let paypal = std::sync::Arc::new(fake.adapter());
    // Warm the token so every request reaches the create at the same time.
    succeeded(&paypal, &charge("acc-warm", VAULT_OK, usd(100))).await;
    fake.delay_ms(300);
    let request = charge("acc-flight", VAULT_OK, usd(1999));
    let answers = futures::future::join_all((0..20).map(|_| {
        let paypal = paypal.clone();
        let request = request.clone();
        async move { paypal.charge(&request).await }
    }))
    .await;
    fake.delay_ms(0);
    let won = answers
        .iter()
        .filter(|a| matches!(a, ChargeOutcome::Succeeded { .. }))
        .count();
    let unknown = answers
        .iter()
        .filter(|a| matches!(a, ChargeOutcome::Unknown { .. }))
        .count();
    assert_eq!((won, unknown), (1, 19), "{answers:?}");
    let order_id = succeeded(&paypal, &request).await;
    assert_eq!(
        answers.iter().find_map(|a| a.charge_ref()),
        Some(order_id.as_str())
    );
    assert_eq!(
        (fake.orders(), fake.captures()),
        (2, 2),
        "the warm-up and one more"
    );
}

#[tokio::test]
async fn paypal_instrument_declined_is_declined() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    let outcome = paypal
        .charge(&charge("acc-d", VAULT_DECLINED, usd(1000)))
        .await;
    assert!(
        matches!(&outcome, ChargeOutcome::Declined { code, .. } if code == "INSTRUMENT_DECLINED"),
        "{outcome:?}"
    );
    assert_eq!(fake.captures(), 0);
}

#[tokio::test]
async fn paypal_payer_action_then_approval_and_capture_succeeds() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    let outcome = paypal
        .charge(&charge("acc-pa", VAULT_PAYER_ACTION, usd(2500)))
        .await;
    let ChargeOutcome::RequiresAction {
        charge_ref,
        action_url,
        ..
    } = outcome
    else {
        panic!("the payer must act: {outcome:?}");
    };
    assert_eq!(
        action_url.as_deref(),
        Some(format!("https://www.sandbox.paypal.com/checkoutnow?token={charge_ref}").as_str())
    );
    assert!(
        matches!(
            paypal.complete_action(&charge_ref, "acc-pa").await,
            ChargeOutcome::RequiresAction { .. }
        ),
        "not approved yet: still waiting, nothing captured"
    );
    assert_eq!(fake.captures(), 0);
    assert!(fake.approve(&charge_ref));
    assert_eq!(
        paypal.complete_action(&charge_ref, "acc-pa").await,
        ChargeOutcome::Succeeded {
            charge_ref: charge_ref.clone()
        }
    );
    assert_eq!(
        paypal.complete_action(&charge_ref, "acc-pa").await,
        ChargeOutcome::Succeeded {
            charge_ref: charge_ref.clone()
        },
        "again: the same answer, no second capture"
    );
    assert_eq!(fake.captures(), 1);
}

#[tokio::test]
async fn paypal_a_lost_answer_is_unknown_and_the_replay_finds_the_charge() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    let request = charge("acc-lost", VAULT_OK, usd(4200));
    fake.drop_after_charge(1);
    let outcome = paypal.charge(&request).await;
    assert!(
        matches!(outcome, ChargeOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    assert_eq!(fake.captures(), 1, "the fake charged before it dropped");
    let order_id = succeeded(&paypal, &request).await;
    assert_eq!(fake.order(&order_id).unwrap().value, "42.00");
    assert_eq!((fake.orders(), fake.captures()), (1, 1));
}

#[tokio::test]
async fn paypal_5xx_and_slow_answers_are_unknown_never_declined() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    let request = charge("acc-5xx", VAULT_OK, usd(700));
    fake.fail_5xx_next(1);
    let outcome = paypal.charge(&request).await;
    assert!(
        matches!(outcome, ChargeOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    assert_eq!(fake.captures(), 0);
    succeeded(&paypal, &request).await;

    // Past the client's timeout (2 s): unknown.
    fake.delay_ms(2_500);
    let slow = paypal.charge(&charge("acc-slow", VAULT_OK, usd(700))).await;
    assert!(matches!(slow, ChargeOutcome::Unknown { .. }), "{slow:?}");
    fake.delay_ms(0);
}

#[tokio::test]
async fn paypal_token_is_cached_and_refreshed_after_it_expires() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    for i in 0..3 {
        succeeded(&paypal, &charge(&format!("acc-t{i}"), VAULT_OK, usd(100))).await;
    }
    assert_eq!(fake.token_requests(), 1, "one token for three calls");
    fake.expire_tokens();
    succeeded(&paypal, &charge("acc-t3", VAULT_OK, usd(100))).await;
    assert_eq!(fake.token_requests(), 2, "the 401 fetched one fresh token");
    succeeded(&paypal, &charge("acc-t4", VAULT_OK, usd(100))).await;
    assert_eq!(fake.token_requests(), 2);

    // Wrong credentials: a definite refusal, nothing charged.
    let mut config = fake.config();
    config.client_secret = "wrong".to_owned().into();
    let wrong = PayPal::from_config(&config).unwrap();
    let outcome = wrong.charge(&charge("acc-t5", VAULT_OK, usd(100))).await;
    assert!(
        matches!(&outcome, ChargeOutcome::Declined { code, .. } if code == "invalid_client"),
        "{outcome:?}"
    );
    assert_eq!(fake.captures(), 5);
}

#[tokio::test]
async fn paypal_refunds_are_partial_full_idempotent_and_bounded() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    let order_id = succeeded(&paypal, &charge("acc-r", VAULT_OK, usd(1000))).await;

    let first = paypal.refund(&refund("ref-1", &order_id, 300)).await;
    assert!(matches!(first, RefundOutcome::Refunded { .. }), "{first:?}");
    assert_eq!(
        paypal.refund(&refund("ref-1", &order_id, 300)).await,
        first,
        "a replay answers the first refund"
    );
    assert_eq!(fake.refunds_of(&order_id), vec![300]);

    let over = paypal.refund(&refund("ref-2", &order_id, 701)).await;
    assert!(
        matches!(&over, RefundOutcome::Failed { code, .. } if code == "REFUND_AMOUNT_EXCEEDED"),
        "{over:?}"
    );
    let rest = paypal.refund(&refund("ref-3", &order_id, 700)).await;
    assert!(matches!(rest, RefundOutcome::Refunded { .. }), "{rest:?}");
    assert_eq!(fake.refunds_of(&order_id), vec![300, 700]);
    assert_eq!(
        paypal.retrieve(&order_id).await,
        ChargeOutcome::Succeeded {
            charge_ref: order_id.clone()
        },
        "a refunded charge was still charged"
    );
    let more = paypal.refund(&refund("ref-4", &order_id, 1)).await;
    assert!(matches!(more, RefundOutcome::Failed { .. }), "{more:?}");

    // A full refund in one go, and an order that does not exist.
    let other = succeeded(&paypal, &charge("acc-r2", VAULT_OK, usd(555))).await;
    let full = paypal.refund(&refund("ref-5", &other, 555)).await;
    assert!(matches!(full, RefundOutcome::Refunded { .. }), "{full:?}");
    assert_eq!(fake.refunds_of(&other), vec![555]);
    let missing = paypal.refund(&refund("ref-6", "NOSUCHORDER", 1)).await;
    assert!(
        matches!(missing, RefundOutcome::Failed { .. }),
        "{missing:?}"
    );
    fake.fail_5xx_next(1);
    let unknown = paypal.refund(&refund("ref-7", &other, 1)).await;
    assert!(
        matches!(unknown, RefundOutcome::Unknown { .. }),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn paypal_webhooks_verify_only_with_the_right_signature() {
    let fake = FakePayPal::start().await;
    let paypal = fake.adapter();
    let (body, headers) =
        FakePayPal::signed_webhook("PAYMENT.CAPTURE.COMPLETED", "5O190127TN364715T");
    assert!(paypal.verify_webhook(&headers, &body).await.unwrap());

    let mut forged = headers.clone();
    for (k, v) in forged.iter_mut() {
        if k == "PAYPAL-TRANSMISSION-SIG" {
            *v = FakePayPal::sign("another-transmission", &body);
        }
    }
    assert!(!paypal.verify_webhook(&forged, &body).await.unwrap());
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("5O190127TN364715T", "5O190127TN364715X");
    assert!(!paypal
        .verify_webhook(&headers, tampered.as_bytes())
        .await
        .unwrap());
    let unsigned: Vec<_> = headers
        .iter()
        .filter(|(k, _)| k != "PAYPAL-TRANSMISSION-SIG")
        .cloned()
        .collect();
    assert!(!paypal.verify_webhook(&unsigned, &body).await.unwrap());
}
