//! The protocol core: every rule of the telemetry service, with no I/O and no clock.
//!
//! # Layout
//!
//! - [`service`]: the request path as decisions: [`route`] a request from its head, then
//!   [`decide_ping`] from its body or a [`Readout`] from the store.
//! - [`ping`]: the payload's wire form, its rules (`garde`), and the valid [`SessionPing`].
//! - [`body`]: the 1 KiB cap, on the declared length and while streaming.
//! - [`week`]: ISO weeks from instants and from `YYYY-Www`.
//! - [`record`]: the stored record, its key, its expiry and the rule a repeat writes by.
//! - [`stored_week`]: the one model of a week every store keeps (records, [`tally`]s along
//!   each [`dimension`], expiry) and how a ping, a deletion or an expiry changes it.
//! - [`summary`]: what a week keeps of its counts once its records go, and for how long.
//! - [`readout`]: what a readout fetches from a store and how its answer is written.
//! - [`auth`]: the read token.
//! - [`rejection`] and [`response`]: every status, header and error body the service sends.
//! - [`abuse`], [`config`], [`event`], [`limits`]: the rate limit, settings, log lines, limits.
//!
//! Both deploy targets (the Worker and the Axum rollback) call only this crate to decide, so
//! they cannot drift apart. It takes `now` as an argument and never panics on any input.

pub mod abuse;
pub mod auth;
pub mod body;
pub mod config;
pub mod dashboard;
pub mod dimension;
pub mod event;
pub mod limits;
pub mod ping;
pub mod readout;
pub mod record;
pub mod rejection;
pub mod response;
pub mod service;
pub mod stored_week;
pub mod summary;
pub mod tally;
pub mod week;

pub use abuse::{AbuseLimiter, Admission, SharedLimitKey};
pub use auth::{Token, Tokens};
pub use body::CappedBody;
pub use config::Config;
pub use dimension::Dimension;
pub use ping::{SessionId, SessionPing, parse_ping};
pub use readout::{
    Breakdown, Format, PublishedValues, Readout, Series, series_response, weekly_active_response,
};
pub use record::{
    SessionWrite, StoredRecord, day_start, deletion_key, expires_at, parse_deletion_key,
    parse_session_key, record_to_write, session_key, week_key_prefix,
};
pub use rejection::Rejection;
pub use response::Response;
pub use service::{
    BackfillPage, Next, RequestHead, Route, backfill_page, decide_erasure, decide_ping,
    erased_response, forgotten_response, path_of_url, query_of_url, ready_response, retained_weeks,
    route, utc_from_unix_millis,
};
pub use tally::{ProfileMoves, Tally, TallyMoves};
pub use week::IsoWeek;
