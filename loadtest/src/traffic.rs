//! The scenarios: what relays and an operator send, weighted like real traffic.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use goose::prelude::*;

/// Session ids answered 204 during the run: the count must grow by exactly this many.
static ACCEPTED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

pub fn accepted_sessions() -> u64 {
    ACCEPTED.lock().map(|set| set.len() as u64).unwrap_or(0)
}

/// Relays: mostly first pings from new sessions, some repeats, and a few invalid requests
/// (an old or broken relay) that must be refused with their 4xx, never a 5xx.
pub fn relay_pings() -> Result<Scenario, GooseError> {
    Ok(scenario!("relay")
        .set_weight(10)?
        .register_transaction(
            transaction!(ping_new_session)
                .set_name("ping")
                .set_weight(40)?,
        )
        .register_transaction(
            transaction!(ping_same_session)
                .set_name("repeat ping")
                .set_weight(10)?,
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

fn ping_body(session_id: &str) -> String {
    let platform = pick(
        ("linux", 50),
        &[
            ("darwin", 35),
            ("win32", 12),
            ("freebsd", 2),
            ("openbsd", 1),
        ],
    );
    let framework = pick(
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
    let daemon = pick(
        ("0.9.3", 50),
        &[("0.9.2", 25), ("0.10.0-rc.1", 5), ("0.8.7", 20)],
    );
    let node = pick(
        ("v20.11.1", 40),
        &[("v22.3.0", 35), ("v18.19.0", 20), ("21.7.1", 5)],
    );
    format!(
        r#"{{"protocol_version":"1.0.0","daemon_version":"{daemon}","session_id":"{session_id}","platform":"{platform}","node_version":"{node}","primary_framework":"{framework}"}}"#
    )
}

async fn post(
    user: &mut GooseUser,
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
        .expect_status_code(expect)
        .build();
    user.request(request).await
}

async fn ping(user: &mut GooseUser, session_id: String) -> TransactionResult {
    let response = post(user, "application/json", ping_body(&session_id), 204).await?;
    let accepted = response
        .response
        .as_ref()
        .is_ok_and(|r| r.status().as_u16() == 204);
    if let (true, Ok(mut sessions)) = (accepted, ACCEPTED.lock()) {
        sessions.insert(session_id.clone());
    }
    user.set_session_data(session_id);
    Ok(())
}

async fn ping_new_session(user: &mut GooseUser) -> TransactionResult {
    ping(user, new_session_id()).await
}

/// The same relay again: a restart, or its daily ping within the same week.
async fn ping_same_session(user: &mut GooseUser) -> TransactionResult {
    let session_id = user
        .get_session_data::<String>()
        .cloned()
        .unwrap_or_else(new_session_id);
    ping(user, session_id).await
}

async fn unknown_field(user: &mut GooseUser) -> TransactionResult {
    let body = ping_body(&new_session_id()).replacen('{', r#"{"user_email":"x@example.com","#, 1);
    post(user, "application/json", body, 400).await?;
    Ok(())
}

async fn oversized(user: &mut GooseUser) -> TransactionResult {
    let body = ping_body(&new_session_id()).replacen('{', &format!("{{{}", " ".repeat(2048)), 1);
    post(user, "application/json", body, 413).await?;
    Ok(())
}

async fn wrong_content_type(user: &mut GooseUser) -> TransactionResult {
    post(user, "text/plain", ping_body(&new_session_id()), 415).await?;
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
        .expect_status_code(200)
        .build();
    user.request(request).await?;
    Ok(())
}
