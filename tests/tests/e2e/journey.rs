//! The whole recovery journey through HTTP on a manual clock, with every edge of the world a
//! real protocol: capture → abandonment → three emails over SMTP at 45 minutes, 24 and 72 hours,
//! DKIM-signed (verified against the key published in an in-test DNS server), a coupon created in
//! WooCommerce on the third only → the shopper opens the restore link → a signed WooCommerce
//! order webhook arrives → the run converts with the revenue, nothing more is sent, and the
//! analytics say so. The sending domain's SPF, DKIM and DMARC pass the DNS check.

use chrono::Duration;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use ocart_domain::Clock;
use ocart_tests::{
    spawn_app_with, wc_order, DnsServer, FakeWoo, Kind, SinkMessage, SmtpSink, WOO_WEBHOOK_SECRET,
};
use serde_json::json;

use crate::orders::{coupon_in, link_path, no_redirects};
use crate::recovery::{capture, events_of, run_of};

const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dkim-test-rsa.pem");
const PUBLIC: &str = include_str!("../../fixtures/dkim-test-rsa.pub.b64");

/// Verifies every DKIM signature of `message` through the DNS server at `dns`.
async fn dkim_passes(dns: std::net::SocketAddr, message: &SinkMessage) -> bool {
    let mut server = NameServerConfig::udp(dns.ip());
    for connection in &mut server.connections {
        connection.port = dns.port();
    }
    let authenticator = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![server]),
        ResolverOpts::default(),
    )
    .unwrap();
    let parsed = AuthenticatedMessage::parse(message.data.as_bytes()).expect("a parsable email");
    let results = authenticator.verify_dkim(&parsed).await;
    !results.is_empty() && results.iter().all(|r| r.result() == &DkimResult::Pass)
}

async fn journey(kind: Kind) {
    let sink = SmtpSink::start().await;
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let dns = DnsServer::start().await;
    dns.txt(
        "ocart._domainkey.shop.test",
        &format!("v=DKIM1; k=rsa; p={}", PUBLIC.trim()),
    );
    dns.txt("shop.test", "v=spf1 ip4:192.0.2.10 ~all");
    dns.txt(
        "_dmarc.shop.test",
        "v=DMARC1; p=quarantine; rua=mailto:d@shop.test",
    );
    let app = spawn_app_with(kind, |c| {
        sink.configure(c);
        woo.configure(c);
        c.email.dkim = Some(
            serde_json::from_value(json!({
                "domain": "shop.test", "selector": "ocart", "algorithm": "rsa",
                "private_key_file": KEY
            }))
            .unwrap(),
        );
        c.recovery.dns_resolver = Some(dns.addr.to_string());
    })
    .await;

    // The sending domain is ready.
    let (status, report) = app
        .post(
            "/ocart/v1/recovery/dns-check",
            Some(&app.admin),
            &json!({"domain": "shop.test"}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    for part in ["spf", "dkim", "dmarc"] {
        assert_eq!(report[part]["status"], "pass", "{part}: {report}");
    }

    // Capture; abandonment after 30 minutes.
    let cart = capture(&app, "ann@example.com").await;
    app.clock.advance(Duration::minutes(31));
    let run = run_of(&app, &cart, |r| r["status"] == "pending").await;
    let abandoned_at = chrono::DateTime::parse_from_rfc3339(run["abandoned_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);

    // Three emails at 45 minutes, 24 and 72 hours, each signed, the coupon on the third.
    for (step, after) in [
        (1, Duration::minutes(45)),
        (2, Duration::hours(24)),
        (3, Duration::hours(72)),
    ] {
        app.clock.set(abandoned_at + after - Duration::minutes(1));
        app.settle().await;
        assert_eq!(sink.messages().len(), step - 1, "step {step} went early");
        app.clock.set(abandoned_at + after);
        run_of(&app, &cart, |r| r["current_step"] == step).await;
        let messages = sink.messages();
        assert_eq!(messages.len(), step);
        let m = &messages[step - 1];
        assert!(m.header("DKIM-Signature").unwrap().contains("d=shop.test"));
        assert!(dkim_passes(dns.addr, m).await, "DKIM of email {step}");
        assert_eq!(
            m.header("List-Unsubscribe-Post").unwrap(),
            "List-Unsubscribe=One-Click"
        );
        assert_eq!(
            coupon_in(&m.data).is_some(),
            step == 3,
            "coupon on email {step}"
        );
    }
    let third = &sink.messages()[2];
    let code = coupon_in(&third.data).unwrap();
    assert_eq!(woo.state.coupons.lock().unwrap().len(), 1);

    // The shopper opens the restore link of the third email.
    let path = link_path(&third.data, "r").unwrap();
    let path = path.as_str();
    let client = no_redirects();
    let resp = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let token = path.strip_prefix("/r/").unwrap();

    // The store's order webhook: placed with the coupon, carrying the restore token.
    let mut order = wc_order(5001, "processing", "stripe", "22.50", "ann@example.com");
    let now = app.clock.now().format("%Y-%m-%dT%H:%M:%S").to_string();
    order["date_created_gmt"] = json!(now);
    order["coupon_lines"] = json!([{"id": 1, "code": code.to_lowercase(), "discount": "2.50"}]);
    order["meta_data"] = json!([{"id": 7, "key": "_ocart_restore", "value": token}]);
    let (status, reply) = app
        .wc_webhook("order.created", &order, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attribution"]["matched_by"], "restore_token");
    let run = run_of(&app, &cart, |r| r["status"] == "converted").await;
    assert_eq!(run["revenue_recovered"], 2250);
    assert_eq!(events_of(&app, "recovery/converted").await.len(), 1);

    // Nothing more is ever sent.
    app.clock.advance(Duration::days(10));
    app.settle().await;
    assert_eq!(sink.messages().len(), 3);

    // The analytics tell the story.
    let report = app
        .eventually("/ocart/v1/recovery/analytics?days=30", |r| {
            r["recovered_carts"] == 1
        })
        .await;
    assert_eq!(report["days"], 30);
    assert_eq!(report["tracked_carts"], 1);
    assert_eq!(report["abandoned_carts"], 1);
    assert_eq!(report["link_restored_and_purchased"], 1);
    assert_eq!(report["restore_clicks"], 1);
    assert_eq!(report["failed_restores"], 0);
    assert_eq!(report["recovery_rate"], 1.0);
    assert_eq!(report["click_to_recovery_rate"], 1.0);
    assert_eq!(report["abandoned_value"], json!({"EUR": 2500}));
    assert_eq!(report["recovered_revenue"], json!({"EUR": 2250}));
    assert_eq!(report["steps"][2]["recovered"], 1);
    assert_eq!(report["steps"][2]["sent"], 1);
    // An unsupported period falls back to 30 days.
    let (_, fallback) = app.admin_get("/ocart/v1/recovery/analytics?days=12").await;
    assert_eq!(fallback["days"], 30);
    let (_, dashboard) = app.admin_get("/ocart/v1/reports/dashboard?days=90").await;
    assert_eq!(dashboard["days"], 90);
    assert_eq!(dashboard["orders"]["orders"], 1);
    assert_eq!(
        dashboard["orders"]["average_order_value"],
        json!({"EUR": 2250})
    );
    assert_eq!(dashboard["recovery"]["recovered_carts"], 1);
}

#[tokio::test]
async fn postgres_the_whole_recovery_journey() {
    journey(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_the_whole_recovery_journey() {
    journey(Kind::Sqlite).await;
}

/// The DNS check says plainly what is missing or weak.
#[tokio::test]
async fn the_dns_check_names_missing_and_weak_records() {
    let dns = DnsServer::start().await;
    dns.txt("weak.test", "v=spf1 +all");
    dns.txt("_dmarc.weak.test", "v=DMARC1; p=none");
    let app = spawn_app_with(Kind::Sqlite, |c| {
        c.recovery.dns_resolver = Some(dns.addr.to_string());
    })
    .await;
    let (status, report) = app
        .post(
            "/ocart/v1/recovery/dns-check",
            Some(&app.admin),
            &json!({"domain": "weak.test", "dkim_selector": "s1"}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["spf"]["status"], "warn");
    assert_eq!(report["dkim"]["status"], "fail");
    assert_eq!(report["dkim"]["name"], "s1._domainkey.weak.test");
    assert_eq!(report["dmarc"]["status"], "warn");
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/dns-check",
            Some(&app.admin),
            &json!({"domain": "not a domain"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["domain", "dkim_selector"]);
}
