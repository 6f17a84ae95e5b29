//! Writes the fuzzers' seed corpus (`fuzz/seeds/<target>/`) from the contract suite's cases,
//! so that fuzzing starts from every request the contract names. Run it again when the
//! table changes: `cargo run -p contract-suite --example fuzz_seeds`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use contract_suite::{Framing, contract_cases};

/// The fuzz target `decide` reads `METHOD PATH\nname: value\n…\n\nBODY`.
fn decide_input(request: &contract_suite::RawRequest) -> Vec<u8> {
    let mut head = format!("{} {}\n", request.method, request.path);
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\n"));
    }
    let declared = match request.framing {
        Framing::Length if !request.body.is_empty() => Some(request.body.len()),
        Framing::Length | Framing::Chunked(_) => None,
        Framing::DeclaredLength(n) | Framing::TruncatedAfter(n) => Some(n),
    };
    if let Some(length) = declared {
        head.push_str(&format!("content-length: {length}\n"));
    }
    let mut input = head.into_bytes();
    input.push(b'\n');
    input.extend_from_slice(&request.body);
    input
}

/// Longest seed: past the 1 KiB cap with room to spare, and within what libFuzzer mutates by
/// default (the contract's 200 KB bodies add nothing a 4 KiB one does not).
const MAX_SEED_BYTES: usize = 4096;

fn write_all(target: &str, inputs: BTreeSet<Vec<u8>>) {
    let inputs: BTreeSet<Vec<u8>> = inputs
        .into_iter()
        .map(|mut input| {
            input.truncate(MAX_SEED_BYTES);
            input
        })
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (n, input) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("case-{n:03}")), input).unwrap();
    }
    println!("{target}: {} seeds", inputs.len());
}

fn main() {
    let token = "fuzz-token";
    let cases = contract_cases(token);
    let requests: Vec<_> = cases.iter().map(|case| &case.request).collect();
    write_all("decide", requests.iter().map(|r| decide_input(r)).collect());
    // No cut points, then the body.
    let bodies = requests.iter().map(|r| [&[0u8][..], &r.body].concat());
    write_all("capped_body", bodies.collect());
    let weeks = requests
        .iter()
        .filter_map(|r| r.path.strip_prefix("/v1/wau/"))
        .map(|week| week.as_bytes().to_vec());
    write_all("week", weeks.collect());
    let authorizations = requests
        .iter()
        .flat_map(|r| &r.headers)
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| format!("{token}\n{value}").into_bytes());
    write_all("bearer", authorizations.collect());
}
