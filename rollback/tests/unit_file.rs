//! The systemd unit as `systemd-analyze security` scores it, offline: at most 2.0 (exposure,
//! lower is safer), with files created 0600 and secrets as credentials, not environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/telemetry-rollback.service"
);

#[test]
fn the_unit_scores_at_most_two_and_keeps_its_files_and_secrets_private() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "UMask=0077",
        "LoadCredential=WAU_READ_TOKEN:",
        "CapabilityBoundingSet=",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line}"
        );
    }
    assert!(
        !unit.contains("EnvironmentFile="),
        "secrets come as credentials"
    );
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(Path::new(UNIT))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): it comes with systemd (apt-get install systemd)"
            )
        });
    let printed = String::from_utf8_lossy(&output.stdout);
    let score: f64 = printed
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for telemetry-rollback.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure level in:\n{printed}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(score <= 2.0, "exposure {score}, over 2.0:\n{printed}");
}
