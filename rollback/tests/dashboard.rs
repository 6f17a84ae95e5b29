//! The dashboard on the rollback (SQLite), in headless Chromium: with a known population
//! behind it, the page shows the truth (the withheld sessions included) once the read token
//! is given, forgets it on sign-out, says in words when the token is wrong, the readout is
//! disabled, the store is unavailable or a week has no data, opens without a token in public
//! mode, and asks nothing of another origin.
//! Screenshots: target/dashboard-screenshots/rollback/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use contract_suite::dashboard::{run_browser, screenshots_dir};
use contract_suite::population::seed_for_dashboard;
use contract_suite::public_view::seed_and_pad;
use contract_suite::{ADMIN_TOKEN, RawRequest, Target, send};
use serde_json::json;
use support::{RedisServer, Rollback, scratch_dir};

const READ_TOKEN: &str = "dashboard-read-token-0123456789abcdef";

fn server(name: &str, vars: &[(&str, &str)]) -> Rollback {
    let dir = scratch_dir(name);
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    Rollback::start(&store, &dir, vars)
}

#[test]
fn the_dashboard_shows_the_truth_in_a_real_browser() {
    let seeded = server(
        "dashboard-seeded",
        &[
            ("WAU_READ_TOKEN", READ_TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ],
    );
    let target = Target {
        addr: seeded.addr,
        token: READ_TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    };
    let expect = seed_for_dashboard(&target, "dashboard").unwrap();
    let disabled = server("dashboard-disabled", &[]);
    let public = server(
        "dashboard-public",
        &[("WAU_READ_TOKEN", READ_TOKEN), ("PUBLIC_READOUT", "1")],
    );
    // A public week with a population: the stranger's padding shows only as other.
    let padded = server(
        "dashboard-public-padded",
        &[
            ("WAU_READ_TOKEN", READ_TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", "0"),
            ("PUBLIC_READOUT", "1"),
            ("PUBLIC_DAEMON_VERSIONS", "1.0.0,1.1.0"),
        ],
    );
    let padded_target = Target {
        addr: padded.addr,
        token: READ_TOKEN.into(),
        admin_token: None,
        abuse_limit: None,
    };
    seed_and_pad(&padded_target, "dashboard-public", "0.9.0-zeta.3").unwrap();
    let public_expect = json!({"week": expect["week"], "count": 12, "series": {},
        "breakdowns": {"daemon_version": {"1.0.0": 5, "other": 5, "withheld": 2}, "platform": {"linux": 12}},
        "mode": "Public view"});
    // On Redis, with the Redis gone: every readout is a 503.
    let mut redis = RedisServer::start(&scratch_dir("dashboard-redis"));
    let unavailable = Rollback::start(
        &redis.url(),
        &scratch_dir("dashboard-unavailable"),
        &[("WAU_READ_TOKEN", READ_TOKEN)],
    );
    redis.kill();
    let url = |server: &Rollback| format!("http://{}", server.addr);
    let scenarios = json!([
        {"name": "operator", "url": url(&seeded), "token": READ_TOKEN, "expect": expect, "sign_out": true},
        {"name": "wrong-token", "url": url(&seeded), "token": "not-the-token-0123456789abcdef0123",
         "expect": {"status": "That token was not accepted"}},
        {"name": "disabled", "url": url(&disabled), "token": null,
         "expect": {"status": "The readout is disabled"}},
        {"name": "public-empty-week", "url": url(&public), "token": null,
         "expect": {"week": expect["week"], "count": 0, "series": {}, "breakdowns": {
            "platform": {}, "daemon_version": {}}, "note": "No sessions were recorded in"}},
        {"name": "store-unavailable", "url": url(&unavailable), "token": READ_TOKEN,
         "expect": {"status": "store is unavailable"}},
        {"name": "public", "url": url(&padded), "token": null, "expect": public_expect},
        {"name": "public-with-a-stale-token", "url": url(&padded), "token": null,
         "stored_token": "an-old-token-0123456789abcdef0123456789",
         "status": "Showing the public view", "expect": public_expect},
    ]);
    if let Err(problems) = run_browser(&scenarios, &screenshots_dir("rollback")) {
        panic!("{problems}\n\nserver log:\n{}", seeded.log());
    }
}

#[test]
fn the_dashboard_s_files_carry_the_policy_and_the_api_keeps_its_headers() {
    let server = server("dashboard-headers", &[("WAU_READ_TOKEN", READ_TOKEN)]);
    let page = send(server.addr, &RawRequest::new("GET", "/dashboard/")).unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.text()
            .contains(r#"<script src="app.js" defer></script>"#)
    );
    for (name, value) in telemetry_core::dashboard::HEADERS {
        assert_eq!(page.header(name), Some(value), "{name}");
    }
    let redirect = send(server.addr, &RawRequest::new("GET", "/dashboard")).unwrap();
    assert_eq!(
        (redirect.status, redirect.header("location")),
        (308, Some("/dashboard/"))
    );
    let missing = send(
        server.addr,
        &RawRequest::new("GET", "/dashboard/nothing.js"),
    )
    .unwrap();
    assert_eq!(missing.status, 404);
    // The Worker's static assets carry the same headers: public/_headers says what
    // core/src/dashboard.rs says.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = std::fs::read_to_string(root.join("public/_headers")).unwrap();
    let mut lines = rules
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty());
    assert_eq!(lines.next(), Some("/dashboard/*"), "{rules}");
    let declared: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.trim().split_once(": ").unwrap();
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    let expected: Vec<(String, String)> = telemetry_core::dashboard::HEADERS
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    assert_eq!(
        declared, expected,
        "public/_headers and core/src/dashboard.rs differ"
    );
    // HEAD answers as GET does, without the body.
    let head = send(server.addr, &RawRequest::new("HEAD", "/dashboard/app.js")).unwrap();
    assert_eq!(head.status, 200);
    // The whole page, every file gzipped, within the issue's 100 KB.
    let mut gzipped = 0;
    for (_, name, _) in telemetry_core::dashboard::FILES {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../public/dashboard")
            .join(name);
        let gzip = std::process::Command::new("gzip")
            .arg("-9c")
            .arg(&path)
            .output()
            .unwrap();
        gzipped += gzip.stdout.len();
    }
    assert!(
        gzipped < 100_000,
        "the dashboard is {gzipped} bytes gzipped"
    );
    // The API's answers are as they were: no page policy, never cached.
    let health = send(server.addr, &RawRequest::new("GET", "/healthz")).unwrap();
    assert_eq!(health.header("cache-control"), Some("no-store"));
    assert_eq!(health.header("content-security-policy"), None);
}
