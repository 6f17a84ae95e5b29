//! Runs schemathesis (installed by `scripts/setup.sh` into `.venv`) against a target with the
//! published document, `openapi.yaml`: generated valid and invalid requests, each answer
//! checked against the document (status, headers, body, no 5xx). Bounded in examples, with a
//! fixed seed so a CI failure can be replayed; `SCHEMATHESIS_EXAMPLES` and `SCHEMATHESIS_SEED`
//! run it longer or elsewhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

fn repository_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs the check; `Err` holds schemathesis's report.
pub fn run_schemathesis(addr: SocketAddr, token: &str, admin_token: &str) -> Result<(), String> {
    let root = repository_root();
    let st = root.join(".venv/bin/st");
    if !st.exists() {
        return Err(format!(
            "{} is missing: run scripts/setup.sh (it installs schemathesis from tests/requirements.txt into .venv)",
            st.display()
        ));
    }
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "100".into());
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let output = Command::new(&st)
        .current_dir(&root)
        .args([
            "--config-file",
            "tests/schemathesis.toml",
            "run",
            "openapi.yaml",
        ])
        .args(["--url", &format!("http://{addr}")])
        .env("SCHEMATHESIS_READ_TOKEN", token)
        .env("SCHEMATHESIS_ADMIN_TOKEN", admin_token)
        .args([
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
        ])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", st.display()))?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() && report.contains("No issues found") {
        Ok(())
    } else {
        Err(report)
    }
}
