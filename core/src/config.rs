//! Settings both targets read from the same variable names, checked once at start.

use std::fmt;

use crate::abuse::SharedLimitKey;
use crate::auth::{Token, Tokens};
use crate::limits::{
    DEFAULT_ABUSE_LIMIT_PER_WINDOW, DEFAULT_SESSION_TTL_SECONDS, MIN_SESSION_TTL_SECONDS,
};
use crate::readout::PublishedValues;
use crate::summary::{DEFAULT_SUMMARY_RETENTION_WEEKS, MAX_SUMMARY_RETENTION_WEEKS, Retention};
use crate::week::MAX_WEEK_SHARDS;

pub const READ_TOKEN_VAR: &str = "WAU_READ_TOKEN";
pub const ADMIN_TOKEN_VAR: &str = "ADMIN_TOKEN";
pub const SESSION_TTL_VAR: &str = "SESSION_TTL_SECONDS";
pub const ABUSE_LIMIT_VAR: &str = "ABUSE_LIMIT_PER_MINUTE";
pub const SHARED_LIMIT_KEY_VAR: &str = "ABUSE_LIMIT_KEY";
pub const BREAKDOWN_MIN_VAR: &str = "BREAKDOWN_MIN_SESSIONS";
pub const PUBLIC_READOUT_VAR: &str = "PUBLIC_READOUT";
pub const PUBLIC_DAEMON_VERSIONS_VAR: &str = "PUBLIC_DAEMON_VERSIONS";
pub const PUBLIC_PROTOCOL_VERSIONS_VAR: &str = "PUBLIC_PROTOCOL_VERSIONS";
pub const PUBLIC_NODE_MAJORS_VAR: &str = "PUBLIC_NODE_MAJORS";
pub const SUMMARY_RETENTION_VAR: &str = "SUMMARY_RETENTION_WEEKS";
pub const WEEK_SHARDS_VAR: &str = "WEEK_SHARDS";
/// One object per week carries far more than a Free plan allows a day (RUNBOOK's capacity
/// model); a busier deployment raises it.
pub const DEFAULT_WEEK_SHARDS: u16 = 1;

/// A breakdown shows a value only when at least this many sessions hold it.
pub const DEFAULT_BREAKDOWN_MIN_SESSIONS: u64 = 5;

pub struct Config {
    /// The read token (the readout) and the admin token (deletion); each `None` when unset
    /// or empty, and what it guards then answers 404.
    pub tokens: Tokens,
    pub session_ttl_seconds: u64,
    /// Valid pings per client address and minute; 0 turns the limit off.
    pub abuse_limit_per_minute: u32,
    /// The secret keying the client key a shared limiter sees (the Worker's Rate Limiting
    /// binding); without it only the in-process limit counts.
    pub shared_limit_key: Option<SharedLimitKey>,
    /// The privacy floor of a breakdown: rarer values are summed into `withheld_sessions`.
    pub breakdown_min_sessions: u64,
    /// `PUBLIC_READOUT=1`: counts, breakdowns and series are readable without a token.
    pub public_readout: bool,
    /// What a public breakdown names besides platforms and frameworks.
    pub published: PublishedValues,
    /// Weeks a week's summary is kept after it ends (0: none).
    pub summary_retention_weeks: u32,
    /// How many objects the Worker spreads a week's sessions over (`crate::week::shard_of`).
    /// The rollback's stores have no such ceiling and do not read it.
    pub week_shards: u16,
}

impl Config {
    /// What the stores keep, and for how long.
    pub fn retention(&self) -> Retention {
        Retention {
            session_ttl_seconds: self.session_ttl_seconds,
            summary_weeks: self.summary_retention_weeks,
        }
    }
}

/// `SUMMARY_RETENTION_WEEKS` as set (`None`: unset or empty): read by [`Config`], and on its
/// own by the Worker's week objects, which see the variables but not the whole configuration.
pub fn summary_retention_weeks(raw: Option<&str>) -> Result<u32, ConfigError> {
    match raw.map(str::trim).filter(|raw| !raw.is_empty()) {
        None => Ok(DEFAULT_SUMMARY_RETENTION_WEEKS),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|weeks| *weeks <= MAX_SUMMARY_RETENTION_WEEKS)
            .ok_or(ConfigError {
                variable: SUMMARY_RETENTION_VAR,
                expected: "a whole number of weeks from 0 (keep no summaries) to 520",
            }),
    }
}

/// A setting that cannot be used; it names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} must be {}", self.variable, self.expected)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads every setting through `lookup` (the environment, or a Worker's vars and secrets).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let session_ttl_seconds = match lookup(SESSION_TTL_VAR).filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_SESSION_TTL_SECONDS,
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|ttl| *ttl >= MIN_SESSION_TTL_SECONDS)
                .ok_or(ConfigError {
                    variable: SESSION_TTL_VAR,
                    expected: "a whole number of seconds, at least 60",
                })?,
        };
        let abuse_limit_per_minute = match lookup(ABUSE_LIMIT_VAR).filter(|v| !v.trim().is_empty())
        {
            None => DEFAULT_ABUSE_LIMIT_PER_WINDOW,
            Some(raw) => raw.trim().parse::<u32>().map_err(|_| ConfigError {
                variable: ABUSE_LIMIT_VAR,
                expected: "a whole number of pings per minute (0 turns the limit off)",
            })?,
        };
        // Set but too short is a mistake to report, not a reason to fall back silently to
        // the per-isolate limit.
        let shared_limit_key = match lookup(SHARED_LIMIT_KEY_VAR).filter(|v| !v.is_empty()) {
            None => None,
            Some(secret) => Some(SharedLimitKey::from_configured(Some(&secret)).ok_or(
                ConfigError {
                    variable: SHARED_LIMIT_KEY_VAR,
                    expected: "a random secret of at least 16 characters",
                },
            )?),
        };
        let breakdown_min_sessions =
            match lookup(BREAKDOWN_MIN_VAR).filter(|v| !v.trim().is_empty()) {
                None => DEFAULT_BREAKDOWN_MIN_SESSIONS,
                Some(raw) => raw
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|min| *min >= 1)
                    .ok_or(ConfigError {
                        variable: BREAKDOWN_MIN_VAR,
                        expected: "a whole number of sessions, at least 1",
                    })?,
            };
        let token = |variable: &'static str| {
            Token::from_configured(lookup(variable).as_deref()).map_err(|_| ConfigError {
                variable,
                expected: "a random secret of at least 32 characters (openssl rand -hex 32)",
            })
        };
        let tokens = Tokens {
            read: token(READ_TOKEN_VAR)?,
            admin: token(ADMIN_TOKEN_VAR)?,
        };
        // One secret for both would let whoever reads the numbers delete them too.
        if let Tokens {
            read: Some(read),
            admin: Some(admin),
        } = &tokens
            && read.same_as(admin)
        {
            return Err(ConfigError {
                variable: ADMIN_TOKEN_VAR,
                expected: "a different secret from WAU_READ_TOKEN",
            });
        }
        let public_readout = match lookup(PUBLIC_READOUT_VAR).as_deref().map(str::trim) {
            None | Some("" | "0") => false,
            Some("1") => true,
            Some(_) => {
                return Err(ConfigError {
                    variable: PUBLIC_READOUT_VAR,
                    expected: "1 (the readout is public) or 0 (it needs the read token)",
                });
            }
        };
        let list = |variable: &'static str, rule: fn(&str) -> bool, expected: &'static str| {
            let raw = lookup(variable).unwrap_or_default();
            let values: Vec<String> = (raw.split([',', ' ']))
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .collect();
            if values.iter().all(|value| rule(value)) {
                Ok(values)
            } else {
                Err(ConfigError { variable, expected })
            }
        };
        let published = PublishedValues {
            daemon_versions: list(
                PUBLIC_DAEMON_VERSIONS_VAR,
                crate::ping::is_semver,
                "versions such as 1.4.0, separated by commas",
            )?,
            protocol_versions: list(
                PUBLIC_PROTOCOL_VERSIONS_VAR,
                crate::ping::is_semver,
                "versions such as 1.0.0, separated by commas",
            )?,
            node_majors: list(
                PUBLIC_NODE_MAJORS_VAR,
                |major| {
                    (1..=9).contains(&major.len())
                        && major.bytes().all(|b| b.is_ascii_digit())
                        && (major == "0" || !major.starts_with('0'))
                },
                "Node majors such as 20, separated by commas",
            )?,
        };
        let summary_retention_weeks =
            summary_retention_weeks(lookup(SUMMARY_RETENTION_VAR).as_deref())?;
        let week_shards = match lookup(WEEK_SHARDS_VAR).filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_WEEK_SHARDS,
            Some(raw) => raw
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|shards| (1..=MAX_WEEK_SHARDS).contains(shards))
                .ok_or(ConfigError {
                    variable: WEEK_SHARDS_VAR,
                    expected: "a whole number of objects per week, from 1 to 64",
                })?,
        };
        Ok(Self {
            week_shards,
            summary_retention_weeks,
            public_readout,
            published,
            tokens,
            breakdown_min_sessions,
            shared_limit_key,
            session_ttl_seconds,
            abuse_limit_per_minute,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn a_week_is_spread_over_one_to_64_objects() {
        let shards = |raw: &str| config(&[(WEEK_SHARDS_VAR, raw)]).map(|c| c.week_shards);
        assert_eq!(shards(""), Ok(DEFAULT_WEEK_SHARDS));
        assert_eq!(shards("1"), Ok(1));
        assert_eq!(shards(" 64 "), Ok(64));
        for wrong in ["0", "65", "-1", "four", "2.5"] {
            assert_eq!(
                shards(wrong).unwrap_err().variable,
                WEEK_SHARDS_VAR,
                "{wrong}"
            );
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = config(&[]).unwrap();
        assert!(config.tokens.read.is_none());
        assert!(config.tokens.admin.is_none());
        assert_eq!(config.session_ttl_seconds, 7_257_600);
        assert_eq!(
            config.abuse_limit_per_minute,
            DEFAULT_ABUSE_LIMIT_PER_WINDOW
        );
    }

    #[test]
    fn the_breakdown_floor_defaults_to_five_and_is_at_least_one() {
        assert_eq!(config(&[]).unwrap().breakdown_min_sessions, 5);
        let set = config(&[(BREAKDOWN_MIN_VAR, "10")]).unwrap();
        assert_eq!(set.breakdown_min_sessions, 10);
        for bad in ["0", "-1", "five"] {
            let error = config(&[(BREAKDOWN_MIN_VAR, bad)]).err().unwrap();
            assert_eq!(error.variable, BREAKDOWN_MIN_VAR, "{bad}");
        }
    }

    #[test]
    fn ttl_must_be_at_least_a_minute() {
        assert_eq!(
            config(&[(SESSION_TTL_VAR, "60")])
                .unwrap()
                .session_ttl_seconds,
            60
        );
        for bad in ["59", "0", "-5", "1h", "3.5"] {
            let error = config(&[(SESSION_TTL_VAR, bad)]).err().unwrap();
            assert_eq!(error.variable, SESSION_TTL_VAR);
            assert_eq!(
                error.to_string(),
                "SESSION_TTL_SECONDS must be a whole number of seconds, at least 60"
            );
        }
    }

    #[test]
    fn a_shared_limit_key_is_long_enough_or_refused_without_being_repeated() {
        assert!(config(&[]).unwrap().shared_limit_key.is_none());
        assert!(
            config(&[(SHARED_LIMIT_KEY_VAR, "")])
                .unwrap()
                .shared_limit_key
                .is_none()
        );
        let key = "sixteen-chars-ok";
        assert!(
            config(&[(SHARED_LIMIT_KEY_VAR, key)])
                .unwrap()
                .shared_limit_key
                .is_some()
        );
        let error = config(&[(SHARED_LIMIT_KEY_VAR, "short-key")])
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "ABUSE_LIMIT_KEY must be a random secret of at least 16 characters"
        );
    }

    #[test]
    fn tokens_are_long_distinct_secrets_named_without_their_value() {
        let read = "r".repeat(32);
        let admin = "a".repeat(32);
        let both = config(&[(READ_TOKEN_VAR, &read), (ADMIN_TOKEN_VAR, &admin)]).unwrap();
        assert!(both.tokens.read.is_some() && both.tokens.admin.is_some());
        for variable in [READ_TOKEN_VAR, ADMIN_TOKEN_VAR] {
            let error = config(&[(variable, "x")]).err().unwrap();
            assert_eq!(error.variable, variable);
            assert_eq!(
                error.to_string(),
                format!(
                    "{variable} must be a random secret of at least 32 characters (openssl rand -hex 32)"
                )
            );
        }
        let same = config(&[(READ_TOKEN_VAR, &read), (ADMIN_TOKEN_VAR, &read)])
            .err()
            .unwrap();
        assert_eq!(same.variable, ADMIN_TOKEN_VAR);
        assert!(!same.to_string().contains(&read), "{same}");
    }

    #[test]
    fn a_public_readout_is_asked_for_with_one_and_publishes_only_valid_values() {
        let off = config(&[]).unwrap();
        assert!(!off.public_readout);
        assert_eq!(off.published, PublishedValues::default());
        let on = config(&[
            (PUBLIC_READOUT_VAR, "1"),
            (PUBLIC_DAEMON_VERSIONS_VAR, "1.0.0, 1.1.0,1.2.0-rc.1"),
            (PUBLIC_NODE_MAJORS_VAR, "18 20,22"),
        ])
        .unwrap();
        assert!(on.public_readout);
        assert_eq!(
            on.published.daemon_versions,
            ["1.0.0", "1.1.0", "1.2.0-rc.1"]
        );
        assert_eq!(on.published.node_majors, ["18", "20", "22"]);
        for (variable, bad) in [
            (PUBLIC_READOUT_VAR, "yes"),
            (PUBLIC_DAEMON_VERSIONS_VAR, "1.0"),
            (PUBLIC_PROTOCOL_VERSIONS_VAR, "01.0.0"),
            (PUBLIC_NODE_MAJORS_VAR, "v20"),
        ] {
            let error = config(&[(variable, bad)]).err().unwrap();
            assert_eq!(error.variable, variable, "{bad}");
        }
    }

    #[test]
    fn abuse_limit_must_be_a_count() {
        assert_eq!(
            config(&[(ABUSE_LIMIT_VAR, "0")])
                .unwrap()
                .abuse_limit_per_minute,
            0
        );
        assert!(config(&[(ABUSE_LIMIT_VAR, "many")]).is_err());
    }

    #[test]
    fn summaries_are_kept_two_years_unless_set_to_a_number_of_weeks_up_to_ten_years() {
        let weeks = |raw: &str| config(&[(SUMMARY_RETENTION_VAR, raw)]).map(|c| c.retention());
        assert_eq!(config(&[]).unwrap().retention().summary_weeks, 104);
        assert_eq!(weeks(" ").unwrap().summary_weeks, 104);
        assert_eq!(weeks("0").unwrap().summary_weeks, 0);
        assert_eq!(weeks("520").unwrap().summary_weeks, 520);
        for bad in ["521", "-1", "two years", "1.5"] {
            let refused = weeks(bad).err().map(|error| error.to_string());
            assert_eq!(
                refused.as_deref(),
                Some(
                    "SUMMARY_RETENTION_WEEKS must be a whole number of weeks from 0 (keep no summaries) to 520"
                ),
                "{bad}"
            );
        }
    }
}
