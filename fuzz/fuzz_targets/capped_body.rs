//! The streaming cap under arbitrary chunkings agrees with a plain length check: a body is
//! refused exactly when it is longer than the cap, however it arrives, and kept whole when not.
//!
//! Input: one byte `n`, then `n` bytes of cut points, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_core::CappedBody;
use telemetry_core::limits::MAX_BODY_BYTES;

fuzz_target!(|input: &[u8]| {
    let Some((&cuts, rest)) = input.split_first() else {
        return;
    };
    let cuts = usize::from(cuts % 16).min(rest.len());
    let (cut_bytes, body) = rest.split_at(cuts);
    let mut cut_points: Vec<usize> = cut_bytes
        .iter()
        .map(|b| usize::from(*b) * body.len() / 256)
        .collect();
    cut_points.sort_unstable();
    let mut capped = CappedBody::new();
    let mut start = 0;
    let mut refused = false;
    for end in cut_points.into_iter().chain([body.len()]) {
        if capped.push(&body[start..end]).is_err() {
            refused = true;
            break;
        }
        start = end;
    }
    assert_eq!(refused, body.len() > MAX_BODY_BYTES, "{} bytes", body.len());
    if !refused {
        assert_eq!(capped.as_bytes(), body);
    }
});
