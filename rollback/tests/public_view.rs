//! The public view (`PUBLIC_READOUT=1`) on the real binary: counts, breakdowns and series
//! read without a token, deletion still behind its token, and the review's padding attack
//! learns nothing (`contract_suite::public_view`): two servers hold the same week but for
//! one install, which runs the guessed rare version on one and another rare version on the
//! other; after the stranger's fakes, every public answer is the same on both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use contract_suite::public_view::{GUESS, PUBLIC_BY_VERSION, seed_and_pad, stranger_reads};
use contract_suite::{ADMIN_TOKEN, RawRequest, Target, current_iso_week, send};
use support::{Rollback, scratch_dir};

const READ_TOKEN: &str = "public-view-read-token-0123456789abcdef";

fn public_server(name: &str) -> Rollback {
    let dir = scratch_dir(name);
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    Rollback::start(
        &store,
        &dir,
        &[
            ("WAU_READ_TOKEN", READ_TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", "0"),
            ("PUBLIC_READOUT", "1"),
            ("PUBLIC_DAEMON_VERSIONS", "1.0.0,1.1.0"),
        ],
    )
}

fn target(server: &Rollback) -> Target {
    Target {
        addr: server.addr,
        token: READ_TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    }
}

#[test]
fn a_stranger_padding_a_guessed_version_learns_nothing_from_the_public_view() {
    let mut seen = Vec::new();
    for (name, real_rare) in [("public-acme", GUESS), ("public-zeta", "0.9.0-zeta.3")] {
        let server = public_server(name);
        let operator_sees_the_guess = seed_and_pad(&target(&server), name, real_rare).unwrap();
        assert_eq!(
            operator_sees_the_guess,
            real_rare == GUESS,
            "the attack's premise"
        );
        seen.push(stranger_reads(&target(&server)).unwrap());
        // Deletion stays behind the admin token.
        let deletion = RawRequest::new("DELETE", &format!("/v1/session/{name}-real-00"));
        assert_eq!(send(server.addr, &deletion).unwrap().status, 401);
    }
    assert_eq!(seen[0], seen[1], "the public view told the two weeks apart");
    let by_version = seen[0]
        .iter()
        .find(|answer| answer.contains("by=daemon_version application/json"))
        .unwrap();
    assert!(by_version.ends_with(PUBLIC_BY_VERSION), "{by_version}");
}

#[test]
fn without_the_setting_the_readout_still_needs_its_token() {
    let dir = scratch_dir("public-off");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let server = Rollback::start(&store, &dir, &[("WAU_READ_TOKEN", READ_TOKEN)]);
    let week = current_iso_week();
    let anonymous = RawRequest::new("GET", &format!("/v1/wau/{week}"));
    assert_eq!(send(server.addr, &anonymous).unwrap().status, 401);
    // In public mode a wrong token is still refused, not read as public.
    let public = public_server("public-wrong-token");
    let wrong = RawRequest::new("GET", &format!("/v1/wau/{week}"))
        .header("authorization", "Bearer not-the-token-0123456789abcdef0123");
    assert_eq!(send(public.addr, &wrong).unwrap().status, 401);
}
