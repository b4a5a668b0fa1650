//! The bandit simulator and the A/A bench through the CLI (issue 12, sections 2 and 4):
//! `ocart test simulate … --json` prints exactly `{"mean_cumulative_regret",
//! "se_cumulative_regret"}`, the same for the same seed; bad `--rates` are usage errors
//! (exit code 2) naming the problem; `ocart bench aa` prints its table per method.

use ocart_tests::{ocart, FreshDb};
use serde_json::Value;

/// `ocart test simulate` with `args` after it: exit code, stdout, stderr.
async fn simulate(db: &FreshDb, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["test", "simulate"];
    all.extend_from_slice(args);
    ocart(db, &all).await
}

#[tokio::test]
async fn bandit_simulate_prints_the_regret_the_same_for_the_same_seed() {
    let db = FreshDb::sqlite();
    let args = [
        "--rates",
        "0.05,0.06",
        "--horizon",
        "2000",
        "--runs",
        "20",
        "--seed",
        "7",
        "--json",
    ];
    let (code, first, err) = simulate(&db, &args).await;
    assert_eq!(code, 0, "{first}{err}");
    let printed: Value = serde_json::from_str(&first).unwrap();
    let fields = printed.as_object().unwrap();
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["mean_cumulative_regret", "se_cumulative_regret"],
        "{first}"
    );
    let mean = printed["mean_cumulative_regret"].as_f64().unwrap();
    let se = printed["se_cumulative_regret"].as_f64().unwrap();
    // At most the gap on every visitor: 0.01 × 2000.
    assert!(mean > 0.0 && mean < 20.0, "{first}");
    assert!(se > 0.0 && se < mean, "{first}");

    let (code, again, err) = simulate(&db, &args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, first, "the same seed prints the same figures");

    let mut other = args;
    other[7] = "8";
    let (code, out, err) = simulate(&db, &other).await;
    assert_eq!(code, 0, "{err}");
    assert_ne!(out, first, "another seed, other runs");

    let mut ideal = args.to_vec();
    ideal.push("--ideal");
    let (code, out, err) = simulate(&db, &ideal).await;
    assert_eq!(code, 0, "{err}");
    assert_ne!(out, first, "the ideal sampler is another allocation");

    let (code, out, err) = simulate(&db, &args[..args.len() - 1]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mean cumulative regret") && out.contains("production (batched updates)"),
        "a line for a reader: {out}"
    );
}

#[tokio::test]
async fn bandit_simulate_refuses_bad_rates_as_usage_errors() {
    let db = FreshDb::sqlite();
    for (rates, says) in [
        ("0.05", "at least 2"),
        ("0.05,abc", "not a number"),
        ("0.05,1.5", "between 0 and 1"),
        ("0.05,-0.1", "between 0 and 1"),
        ("0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1", "at most 10"),
    ] {
        let (code, out, err) = simulate(&db, &["--rates", rates, "--json"]).await;
        assert_eq!(code, 2, "{rates}: {out}{err}");
        assert!(
            err.contains("--rates") && err.contains(says),
            "{rates}: {err}"
        );
        assert!(out.is_empty(), "{rates}: {out}");
    }
    let (code, _, err) = simulate(&db, &["--rates", "0.05,0.06", "--horizon", "0"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--horizon"), "{err}");
}

#[tokio::test]
async fn bench_aa_prints_its_table_for_each_method() {
    let db = FreshDb::sqlite();
    let small = [
        "bench",
        "aa",
        "--runs",
        "5",
        "--max-visitors",
        "2000",
        "--batch",
        "500",
    ];
    let mut json = small.to_vec();
    json.push("--json");
    let (code, out, err) = ocart(&db, &json).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["bench"], "aa");
    assert_eq!(report["bound"].as_f64(), Some(1.0 - 0.95));
    let rows = report["rows"].as_array().unwrap();
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["frequentist", "bayesian", "bandit"]);
    for row in rows {
        assert_eq!(row["runs"], 5, "{row}");
        let counted = ["false_winners", "no_difference", "undecided"]
            .iter()
            .map(|k| row[k].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(counted, 5, "{row}");
        assert!(row["rate"].as_f64().is_some() && row["se"].as_f64().is_some());
        assert!(row["within_bound"].is_boolean());
    }

    let (code, out, err) = ocart(&db, &small).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("# ocart bench aa") && out.contains("| frequentist | 5 |"),
        "{out}"
    );
    let (code, out, err) = ocart(
        &db,
        &[
            "bench",
            "aa",
            "--method",
            "bandit",
            "--runs",
            "2",
            "--max-visitors",
            "500",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["rows"][0]["method"], "bandit");
    let (code, _, err) = ocart(&db, &["bench", "aa", "--method", "thompson"]).await;
    assert_eq!(code, 2, "{err}");
}
