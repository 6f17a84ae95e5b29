//! The whole request decision on an arbitrary head and body: it never panics, an accepted
//! ping is a well-formed record of at most the cap, and every refusal is a 4xx or 5xx whose
//! body is the fixed error shape.
//!
//! Input: `METHOD PATH\nname: value\n…\n\nBODY` (the seeds are the contract suite's cases).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_core::limits::MAX_BODY_BYTES;
use telemetry_core::{
    AbuseLimiter, CappedBody, Next, ReadToken, RequestHead, StoredRecord, decide_ping, route,
    utc_from_unix_millis,
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
        path,
        content_type: header("content-type"),
        content_length: header("content-length"),
        authorization: header("authorization"),
        client: header("x-client"),
    };
    let token = ReadToken::from_configured(Some("fuzz-token"));
    let (_, next) = route(&head, token.as_ref());
    let response = match next {
        Next::Respond(response) => response,
        Next::CountWeek(_) => return,
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
