//! Criterion benchmarks of the core's hot paths: a typical ping decided, a refused ping,
//! the ISO week of an instant, and the read-token check. Run: `cargo bench -p telemetry-core`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use telemetry_core::{
    AbuseLimiter, IsoWeek, RequestHead, Token, decide_ping, utc_from_unix_millis,
};

/// About 150 bytes, as a relay sends it.
const TYPICAL_PING: &[u8] = br#"{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"q1w2e3r4t5y6u7i8o9p0","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}"#;

const UNKNOWN_FIELD_PING: &[u8] = br#"{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"q1w2e3r4t5y6u7i8o9p0","platform":"linux","node_version":"v20.11.1","primary_framework":"react","user_email":"a@b.c"}"#;

fn head() -> RequestHead<'static> {
    RequestHead {
        method: "POST",
        path: "/v1/session",
        content_type: Some("application/json"),
        content_length: Some("165"),
        authorization: None,
        client: Some("203.0.113.7"),
        query: None,
        accept: None,
    }
}

fn benches(c: &mut Criterion) {
    let now = utc_from_unix_millis(1_795_000_000_000);
    let head = RequestHead {
        content_length: None,
        ..head()
    };
    // A limit that is never reached, so the limiter's bookkeeping is in the measurement.
    let mut limiter = AbuseLimiter::new(u32::MAX);
    c.bench_function("decide typical ping (accepted)", |b| {
        b.iter(|| decide_ping(&head, black_box(TYPICAL_PING), now, &mut limiter).unwrap())
    });
    c.bench_function("decide ping with an unknown field (400)", |b| {
        b.iter(|| decide_ping(&head, black_box(UNKNOWN_FIELD_PING), now, &mut limiter).unwrap_err())
    });
    c.bench_function("ISO week of an instant", |b| {
        b.iter(|| IsoWeek::containing(black_box(now)))
    });
    let token = Token::from_configured(Some("a-long-operator-token-0123456789abcdef"))
        .unwrap()
        .unwrap();
    c.bench_function("read token check (wrong token)", |b| {
        b.iter(|| token.admits(black_box(Some("Bearer not-the-token"))))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
