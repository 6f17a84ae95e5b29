//! The abuse limit cannot be escaped by choosing one's own key: behind Caddy and straight to
//! the rollback, a client that sends no client-address header, an empty one, garbage, or a
//! new value on every ping is limited all the same, and by one bucket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use contract_suite::{ping_request, send};
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
