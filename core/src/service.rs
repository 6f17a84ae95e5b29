//! The request path, as decisions: route a request from its head, then decide a ping from
//! its body or a readout from its count. Adapters do only the I/O in between.

use time::OffsetDateTime;

use crate::abuse::Admission;
use crate::auth::{Token, Tokens};
use crate::body::{check_declared_length, check_received_length};
use crate::ping::{SessionId, parse_erasure, parse_ping};
use crate::readout::{Format, Readout};
use crate::record::SessionWrite;
use crate::rejection::Rejection;
use crate::response::Response;
use crate::week::IsoWeek;

pub const SESSION_PATH: &str = "/v1/session";
/// A relay's own erasure request: `POST /v1/erase` with `{"session_id":"<id>"}`, no token.
pub const ERASE_PATH: &str = "/v1/erase";
/// A deletion request: `DELETE /v1/session/<session_id>`, behind the admin token.
pub const FORGET_PREFIX: &str = "/v1/session/";
pub const WEEKLY_ACTIVE_PREFIX: &str = "/v1/wau/";
/// A series of weeks: `GET /v1/wau?from=<week>&to=<week>`.
pub const SERIES_PATH: &str = "/v1/wau";
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness: 200 while the store answers, 503 while it does not (`/healthz` is liveness).
pub const READY_PATH: &str = "/readyz";

/// What the adapter knows before reading a body. Header values are as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The path only; a query string is never looked at (a token there is not accepted).
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The client's address, counted by the abuse limit and never stored or logged.
    pub client: Option<&'a str>,
    /// The query string without its `?`; only the readout reads it (`by`, `from`, `to`).
    pub query: Option<&'a str>,
    /// `Accept`: a readout answers CSV when it names `text/csv`.
    pub accept: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Session,
    Erase,
    WeeklyActive,
    Forget,
    Health,
    Ready,
    /// `/dashboard` and below: static files, served by the adapter before it routes (the
    /// Worker's assets, the rollback's embedded copy); anything else there is a 404.
    Dashboard,
    Unknown,
}

impl Route {
    /// The route a path leads to, before the method, the token or any header is looked at
    /// (a readout path without a configured token is still [`Route::Unknown`] in [`route`]).
    pub fn of_path(path: &str) -> Self {
        match path {
            SESSION_PATH => Self::Session,
            ERASE_PATH => Self::Erase,
            HEALTH_PATH => Self::Health,
            READY_PATH => Self::Ready,
            SERIES_PATH => Self::WeeklyActive,
            "/dashboard" => Self::Dashboard,
            _ if path.starts_with(crate::dashboard::DASHBOARD_PATH) => Self::Dashboard,
            _ if path.starts_with(WEEKLY_ACTIVE_PREFIX) => Self::WeeklyActive,
            // `/v1/session/` alone stays another path, as any trailing slash is.
            _ if path.len() > FORGET_PREFIX.len() && path.starts_with(FORGET_PREFIX) => {
                Self::Forget
            }
            _ => Self::Unknown,
        }
    }

    /// The request headers [`route`] and [`decide_ping`] read on this route; an adapter that
    /// pays for each header it fetches (the Worker, across the JavaScript boundary) fetches
    /// only these, and leaves the others `None` in its [`RequestHead`].
    pub fn headers_read(self) -> &'static [&'static str] {
        match self {
            Self::Session | Self::Erase => &["content-type", "content-length"],
            Self::WeeklyActive => &["authorization", "accept"],
            Self::Forget => &["authorization"],
            Self::Health | Self::Ready | Self::Dashboard | Self::Unknown => &[],
        }
    }

    /// The route's name in a wide event; an unknown path is never logged as sent.
    pub fn label(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Erase => "erase",
            Self::WeeklyActive => "wau",
            Self::Forget => "forget",
            Self::Health => "healthz",
            Self::Ready => "readyz",
            Self::Dashboard => "dashboard",
            Self::Unknown => "unknown",
        }
    }
}

/// What the adapter does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send this; nothing more to do.
    Respond(Response),
    /// Stream the body under the cap (`CappedBody`), then call [`decide_ping`].
    ReadPing,
    /// Stream the body under the cap, then call [`decide_erasure`]; delete the session's
    /// records in every week the store holds, and answer [`erased_response`] whatever was
    /// found.
    ReadErasure,
    /// Fetch what the readout asks for from the store, then answer with
    /// [`crate::readout`]'s types.
    Readout(Readout),
    /// Delete the session's records in every week the store holds, then answer with
    /// [`forgotten_response`].
    Forget(SessionId),
    /// Ask the store for something cheap; answer [`ready_response`], or 503 when it fails.
    CheckStore,
}

/// Routes a request from its head alone, deciding everything that needs no body or store.
/// A readout needs the read token (unless `public_readout`, when a request without an
/// `Authorization` header gets the public view), a deletion the admin token; a wrong one
/// counts against the client's abuse limit in `limiter` ([`authenticate`]).
pub fn route(
    head: &RequestHead<'_>,
    tokens: &Tokens,
    public_readout: bool,
    limiter: &mut impl Admission,
    now_seconds: u64,
) -> (Route, Next) {
    if public_readout
        && head.authorization.is_none()
        && Route::of_path(head.path) == Route::WeeklyActive
    {
        return (
            Route::WeeklyActive,
            public_readout_head(head, limiter, now_seconds),
        );
    }
    match (Route::of_path(head.path), tokens) {
        (Route::Session, _) => (Route::Session, session_head(head)),
        (Route::Erase, _) => {
            let next = match session_head(head) {
                Next::ReadPing => Next::ReadErasure,
                refused => refused,
            };
            (Route::Erase, next)
        }
        (Route::Health, _) => {
            let next = if head.method == "GET" {
                Next::Respond(Response::text("ok"))
            } else {
                reject(Rejection::MethodNotAllowed { allow: "GET" })
            };
            (Route::Health, next)
        }
        // Without its token a route does not exist, whatever the method or week.
        (
            Route::WeeklyActive,
            Tokens {
                read: Some(token), ..
            },
        ) => (
            Route::WeeklyActive,
            readout_head(head, token, limiter, now_seconds),
        ),
        (
            Route::Forget,
            Tokens {
                admin: Some(token), ..
            },
        ) => (
            Route::Forget,
            forget_head(head, token, limiter, now_seconds),
        ),
        (Route::Ready, _) => {
            let next = if head.method == "GET" {
                Next::CheckStore
            } else {
                reject(Rejection::MethodNotAllowed { allow: "GET" })
            };
            (Route::Ready, next)
        }
        (Route::Dashboard, _) => (Route::Dashboard, reject(Rejection::NotFound)),
        (Route::WeeklyActive | Route::Forget | Route::Unknown, _) => {
            (Route::Unknown, reject(Rejection::NotFound))
        }
    }
}

/// Checks a guarded request's token. A wrong (or missing) one counts against the client's
/// abuse limit, as a ping does: 401, then 429 once the client is over it, so guesses are
/// as limited as pings. A right one is refused too while its client is over the limit, so
/// that a guess's answer never tells a right token from a wrong one.
pub fn authenticate(
    head: &RequestHead<'_>,
    token: &Token,
    limiter: &mut impl Admission,
    now_seconds: u64,
) -> Result<(), Rejection> {
    let client = head.client;
    if token.admits(head.authorization) {
        return match client.and_then(|client| limiter.refused(client, now_seconds)) {
            Some(refused) => Err(refused),
            None => Ok(()),
        };
    }
    if let Some(client) = client {
        limiter.admit(client, now_seconds)?;
    }
    Err(Rejection::Unauthorized)
}

/// The query of a URL, without its `?` and any fragment; `None` when it has none.
pub fn query_of_url(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    Some(query.split_once('#').map_or(query, |(query, _)| query))
}

/// The path of an absolute URL as a runtime hands it over (`https://host/v1/wau/x?q` →
/// `/v1/wau/x`), taken as sent: no percent-decoding, no dot segments resolved, as the
/// rollback's HTTP stack gives it. The query and fragment are never looked at.
pub fn path_of_url(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let after_authority = rest.get(authority_end..).unwrap_or_default();
    let path_end = after_authority
        .find(['?', '#'])
        .unwrap_or(after_authority.len());
    match after_authority.get(..path_end) {
        Some(path) if !path.is_empty() => path,
        _ => "/",
    }
}

fn reject(rejection: Rejection) -> Next {
    Next::Respond(rejection.into_response())
}

fn session_head(head: &RequestHead<'_>) -> Next {
    if head.method != "POST" {
        return reject(Rejection::MethodNotAllowed { allow: "POST" });
    }
    if !head.content_type.is_some_and(is_json_media_type) {
        return reject(Rejection::UnsupportedMediaType);
    }
    match check_declared_length(head.content_length) {
        Ok(()) => Next::ReadPing,
        Err(rejection) => reject(rejection),
    }
}

/// `application/json`, any case, with or without parameters such as `charset=utf-8`.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn readout_head(
    head: &RequestHead<'_>,
    token: &Token,
    limiter: &mut impl Admission,
    now_seconds: u64,
) -> Next {
    if head.method != "GET" {
        return reject(Rejection::MethodNotAllowed { allow: "GET" });
    }
    // Authentication first: an anonymous caller learns nothing, not even which weeks parse.
    if let Err(refused) = authenticate(head, token, limiter, now_seconds) {
        return reject(refused);
    }
    match readout_of(head) {
        Ok(readout) => Next::Readout(readout),
        Err(rejection) => reject(rejection),
    }
}

/// The weeks of a public series one admission pays for: the dashboard's default span.
pub const PUBLIC_WEEKS_PER_REQUEST: usize = 13;

/// A readout asked for without a token of a service whose readout is public. It counts
/// against the client's abuse limit as a ping does: anyone may ask, and a series is a
/// store read per week.
fn public_readout_head(
    head: &RequestHead<'_>,
    limiter: &mut impl Admission,
    now_seconds: u64,
) -> Next {
    if head.method != "GET" {
        return reject(Rejection::MethodNotAllowed { allow: "GET" });
    }
    if let Some(client) = head.client
        && let Err(refused) = limiter.admit(client, now_seconds)
    {
        return reject(refused);
    }
    let readout = match readout_of(head) {
        Ok(readout) => readout.public(),
        Err(rejection) => return reject(rejection),
    };
    // A series is a store read per week (on the Worker, a request to each week's object):
    // past the first 13 weeks, each 13 more count as one more request against the limit.
    let weeks = match &readout {
        Readout::Series { weeks, .. } => weeks.len(),
        Readout::Week { .. } => 1,
    };
    if let Some(client) = head.client {
        for _ in 1..weeks.div_ceil(PUBLIC_WEEKS_PER_REQUEST) {
            if let Err(refused) = limiter.admit(client, now_seconds) {
                return reject(refused);
            }
        }
    }
    Next::Readout(readout)
}

/// The readout a request's path and query ask for.
fn readout_of(head: &RequestHead<'_>) -> Result<Readout, Rejection> {
    let format = Format::from_accept(head.accept);
    match head.path.strip_prefix(WEEKLY_ACTIVE_PREFIX) {
        Some(week) => Readout::for_week(week, head.query, format),
        None => Readout::for_series(head.query, format),
    }
}

fn forget_head(
    head: &RequestHead<'_>,
    token: &Token,
    limiter: &mut impl Admission,
    now_seconds: u64,
) -> Next {
    if head.method != "DELETE" {
        return reject(Rejection::MethodNotAllowed { allow: "DELETE" });
    }
    if let Err(refused) = authenticate(head, token, limiter, now_seconds) {
        return reject(refused);
    }
    let id = head.path.strip_prefix(FORGET_PREFIX).unwrap_or_default();
    match SessionId::parse(id) {
        Some(id) => Next::Forget(id),
        None => reject(Rejection::InvalidValue {
            field: "session_id",
            rule: "8 to 64 characters of A-Z a-z 0-9 _ -",
        }),
    }
}

/// One page of a backfill (the Worker's bundle in its backfill role, RUNBOOK.md): the week
/// whose KV records go to the week's object, and the cursor of KV's listing to go on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillPage<'a> {
    pub week: IsoWeek,
    pub cursor: Option<&'a str>,
}

/// Decides a backfill request from its head, by a deletion's rules (it writes records, so it
/// takes the admin token): `POST` only, no admin token configured is a 404, the token before
/// anything else ([`authenticate`]), then `week` exactly once (a real ISO week) and `cursor`
/// at most once (empty is none), nothing more.
pub fn backfill_page<'a>(
    head: &RequestHead<'a>,
    admin_token: Option<&Token>,
    limiter: &mut impl Admission,
    now_seconds: u64,
) -> Result<BackfillPage<'a>, Rejection> {
    if head.method != "POST" {
        return Err(Rejection::MethodNotAllowed { allow: "POST" });
    }
    let token = admin_token.ok_or(Rejection::NotFound)?;
    authenticate(head, token, limiter, now_seconds)?;
    let (mut week, mut cursor) = (None, None);
    for (name, value) in crate::readout::query_pairs(head.query) {
        match name {
            "week" if week.is_none() => week = Some(value),
            "cursor" if cursor.is_none() => cursor = Some(value),
            _ => return Err(Rejection::InvalidQuery),
        }
    }
    let week =
        IsoWeek::parse(week.ok_or(Rejection::InvalidQuery)?).ok_or(Rejection::InvalidWeek)?;
    Ok(BackfillPage {
        week,
        cursor: cursor.filter(|cursor| !cursor.is_empty()),
    })
}

/// The answer to a readiness check whose store answered.
pub fn ready_response() -> Response {
    Response::text("ready")
}

/// The answer to a deletion request: how many records (one per week) were deleted.
pub fn forgotten_response(deleted_records: u64) -> Response {
    #[derive(serde::Serialize)]
    struct Forgotten {
        deleted_records: u64,
    }
    Response::json(200, "ok", &Forgotten { deleted_records })
}

/// The weeks that may hold a record written in the last `ttl_seconds` (a deletion request
/// visits each): from the week of the oldest such write, and one before it for a store that
/// deletes expired records late, to the current one.
pub fn retained_weeks(now: OffsetDateTime, ttl_seconds: u64) -> Vec<IsoWeek> {
    let ttl = time::Duration::seconds(i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2));
    let oldest = (now.checked_sub(ttl))
        .and_then(|oldest| oldest.checked_sub(time::Duration::weeks(1)))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let current = IsoWeek::containing(now);
    let mut weeks = vec![IsoWeek::containing(oldest)];
    while let Some(&last) = weeks.last() {
        match last.next() {
            Some(next) if last < current => weeks.push(next),
            _ => break,
        }
    }
    weeks
}

/// Decides a ping from its whole body, read under the cap with [`crate::CappedBody`].
pub fn decide_ping(
    head: &RequestHead<'_>,
    body: &[u8],
    now: OffsetDateTime,
    limiter: &mut impl Admission,
) -> Result<SessionWrite, Rejection> {
    check_received_length(head.content_length, body.len())?;
    let ping = parse_ping(body)?;
    admit_client(head, now, limiter)?;
    Ok(SessionWrite::new(ping, now))
}

/// Counts a valid body from the request's client against the abuse limit (a request without
/// a client address, in tests, counts nothing).
fn admit_client(
    head: &RequestHead<'_>,
    now: OffsetDateTime,
    limiter: &mut impl Admission,
) -> Result<(), Rejection> {
    match head.client {
        Some(client) => limiter.admit(client, u64::try_from(now.unix_timestamp()).unwrap_or(0)),
        None => Ok(()),
    }
}

/// Decides an erasure request from its whole body, read under the cap: the session to forget.
/// It counts against the client's abuse limit as a valid ping does, so that ids cannot be
/// tried at speed.
pub fn decide_erasure(
    head: &RequestHead<'_>,
    body: &[u8],
    now: OffsetDateTime,
    limiter: &mut impl Admission,
) -> Result<SessionId, Rejection> {
    check_received_length(head.content_length, body.len())?;
    let session_id = parse_erasure(body)?;
    admit_client(head, now, limiter)?;
    Ok(session_id)
}

/// The answer to an erasure request once the store has done it: the same whether the session
/// had records or not, so that it tells no one who is in the data.
pub fn erased_response() -> Response {
    Response::no_content()
}

/// The instant `unix_millis` after the epoch; out-of-range clocks read as the epoch.
pub fn utc_from_unix_millis(unix_millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_request_needs_the_token_delete_and_a_valid_session_id() {
        let token = tokens(true, true);
        let head = |method, path, authorization| RequestHead {
            method,
            path,
            authorization,
            ..RequestHead::default()
        };
        let bearer = Some(ADMIN_BEARER);
        let forget = head("DELETE", "/v1/session/relay-install-01", bearer);
        let (taken, next) = routed(&forget, &token);
        assert_eq!(taken, Route::Forget);
        assert_eq!(
            next,
            Next::Forget(SessionId::parse("relay-install-01").unwrap())
        );
        let status = |head: RequestHead<'_>, tokens: &Tokens| match routed(&head, tokens).1 {
            Next::Respond(response) => response.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            status(forget, &tokens(true, false)),
            404,
            "no admin token configured"
        );
        let get = head("GET", "/v1/session/relay-install-01", bearer);
        assert_eq!(status(get, &token), 405);
        let anonymous = head("DELETE", "/v1/session/relay-install-01", None);
        assert_eq!(status(anonymous, &token), 401);
        let with_the_read_token = head("DELETE", "/v1/session/relay-install-01", Some(READ_BEARER));
        assert_eq!(
            status(with_the_read_token, &token),
            401,
            "the read token does not delete"
        );
        let trailing_slash = head("DELETE", "/v1/session/", bearer);
        assert_eq!(routed(&trailing_slash, &token).0, Route::Unknown);
        for bad in ["/v1/session/short", "/v1/session/a/b/c/d/e/f"] {
            assert_eq!(status(head("DELETE", bad, bearer), &token), 400, "{bad}");
        }
    }

    #[test]
    fn a_deletion_visits_every_week_a_retained_record_can_be_in() {
        let now = time::macros::datetime!(2026-11-25 12:00 UTC);
        let weeks = retained_weeks(now, 7_257_600);
        let names: Vec<String> = weeks.iter().map(ToString::to_string).collect();
        assert_eq!(names.first().map(String::as_str), Some("2026-W35"));
        assert_eq!(names.last().map(String::as_str), Some("2026-W48"));
        assert_eq!(names.len(), 14);
        let across_the_year =
            retained_weeks(time::macros::datetime!(2027-01-02 00:00 UTC), 1_209_600);
        let names: Vec<String> = across_the_year.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["2026-W50", "2026-W51", "2026-W52", "2026-W53"]);
    }

    #[test]
    fn the_path_of_a_url_is_taken_as_sent_without_its_query_or_fragment() {
        let cases = [
            ("https://telemetry.example/v1/session", "/v1/session"),
            (
                "http://127.0.0.1:8787/v1/wau/2026-W48?token=x",
                "/v1/wau/2026-W48",
            ),
            ("https://h/healthz#top", "/healthz"),
            ("https://h", "/"),
            ("https://h?x=/v1/session", "/"),
            ("https://h/v1/%73ession", "/v1/%73ession"),
            ("https://h/v1/x/../session", "/v1/x/../session"),
            ("/v1/session?x", "/v1/session"),
        ];
        for (url, path) in cases {
            assert_eq!(path_of_url(url), path, "{url}");
        }
        let queries = [
            ("https://h/v1/wau?from=a&to=b", Some("from=a&to=b")),
            (
                "https://h/v1/wau/2026-W48?by=platform#x",
                Some("by=platform"),
            ),
            ("https://h/v1/wau/2026-W48?", Some("")),
            ("https://h/v1/wau/2026-W48", None),
        ];
        for (url, query) in queries {
            assert_eq!(query_of_url(url), query, "{url}");
        }
    }

    #[test]
    fn the_headers_a_route_reads_are_the_only_ones_its_decisions_depend_on() {
        // A head with every header set and one with only the route's own must decide alike.
        let full = |path| RequestHead {
            method: "POST",
            path,
            content_type: Some("text/plain"),
            content_length: Some("5000"),
            authorization: Some(READ_BEARER),
            client: None,
            query: None,
            accept: Some("text/csv"),
        };
        let token = tokens(true, true);
        for path in [
            "/v1/session",
            "/v1/wau/2026-W48",
            "/v1/wau",
            "/healthz",
            "/other",
        ] {
            let head = full(path);
            let read = Route::of_path(path).headers_read();
            let only = |name, value: Option<&'static str>| value.filter(|_| read.contains(&name));
            let trimmed = RequestHead {
                content_type: only("content-type", head.content_type),
                content_length: only("content-length", head.content_length),
                authorization: only("authorization", head.authorization),
                accept: only("accept", head.accept),
                ..head
            };
            for method in ["GET", "POST"] {
                let (a, b) = (
                    RequestHead { method, ..head },
                    RequestHead { method, ..trimmed },
                );
                assert_eq!(routed(&a, &token), routed(&b, &token), "{method} {path}");
            }
        }
    }
    use crate::abuse::AbuseLimiter;

    const READ_BEARER: &str = "Bearer read-token-0123456789abcdef0123456789";
    const ADMIN_BEARER: &str = "Bearer admin-token-0123456789abcdef0123456789";

    /// The tokens a test configures: each one the bearer's token above, or none.
    fn tokens(read: bool, admin: bool) -> Tokens {
        let token = |bearer: &str| {
            Token::from_configured(bearer.strip_prefix("Bearer "))
                .unwrap()
                .unwrap()
        };
        Tokens {
            read: read.then(|| token(READ_BEARER)),
            admin: admin.then(|| token(ADMIN_BEARER)),
        }
    }

    /// Routes with the abuse limit off and the readout not public.
    fn routed(head: &RequestHead<'_>, tokens: &Tokens) -> (Route, Next) {
        route(head, tokens, false, &mut AbuseLimiter::new(0), 0)
    }

    const PING: &[u8] = br#"{"protocol_version":"1.0.0","daemon_version":"1.0.0","session_id":"abcdefgh","platform":"linux","node_version":"20.0.0","primary_framework":"vue"}"#;

    fn head<'a>(method: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            content_type: Some("application/json"),
            ..RequestHead::default()
        }
    }

    fn status(next: &Next) -> Option<u16> {
        match next {
            Next::Respond(response) => Some(response.status),
            _ => None,
        }
    }

    #[test]
    fn ping_route_decides_method_then_type_then_declared_length() {
        let token = &tokens(false, false);
        let wrong_everything = RequestHead {
            content_type: Some("text/plain"),
            content_length: Some("5000"),
            ..head("GET", SESSION_PATH)
        };
        assert_eq!(status(&routed(&wrong_everything, token).1), Some(405));
        let post = RequestHead {
            method: "POST",
            ..wrong_everything
        };
        assert_eq!(status(&routed(&post, token).1), Some(415));
        let json = RequestHead {
            content_type: Some("Application/JSON ; charset=utf-8"),
            ..post
        };
        assert_eq!(status(&routed(&json, token).1), Some(413));
        let small = RequestHead {
            content_length: Some("150"),
            ..json
        };
        assert_eq!(routed(&small, token), (Route::Session, Next::ReadPing));
    }

    #[test]
    fn wrong_tokens_count_against_the_client_s_limit_and_then_even_the_right_one_waits() {
        let tokens = tokens(true, true);
        let mut limiter = AbuseLimiter::new(5);
        let from = |client, authorization| RequestHead {
            client: Some(client),
            authorization,
            ..head("GET", "/v1/wau/2026-W48")
        };
        let guess = from("203.0.113.5", Some("Bearer a-guess-of-the-token"));
        let statuses: Vec<_> = (0..8)
            .map(|_| status(&route(&guess, &tokens, false, &mut limiter, 100).1))
            .collect();
        assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429].map(Some));
        // The right token from the same client is refused as well, so that it reads like
        // every other guess; from another client it is served.
        let right = from("203.0.113.5", Some(READ_BEARER));
        assert_eq!(
            status(&route(&right, &tokens, false, &mut limiter, 101).1),
            Some(429)
        );
        let operator = from("198.51.100.7", Some(READ_BEARER));
        assert_eq!(
            status(&route(&operator, &tokens, false, &mut limiter, 101).1),
            None
        );
        // A right token counts nothing: the operator is never limited by reading.
        for _ in 0..20 {
            assert_eq!(
                status(&route(&operator, &tokens, false, &mut limiter, 102).1),
                None
            );
        }
        // Deletions count the same way, with the admin token.
        let deletion = RequestHead {
            method: "DELETE",
            path: "/v1/session/relay-install-01",
            ..from("192.0.2.9", Some(READ_BEARER))
        };
        let statuses: Vec<_> = (0..6)
            .map(|_| status(&route(&deletion, &tokens, false, &mut limiter, 100).1))
            .collect();
        assert_eq!(statuses, [401, 401, 401, 401, 401, 429].map(Some));
        // The window ends and the right token is served again.
        assert_eq!(
            status(&route(&right, &tokens, false, &mut limiter, 160).1),
            None
        );
    }

    #[test]
    fn a_long_public_series_counts_as_one_request_per_thirteen_weeks() {
        let tokens = tokens(true, false);
        let public = |query, client| RequestHead {
            client: Some(client),
            query: Some(query),
            ..head("GET", SERIES_PATH)
        };
        let mut limiter = AbuseLimiter::new(10);
        let two_years = public("from=2025-W01&to=2026-W53", "203.0.113.5");
        let (_, first) = route(&two_years, &tokens, true, &mut limiter, 100);
        assert!(matches!(first, Next::Readout(_)), "{first:?}");
        // 105 weeks took 9 of the 10 a minute: a second one is refused, a 13-week one is not.
        let (_, second) = route(&two_years, &tokens, true, &mut limiter, 101);
        assert_eq!(status(&second), Some(429));
        let mut limiter = AbuseLimiter::new(10);
        let quarter = public("from=2026-W01&to=2026-W13", "198.51.100.7");
        for _ in 0..10 {
            let (_, next) = route(&quarter, &tokens, true, &mut limiter, 100);
            assert!(matches!(next, Next::Readout(_)), "{next:?}");
        }
    }

    #[test]
    fn readout_without_a_token_does_not_exist() {
        for method in ["GET", "POST", "DELETE"] {
            let no_read_token = tokens(false, true);
            let (route_taken, next) = routed(&head(method, "/v1/wau/2026-W48"), &no_read_token);
            assert_eq!((route_taken, status(&next)), (Route::Unknown, Some(404)));
        }
    }

    #[test]
    fn readout_authenticates_before_it_reads_the_week() {
        let token = tokens(true, true);
        let anonymous = head("GET", "/v1/wau/not-a-week");
        assert_eq!(status(&routed(&anonymous, &token).1), Some(401));
        let authorised = RequestHead {
            authorization: Some(READ_BEARER),
            ..anonymous
        };
        let with_the_admin_token = RequestHead {
            authorization: Some(ADMIN_BEARER),
            ..anonymous
        };
        assert_eq!(
            status(&routed(&with_the_admin_token, &token).1),
            Some(401),
            "the admin token does not read"
        );
        assert_eq!(status(&routed(&authorised, &token).1), Some(400));
        let good = RequestHead {
            path: "/v1/wau/2026-W53",
            ..authorised
        };
        let week = crate::IsoWeek::parse("2026-W53").unwrap();
        let readout = Readout::Week {
            week,
            by: None,
            format: Format::Json,
            public: false,
        };
        assert_eq!(routed(&good, &token).1, Next::Readout(readout));
        let bad_query = RequestHead {
            query: Some("by=nothing"),
            ..good
        };
        assert_eq!(status(&routed(&bad_query, &token).1), Some(400));
        let anonymous_series = RequestHead {
            path: "/v1/wau",
            query: Some("from=x"),
            authorization: None,
            ..good
        };
        assert_eq!(status(&routed(&anonymous_series, &token).1), Some(401));
        let post = RequestHead {
            method: "POST",
            ..good
        };
        let next = routed(&post, &token).1;
        let Next::Respond(response) = next else {
            panic!("POST must be answered from the head")
        };
        assert_eq!(
            (response.status, response.header("allow")),
            (405, Some("GET"))
        );
    }

    #[test]
    fn an_accepted_ping_is_written_into_the_servers_week_and_day() {
        let now = time::macros::datetime!(2027-01-01 12:34:56.789 UTC);
        let mut limiter = AbuseLimiter::new(0);
        let write = decide_ping(&head("POST", SESSION_PATH), PING, now, &mut limiter).unwrap();
        assert_eq!(write.key(), "session:2026-W53:abcdefgh");
        assert_eq!(
            write.record_json,
            r#"{"protocol_version":"1.0.0","daemon_version":"1.0.0","platform":"linux","node_version":"20.0.0","primary_framework":"vue","first_seen_at":"2027-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn a_short_body_or_a_busy_client_is_refused() {
        let now = utc_from_unix_millis(1_795_000_000_000);
        let mut limiter = AbuseLimiter::new(1);
        let declared = RequestHead {
            content_length: Some("500"),
            ..head("POST", SESSION_PATH)
        };
        assert_eq!(
            decide_ping(&declared, PING, now, &mut limiter),
            Err(Rejection::IncompleteBody)
        );
        let client = RequestHead {
            client: Some("192.0.2.7"),
            ..head("POST", SESSION_PATH)
        };
        assert!(decide_ping(&client, PING, now, &mut limiter).is_ok());
        let refused = decide_ping(&client, PING, now, &mut limiter).unwrap_err();
        assert_eq!(refused.status(), 429);
        assert!(refused.into_response().header("retry-after").is_some());
    }

    #[test]
    fn the_largest_valid_record_fits_in_kv_metadata() {
        let version = format!("1.2.3-{}", "x".repeat(crate::limits::MAX_VERSION_CHARS - 6));
        let body = format!(
            r#"{{"protocol_version":"{version}","daemon_version":"{version}","session_id":"{}","platform":"openbsd","node_version":"v{}","primary_framework":"unknown"}}"#,
            "s".repeat(64),
            &version[..version.len() - 1]
        );
        let now = utc_from_unix_millis(253_402_300_799_000); // 9999-12-31T23:59:59Z
        let write = decide_ping(
            &head("POST", SESSION_PATH),
            body.as_bytes(),
            now,
            &mut AbuseLimiter::new(0),
        )
        .unwrap();
        assert!(write.record_json.len() <= crate::limits::MAX_KV_METADATA_BYTES);
    }

    #[test]
    fn every_response_carries_the_security_headers() {
        let responses = [
            Response::no_content(),
            Response::text("ok"),
            crate::weekly_active_response(
                crate::IsoWeek::parse("2026-W48").unwrap(),
                3,
                false,
                Format::Csv,
            ),
            Rejection::PayloadTooLarge.into_response(),
            Rejection::Unauthorized.into_response(),
        ];
        for response in responses {
            assert_eq!(response.header("cache-control"), Some("no-store"));
            assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        }
    }

    #[test]
    fn a_backfill_page_is_decided_by_the_readout_s_rules() {
        let token = tokens(true, true).admin;
        let head = |method, authorization, query| RequestHead {
            method,
            authorization,
            query,
            ..RequestHead::default()
        };
        let ok = head("POST", Some(ADMIN_BEARER), Some("week=2026-W48&cursor=c1"));
        let page_of_ok = backfill_page(&ok, token.as_ref(), &mut AbuseLimiter::new(0), 0).unwrap();
        assert_eq!(
            (page_of_ok.week.to_string(), page_of_ok.cursor),
            ("2026-W48".into(), Some("c1"))
        );
        let first = head("POST", Some(ADMIN_BEARER), Some("cursor=&week=2026-W53"));
        assert_eq!(
            backfill_page(&first, token.as_ref(), &mut AbuseLimiter::new(0), 0)
                .unwrap()
                .cursor,
            None
        );
        let bearer = Some(ADMIN_BEARER);
        let page = |request: &RequestHead<'static>, token: Option<&Token>| {
            backfill_page(request, token, &mut AbuseLimiter::new(0), 0)
        };
        for (request, refused) in [
            (
                head("GET", bearer, Some("week=2026-W48")),
                Rejection::MethodNotAllowed { allow: "POST" },
            ),
            (
                head("POST", Some("Bearer wrong"), Some("week=2026-W99")),
                Rejection::Unauthorized,
            ),
            (
                head("POST", Some(READ_BEARER), Some("week=2026-W48")),
                Rejection::Unauthorized,
            ),
            (
                head("POST", None, Some("week=2026-W48")),
                Rejection::Unauthorized,
            ),
            (
                head("POST", bearer, Some("week=2026-W99")),
                Rejection::InvalidWeek,
            ),
            (
                head("POST", bearer, Some("week=2025-W53")),
                Rejection::InvalidWeek,
            ),
            (
                head("POST", bearer, Some("week=2026-W48&week=2026-W48")),
                Rejection::InvalidQuery,
            ),
            (
                head("POST", bearer, Some("week=2026-W48&limit=5")),
                Rejection::InvalidQuery,
            ),
            (head("POST", bearer, None), Rejection::InvalidQuery),
        ] {
            assert_eq!(page(&request, token.as_ref()), Err(refused), "{request:?}");
        }
        assert_eq!(page(&ok, None), Err(Rejection::NotFound));
    }
}
