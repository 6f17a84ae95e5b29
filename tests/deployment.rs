//! Checks of the deployment files, for what no request can show: that nothing around the
//! records (platform logs, the tail, dump files) keeps a client address or a session id,
//! and that every check PRIVACY.md names exists.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use contract_suite::privacy::{address_problems, holds_an_address};
use toml_edit::DocumentMut;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn workers_logs_keep_the_wide_events_and_no_invocation_logs_traces_or_logpush() {
    let config: DocumentMut = read("wrangler.toml").parse().unwrap();
    let observability = &config["observability"];
    assert_eq!(observability["enabled"].as_bool(), Some(true));
    let logs = &observability["logs"];
    assert_eq!(
        logs["enabled"].as_bool(),
        Some(true),
        "wide events are kept"
    );
    assert_eq!(
        logs["head_sampling_rate"].as_float(),
        None,
        "a whole number"
    );
    assert_eq!(
        logs["head_sampling_rate"].as_integer(),
        Some(1),
        "every one"
    );
    assert_eq!(
        logs["invocation_logs"].as_bool(),
        Some(false),
        "invocation logs hold every request's headers and client address"
    );
    assert_ne!(
        observability["traces"]["enabled"].as_bool(),
        Some(true),
        "traces hold every request's URL and timing"
    );
    assert_ne!(
        config.get("logpush").and_then(|item| item.as_bool()),
        Some(true),
        "Logpush ships requests out"
    );
    assert!(
        config.get("tail_consumers").is_none(),
        "a tail consumer receives every request's headers"
    );
}

#[test]
fn the_worker_is_served_only_where_the_zone_s_rules_apply() {
    let config: DocumentMut = read("wrangler.toml").parse().unwrap();
    for (setting, reached_by) in [
        ("workers_dev", "*.workers.dev"),
        ("preview_urls", "each version's preview URL"),
    ] {
        assert_eq!(
            config.get(setting).and_then(|item| item.as_bool()),
            Some(false),
            "{setting} must be false: unset, the Worker is also reached by {reached_by}, around the zone's rules"
        );
    }
}

#[test]
fn the_shared_rate_limits_agree_with_the_configured_abuse_limit() {
    let config: DocumentMut = read("wrangler.toml").parse().unwrap();
    let per_minute: u32 = config["vars"]["ABUSE_LIMIT_PER_MINUTE"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let limits = config["ratelimits"].as_array_of_tables().unwrap();
    let limit_of = |name: &str| {
        let binding = limits
            .iter()
            .find(|binding| binding["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no [[ratelimits]] named {name}"));
        let simple = &binding["simple"];
        assert_eq!(simple["period"].as_integer(), Some(60), "{name}: a minute");
        simple["limit"].as_integer().unwrap()
    };
    assert_eq!(limit_of("ABUSE_LIMIT"), i64::from(per_minute));
    assert_eq!(
        limit_of("ABUSE_LIMIT_BLOCK"),
        i64::from(per_minute * telemetry_core::abuse::PREFIX_LIMIT_FACTOR),
        "a block may send PREFIX_LIMIT_FACTOR times a client's limit"
    );
}

/// One `wrangler tail --format json` event, as wrangler prints it (pretty, four spaces).
fn tail_event(message: &str) -> String {
    tail_event_ending(message, "ok", serde_json::json!([]))
}

/// A tail event whose invocation ended with `outcome` and threw `exceptions`.
fn tail_event_ending(message: &str, outcome: &str, exceptions: serde_json::Value) -> String {
    let event = serde_json::json!({
        "outcome": outcome,
        "scriptName": "telemetry",
        "exceptions": exceptions,
        "logs": [{"message": [message], "level": "log", "timestamp": 1_795_549_261_000_u64}],
        "eventTimestamp": 1_795_549_261_000_u64,
        "event": {"request": {
            "url": "https://telemetry.example.com/v1/session",
            "method": "POST",
            "headers": {
                "cf-connecting-ip": "203.0.113.7",
                "x-forwarded-for": "203.0.113.7, 2001:db8::7",
                "user-agent": "relay/1.2.3"
            },
            "cf": {"clientTcpRtt": 3, "city": "Amsterdam", "asn": 64_496, "colo": "AMS"}
        }}
    });
    serde_json::to_string_pretty(&event).unwrap()
}

#[test]
fn the_tail_filter_prints_the_wide_events_and_nothing_of_the_request() {
    let wide = r#"{"event":"request","target":"worker","route":"session","method":"POST","status":204,"outcome":"accepted","body_bytes":165,"duration_ms":1,"week":"2026-W48","colo":"AMS"}"#;
    let failure = r#"{"event":"store_failure","target":"worker","operation":"put","week":"2026-W48","error":"quota"}"#;
    let input = format!(
        "Successfully created tail, expires at 2026-11-24T23:00:00Z\n{}\n{}\n{}",
        tail_event(wide),
        tail_event("not one of ours: {\"a\": 1}"),
        tail_event(failure)
    );
    let printed = through_the_tail_filter(&input);
    assert_eq!(printed, format!("{wide}\n{failure}\n"));
    assert!(address_problems(&printed).is_empty() && !holds_an_address(&printed));
    assert!(!printed.contains("Amsterdam") && !printed.contains("relay/1.2.3"));
}

/// What `scripts/wide-events.mjs` prints for `input`, fed in pieces that split JSON strings
/// and objects, as a socket delivers them.
fn through_the_tail_filter(input: &str) -> String {
    let mut child = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/wide-events.mjs"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs scripts/wide-events.mjs (install Node.js >= 20)");
    let mut stdin = child.stdin.take().unwrap();
    for piece in input.as_bytes().chunks(37) {
        stdin.write_all(piece).unwrap();
        stdin.flush().unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// What an operator needs in an incident gets through: every outcome wrangler's tail emits
/// other than `ok` (an exception, the CPU or memory limit, a cancelled or disconnected
/// request), counted, with each exception's name and message, but no URL or address in them.
#[test]
fn the_tail_filter_passes_crashes_and_limits_counted_and_scrubbed() {
    let wide = r#"{"event":"request","target":"worker","route":"session","method":"POST","status":204,"outcome":"accepted","body_bytes":256,"duration_ms":1,"week":"2026-W48","colo":"AMS"}"#;
    let thrown = serde_json::json!([{
        "name": "RuntimeError",
        "message": "unreachable executed at https://telemetry.example.com/v1/session for 203.0.113.7 (2001:db8::7)",
        "timestamp": 1_795_549_261_000_u64
    }]);
    let none = serde_json::json!([]);
    let input = [
        tail_event_ending(wide, "exception", thrown.clone()),
        tail_event_ending("", "exceededCpu", none.clone()),
        tail_event_ending("", "exceededMemory", none.clone()),
        tail_event_ending("", "canceled", none.clone()),
        tail_event_ending("", "responseStreamDisconnected", none.clone()),
        tail_event_ending("", "exception", thrown),
        tail_event(wide),
    ]
    .join("\n");
    let printed = through_the_tail_filter(&input);
    let exception = r#"{"event":"worker_outcome","outcome":"exception","count":COUNT,"exceptions":[{"name":"RuntimeError","message":"unreachable executed at <url> for <address> (<address>)"}]}"#;
    let limit = |outcome: &str| {
        format!(r#"{{"event":"worker_outcome","outcome":"{outcome}","count":1,"exceptions":[]}}"#)
    };
    let expected = [
        wide.to_owned(),
        exception.replace("COUNT", "1"),
        limit("exceededCpu"),
        limit("exceededMemory"),
        limit("canceled"),
        limit("responseStreamDisconnected"),
        exception.replace("COUNT", "2"),
        wide.to_owned(),
    ]
    .join("\n")
        + "\n";
    assert_eq!(printed, expected);
    assert!(address_problems(&printed).is_empty() && !holds_an_address(&printed));
    assert!(!printed.contains("telemetry.example.com") && !printed.contains("Amsterdam"));
}

/// `tests/backfill.mjs`: records put straight into KV are counted once the backfill hands
/// them to their week's object, page by page, and a second run counts nothing twice.
#[test]
fn the_backfill_hands_kv_records_to_their_weeks_object_once() {
    run_against_the_bundle("tests/backfill.mjs", &[]);
}

/// `tests/kv_failure.mjs`: while KV refuses writes a new session is still counted, and its
/// next ping puts the record KV missed.
#[test]
fn a_record_kv_refused_is_counted_and_put_by_the_session_s_next_ping() {
    run_against_the_bundle("tests/kv_failure.mjs", &[]);
}

/// `tests/batching.mjs`: 16 clients' pings at once, through the Worker's own socket, are kept
/// in batches and every one is counted, put in KV once, or left unwritten as unchanged.
#[test]
fn pings_that_arrive_together_are_kept_together_and_none_is_lost() {
    run_against_the_bundle("tests/batching.mjs", &[]);
}

#[test]
fn the_week_s_object_keeps_a_flood_of_distinct_values_to_the_bound() {
    run_against_the_bundle("tests/distinct_values.mjs", &[]);
}

/// `tests/recovery.mjs`: after a Rust panic that leaves the isolate's state borrowed, the
/// Worker and its week's object answer again (the entry module resets the wasm module), on a
/// bundle built with the `recovery-check` feature.
#[test]
fn after_a_panic_the_worker_and_its_object_answer_again() {
    run_against_the_bundle("tests/recovery.mjs", &[RECOVERY_BUNDLE]);
}

/// Where `tests/recovery.mjs`'s bundle is built (never shipped: under `target/`).
const RECOVERY_BUNDLE: &str = "target/recovery-bundle";

/// Builds the bundles, once for this file's tests, which run at the same time: the one the
/// other Worker tests run, from the sources as they are, and before it (the two share
/// cargo's output, so one at a time) the recovery check's; and runs `script` (Node,
/// Miniflare) with `args`.
fn run_against_the_bundle(script: &str, args: &[&str]) {
    static BUILT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = BUILT.get_or_init(|| {
        let build = |env: &[(&str, &str)]| {
            Command::new("sh")
                .arg(root.join("scripts/build-worker.sh"))
                .current_dir(root)
                .envs(env.iter().copied())
                .status()
                .expect("run scripts/build-worker.sh")
                .success()
        };
        build(&[
            ("TELEMETRY_WORKER_OUT", RECOVERY_BUNDLE),
            ("TELEMETRY_WORKER_FEATURES", "recovery-check"),
        ]) && build(&[])
    });
    assert!(built, "building the Worker failed");
    let output = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| {
            panic!("node runs {script} (scripts/setup.sh installs Node's packages): {e}")
        });
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn runbook_dumps_go_to_a_private_directory_and_the_tail_through_the_filter() {
    let runbook = read("RUNBOOK.md");
    assert!(
        !runbook.contains("/tmp/"),
        "a dump or secret in a shared /tmp"
    );
    for line in runbook.lines() {
        if line.contains("wrangler tail") && line.trim_start().starts_with("npx") {
            assert!(
                line.contains("scripts/wide-events.mjs"),
                "unfiltered: {line}"
            );
        }
        if line.contains("export-kv") && line.contains('>') {
            assert!(
                line.contains("\"$dump/"),
                "a dump outside the private dir: {line}"
            );
        }
        if line.contains("kv key list") && line.trim_start().starts_with("npx") {
            assert!(
                line.trim_end().ends_with('\\') || line.contains('|'),
                "{line}"
            );
        }
    }
    assert!(
        runbook.contains("dump=$(mktemp -d)") && runbook.contains("trap 'rm -rf \"$dump\"' EXIT")
    );
    // And a dump written in the checkout by mistake is never committed.
    for name in [
        "kv-2026-W48.json",
        "bulk-2026-W48.json",
        "keys.json",
        "telemetry.db-wal",
    ] {
        let ignored = Command::new("git")
            .args(["check-ignore", "-q", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("git");
        assert!(ignored.success(), "{name} is not git-ignored");
    }
}

/// Every file and test PRIVACY.md cites as the check of a line exists, so the document
/// cannot point at a check that was renamed or removed.
#[test]
fn every_check_privacy_md_names_exists() {
    let privacy = read("PRIVACY.md");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut named = 0;
    for cited in privacy.split('`').skip(1).step_by(2) {
        // `path/to/file.rs::test_name` or `path/to/file`.
        let (file, test) = cited
            .split_once("::")
            .map_or((cited, None), |(f, t)| (f, Some(t)));
        let looks_like_a_path =
            file.contains('/') || file.ends_with(".toml") || file == "Caddyfile";
        if !looks_like_a_path || file.contains(' ') || file.starts_with('/') {
            continue;
        }
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("PRIVACY.md cites {file}: {e}"));
        if let Some(test) = test {
            assert!(
                text.contains(&format!("fn {test}(")),
                "PRIVACY.md cites {file}::{test}, which does not exist"
            );
        }
        named += 1;
    }
    assert!(named >= 15, "PRIVACY.md cites only {named} checks");
}
