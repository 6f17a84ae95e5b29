//! `openapi.yaml`, the published contract, against the protocol core: the ping's schema states
//! every rule the core enforces (fields, lengths, enums, and patterns that accept exactly
//! what the core accepts, probe by probe), and every status the core decides on a route is
//! documented there.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use regex::bytes::RegexBuilder;
use serde_json::Value;
use telemetry_core::limits::{MAX_VERSION_CHARS, SESSION_ID_CHARS};
use telemetry_core::ping::{FIELDS, Framework, Platform};
use telemetry_core::{
    AbuseLimiter, Breakdown, Dimension, Format, IsoWeek, Next, Rejection, RequestHead, Token,
    Tokens, decide_erasure, decide_ping, erased_response, forgotten_response, parse_ping, route,
    series_response, utc_from_unix_millis, weekly_active_response,
};

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml at the repository root");
    serde_norway::from_str(&text).expect("openapi.yaml is YAML")
}

fn ping_schema() -> Value {
    document()["components"]["schemas"]["Ping"].clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The document's example ping with `field` set to `value`, as the core judges it.
fn core_accepts(field: &str, value: &str) -> bool {
    let mut ping = ping_schema()["examples"][0].clone();
    ping[field] = Value::from(value);
    let body = serde_json::to_vec(&ping).unwrap();
    match parse_ping(&body) {
        Ok(_) => true,
        Err(Rejection::InvalidValue { field: refused, .. }) if refused == field => false,
        Err(other) => panic!("{field}={value:?}: unexpected {other:?}"),
    }
}

#[test]
fn the_ping_schema_states_the_cores_fields_lengths_and_enums() {
    let ping = ping_schema();
    assert_eq!(ping["type"], "object");
    assert_eq!(
        ping["additionalProperties"], false,
        "unknown fields are refused"
    );
    assert_eq!(
        strings(&ping["required"]),
        FIELDS,
        "every field is required"
    );
    let documented: BTreeSet<&str> = ping["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented, BTreeSet::from(FIELDS));
    let property = |name: &str| &ping["properties"][name];
    for field in ["protocol_version", "daemon_version", "node_version"] {
        assert_eq!(property(field)["maxLength"], MAX_VERSION_CHARS, "{field}");
    }
    assert_eq!(
        property("session_id")["minLength"],
        *SESSION_ID_CHARS.start()
    );
    assert_eq!(property("session_id")["maxLength"], *SESSION_ID_CHARS.end());
    let platforms: Vec<&str> = Platform::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(strings(&property("platform")["enum"]), platforms);
    let frameworks: Vec<&str> = Framework::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(strings(&property("primary_framework")["enum"]), frameworks);
    for field in FIELDS {
        assert_eq!(property(field)["type"], "string", "{field}");
    }
    // The example is a ping the core accepts; a value just outside an enum is refused.
    let example = serde_json::to_vec(&ping["examples"][0]).unwrap();
    assert!(parse_ping(&example).is_ok());
    assert!(!core_accepts("platform", "Linux") && !core_accepts("primary_framework", "angular"));
}

#[test]
fn each_pattern_accepts_exactly_what_the_core_accepts() {
    let ping = ping_schema();
    let long = |n: usize| "a".repeat(n);
    let version_of = |n: usize| format!("1.0.0-{}", "b".repeat(n - 6));
    let probes: Vec<String> = [
        "1.0.0",
        "0.0.0",
        "10.20.300",
        "01.2.3",
        "1.00.0",
        "1.0.00",
        "999999999.0.0",
        "1000000000.0.0",
        "000000000000000000000000000000000000000000000000000000001.0.0",
        "1.0.0-0",
        "1.0.0-01",
        "1.0.0-rc.01",
        "1.0.0-rc.10",
        "1.0.0-0a",
        "1.0.0-a..b",
        "1.0.0-.a",
        "1.0.0-a.",
        "v01.0.0",
        "1.0.0-beta.1",
        "1.0.0-rc-1",
        "1.0.0--",
        "1.0.0-",
        "1.0.0+build.5",
        "1.0",
        "1.0.0.0",
        "1..0",
        "v1.0.0",
        "V1.0.0",
        "vv1.0.0",
        "v1.0",
        " 1.0.0",
        "1.0.0 ",
        "1.0.0\n",
        "\u{ff11}.0.0",
        "1.0.0-b\u{e9}ta",
        "",
        "abcdefgh",
        "abc_DEF-9",
        "abc def gh",
        "abc.defgh",
        "abcdefg",
        "session/id",
        "\u{1f642}\u{1f642}\u{1f642}\u{1f642}\u{1f642}\u{1f642}\u{1f642}\u{1f642}",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .chain([long(63), long(64), long(65), version_of(64), version_of(65)])
    .collect();
    for field in [
        "protocol_version",
        "daemon_version",
        "session_id",
        "node_version",
    ] {
        let schema = &ping["properties"][field];
        // JSON Schema patterns are ECMA-262: `\d` is ASCII only, as in the core.
        let pattern = RegexBuilder::new(schema["pattern"].as_str().unwrap())
            .unicode(false)
            .build()
            .unwrap();
        let min = schema["minLength"].as_u64().unwrap_or(0);
        let max = schema["maxLength"].as_u64().unwrap();
        for probe in &probes {
            let chars = u64::try_from(probe.chars().count()).unwrap();
            let document_accepts =
                pattern.is_match(probe.as_bytes()) && (min..=max).contains(&chars);
            assert_eq!(
                document_accepts,
                core_accepts(field, probe),
                "{field} = {probe:?}: openapi.yaml says {document_accepts}"
            );
        }
    }
}

/// The statuses documented for `method` on `path`.
fn documented_statuses(document: &Value, path: &str, method: &str) -> BTreeSet<u16> {
    document["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("openapi.yaml has no {method} {path}"))
        .keys()
        .map(|status| status.parse().unwrap())
        .collect()
}

/// What the core answers from a request's head alone, or `None` when it goes on to a body or
/// a count.
fn decided_from_head(head: &RequestHead<'_>, tokens: &Tokens) -> Option<u16> {
    // A limit of one: a client's second wrong token is a 429.
    let mut limiter = AbuseLimiter::new(1);
    let _ = route(head, tokens, false, &mut limiter, 0);
    match route(head, tokens, false, &mut limiter, 0).1 {
        Next::Respond(response) => Some(response.status),
        Next::ReadPing
        | Next::ReadErasure
        | Next::Readout(_)
        | Next::Forget(_)
        | Next::CheckStore => None,
    }
}

const READ_TOKEN: &str = "read-token-of-at-least-thirty-two-characters";
const ADMIN_TOKEN: &str = "admin-token-of-at-least-thirty-two-characters";

/// Both tokens configured, or neither.
fn tokens(configured: bool) -> Tokens {
    let token = |secret| configured.then(|| Token::from_configured(Some(secret)).unwrap().unwrap());
    Tokens {
        read: token(READ_TOKEN),
        admin: token(ADMIN_TOKEN),
    }
}

#[test]
fn every_status_the_core_decides_on_a_route_is_documented() {
    let document = document();
    let token = &tokens(true);
    let head = |method: &'static str, path: &'static str| RequestHead {
        method,
        path,
        content_type: Some("application/json"),
        ..RequestHead::default()
    };
    let mut session = BTreeSet::new();
    session.extend(decided_from_head(
        &RequestHead {
            content_type: Some("text/plain"),
            ..head("POST", "/v1/session")
        },
        token,
    ));
    for length in ["5000", "many"] {
        session.extend(decided_from_head(
            &RequestHead {
                content_length: Some(length),
                ..head("POST", "/v1/session")
            },
            token,
        ));
    }
    let now = utc_from_unix_millis(1_795_000_000_000);
    let mut limiter = AbuseLimiter::new(1);
    let client = RequestHead {
        client: Some("192.0.2.1"),
        ..head("POST", "/v1/session")
    };
    let example = serde_json::to_vec(&ping_schema()["examples"][0]).unwrap();
    for body in [&example[..], &example[..], b"{}", b"", b"[1]"] {
        session.insert(match decide_ping(&client, body, now, &mut limiter) {
            Ok(_) => 204,
            Err(rejection) => rejection.status(),
        });
    }
    // What only an adapter can meet: a late body, a full queue, a store or setting failing.
    for rejection in [
        Rejection::BodyTimeout,
        Rejection::QueueFull {
            retry_after_seconds: 5,
        },
        Rejection::StoreUnavailable,
        Rejection::Internal,
    ] {
        session.insert(rejection.status());
    }
    assert_eq!(
        session,
        BTreeSet::from([204, 400, 408, 413, 415, 429, 500, 503])
    );
    assert!(session.is_subset(&documented_statuses(&document, "/v1/session", "post")));

    let mut erase = BTreeSet::from([erased_response().status]);
    for refused in [
        RequestHead {
            content_type: Some("text/plain"),
            ..head("POST", "/v1/erase")
        },
        RequestHead {
            content_length: Some("5000"),
            ..head("POST", "/v1/erase")
        },
    ] {
        erase.extend(decided_from_head(&refused, token));
    }
    let mut limiter = AbuseLimiter::new(1);
    let client = RequestHead {
        client: Some("192.0.2.1"),
        ..head("POST", "/v1/erase")
    };
    let erasure = br#"{"session_id":"relay-install-01"}"#;
    for body in [&erasure[..], &erasure[..], b"{}", br#"{"session_id":"x"}"#] {
        erase.insert(match decide_erasure(&client, body, now, &mut limiter) {
            Ok(_) => erased_response().status,
            Err(rejection) => rejection.status(),
        });
    }
    for rejection in [
        Rejection::BodyTimeout,
        Rejection::StoreUnavailable,
        Rejection::Internal,
    ] {
        erase.insert(rejection.status());
    }
    assert_eq!(
        erase,
        BTreeSet::from([204, 400, 408, 413, 415, 429, 500, 503])
    );
    assert!(erase.is_subset(&documented_statuses(&document, "/v1/erase", "post")));

    let week = IsoWeek::parse("2026-W48").unwrap();
    let mut answers = BTreeSet::from([
        weekly_active_response(week, 3, false, Format::Csv).status,
        Breakdown::new(week, Dimension::Platform, Default::default(), 5)
            .into_response(Format::Json)
            .status,
        Rejection::StoreUnavailable.status(),
        Rejection::Internal.status(),
    ]);
    answers.extend(readout_statuses(
        &["/v1/wau/2026-W48", "/v1/wau/2025-W53", "/v1/wau/x"],
        &[None, Some("by=platform"), Some("by=x")],
    ));
    assert_eq!(answers, BTreeSet::from([200, 400, 401, 404, 429, 500, 503]));
    assert!(answers.is_subset(&documented_statuses(&document, "/v1/wau/{week}", "get")));

    let mut series = BTreeSet::from([
        series_response(&[week], &[3], &[false], Format::Json).status,
        Rejection::StoreUnavailable.status(),
        Rejection::Internal.status(),
    ]);
    series.extend(readout_statuses(
        &["/v1/wau"],
        &[
            Some("from=2026-W40&to=2026-W48"),
            Some("from=2026-W48&to=2026-W40"),
            Some("from=x&to=y"),
            None,
        ],
    ));
    assert_eq!(series, BTreeSet::from([200, 400, 401, 404, 429, 500, 503]));
    assert!(series.is_subset(&documented_statuses(&document, "/v1/wau", "get")));
    let mut forget = BTreeSet::from([
        forgotten_response(1).status,
        Rejection::StoreUnavailable.status(),
        Rejection::Internal.status(),
    ]);
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let none = &tokens(false);
    for (path, authorization, token, client) in [
        (
            "/v1/session/relay-install-01",
            Some(admin.as_str()),
            token,
            None,
        ),
        ("/v1/session/bad!", Some(&admin), token, None),
        ("/v1/session/relay-install-01", None, token, None),
        (
            "/v1/session/relay-install-01",
            None,
            token,
            Some("192.0.2.1"),
        ),
        ("/v1/session/relay-install-01", Some(&admin), none, None),
    ] {
        let asked = RequestHead {
            authorization,
            client,
            ..head("DELETE", path)
        };
        forget.extend(decided_from_head(&asked, token));
    }
    assert_eq!(forget, BTreeSet::from([200, 400, 401, 404, 429, 500, 503]));
    let documented = documented_statuses(&document, "/v1/session/{session_id}", "delete");
    assert!(forget.is_subset(&documented));
    let health = decided_from_head(&head("GET", "/healthz"), none).unwrap();
    assert!(documented_statuses(&document, "/healthz", "get").contains(&health));
}

/// What the core decides from the head for a `GET` of each path and query, with the right
/// token, a wrong one, none (from an address: a second guess is over the limit), and no
/// token configured.
fn readout_statuses(paths: &[&str], queries: &[Option<&str>]) -> BTreeSet<u16> {
    let (configured, unconfigured) = (tokens(true), tokens(false));
    let right = format!("Bearer {READ_TOKEN}");
    let mut statuses = BTreeSet::new();
    for (authorization, token, client) in [
        (Some(right.as_str()), &configured, None),
        (Some("Bearer wrong"), &configured, None),
        (None, &configured, None),
        (None, &configured, Some("192.0.2.1")),
        (Some(&right), &unconfigured, None),
    ] {
        for &path in paths {
            for &query in queries {
                let asked = RequestHead {
                    method: "GET",
                    path,
                    authorization,
                    query,
                    client,
                    ..RequestHead::default()
                };
                statuses.extend(decided_from_head(&asked, token));
            }
        }
    }
    statuses
}

/// Each path documents exactly the one method the core serves there: the one its 405 names
/// in `Allow` (schemathesis sends the others and checks that header).
#[test]
fn each_path_documents_the_method_its_405_allows() {
    let document = document();
    let token = tokens(true);
    for (template, path) in [
        ("/v1/session", "/v1/session"),
        ("/v1/erase", "/v1/erase"),
        ("/v1/wau/{week}", "/v1/wau/2026-W48"),
        ("/v1/wau", "/v1/wau"),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
    ] {
        let methods: Vec<String> = document["paths"][template]
            .as_object()
            .unwrap()
            .keys()
            .filter(|key| *key != "parameters")
            .map(|method| method.to_ascii_uppercase())
            .collect();
        let head = RequestHead {
            method: "PUT",
            path,
            ..RequestHead::default()
        };
        let Next::Respond(refused) = route(&head, &token, false, &mut AbuseLimiter::new(0), 0).1
        else {
            panic!("PUT {path} was not refused from its head");
        };
        assert_eq!(refused.status, 405, "PUT {path}");
        assert_eq!(methods, [refused.header("allow").unwrap()], "{template}");
    }
}
