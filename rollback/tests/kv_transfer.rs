//! A week that spans both targets: `import-kv` merges the Worker's half into the store,
//! `export-kv` gives it back in the form `wrangler kv bulk put` takes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;

use contract_suite::{RawRequest, send};
use serde_json::{Value, json};
use support::{Rollback, scratch_dir};

fn record(platform: &str) -> Value {
    json!({
        "daemon_version": "1.2.3",
        "first_seen_at": "2026-11-23T01:49:51Z",
        "node_version": "v20.1.0",
        "platform": platform,
        "primary_framework": "react",
        "protocol_version": "1.0.0"
    })
}

fn rollback(store: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollback"))
        .args(args)
        .args(["--store", store])
        .env_remove("WAU_READ_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn a_week_moves_from_kv_into_the_store_and_back() {
    let dir = scratch_dir("kv-transfer");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let expires = rollback::unix_now() + 3_000_000;
    let listing = json!([
        {"name": "session:2026-W47:kv-session-0001", "expiration": expires, "metadata": record("linux")},
        {"name": "session:2026-W47:kv-session-0002", "expiration": expires, "metadata": record("darwin")},
    ]);
    let file = dir.join("keys.json");
    std::fs::write(&file, listing.to_string()).unwrap();
    let output = rollback(&store, &["import-kv", file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "imported 2 records"
    );

    // The server counts them with its own.
    let server = Rollback::start(&store, &dir, &[("WAU_READ_TOKEN", "tok")]);
    let response = send(
        server.addr,
        &RawRequest::new("GET", "/v1/wau/2026-W47").header("authorization", "Bearer tok"),
    )
    .unwrap();
    assert_eq!(
        response.text(),
        r#"{"week":"2026-W47","weekly_active_sessions":2}"#
    );
    drop(server);

    let output = rollback(&store, &["export-kv", "2026-W47"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut entries: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    entries.sort_by_key(|e| e["key"].as_str().unwrap().to_owned());
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["key"], "session:2026-W47:kv-session-0001");
    assert_eq!(entries[0]["metadata"], record("linux"));
    let value: Value = serde_json::from_str(entries[1]["value"].as_str().unwrap()).unwrap();
    assert_eq!(value, record("darwin"));
    assert_eq!(entries[0]["expiration_ttl"], 7_257_600);
}

#[test]
fn a_listing_with_anything_more_than_a_record_is_refused_whole() {
    let dir = scratch_dir("kv-refuse");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let mut extra = record("linux");
    extra["ip"] = json!("203.0.113.7");
    for listing in [
        json!([
            {"name": "session:2026-W47:good-session-1", "metadata": record("linux")},
            {"name": "session:2026-W47:bad-session-2", "metadata": extra},
        ]),
        json!([{"name": "session:2025-W53:abcdefgh", "metadata": record("linux")}]),
        json!([{"name": "other:abc", "metadata": record("linux")}]),
    ] {
        let file = dir.join("keys.json");
        std::fs::write(&file, listing.to_string()).unwrap();
        let output = rollback(&store, &["import-kv", file.to_str().unwrap()]);
        assert!(!output.status.success(), "{listing}");
        assert!(!String::from_utf8_lossy(&output.stderr).is_empty());
    }
    let output = rollback(&store, &["export-kv", "2026-W47"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "[]",
        "nothing was written"
    );
}
