//! `loadtest`: a Goose load harness for either deploy target, with Goose's own command line
//! (`--host`, `--users`, `--hatch-rate`, `--run-time`, `--report-file`, …).
//!
//! Traffic is weighted like the real thing. Relays ping when they start and then every 24
//! hours with the same six fields, so each relay user sends, per new session (a freshly drawn,
//! realistic mix of platforms, frameworks and versions), about six unchanged repeats (the same
//! body again, the path the stores optimise) and now and then an upgrade (the same session
//! with another `daemon_version`); Goose's report names them "new session", "unchanged
//! repeat" and "upgrade", and the run ends by printing how many of each were answered 204.
//! A small share of invalid requests must get their 4xx; and, with `WAU_READ_TOKEN` set,
//! operators read the week. Thresholds come from `LOADTEST_P95_MS` (default 500) and
//! `LOADTEST_MAX_ERROR_RATE` (default 0.01). With a token, the week's count is read before and
//! after: it must have grown by exactly the number of distinct sessions answered 204, however
//! often each was repeated or upgraded.
//!
//! Its sessions are indistinguishable from real ones and kept for the retention (12 weeks),
//! so it refuses a `--host` that is not this machine unless given `--against-production`,
//! and when it ends, however it ends, it erases every session it created (`POST /v1/erase`).

mod traffic;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use goose::config::GooseConfiguration;
use goose::prelude::*;
use telemetry_core::{IsoWeek, utc_from_unix_millis};

/// What `--help` says before Goose's own options: what this harness does and reads.
const HARNESS_HELP: &str = "\
loadtest: relay traffic against either target (the Worker or the rollback), then checks.

It sends what relays send: per new session about six unchanged repeats and now and then an
upgrade, plus a few invalid requests that must get their 4xx, and with WAU_READ_TOKEN set,
operator readouts. It fails with the reason when:
  the p95 exceeds LOADTEST_P95_MS (default 500) or the error rate LOADTEST_MAX_ERROR_RATE
  (default 0.01); with WAU_READ_TOKEN, the week's count did not grow by exactly the distinct
  sessions answered 204; more than 5 % of pings got 429 (the target's abuse limit is on: set
  ABUSE_LIMIT_PER_MINUTE=0 there).
When it ends it erases every session it created (POST /v1/erase). It refuses a --host that
is not this machine unless given --against-production: its sessions look like real relays'.

Environment: WAU_READ_TOKEN, LOADTEST_P95_MS, LOADTEST_MAX_ERROR_RATE.

";

/// The flag that lets the harness load a host that is not this machine.
const AGAINST_PRODUCTION: &str = "--against-production";

/// Whether a `--host` URL names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(host: &str) -> bool {
    let rest = host.split_once("://").map_or(host, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let name = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How long background writes (KV's `waitUntil`, the rollback's queue) may take to show.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    let ran = run().await;
    // Whatever the run's outcome, the sessions it created go: they would otherwise count as
    // real relays for 12 weeks.
    let erased = match host_argument() {
        Some(host) if !traffic::created_sessions().is_empty() => erase_created(&host).await,
        _ => Ok(()),
    };
    let failures: Vec<String> = [ran.err(), erased.err()].into_iter().flatten().collect();
    for failure in &failures {
        eprintln!("loadtest: {failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Erasures in flight at once at the end of a run.
const ERASURES_IN_FLIGHT: usize = 32;

/// Erases every session the run created, as a relay that opts out does (`POST /v1/erase`,
/// no token), so that the week is left as the run found it.
async fn erase_created(host: &str) -> Result<(), String> {
    let sessions = traffic::created_sessions();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/erase", host.trim_end_matches('/'));
    let mut erased = 0_u64;
    let mut refused = std::collections::BTreeMap::<u16, u64>::new();
    for chunk in sessions.chunks(ERASURES_IN_FLIGHT) {
        let mut sent = tokio::task::JoinSet::new();
        for id in chunk {
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .body(serde_json::json!({ "session_id": id }).to_string());
            sent.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
        }
        while let Some(answer) = sent.join_next().await {
            match answer {
                Ok(Ok(204)) => erased += 1,
                Ok(Ok(status)) => *refused.entry(status).or_default() += 1,
                _ => *refused.entry(0).or_default() += 1,
            }
        }
    }
    println!("erased the {erased} sessions the run created");
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of the run's {} sessions could not be erased (status: count, 0 for no answer: \
             {refused:?}); erase them with the operator's DELETE, or they count for 12 weeks",
            sessions.len() as u64 - erased,
            sessions.len()
        ))
    }
}

async fn run() -> Result<(), String> {
    let token = std::env::var("WAU_READ_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let p95_ms = env_number("LOADTEST_P95_MS", 500.0)?;
    let max_error_rate = env_number("LOADTEST_MAX_ERROR_RATE", 0.01)?;
    let host = host_argument();
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let against_production = arguments.iter().any(|a| a == AGAINST_PRODUCTION);
    if let Some(host) = &host
        && !is_loopback(host)
        && !against_production
    {
        return Err(format!(
            "{host} is not this machine. The harness sends tens of thousands of sessions a \
             minute, indistinguishable from real relays' and kept for 12 weeks. Point it at a \
             local target (scripts/dev.sh, or cargo run -p rollback), or pass \
             {AGAINST_PRODUCTION} if that is what you mean."
        ));
    }
    let goose_arguments: Vec<&String> = (arguments.iter())
        .filter(|a| *a != AGAINST_PRODUCTION)
        .collect();

    let readout = match (&token, &host) {
        (Some(token), Some(host)) => Some(Readout::new(host, token)?),
        (Some(_), None) => {
            return Err("with WAU_READ_TOKEN set, give --host so the count can be checked".into());
        }
        (None, _) => {
            eprintln!("loadtest: WAU_READ_TOKEN is not set: no readouts and no count check");
            None
        }
    };
    let before = match &readout {
        Some(readout) => Some(readout.count().await?),
        None => None,
    };

    let wants_help = goose_arguments.iter().any(|a| *a == "--help" || *a == "-h");
    let attack = if wants_help {
        print!("{HARNESS_HELP}");
        GooseAttack::initialize()
    } else {
        GooseConfiguration::parse_args_default(&goose_arguments)
            .and_then(GooseAttack::initialize_with_config)
    };
    let mut attack = attack
        .map_err(|e| e.to_string())?
        .register_scenario(traffic::relay_pings().map_err(|e| e.to_string())?)
        .register_scenario(traffic::invalid_requests().map_err(|e| e.to_string())?);
    if token.is_some() {
        attack = attack.register_scenario(traffic::operator_readouts().map_err(|e| e.to_string())?);
    }
    let attack = attack
        .set_default(GooseDefault::Threshold, format!("p95<{p95_ms}ms").as_str())
        .and_then(|a| {
            a.set_default(
                GooseDefault::Threshold,
                format!("error-rate<{}%", max_error_rate * 100.0).as_str(),
            )
        })
        .map_err(|e| e.to_string())?;
    let outcome = attack.execute().await;
    println!("{}", traffic::answered_summary());
    // Most refusals being the abuse limit's is the target's setting, not its failure: say so.
    let (sent, limited) = traffic::limited_pings();
    if sent > 0 && limited * 20 > sent {
        return Err(format!(
            "{:.1} % of pings refused with 429: the abuse limit is on. Set \
             ABUSE_LIMIT_PER_MINUTE=0 on the target (scripts/dev.sh --var \
             ABUSE_LIMIT_PER_MINUTE:0, or the rollback's environment): one machine is one \
             client address",
            limited as f64 * 100.0 / sent as f64
        ));
    }
    match outcome {
        Ok(_) => {}
        Err(GooseError::ThresholdsFailed { failed, .. }) => {
            let rules: Vec<String> = (failed.iter())
                .map(|result| format!("{} (observed {})", result.rule, result.observed))
                .collect();
            return Err(format!(
                "thresholds failed (p95 < {p95_ms} ms, error rate < {max_error_rate}): {}",
                rules.join("; ")
            ));
        }
        Err(error) => return Err(error.to_string()),
    }

    if let (Some(readout), Some(before)) = (readout, before) {
        let sessions = traffic::accepted_sessions();
        let expected = before + sessions;
        let deadline = Instant::now() + SETTLE_WITHIN;
        let mut after = readout.count().await?;
        while after != expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            after = readout.count().await?;
        }
        if after != expected {
            let difference = i128::from(after) - i128::from(expected);
            return Err(format!(
                "count check failed: {} had {before} sessions, {sessions} distinct sessions were answered 204, \
                 so {expected} were expected, but it reports {after} ({difference:+})",
                readout.week
            ));
        }
        println!(
            "count check passed: {} grew from {before} to {after}, exactly the {sessions} distinct sessions answered 204",
            readout.week
        );
    }
    Ok(())
}

fn env_number(name: &str, default: f64) -> Result<f64, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .ok_or_else(|| format!("{name} must be a number greater than 0")),
        Err(_) => Ok(default),
    }
}

/// Goose's `--host` (or `-H`), read here too: the count check talks to the same host.
fn host_argument() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--host=") {
            return Some(value.to_owned());
        }
        if arg == "--host" || arg == "-H" {
            return args.next();
        }
    }
    None
}

/// The operator's view: the current week's count.
struct Readout {
    client: reqwest::Client,
    url: String,
    token: String,
    week: String,
}

/// The ISO week the service is writing into now (its clock is this machine's, or close).
pub fn current_week() -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    IsoWeek::containing(utc_from_unix_millis(now_ms)).to_string()
}

impl Readout {
    fn new(host: &str, token: &str) -> Result<Self, String> {
        let week = current_week();
        Ok(Self {
            client: reqwest::Client::new(),
            url: format!("{}/v1/wau/{week}", host.trim_end_matches('/')),
            token: token.to_owned(),
            week,
        })
    }

    async fn count(&self) -> Result<u64, String> {
        let response = self
            .client
            .get(&self.url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("readout: {e}"))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| format!("readout: {e}"))?;
        if !status.is_success() {
            return Err(format!("readout answered {status}: {body}"));
        }
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("weekly_active_sessions")?.as_u64())
            .ok_or_else(|| format!("readout body {body}"))
    }
}
