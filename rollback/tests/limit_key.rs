//! The abuse limit cannot be escaped by choosing one's own key: behind Caddy and straight to
//! the rollback, a client that sends no client-address header, an empty one, garbage, or a
//! new value on every ping is limited all the same, and by one bucket; a flood spread over a
//! block's addresses stops at the block's limit; and guessing a token, or trying ids to erase,
//! is limited as pinging is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use contract_suite::{ADMIN_TOKEN, RawRequest, ping_request, readout_request, send, send_from};
use support::{Caddy, Rollback, scratch_dir};

const LIMIT: usize = 3;

/// The header value a ping carries, by its number (`None`: no header).
type HeaderFor = fn(usize) -> Option<String>;

/// Pings with the header as `header_for(n)` makes it (`None`: no header); the statuses.
fn statuses(addr: SocketAddr, tag: &str, header_for: impl Fn(usize) -> Option<String>) -> Vec<u16> {
    (0..LIMIT + 3)
        .map(|n| {
            let mut request = ping_request(&format!("{tag}-relay-{n:03}"));
            if let Some(value) = header_for(n) {
                request = request.header("x-forwarded-for", &value);
            }
            send(addr, &request).unwrap().status
        })
        .collect()
}

#[test]
fn no_header_value_lets_a_client_escape_the_limit_or_pick_its_bucket() {
    let dir = scratch_dir("limit-key");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let limit = LIMIT.to_string();
    let vars = [("ABUSE_LIMIT_PER_MINUTE", limit.as_str())];
    let kinds: [(&str, HeaderFor); 4] = [
        ("none", |_| None),
        ("empty", |_| Some(String::new())),
        ("garbage", |_| Some("not-an-address".into())),
        ("rotating", |n| Some(format!("relay-picked-key-{n}"))),
    ];
    for (kind, header_for) in kinds {
        // A server per kind: each starts with an empty limiter.
        let server = Rollback::start_with_args(
            &store,
            &dir,
            &vars,
            &["--client-address-header", "X-Forwarded-For"],
        );
        let caddy = Caddy::start(server.addr, &dir);
        for (via, addr) in [("caddy", caddy.addr), ("direct", server.addr)] {
            let seen = statuses(addr, &format!("{kind}-{via}"), header_for);
            let accepted = seen.iter().filter(|status| **status == 204).count();
            assert!(
                accepted <= LIMIT && seen.last() == Some(&429),
                "{kind} header {via}: {seen:?}"
            );
        }
    }
}

#[test]
fn a_flood_over_a_block_s_addresses_stops_at_the_block_s_limit() {
    let dir = scratch_dir("limit-block");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let limit = LIMIT.to_string();
    let server = Rollback::start_with_args(
        &store,
        &dir,
        &[("ABUSE_LIMIT_PER_MINUTE", limit.as_str())],
        &["--client-address-header", "X-Forwarded-For"],
    );
    let block_limit = LIMIT * usize::try_from(telemetry_core::abuse::PREFIX_LIMIT_FACTOR).unwrap();
    // A new /64 of one /48 for every ping, and a new address of one /24: each a client of
    // its own, all one block.
    let floods: [(&str, HeaderFor); 2] = [
        ("ipv6", |n| Some(format!("2001:db8:77:{n:x}::1"))),
        ("ipv4", |n| Some(format!("198.51.100.{n}"))),
    ];
    for (kind, header_for) in floods {
        let seen: Vec<u16> = (0..block_limit + 20)
            .map(|n| {
                let request = ping_request(&format!("block-{kind}-{n:03}"))
                    .header("x-forwarded-for", &header_for(n).unwrap());
                send(server.addr, &request).unwrap().status
            })
            .collect();
        let accepted = seen.iter().filter(|status| **status == 204).count();
        assert_eq!(accepted, block_limit, "{kind}: {seen:?}");
        assert!(
            seen.iter().skip(block_limit).all(|status| *status == 429),
            "{kind}: {seen:?}"
        );
    }
    // Another block is not held back by them.
    let elsewhere = ping_request("block-elsewhere-001").header("x-forwarded-for", "2001:db8:78::1");
    assert_eq!(send(server.addr, &elsewhere).unwrap().status, 204);
}

#[test]
fn guessing_a_token_is_limited_as_pinging_is_and_the_right_one_then_waits_too() {
    let dir = scratch_dir("limit-tokens");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let read_token = "limit-tokens-read-token-0123456789abcdef";
    let server = Rollback::start(
        &store,
        &dir,
        &[
            ("ABUSE_LIMIT_PER_MINUTE", "5"),
            ("WAU_READ_TOKEN", read_token),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    let week = contract_suite::current_iso_week();
    // 3,000 guesses, as the review sent: five 401s, then only 429s.
    let guesses: Vec<u16> = (0..3_000)
        .map(|n| {
            let guess = readout_request(&week, &format!("a-guess-{n:04}-0123456789abcdef0123"));
            send(server.addr, &guess).unwrap().status
        })
        .collect();
    assert_eq!(guesses[..5], [401; 5], "{:?}", &guesses[..10]);
    assert!(guesses[5..].iter().all(|status| *status == 429));
    // The right token from the guessing client waits like a guess; from elsewhere it reads.
    let right = readout_request(&week, read_token);
    assert_eq!(send(server.addr, &right).unwrap().status, 429);
    let operator = "127.0.1.9".parse().unwrap();
    assert_eq!(
        send_from(operator, server.addr, &right).unwrap().status,
        200
    );
    // Deletion takes the admin token, never the read token.
    let delete = |token: &str| {
        RawRequest::new("DELETE", "/v1/session/limit-token-relay-1")
            .header("authorization", &format!("Bearer {token}"))
    };
    assert_eq!(
        send_from(operator, server.addr, &delete(read_token))
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        send_from(operator, server.addr, &delete(ADMIN_TOKEN))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn erasures_count_against_the_limit_as_pings_do() {
    let dir = scratch_dir("limit-erasures");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let limit = LIMIT.to_string();
    let server = Rollback::start(&store, &dir, &[("ABUSE_LIMIT_PER_MINUTE", limit.as_str())]);
    let statuses: Vec<u16> = (0..LIMIT + 2)
        .map(|n| {
            let erasure = RawRequest::new("POST", "/v1/erase")
                .header("content-type", "application/json")
                .body(format!(r#"{{"session_id":"tried-id-{n:04}"}}"#).into_bytes());
            send(server.addr, &erasure).unwrap().status
        })
        .collect();
    assert_eq!(statuses[..LIMIT], [204; LIMIT], "{statuses:?}");
    assert!(
        statuses[LIMIT..].iter().all(|status| *status == 429),
        "{statuses:?}"
    );
    // The same client's pings share that limit.
    assert_eq!(
        send(server.addr, &ping_request("limit-erasures-relay"))
            .unwrap()
            .status,
        429
    );
}
