//! A week that spans both targets: `import-kv` merges the Worker's half into the store,
//! `export-kv` gives it back in the form `wrangler kv bulk put` takes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use contract_suite::{RawRequest, send};
use serde_json::{Value, json};
use support::{Rollback, scratch_dir};

/// A record as KV lists it; an older Worker wrote `first_seen_at` to the second.
fn record(platform: &str, first_seen_at: &str) -> Value {
    json!({
        "daemon_version": "1.2.3",
        "first_seen_at": first_seen_at,
        "node_version": "v20.1.0",
        "platform": platform,
        "primary_framework": "react",
        "protocol_version": "1.0.0"
    })
}

fn rollback(store: &str, args: &[&str]) -> std::process::Output {
    rollback_with_input(store, args, "")
}

/// `rollback ARGS --store STORE`, its three streams piped, without the operator's tokens.
fn spawn_rollback(store: &str, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rollback"))
        .args(args)
        .args(["--store", store])
        .env_remove("WAU_READ_TOKEN")
        .env_remove("ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn rollback_with_input(store: &str, args: &[&str], input: &str) -> std::process::Output {
    let mut child = spawn_rollback(store, args);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn succeeded(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_week_moves_from_kv_into_the_store_and_back_keeping_each_records_expiry() {
    let dir = scratch_dir("kv-transfer");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let now = rollback::unix_now();
    // Two live keys with different lifetimes left, one already expired, one whose record
    // was written to the second by an older version.
    let (soon, later) = (now + 3_000_000, now + 5_000_000);
    let day_start = |unix: i64| unix - unix % 86_400;
    let listing = json!([
        {"name": "session:2026-W47:kv-session-0001", "expiration": soon,
         "metadata": record("linux", "2026-11-23T01:49:51Z")},
        {"name": "session:2026-W47:kv-session-0002", "expiration": later,
         "metadata": record("darwin", "2026-11-22T00:00:00Z")},
        {"name": "session:2026-W47:kv-session-0003", "expiration": now - 5,
         "metadata": record("win32", "2026-11-21T00:00:00Z")},
    ]);
    // From standard input: no dump file to leave behind. The file is new: --create says so.
    let output = rollback_with_input(
        &store,
        &["import-kv", "--create", "-"],
        &listing.to_string(),
    );
    assert_eq!(
        succeeded(&output),
        "imported 2 records: 2 new to the store, 0 it held already (1 expired and 0 of sessions deleted here, not imported)"
    );
    // The same listing again: nothing new.
    let again = rollback_with_input(&store, &["import-kv", "-"], &listing.to_string());
    assert_eq!(
        succeeded(&again),
        "imported 2 records: 0 new to the store, 2 it held already (1 expired and 0 of sessions deleted here, not imported)"
    );

    // The server counts them with its own.
    let server = Rollback::start(
        &store,
        &dir,
        &[("WAU_READ_TOKEN", "tok-0123456789abcdef0123456789abcdef")],
    );
    let response = send(
        server.addr,
        &RawRequest::new("GET", "/v1/wau/2026-W47").header(
            "authorization",
            "Bearer tok-0123456789abcdef0123456789abcdef",
        ),
    )
    .unwrap();
    assert_eq!(
        response.text(),
        r#"{"week":"2026-W47","weekly_active_sessions":2}"#
    );
    drop(server);

    // Time passes before the swap back: the export carries what is left, not a fresh TTL.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let output = rollback(&store, &["export-kv", "2026-W47"]);
    let mut entries: Vec<Value> = serde_json::from_str(&succeeded(&output)).unwrap();
    entries.sort_by_key(|e| e["key"].as_str().unwrap().to_owned());
    assert_eq!(entries.len(), 2, "the expired key stays gone");
    assert_eq!(entries[0]["key"], "session:2026-W47:kv-session-0001");
    assert_eq!(
        entries[0]["metadata"],
        record("linux", "2026-11-23T00:00:00Z"),
        "first_seen_at is cut to the day on the way in"
    );
    let value: Value = serde_json::from_str(entries[1]["value"].as_str().unwrap()).unwrap();
    assert_eq!(value, record("darwin", "2026-11-22T00:00:00Z"));
    // Each keeps its own expiry, cut to its day as every stored time is.
    assert_eq!(entries[0]["expiration"], day_start(soon));
    assert_eq!(entries[1]["expiration"], day_start(later));
    for entry in &entries {
        let fields: Vec<&String> = entry.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            ["expiration", "key", "metadata", "value"],
            "{entry}"
        );
    }
}

#[test]
fn a_deletion_request_removes_the_session_from_every_week_of_the_file() {
    let dir = scratch_dir("delete-session");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let expires = rollback::unix_now() + 3_000_000;
    let key = |week: &str, id: &str| {
        json!({"name": format!("session:{week}:{id}"), "expiration": expires,
               "metadata": record("linux", "2026-11-23T00:00:00Z")})
    };
    let listing = json!([
        key("2026-W46", "asked-to-forget-me"),
        key("2026-W47", "asked-to-forget-me"),
        key("2026-W47", "someone-else-01"),
    ]);
    let output = rollback_with_input(
        &store,
        &["import-kv", "--create", "-"],
        &listing.to_string(),
    );
    succeeded(&output);

    let output = rollback(&store, &["delete-session", "asked-to-forget-me"]);
    assert_eq!(succeeded(&output), "deleted 2 records");
    for week in ["2026-W46", "2026-W47"] {
        let exported = succeeded(&rollback(&store, &["export-kv", week]));
        assert!(
            !exported.contains("asked-to-forget-me"),
            "{week}: {exported}"
        );
    }
    assert!(succeeded(&rollback(&store, &["export-kv", "2026-W47"])).contains("someone-else-01"));
    // The id stays in the deletion journal only, until its deletion reached the Worker; then
    // no byte of it is left in the file.
    assert_eq!(
        succeeded(&rollback(&store, &["deletions"])),
        "asked-to-forget-me"
    );
    let forgotten = rollback_with_input(&store, &["forget-deletions", "-"], "asked-to-forget-me\n");
    succeeded(&forgotten);
    let bytes = std::fs::read(dir.join("telemetry.db")).unwrap();
    assert!(
        !bytes.windows(18).any(|w| w == b"asked-to-forget-me"),
        "the id is still in the file"
    );

    // A mistyped id is refused without being repeated.
    let output = rollback(&store, &["delete-session", "not an id!"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a session id") && !stderr.contains("not an id!"),
        "{stderr}"
    );
}

#[test]
fn a_listing_with_anything_more_than_a_record_is_refused_whole() {
    let dir = scratch_dir("kv-refuse");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let mut extra = record("linux", "2026-11-23T00:00:00Z");
    extra["ip"] = json!("203.0.113.7");
    for listing in [
        json!([
            {"name": "session:2026-W47:good-session-1", "metadata": record("linux", "2026-11-23T00:00:00Z")},
            {"name": "session:2026-W47:bad-session-2", "metadata": extra},
        ]),
        json!([{"name": "session:2025-W53:abcdefgh", "metadata": record("linux", "2026-11-23T00:00:00Z")}]),
        json!([{"name": "other:abc", "metadata": record("linux", "2026-11-23T00:00:00Z")}]),
        json!([{"name": "session:2026-W47:abcdefgh", "metadata": record("linux", "yesterday")}]),
        // Values no ping could have sent: a platform outside the list, a formula.
        json!([{"name": "session:2026-W47:abcdefgh", "metadata": record("beos", "2026-11-23T00:00:00Z")}]),
        json!([
            {"name": "session:2026-W47:good-session-1", "metadata": record("linux", "2026-11-23T00:00:00Z")},
            {"name": "session:2026-W47:abcdefgh", "metadata": {
                "daemon_version": "\t=1+1", "first_seen_at": "2026-11-23T00:00:00Z",
                "node_version": "v20.1.0", "platform": "linux", "primary_framework": "react",
                "protocol_version": "1.0.0"}},
        ]),
    ] {
        let file = dir.join("keys.json");
        std::fs::write(&file, listing.to_string()).unwrap();
        let output = rollback(&store, &["import-kv", "--create", file.to_str().unwrap()]);
        assert!(!output.status.success(), "{listing}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("entry ") || stderr.contains("not a `wrangler kv key list` dump"),
            "{stderr}"
        );
        for never in ["session-", "abcdefgh", "203.0.113.7"] {
            assert!(
                !stderr.contains(never),
                "the error repeats {never}: {stderr}"
            );
        }
    }
    let output = rollback(&store, &["export-kv", "2026-W47"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "[]",
        "nothing was written"
    );
}

#[test]
fn maintenance_commands_never_guess_a_store_or_a_whole_listing() {
    let dir = scratch_dir("kv-never-guess");
    let real = dir.join("telemetry.db");
    let store = format!("sqlite://{}", real.display());
    let mistyped = format!("sqlite://{}", dir.join("telemtry.db").display());
    // A mistyped path is an error for every command, and makes no file.
    for args in [
        &["delete-session", "some-relay-0001"][..],
        &["export-kv", "2026-W47"],
        &["import-kv", "-"],
        &["weeks"],
    ] {
        let output = rollback_with_input(&mistyped, args, "[]");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no store at") && stderr.contains("--create"),
            "{stderr}"
        );
        assert!(!dir.join("telemtry.db").exists(), "{args:?} made the file");
    }
    // A listing of exactly one wrangler page may be the start of a longer week: refused
    // unless said to be whole.
    let expires = rollback::unix_now() + 3_000_000;
    let page: Vec<Value> = (0..1000)
        .map(|n| {
            json!({"name": format!("session:2026-W47:paged-relay-{n:04}"), "expiration": expires,
                   "metadata": record("linux", "2026-11-23T00:00:00Z")})
        })
        .collect();
    let page = Value::Array(page).to_string();
    let refused = rollback_with_input(&store, &["import-kv", "--create", "-"], &page);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("exactly 1000 keys, one page of wrangler's"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let whole = rollback_with_input(&store, &["import-kv", "--listing-is-whole", "-"], &page);
    assert_eq!(
        succeeded(&whole),
        "imported 1000 records: 1000 new to the store, 0 it held already (0 expired and 0 of sessions deleted here, not imported)"
    );
    // The weeks the store holds, with their counts.
    assert_eq!(succeeded(&rollback(&store, &["weeks"])), "2026-W47 1000");
}

#[test]
fn the_server_checks_its_port_before_it_makes_a_store() {
    let dir = scratch_dir("kv-port-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let file = dir.join("telemetry.db");
    let output = Command::new(env!("CARGO_BIN_EXE_rollback"))
        .args([
            "--listen",
            &listen,
            "--store",
            &format!("sqlite://{}", file.display()),
        ])
        .env_remove("WAU_READ_TOKEN")
        .env_remove("ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen on"));
    assert!(
        !file.exists(),
        "a server that could not listen made its store"
    );
}

/// RUNBOOK's DNS swap with deletions on both sides: a session deleted on the rollback is not
/// brought back by an import of the Worker's KV and is listed for the Worker's `DELETE`; a
/// session the Worker journaled is deleted here, and later imports skip it too.
#[test]
fn deletions_on_either_side_of_the_swap_hold_on_both() {
    let dir = scratch_dir("kv-deletions");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let expiration = rollback::unix_now() + 3_000_000;
    let key = |id: &str| {
        json!({"name": format!("session:2026-W49:{id}"), "expiration": expiration,
               "metadata": record("linux", "2026-11-30T00:00:00Z")})
    };
    let first = json!([key("held-on-both-01"), key("worker-deletes-01")]);
    let imported = rollback_with_input(&store, &["import-kv", "--create", "-"], &first.to_string());
    assert!(succeeded(&imported).starts_with("imported 2 records: 2 new"));
    // Deleted on the rollback during the swap; then KV's half of the week is imported again
    // (it still holds the record): the session is not put back.
    succeeded(&rollback(&store, &["delete-session", "held-on-both-01"]));
    let again = rollback_with_input(&store, &["import-kv", "-"], &first.to_string());
    assert_eq!(
        succeeded(&again),
        "imported 1 records: 0 new to the store, 1 it held already (0 expired and 1 of sessions deleted here, not imported)"
    );
    assert_eq!(succeeded(&rollback(&store, &["weeks"])), "2026-W49 1");
    // The Worker's journal: one session it deleted, made here too.
    let journal = json!([{"name": "deletion:worker-deletes-01", "expiration": expiration}]);
    let deleted = rollback_with_input(&store, &["import-deletions", "-"], &journal.to_string());
    assert_eq!(
        succeeded(&deleted),
        "deleted 1 records of 1 sessions deleted on the Worker"
    );
    assert_eq!(
        succeeded(&rollback(&store, &["weeks"])),
        "",
        "no week holds a record"
    );
    let third = rollback_with_input(&store, &["import-kv", "-"], &first.to_string());
    assert!(
        succeeded(&third).contains("2 of sessions deleted here"),
        "{}",
        succeeded(&third)
    );
    // Both are listed for the Worker's DELETE; those that reached it leave the journal.
    let listed = succeeded(&rollback(&store, &["deletions"]));
    assert_eq!(listed, "held-on-both-01\nworker-deletes-01");
    let forgotten = rollback_with_input(&store, &["forget-deletions", "-"], "held-on-both-01\n");
    assert_eq!(
        succeeded(&forgotten),
        "took 1 sessions out of the deletion journal"
    );
    assert_eq!(
        succeeded(&rollback(&store, &["deletions"])),
        "worker-deletes-01"
    );
    // A listing with anything but journal keys is refused whole, naming no key.
    let wrong =
        json!([{"name": "deletion:worker-deletes-01"}, {"name": "session:2026-W49:x-relay-99"}]);
    let refused = rollback_with_input(&store, &["import-deletions", "-"], &wrong.to_string());
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("entry 2: not a deletion journal key"),
        "{said}"
    );
    assert!(!said.contains("x-relay-99"), "{said}");
    // The journal holds the ids only, and only until the TTL: no record, no time but its end.
    let connection = rusqlite::Connection::open(dir.join("telemetry.db")).unwrap();
    let columns: Vec<String> = connection
        .prepare("SELECT name FROM pragma_table_info('deletions')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(columns, ["session_id", "expires_at"]);
    // A deletion the Worker journaled ends here when it ends there, not a TTL later.
    let until: i64 = connection
        .query_row(
            "SELECT expires_at FROM deletions WHERE session_id = 'worker-deletes-01'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(until, expiration);
}

/// The peak resident memory of `rollback import-kv -` reading `input`, in kB, from the
/// child's `VmHWM` (which only grows) as last read before it exited.
fn import_peak_kb(store: &str, input: String) -> u64 {
    let mut child = spawn_rollback(store, &["import-kv", "--create", "-"]);
    let status_file = format!("/proc/{}/status", child.id());
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        let read = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok());
        peak = peak.max(read.unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    succeeded(&output);
    peak
}

/// A listing of `sessions` records spread over three weeks and two expiry days.
fn listing_over_three_weeks(sessions: usize, tag: &str) -> String {
    let expiration = rollback::unix_now() + 3_000_000;
    let keys: Vec<Value> = (0..sessions)
        .map(|n| {
            let week = ["2026-W47", "2026-W48", "2026-W49"][n % 3];
            json!({"name": format!("session:{week}:{tag}-{n:07}"),
                   "expiration": expiration + 86_400 * (n % 2) as i64,
                   "metadata": record("linux", "2026-11-23T00:00:00Z")})
        })
        .collect();
    Value::Array(keys).to_string()
}

/// Export and import stream: a listing ten times larger takes about the same memory, and
/// several weeks (named, or a range) go out in one export.
#[test]
fn import_and_export_stream_several_weeks_with_flat_memory() {
    let dir = scratch_dir("kv-stream");
    let small = format!("sqlite://{}", dir.join("small.db").display());
    let large = format!("sqlite://{}", dir.join("large.db").display());
    let small_peak = import_peak_kb(&small, listing_over_three_weeks(12_000, "small"));
    let large_peak = import_peak_kb(&large, listing_over_three_weeks(120_000, "large"));
    // Held in memory, 120,000 records took over 100 MB more than 12,000 (about a kilobyte
    // each, parsed). Streamed, what grows is SQLite's page cache, which holds the file's
    // pages up to its bound (`cache_size`, 64 MiB) and no more: 30 MB here.
    assert!(
        large_peak < small_peak + 64 * 1024,
        "import peak {large_peak} kB for 120,000 records, {small_peak} kB for 12,000"
    );
    assert_eq!(
        succeeded(&rollback(&large, &["weeks"])),
        "2026-W47 40000\n2026-W48 40000\n2026-W49 40000"
    );
    let count = |args: &[&str]| {
        let exported: Value = serde_json::from_str(&succeeded(&rollback(&large, args))).unwrap();
        exported.as_array().unwrap().len()
    };
    assert_eq!(
        count(&["export-kv", "--from", "2026-W47", "--to", "2026-W49"]),
        120_000
    );
    assert_eq!(count(&["export-kv", "2026-W48", "2026-W49"]), 80_000);
    assert_eq!(count(&["export-kv", "2026-W50"]), 0);
    let refused = rollback(
        &large,
        &["export-kv", "--from", "2026-W49", "--to", "2026-W47"],
    );
    assert!(!refused.status.success());
    let refused = rollback(&large, &["export-kv", "2026-W48", "--from", "2026-W47"]);
    assert!(!refused.status.success());
}
