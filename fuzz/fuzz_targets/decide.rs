//! The whole request decision on an arbitrary head and body: it never panics, an accepted
//! ping is a well-formed record of at most the cap, and every refusal is a 4xx or 5xx whose
//! body is the fixed error shape.
//!
//! Input: `METHOD PATH\nname: value\n…\n\nBODY` (the seeds are the contract suite's cases).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_core::limits::MAX_BODY_BYTES;
use telemetry_core::{
    AbuseLimiter, Breakdown, CappedBody, Next, Readout, RequestHead, StoredRecord, Token, Tokens,
    decide_erasure, decide_ping, erased_response, path_of_url, query_of_url, route,
    utc_from_unix_millis, weekly_active_response,
};

fuzz_target!(|input: &[u8]| {
    let split = input.windows(2).position(|w| w == b"\n\n");
    let (head_bytes, body) = match split {
        Some(at) => (&input[..at], &input[at + 2..]),
        None => (input, &[][..]),
    };
    let head_text = String::from_utf8_lossy(head_bytes);
    let mut lines = head_text.lines();
    let request_line = lines.next().unwrap_or_default();
    let (method, path) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    let headers: Vec<(String, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let head = RequestHead {
        method,
        path: path_of_url(path),
        content_type: header("content-type"),
        content_length: header("content-length"),
        authorization: header("authorization"),
        client: header("x-client"),
        query: query_of_url(path),
        accept: header("accept"),
    };
    let token = |secret| Token::from_configured(Some(secret)).ok().flatten();
    let tokens = Tokens {
        read: token("fuzz-read-token-of-thirty-two-characters"),
        admin: token("fuzz-admin-token-of-thirty-two-characters"),
    };
    let public = head.path.len() % 2 == 0;
    let (_, next) = route(&head, &tokens, public, &mut AbuseLimiter::new(3), 0);
    let response = match next {
        Next::Respond(response) => response,
        // Only a well-formed session id reaches a store's deletion.
        Next::Forget(session_id) => {
            assert!(telemetry_core::SessionId::parse(session_id.as_str()).is_some());
            telemetry_core::forgotten_response(u64::try_from(body.len()).unwrap_or(0))
        }
        Next::Readout(readout) => {
            // Any store answer renders, and a breakdown always adds up to its count.
            let sessions = u64::try_from(body.len()).unwrap_or(0);
            let response = match readout {
                Readout::Week {
                    week,
                    by: None,
                    format,
                    ..
                } => weekly_active_response(week, sessions, false, format),
                Readout::Week {
                    week,
                    by: Some(by),
                    format,
                    public,
                } => {
                    let mut tally = telemetry_core::readout::Tally::default();
                    for byte in body {
                        tally.add(&format!("v{}", byte % 7), u64::from(*byte));
                    }
                    if public {
                        // A public view names published values only: here, none.
                        let published = telemetry_core::PublishedValues::default();
                        tally = published.shown(by, tally);
                        let fixed_list = matches!(
                            by,
                            telemetry_core::Dimension::Platform
                                | telemetry_core::Dimension::PrimaryFramework
                        );
                        assert!(fixed_list || tally.iter().all(|(value, _)| value == "other"));
                    }
                    let breakdown = Breakdown::new(week, by, tally, 5);
                    let shown: u64 = breakdown.counts.iter().map(|(_, n)| n).sum();
                    assert_eq!(
                        shown + breakdown.withheld_sessions,
                        breakdown.weekly_active_sessions
                    );
                    assert!(breakdown.counts.iter().all(|(_, count)| *count >= 5));
                    assert!(breakdown.counts.windows(2).all(|pair| {
                        by.order(&pair[0].0, &pair[1].0) == std::cmp::Ordering::Less
                    }));
                    breakdown.into_response(format)
                }
                Readout::Series { ref weeks, by, .. } => {
                    let max = telemetry_core::readout::MAX_SERIES_WEEKS;
                    assert!((1..=max).contains(&weeks.len()));
                    assert!(weeks.windows(2).all(|pair| pair[0].next() == Some(pair[1])));
                    let mut tally = telemetry_core::readout::Tally::default();
                    tally.add(by.map_or("linux", |_| "1.0.0"), sessions);
                    let config = telemetry_core::Config::from_lookup(|_| None).unwrap();
                    let now = i64::from(body.first().copied().unwrap_or(0)) << 24;
                    let fetched = vec![tally; weeks.len()];
                    readout.answer(fetched, &config, now)
                }
            };
            assert_eq!(response.status, 200);
            return;
        }
        Next::CheckStore => telemetry_core::ready_response(),
        Next::ReadErasure => {
            let mut capped = CappedBody::new();
            if let Err(too_large) = capped.push(body) {
                assert_eq!(too_large.into_response().status, 413);
                return;
            }
            let now = utc_from_unix_millis(1_795_000_000_000);
            match decide_erasure(&head, capped.as_bytes(), now, &mut AbuseLimiter::new(3)) {
                // Only a well-formed session id reaches a store's deletion.
                Ok(session_id) => {
                    assert!(telemetry_core::SessionId::parse(session_id.as_str()).is_some());
                    erased_response()
                }
                Err(rejection) => rejection.into_response(),
            }
        }
        Next::ReadPing => {
            // As both adapters do: the body is read under the cap, then decided.
            let mut capped = CappedBody::new();
            if let Err(too_large) = capped.push(body) {
                assert!(body.len() > MAX_BODY_BYTES);
                assert_eq!(too_large.into_response().status, 413);
                return;
            }
            let now = utc_from_unix_millis(1_795_000_000_000);
            let mut limiter = AbuseLimiter::new(3);
            match decide_ping(&head, capped.as_bytes(), now, &mut limiter) {
                Ok(write) => {
                    assert!(body.len() <= MAX_BODY_BYTES, "accepted past the cap");
                    let record: StoredRecord = serde_json::from_str(&write.record_json)
                        .expect("an accepted ping's record is a record");
                    assert!(record.first_seen_at.ends_with("T00:00:00Z"));
                    // Versions are canonical: one version is written one way.
                    for version in [
                        record.protocol_version.as_str(),
                        record.daemon_version.as_str(),
                        record.node_version.trim_start_matches('v'),
                    ] {
                        assert!(is_canonical(version), "accepted {version:?}");
                    }
                    assert!(write.key().starts_with("session:2026-W"));
                    return;
                }
                Err(rejection) => rejection.into_response(),
            }
        }
    };
    assert!(response.status >= 200 && response.status < 600);
    if response.status >= 400 {
        let body: serde_json::Value =
            serde_json::from_str(&response.body).expect("an error body is JSON");
        let fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
        assert_eq!(fields, ["error", "message"]);
    }
});

/// A canonical semantic version, checked independently of the core: three dot-separated
/// numbers of at most 9 digits, no leading zeros, then a pre-release whose numeric
/// identifiers have none either.
fn is_canonical(version: &str) -> bool {
    let (release, pre) = version
        .split_once('-')
        .map_or((version, None), |(r, p)| (r, Some(p)));
    let number = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'))
    };
    let parts: Vec<&str> = release.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| number(part) && part.len() <= 9)
        && pre.is_none_or(|pre| {
            pre.split('.').all(|id| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && (!id.bytes().all(|b| b.is_ascii_digit()) || number(id))
            })
        })
}
