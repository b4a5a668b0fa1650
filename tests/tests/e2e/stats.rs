//! The A/B test calculator (issue 12) through HTTP and the CLI: `POST /ocart/v1/stats/compare`
//! and `GET /ocart/v1/stats/sample-size` answer the statistics of the counts given (checked
//! against values computed independently with mpmath), `null` where a value does not exist,
//! a problem document naming the field for every input they refuse, 401/403 without a token
//! or the capability; the OpenAPI document states the bounds; `ocart test calc … --json`
//! prints the same JSON as HTTP.
//!
//! The expected values were computed with mpmath 1.3 at 40 digits from the definitions (not
//! from OCart's code) by the script at the end of this file (`python3 -c` of it prints them;
//! about two minutes); scipy.stats.chi2.sf agrees on the SRM p-value (1.80631623309412e-74).
//! The sample size is Fleiss's formula with exact quantiles (see its test).

use ocart_tests::{ocart, spawn_app, Kind, TestApp};
use serde_json::{json, Value};

const COMPARE: &str = "/ocart/v1/stats/compare";

/// `actual` is a number within `tolerance` of `expected` (absolute, or relative beyond 1).
#[track_caller]
fn close(actual: &Value, expected: f64, tolerance: f64, what: &str) {
    let got = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {actual}"));
    let scale = expected.abs().max(1.0);
    assert!(
        (got - expected).abs() <= tolerance * scale,
        "{what}: got {got}, expected {expected}"
    );
}

/// `actual` within `relative` of `expected`, relatively (for tiny p-values).
#[track_caller]
fn close_relative(actual: &Value, expected: f64, relative: f64, what: &str) {
    let got = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {actual}"));
    assert!(
        ((got - expected) / expected).abs() <= relative,
        "{what}: got {got}, expected {expected}"
    );
}

async fn compare(app: &TestApp, body: &Value) -> (u16, Value) {
    app.post(COMPARE, Some(&app.admin), body).await
}

async fn compared(app: &TestApp, body: Value) -> Value {
    let (status, answer) = compare(app, &body).await;
    assert_eq!(status, 200, "{body} → {answer}");
    answer
}

fn arms(counts: &[(&str, u64, u64)]) -> Value {
    Value::Array(
        counts
            .iter()
            .map(|(key, c, n)| json!({"key": key, "conversions": c, "visitors": n}))
            .collect(),
    )
}

#[tokio::test]
async fn stats_compare_answers_the_issue_example() {
    let app = spawn_app(Kind::Sqlite).await;
    let answer = compared(
        &app,
        json!({"arms": arms(&[("a", 120, 1000), ("b", 140, 1000)]), "confidence": 0.95}),
    )
    .await;
    const TOL: f64 = 1e-9;
    let a = &answer["arms"][0];
    let b = &answer["arms"][1];
    assert_eq!(
        (&a["key"], &a["conversions"], &a["visitors"]),
        (&json!("a"), &json!(120), &json!(1000))
    );
    assert_eq!(b["key"], "b");
    close(&a["rate"], 0.12, TOL, "a rate");
    close(&a["ci_low"], 0.10129926060130914, TOL, "a ci_low");
    close(&a["ci_high"], 0.14160907584771276, TOL, "a ci_high");
    close(&b["rate"], 0.14, TOL, "b rate");
    close(&b["ci_low"], 0.11986857462597703, TOL, "b ci_low");
    close(&b["ci_high"], 0.16288669148362267, TOL, "b ci_high");
    close(&a["prob_best"], 0.09212741362977661, TOL, "a prob_best");
    close(&b["prob_best"], 0.9078725863702234, TOL, "b prob_best");

    let comparisons = answer["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 1, "one comparison per variant");
    let c = &comparisons[0];
    assert_eq!(c["key"], "b");
    for (field, expected) in [
        ("diff", 0.02),
        ("ci_diff_low", -0.009464719470527327),
        ("ci_diff_high", 0.04946471947052732),
        ("lift", 0.16666666666666666),
        ("ci_lift_low", -0.09878071815603888),
        ("ci_lift_high", 0.4321140514893722),
        ("z", 1.329791937083694),
        ("p_value", 0.1835868332372091),
        ("prob_beats_control", 0.9078725863702234),
        ("prob_control_beats", 0.09212741362977661),
        ("expected_loss", 0.0006461890575433981),
        ("expected_loss_control", 0.02060626889786276),
    ] {
        close(&c[field], expected, TOL, field);
    }
    // Equal visitors against the default equal split: no mismatch at all.
    assert_eq!(answer["srm"], json!({"chi2": 0.0, "df": 1, "p_value": 1.0}));

    // The confidence is 0.95 by default (and null means the default).
    for body in [
        json!({"arms": arms(&[("a", 120, 1000), ("b", 140, 1000)])}),
        json!({"arms": arms(&[("a", 120, 1000), ("b", 140, 1000)]), "confidence": null, "weights": null}),
        json!({"arms": arms(&[("a", 120, 1000), ("b", 140, 1000)]), "weights": [0.5, 0.5]}),
    ] {
        assert_eq!(compared(&app, body).await, answer);
    }
    // Another level widens the intervals.
    let wide = compared(
        &app,
        json!({"arms": arms(&[("a", 120, 1000), ("b", 140, 1000)]), "confidence": 0.99}),
    )
    .await;
    assert!(wide["arms"][0]["ci_low"].as_f64() < a["ci_low"].as_f64());
    assert!(wide["comparisons"][0]["ci_diff_high"].as_f64() > c["ci_diff_high"].as_f64());
    assert_eq!(
        wide["comparisons"][0]["z"], c["z"],
        "the z-test has no level"
    );
}

#[tokio::test]
async fn stats_values_that_do_not_exist_are_null() {
    let app = spawn_app(Kind::Sqlite).await;
    // A control without visitors: no rate, no interval, no difference, lift or z-test.
    let answer = compared(
        &app,
        json!({"arms": arms(&[("control", 0, 0), ("b", 5, 100)])}),
    )
    .await;
    let control = &answer["arms"][0];
    for field in ["rate", "ci_low", "ci_high"] {
        assert!(control[field].is_null(), "{field}: {answer}");
    }
    assert!(answer["arms"][1]["rate"].is_number());
    let c = &answer["comparisons"][0];
    for field in [
        "diff",
        "ci_diff_low",
        "ci_diff_high",
        "lift",
        "ci_lift_low",
        "ci_lift_high",
        "z",
        "p_value",
    ] {
        assert!(c[field].is_null(), "{field}: {answer}");
    }
    // The Bayesian side still exists: the control's posterior is the uniform prior.
    for field in [
        "prob_beats_control",
        "prob_control_beats",
        "expected_loss",
        "expected_loss_control",
    ] {
        assert!(c[field].is_number(), "{field}: {answer}");
    }
    // 0/0 against 5/100 is 0 against 100 visitors for a 1:1 split: chi2 = 2·50²/50 = 100.
    close(&answer["srm"]["chi2"], 100.0, 1e-12, "srm chi2");

    // Nobody converted: the pooled rate is 0, so no z-test; a control without conversions
    // has no lift; the difference is 0 with an empty interval.
    let answer = compared(
        &app,
        json!({"arms": arms(&[("a", 0, 1000), ("b", 0, 1000)])}),
    )
    .await;
    let c = &answer["comparisons"][0];
    for field in ["z", "p_value", "lift", "ci_lift_low", "ci_lift_high"] {
        assert!(c[field].is_null(), "{field}: {answer}");
    }
    assert_eq!(
        (&c["diff"], &c["ci_diff_low"], &c["ci_diff_high"]),
        (&json!(0.0), &json!(0.0), &json!(0.0))
    );
    assert_eq!(answer["arms"][0]["rate"], json!(0.0));
    assert_eq!(answer["arms"][0]["ci_low"], json!(0.0));
    // Everybody converted: the pooled rate is 1, no z-test either.
    let answer = compared(
        &app,
        json!({"arms": arms(&[("a", 1000, 1000), ("b", 500, 500)])}),
    )
    .await;
    assert!(answer["comparisons"][0]["z"].is_null(), "{answer}");
    assert_eq!(answer["arms"][0]["ci_high"], json!(1.0));
}

#[tokio::test]
async fn stats_three_arms_share_the_probability_to_be_best() {
    let app = spawn_app(Kind::Sqlite).await;
    let answer = compared(
        &app,
        json!({"arms": arms(&[("a", 100, 1000), ("b", 120, 1000), ("c", 110, 1000)])}),
    )
    .await;
    let expected = [0.046208314989331596, 0.7268864978329836, 0.2269051871776847];
    let mut sum = 0.0;
    for (i, p) in expected.iter().enumerate() {
        close(&answer["arms"][i]["prob_best"], *p, 1e-9, "prob_best");
        sum += answer["arms"][i]["prob_best"].as_f64().unwrap();
    }
    assert!((sum - 1.0).abs() < 1e-9, "P(best) adds up to {sum}");
    let keys: Vec<&Value> = answer["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["key"])
        .collect();
    assert_eq!(keys, [&json!("b"), &json!("c")], "every variant against a");
    assert_eq!(answer["srm"]["df"], 2);
}

#[tokio::test]
async fn stats_srm_finds_a_split_that_is_not_the_intended_one() {
    let app = spawn_app(Kind::Sqlite).await;
    let counts = arms(&[("a", 50, 1000), ("b", 100, 2000)]);
    // 1000 and 2000 visitors for a 50/50 split: chi2 = 2·500²/1500.
    let answer = compared(&app, json!({"arms": counts, "weights": [1, 1]})).await;
    close(&answer["srm"]["chi2"], 333.3333333333333, 1e-9, "chi2");
    assert_eq!(answer["srm"]["df"], 1);
    close_relative(
        &answer["srm"]["p_value"],
        1.80631623309409e-74,
        1e-6,
        "p_value",
    );
    // The same visitors for the 1:2 split they follow.
    let answer = compared(&app, json!({"arms": counts, "weights": [1, 2]})).await;
    assert_eq!(answer["srm"], json!({"chi2": 0.0, "df": 1, "p_value": 1.0}));
}

#[tokio::test]
async fn stats_refusals_are_problem_documents_naming_the_field() {
    let app = spawn_app(Kind::Sqlite).await;
    let two = arms(&[("a", 120, 1000), ("b", 140, 1000)]);
    let eleven = Value::Array(
        (0..11)
            .map(|i| json!({"key": format!("arm-{i}"), "conversions": 1, "visitors": 10}))
            .collect(),
    );
    let long_key = "k".repeat(65);
    let cases = [
        (
            "conversions above visitors",
            json!({"arms": arms(&[("a", 120, 1000), ("b", 1200, 1000)])}),
            "arms[1].conversions",
            "1200 exceeds visitors (1000)",
        ),
        (
            "one arm",
            json!({"arms": arms(&[("a", 1, 10)])}),
            "arms",
            "got 1",
        ),
        ("no arms", json!({"arms": []}), "arms", "got 0"),
        ("eleven arms", json!({"arms": eleven}), "arms", "got 11"),
        (
            "a repeated key",
            json!({"arms": arms(&[("a", 1, 10), ("a", 2, 10)])}),
            "arms[1].key",
            "already the key of arms[0]",
        ),
        (
            "an empty key",
            json!({"arms": arms(&[("", 1, 10), ("b", 2, 10)])}),
            "arms[0].key",
            "empty",
        ),
        (
            "a key of 65 characters",
            json!({"arms": arms(&[("a", 1, 10), (&long_key, 2, 10)])}),
            "arms[1].key",
            "at most 64",
        ),
        (
            "confidence 1",
            json!({"arms": two, "confidence": 1.0}),
            "confidence",
            "strictly between 0 and 1",
        ),
        (
            "confidence 0",
            json!({"arms": two, "confidence": 0}),
            "confidence",
            "strictly between 0 and 1",
        ),
        (
            "confidence -0.0",
            json!({"arms": two, "confidence": -0.0}),
            "confidence",
            "strictly between 0 and 1",
        ),
        (
            "confidence as a string",
            json!({"arms": two, "confidence": "0.95"}),
            "confidence",
            "",
        ),
        (
            "three weights for two arms",
            json!({"arms": two, "weights": [1, 1, 1]}),
            "weights",
            "3 weights for 2 arms",
        ),
        (
            "a negative weight",
            json!({"arms": two, "weights": [1, -1]}),
            "weights[1]",
            "greater than 0, got -1",
        ),
        (
            "a zero weight",
            json!({"arms": two, "weights": [0, 1]}),
            "weights[0]",
            "greater than 0",
        ),
        (
            "visitors beyond 64 bits",
            json!({"arms": [{"key": "a", "conversions": 1, "visitors": 18446744073709551616_f64}, {"key": "b", "conversions": 1, "visitors": 2}]}),
            "arms[0].visitors",
            "",
        ),
        (
            "fractional conversions",
            json!({"arms": [{"key": "a", "conversions": 1.5, "visitors": 10}, {"key": "b", "conversions": 1, "visitors": 2}]}),
            "arms[0].conversions",
            "whole number",
        ),
        (
            "negative visitors",
            json!({"arms": [{"key": "a", "conversions": 0, "visitors": -1}, {"key": "b", "conversions": 1, "visitors": 2}]}),
            "arms[0].visitors",
            "",
        ),
        ("no arms field", json!({}), "arms", ""),
        (
            "an unknown field",
            json!({"arms": two, "control": "a"}),
            "control",
            "unknown field",
        ),
    ];
    for (name, body, field, fragment) in cases {
        let (status, problem) = compare(&app, &body).await;
        assert_eq!(status, 422, "{name}: {problem}");
        assert_eq!(problem["status"], 422, "{name}: {problem}");
        assert_eq!(
            problem["type"], "https://ocart.dev/problems/validation",
            "{name}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], field, "{name}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(field) && detail.contains(fragment),
            "{name}: {detail}"
        );
    }
    // Every wrong field at once, each named.
    let (status, problem) = compare(
        &app,
        &json!({"arms": arms(&[("a", 5, 4), ("a", 1, 2)]), "confidence": 2, "weights": [1]}),
    )
    .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "confidence",
            "arms[0].conversions",
            "arms[1].key",
            "weights"
        ]
    );
    // Not JSON at all.
    let resp = app
        .client
        .post(app.url(COMPARE))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body("{\"arms\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "a problem document"
    );
}

#[tokio::test]
async fn stats_take_the_largest_counts_without_panicking() {
    let app = spawn_app(Kind::Sqlite).await;
    let max = u64::MAX;
    for counts in [
        [("a", 120, max), ("b", 140, max)],
        [("a", max, max), ("b", 0, max)],
        [("a", max / 2, max), ("b", max / 2 + 1, max)],
        [("a", 1, 1), ("b", max, max)],
    ] {
        let answer = compared(&app, json!({"arms": arms(&counts), "weights": [1e-300, 1]})).await;
        for (i, (_, conversions, visitors)) in counts.iter().enumerate() {
            let arm = &answer["arms"][i];
            assert_eq!(
                (&arm["conversions"], &arm["visitors"]),
                (&json!(conversions), &json!(visitors)),
                "the counts come back as sent: {answer}"
            );
        }
        for field in ["prob_beats_control", "prob_control_beats", "expected_loss"] {
            let p = answer["comparisons"][0][field].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{field} = {p}: {answer}");
        }
        assert!(answer["srm"]["p_value"].is_number(), "{answer}");
    }
    // A weight so much smaller than the other that their ratio underflows is refused.
    let (status, problem) = compare(
        &app,
        &json!({"arms": arms(&[("a", 1, 2), ("b", 1, 2)]), "weights": [1e-300, 1e300]}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "weights[0]");
}

#[tokio::test]
async fn stats_need_a_token_with_the_capability() {
    let app = spawn_app(Kind::Sqlite).await;
    let body = json!({"arms": arms(&[("a", 120, 1000), ("b", 140, 1000)])});
    let sample = "/ocart/v1/stats/sample-size?baseline_rate=0.05&relative_mde=0.1";
    let (status, problem) = app.post(COMPARE, None, &body).await;
    assert_eq!(
        (status, &problem["status"]),
        (401, &json!(401)),
        "{problem}"
    );
    let resp = app.client.get(app.url(sample)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let (_, funnels_only) = app.token_with(&["ocart_manage_funnels"]).await;
    let (status, problem) = app.post(COMPARE, Some(&funnels_only), &body).await;
    assert_eq!(
        (status, &problem["status"]),
        (403, &json!(403)),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("ocart_view_reports"),
        "{problem}"
    );
    let (status, problem) = app.get(sample, &funnels_only).await;
    assert_eq!(status, 403, "{problem}");

    for cap in ["ocart_view_reports", "ocart_manage_tests"] {
        let (_, token) = app.token_with(&[cap]).await;
        let (status, answer) = app.post(COMPARE, Some(&token), &body).await;
        assert_eq!(status, 200, "{cap}: {answer}");
        let (status, answer) = app.get(sample, &token).await;
        assert_eq!(status, 200, "{cap}: {answer}");
    }
}

#[tokio::test]
async fn stats_sample_size_follows_fleiss() {
    let app = spawn_app(Kind::Sqlite).await;
    // mpmath: p1 = 0.05, p2 = 0.055, z_α = √2·erfinv(0.95), z_β = √2·erfinv(0.6):
    // n = 31233.437940130007 → 31234 per variant. (31231 is the unpooled shortcut
    // (z_α + z_β)²(p1q1 + p2q2)/δ² = 31230.69, not Fleiss's formula.)
    let (status, answer) = app
        .admin_get(
            "/ocart/v1/stats/sample-size?baseline_rate=0.05&relative_mde=0.1&power=0.8&confidence=0.95",
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"per_variant": 31234, "total": 62468}));
    let (_, defaults) = app
        .admin_get("/ocart/v1/stats/sample-size?baseline_rate=0.05&relative_mde=0.1")
        .await;
    assert_eq!(
        defaults, answer,
        "power 0.8, confidence 0.95, 2 variants by default"
    );
    let (status, three) = app
        .admin_get("/ocart/v1/stats/sample-size?baseline_rate=0.05&relative_mde=0.1&variants=3")
        .await;
    assert_eq!(status, 200, "{three}");
    assert_eq!(three, json!({"per_variant": 31234, "total": 93702}));

    for (query, field) in [
        ("baseline_rate=0&relative_mde=0.1", "baseline_rate"),
        ("baseline_rate=1&relative_mde=0.1", "baseline_rate"),
        ("baseline_rate=NaN&relative_mde=0.1", "baseline_rate"),
        ("baseline_rate=abc&relative_mde=0.1", "baseline_rate"),
        ("relative_mde=0.1", "baseline_rate"),
        ("baseline_rate=0.05", "relative_mde"),
        ("baseline_rate=0.05&relative_mde=0", "relative_mde"),
        ("baseline_rate=0.05&relative_mde=-1", "relative_mde"),
        ("baseline_rate=0.6&relative_mde=1", "relative_mde"),
        ("baseline_rate=0.05&relative_mde=1e-300", "relative_mde"),
        ("baseline_rate=0.05&relative_mde=0.1&power=1", "power"),
        ("baseline_rate=0.05&relative_mde=0.1&power=0", "power"),
        (
            "baseline_rate=0.05&relative_mde=0.1&confidence=1",
            "confidence",
        ),
        (
            "baseline_rate=0.05&relative_mde=0.1&confidence=-0.0",
            "confidence",
        ),
        ("baseline_rate=0.05&relative_mde=0.1&variants=1", "variants"),
        (
            "baseline_rate=0.05&relative_mde=0.1&variants=11",
            "variants",
        ),
        (
            "baseline_rate=0.05&relative_mde=0.1&variants=-2",
            "variants",
        ),
    ] {
        let (status, problem) = app
            .admin_get(&format!("/ocart/v1/stats/sample-size?{query}"))
            .await;
        assert_eq!(status, 422, "{query}: {problem}");
        assert_eq!(problem["status"], 422, "{query}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let (status, problem) = app
        .admin_get("/ocart/v1/stats/sample-size?baseline_rate=0.05&relative_mde=0.1&alpha=0.05")
        .await;
    assert_eq!(status, 422, "an unknown parameter is refused: {problem}");
}

#[tokio::test]
async fn stats_openapi_states_what_is_accepted() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, doc) = app.admin_get("/ocart/v1/openapi").await;
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];
    let request = &schemas["CompareRequest"];
    assert_eq!(request["required"], json!(["arms"]), "{request}");
    assert_eq!(request["additionalProperties"], false, "{request}");
    assert_eq!(
        (
            &request["properties"]["arms"]["minItems"],
            &request["properties"]["arms"]["maxItems"]
        ),
        (&json!(2), &json!(10))
    );
    let confidence = &request["properties"]["confidence"];
    assert_eq!(
        (
            &confidence["exclusiveMinimum"],
            &confidence["exclusiveMaximum"]
        ),
        (&json!(0), &json!(1)),
        "{confidence}"
    );
    assert_eq!(confidence["type"], json!(["number", "null"]));
    let weights = &request["properties"]["weights"];
    assert_eq!(weights["items"]["exclusiveMinimum"], 0, "{weights}");
    assert_eq!(weights["maxItems"], 10, "{weights}");
    let visitors = &schemas["StatsArmCounts"]["properties"]["visitors"];
    assert_eq!(visitors["format"], "uint64", "{visitors}");
    assert_eq!(visitors["maximum"].as_u64(), Some(u64::MAX), "{visitors}");
    let key = &schemas["StatsArmCounts"]["properties"]["key"];
    assert_eq!(
        (&key["minLength"], &key["maxLength"]),
        (&json!(1), &json!(64))
    );
    let rate = &schemas["StatsArmResult"]["properties"]["rate"];
    assert_eq!(rate["type"], json!(["number", "null"]), "{rate}");
    let lift = &schemas["StatsComparison"]["properties"]["lift"];
    assert_eq!(lift["type"], json!(["number", "null"]), "{lift}");

    let operation = &doc["paths"]["/ocart/v1/stats/sample-size"]["get"];
    let params = operation["parameters"].as_array().unwrap();
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {operation}"))
    };
    assert_eq!(param("baseline_rate")["required"], true);
    assert_eq!(param("baseline_rate")["schema"]["exclusiveMaximum"], 1);
    assert_eq!(param("power")["required"], false);
    assert!(param("baseline_rate")["description"].is_string());
    assert_eq!(
        param("relative_mde")["schema"]["oneOf"][0]["exclusiveMinimum"],
        -1
    );
    assert_eq!(param("variants")["schema"]["maximum"], 10);
    for path in ["/ocart/v1/stats/compare", "/ocart/v1/stats/sample-size"] {
        let item = &doc["paths"][path];
        let responses = item["post"]
            .get("responses")
            .or_else(|| item["get"].get("responses"))
            .unwrap();
        for status in ["200", "401", "403", "422"] {
            assert!(responses.get(status).is_some(), "{path} documents {status}");
        }
    }
}

#[tokio::test]
async fn stats_cli_calc_prints_the_http_answer() {
    let app = spawn_app(Kind::Sqlite).await;
    let (_, http) = compare(
        &app,
        &json!({"arms": arms(&[("a", 120, 1000), ("b", 140, 1000), ("c", 90, 1000)]),
            "confidence": 0.9, "weights": [1, 1, 2]}),
    )
    .await;
    let (code, out, err) = ocart(
        &app.db,
        &[
            "test",
            "calc",
            "compare",
            "--arm",
            "a=120/1000",
            "--arm",
            "b=140/1000",
            "--arm",
            "c=90/1000",
            "--confidence",
            "0.9",
            "--weights",
            "1,1,2",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        printed, http,
        "the CLI prints what HTTP answers, bit for bit"
    );

    let (code, out, err) = ocart(
        &app.db,
        &[
            "test",
            "calc",
            "compare",
            "--arm",
            "a=120/1000",
            "--arm",
            "b=140/1000",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("a (control)") && out.contains("12.000%") && out.contains("Sample ratio"),
        "a readable table: {out}"
    );

    let (_, http) = app
        .admin_get("/ocart/v1/stats/sample-size?baseline_rate=0.05&relative_mde=0.1&variants=3")
        .await;
    let (code, out, err) = ocart(
        &app.db,
        &[
            "test",
            "calc",
            "sample-size",
            "--baseline-rate",
            "0.05",
            "--relative-mde",
            "0.1",
            "--variants",
            "3",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), http);

    // A malformed --arm is a usage error (clap's exit code 2) showing the expected shape.
    let (code, _, err) = ocart(
        &app.db,
        &[
            "test", "calc", "compare", "--arm", "a=120", "--arm", "b=1/2",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("KEY=CONVERSIONS/VISITORS"), "{err}");
    // Counts the use case refuses: an error naming the field, exit code 1.
    let (code, _, err) = ocart(
        &app.db,
        &[
            "test",
            "calc",
            "compare",
            "--arm",
            "a=120/1000",
            "--arm",
            "b=1200/1000",
        ],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("arms[1].conversions: 1200 exceeds visitors (1000)"),
        "{err}"
    );
    let (code, _, err) = ocart(
        &app.db,
        &[
            "test",
            "calc",
            "sample-size",
            "--baseline-rate",
            "0.05",
            "--relative-mde",
            "-1",
        ],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("relative_mde"), "{err}");
}

// The expected values, reproducible with `python3 -c "$(sed -n '/^\/\/ PY /s/^\/\/ PY //p' tests/tests/e2e/stats.rs)"`:
// PY import mpmath as mp
// PY mp.mp.dps = 40
// PY zq = lambda c: mp.sqrt(2) * mp.erfinv(mp.mpf(c))  # the two-sided normal quantile
// PY def wilson(c, n, conf):
// PY     z = zq(conf); p = mp.mpf(c) / n; d = 1 + z**2 / n
// PY     m = p + z**2 / (2 * n); h = z * mp.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
// PY     return p, (m - h) / d, (m + h) / d
// PY def freq(ca, na, cb, nb, conf):
// PY     z = zq(conf); pa = mp.mpf(ca) / na; pb = mp.mpf(cb) / nb; d = pb - pa
// PY     se = mp.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb); r = pb / pa
// PY     sl = mp.sqrt(pb * (1 - pb) / (nb * pa**2) + r * r * pa * (1 - pa) / (na * pa**2))
// PY     q = mp.mpf(ca + cb) / (na + nb); zz = d / mp.sqrt(q * (1 - q) * (mp.mpf(1) / na + mp.mpf(1) / nb))
// PY     return d, d - z * se, d + z * se, r - 1, r - 1 - z * sl, r - 1 + z * sl, zz, mp.erfc(abs(zz) / mp.sqrt(2))
// PY pdf = lambda x, a, b: mp.exp((a - 1) * mp.log(x) + (b - 1) * mp.log(1 - x) - mp.log(mp.beta(a, b)))
// PY cdf = lambda x, a, b: mp.betainc(a, b, 0, x, regularized=True)
// PY ab = lambda c, n: (1 + c, 1 + n - c)  # the Beta posterior of c out of n, uniform prior
// PY def points(arms):  # break points for the quadrature: each posterior's mean ± k·sd
// PY     ps = {mp.mpf(0), mp.mpf(1)}
// PY     for c, n in arms:
// PY         a, b = ab(c, n); m = a / (a + b); s = mp.sqrt(a * b / ((a + b)**2 * (a + b + 1)))
// PY         ps |= {m + k * s for k in range(-12, 13) if 0 < m + k * s < 1}
// PY     return sorted(ps)
// PY def bayes(A, B):
// PY     (aA, bA), (aB, bB), P = ab(*A), ab(*B), points([A, B])
// PY     p_b = mp.quad(lambda x: pdf(x, aB, bB) * cdf(x, aA, bA), P)  # P(B > A)
// PY     p_a = mp.quad(lambda x: pdf(x, aA, bA) * cdf(x, aB, bB), P)  # P(A > B)
// PY     # E[max(pA - pB, 0)] = ∫ f_A(a) (a I_a(aB, bB) - E[pB] I_a(aB + 1, bB)) da, and its mirror
// PY     loss = mp.quad(lambda a: pdf(a, aA, bA) * (a * cdf(a, aB, bB) - aB / (aB + bB) * cdf(a, aB + 1, bB)), P)
// PY     loss_c = mp.quad(lambda b: pdf(b, aB, bB) * (b * cdf(b, aA, bA) - aA / (aA + bA) * cdf(b, aA + 1, bA)), P)
// PY     return p_b, p_a, loss, loss_c
// PY def prob_best(arms):
// PY     P, out = points(arms), []
// PY     for i, arm in enumerate(arms):
// PY         a, b = ab(*arm)
// PY         out.append(mp.quad(lambda x: pdf(x, a, b) * mp.fprod(cdf(x, *ab(*o)) for j, o in enumerate(arms) if j != i), P))
// PY     return out
// PY show = lambda xs: print([mp.nstr(x, 17) for x in xs])
// PY show(wilson(120, 1000, 0.95)); show(wilson(140, 1000, 0.95))
// PY show(freq(120, 1000, 140, 1000, 0.95)); show(bayes((120, 1000), (140, 1000)))
// PY show(prob_best([(100, 1000), (120, 1000), (110, 1000)]))
// PY c = mp.mpf(2) * 500**2 / 1500; show([c, mp.gammainc(mp.mpf(1) / 2, c / 2, mp.inf, regularized=True)])
// PY p1 = mp.mpf("0.05"); p2 = p1 * mp.mpf("1.1"); pm = (p1 + p2) / 2
// PY show([(zq(0.95) * mp.sqrt(2 * pm * (1 - pm)) + zq(2 * mp.mpf("0.8") - 1) * mp.sqrt(p1 * (1 - p1) + p2 * (1 - p2)))**2 / (p2 - p1)**2])
