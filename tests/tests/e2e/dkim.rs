//! DKIM from outside (ADR 0011): keys as OpenSSL writes them (RSA PKCS#1 and PKCS#8, Ed25519
//! PKCS#8 and the raw base64 seed), loaded from a TOML file as a store owner would. The record
//! `ocart email dkim-record` prints is the one published in the in-test DNS server, and the
//! `mail-auth` verifier checks the server's signatures against it: a message as sent passes; a
//! copy with one more Reply-To, Subject or From header fails (over-signing). The DNS check's
//! hint follows the configured key, a bad key stops the server with an error naming the
//! setting, and no configured secret ever shows in `Debug` output.

use std::path::{Path, PathBuf};

use chrono::Duration;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use ocart_api::Config;
use ocart_tests::{ocart, spawn_app_with, DnsServer, FreshDb, Kind, SmtpSink, TestApp};
use serde_json::{json, Value};

use crate::recovery::run_of;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// A fresh folder for config files.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ocart-dkim-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `toml` as `ocart.toml` in a fresh folder.
fn config_file(toml: &str) -> PathBuf {
    let path = temp_dir().join("ocart.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Whether every DKIM signature of `data` verifies, keys looked up at `dns`.
pub(crate) async fn dkim_verifies(dns: std::net::SocketAddr, data: &str) -> bool {
    let mut server = NameServerConfig::udp(dns.ip());
    for connection in &mut server.connections {
        connection.port = dns.port();
    }
    let authenticator = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![server]),
        ResolverOpts::default(),
    )
    .unwrap();
    let parsed = AuthenticatedMessage::parse(data.as_bytes()).expect("a parsable email");
    let results = authenticator.verify_dkim(&parsed).await;
    !results.is_empty() && results.iter().all(|r| r.result() == &DkimResult::Pass)
}

/// The header names of the message's `h=` tag, lowercased.
fn signed_names(data: &str) -> Vec<String> {
    let head = data.split("\r\n\r\n").next().unwrap();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let signature = unfolded
        .lines()
        .find_map(|l| l.strip_prefix("DKIM-Signature:"))
        .expect("a DKIM-Signature header");
    let h = signature
        .split(';')
        .filter_map(|t| t.trim().split_once('='))
        .find(|(k, _)| *k == "h")
        .map(|(_, v)| v)
        .expect("an h= tag");
    h.split(':')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect()
}

/// Test mode's trigger: one email to the SMTP sink, returned as sent.
async fn send_one(app: &TestApp, sink: &SmtpSink) -> String {
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&json!({"recovery": {"test_mode": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The settings are read from their projection: try again while it catches up.
    let mut attempt = 0;
    let flow = loop {
        let (status, flow) = app
            .post(
                "/ocart/v1/recovery/test/trigger",
                Some(&app.admin),
                &json!({"email": "owner@shop.test"}),
            )
            .await;
        attempt += 1;
        if status == 409 && attempt < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 201, "{flow}");
        break flow;
    };
    // The run opens at the trigger's time; then its first email falls due 30 s later.
    run_of(app, flow["cart_id"].as_str().unwrap(), |r| {
        r["status"] == "pending"
    })
    .await;
    app.clock.advance(Duration::seconds(31));
    for _ in 0..200 {
        if let Some(m) = sink.messages().first() {
            return m.data.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no email reached the SMTP sink");
}

struct KeyCase {
    algorithm: &'static str,
    /// The `private_key…` line(s) of `[email.dkim]`.
    key_toml: String,
    /// Text of the private key that must never be printed.
    private_text: String,
    /// The public key as OpenSSL derived it from the fixture (base64).
    public_b64: String,
    reply_to: bool,
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

async fn signatures_verify_and_over_sign(case: KeyCase) {
    let selector = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let path = config_file(&format!(
        "[email.dkim]\ndomain = \"shop.test\"\nselector = \"{selector}\"\nalgorithm = \"{}\"\n{}\n",
        case.algorithm, case.key_toml
    ));
    let loaded = Config::from_file(&path).unwrap();
    let sink = SmtpSink::start().await;
    let dns = DnsServer::start().await;
    let app = spawn_app_with(Kind::Sqlite, |c| {
        sink.configure(c);
        c.email.dkim = loaded.email.dkim.clone();
        if case.reply_to {
            c.email.reply_to = Some("Help <help@shop.test>".into());
        }
        c.recovery.dns_resolver = Some(dns.addr.to_string());
    })
    .await;
    let config = path.to_str().unwrap();

    // The record, as the CLI prints it: the public key OpenSSL derives, never the private one.
    let (code, out, err) = ocart(
        &app.db,
        &["--config", config, "email", "dkim-record", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    let name = format!("{selector}._domainkey.shop.test");
    let value = format!(
        "v=DKIM1; k={}; p={}",
        case.algorithm,
        case.public_b64.trim()
    );
    assert_eq!(record, json!({"name": name, "type": "TXT", "value": value}));
    let (code, human, err) = ocart(&app.db, &["--config", config, "email", "dkim-record"]).await;
    assert_eq!(code, 0, "{human}{err}");
    assert!(human.contains(&name) && human.contains(&value), "{human}");
    for printed in [&out, &human, &err] {
        assert!(
            !printed.contains(&case.private_text),
            "the private key was printed"
        );
    }

    // Before it is published, the DNS check says what to publish: this key's record.
    let (status, report) = app
        .post(
            "/ocart/v1/recovery/dns-check",
            Some(&app.admin),
            &json!({"domain": "shop.test"}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dkim"]["status"], "fail", "{report}");
    let hint = report["dkim"]["message"].as_str().unwrap();
    assert!(hint.contains(&value), "{hint}");

    // Published: the check passes and the server's signature verifies against it.
    dns.txt(&name, record["value"].as_str().unwrap());
    let (_, report) = app
        .post(
            "/ocart/v1/recovery/dns-check",
            Some(&app.admin),
            &json!({"domain": "shop.test"}),
        )
        .await;
    assert_eq!(report["dkim"]["status"], "pass", "{report}");

    let data = send_one(&app, &sink).await;
    assert!(
        dkim_verifies(dns.addr, &data).await,
        "the message as sent verifies:\n{data}"
    );
    let names = signed_names(&data);
    for over in ["from", "to", "subject", "date", "message-id", "reply-to"] {
        assert_eq!(
            names.iter().filter(|n| *n == over).count(),
            2,
            "{over} is over-signed: {names:?}"
        );
    }
    for once in ["content-type", "mime-version", "list-unsubscribe"] {
        assert!(
            names.iter().any(|n| n == once),
            "{once} is signed: {names:?}"
        );
    }
    let head = data.split("\r\n\r\n").next().unwrap();
    let reply_tos = head.lines().filter(|l| l.starts_with("Reply-To:")).count();
    assert_eq!(reply_tos, usize::from(case.reply_to), "{head}");

    // A copy with one more header on top does not.
    for extra in [
        "Reply-To: Attacker <refunds@attacker.test>\r\n",
        "Subject: Your order was cancelled, reply to get a refund\r\n",
        "From: Mug Store <shop@shop.test>\r\n",
    ] {
        let tampered = format!("{extra}{data}");
        assert!(
            !dkim_verifies(dns.addr, &tampered).await,
            "a copy with {extra:?} prepended must fail verification"
        );
    }
}

#[tokio::test]
async fn an_rsa_pkcs1_key_signs_reply_to_and_content_type_and_over_signs() {
    signatures_verify_and_over_sign(KeyCase {
        algorithm: "rsa",
        key_toml: format!(
            "private_key_file = \"{}\"",
            fixture("dkim-test-rsa.pem").display()
        ),
        private_text: pem_body(&read_fixture("dkim-test-rsa.pem"))[..64].to_owned(),
        public_b64: read_fixture("dkim-test-rsa.pub.b64"),
        reply_to: true,
    })
    .await;
}

/// The default output of OpenSSL 3's `openssl genpkey -algorithm RSA`, given inline.
#[tokio::test]
async fn an_rsa_pkcs8_key_starts_the_server_and_its_signatures_verify() {
    let pem = read_fixture("dkim-test-rsa-pkcs8.pem");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    signatures_verify_and_over_sign(KeyCase {
        algorithm: "rsa",
        key_toml: format!("private_key = '''\n{pem}'''"),
        private_text: pem_body(&pem)[..64].to_owned(),
        public_b64: read_fixture("dkim-test-rsa-pkcs8.pub.b64"),
        reply_to: false,
    })
    .await;
}

/// `openssl genpkey -algorithm ed25519`, as a file.
#[tokio::test]
async fn an_ed25519_pkcs8_key_signs_and_over_signs() {
    signatures_verify_and_over_sign(KeyCase {
        algorithm: "ed25519",
        key_toml: format!(
            "private_key_file = \"{}\"",
            fixture("dkim-test-ed25519.pem").display()
        ),
        private_text: read_fixture("dkim-test-ed25519.seed.b64").trim().to_owned(),
        public_b64: read_fixture("dkim-test-ed25519.pub.b64"),
        reply_to: true,
    })
    .await;
}

/// The base64 of the 32-byte private key, inline (lettre's own format).
#[tokio::test]
async fn an_ed25519_base64_seed_signs_and_over_signs() {
    let seed = read_fixture("dkim-test-ed25519.seed.b64");
    signatures_verify_and_over_sign(KeyCase {
        algorithm: "ed25519",
        key_toml: format!("private_key = \"{}\"", seed.trim()),
        private_text: seed.trim().to_owned(),
        public_b64: read_fixture("dkim-test-ed25519.pub.b64"),
        reply_to: false,
    })
    .await;
}

/// With an Ed25519 key configured, a published RSA key at the selector is named as the wrong
/// key, and the hint is the Ed25519 record (`k=ed25519`, never `k=rsa`).
#[tokio::test]
async fn the_dns_check_hint_follows_the_configured_key() {
    let dns = DnsServer::start().await;
    dns.txt(
        "ed._domainkey.shop.test",
        &format!(
            "v=DKIM1; k=rsa; p={}",
            read_fixture("dkim-test-rsa.pub.b64").trim()
        ),
    );
    let app = spawn_app_with(Kind::Sqlite, |c| {
        c.email.dkim = Some(
            serde_json::from_value(json!({
                "domain": "shop.test", "selector": "ed", "algorithm": "ed25519",
                "private_key_file": fixture("dkim-test-ed25519.pem"),
            }))
            .unwrap(),
        );
        c.recovery.dns_resolver = Some(dns.addr.to_string());
    })
    .await;
    let (status, report) = app
        .post(
            "/ocart/v1/recovery/dns-check",
            Some(&app.admin),
            &json!({"domain": "shop.test"}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dkim"]["status"], "fail", "{report}");
    let message = report["dkim"]["message"].as_str().unwrap();
    let expected = format!(
        "v=DKIM1; k=ed25519; p={}",
        read_fixture("dkim-test-ed25519.pub.b64").trim()
    );
    assert!(
        message.contains("not the key OCart signs with"),
        "{message}"
    );
    assert!(message.contains(&expected), "{message}");
    // Another selector of the same configuration: only the algorithm is known.
    let (_, report) = app
        .post(
            "/ocart/v1/recovery/dns-check",
            Some(&app.admin),
            &json!({"domain": "shop.test", "dkim_selector": "other"}),
        )
        .await;
    let message = report["dkim"]["message"].as_str().unwrap();
    assert!(message.contains("k=ed25519"), "{message}");
    assert!(!message.contains("k=rsa"), "{message}");
}

/// A key that cannot be read stops `ocart serve` (and `ocart email dkim-record`) with an error
/// that names the setting, says what is accepted and does not echo the key; no panic.
#[tokio::test]
async fn a_bad_dkim_key_stops_the_server_with_an_error_naming_the_setting() {
    let db = FreshDb::new(Kind::Sqlite).await;
    // Built once before the timed commands.
    tokio::task::spawn_blocking(ocart_tests::ocart_bin)
        .await
        .unwrap();
    let ed25519_pem = read_fixture("dkim-test-ed25519.pem");
    for (algorithm, key, says) in [
        (
            "rsa",
            "'''distinctive-not-a-key-4711'''".to_owned(),
            "PKCS#8",
        ),
        (
            "rsa",
            format!("'''\n{ed25519_pem}'''"),
            "is email.dkim.algorithm right?",
        ),
        ("ed25519", "'''c2hvcnQ='''".to_owned(), "32"),
    ] {
        let path = config_file(&format!(
            "[email.dkim]\ndomain = \"shop.test\"\nselector = \"s1\"\nalgorithm = \"{algorithm}\"\nprivate_key = {key}\n"
        ));
        let config = path.to_str().unwrap();
        for args in [
            vec!["--config", config, "serve", "--bind", "127.0.0.1:0"],
            vec!["--config", config, "email", "dkim-record"],
        ] {
            let (code, out, err) =
                tokio::time::timeout(std::time::Duration::from_secs(60), ocart(&db, &args))
                    .await
                    .expect("the command ends");
            assert_eq!(code, 1, "{args:?}: {out}{err}");
            assert!(err.contains("email.dkim.private_key"), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            let echoed = key.trim_matches('\'').trim();
            assert!(
                !err.contains(&echoed[..echoed.len().min(40)]),
                "the key was echoed: {err}"
            );
        }
    }
    // No [email.dkim] at all: the record command says what to configure.
    let path = config_file("");
    let (code, _, err) = ocart(
        &db,
        &["--config", path.to_str().unwrap(), "email", "dkim-record"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("[email.dkim]"), "{err}");
}

/// Every secret of the configuration, loaded from TOML as a user would write it, is absent
/// from the config's `Debug` output (plain and pretty).
#[test]
fn no_configured_secret_shows_in_debug_output() {
    let secrets = [
        "server-secret-7f3a",
        "email-webhook-secret-5d0e",
        "smtp-password-91c2",
        "dkim-private-key-2b8f",
        "sms-auth-token-c44a",
        "woo-consumer-key-1e9d",
        "woo-consumer-secret-83b7",
        "woo-webhook-secret-60fa",
        "db-password-4c1d",
        "nats-token-a07e",
    ];
    let path = config_file(&format!(
        r#"secret = "{}"
database_url = "postgres://ocart:{}@db.internal:5432/ocart"
nats_url = "nats://{}@nats.internal:4222"

[email]
webhook_secret = "{}"

[email.smtp]
username = "mailer"
password = "{}"

[email.dkim]
domain = "shop.test"
selector = "s1"
private_key = "{}"

[sms]
transport = "twilio"
account_sid = "AC123"
auth_token = "{}"
from = "+15550100"

[woocommerce]
url = "https://shop.test"
consumer_key = "{}"
consumer_secret = "{}"
webhook_secret = "{}"
"#,
        secrets[0],
        secrets[8],
        secrets[9],
        secrets[1],
        secrets[2],
        secrets[3],
        secrets[4],
        secrets[5],
        secrets[6],
        secrets[7],
    ));
    let config = Config::from_file(&path).unwrap();
    for shown in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(shown.contains("AC123"), "the config is shown: {shown}");
        assert!(
            shown.contains("db.internal"),
            "the URLs are shown, redacted: {shown}"
        );
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} shows in {shown}");
        }
    }
}
