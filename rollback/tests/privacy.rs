//! No client address reaches any log of the documented rollback set-up: the rollback behind
//! Caddy (`deploy/Caddyfile` as it is, the unit's `--client-address-header X-Forwarded-For`),
//! with pings carrying addresses in every header that may hold one, and with the rollback
//! down so that Caddy logs an error for each of them; nor does a deletion's session id or a
//! token put in a query string.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use contract_suite::ADMIN_TOKEN;
use std::time::{Duration, Instant};

use contract_suite::privacy::{address_problems, holds_an_address, send_address_bearing_pings};
use contract_suite::{RawRequest, Target, send};
use support::{Caddy, Rollback, scratch_dir};

const TOKEN: &str = "privacy-token-5d1e-0123456789abcdef0123456789abcdef";

#[test]
fn no_client_address_reaches_the_rollbacks_or_caddys_log() {
    let dir = scratch_dir("privacy");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let server = Rollback::start_with_args(
        &store,
        &dir,
        &[("WAU_READ_TOKEN", TOKEN), ("ADMIN_TOKEN", ADMIN_TOKEN)],
        &["--client-address-header", "X-Forwarded-For"],
    );
    let caddy = Caddy::start(server.addr, &dir);
    let health = send(caddy.addr, &RawRequest::new("GET", "/healthz")).unwrap();
    assert_eq!(
        health.header("strict-transport-security"),
        Some("max-age=31536000"),
        "Caddy sends HSTS"
    );

    // Through Caddy, as relays reach it, and straight to the rollback.
    let (through_caddy, problems) = send_address_bearing_pings(caddy.addr, "via-caddy");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let (direct, problems) = send_address_bearing_pings(server.addr, "direct");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let expected = u64::try_from(through_caddy.len() + direct.len()).unwrap();
    let through_caddy_target = Target {
        addr: caddy.addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    };
    assert_eq!(through_caddy_target.count_settled(expected), Ok(expected));

    // The rollback restarts: Caddy answers 502 and logs an error for every ping.
    let rollback_log = server.log();
    drop(server);
    let (accepted, refused) = send_address_bearing_pings(caddy.addr, "while-down");
    assert!(accepted.is_empty());
    assert!(refused.iter().all(|p| p.contains("502")), "{refused:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while caddy.log().matches("\"status\":502").count() < refused.len() {
        assert!(
            Instant::now() < deadline,
            "caddy logged no error per 502:\n{}",
            caddy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A deletion request (its path holds a session id) and a token put in a query string by
    // mistake, while the rollback is down: Caddy logs an error for each, with no URI.
    let errors_before = caddy.log().matches("\"status\":502").count();
    let deletion = RawRequest::new("DELETE", "/v1/session/forgotten-relay-77")
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"));
    let in_query = RawRequest::new("GET", "/v1/wau/2026-W48?token=token-in-a-query-55");
    for request in [&deletion, &in_query] {
        assert_eq!(send(caddy.addr, request).unwrap().status, 502);
    }
    while caddy.log().matches("\"status\":502").count() < errors_before + 2 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "{}",
            caddy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let caddy_log = caddy.log();
    for never in [
        "forgotten-relay-77",
        "token-in-a-query-55",
        "/v1/session/",
        "/v1/wau/",
    ] {
        assert!(
            !caddy_log.contains(never),
            "caddy's log holds {never}:\n{caddy_log}"
        );
    }
    let mut problems = address_problems(&caddy_log);
    problems.extend(address_problems(&rollback_log));
    for line in rollback_log
        .lines()
        .filter(|l| l.starts_with("{\"event\":"))
    {
        if holds_an_address(line) {
            problems.push(format!("a wide event holds an address: {line}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\ncaddy's log:\n{caddy_log}",
        problems.join("\n")
    );
    assert!(
        rollback_log.matches("\"status\":204").count() >= through_caddy.len() + direct.len(),
        "the rollback logged its requests:\n{rollback_log}"
    );
}
