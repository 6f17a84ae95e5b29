//! Privacy checks for what only a target's own test can see: its stored records and its log.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;

use crate::{Run, ping_request, send_from};

/// The loopback address that address-bearing pings are sent from: no server or proxy has a
/// reason of its own (a listen or upstream address) to write it anywhere.
pub const CLIENT_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Client addresses as proxies and platforms pass them on, from the ranges kept for
/// documentation (RFC 5737, RFC 3849), so that a hit is always one of ours.
pub const FORWARDED_ADDRESSES: [&str; 5] = [
    "203.0.113.7",
    "198.51.100.23",
    "192.0.2.44",
    "2001:db8::7",
    "2001:db8:cafe::17",
];

/// Sends valid pings (new sessions `<tag>-addr<n>`) from [`CLIENT_PEER`] that carry the
/// [`FORWARDED_ADDRESSES`] in every header that may hold a client's address. Returns the
/// session ids answered 204, and a problem for each ping that was not.
pub fn send_address_bearing_pings(addr: SocketAddr, tag: &str) -> (Vec<String>, Vec<String>) {
    let [v4_a, v4_b, v4_c, v6_a, v6_b] = FORWARDED_ADDRESSES;
    let forwarded = format!("for={v4_c};proto=https, for=\"[{v6_b}]:4711\"");
    let header_sets: [&[(&str, &str)]; 5] = [
        &[("x-forwarded-for", &format!("{v4_a}, {v4_b}"))],
        &[("x-forwarded-for", v6_a)],
        &[("forwarded", &forwarded)],
        &[("x-real-ip", v4_b), ("true-client-ip", v4_a)],
        &[("cf-connecting-ip", v6_b), ("x-forwarded-for", v4_c)],
    ];
    let (mut accepted, mut problems) = (Vec::new(), Vec::new());
    for (n, headers) in header_sets.iter().enumerate() {
        let id = format!("{tag}-addr{n}");
        let request = headers
            .iter()
            .fold(ping_request(&id), |request, (name, value)| {
                request.header(name, value)
            });
        match send_from(CLIENT_PEER, addr, &request) {
            Ok(response) if response.status == 204 => accepted.push(id),
            Ok(response) => problems.push(format!(
                "address-bearing ping {n}: {} {}",
                response.status,
                response.text()
            )),
            Err(error) => problems.push(format!("address-bearing ping {n}: {error}")),
        }
    }
    (accepted, problems)
}

/// Problems with captured output (a server's log, a proxy's, a tool's): any line that holds
/// [`CLIENT_PEER`] or one of the [`FORWARDED_ADDRESSES`], in any spelling.
pub fn address_problems(output: &str) -> Vec<String> {
    let peer = CLIENT_PEER.to_string();
    let mut needles: Vec<String> = FORWARDED_ADDRESSES
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    needles.push(peer);
    // IPv6 may be written expanded, or in capitals.
    needles.extend(["2001:0db8".to_owned(), "2001:db8:".to_owned()]);
    let mut problems = Vec::new();
    for line in output.lines() {
        let lower = line.to_ascii_lowercase();
        if let Some(needle) = needles.iter().find(|n| lower.contains(n.as_str())) {
            problems.push(format!("a client address ({needle}) in: {line}"));
        }
    }
    problems
}

/// Whether `text` holds something shaped like an IPv4 address (four dot-separated numbers
/// of one to three digits) or an IPv6 one (hex groups around `::`, or eight groups).
pub fn holds_an_address(text: &str) -> bool {
    let is_v4 = |piece: &str| {
        let parts: Vec<&str> = piece.split('.').collect();
        parts.len() == 4
            && parts
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let is_v6 = |token: &str| {
        token.bytes().any(|b| b.is_ascii_hexdigit())
            && (token.contains("::") || token.matches(':').count() == 7)
    };
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .any(|token| {
            token.split(':').any(|piece| is_v4(piece.trim_matches('.')))
                || is_v6(token.trim_matches('.'))
        })
}

/// A stored record's fields, sorted: the five non-key fields of a ping and the server's time.
pub const RECORD_FIELDS: [&str; 6] = [
    "daemon_version",
    "first_seen_at",
    "node_version",
    "platform",
    "primary_framework",
    "protocol_version",
];

/// Fields a wide event may have.
const EVENT_FIELDS: [&str; 13] = [
    "event",
    "target",
    "route",
    "method",
    "status",
    "outcome",
    "body_bytes",
    "duration_ms",
    "week",
    "colo",
    "limited_by",
    "operation",
    "error",
];

/// Problems with one stored record: any field beyond [`RECORD_FIELDS`], or a `first_seen_at`
/// finer than a day (it must be the start of a UTC day).
pub fn record_problems(record: &Value) -> Vec<String> {
    let Some(object) = record.as_object() else {
        return vec![format!("record is not an object: {record}")];
    };
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    let mut problems = Vec::new();
    if fields != RECORD_FIELDS {
        problems.push(format!(
            "record fields {fields:?}, expected {RECORD_FIELDS:?}"
        ));
    }
    let seen = object
        .get("first_seen_at")
        .and_then(Value::as_str)
        .unwrap_or("");
    let is_day = seen.len() == 20
        && seen.ends_with("T00:00:00Z")
        && seen.get(..10).is_some_and(|date| {
            date.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
        });
    if !is_day {
        problems.push(format!(
            "first_seen_at {seen:?} is not the start of a UTC day"
        ));
    }
    problems
}

/// Problems with a stored expiry (seconds since the epoch) of a record written between
/// `written_from` and now with a TTL of `ttl` (a day or more): it must be the start of a UTC
/// day, no later than the TTL allows and at most a day sooner, so that it says nothing finer
/// than the day of the write.
pub fn expiry_problems(expires_at: i64, written_from: i64, ttl: i64) -> Vec<String> {
    const DAY: i64 = 86_400;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let mut problems = Vec::new();
    if expires_at % DAY != 0 {
        problems.push(format!("expiry {expires_at} is not the start of a UTC day"));
    }
    if expires_at > now + ttl || expires_at <= written_from + ttl - DAY {
        problems.push(format!(
            "expiry {expires_at} is not within the day before the TTL runs out"
        ));
    }
    problems
}

/// Problems with a target's log during `run`: wide events must be one JSON object per line
/// with only the known fields, one per request at least, and nothing sent may appear in the
/// log: no session id, token, body, or client address.
pub fn log_problems(log: &str, run: &Run, token: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut requests = 0;
    for line in log.lines().filter(|line| line.starts_with("{\"event\":")) {
        let Ok(Value::Object(event)) = serde_json::from_str::<Value>(line) else {
            problems.push(format!("a wide event that is not one JSON object: {line}"));
            continue;
        };
        if event.get("event").and_then(Value::as_str) == Some("request") {
            requests += 1;
        }
        for field in event.keys() {
            if !EVENT_FIELDS.contains(&field.as_str()) {
                problems.push(format!("unexpected wide event field {field}"));
            }
        }
        if holds_an_address(line) {
            problems.push(format!("a wide event holds an address: {line}"));
        }
    }
    if requests < run.cases {
        problems.push(format!(
            "{requests} request events for {} requests",
            run.cases
        ));
    }
    for id in run.accepted.iter().chain(&run.refused) {
        if log.contains(id.as_str()) {
            problems.push(format!("the log holds session id {id}"));
        }
    }
    if log.contains(token) {
        problems.push("the log holds the read token".into());
    }
    if log.contains(crate::ADMIN_TOKEN) {
        problems.push("the log holds the admin token".into());
    }
    if run
        .sent
        .iter()
        .filter(|body| body.len() >= 16)
        .any(|body| log.contains(String::from_utf8_lossy(body).as_ref()))
    {
        problems.push("the log holds a request body".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_any_form_and_versions_are_not_addresses() {
        for text in [
            r#"{"client":"127.0.0.1"}"#,
            "from 203.0.113.7:4711",
            "for=\"[2001:db8:cafe::17]:4711\"",
            "x 2001:0db8:0000:0000:0000:0000:0000:0007 y",
            "::1",
            "peer ::ffff:192.0.2.44",
        ] {
            assert!(holds_an_address(text), "{text}");
        }
        for text in [
            r#"{"event":"request","status":204,"duration_ms":0,"week":"2026-W48","colo":"AMS"}"#,
            "daemon 1.2.3 node v20.11.1 at 12:34:56",
            "1.2.3-beta.4",
            "deadbeef",
        ] {
            assert!(!holds_an_address(text), "{text}");
        }
        assert_eq!(address_problems("fine\nGot 198.51.100.23\n").len(), 1);
        assert_eq!(address_problems("X 2001:DB8::7").len(), 1);
        assert!(address_problems("listening on 127.0.0.1:8787").is_empty());
    }
}
