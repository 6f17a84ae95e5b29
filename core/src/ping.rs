//! The `POST /v1/session` payload: the wire object, its rules, and the valid ping it becomes.
//!
//! The body is first read as a list of top-level entries so that duplicate, unknown, missing
//! and mistyped keys each get their own error code with a message that never repeats a value
//! (serde's derive errors echo values, e.g. "invalid type: integer `5`", and cannot carry a
//! code). The six strings then go into [`SessionPingWire`], whose `garde` rules are the one
//! place the value rules live, and [`SessionPing::try_from`] turns it into domain types.

use std::borrow::Cow;
use std::fmt;

use garde::Validate;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::limits::{MAX_VERSION_CHARS, SESSION_ID_CHARS};
use crate::rejection::Rejection;

/// The six fields of the relay's v1 payload, in the order their errors are reported.
pub const FIELDS: [&str; 6] = [
    "protocol_version",
    "daemon_version",
    "session_id",
    "platform",
    "node_version",
    "primary_framework",
];

/// The payload as sent, every field present and a string, none yet checked against its rule.
/// The strings are borrowed from the body unless they held JSON escapes.
#[derive(Debug, Validate)]
pub struct SessionPingWire<'a> {
    #[garde(length(max = MAX_VERSION_CHARS), custom(semver_rule))]
    pub protocol_version: Cow<'a, str>,
    #[garde(length(max = MAX_VERSION_CHARS), custom(semver_rule))]
    pub daemon_version: Cow<'a, str>,
    #[garde(length(min = *SESSION_ID_CHARS.start(), max = *SESSION_ID_CHARS.end()), custom(url_safe_rule))]
    pub session_id: Cow<'a, str>,
    #[garde(skip)]
    pub platform: Cow<'a, str>,
    #[garde(length(max = MAX_VERSION_CHARS), custom(node_version_rule))]
    pub node_version: Cow<'a, str>,
    #[garde(skip)]
    pub primary_framework: Cow<'a, str>,
}

/// What each field must be, as said in a 400's message.
fn rule(field: &str) -> &'static str {
    match field {
        "protocol_version" | "daemon_version" => {
            "a semantic version such as 1.4.0, without leading zeros (at most 64 characters)"
        }
        "session_id" => "8 to 64 characters of A-Z a-z 0-9 _ -",
        "platform" => "one of darwin, linux, win32, freebsd, openbsd",
        "node_version" => {
            "a Node.js version such as v20.11.1, without leading zeros (at most 64 characters)"
        }
        "primary_framework" => "one of react, vue, next, nuxt, svelte, astro, solid, unknown",
        _ => "valid",
    }
}

/// Canonical semantic versions only (SemVer 2.0.0 without build metadata), so that one
/// version is written one way: `MAJOR.MINOR.PATCH`, each `0` or up to
/// [`MAX_VERSION_NUMBER_DIGITS`] digits without a leading zero, then optionally `-` and dot-
/// separated pre-release identifiers, each non-empty `[0-9A-Za-z-]`, a numeric one without a
/// leading zero. ASCII only. openapi.yaml's pattern says the same (tests/openapi.rs holds the
/// two equal).
pub(crate) fn is_semver(text: &str) -> bool {
    let (release, pre_release) = match text.split_once('-') {
        Some((release, pre)) => (release, Some(pre)),
        None => (text, None),
    };
    let canonical_number = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'))
    };
    let numbers_ok = {
        let mut parts = release.split('.');
        let three = (0..3).all(|_| {
            parts.next().is_some_and(|part| {
                canonical_number(part) && part.len() <= MAX_VERSION_NUMBER_DIGITS
            })
        });
        three && parts.next().is_none()
    };
    let pre_ok = pre_release.is_none_or(|pre| {
        pre.split('.').all(|identifier| {
            !identifier.is_empty()
                && identifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!identifier.bytes().all(|b| b.is_ascii_digit()) || canonical_number(identifier))
        })
    });
    numbers_ok && pre_ok
}

/// Digits a version's major, minor or patch number may have: no release numbers in the
/// billions, and no 60-digit numbers writing one version many ways.
pub const MAX_VERSION_NUMBER_DIGITS: usize = 9;

fn semver_rule(value: &str, _: &()) -> garde::Result {
    is_semver(value)
        .then_some(())
        .ok_or_else(|| garde::Error::new("not a semantic version"))
}

fn node_version_rule(value: &str, _: &()) -> garde::Result {
    semver_rule(value.strip_prefix('v').unwrap_or(value), &())
}

fn url_safe_rule(value: &str, _: &()) -> garde::Result {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        .then_some(())
        .ok_or_else(|| garde::Error::new("not url-safe"))
}

/// A session id that met its rule: the random, rotating id of one relay install.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A session id from somewhere other than a ping (a stored key), by the same rule.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = SESSION_ID_CHARS.contains(&text.len()) && url_safe_rule(text, &()).is_ok();
        valid.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Darwin,
    Linux,
    Win32,
    Freebsd,
    Openbsd,
}

impl Platform {
    pub const ALL: [Platform; 5] = [
        Self::Darwin,
        Self::Linux,
        Self::Win32,
        Self::Freebsd,
        Self::Openbsd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Darwin => "darwin",
            Self::Linux => "linux",
            Self::Win32 => "win32",
            Self::Freebsd => "freebsd",
            Self::Openbsd => "openbsd",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    React,
    Vue,
    Next,
    Nuxt,
    Svelte,
    Astro,
    Solid,
    Unknown,
}

impl Framework {
    pub const ALL: [Framework; 8] = [
        Self::React,
        Self::Vue,
        Self::Next,
        Self::Nuxt,
        Self::Svelte,
        Self::Astro,
        Self::Solid,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::React => "react",
            Self::Vue => "vue",
            Self::Next => "next",
            Self::Nuxt => "nuxt",
            Self::Svelte => "svelte",
            Self::Astro => "astro",
            Self::Solid => "solid",
            Self::Unknown => "unknown",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// A ping whose every field met its rule; the versions are borrowed from the body unless
/// they held JSON escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPing<'a> {
    pub session_id: SessionId,
    pub protocol_version: Cow<'a, str>,
    pub daemon_version: Cow<'a, str>,
    pub platform: Platform,
    pub node_version: Cow<'a, str>,
    pub primary_framework: Framework,
}

impl<'a> TryFrom<SessionPingWire<'a>> for SessionPing<'a> {
    type Error = Rejection;

    fn try_from(wire: SessionPingWire<'a>) -> Result<Self, Rejection> {
        if let Err(report) = wire.validate() {
            // Report the first failing field in payload order, whatever order garde used.
            let failing: Vec<String> = report.iter().map(|(path, _)| path.to_string()).collect();
            let field = FIELDS
                .into_iter()
                .find(|f| failing.iter().any(|p| p == f))
                .unwrap_or("session_id");
            return Err(invalid_value(field));
        }
        let platform = Platform::from_name(&wire.platform).ok_or(invalid_value("platform"))?;
        let primary_framework = Framework::from_name(&wire.primary_framework)
            .ok_or(invalid_value("primary_framework"))?;
        Ok(Self {
            session_id: SessionId(wire.session_id.into_owned()),
            protocol_version: wire.protocol_version,
            daemon_version: wire.daemon_version,
            platform,
            node_version: wire.node_version,
            primary_framework,
        })
    }
}

fn invalid_value(field: &'static str) -> Rejection {
    Rejection::InvalidValue {
        field,
        rule: rule(field),
    }
}

/// Parses a request body into a valid ping, or the first reason it is not one.
pub fn parse_ping(body: &[u8]) -> Result<SessionPing<'_>, Rejection> {
    let [
        protocol_version,
        daemon_version,
        session_id,
        platform,
        node_version,
        primary_framework,
    ] = parse_entries(body)?.strings(FIELDS)?;
    SessionPing::try_from(SessionPingWire {
        protocol_version,
        daemon_version,
        session_id,
        platform,
        node_version,
        primary_framework,
    })
}

/// The one field of an erasure request (`POST /v1/erase`): the session to forget.
pub const ERASURE_FIELDS: [&str; 1] = ["session_id"];

/// Parses an erasure request's body, `{"session_id":"<id>"}` and nothing else, by the ping's
/// rules for a JSON body and for a session id; the first reason it is not one.
pub fn parse_erasure(body: &[u8]) -> Result<SessionId, Rejection> {
    let [session_id] = parse_entries(body)?.strings(ERASURE_FIELDS)?;
    SessionId::parse(&session_id).ok_or(invalid_value("session_id"))
}

/// A body's top-level entries, or why it is not a JSON object.
fn parse_entries(body: &[u8]) -> Result<TopLevelEntries<'_>, Rejection> {
    if body.is_empty() {
        return Err(Rejection::EmptyBody);
    }
    let text = std::str::from_utf8(body).map_err(|_| Rejection::InvalidUtf8)?;
    serde_json::from_str::<TopLevelEntries>(text).map_err(|error| {
        // Only the top-level visitor raises data errors: the value was not an object.
        if error.is_data() {
            Rejection::NotAnObject
        } else {
            Rejection::InvalidJson
        }
    })
}

/// The top-level keys and values of a JSON object in the order sent, duplicates kept.
/// A value is kept only when it is a string; any other is parsed (so its syntax is checked)
/// and dropped, as its type is all an error reports.
struct TopLevelEntries<'de>(Vec<(JsonText<'de>, JsonText<'de>)>);

/// A JSON string borrowed from the body (owned only when it held escapes), or `None` for a
/// value of any other type.
struct JsonText<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for TopLevelEntries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = TopLevelEntries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(FIELDS.len());
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(TopLevelEntries(entries))
            }

            // Anything but an object is refused with a fixed error, not serde's, whose
            // message prints the value (and brings float formatting into the Worker's bundle).
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(not_an_object())
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(not_an_object())
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(not_an_object())
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(not_an_object())
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Err(not_an_object())
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(not_an_object())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Read to its end, so that a syntax error inside still reads as one.
                while seq.next_element::<JsonText>()?.is_some() {}
                Err(not_an_object())
            }
        }

        fn not_an_object<E: de::Error>() -> E {
            E::custom("not an object")
        }

        deserializer.deserialize_any(EntriesVisitor)
    }
}

impl<'de> Deserialize<'de> for JsonText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = JsonText<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Borrowed(text))))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(text.to_owned()))))
            }

            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(text))))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(JsonText(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(JsonText(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(JsonText(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(JsonText(None))
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonText(None))
            }

            // Nested values go through `deserialize_any` too (not `IgnoredAny`, which serde_json
            // skips without its nesting limit), so deep nesting stays invalid JSON.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<JsonText>()?.is_some() {}
                Ok(JsonText(None))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<JsonText, JsonText>()?.is_some() {}
                Ok(JsonText(None))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

impl<'de> TopLevelEntries<'de> {
    /// The string value of each of `fields`, checked in the contract's order: duplicates,
    /// unknown keys, missing keys, then types.
    fn strings<const N: usize>(
        self,
        fields: [&'static str; N],
    ) -> Result<[Cow<'de, str>; N], Rejection> {
        let entries = self.0;
        for (index, (key, _)) in entries.iter().enumerate() {
            if entries
                .iter()
                .skip(index + 1)
                .any(|(other, _)| other.0 == key.0)
            {
                let field = fields.into_iter().find(|f| key.0.as_deref() == Some(*f));
                return Err(Rejection::DuplicateKey { field });
            }
        }
        if let Some((key, _)) = entries
            .iter()
            .find(|(key, _)| !key.0.as_deref().is_some_and(|key| fields.contains(&key)))
        {
            return Err(Rejection::UnknownField {
                // JSON object keys are always strings: a `None` key cannot be parsed.
                name: printable_key(key.0.as_deref().unwrap_or_default()),
            });
        }
        let mut values: [Option<JsonText<'de>>; N] = std::array::from_fn(|_| None);
        for (key, value) in entries {
            let slot = fields.iter().position(|f| key.0.as_deref() == Some(*f));
            if let Some(place) = slot.and_then(|index| values.get_mut(index)) {
                *place = Some(value);
            }
        }
        if let Some((field, _)) = fields.into_iter().zip(&values).find(|(_, v)| v.is_none()) {
            return Err(Rejection::MissingField { field });
        }
        if let Some((field, _)) = (fields.into_iter().zip(&values))
            .find(|(_, value)| !matches!(value, Some(JsonText(Some(_)))))
        {
            return Err(Rejection::InvalidType { field });
        }
        Ok(values.map(|value| match value {
            Some(JsonText(Some(text))) => text,
            // Checked just above: every value is a string.
            _ => Cow::Borrowed(""),
        }))
    }
}

/// An unknown key is named back only when it is a short plain identifier.
fn printable_key(key: &str) -> Option<String> {
    let plain = (1..=40).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain.then(|| key.to_owned())
}

#[cfg(test)]
#[path = "ping_tests.rs"]
mod tests;
