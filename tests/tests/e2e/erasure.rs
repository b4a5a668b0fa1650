//! Erasure survives crashes: every entry point records the erasure first and deletes the key
//! before it answers, and the eraser process manager deletes any key an erasure in the log
//! left behind (a crash between the two).

use ocart_domain::cart::{Cart, CartCommand};
use ocart_projections::{CommandMeta, Commands, Db, EventLog};
use ocart_tests::{capture_body, session, spawn_app, spawn_on, test_config, FreshDb, Kind};
use serde_json::json;

async fn keys_in_vault(db: &Db) -> i64 {
    let (n,): (i64,) = match db {
        Db::Pg(pool) => sqlx::query_as("SELECT count(*) FROM key_vault")
            .fetch_one(pool)
            .await
            .unwrap(),
        Db::Lite(pool) => sqlx::query_as("SELECT count(*) FROM key_vault")
            .fetch_one(pool)
            .await
            .unwrap(),
    };
    n
}

/// The server records a withdrawal and crashes before it deletes the shopper's keys: the
/// withdrawal is in the log, the keys are not gone. On restart the eraser deletes them.
async fn a_withdrawal_recorded_before_a_crash_is_erased_on_restart(kind: Kind) {
    let app = spawn_app(kind).await;
    let (status, reply) = app
        .capture(&capture_body(&session(), "crash.withdraw@example.com", 1))
        .await;
    assert_eq!(status, 202, "{reply}");
    let cart_id = reply["cart_id"].as_str().unwrap().to_owned();
    app.eventually(&format!("/ocart/v1/carts/{cart_id}"), |c| {
        c["email"] == "crash.withdraw@example.com"
    })
    .await;
    let fresh = app.stop().await;
    // What the capture handler appends for a withdrawal, with no server around to go on.
    let db = fresh.connect().await;
    assert!(keys_in_vault(&db).await > 0, "the shopper has keys");
    let carts: Commands<Cart> = Commands::new(EventLog::open(db.clone()).await.unwrap(), ());
    let now = chrono::Utc::now();
    let outcome = carts
        .execute(
            &cart_id,
            CartCommand::WithdrawConsent { at: now },
            &CommandMeta::system("test", None, now),
        )
        .await
        .unwrap();
    assert!(!outcome.events.is_empty(), "the withdrawal is recorded");
    assert!(keys_in_vault(&db).await > 0, "the crash left the keys");
    // The restart: the eraser reaches the withdrawal and deletes the keys.
    let config = test_config(&fresh);
    let app = spawn_on(fresh, config).await;
    for _ in 0..200 {
        if keys_in_vault(&app.core.db).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(keys_in_vault(&app.core.db).await, 0, "every key is gone");
    // A withdrawn cart leaves the read table, live and after a rebuild from the log.
    let mut gone = false;
    for _ in 0..200 {
        let (status, _) = app.admin_get(&format!("/ocart/v1/carts/{cart_id}")).await;
        if status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the withdrawn cart leaves the read table");
    let runners = app.core.runners().await.unwrap();
    let projector = runners.iter().find(|r| r.name() == "carts").unwrap();
    projector.rebuild(|_| {}).await.unwrap();
    let row = ocart_projections::queries::get_cart(&app.core.db, &cart_id)
        .await
        .unwrap();
    assert!(row.is_none(), "a rebuild does not bring it back");
    assert_eq!(keys_in_vault(&app.core.db).await, 0);
}

#[tokio::test]
async fn postgres_a_withdrawal_recorded_before_a_crash_is_erased_on_restart() {
    a_withdrawal_recorded_before_a_crash_is_erased_on_restart(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_withdrawal_recorded_before_a_crash_is_erased_on_restart() {
    a_withdrawal_recorded_before_a_crash_is_erased_on_restart(Kind::Sqlite).await;
}

/// `ocart serve` acknowledges a withdrawal and is killed with SIGKILL at once: after the
/// restart the shopper's data is unreadable, in the read tables and in the log.
#[tokio::test]
async fn an_acknowledged_withdrawal_stays_erased_after_kill_9() {
    let fresh = FreshDb::sqlite();
    let dir = fresh.dir().unwrap().clone();
    let port = ocart_tests::free_port();
    let bin = tokio::task::spawn_blocking(ocart_tests::ocart_bin)
        .await
        .unwrap();
    let start = || ocart_tests::serve_in(&bin, &dir, port, std::process::Stdio::null);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/ocart/v1");
    let wait_up = || ocart_tests::wait_until_serving(&client, port);
    let child = start();
    wait_up().await;
    let s = session();
    let captured = client
        .post(format!("{base}/checkout/capture"))
        .json(&capture_body(&s, "kill.nine@example.com", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(captured.status(), 202);
    let mut withdraw = capture_body(&s, "kill.nine@example.com", 1);
    withdraw["consent"] = json!(false);
    let withdrawn = client
        .post(format!("{base}/checkout/capture"))
        .json(&withdraw)
        .send()
        .await
        .unwrap();
    assert_eq!(
        withdrawn.status(),
        202,
        "{}",
        withdrawn.text().await.unwrap()
    );
    std::process::Command::new("kill")
        .args(["-KILL", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let _ = child.wait_with_output().await;
    let db = fresh.connect().await;
    assert_eq!(
        keys_in_vault(&db).await,
        0,
        "no key survives the acknowledgement"
    );
    // After the restart the read table shows the cart erased, and nothing reads the email.
    let child = start();
    wait_up().await;
    // (The killed server's SQLite lease expires after 15 s; then the new one projects.)
    let mut erased = false;
    for _ in 0..600 {
        let carts = ocart_projections::queries::all_carts(&db).await.unwrap();
        if carts.is_empty() {
            erased = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        erased,
        "the withdrawn cart is not in the read table after the restart"
    );
    assert_eq!(keys_in_vault(&db).await, 0);
    // Nothing in the log reads as the shopper's email: every sealed field's key is gone.
    let Db::Lite(pool) = &db else { unreachable!() };
    let (payloads,): (String,) = sqlx::query_as("SELECT group_concat(payload, '') FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(!payloads.contains("kill.nine"), "no clear text in the log");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let _ = child.wait_with_output().await;
}

/// The eraser completes an erasure by deleting the key the erasure covered, never one the
/// subject got afterwards: a shopper who withdraws and later checks out again with consent
/// keeps the new cart readable, whenever the eraser reaches the old withdrawal.
async fn the_eraser_leaves_a_key_created_after_the_erasure(kind: Kind) {
    let fresh = FreshDb::new(kind).await;
    let db = fresh.connect().await;
    let vault = ocart_projections::Vault::open(db.clone(), None)
        .await
        .unwrap();
    let email = ocart_domain::Email::parse("email", "back.again@example.com").unwrap();
    let subject = vault.subject_for_email(&email);
    let old = vault
        .seal(&subject, "back.again@example.com")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let erased_at = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // The erasure ran inline; the shopper comes back and gets a new key.
    vault.erase(&subject).await.unwrap();
    let new = vault
        .seal(&subject, "back.again@example.com")
        .await
        .unwrap();
    assert_ne!(old.key, new.key);
    // The eraser reaches the old erasure now: the new key stays.
    assert!(!vault
        .erase_if_created_by(&subject, erased_at)
        .await
        .unwrap());
    assert_eq!(
        vault.unseal(&new).await.unwrap().as_deref(),
        Some("back.again@example.com")
    );
    assert_eq!(vault.unseal(&old).await.unwrap(), None);
    // An erasure recorded after the key was made does delete it.
    assert!(vault
        .erase_if_created_by(&subject, chrono::Utc::now())
        .await
        .unwrap());
    let reopened = ocart_projections::Vault::open(db.clone(), None)
        .await
        .unwrap();
    assert_eq!(reopened.unseal(&new).await.unwrap(), None);
    assert_eq!(keys_in_vault(&db).await, 0);
}

#[tokio::test]
async fn postgres_the_eraser_leaves_a_key_created_after_the_erasure() {
    the_eraser_leaves_a_key_created_after_the_erasure(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_the_eraser_leaves_a_key_created_after_the_erasure() {
    the_eraser_leaves_a_key_created_after_the_erasure(Kind::Sqlite).await;
}
