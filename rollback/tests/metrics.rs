//! Prometheus metrics on their own address (`--metrics-listen`): what was accepted and
//! refused and written shows as counts, the public port does not serve them, and they hold no
//! session id or client address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use contract_suite::privacy::holds_an_address;
use contract_suite::{RawRequest, free_local_port, ping_request, send};
use support::{Rollback, scratch_dir};

#[test]
fn metrics_count_what_happened_on_their_own_address_and_name_no_one() {
    let dir = scratch_dir("metrics");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let metrics_port = free_local_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let server = Rollback::start_with_args(
        &store,
        &dir,
        &[("ABUSE_LIMIT_PER_MINUTE", "2")],
        &["--metrics-listen", &metrics_listen],
    );
    for n in 0..3 {
        send(server.addr, &ping_request(&format!("metrics-relay-{n:02}"))).unwrap();
    }
    let bad = RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(b"{}".to_vec());
    assert_eq!(send(server.addr, &bad).unwrap().status, 400);
    let scrape = || {
        let metrics_addr = metrics_listen.parse().unwrap();
        send(metrics_addr, &RawRequest::new("GET", "/metrics")).unwrap()
    };
    // The writer takes a moment: wait for the accepted pings to be written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = scrape().text();
        if text.contains("telemetry_store_write_seconds_count 1")
            || text.contains("telemetry_store_write_seconds_count 2")
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for line in [
        "telemetry_pings_accepted_total 2",
        r#"telemetry_pings_refused_total{reason="rate_limited"} 1"#,
        r#"telemetry_pings_refused_total{reason="missing_field"} 1"#,
        "telemetry_store_write_failures_total 0",
        "telemetry_queue_depth 0",
        "# TYPE telemetry_store_write_seconds histogram",
        "# TYPE telemetry_connections_open gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("metrics-relay") && !holds_an_address(&text),
        "{text}"
    );
    // The public port does not serve them.
    let public = send(server.addr, &RawRequest::new("GET", "/metrics")).unwrap();
    assert_eq!(public.status, 404);
}
