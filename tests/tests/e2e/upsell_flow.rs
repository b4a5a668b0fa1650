//! The whole one-click path through HTTP with the charger running: a paid order, a token, many
//! concurrent accepts (one key, and many keys) → one decision, one charge at the gateway, one
//! child order in WooCommerce, `upsell/accepted` once; the answers to one key identical.

use ocart_tests::{spawn_app_with, FakeWoo, Kind, TestApp};
use serde_json::{json, Value};

use crate::gateways::events_of;

/// An upsell offer and an active funnel `main` whose `upsell` step shows it; answers the offer.
async fn funnel_with_upsell(app: &TestApp) -> String {
    let (status, offer) = app
        .post(
            "/ocart/v1/upsells",
            Some(&app.admin),
            &json!({"name": "Mug warmer", "currency": "EUR",
                    "product": {"product_id": 77, "name": "Mug warmer", "price": 2500, "quantity": 1},
                    "pricing": {"type": "discount_pct", "value": "20"}}),
        )
        .await;
    assert_eq!(status, 201, "{offer}");
    let offer = offer["id"].as_str().unwrap().to_owned();
    let (status, funnel) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": "main", "name": "Main", "status": "active", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": offer,
                 "branches": {"accepted": "thanks", "declined": "thanks"}},
                {"key": "thanks", "type": "thank_you"}]}),
        )
        .await;
    assert_eq!(status, 201, "{funnel}");
    offer
}

async fn paid_order(app: &TestApp, order: &str) {
    let (status, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": order, "status": "processing", "currency": "EUR", "total": 4000,
                    "payment": {"gateway": "sandbox", "payment_method": "pm_sandbox_ok"}}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
}

async fn token(app: &TestApp, order: &str) -> String {
    let (status, issued) = app
        .post(
            "/ocart/v1/upsells/issue-token",
            Some(&app.admin),
            &json!({"order_id": order, "funnel_id": "main", "step": "upsell"}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    issued["token"].as_str().unwrap().to_owned()
}

/// `n` concurrent accepts of `offer` with `token`, the i-th with the key `key(i)`.
async fn accepts(
    app: &TestApp,
    offer: &str,
    token: &str,
    n: usize,
    key: impl Fn(usize) -> String,
) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let request = app
                .client
                .post(app.url(&format!("/ocart/v1/upsells/{offer}/accept")))
                .header("Idempotency-Key", key(i))
                .json(&json!({"token": token}));
            tokio::spawn(async move { ocart_tests::read(request.send().await.unwrap()).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

async fn concurrent_accepts_charge_once_on(kind: Kind) {
    let woo = FakeWoo::start().await;
    let app = spawn_app_with(kind, |c| woo.configure(c)).await;
    let offer = funnel_with_upsell(&app).await;
    app.settle().await;

    // A hundred with one key: the first answer, or "in flight" (409) while it runs.
    paid_order(&app, "8001").await;
    let first = token(&app, "8001").await;
    let answers = accepts(&app, &offer, &first, 100, |_| "one-key".into()).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    assert!(!accepted.is_empty(), "{answers:?}");
    assert!(
        accepted.iter().all(|b| *b == accepted[0]),
        "identical answers: {accepted:?}"
    );
    for (status, body) in &answers {
        assert!(
            *status == 202
                || (*status == 409
                    && body["type"]
                        .as_str()
                        .is_some_and(|t| t.contains("idempotency-key-in-flight"))),
            "{status} {body}"
        );
    }
    // Retried one after another once they finished, the in-flight ones get the same answer.
    for _ in 0..5 {
        let again = accepts(&app, &offer, &first, 1, |_| "one-key".into()).await;
        assert_eq!(again[0].0, 202, "{again:?}");
        assert_eq!(&again[0].1, accepted[0], "the stored answer");
    }

    // A hundred with a hundred keys for another order: one decision, the rest 409 naming it.
    paid_order(&app, "8002").await;
    let second = token(&app, "8002").await;
    let answers = accepts(&app, &offer, &second, 100, |i| format!("key-{i}")).await;
    let won: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s == 202).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    let id = won[0].1["acceptance_id"].as_str().unwrap().to_owned();
    for (status, body) in answers.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["acceptance_id"], id.as_str(), "{body}");
    }

    for order in ["8001", "8002"] {
        let acceptance = ocart_domain::upsell::acceptance_id(order, "main", "upsell");
        app.eventually(
            &format!("/ocart/v1/upsells/acceptances/{acceptance}"),
            |a| a["status"] == "accepted",
        )
        .await;
        let children = woo.children_of(order.parse().unwrap());
        assert_eq!(
            children.len(),
            1,
            "one child order of {order}: {children:?}"
        );
    }
    app.settle().await;
    assert_eq!(events_of(&app, "upsell/before_charge").await.len(), 2);
    assert_eq!(events_of(&app, "upsell/accepted").await.len(), 2);
    assert_eq!(
        app.core.gateways.sandbox().unwrap().succeeded_charges(),
        2,
        "one charge each"
    );
    assert_eq!(woo.orders_created(), 2);
}

#[tokio::test]
async fn concurrent_accepts_charge_once_and_write_one_child_order_pg() {
    concurrent_accepts_charge_once_on(Kind::Postgres).await;
}

#[tokio::test]
async fn concurrent_accepts_charge_once_and_write_one_child_order_lite() {
    concurrent_accepts_charge_once_on(Kind::Sqlite).await;
}
