//! The request path, as decisions: route a request from its head, then decide a ping from
//! its body or a readout from its count. Adapters do only the I/O in between.

use serde::Serialize;
use time::OffsetDateTime;

use crate::abuse::AbuseLimiter;
use crate::auth::ReadToken;
use crate::body::check_declared_length;
use crate::ping::parse_ping;
use crate::record::SessionWrite;
use crate::rejection::Rejection;
use crate::response::Response;
use crate::week::IsoWeek;

pub const SESSION_PATH: &str = "/v1/session";
pub const WEEKLY_ACTIVE_PREFIX: &str = "/v1/wau/";
pub const HEALTH_PATH: &str = "/healthz";

/// What the adapter knows before reading a body. Header values are as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The path only; a query string is never looked at (a token there is not accepted).
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub authorization: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Session,
    WeeklyActive,
    Health,
    Unknown,
}

impl Route {
    /// The route's name in a wide event; an unknown path is never logged as sent.
    pub fn label(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::WeeklyActive => "wau",
            Self::Health => "healthz",
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
    /// Count this week's sessions, then answer with [`weekly_active_response`].
    CountWeek(IsoWeek),
}

/// Routes a request from its head alone, deciding everything that needs no body or store.
pub fn route(head: &RequestHead<'_>, read_token: Option<&ReadToken>) -> (Route, Next) {
    if head.path == SESSION_PATH {
        return (Route::Session, session_head(head));
    }
    if head.path == HEALTH_PATH {
        let next = if head.method == "GET" {
            Next::Respond(Response::text("ok"))
        } else {
            reject(Rejection::MethodNotAllowed { allow: "GET" })
        };
        return (Route::Health, next);
    }
    if let Some(week) = head.path.strip_prefix(WEEKLY_ACTIVE_PREFIX) {
        // Without a token the readout does not exist, whatever the method or week.
        if let Some(token) = read_token {
            return (Route::WeeklyActive, readout_head(head, token, week));
        }
    }
    (Route::Unknown, reject(Rejection::NotFound))
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

fn readout_head(head: &RequestHead<'_>, token: &ReadToken, week: &str) -> Next {
    if head.method != "GET" {
        return reject(Rejection::MethodNotAllowed { allow: "GET" });
    }
    // Authentication first: an anonymous caller learns nothing, not even which weeks parse.
    if !token.admits(head.authorization) {
        return reject(Rejection::Unauthorized);
    }
    match IsoWeek::parse(week) {
        Some(week) => Next::CountWeek(week),
        None => reject(Rejection::InvalidWeek),
    }
}

/// Decides a ping from its whole (already capped) body. `client` is the address the abuse
/// limit counts, when the adapter knows one.
pub fn decide_ping(
    body: &[u8],
    now: OffsetDateTime,
    client: Option<&str>,
    limiter: &mut AbuseLimiter,
) -> Result<SessionWrite, Rejection> {
    let ping = parse_ping(body)?;
    if let Some(client) = client {
        let now_seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        limiter.admit(client, now_seconds)?;
    }
    Ok(SessionWrite::new(ping, now))
}

#[derive(Serialize)]
struct WeeklyActive {
    week: String,
    weekly_active_sessions: u64,
}

/// The readout's 200.
pub fn weekly_active_response(week: IsoWeek, sessions: u64) -> Response {
    let body = WeeklyActive {
        week: week.to_string(),
        weekly_active_sessions: sessions,
    };
    Response::json(200, "ok", &body)
}

/// The instant `unix_millis` after the epoch; out-of-range clocks read as the epoch.
pub fn utc_from_unix_millis(unix_millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
