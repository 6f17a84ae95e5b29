//! The scenarios: what relays and an operator send, weighted like real traffic.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use goose::prelude::*;

/// Session ids answered 204 during the run: the count must grow by exactly this many. A set,
/// so the repeats and upgrades of a session already counted are not counted again.
static ACCEPTED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

pub fn accepted_sessions() -> u64 {
    ACCEPTED.lock().map(|set| set.len() as u64).unwrap_or(0)
}

/// The session ids answered 204 during the run, for the erasure at its end.
pub fn created_sessions() -> Vec<String> {
    ACCEPTED
        .lock()
        .map(|set| set.iter().cloned().collect())
        .unwrap_or_default()
}

/// What a relay's ping is to the service, and its name in Goose's report.
#[derive(Clone, Copy)]
enum Kind {
    /// A session's first ping, with a freshly drawn profile.
    NewSession,
    /// The same six fields again: the path the stores optimise (nothing is written).
    UnchangedRepeat,
    /// The same session with another `daemon_version`: a write, but not a new session.
    Upgrade,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::NewSession => "new session",
            Self::UnchangedRepeat => "unchanged repeat",
            Self::Upgrade => "upgrade",
        }
    }

    /// How long each of this kind's 204s took, in microseconds, for the percentiles printed
    /// after the run.
    fn latencies(self) -> &'static Mutex<Vec<u64>> {
        static NEW_SESSIONS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        static UNCHANGED_REPEATS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        static UPGRADES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        match self {
            Self::NewSession => &NEW_SESSIONS,
            Self::UnchangedRepeat => &UNCHANGED_REPEATS,
            Self::Upgrade => &UPGRADES,
        }
    }

    fn answered(self) -> &'static AtomicU64 {
        static NEW_SESSIONS: AtomicU64 = AtomicU64::new(0);
        static UNCHANGED_REPEATS: AtomicU64 = AtomicU64::new(0);
        static UPGRADES: AtomicU64 = AtomicU64::new(0);
        match self {
            Self::NewSession => &NEW_SESSIONS,
            Self::UnchangedRepeat => &UNCHANGED_REPEATS,
            Self::Upgrade => &UPGRADES,
        }
    }
}

static SENT: AtomicU64 = AtomicU64::new(0);
static LIMITED: AtomicU64 = AtomicU64::new(0);

/// Relay pings sent, and how many of them the target's abuse limit refused (429).
pub fn limited_pings() -> (u64, u64) {
    (
        SENT.load(Ordering::Relaxed),
        LIMITED.load(Ordering::Relaxed),
    )
}

/// Relay pings answered 204, by kind, for the line printed after the run: it shows each kind
/// was really loaded, whatever Goose's own report was told to leave out.
pub fn answered_summary() -> String {
    let count = |kind: Kind| kind.answered().load(Ordering::Relaxed);
    let kinds = [Kind::NewSession, Kind::UnchangedRepeat, Kind::Upgrade];
    let mut all = Vec::new();
    let mut latencies = Vec::new();
    for kind in kinds {
        let mut took = kind
            .latencies()
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        all.extend_from_slice(&took);
        latencies.push(format!("{} {}", kind.name(), percentiles(&mut took)));
    }
    format!(
        "relay pings answered 204: {} new session, {} unchanged repeat, {} upgrade\n\
         204 latency, p50 / p95: every ping {}; {}",
        count(Kind::NewSession),
        count(Kind::UnchangedRepeat),
        count(Kind::Upgrade),
        percentiles(&mut all),
        latencies.join("; ")
    )
}

/// The median and the 95th percentile of latencies in microseconds, as `p50 / p95 ms`.
fn percentiles(took: &mut [u64]) -> String {
    took.sort_unstable();
    let at = |fraction: f64| {
        let rank = ((took.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
        took.get(rank).map_or(0.0, |us| *us as f64 / 1000.0)
    };
    format!("{:.1} / {:.1} ms", at(0.50), at(0.95))
}

/// Relays, as they send: a relay pings when it starts and then every 24 hours with the same six
/// fields, so a session that runs all week sends one first ping and six unchanged repeats:
/// hence 10 new sessions to 60 unchanged repeats. A release reaches a running session now and
/// then: an upgrade per ten repeats (6). A few invalid requests (an old or broken relay, 1
/// each) must be refused with their 4xx, never a 5xx. Each Goose user is one relay at a time:
/// it starts with a new session (its first ping), and its later new sessions stand for a
/// restart or a new install. Goose runs the weighted transactions in a fixed round-robin
/// order, so the mix holds for every 79 pings of a user, not for every one of its sessions.
pub fn relay_pings() -> Result<Scenario, GooseError> {
    Ok(scenario!("relay")
        .set_weight(10)?
        .register_transaction(
            transaction!(ping_new_session)
                .set_name(Kind::NewSession.name())
                .set_on_start(),
        )
        .register_transaction(
            transaction!(ping_new_session)
                .set_name(Kind::NewSession.name())
                .set_weight(10)?,
        )
        .register_transaction(
            transaction!(ping_unchanged_repeat)
                .set_name(Kind::UnchangedRepeat.name())
                .set_weight(60)?,
        )
        .register_transaction(
            transaction!(ping_upgrade)
                .set_name(Kind::Upgrade.name())
                .set_weight(6)?,
        )
        .register_transaction(
            transaction!(unknown_field)
                .set_name("unknown field (400)")
                .set_weight(1)?,
        )
        .register_transaction(
            transaction!(oversized)
                .set_name("oversized (413)")
                .set_weight(1)?,
        )
        .register_transaction(
            transaction!(wrong_content_type)
                .set_name("wrong content type (415)")
                .set_weight(1)?,
        ))
}

pub fn invalid_requests() -> Result<Scenario, GooseError> {
    // A second, small population of broken clients, so the 4xx paths are loaded on their own too.
    Ok(scenario!("broken client")
        .set_weight(1)?
        .register_transaction(transaction!(unknown_field).set_name("unknown field (400)"))
        .register_transaction(transaction!(oversized).set_name("oversized (413)"))
        .register_transaction(
            transaction!(wrong_content_type).set_name("wrong content type (415)"),
        ))
}

/// An operator reading the current week (only registered with `WAU_READ_TOKEN` set).
pub fn operator_readouts() -> Result<Scenario, GooseError> {
    Ok(scenario!("operator")
        .set_weight(1)?
        .register_transaction(transaction!(weekly_readout).set_name("readout")))
}

fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// One item, drawn with the weight beside it (the lists below are never empty).
fn pick<T: Copy>(first: (T, u64), rest: &[(T, u64)]) -> T {
    let total: u64 = rest.iter().map(|(_, w)| w).sum::<u64>() + first.1;
    let mut roll = random() % total.max(1);
    for &(item, weight) in std::iter::once(&first).chain(rest) {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    first.0
}

/// A random 22-character url-safe id, like a relay's.
fn new_session_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut a, mut b) = (random(), random());
    (0..22)
        .map(|i| {
            let source = if i < 11 { &mut a } else { &mut b };
            let c = ALPHABET
                .get((*source % 64) as usize)
                .copied()
                .unwrap_or(b'A');
            *source /= 64;
            char::from(c)
        })
        .collect()
}

/// The daemon versions relays run, oldest first, with how common each is.
const DAEMON_VERSIONS: [(&str, u64); 4] = [
    ("0.8.7", 20),
    ("0.9.2", 25),
    ("0.9.3", 50),
    ("0.10.0-rc.1", 5),
];

/// A session as its relay keeps it (the Goose user's session data): the id and the profile
/// it sends with every ping, so a repeat is the same body, byte for byte.
#[derive(Clone)]
struct Session {
    id: String,
    daemon_version: &'static str,
    platform: &'static str,
    node_version: &'static str,
    primary_framework: &'static str,
}

impl Session {
    /// A new session with a realistic profile.
    fn draw() -> Self {
        let platform = pick(
            ("linux", 50),
            &[
                ("darwin", 35),
                ("win32", 12),
                ("freebsd", 2),
                ("openbsd", 1),
            ],
        );
        let primary_framework = pick(
            ("react", 35),
            &[
                ("next", 20),
                ("vue", 15),
                ("nuxt", 6),
                ("svelte", 8),
                ("astro", 6),
                ("solid", 3),
                ("unknown", 7),
            ],
        );
        let [first, rest @ ..] = DAEMON_VERSIONS;
        let daemon_version = pick(first, &rest);
        let node_version = pick(
            ("v20.11.1", 40),
            &[("v22.3.0", 35), ("v18.19.0", 20), ("21.7.1", 5)],
        );
        Self {
            id: new_session_id(),
            daemon_version,
            platform,
            node_version,
            primary_framework,
        }
    }

    /// The same session after its relay was updated: the next version up, or, from the newest
    /// (a release candidate), back to the latest stable one; always a different version.
    fn upgraded(&self) -> Self {
        let versions = DAEMON_VERSIONS.map(|(version, _)| version);
        let next = versions
            .iter()
            .position(|v| *v == self.daemon_version)
            .and_then(|i| versions.get(i + 1))
            .copied()
            .unwrap_or("0.9.3");
        Self {
            daemon_version: next,
            ..self.clone()
        }
    }

    fn body(&self) -> String {
        let Self {
            id,
            daemon_version,
            platform,
            node_version,
            primary_framework,
        } = self;
        format!(
            r#"{{"protocol_version":"1.0.0","daemon_version":"{daemon_version}","session_id":"{id}","platform":"{platform}","node_version":"{node_version}","primary_framework":"{primary_framework}"}}"#
        )
    }
}

/// The body of a fresh session's ping, for the invalid requests to spoil.
fn ping_body() -> String {
    Session::draw().body()
}

/// A POST to the ping route, named: a request made from a request builder has no path of its
/// own, so unnamed, Goose's report would list every kind as one bare `POST`.
async fn post(
    user: &mut GooseUser,
    name: &str,
    content_type: &str,
    body: String,
    expect: u16,
) -> Result<goose::goose::GooseResponse, Box<TransactionError>> {
    let builder = user
        .get_request_builder(&GooseMethod::Post, "/v1/session")?
        .header("content-type", content_type)
        .body(body);
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name(name)
        .expect_status_code(expect)
        .build();
    user.request(request).await
}

/// Sends `session`'s ping, named by its kind, and keeps `session` as the user's, answered or
/// not: its relay would send the same again.
async fn ping(user: &mut GooseUser, kind: Kind, session: Session) -> TransactionResult {
    let body = session.body();
    let response = post(user, kind.name(), "application/json", body, 204).await?;
    let accepted = response
        .response
        .as_ref()
        .is_ok_and(|r| r.status().as_u16() == 204);
    let limited = (response.response.as_ref()).is_ok_and(|r| r.status().as_u16() == 429);
    if limited {
        LIMITED.fetch_add(1, Ordering::Relaxed);
    }
    SENT.fetch_add(1, Ordering::Relaxed);
    if accepted {
        kind.answered().fetch_add(1, Ordering::Relaxed);
        let metric = &response.request;
        let micros = metric.response_time * 1000 + u64::from(metric.response_time_fraction_us);
        if let Ok(mut took) = kind.latencies().lock() {
            took.push(micros);
        }
        if let Ok(mut sessions) = ACCEPTED.lock() {
            sessions.insert(session.id.clone());
        }
    }
    user.set_session_data(session);
    Ok(())
}

async fn ping_new_session(user: &mut GooseUser) -> TransactionResult {
    ping(user, Kind::NewSession, Session::draw()).await
}

/// The same relay again (its daily ping, or a restart that kept the session): the exact same
/// body. A user without a session yet starts one instead.
async fn ping_unchanged_repeat(user: &mut GooseUser) -> TransactionResult {
    match user.get_session_data::<Session>().cloned() {
        Some(session) => ping(user, Kind::UnchangedRepeat, session).await,
        None => ping_new_session(user).await,
    }
}

/// The same session after a daemon update: only `daemon_version` differs, and the new
/// profile is kept for the repeats that follow.
async fn ping_upgrade(user: &mut GooseUser) -> TransactionResult {
    match user.get_session_data::<Session>().map(Session::upgraded) {
        Some(session) => ping(user, Kind::Upgrade, session).await,
        None => ping_new_session(user).await,
    }
}

async fn unknown_field(user: &mut GooseUser) -> TransactionResult {
    let body = ping_body().replacen('{', r#"{"user_email":"x@example.com","#, 1);
    post(user, "unknown field (400)", "application/json", body, 400).await?;
    Ok(())
}

async fn oversized(user: &mut GooseUser) -> TransactionResult {
    let body = ping_body().replacen('{', &format!("{{{}", " ".repeat(2048)), 1);
    post(user, "oversized (413)", "application/json", body, 413).await?;
    Ok(())
}

async fn wrong_content_type(user: &mut GooseUser) -> TransactionResult {
    post(
        user,
        "wrong content type (415)",
        "text/plain",
        ping_body(),
        415,
    )
    .await?;
    Ok(())
}

async fn weekly_readout(user: &mut GooseUser) -> TransactionResult {
    let token = std::env::var("WAU_READ_TOKEN").unwrap_or_default();
    let week = crate::current_week();
    let builder = user
        .get_request_builder(&GooseMethod::Get, &format!("/v1/wau/{week}"))?
        .bearer_auth(token);
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name("readout")
        .expect_status_code(200)
        .build();
    user.request(request).await?;
    Ok(())
}
