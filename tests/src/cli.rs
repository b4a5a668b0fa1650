//! The `ocart` binary: built on first use, run against a test's database.

use std::path::PathBuf;
use std::process::Command;

use crate::db::FreshDb;

/// The `ocart` binary of this build (built on first use if a plain `cargo test` did not).
pub fn ocart_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/e2e-… → target/<profile>/ocart
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let bin = profile_dir.join("ocart");
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args(["build", "-q", "-p", "ocart-api", "--bin", "ocart"])
            .current_dir(&workspace);
        // This process runs with the test crate's CARGO_PKG_*, CARGO_MANIFEST_* (and maybe
        // OUT_DIR) set; build scripts such as ring's rerun when those differ, which would
        // rebuild half the tree here and again in the next outer build. Build as a shell would.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("CARGO_CRATE_")
                || key.starts_with("CARGO_BIN_")
                || key.starts_with("CARGO_PRIMARY_")
                || key.starts_with("CARGO_TARGET_TMPDIR")
                || key.starts_with("NEXTEST")
                || key == "OUT_DIR"
            {
                cargo.env_remove(key.as_ref());
            }
        }
        let status = cargo.status().expect("cargo build of the ocart binary");
        assert!(status.success(), "building the ocart binary failed");
        assert!(bin.exists(), "no ocart binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Runs `ocart ARGS` against `db`, returning (exit code, stdout, stderr). Async, so a server
/// in the same test keeps running while the command does.
pub async fn ocart(db: &FreshDb, args: &[&str]) -> (i32, String, String) {
    let data_dir = db.dir().cloned().unwrap_or_else(std::env::temp_dir);
    let bin = tokio::task::spawn_blocking(ocart_bin)
        .await
        .expect("build the ocart binary");
    let out = tokio::process::Command::new(bin)
        .args(args)
        .env("OCART_DATABASE_URL", &db.url)
        .env("OCART_DATA_DIR", data_dir)
        .env_remove("OCART_NATS_URL")
        .env_remove("OCART_CONFIG")
        .output()
        .await
        .expect("run ocart");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ocart serve` on the embedded default in `dir` (its current directory, so `./ocart.db`),
/// listening on 127.0.0.1:`port`; the caller reads or discards its output and stops it.
pub fn serve_in(
    bin: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    output: fn() -> std::process::Stdio,
) -> tokio::process::Child {
    tokio::process::Command::new(bin)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("OCART_DATABASE_URL")
        .env_remove("OCART_DATA_DIR")
        .env_remove("OCART_NATS_URL")
        .stdout(output())
        .stderr(output())
        .kill_on_drop(true)
        .spawn()
        .expect("start ocart serve")
}

/// Waits (at most 10 s) until a server answers `GET /ocart/v1/ping` on 127.0.0.1:`port`.
pub async fn wait_until_serving(client: &reqwest::Client, port: u16) {
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/ocart/v1/ping"))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("ocart serve did not come up on port {port}");
}
