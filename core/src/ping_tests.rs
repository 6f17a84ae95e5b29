//! Every payload rule at its boundary, and properties over arbitrary input.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

fn valid() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "protocol_version": "1.0.0",
        "daemon_version": "0.9.3-beta.1",
        "session_id": "AbCdEf12_-xyz",
        "platform": "linux",
        "node_version": "v20.11.1",
        "primary_framework": "react",
    }) else {
        unreachable!()
    };
    map
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut map = valid();
    map.insert(field.to_owned(), value);
    serde_json::to_vec(&map).unwrap()
}

fn outcome(body: &[u8]) -> Result<(), Rejection> {
    parse_ping(body).map(|_| ())
}

fn invalid(field: &'static str) -> Result<(), Rejection> {
    Err(Rejection::InvalidValue {
        field,
        rule: rule(field),
    })
}

#[test]
fn a_valid_ping_parses_into_domain_types() {
    let body = serde_json::to_vec(&valid()).unwrap();
    let ping = parse_ping(&body).unwrap();
    assert_eq!(ping.session_id.as_str(), "AbCdEf12_-xyz");
    assert_eq!(ping.platform, Platform::Linux);
    assert_eq!(ping.primary_framework, Framework::React);
    assert_eq!(ping.node_version, "v20.11.1");
    assert!(
        matches!(ping.node_version, Cow::Borrowed(_)),
        "read from the body, not copied"
    );
}

#[test]
fn escaped_strings_are_unescaped_like_any_other() {
    let body = br#"{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"AbCdEf12_-xyz","platform":"linux","node_version":"v20.11.1","primary_framework":"react","\u0073ession_id":"x"}"#;
    assert_eq!(
        parse_ping(body).unwrap_err(),
        Rejection::DuplicateKey {
            field: Some("session_id")
        },
        "an escaped key is the same key"
    );
    let body = br#"{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"AbCd\u0045f12_-xyz","platform":"lin\u0075x","node_version":"v20.11\u002e1","primary_framework":"react"}"#;
    let ping = parse_ping(body).unwrap();
    assert_eq!(ping.session_id.as_str(), "AbCdEf12_-xyz");
    assert_eq!(ping.platform, Platform::Linux);
    assert_eq!(ping.node_version, "v20.11.1");
    assert!(matches!(ping.node_version, Cow::Owned(_)));
}

#[test]
fn session_id_length_and_alphabet_at_their_boundaries() {
    for (id, ok) in [
        ("a".repeat(7), false),
        ("a".repeat(8), true),
        ("Z9_-".repeat(16), true),
        ("a".repeat(65), false),
        ("abcdefg!".into(), false),
        ("abcd efgh".into(), false),
        ("abcdéfgh".into(), false),
        ("abcd.efgh".into(), false),
        (String::new(), false),
    ] {
        let expected = if ok { Ok(()) } else { invalid("session_id") };
        assert_eq!(outcome(&with("session_id", json!(id))), expected, "{id:?}");
    }
}

#[test]
fn semantic_versions_are_canonical_so_one_version_is_written_one_way() {
    for (version, ok) in [
        ("0.0.0", true),
        ("10.20.30", true),
        ("1.2.3-rc.1", true),
        ("1.2.3-alpha-2.x", true),
        ("1.2.3-0", true),
        ("1.2.3-rc.10", true),
        ("1.2.3-0a", true),
        ("999999999.0.0", true),
        ("01.2.3", false),
        ("1.02.3", false),
        ("1.2.03", false),
        ("1.2.3-01", false),
        ("1.2.3-rc.01", false),
        ("1.2.3-a..b", false),
        ("1.2.3-.a", false),
        ("1000000000.0.0", false),
        (
            "000000000000000000000000000000000000000000000000000001.0.0",
            false,
        ),
        ("1.2", false),
        ("1.2.3.4", false),
        ("1.2.3-", false),
        ("1.2.3+build", false),
        ("v1.2.3", false),
        ("1..3", false),
        ("1.2.a", false),
        (" 1.2.3", false),
        ("1.2.3-ü", false),
        ("١.٢.٣", false),
        ("", false),
    ] {
        for field in ["protocol_version", "daemon_version"] {
            let expected = if ok { Ok(()) } else { invalid(field) };
            assert_eq!(
                outcome(&with(field, json!(version))),
                expected,
                "{field} {version:?}"
            );
        }
    }
}

#[test]
fn node_versions_may_start_with_v() {
    for (version, ok) in [
        ("v20.11.1", true),
        ("20.11.1", true),
        ("v22.0.0-nightly2024", true),
        ("vv20.1.1", false),
        ("V20.1.1", false),
        ("v20", false),
        ("node-20.1.1", false),
    ] {
        let expected = if ok { Ok(()) } else { invalid("node_version") };
        assert_eq!(
            outcome(&with("node_version", json!(version))),
            expected,
            "{version:?}"
        );
    }
}

#[test]
fn versions_are_at_most_64_characters() {
    let at_limit = format!("1.2.3-{}", "a".repeat(MAX_VERSION_CHARS - 6));
    let over = format!("{at_limit}b");
    assert_eq!(outcome(&with("daemon_version", json!(at_limit))), Ok(()));
    assert_eq!(
        outcome(&with("daemon_version", json!(over))),
        invalid("daemon_version")
    );
}

#[test]
fn platforms_and_frameworks_are_closed_lists() {
    for platform in ["darwin", "linux", "win32", "freebsd", "openbsd"] {
        assert_eq!(outcome(&with("platform", json!(platform))), Ok(()));
    }
    for platform in ["Linux", "windows", "linux ", "", "aix"] {
        assert_eq!(
            outcome(&with("platform", json!(platform))),
            invalid("platform")
        );
    }
    for framework in [
        "react", "vue", "next", "nuxt", "svelte", "astro", "solid", "unknown",
    ] {
        assert_eq!(
            outcome(&with("primary_framework", json!(framework))),
            Ok(())
        );
    }
    for framework in ["React", "angular", "", "none"] {
        assert_eq!(
            outcome(&with("primary_framework", json!(framework))),
            invalid("primary_framework")
        );
    }
}

#[test]
fn structural_errors_get_their_own_codes() {
    let cases: [(&[u8], Rejection); 10] = [
        (b"", Rejection::EmptyBody),
        (b"   ", Rejection::InvalidJson),
        (b"\xff\xfe{}", Rejection::InvalidUtf8),
        (b"{\"protocol_version\":", Rejection::InvalidJson),
        (b"{} {}", Rejection::InvalidJson),
        (b"{}x", Rejection::InvalidJson),
        (b"[]", Rejection::NotAnObject),
        (b"\"text\"", Rejection::NotAnObject),
        (b"null", Rejection::NotAnObject),
        (
            b"{}",
            Rejection::MissingField {
                field: "protocol_version",
            },
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            outcome(body),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn duplicate_keys_are_rejected_even_with_equal_values() {
    let body = br#"{"protocol_version":"1.0.0","daemon_version":"1.0.0","session_id":"abcdefgh","session_id":"abcdefgh","platform":"linux","node_version":"20.0.0","primary_framework":"vue"}"#;
    assert_eq!(
        outcome(body),
        Err(Rejection::DuplicateKey {
            field: Some("session_id")
        })
    );
    assert_eq!(
        outcome(br#"{"x":1,"x":2}"#),
        Err(Rejection::DuplicateKey { field: None })
    );
}

#[test]
fn unknown_missing_and_mistyped_fields_are_named() {
    assert_eq!(
        outcome(&with("user_email", json!("a@b.c"))),
        Err(Rejection::UnknownField {
            name: Some("user_email".into())
        })
    );
    assert_eq!(
        outcome(&with("<script>", json!(1))),
        Err(Rejection::UnknownField { name: None }),
        "odd key names are not reflected"
    );
    let mut map = valid();
    map.remove("platform");
    assert_eq!(
        outcome(&serde_json::to_vec(&map).unwrap()),
        Err(Rejection::MissingField { field: "platform" })
    );
    for value in [
        json!(5),
        json!(null),
        json!(["linux"]),
        json!({"a": 1}),
        json!(true),
    ] {
        assert_eq!(
            outcome(&with("platform", value.clone())),
            Err(Rejection::InvalidType { field: "platform" }),
            "{value}"
        );
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let deep = format!("{{\"platform\":{}{}}}", "[".repeat(500), "]".repeat(500));
    assert_eq!(outcome(deep.as_bytes()), Err(Rejection::InvalidJson));
}

#[test]
fn error_messages_never_repeat_a_submitted_value() {
    let secret = "v9.9.9-leak";
    let rejection = parse_ping(&with("platform", json!(secret))).unwrap_err();
    assert!(!rejection.message().contains(secret));
    let rejection = parse_ping(&with("platform", json!(12345))).unwrap_err();
    assert!(!rejection.message().contains("12345"));
}

proptest! {
    /// Any valid payload with one extra key is rejected, whatever the key or its value.
    #[test]
    fn any_extra_key_is_rejected(key in "\\PC{1,30}", value in any::<i64>()) {
        prop_assume!(!FIELDS.contains(&key.as_str()));
        let rejection = parse_ping(&with(&key, json!(value))).unwrap_err();
        prop_assert_eq!(rejection.code(), "unknown_field");
    }

    /// No byte string panics the parser, and none over the cap is ever needed to find out.
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let _ = parse_ping(&body);
    }

    /// Arbitrary strings in every field either parse or are refused with a 400.
    #[test]
    fn arbitrary_field_values_decide_cleanly(field in 0usize..6, value in "\\PC{0,80}") {
        let body = with(FIELDS[field], json!(value));
        if let Err(rejection) = parse_ping(&body) {
            prop_assert_eq!(rejection.status(), 400);
        }
    }
}

#[test]
fn session_ids_from_stored_keys_follow_the_same_rule() {
    assert_eq!(
        SessionId::parse("abcdefgh")
            .map(|id| id.as_str().to_owned())
            .as_deref(),
        Some("abcdefgh")
    );
    for bad in ["abcdefg", "abcdefgh:x", &"a".repeat(65), "abcdéfgh"] {
        assert_eq!(SessionId::parse(bad), None, "{bad:?}");
    }
}
