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
    // The API's answers are as they were: no page policy, never cached.
    let health = send(server.addr, &RawRequest::new("GET", "/healthz")).unwrap();
    assert_eq!(health.header("cache-control"), Some("no-store"));
    assert_eq!(health.header("content-security-policy"), None);
}
