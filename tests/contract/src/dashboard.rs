//! Runs `tests/dashboard.py` (headless Chromium through selenium, both installed by
//! `scripts/setup.sh`) with a target's scenarios, and saves its screenshots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn repository_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Where a target's screenshots go: `target/dashboard-screenshots/<name>/`.
pub fn screenshots_dir(name: &str) -> PathBuf {
    repository_root()
        .join("target/dashboard-screenshots")
        .join(name)
}

/// Runs the browser through `scenarios`; `Err` holds every problem it saw.
pub fn run_browser(scenarios: &Value, screenshots: &Path) -> Result<(), String> {
    let root = repository_root();
    let python = root.join(".venv/bin/python");
    for needed in [
        python.as_path(),
        Path::new("/usr/bin/chromium"),
        Path::new("/usr/bin/chromedriver"),
    ] {
        if !needed.exists() {
            return Err(format!(
                "{} is missing: run scripts/setup.sh (it installs Debian's chromium and chromium-driver, and selenium into .venv)",
                needed.display()
            ));
        }
    }
    let mut child = Command::new(&python)
        .arg(root.join("tests/dashboard.py"))
        .arg(screenshots)
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(scenarios.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
