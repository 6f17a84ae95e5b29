//! The backfill role: this same bundle, deployed as `telemetry-backfill` with
//! `WORKER_ROLE = "backfill"` (scripts/backfill/wrangler.toml) only while it is needed, hands
//! the records KV holds for a week to the week's object, a page per request, so that records
//! that reached KV another way (a week put back from the rollback) are counted. It takes the
//! core's token and week rules and the object protocol of [`crate::weeks`]: there is no second
//! implementation of any of them: the request is decided by the core's `backfill_page`.
//!
//! `POST /?week=<YYYY-Www>[&cursor=<C>]` with the admin token answers
//! `{"handed":N,"cursor":C|null}`; `scripts/backfill.mjs` follows the cursor. The object applies
//! the core's rules (a record it holds already changes nothing), so a page handed twice, or a
//! whole week run again, counts nothing twice.

use telemetry_core::stored_week::values_of;
use telemetry_core::{
    IsoWeek, Rejection, RequestHead, Response, SessionId, SessionWrite, backfill_page, path_of_url,
    query_of_url, week_key_prefix,
};
use worker::Env;
use worker::js_sys::{Array, JSON, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::worker_sys::web_sys;

use crate::adapter::Isolate;
use crate::kv::Sessions;
use crate::weeks::Weeks;

/// The variable that names this role; unset, the bundle is the telemetry Worker.
pub const ROLE_VAR: &str = "WORKER_ROLE";
pub const ROLE: &str = "backfill";

/// Keys per request when `BACKFILL_PAGE` is unset: one KV list and that many object
/// requests, far inside a request's limits.
const DEFAULT_PAGE: u64 = 500;

/// Answers one backfill request: the core decides it from its head ([`backfill_page`]),
/// this hands the page over.
pub async fn answer(
    req: &web_sys::Request,
    env: &Env,
    isolate: &Isolate,
    now_seconds: u64,
) -> Response {
    let method = req.method();
    let url = req.url();
    let headers = req.headers();
    let authorization = headers.get("authorization").ok().flatten();
    // For the abuse limit only: wrong tokens count, as on the telemetry Worker's routes.
    let client = headers.get("cf-connecting-ip").ok().flatten();
    let head = RequestHead {
        method: &method,
        path: path_of_url(&url),
        authorization: authorization.as_deref(),
        client: client.as_deref(),
        query: query_of_url(&url),
        ..RequestHead::default()
    };
    let admin_token = isolate.config.tokens.admin.as_ref();
    let decided = backfill_page(
        &head,
        admin_token,
        &mut *isolate.limiter.borrow_mut(),
        now_seconds,
    );
    let page = match decided {
        Ok(page) => page,
        Err(rejection) => return rejection.into_response(),
    };
    let (Some(sessions), Some(weeks)) = (
        Sessions::bind(env),
        Weeks::bind(env, isolate.config.week_shards),
    ) else {
        return Rejection::Internal.into_response();
    };
    let size = env
        .var("BACKFILL_PAGE")
        .ok()
        .and_then(|size| size.to_string().parse().ok())
        .unwrap_or(DEFAULT_PAGE);
    // Written by hand: `serde_json::json!` would bring a map type into the bundle.
    match hand_page(&sessions, &weeks, page.week, page.cursor, size).await {
        Ok((handed, next)) => {
            let next = next.map_or_else(|| "null".to_owned(), |next| quoted(&next));
            let body = format!(r#"{{"handed":{handed},"cursor":{next}}}"#);
            Response::raw_json(200, "ok", body)
        }
        Err((status, error, handed)) => {
            let body = format!(r#"{{"error":"{error}","handed":{handed}}}"#);
            Response::raw_json(status, error, body)
        }
    }
}

/// A KV cursor as a JSON string.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "null".to_owned())
}

/// Hands one page of the week's keys to its object: how many, and the cursor of the next
/// page; or a status, an error code and how many were handed before it.
async fn hand_page(
    sessions: &Sessions,
    weeks: &Weeks,
    week: IsoWeek,
    cursor: Option<&str>,
    page: u64,
) -> Result<(u64, Option<String>), (u16, &'static str, u64)> {
    let prefix = week_key_prefix(week);
    let listed = sessions
        .list(&prefix, page, cursor)
        .await
        .map_err(|_| (502, "kv_failed", 0))?;
    let field = |object: &JsValue, name: &str| Reflect::get(object, &name.into()).ok();
    let keys: Array = field(&listed, "keys").unwrap_or_default().into();
    let mut handed = 0;
    for key in keys.iter() {
        // Not a record as the Worker writes it: said by position, never by key (an id).
        let not_a_record = (500, "not_a_record", handed);
        let name = field(&key, "name").and_then(|name| name.as_string());
        let session_id = name
            .as_deref()
            .and_then(|name| name.strip_prefix(&prefix))
            .and_then(SessionId::parse)
            .ok_or(not_a_record)?;
        let expires_at = field(&key, "expiration")
            .and_then(|expiration| expiration.as_f64())
            .ok_or(not_a_record)?;
        // The record as KV holds it: the fields in the order the core wrote them.
        let record = field(&key, "metadata")
            .filter(|metadata| metadata.is_object())
            .and_then(|metadata| JSON::stringify(&metadata).ok())
            .and_then(|record| record.as_string())
            .filter(|record| values_of(record).is_ok())
            .ok_or(not_a_record)?;
        let write = SessionWrite {
            week,
            session_id,
            record_json: record,
        };
        weeks
            .record(&write, &write.record_json, expires_at as i64)
            .await
            .map_err(|_| (502, "week_object_failed", handed))?;
        handed += 1;
    }
    let complete = field(&listed, "list_complete").and_then(|done| done.as_bool());
    let next = field(&listed, "cursor").and_then(|next| next.as_string());
    Ok((handed, if complete == Some(false) { next } else { None }))
}
