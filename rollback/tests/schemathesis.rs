//! The rollback against the published document: schemathesis generates valid and invalid
//! requests from `openapi.yaml` and checks every answer against it (on SQLite; the stores do
//! not change an answer's shape).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use contract_suite::ADMIN_TOKEN;
use contract_suite::schemathesis::run_schemathesis;
use support::{Rollback, scratch_dir};

#[test]
fn rollback_answers_as_openapi_yaml_says() {
    let dir = scratch_dir("schemathesis");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let token = "schemathesis-token-0123456789abcdef0123";
    // Without the abuse limit: generated valid pings must all be accepted.
    let server = Rollback::start(
        &store,
        &dir,
        &[
            ("WAU_READ_TOKEN", token),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ],
    );
    if let Err(report) = run_schemathesis(server.addr, token, ADMIN_TOKEN) {
        panic!("{report}\n\nserver log:\n{}", server.log());
    }
}
