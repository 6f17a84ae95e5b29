//! RELAYS.md holds true: its curl bodies are what the service accepts, and its Node.js example,
//! run with the debug setting, prints a ping and an erasure the core accepts and sends nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use telemetry_core::ping::{parse_erasure, parse_ping};

fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("RELAYS.md")).unwrap()
}

/// The `-d '…'` bodies of the guide's curl calls, in order.
fn curl_bodies(guide: &str) -> Vec<String> {
    guide
        .split("-d '")
        .skip(1)
        .map(|rest| rest.split('\'').next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_guide_s_curl_calls_send_what_the_service_accepts() {
    let guide = guide();
    let bodies = curl_bodies(&guide);
    assert_eq!(bodies.len(), 2, "a ping and an erasure");
    // Each call as a relay makes it: two seconds at most, JSON, to the two paths.
    let calls: Vec<&str> = guide.split("curl ").skip(1).collect();
    assert_eq!(calls.len(), 2);
    for (call, path) in calls.iter().zip(["/v1/session", "/v1/erase"]) {
        assert!(call.starts_with("-sS -m 2 -X POST "), "{call}");
        assert!(call.contains(&format!("{path} \\")), "{call}");
        assert!(
            call.contains("-H 'content-type: application/json'"),
            "{call}"
        );
    }
    let ping = parse_ping(bodies[0].as_bytes()).unwrap();
    let erased = parse_erasure(bodies[1].as_bytes()).unwrap();
    assert_eq!(
        ping.session_id, erased,
        "the same session, pinged then erased"
    );
}

#[test]
fn the_guide_s_node_example_in_debug_mode_prints_accepted_bodies_and_sends_nothing() {
    let guide = guide();
    let example = guide
        .split("```js\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let dir = std::env::temp_dir().join(format!("relays-guide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("telemetry.mjs"), example).unwrap();
    // The endpoint does not resolve: a request sent would fail, a printed one is what counts.
    let script = r#"
        import { startTelemetry, optOut, newSessionId } from "./telemetry.mjs";
        const settings = { telemetry: true, telemetrySessionId: newSessionId() };
        const stop = startTelemetry(settings, { daemonVersion: "0.9.3", primaryFramework: "react" });
        stop();
        await optOut(settings);
        if (settings.telemetry !== false || settings.telemetrySessionId !== undefined) process.exit(3);
        const off = { telemetry: false, telemetrySessionId: newSessionId() };
        startTelemetry(off, { daemonVersion: "0.9.3", primaryFramework: "react" });
    "#;
    let output = Command::new("node")
        .args(["--input-type=module", "-e", script])
        .current_dir(&dir)
        .env("RELAY_TELEMETRY_DEBUG", "1")
        .env_remove("DO_NOT_TRACK")
        .env_remove("RELAY_TELEMETRY")
        .output()
        .expect("node runs (scripts/setup.sh checks for Node.js 20)");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one ping and one erasure, the opted-out one silent: {printed}"
    );
    let body = |line: &str, path: &str| {
        let prefix = format!("telemetry (debug, not sent): POST {path} ");
        line.strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned()
    };
    let ping = body(lines[0], "/v1/session");
    let ping = parse_ping(ping.as_bytes()).unwrap();
    let erased = parse_erasure(body(lines[1], "/v1/erase").as_bytes()).unwrap();
    assert_eq!(ping.session_id, erased);
    assert_eq!(ping.session_id.as_str().len(), 32);
    // DO_NOT_TRACK=1 and the product's own variable each stop the pings; the opt-out's
    // erasure is still sent (it asks for less data, not more).
    for (variable, value) in [("DO_NOT_TRACK", "1"), ("RELAY_TELEMETRY", "0")] {
        let output = Command::new("node")
            .args(["--input-type=module", "-e", script])
            .current_dir(&dir)
            .env("RELAY_TELEMETRY_DEBUG", "1")
            .env(variable, value)
            .output()
            .unwrap();
        assert!(output.status.success());
        let printed = String::from_utf8_lossy(&output.stdout);
        assert_eq!(printed.lines().count(), 1, "{variable}={value}: {printed}");
        assert!(printed.contains("POST /v1/erase "), "{printed}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
