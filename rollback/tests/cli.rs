//! The command line as an operator meets it: help, configuration errors, and secrets that
//! never show.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Output};

use contract_suite::free_local_port;
use support::scratch_dir;

fn rollback(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollback"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Settings, each holding a value that must never be printed back.
const SECRETS: [(&str, &str); 6] = [
    (
        "WAU_READ_TOKEN",
        "token-never-shown-0123456789abcdef0123456789abcdef",
    ),
    (
        "ADMIN_TOKEN",
        "admin-never-shown-0123456789abcdef0123456789abcdef",
    ),
    (
        "ROLLBACK_STORE",
        "rediss://:password-never-shown@example.net:6380",
    ),
    ("SESSION_TTL_SECONDS", "ttl-never-shown"),
    ("ABUSE_LIMIT_PER_MINUTE", "limit-never-shown"),
    // Too short to be a key (15 characters).
    ("ABUSE_LIMIT_KEY", "key-never-shown"),
];

fn assert_shows_no_configured_value(output: &Output, what: &str) {
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains("never-shown") && !text.contains("secret-token-x"),
            "{what} shows a configured value:\n{text}"
        );
    }
}

#[test]
fn no_help_or_error_output_shows_a_configured_value() {
    for args in [
        &["--help"][..],
        &["import-kv", "--help"],
        &["export-kv", "--help"],
        &["delete-session", "--help"],
        &["--version"],
    ] {
        let output = rollback(args, &SECRETS);
        assert!(output.status.success(), "{args:?}");
        assert_shows_no_configured_value(&output, &format!("{args:?}"));
    }
    // Each bad setting stops the start with its name alone.
    for (name, bad) in &SECRETS[3..] {
        let output = rollback(
            &["--store", "sqlite://unused.db"],
            &[
                (name, bad),
                (
                    "WAU_READ_TOKEN",
                    "secret-token-x-0123456789abcdef0123456789abcdef",
                ),
            ],
        );
        assert_eq!(output.status.code(), Some(1), "{name}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("{name} must be")));
        assert_shows_no_configured_value(&output, name);
    }
    // A store URL with a password, refused or unreachable, and a bad header name. (clap
    // repeats a malformed argument to whoever typed it, as for `--listen nonsense`; none of
    // the settings above is a clap-parsed value, so none is ever repeated.)
    let unreachable = format!(
        "redis://:password-never-shown@127.0.0.1:{}/0",
        free_local_port()
    );
    for args in [
        &["--store", "mysql://admin:password-never-shown@db/t"][..],
        &["--store", &unreachable],
        &["--store", &unreachable, "export-kv", "2026-W48"],
        &[
            "--store",
            "sqlite://unused.db",
            "--client-address-header",
            "bad header never-shown",
        ],
    ] {
        let output = rollback(
            args,
            &[(
                "WAU_READ_TOKEN",
                "secret-token-x-0123456789abcdef0123456789abcdef",
            )],
        );
        assert!(!output.status.success(), "{args:?}");
        assert_shows_no_configured_value(&output, &format!("{args:?}"));
    }
}

#[test]
fn help_names_the_options_and_never_a_secret() {
    let output = rollback(
        &["--help"],
        &[
            (
                "WAU_READ_TOKEN",
                "token-never-shown-0123456789abcdef0123456789abcdef",
            ),
            (
                "ROLLBACK_STORE",
                "rediss://:password-never-shown@example.net:6380",
            ),
        ],
    );
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--listen",
        "--store",
        "--client-address-header",
        "--drain-timeout-seconds",
        "WAU_READ_TOKEN",
        "ADMIN_TOKEN",
        "import-kv",
        "export-kv",
    ] {
        assert!(help.contains(option), "help lacks {option}:\n{help}");
    }
    // Every setting the rollback reads (the Worker-only ABUSE_LIMIT_KEY and WORKER_ROLE aside).
    use telemetry_core::config::*;
    for variable in [
        READ_TOKEN_VAR,
        ADMIN_TOKEN_VAR,
        SESSION_TTL_VAR,
        ABUSE_LIMIT_VAR,
        BREAKDOWN_MIN_VAR,
        SUMMARY_RETENTION_VAR,
        PUBLIC_READOUT_VAR,
        PUBLIC_DAEMON_VERSIONS_VAR,
        PUBLIC_PROTOCOL_VERSIONS_VAR,
        PUBLIC_NODE_MAJORS_VAR,
    ] {
        assert!(help.contains(variable), "help lacks {variable}:\n{help}");
    }
    assert!(
        help.contains("[default: 127.0.0.1:8788]"),
        "beside the Worker's dev port"
    );
    assert!(
        !help.contains("never-shown"),
        "help shows a secret:\n{help}"
    );
}

#[test]
fn a_bad_or_unreachable_store_stops_the_start_with_a_clear_error() {
    let dir = scratch_dir("cli");
    let listen = format!("127.0.0.1:{}", free_local_port());
    let unreachable = format!("redis://127.0.0.1:{}/0", free_local_port());
    let missing_dir = format!("sqlite://{}/no/such/dir/t.db", dir.display());
    for (store, says) in [
        ("mysql://db/telemetry", "the store must be sqlite://PATH"),
        ("sqlite://", "sqlite:// needs a file path"),
        (unreachable.as_str(), "cannot open the store"),
        (missing_dir.as_str(), "cannot open the store"),
    ] {
        let output = rollback(
            &["--listen", &listen, "--store", store],
            &[(
                "WAU_READ_TOKEN",
                "secret-token-x-0123456789abcdef0123456789abcdef",
            )],
        );
        assert_eq!(output.status.code(), Some(1), "{store}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{store}: {stderr}");
        assert!(!stderr.contains("secret-token-x"));
    }
}

#[test]
fn a_bad_setting_is_named_without_its_value() {
    let output = rollback(
        &["--store", "sqlite://unused.db"],
        &[("SESSION_TTL_SECONDS", "59")],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SESSION_TTL_SECONDS must be"), "{stderr}");
}

#[test]
fn a_short_or_shared_token_stops_the_start_named_without_its_value() {
    let long = "a-secret-long-enough-0123456789abcdef";
    for (vars, says) in [
        (
            vec![("WAU_READ_TOKEN", "short-secret-7f")],
            "WAU_READ_TOKEN must be a random secret of at least 32 characters",
        ),
        (
            vec![("ADMIN_TOKEN", "short-secret-7f")],
            "ADMIN_TOKEN must be a random secret of at least 32 characters",
        ),
        (
            vec![("WAU_READ_TOKEN", long), ("ADMIN_TOKEN", long)],
            "ADMIN_TOKEN must be a different secret from WAU_READ_TOKEN",
        ),
    ] {
        let output = rollback(&["--store", "sqlite://unused.db"], &vars);
        assert_eq!(output.status.code(), Some(1), "{vars:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            !stderr.contains("short-secret") && !stderr.contains(long),
            "{stderr}"
        );
    }
}

/// Secrets from systemd's credentials (the unit's `LoadCredential=`): the read token and the
/// store's URL each read from the file of its name in `$CREDENTIALS_DIRECTORY`.
#[test]
fn settings_are_read_from_systemd_credentials_when_the_environment_has_none() {
    let dir = scratch_dir("credentials");
    let credentials = dir.join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(
        credentials.join("WAU_READ_TOKEN"),
        "credential-token-7c1-0123456789abcdef0123456789\n",
    )
    .unwrap();
    let db = dir.join("from-credential.db");
    let store = format!("sqlite://{}", db.display());
    std::fs::write(credentials.join("ROLLBACK_STORE"), &store).unwrap();
    let credentials = credentials.to_str().unwrap().to_owned();
    let server = support::Rollback::start_with_args(
        "",
        &dir,
        &[("CREDENTIALS_DIRECTORY", credentials.as_str())],
        &[],
    );
    let readout = |token: &str| {
        let week = contract_suite::current_iso_week();
        contract_suite::send(server.addr, &contract_suite::readout_request(&week, token))
            .unwrap()
            .status
    };
    assert_eq!(
        readout("credential-token-7c1-0123456789abcdef0123456789"),
        200,
        "the token without its line break"
    );
    assert_eq!(readout("credential-token-7c"), 401);
    assert!(db.exists(), "the store named by the credential");
}
