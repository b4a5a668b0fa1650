//! The upsell charger end to end, on both backends: acceptances made through
//! `UpsellCommand::Accept`, charged at the sandbox gateway, written to the fake WooCommerce as
//! child orders (strategy A) or merged into the parent (strategy B), reconciled when the outcome
//! is unknown, continued after 3DS, refunded against their own charge, and driven to one charge
//! and one order when the charger stopped between the gateway's charge and its record.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ocart_domain::order::{order_id_for, OrderCommand, OrderFacts};
use ocart_domain::upsell::{
    acceptance_id, charge_key, AcceptInput, AcceptanceStatus, ChargeResult, OrderStrategy,
    UpsellAcceptance, UpsellCommand, UpsellKind,
};
use ocart_domain::{Currency, Money, ProductId};
use ocart_processors::gateways::sandbox::{self, Sandbox};
use ocart_processors::gateways::{ChargeOutcome, ChargeRequest, Gateway, Gateways};
use ocart_processors::upsell::{ChargerConfig, UpsellCharger, UPSELL_CHARGER};
use ocart_projections::{load_checkpoint, CommandMeta};
use ocart_tests::{spawn_app_with, start_time, FakeWoo, Kind, TestApp};
use serde_json::Value;

const PRICE: i64 = 1_990;

fn meta() -> CommandMeta {
    CommandMeta::system("test", None, start_time())
}

fn input(parent: &str, step: &str, method: &str, strategy: OrderStrategy) -> AcceptInput {
    AcceptInput {
        offer_id: "offer-mug".into(),
        kind: UpsellKind::Upsell,
        funnel_id: "funnel-1".into(),
        step: step.into(),
        parent_order_id: parent.into(),
        jti: format!("jti-{parent}-{step}"),
        product_id: ProductId::Number(77),
        product_name: "Second mug".into(),
        quantity: 1,
        price: Money::new(PRICE, Currency::EUR).unwrap(),
        gateway: "sandbox".into(),
        customer: Some("cus_sandbox".into()),
        payment_method: method.into(),
        strategy,
        request_key: None,
        request_hash: None,
        at: start_time(),
    }
}

/// Accepts the step's offer; answers the acceptance id.
async fn accept(app: &TestApp, input: AcceptInput) -> String {
    let id = acceptance_id(&input.parent_order_id, &input.funnel_id, &input.step);
    app.core
        .acceptances
        .execute(&id, UpsellCommand::Accept(Box::new(input)), &meta())
        .await
        .expect("accept");
    id
}

/// Waits (bounded) until the acceptance is in `status`.
async fn until(app: &TestApp, id: &str, status: AcceptanceStatus) -> UpsellAcceptance {
    let mut last = None;
    for _ in 0..1_000 {
        let (acceptance, _, _) = app.core.acceptances.load(id).await.expect("load");
        if acceptance.status() == Some(status) {
            return acceptance;
        }
        last = acceptance.status();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("acceptance {id} never became {status:?}; last {last:?}");
}

/// Runs `charger` until its checkpoint is past every event of the acceptance (bounded). On
/// PostgreSQL the log shows an event to followers only once no older transaction is open (any
/// test's, on the shared server), so one `catch_up` may see nothing yet.
async fn drain(app: &TestApp, charger: &UpsellCharger, id: &str) {
    for _ in 0..1_000 {
        charger.catch_up().await.expect("catch up");
        let last = app
            .core
            .log
            .load("upsell_acceptance", id)
            .await
            .expect("events")
            .last()
            .map(|e| e.checkpoint())
            .expect("the acceptance has events");
        let at = load_checkpoint(app.core.log.db(), UPSELL_CHARGER)
            .await
            .expect("checkpoint");
        if at >= last {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the charger never passed the events of {id}");
}

/// The acceptance's event types, in order.
async fn events(app: &TestApp, id: &str) -> Vec<String> {
    app.core
        .log
        .load("upsell_acceptance", id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// Waits until the charger has stepped twice after the log stopped moving (its own `settle`:
/// the harness's does not watch it), so what it would do about the log is done.
async fn settle_charger(app: &TestApp) {
    app.settle().await;
    let steps = |app: &TestApp| {
        app.core
            .processors
            .snapshot()
            .into_iter()
            .find(|p| p.name == "upsell_charger")
            .map(|p| p.steps)
            .expect("the charger runs")
    };
    for _ in 0..50 {
        let head = app.core.log.stats().await.expect("stats").1;
        let before = steps(app);
        let mut stepped = false;
        for _ in 0..1_000 {
            if steps(app) >= before + 2 {
                stepped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(stepped, "the charger did not step within 10 s");
        if app.core.log.stats().await.expect("stats").1 == head {
            return;
        }
    }
    panic!("the log kept moving");
}

fn sandbox_of(app: &TestApp) -> Arc<Sandbox> {
    app.core.gateways.sandbox().expect("the sandbox runs")
}

async fn woo_app(kind: Kind) -> (TestApp, FakeWoo) {
    let woo = FakeWoo::start().await;
    let app = spawn_app_with(kind, |c| woo.configure(c)).await;
    (app, woo)
}

/// Records the parent order as the store reported it, placed at `placed_at`.
async fn record_parent(app: &TestApp, parent: &str, placed_at: DateTime<Utc>) {
    let facts = OrderFacts {
        order_id: parent.into(),
        status: "processing".into(),
        paid: true,
        payment_method: Some("sandbox".into()),
        currency: Currency::EUR,
        total: 5_000,
        email_hash: None,
        placed_at,
        source: "woocommerce".into(),
        coupon_codes: Vec::new(),
        modified_at: None,
        payment: None,
        offer_lines: Vec::new(),
    };
    app.core
        .orders
        .execute(
            &order_id_for(parent).to_string(),
            OrderCommand::Record {
                facts: Box::new(facts),
                attribution: None,
                at: placed_at,
            },
            &meta(),
        )
        .await
        .expect("parent order");
}

fn has_meta(order: &Value, key: &str, value: &str) -> bool {
    order["meta_data"]
        .as_array()
        .is_some_and(|m| m.iter().any(|e| e["key"] == key && e["value"] == value))
}

fn count(events: &[String], event_type: &str) -> usize {
    events.iter().filter(|e| *e == event_type).count()
}

async fn succeeded_charge_writes_one_child_order(kind: Kind) {
    let (app, woo) = woo_app(kind).await;
    woo.put_order(700, start_time(), "50.00");
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::OK, OrderStrategy::A),
    )
    .await;
    let accepted = until(&app, &id, AcceptanceStatus::Accepted).await;
    let charge_ref = accepted.charge_ref().expect("charged").to_owned();
    let children = woo.children_of(700);
    assert_eq!(children.len(), 1, "{children:?}");
    let child = &children[0];
    assert_eq!(
        accepted.child_order_id(),
        Some(child["id"].to_string().as_str())
    );
    assert_eq!(child["parent_id"], 700);
    assert_eq!(child["status"], "processing");
    assert_eq!(child["set_paid"], true);
    assert_eq!(child["transaction_id"], charge_ref.as_str());
    assert_eq!(child["payment_method"], "sandbox");
    assert!(has_meta(child, "_ocart_acceptance_id", &id), "{child}");
    assert_eq!(child["line_items"][0]["product_id"], 77);
    assert_eq!(child["line_items"][0]["quantity"], 1);
    assert_eq!(child["line_items"][0]["total"], "19.90");
    assert_eq!(sandbox_of(&app).succeeded_charges(), 1);
    settle_charger(&app).await;
    let seen = events(&app, &id).await;
    assert_eq!(count(&seen, "upsell/accepted"), 1, "{seen:?}");
    assert_eq!(count(&seen, "upsell/charge_succeeded"), 1, "{seen:?}");
    assert_eq!(woo.orders_created(), 1);
    // The parent is left as it was.
    assert_eq!(
        woo.order(700).unwrap()["line_items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn postgres_a_succeeded_charge_writes_one_child_order() {
    succeeded_charge_writes_one_child_order(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_succeeded_charge_writes_one_child_order() {
    succeeded_charge_writes_one_child_order(Kind::Sqlite).await;
}

async fn declined_charge_writes_no_order(kind: Kind) {
    let (app, woo) = woo_app(kind).await;
    woo.put_order(700, start_time(), "50.00");
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::DECLINE, OrderStrategy::A),
    )
    .await;
    until(&app, &id, AcceptanceStatus::Declined).await;
    settle_charger(&app).await;
    let seen = events(&app, &id).await;
    assert_eq!(
        seen,
        ["upsell/before_charge", "upsell/charge_declined"],
        "{seen:?}"
    );
    assert_eq!(woo.orders_created(), 0);
    assert!(woo.children_of(700).is_empty());
}

#[tokio::test]
async fn postgres_a_declined_charge_writes_no_order() {
    declined_charge_writes_no_order(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_declined_charge_writes_no_order() {
    declined_charge_writes_no_order(Kind::Sqlite).await;
}

async fn unknown_outcome_is_reconciled_never_declined(kind: Kind) {
    let (app, woo) = woo_app(kind).await;
    woo.put_order(700, start_time(), "50.00");
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::TIMEOUT, OrderStrategy::A),
    )
    .await;
    until(&app, &id, AcceptanceStatus::Accepted).await;
    settle_charger(&app).await;
    let seen = events(&app, &id).await;
    assert_eq!(count(&seen, "upsell/charge_unknown"), 1, "{seen:?}");
    assert_eq!(count(&seen, "upsell/charge_declined"), 0, "{seen:?}");
    let unknown = seen.iter().position(|e| e == "upsell/charge_unknown");
    let succeeded = seen.iter().position(|e| e == "upsell/charge_succeeded");
    assert!(unknown < succeeded, "{seen:?}");
    assert_eq!(count(&seen, "upsell/accepted"), 1, "{seen:?}");
    assert_eq!(sandbox_of(&app).succeeded_charges(), 1);
    assert_eq!(woo.children_of(700).len(), 1);
}

#[tokio::test]
async fn postgres_an_unknown_outcome_is_reconciled_and_never_declined() {
    unknown_outcome_is_reconciled_never_declined(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_an_unknown_outcome_is_reconciled_and_never_declined() {
    unknown_outcome_is_reconciled_never_declined(Kind::Sqlite).await;
}

async fn three_ds_continues_after_the_shopper(kind: Kind) {
    let (app, woo) = woo_app(kind).await;
    woo.put_order(700, start_time(), "50.00");
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::THREE_DS, OrderStrategy::A),
    )
    .await;
    let waiting = until(&app, &id, AcceptanceStatus::RequiresAction).await;
    settle_charger(&app).await;
    assert_eq!(
        woo.orders_created(),
        0,
        "nothing is written while the shopper is away"
    );
    let charge_ref = waiting
        .charge_ref()
        .expect("a charge to authenticate")
        .to_owned();
    let sandbox = sandbox_of(&app);
    assert!(sandbox.authenticate(&charge_ref));
    let outcome = sandbox.complete_action(&charge_ref, &charge_key(&id)).await;
    let ChargeOutcome::Succeeded { charge_ref: done } = outcome else {
        panic!("expected succeeded, got {outcome:?}");
    };
    app.core
        .acceptances
        .execute(
            &id,
            UpsellCommand::RecordCharge {
                result: ChargeResult::Succeeded { charge_ref: done },
                at: start_time(),
            },
            &meta(),
        )
        .await
        .expect("record");
    until(&app, &id, AcceptanceStatus::Accepted).await;
    let children = woo.children_of(700);
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["transaction_id"], charge_ref.as_str());
    assert_eq!(sandbox.succeeded_charges(), 1);
}

#[tokio::test]
async fn postgres_3ds_requires_action_then_the_confirmed_charge_is_written() {
    three_ds_continues_after_the_shopper(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_3ds_requires_action_then_the_confirmed_charge_is_written() {
    three_ds_continues_after_the_shopper(Kind::Sqlite).await;
}

async fn failing_store_writes_are_retried_into_one_order(kind: Kind) {
    let (app, woo) = woo_app(kind).await;
    woo.put_order(700, start_time(), "50.00");
    woo.fail_next_order_writes(2);
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::OK, OrderStrategy::A),
    )
    .await;
    until(&app, &id, AcceptanceStatus::Accepted).await;
    settle_charger(&app).await;
    assert_eq!(woo.orders_created(), 1);
    assert_eq!(woo.children_of(700).len(), 1);
    let posts = woo
        .state
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| *r == "POST /wp-json/wc/v3/orders")
        .count();
    assert_eq!(posts, 3, "two refused, the third created");
    assert_eq!(count(&events(&app, &id).await, "upsell/accepted"), 1);
}

#[tokio::test]
async fn postgres_store_writes_that_fail_twice_make_one_child_order() {
    failing_store_writes_are_retried_into_one_order(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_store_writes_that_fail_twice_make_one_child_order() {
    failing_store_writes_are_retried_into_one_order(Kind::Sqlite).await;
}

async fn strategy_b_merges_within_the_cutoff(kind: Kind) {
    let (app, woo) = woo_app(kind).await;
    // Inside the cutoff (5 minutes by default): merged into the parent.
    woo.put_order(700, start_time(), "50.00");
    record_parent(&app, "700", start_time()).await;
    let mut soon = input("700", "upsell-1", sandbox::OK, OrderStrategy::B);
    soon.at = start_time() + chrono::Duration::minutes(2);
    let merged = accept(&app, soon).await;
    let merged = until(&app, &merged, AcceptanceStatus::Accepted).await;
    assert_eq!(merged.child_order_id(), Some("700"));
    let parent = woo.order(700).unwrap();
    let lines = parent["line_items"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{parent}");
    assert_eq!(lines[1]["product_id"], 77);
    assert_eq!(lines[1]["total"], "19.90");
    assert!(
        has_meta(
            &parent,
            &format!("_ocart_acceptance_id_{}", merged.id()),
            merged.charge_ref().unwrap()
        ),
        "{parent}"
    );
    assert!(woo.children_of(700).is_empty());
    // Past it: a child order.
    woo.put_order(800, start_time(), "50.00");
    record_parent(&app, "800", start_time()).await;
    let mut late = input("800", "upsell-1", sandbox::OK, OrderStrategy::B);
    late.at = start_time() + chrono::Duration::minutes(10);
    let late = accept(&app, late).await;
    let late = until(&app, &late, AcceptanceStatus::Accepted).await;
    let children = woo.children_of(800);
    assert_eq!(children.len(), 1);
    assert_eq!(
        late.child_order_id(),
        Some(children[0]["id"].to_string().as_str())
    );
    assert_eq!(
        woo.order(800).unwrap()["line_items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    settle_charger(&app).await;
    // The merge happened once.
    assert_eq!(
        woo.order(700).unwrap()["line_items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn postgres_strategy_b_merges_inside_the_cutoff_and_makes_a_child_past_it() {
    strategy_b_merges_within_the_cutoff(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_strategy_b_merges_inside_the_cutoff_and_makes_a_child_past_it() {
    strategy_b_merges_within_the_cutoff(Kind::Sqlite).await;
}

async fn a_refund_reaches_the_upsells_own_charge(kind: Kind) {
    let (app, woo) = woo_app(kind).await;
    woo.put_order(700, start_time(), "50.00");
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::OK, OrderStrategy::A),
    )
    .await;
    let accepted = until(&app, &id, AcceptanceStatus::Accepted).await;
    let charge_ref = accepted.charge_ref().unwrap().to_owned();
    let child: u64 = accepted.child_order_id().unwrap().parse().unwrap();
    app.core
        .acceptances
        .execute(
            &id,
            UpsellCommand::Refund {
                refund_id: "r1".into(),
                amount: 990,
                reason: Some("changed their mind".into()),
                at: start_time(),
            },
            &meta(),
        )
        .await
        .expect("refund");
    let mut noted = None;
    for _ in 0..1_000 {
        let (acceptance, _, _) = app.core.acceptances.load(&id).await.unwrap();
        if let Some(store) = acceptance.refunds()[0].store_refund_id.clone() {
            noted = Some(store);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let noted = noted.expect("the refund was noted on the store order");
    settle_charger(&app).await;
    assert_eq!(sandbox_of(&app).refunds_of(&charge_ref), 1);
    let refunds = woo.refunds_of(child);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["id"].to_string(), noted);
    assert_eq!(refunds[0]["api_refund"], false);
    assert_eq!(refunds[0]["amount"], "9.90");
    assert!(has_meta(&refunds[0], "_ocart_refund_id", "r1"));
    assert!(woo.refunds_of(700).is_empty(), "never the parent's");
    let seen = events(&app, &id).await;
    assert_eq!(count(&seen, "upsell/refunded"), 1, "{seen:?}");
    assert_eq!(count(&seen, "upsell/store_refund_recorded"), 1, "{seen:?}");
}

#[tokio::test]
async fn postgres_a_refund_reaches_the_upsells_own_charge_and_the_child_order() {
    a_refund_reaches_the_upsells_own_charge(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_refund_reaches_the_upsells_own_charge_and_the_child_order() {
    a_refund_reaches_the_upsells_own_charge(Kind::Sqlite).await;
}

async fn a_charge_made_before_a_crash_is_not_made_again(kind: Kind) {
    let woo = FakeWoo::start().await;
    woo.put_order(700, start_time(), "50.00");
    // No processors: the charger "stopped" right after the gateway charged.
    let app = spawn_app_with(kind, |c| {
        woo.configure(c);
        c.processors.enabled = false;
    })
    .await;
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::OK, OrderStrategy::A),
    )
    .await;
    let sandbox = Arc::new(Sandbox::new());
    let first = sandbox
        .charge(&ChargeRequest {
            idempotency_key: charge_key(&id),
            amount: Money::new(PRICE, Currency::EUR).unwrap(),
            customer: Some("cus_sandbox".into()),
            payment_method: sandbox::OK.into(),
            description: "before the crash".into(),
            invoice_id: id.clone(),
            return_url: None,
            metadata: Vec::new(),
        })
        .await;
    let ChargeOutcome::Succeeded { charge_ref } = first else {
        panic!("expected succeeded, got {first:?}");
    };
    // The charger starts again from its checkpoint with the same gateway.
    let mut gateways = Gateways::default();
    gateways.add(sandbox.clone());
    let charger = UpsellCharger::new(
        app.core.log.clone(),
        gateways,
        app.core.woo.clone(),
        app.core.clock.clone(),
        ChargerConfig {
            public_url: "https://ocart.shop.test".into(),
        },
    );
    drain(&app, &charger, &id).await;
    let (acceptance, _, _) = app.core.acceptances.load(&id).await.unwrap();
    assert_eq!(acceptance.status(), Some(AcceptanceStatus::Accepted));
    assert_eq!(acceptance.charge_ref(), Some(charge_ref.as_str()));
    assert_eq!(sandbox.succeeded_charges(), 1);
    assert_eq!(woo.orders_created(), 1);
    let children = woo.children_of(700);
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["transaction_id"], charge_ref.as_str());
    let seen = events(&app, &id).await;
    assert_eq!(count(&seen, "upsell/accepted"), 1, "{seen:?}");
    // A second charger, as after another crash before the checkpoint: nothing new.
    let mut gateways = Gateways::default();
    gateways.add(sandbox.clone());
    let again = UpsellCharger::new(
        app.core.log.clone(),
        gateways,
        app.core.woo.clone(),
        app.core.clock.clone(),
        ChargerConfig {
            public_url: "https://ocart.shop.test".into(),
        },
    );
    // Back to the checkpoint before the acceptance: the second charger reads all of it again.
    let mut tx = app.core.log.db().begin().await.unwrap();
    ocart_projections::save_checkpoint(&mut tx, UPSELL_CHARGER, Default::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drain(&app, &again, &id).await;
    assert_eq!(woo.orders_created(), 1);
    assert_eq!(sandbox.succeeded_charges(), 1);
    assert_eq!(events(&app, &id).await, seen);
}

#[tokio::test]
async fn postgres_a_charge_made_before_a_crash_is_not_made_again() {
    a_charge_made_before_a_crash_is_not_made_again(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_charge_made_before_a_crash_is_not_made_again() {
    a_charge_made_before_a_crash_is_not_made_again(Kind::Sqlite).await;
}

async fn without_a_store_the_order_is_ocarts_own(kind: Kind) {
    let app = spawn_app_with(kind, |_| {}).await;
    let id = accept(
        &app,
        input("ext-9", "upsell-1", sandbox::OK, OrderStrategy::A),
    )
    .await;
    let accepted = until(&app, &id, AcceptanceStatus::Accepted).await;
    assert_eq!(
        accepted.child_order_id(),
        Some(format!("ocart-{id}").as_str())
    );
    assert_eq!(sandbox_of(&app).succeeded_charges(), 1);
}

#[tokio::test]
async fn postgres_without_a_store_the_order_is_ocarts_own() {
    without_a_store_the_order_is_ocarts_own(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_without_a_store_the_order_is_ocarts_own() {
    without_a_store_the_order_is_ocarts_own(Kind::Sqlite).await;
}

async fn a_child_order_written_before_a_crash_is_found_not_made_again(kind: Kind) {
    let woo = FakeWoo::start().await;
    woo.put_order(700, start_time(), "50.00");
    let app = spawn_app_with(kind, |c| {
        woo.configure(c);
        c.processors.enabled = false;
    })
    .await;
    let id = accept(
        &app,
        input("700", "upsell-1", sandbox::OK, OrderStrategy::A),
    )
    .await;
    app.core
        .acceptances
        .execute(
            &id,
            UpsellCommand::RecordCharge {
                result: ChargeResult::Succeeded {
                    charge_ref: "sb_before_crash".into(),
                },
                at: start_time(),
            },
            &meta(),
        )
        .await
        .expect("record");
    // The child order the charger wrote just before it stopped, among another of the parent.
    for (child, acceptance) in [(900u64, "acc_another"), (901, id.as_str())] {
        woo.state.orders.lock().unwrap().insert(
            child,
            serde_json::json!({
                "id": child,
                "parent_id": 700,
                "status": "processing",
                "transaction_id": "sb_before_crash",
                "line_items": [],
                "meta_data": [{"key": "_ocart_acceptance_id", "value": acceptance}],
            }),
        );
    }
    let charger = UpsellCharger::new(
        app.core.log.clone(),
        Gateways::default(),
        app.core.woo.clone(),
        app.core.clock.clone(),
        ChargerConfig {
            public_url: "https://ocart.shop.test".into(),
        },
    );
    drain(&app, &charger, &id).await;
    let (acceptance, _, _) = app.core.acceptances.load(&id).await.unwrap();
    assert_eq!(acceptance.status(), Some(AcceptanceStatus::Accepted));
    assert_eq!(acceptance.child_order_id(), Some("901"));
    assert_eq!(woo.orders_created(), 0);
    assert_eq!(woo.children_of(700).len(), 2);
}

#[tokio::test]
async fn postgres_a_child_order_written_before_a_crash_is_found_not_made_again() {
    a_child_order_written_before_a_crash_is_found_not_made_again(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_child_order_written_before_a_crash_is_found_not_made_again() {
    a_child_order_written_before_a_crash_is_found_not_made_again(Kind::Sqlite).await;
}
