//! Funnels over HTTP and the CLI: the CRUD round trip, graphs refused naming the step, slugs,
//! activation and archiving, capabilities, the checkout's resolve (by trigger rules, priority
//! and the default funnel; by session token without a bearer token), templates, and a rebuild
//! of the funnel tables equal to the live ones.

use ocart_domain::cart::cart_id_for_session;
use ocart_projections::Db;
use ocart_tests::{capture_body, ocart, read, session, spawn_app, Kind, TestApp};
use serde_json::{json, Value};

/// checkout → upsell (accepted: thanks, declined: downsell) → downsell → thanks.
fn classic_steps() -> Value {
    json!([
        {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
        {"key": "upsell", "type": "upsell", "offer_id": "up-1",
         "branches": {"accepted": "thanks", "declined": "downsell"}},
        {"key": "downsell", "type": "downsell", "offer_id": "down-1",
         "branches": {"default": "thanks"}},
        {"key": "thanks", "type": "thank_you"}
    ])
}

fn funnel(id: &str, extra: Value) -> Value {
    let mut body = json!({"id": id, "name": format!("Funnel {id}"), "steps": classic_steps()});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    body
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    read(req.send().await.expect("request")).await
}

async fn create(app: &TestApp, body: &Value) -> (u16, Value) {
    app.post("/ocart/v1/funnels", Some(&app.admin), body).await
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn crud_round_trip(kind: Kind) {
    let app = spawn_app(kind).await;
    let (status, created) = create(&app, &funnel("main", json!({}))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "main");
    assert_eq!(created["status"], "draft", "created as a draft");
    assert_eq!(
        created["settings"],
        json!({"theme": "default", "layout": "two_step"})
    );
    assert_eq!(
        created["trigger"],
        json!({"rules": {"all": []}, "priority": 0, "is_default": false})
    );
    assert_eq!(
        created["steps"][3]["position"], 3,
        "positions default to the index"
    );

    let (status, shown) = app.admin_get("/ocart/v1/funnels/main").await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown, created,
        "the read tables give back what the write answered"
    );

    let (status, patched) = send(
        &app,
        reqwest::Method::PATCH,
        "/ocart/v1/funnels/main",
        Some(&app.admin),
        Some(
            &json!({"name": "  Main funnel ", "settings": {"layout": "one_step", "theme": "dark"},
                     "trigger": {"priority": 5, "is_default": true}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Main funnel");
    assert_eq!(
        patched["settings"],
        json!({"theme": "dark", "layout": "one_step"})
    );
    assert_eq!(patched["trigger"]["priority"], 5);

    let steps = json!({"steps": [
        {"key": "checkout", "type": "checkout", "position": 0, "branches": {"default": "thanks"}},
        {"key": "thanks", "type": "thank_you", "position": 1, "branches": {}}
    ]});
    let (status, replaced) = send(
        &app,
        reqwest::Method::PUT,
        "/ocart/v1/funnels/main/steps",
        Some(&app.admin),
        Some(&steps),
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["steps"].as_array().unwrap().len(), 2);
    let (status, read_steps) = app.admin_get("/ocart/v1/funnels/main/steps").await;
    assert_eq!(status, 200, "{read_steps}");
    assert_eq!(read_steps, steps);

    let (status, list) = app.admin_get("/ocart/v1/funnels").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["funnels"].as_array().unwrap().len(), 1);
    assert_eq!(list["funnels"][0], replaced);
    let (_, drafts) = app.admin_get("/ocart/v1/funnels?status=active").await;
    assert_eq!(drafts["funnels"], json!([]));
    let (status, _) = app.admin_get("/ocart/v1/funnels/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn postgres_funnels_round_trip_through_the_api() {
    crud_round_trip(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_funnels_round_trip_through_the_api() {
    crud_round_trip(Kind::Sqlite).await;
}

async fn bad_funnels_are_refused(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut cycle = classic_steps();
    cycle[2]["branches"] = json!({"default": "upsell"});
    let mut dangling = classic_steps();
    dangling[1]["branches"]["accepted"] = json!("nowhere");
    let mut one_outcome = classic_steps();
    one_outcome[1]["branches"] = json!({"accepted": "thanks"});
    let cases = [
        ("a cycle", cycle, "steps[1].branches"),
        ("a dangling branch", dangling, "steps[1].branches.accepted"),
        (
            "an upsell without both outcomes",
            one_outcome,
            "steps[1].branches",
        ),
    ];
    for (what, steps, field) in cases {
        let (status, problem) =
            create(&app, &json!({"id": "bad", "name": "Bad", "steps": steps})).await;
        assert_eq!(status, 422, "{what}: {problem}");
        assert_eq!(fields(&problem), [field], "{what}: {problem}");
    }
    let (status, problem) = create(&app, &funnel("Not A Slug", json!({}))).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["id"]);
    let (status, problem) = create(
        &app,
        &funnel("main", json!({"trigger": {"priority": 1001}})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["trigger.priority"]);

    let (status, _) = create(&app, &funnel("main", json!({}))).await;
    assert_eq!(status, 201);
    let (status, problem) = create(&app, &funnel("main", json!({"name": "Again"}))).await;
    assert_eq!(status, 409, "a taken slug: {problem}");

    // Steps replaced with a broken graph are refused the same way.
    let mut dangling = classic_steps();
    dangling[2]["branches"]["default"] = json!("gone");
    let (status, problem) = send(
        &app,
        reqwest::Method::PUT,
        "/ocart/v1/funnels/main/steps",
        Some(&app.admin),
        Some(&json!({"steps": dangling})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["steps[2].branches.default"]);
}

#[tokio::test]
async fn postgres_broken_graphs_and_taken_slugs_are_refused() {
    bad_funnels_are_refused(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_broken_graphs_and_taken_slugs_are_refused() {
    bad_funnels_are_refused(Kind::Sqlite).await;
}

async fn archiving_is_final(kind: Kind) {
    let app = spawn_app(kind).await;
    create(&app, &funnel("main", json!({}))).await;
    let (status, active) = app
        .post(
            "/ocart/v1/funnels/main/activate",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["status"], "active");
    let (status, archived) = send(
        &app,
        reqwest::Method::DELETE,
        "/ocart/v1/funnels/main",
        Some(&app.admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["status"], "archived");
    let (_, shown) = app.admin_get("/ocart/v1/funnels/main").await;
    assert_eq!(shown["status"], "archived");
    let (status, again) = app
        .post(
            "/ocart/v1/funnels/main/archive",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "archiving twice changes nothing: {again}");
    let (status, problem) = send(
        &app,
        reqwest::Method::PATCH,
        "/ocart/v1/funnels/main",
        Some(&app.admin),
        Some(&json!({"name": "Back"})),
    )
    .await;
    assert_eq!(status, 409, "an archived funnel is not changed: {problem}");
    let (status, problem) = app
        .post(
            "/ocart/v1/funnels/main/activate",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "nor activated: {problem}");
    let (status, _) = app
        .post(
            "/ocart/v1/funnels/nope/activate",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn postgres_archived_funnels_are_neither_changed_nor_activated() {
    archiving_is_final(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_archived_funnels_are_neither_changed_nor_activated() {
    archiving_is_final(Kind::Sqlite).await;
}

async fn resolve(app: &TestApp, query: &str, token: Option<&str>) -> (u16, Value) {
    send(
        app,
        reqwest::Method::GET,
        &format!("/ocart/v1/funnels/resolve?{query}"),
        token,
        None,
    )
    .await
}

async fn resolve_picks_by_rules_priority_and_default(kind: Kind) {
    let app = spawn_app(kind).await;
    // Nothing active: no funnel, no steps.
    let shopper = session();
    let (status, none) = resolve(&app, &format!("session_token={shopper}"), None).await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none, json!({"funnel": null, "steps": [], "bumps": []}));

    let active =
        |id: &str, trigger: Value| funnel(id, json!({"status": "active", "trigger": trigger}));
    for body in [
        active("fallback", json!({"is_default": true, "priority": -5})),
        active(
            "big-carts",
            json!({"rules": {"all": [{"cart_min_total": 5000}]}, "priority": 10}),
        ),
        active(
            "kitchen",
            json!({"rules": {"all": [{"category_in_cart": "kitchen"}]}, "priority": 1}),
        ),
        active(
            "shoes",
            json!({"rules": {"all": [{"category_in_cart": "shoes"}]}, "priority": 100}),
        ),
        funnel(
            "draft-mugs",
            json!({"trigger": {"rules": {"all": [{"product_in_cart": 42}]}, "priority": 999}}),
        ),
    ] {
        let (status, created) = create(&app, &body).await;
        assert_eq!(status, 201, "{created}");
    }
    // One mug (12.50): the kitchen funnel (the draft and the shoes funnel do not take it).
    let (status, _) = app
        .capture(&capture_body(&shopper, "ann@example.com", 1))
        .await;
    assert_eq!(status, 202);
    // Five mugs (62.50): big carts outrank kitchen.
    let big = session();
    let (status, _) = app.capture(&capture_body(&big, "bob@example.com", 5)).await;
    assert_eq!(status, 202);
    app.settle().await;

    let (status, small) = resolve(&app, &format!("session_token={shopper}"), None).await;
    assert_eq!(status, 200, "{small}");
    assert_eq!(
        small["funnel"],
        json!({"id": "kitchen", "name": "Funnel kitchen", "layout": "two_step", "theme": "default"})
    );
    assert_eq!(small["steps"].as_array().unwrap().len(), 4);
    assert_eq!(small["steps"][0]["key"], "checkout");
    assert!(small["bumps"].is_array());

    let big_cart = cart_id_for_session(&big).to_string();
    let (status, by_cart) = resolve(&app, &format!("cart_id={big_cart}"), Some(&app.admin)).await;
    assert_eq!(status, 200, "{by_cart}");
    assert_eq!(by_cart["funnel"]["id"], "big-carts");

    // A session with no cart yet, and a cart no rule takes, get the default funnel.
    let (_, fresh) = resolve(&app, &format!("session_token={}", session()), None).await;
    assert_eq!(fresh["funnel"]["id"], "fallback");
    send(
        &app,
        reqwest::Method::DELETE,
        "/ocart/v1/funnels/kitchen",
        Some(&app.admin),
        None,
    )
    .await;
    let (_, after) = resolve(&app, &format!("session_token={shopper}"), None).await;
    assert_eq!(after["funnel"]["id"], "fallback", "{after}");

    // A cart id needs a bearer token; an unknown cart is not found; a bad token shape is named.
    let (status, _) = resolve(&app, &format!("cart_id={big_cart}"), None).await;
    assert_eq!(status, 401);
    let (status, _) = resolve(&app, "cart_id=nope", Some(&app.admin)).await;
    assert_eq!(status, 404);
    let (status, problem) = resolve(&app, "session_token=short", None).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["session_token"]);
    let (status, _) = resolve(&app, "", None).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn postgres_resolve_picks_by_trigger_rules_and_priority_and_falls_back_to_the_default() {
    resolve_picks_by_rules_priority_and_default(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_resolve_picks_by_trigger_rules_and_priority_and_falls_back_to_the_default() {
    resolve_picks_by_rules_priority_and_default(Kind::Sqlite).await;
}

async fn funnels_need_their_capability(kind: Kind) {
    let app = spawn_app(kind).await;
    let (_, reader) = app.token_with(&["ocart_view_reports"]).await;
    let (_, recovery) = app.token_with(&["ocart_manage_recovery"]).await;
    let (_, manager) = app.token_with(&["ocart_manage_funnels"]).await;
    let body = funnel("main", json!({}));
    let (status, problem) = app.post("/ocart/v1/funnels", Some(&reader), &body).await;
    assert_eq!(status, 403, "a reader does not write: {problem}");
    let (status, _) = app.post("/ocart/v1/funnels", Some(&recovery), &body).await;
    assert_eq!(status, 403, "another area's manager does not write");
    let (status, _) = app.get("/ocart/v1/funnels", &recovery).await;
    assert_eq!(status, 403, "nor read");
    let (status, created) = app.post("/ocart/v1/funnels", Some(&manager), &body).await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = app.get("/ocart/v1/funnels/main", &reader).await;
    assert_eq!(status, 200, "a reader reads");
    let (status, _) = app
        .post("/ocart/v1/funnels/main/archive", Some(&reader), &json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = app.post("/ocart/v1/funnels", None, &body).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn postgres_funnels_need_their_capability() {
    funnels_need_their_capability(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_funnels_need_their_capability() {
    funnels_need_their_capability(Kind::Sqlite).await;
}

async fn cli_creates_and_installs_funnels(kind: Kind) {
    let app = spawn_app(kind).await;
    let file = std::env::temp_dir().join(format!("funnel-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, funnel("from-file", json!({})).to_string()).unwrap();
    let (code, out, err) = ocart(
        &app.db,
        &[
            "funnel",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["id"], "from-file");

    let (code, out, err) = ocart(&app.db, &["template", "list", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let templates: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(templates.as_array().unwrap().len(), 3);

    let (code, out, err) = ocart(
        &app.db,
        &[
            "template",
            "install",
            "two-step-bump-upsell-downsell",
            "--slug",
            "classic",
        ],
    )
    .await;
    assert_ne!(code, 0, "offers are needed: {out}");
    assert!(err.contains("--bump-offer"), "{err}");
    let (code, out, err) = ocart(
        &app.db,
        &[
            "template",
            "install",
            "two-step-bump-upsell-downsell",
            "--slug",
            "classic",
            "--bump-offer",
            "b-1",
            "--upsell-offer",
            "u-1",
            "--downsell-offer",
            "d-1",
            "--name",
            "Classic",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let installed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(installed["name"], "Classic");
    assert_eq!(installed["settings"]["layout"], "two_step");
    let keys: Vec<&str> = installed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["checkout", "bump", "upsell", "downsell", "thank-you"]
    );

    let (code, out, err) = ocart(&app.db, &["funnel", "activate", "classic", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let shown = app
        .eventually("/ocart/v1/funnels/classic", |f| f["status"] == "active")
        .await;
    assert_eq!(
        shown["steps"][2]["branches"],
        json!({"accepted": "thank-you", "declined": "downsell"})
    );
    let (code, out, _) = ocart(&app.db, &["funnel", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("classic") && out.contains("from-file"),
        "{out}"
    );
}

#[tokio::test]
async fn postgres_the_cli_creates_funnels_and_installs_templates() {
    cli_creates_and_installs_funnels(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_the_cli_creates_funnels_and_installs_templates() {
    cli_creates_and_installs_funnels(Kind::Sqlite).await;
}

/// Every row of a funnel table, all columns, by primary key.
async fn rows(db: &Db, table: &str, key: &str) -> Vec<String> {
    match db {
        Db::Pg(p) => sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t)::text FROM {table} t ORDER BY {key}"
        ))
        .fetch_all(p)
        .await
        .unwrap(),
        Db::Lite(p) => {
            let columns: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .fetch_all(p)
            .await
            .unwrap();
            let whole = columns
                .iter()
                .map(|c| format!("'{c}=' || quote({c})"))
                .collect::<Vec<_>>()
                .join(" || char(31) || ");
            sqlx::query_scalar(&format!("SELECT {whole} FROM {table} ORDER BY {key}"))
                .fetch_all(p)
                .await
                .unwrap()
        }
    }
}

async fn a_rebuild_gives_the_live_funnel_tables(kind: Kind) {
    let app = spawn_app(kind).await;
    create(&app, &funnel("one", json!({"status": "active"}))).await;
    create(
        &app,
        &funnel("two", json!({"trigger": {"is_default": true}})),
    )
    .await;
    create(&app, &funnel("three", json!({}))).await;
    send(
        &app,
        reqwest::Method::PUT,
        "/ocart/v1/funnels/two/steps",
        Some(&app.admin),
        Some(&json!({"steps": [{"key": "only", "type": "thank_you"}]})),
    )
    .await;
    app.post(
        "/ocart/v1/funnels/two/activate",
        Some(&app.admin),
        &json!({}),
    )
    .await;
    app.post(
        "/ocart/v1/funnels/three/archive",
        Some(&app.admin),
        &json!({}),
    )
    .await;
    app.settle().await;
    let tables = [("funnels", "slug"), ("funnel_steps", "funnel_id, step_key")];
    let mut live = Vec::new();
    for (table, key) in tables {
        live.push(rows(&app.core.db, table, key).await);
    }
    assert_eq!(live[0].len(), 3, "{live:?}");
    assert_eq!(live[1].len(), 4 + 1 + 4, "{live:?}");
    let db = app.stop().await;
    let (code, out, err) = ocart(&db, &["replay", "--projection", "funnels", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let pool = db.connect().await;
    for ((table, key), live) in tables.iter().zip(&live) {
        assert_eq!(
            &rows(&pool, table, key).await,
            live,
            "{table}: rebuilt as live"
        );
    }
}

#[tokio::test]
async fn postgres_a_rebuild_gives_exactly_the_live_funnel_tables() {
    a_rebuild_gives_the_live_funnel_tables(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_rebuild_gives_exactly_the_live_funnel_tables() {
    a_rebuild_gives_the_live_funnel_tables(Kind::Sqlite).await;
}
