//! The fetch handler: request in, core decision, response out, one wide event logged.
//!
//! Every call into JavaScript costs more than the Rust around it (bench/profile.mjs), so the
//! handler takes the runtime's own `Request` and returns its own `Response` rather than
//! workers-rs's wrappers (which read the method, URL, headers and `cf` up front and copy the
//! body), fetches only the headers its route reads, and keeps per isolate what does not
//! change between requests: the configuration, the abuse limiter and the response inits.

use std::cell::{OnceCell, RefCell};

use futures_util::StreamExt;
use telemetry_core::abuse::refused_by_shared_limit;
use telemetry_core::config::ConfigError;
use telemetry_core::event::{
    ConfigErrorEvent, Handled, LIMITED_BY_PROCESS, LIMITED_BY_SHARED, StoreOperation, method_label,
    to_line,
};
use telemetry_core::limits::MAX_DISCARDED_BYTES;
use telemetry_core::stored_week::COUNTED_BY;
use telemetry_core::{
    AbuseLimiter, CappedBody, Config, IsoWeek, Next, Readout, Rejection, RequestHead, Response,
    Route, SessionId, SessionWrite, decide_erasure, decide_ping, deletion_key, erased_response,
    expires_at, forgotten_response, path_of_url, query_of_url, ready_response, retained_weeks,
    route, session_key, utc_from_unix_millis,
};
use time::OffsetDateTime;
use worker::js_sys::{Date, Uint8Array};
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen_futures::{JsFuture, future_to_promise};
use worker::worker_sys::Context as JsContext;
use worker::worker_sys::ext::RequestExt;
use worker::worker_sys::web_sys;
use worker::{ByteStream, Context, Env, console_log};

use crate::backfill;
use crate::kv::{Sessions, TARGET, log_failure};
use crate::record_batch::{self, Pending};
use crate::shared_limit::SharedLimit;
use crate::weeks::{Weeks, record_line};

/// What an isolate keeps between requests, made from `env` on its first request. A Worker's
/// vars and secrets do not change for the life of an isolate: a new value is a new
/// deployment, served by new isolates.
pub(crate) struct Isolate {
    pub(crate) config: Config,
    pub(crate) limiter: RefCell<AbuseLimiter>,
    /// Deployed as the backfill (`WORKER_ROLE = "backfill"`), not as the telemetry Worker.
    backfill: bool,
}

thread_local! {
    /// An invalid configuration stays one: every request answers 500 until redeployed.
    static ISOLATE: OnceCell<Result<&'static Isolate, ConfigError>> = const { OnceCell::new() };
    /// One `ResponseInit` (status and headers) per distinct answer, made once and reused:
    /// the `Response` constructor copies it, so each request makes one call instead of one
    /// per header. Bounded, since `retry-after` values vary.
    static RESPONSE_INITS: RefCell<Vec<ResponseInit>> = const { RefCell::new(Vec::new()) };
}

/// The bundle of `tests/recovery.mjs` only (feature `recovery-check`): a panic while the
/// isolate's limiter is borrowed, which would fail every later request (the borrow is never
/// released) unless the module is reset, as `src/entry.js` and the bindings' glue do.
#[cfg(feature = "recovery-check")]
#[allow(clippy::panic, reason = "the panic is what the check is for")]
fn recovery_check(req: &web_sys::Request, isolate: &Isolate) {
    if req.url().ends_with("/__recovery-check/panic") {
        let _held = isolate.limiter.borrow_mut();
        panic!("the panic of the recovery check");
    }
}

/// A runtime `ResponseInit` and the status and headers it was made from.
struct ResponseInit {
    status: u16,
    headers: Vec<(&'static str, String)>,
    init: web_sys::ResponseInit,
}
const MAX_RESPONSE_INITS: usize = 32;

/// The header the platform puts the client's address in; used by the abuse limit only.
const CLIENT_ADDRESS_HEADER: &str = "cf-connecting-ip";

/// The fetch handler, exported as the runtime calls it. An answer decided from the request's
/// head alone (the health check, most refusals) is returned as the `Response` itself; only a
/// ping (its body, its write) and a readout (the store) go through a `Promise`, so the rest
/// skip the async executor's promise and microtask.
#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen)]
pub fn fetch(req: web_sys::Request, env: Env, ctx: JsContext) -> Result<JsValue, JsValue> {
    let started_ms = Date::now();
    let isolate = match isolate(&env) {
        Ok(isolate) => isolate,
        Err(error) => {
            console_log!("{}", to_line(&ConfigErrorEvent::new(TARGET, &error)));
            let handled = Handled::new(Route::Unknown, Rejection::Internal.into_response());
            return finish(&req, &req.method(), started_ms, handled).map(JsValue::from);
        }
    };
    #[cfg(feature = "recovery-check")]
    recovery_check(&req, isolate);
    let now_seconds = (started_ms / 1000.0) as u64;
    if isolate.backfill {
        let answer = async move {
            let response = backfill::answer(&req, &env, isolate, now_seconds).await;
            into_js_response(response).map(JsValue::from)
        };
        return Ok(future_to_promise(answer).into());
    }
    let head = OwnedHead::read(&req);
    let config = &isolate.config;
    let (route_taken, next) = route(
        &head.borrow(),
        &config.tokens,
        config.public_readout,
        &mut *isolate.limiter.borrow_mut(),
        now_seconds,
    );
    // With the limit counted across isolates, every request that carries a token counts
    // there too, right or wrong (and, in public mode, every readout): the isolate's limiter alone would let a client over the
    // shared limit tell a right guess (served) from a wrong one (429).
    // So does a public readout, which anyone may ask for.
    let public_read = config.public_readout && route_taken == Route::WeeklyActive;
    let shared_count = (head.authorization.is_some() || public_read)
        && matches!(route_taken, Route::WeeklyActive | Route::Forget)
        && counted_across_isolates(&env, isolate, head.client.as_deref());
    let next = match next {
        Next::Respond(response) if !(shared_count && response.status == 401) => {
            let handled = Handled::new(route_taken, response);
            return finish(&req, &head.method, started_ms, handled).map(JsValue::from);
        }
        later => later,
    };
    let ctx = Context::new(ctx);
    let answer = async move {
        if shared_count {
            let now = utc_from_unix_millis(started_ms as i64);
            // The isolate counted a wrong token already: a failing binding counts nothing more.
            let counted = count_shared(&env, isolate, head.client.as_deref(), now, false).await;
            if let Err((limited, by)) = counted {
                let handled = Handled {
                    limited_by: Some(by),
                    ..Handled::new(route_taken, limited.into_response())
                };
                return finish(&req, &head.method, started_ms, handled).map(JsValue::from);
            }
        }
        let handled = match next {
            Next::ReadPing => ping(&req, &head.borrow(), &env, &ctx, isolate, started_ms).await,
            Next::ReadErasure => erase(&req, &head.borrow(), &env, isolate, started_ms).await,
            Next::Readout(readout) => answer_readout(&env, isolate, readout).await,
            Next::Forget(session_id) => forget(&env, isolate, &session_id, started_ms).await,
            Next::CheckStore => check_store(&env, isolate, started_ms).await,
            Next::Respond(response) => Handled::new(route_taken, response),
        };
        let handled = Handled {
            route: route_taken,
            ..handled
        };
        finish(&req, &head.method, started_ms, handled).map(JsValue::from)
    };
    Ok(future_to_promise(answer).into())
}

/// Logs the request's wide event and makes the runtime's response.
fn finish(
    req: &web_sys::Request,
    method: &str,
    started_ms: f64,
    handled: Handled,
) -> Result<web_sys::Response, JsValue> {
    let colo = colo(req);
    let duration_ms = (Date::now() - started_ms).max(0.0) as u64;
    let event = handled.event(TARGET, method_label(method), duration_ms, colo.as_deref());
    console_log!("{}", to_line(&event));
    into_js_response(handled.response)
}

/// The isolate's state, made on first use, or what is wrong with the configuration.
fn isolate(env: &Env) -> Result<&'static Isolate, ConfigError> {
    ISOLATE.with(|cell| {
        cell.get_or_init(|| {
            // Vars and secrets share one namespace in a Worker's env.
            let config = Config::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()))?;
            // Without either store an accepted ping could not be kept: refuse to run rather
            // than answer 204 and drop it.
            if Sessions::bind(env).is_none() {
                return Err(config_error(crate::kv::BINDING, "a KV namespace binding"));
            }
            if Weeks::bind(env, config.week_shards).is_none() {
                return Err(config_error(
                    crate::weeks::BINDING,
                    "a Durable Object namespace binding (class WeekTally)",
                ));
            }
            let role = env.var(backfill::ROLE_VAR).ok().map(|v| v.to_string());
            let backfill = match role.as_deref() {
                None | Some("") => false,
                Some(backfill::ROLE) => true,
                Some(_) => {
                    return Err(config_error(backfill::ROLE_VAR, "unset, or backfill"));
                }
            };
            let limiter = RefCell::new(AbuseLimiter::new(config.abuse_limit_per_minute));
            // Made once per isolate and kept for its life, so leaking it is the lifetime.
            Ok(&*Box::leak(Box::new(Isolate {
                config,
                limiter,
                backfill,
            })))
        })
        .clone()
    })
}

/// A binding the deployment lacks, or a role it cannot take, as the configuration error it
/// is: it names the binding or variable, never a value.
fn config_error(variable: &'static str, expected: &'static str) -> ConfigError {
    ConfigError { variable, expected }
}

/// The request's head as the core reads it, fetched once: the method, the URL, and only
/// the headers its route reads (each header is a call into JavaScript).
struct OwnedHead {
    method: String,
    url: String,
    content_type: Option<String>,
    content_length: Option<String>,
    authorization: Option<String>,
    accept: Option<String>,
    client: Option<String>,
}

impl OwnedHead {
    fn read(req: &web_sys::Request) -> Self {
        let url = req.url();
        let path_route = Route::of_path(path_of_url(&url));
        let wanted = path_route.headers_read();
        let headers = (!wanted.is_empty()).then(|| req.headers());
        let header = |name: &str| match &headers {
            Some(headers) if wanted.contains(&name) => headers.get(name).ok().flatten(),
            _ => None,
        };
        // The routes that count against the abuse limit: pings, and wrong tokens.
        let client = match (&headers, path_route) {
            (
                Some(headers),
                Route::Session | Route::Erase | Route::WeeklyActive | Route::Forget,
            ) => headers.get(CLIENT_ADDRESS_HEADER).ok().flatten(),
            _ => None,
        };
        Self {
            method: req.method(),
            content_type: header("content-type"),
            content_length: header("content-length"),
            authorization: header("authorization"),
            accept: header("accept"),
            client,
            url,
        }
    }

    fn borrow(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            path: path_of_url(&self.url),
            content_type: self.content_type.as_deref(),
            content_length: self.content_length.as_deref(),
            authorization: self.authorization.as_deref(),
            client: self.client.as_deref(),
            query: query_of_url(&self.url),
            accept: self.accept.as_deref(),
        }
    }
}

/// A ping the head admitted: reads the body under the cap, decides it, and hands the write
/// to `waitUntil`; the answer goes out before the write.
async fn ping(
    req: &web_sys::Request,
    head: &RequestHead<'_>,
    env: &Env,
    ctx: &Context,
    isolate: &Isolate,
    now_ms: f64,
) -> Handled {
    let body = match read_capped(req, head.content_length.is_some()).await {
        Ok(body) => body,
        Err(rejection) => return Handled::new(Route::Session, rejection.into_response()),
    };
    let now = utc_from_unix_millis(now_ms as i64);
    let decide = |limiter: &mut AbuseLimiter| decide_ping(head, body.as_bytes(), now, limiter);
    let (decided, limited_by) = decide_counted(env, isolate, head, now, decide).await;
    let (response, week) = match (
        decided,
        Sessions::bind(env),
        Weeks::bind(env, isolate.config.week_shards),
    ) {
        (Ok(write), Some(sessions), Some(weeks)) => {
            let week = write.week;
            let expires_at = expires_at(now.unix_timestamp(), isolate.config.session_ttl_seconds);
            // The runtime keeps the isolate alive for the write after the answer.
            ctx.wait_until(keep(sessions, weeks, write, expires_at));
            (Response::no_content(), Some(week))
        }
        // Checked when the isolate starts; an env that loses a binding later is not kept.
        (Ok(_), _, _) => (Rejection::StoreUnavailable.into_response(), None),
        (Err(rejection), _, _) => (rejection.into_response(), None),
    };
    Handled {
        body_bytes: body.len(),
        week,
        limited_by,
        ..Handled::new(Route::Session, response)
    }
}

/// Keeps an accepted ping, inside `waitUntil`, with the pings bound for the same object that
/// reach this isolate meanwhile ([`record_batch`]): this ping's future keeps their batches, or
/// hands this ping to the future that keeps them.
async fn keep(sessions: Sessions, weeks: Weeks, write: SessionWrite, expires_at: i64) {
    let object = weeks.object_of(&write);
    let pending = Pending { write, expires_at };
    let in_one_request = |batch| keep_batch(&sessions, &weeks, &object, batch);
    record_batch::keep(&object, pending, in_one_request).await;
}

/// Keeps a batch of pings bound for one object, in one request to it. The object decides each,
/// since it holds the week's records: a repeat that changed nothing writes nothing and costs no
/// KV operation at all; a new or changed record moves the tallies there, and is then put in KV
/// as the object wrote it. When the object fails, KV is not written, and the session's next
/// ping, still new or changed to the object, is counted then. When KV fails (its daily write
/// limit on the Free plan, say), the session stays counted and the object notes that KV missed
/// it: its next ping, even an unchanged one, puts the record again. A failure logs a
/// `store_failure` for each ping it touched.
async fn keep_batch(sessions: &Sessions, weeks: &Weeks, object: &str, batch: Vec<Pending>) {
    let lines = (batch.iter())
        .map(|kept| {
            record_line(
                kept.write.session_id.as_str(),
                kept.expires_at,
                &kept.write.record_json,
            )
        })
        .collect();
    let answers = weeks.send_records(object, lines).await;
    let failed = |write: &SessionWrite, error: &JsValue| {
        let id = write.session_id.as_str();
        log_failure(StoreOperation::Write, Some(write.week), Some(id), error);
    };
    let written: Vec<_> = (batch.iter().zip(answers))
        .filter_map(|(kept, answer)| Some((kept, answer.transpose()?)))
        .collect();
    // Every put is sent before the first is awaited; a session twice in the batch is put once,
    // as its last ping left it. The sessions KV may have missed are noted in one request: those
    // whose put failed, and those the object failed to answer (it may have kept them).
    let mut puts = Vec::new();
    let mut missed = Vec::new();
    let put_later = |at: usize, id: &str| {
        let mut later = written.iter().skip(at + 1);
        later.any(|(kept, answer)| answer.is_ok() && kept.write.session_id.as_str() == id)
    };
    for (at, (kept, answer)) in written.iter().enumerate() {
        match answer {
            Ok(_) if put_later(at, kept.write.session_id.as_str()) => {}
            Ok(record) => {
                let put = sessions.put_record(&kept.write, record, kept.expires_at);
                puts.push((kept, put));
            }
            Err(error) => {
                failed(&kept.write, &JsValue::from(error.as_str()));
                missed.push(kept);
            }
        }
    }
    for (kept, put) in puts {
        let put = match put {
            Ok(sent) => sent.await.map(drop),
            Err(error) => Err(error),
        };
        if let Err(error) = put {
            // The put's failure is logged whether or not the object takes the note.
            failed(&kept.write, &error);
            missed.push(kept);
        }
    }
    if missed.is_empty() {
        return;
    }
    let ids: Vec<_> = missed
        .iter()
        .map(|kept| kept.write.session_id.as_str())
        .collect();
    if let Err(error) = weeks.note_not_in_kv(object, &ids).await {
        for kept in missed {
            failed(&kept.write, &error);
        }
    }
}

/// A readout the head admitted: the core says which tallies to fetch, the weeks' objects
/// answer them at once (one request per week and shard, a few rows each, whatever the week's size),
/// and the core answers from them.
async fn answer_readout(env: &Env, isolate: &Isolate, readout: Readout) -> Handled {
    let week = readout.week();
    let now_seconds = (Date::now() / 1000.0) as i64;
    let retention = isolate.config.retention();
    let fetched = match Weeks::bind(env, isolate.config.week_shards) {
        None => Err(JsValue::from("no WEEKS binding")),
        Some(weeks) => {
            async {
                // Every week's request is sent before the first answer is awaited.
                let sent = (readout.fetches(retention, now_seconds).into_iter())
                    .map(|(week, dimension)| weeks.tally(week, dimension))
                    .collect::<Result<Vec<_>, JsValue>>()?;
                let mut tallies = Vec::with_capacity(sent.len());
                for tally in sent {
                    tallies.push(tally.await?);
                }
                Ok(tallies)
            }
            .await
        }
    };
    let response = match fetched {
        Ok(tallies) => readout.answer(tallies, &isolate.config, now_seconds),
        Err(error) => {
            log_failure(StoreOperation::Read, week, None, &error);
            Rejection::StoreUnavailable.into_response()
        }
    };
    Handled {
        week,
        ..Handled::new(Route::WeeklyActive, response)
    }
}

/// The readiness check: a KV read and a read of this week's objects, the two stores a ping
/// needs; 503 while either fails.
async fn check_store(env: &Env, isolate: &Isolate, now_ms: f64) -> Handled {
    let week = IsoWeek::containing(utc_from_unix_millis(now_ms as i64));
    let checked = async {
        let (sessions, weeks) = match (
            Sessions::bind(env),
            Weeks::bind(env, isolate.config.week_shards),
        ) {
            (Some(sessions), Some(weeks)) => (sessions, weeks),
            _ => return Err(JsValue::from("no SESSIONS or WEEKS binding")),
        };
        let kv = sessions.lookup("readyz")?;
        let object = weeks.tally(week, COUNTED_BY)?;
        kv.await?;
        object.await.map(drop)
    };
    let response = match checked.await {
        Ok(()) => {
            crate::kv::note_answered(StoreOperation::Read);
            ready_response()
        }
        Err(error) => {
            log_failure(StoreOperation::Read, Some(week), None, &error);
            Rejection::StoreUnavailable.into_response()
        }
    };
    Handled::new(Route::Ready, response)
}

/// A deletion request the head admitted: the session's records go ([`delete_everywhere`]),
/// and the answer says how many there were.
async fn forget(env: &Env, isolate: &Isolate, session_id: &SessionId, now_ms: f64) -> Handled {
    let now = utc_from_unix_millis(now_ms as i64);
    let response = match delete_everywhere(env, isolate, session_id, now).await {
        Ok(deleted) => forgotten_response(deleted),
        Err(rejection) => rejection.into_response(),
    };
    Handled::new(Route::Forget, response)
}

/// An erasure request the head admitted: read and decided as a ping is, then the session's
/// records go ([`delete_everywhere`]), with the same answer whether there were any.
async fn erase(
    req: &web_sys::Request,
    head: &RequestHead<'_>,
    env: &Env,
    isolate: &Isolate,
    now_ms: f64,
) -> Handled {
    let body = match read_capped(req, head.content_length.is_some()).await {
        Ok(body) => body,
        Err(rejection) => return Handled::new(Route::Erase, rejection.into_response()),
    };
    let now = utc_from_unix_millis(now_ms as i64);
    let decide = |limiter: &mut AbuseLimiter| decide_erasure(head, body.as_bytes(), now, limiter);
    let (decided, limited_by) = decide_counted(env, isolate, head, now, decide).await;
    let response = match decided {
        Ok(session_id) => match delete_everywhere(env, isolate, &session_id, now).await {
            Ok(_) => erased_response(),
            Err(rejection) => rejection.into_response(),
        },
        Err(rejection) => rejection.into_response(),
    };
    Handled {
        body_bytes: body.len(),
        limited_by,
        ..Handled::new(Route::Erase, response)
    }
}

/// Deletes a session's records from each week that may hold one, all weeks at once, from
/// its week's object (and so its tallies) first, then from KV. Returns how many there were.
async fn delete_everywhere(
    env: &Env,
    isolate: &Isolate,
    session_id: &SessionId,
    now: OffsetDateTime,
) -> Result<u64, Rejection> {
    let id = session_id.as_str();
    let forgotten = async {
        let (sessions, weeks) = match (
            Sessions::bind(env),
            Weeks::bind(env, isolate.config.week_shards),
        ) {
            (Some(sessions), Some(weeks)) => (sessions, weeks),
            _ => return Err(JsValue::from("no SESSIONS or WEEKS binding")),
        };
        // Every week's object is asked at once, then KV, each key once its object answered.
        let weeks_held = retained_weeks(now, isolate.config.session_ttl_seconds);
        let sent = (weeks_held.iter())
            .map(|&week| weeks.delete(week, id))
            .collect::<Result<Vec<_>, JsValue>>()?;
        // A week whose object failed stops nothing: every week whose object answered is
        // cleared from KV too, so KV never holds a record its week no longer counts (the
        // rollback would take it back at the DNS swap). Where the object
        // held nothing, KV is read first and deleted only if it holds the key: a read costs
        // a tenth of a delete, so an erasure of an id no week holds (which anyone may send)
        // costs no writes.
        let mut deleted = 0;
        let mut failed = None;
        let mut kv_deletes = Vec::with_capacity(sent.len());
        let mut kv_reads = Vec::new();
        for (&week, in_object) in weeks_held.iter().zip(sent) {
            let key = session_key(week, id);
            match in_object.await {
                Ok(0) => kv_reads.push((sessions.lookup(&key), key)),
                Ok(in_week) => {
                    deleted += in_week;
                    kv_deletes.push(key);
                }
                Err(error) => failed = Some(error),
            }
        }
        for (read, key) in kv_reads {
            match async { read?.await }.await {
                Ok(held) if held.as_string().is_some() => {
                    kv_deletes.push(key);
                }
                Ok(_) => {}
                Err(error) => failed = Some(error),
            }
        }
        // The deletion journal (RUNBOOK's DNS swap): a session this Worker held is noted for
        // the TTL, so that the rollback deletes it too and no record of it comes back. Only
        // when there was something to delete: an erasure of an id no one holds (which anyone
        // may send) writes nothing. Before KV's records go: should the note fail, they stay,
        // the request fails, and its retry (finding them) writes the note.
        if !kv_deletes.is_empty() {
            let now_unix = now.unix_timestamp();
            let until = expires_at(now_unix, isolate.config.session_ttl_seconds);
            sessions.put_marker(&deletion_key(id), until).await?;
        }
        let sent: Vec<_> = (kv_deletes.iter())
            .map(|key| sessions.delete(key))
            .collect();
        for kv_delete in sent {
            if let Err(error) = async { kv_delete?.await }.await {
                failed = Some(error);
            }
        }
        failed.map_or(Ok(deleted), Err)
    };
    forgotten.await.map_err(|error| {
        log_failure(StoreOperation::Delete, None, Some(id), &error);
        Rejection::StoreUnavailable
    })
}

/// The bindings of Cloudflare's Rate Limiting, which count across isolates: a client, and
/// its block (IPv4 /24, IPv6 /48) at `PREFIX_LIMIT_FACTOR` times the client's limit.
const SHARED_LIMIT_BINDING: &str = "ABUSE_LIMIT";
const SHARED_BLOCK_LIMIT_BINDING: &str = "ABUSE_LIMIT_BLOCK";

/// Decides a request's body (a ping, an erasure) with `decide` and counts it against the
/// abuse limit: the Rate Limiting bindings when they and `ABUSE_LIMIT_KEY` are configured
/// (they see keyed hashes of the client and its block, never the address), else, or when a
/// binding fails, the isolate's own limiter. Only a valid body counts. Returns which limit
/// refused it, if one did.
async fn decide_counted<Decided>(
    env: &Env,
    isolate: &Isolate,
    head: &RequestHead<'_>,
    now: OffsetDateTime,
    decide: impl FnOnce(&mut AbuseLimiter) -> Result<Decided, Rejection>,
) -> (Result<Decided, Rejection>, Option<&'static str>) {
    if !counted_across_isolates(env, isolate, head.client) {
        let decided = decide(&mut isolate.limiter.borrow_mut());
        let limited = matches!(decided, Err(Rejection::TooManyRequests { .. }));
        return (decided, limited.then_some(LIMITED_BY_PROCESS));
    }
    match decide(&mut AbuseLimiter::new(0)) {
        Ok(decided) => match count_shared(env, isolate, head.client, now, true).await {
            Ok(()) => (Ok(decided), None),
            Err(limited) => (Err(limited.0), Some(limited.1)),
        },
        Err(rejection) => (Err(rejection), None),
    }
}

/// Whether the shared limit counts `client`: a key, a limit, an address, and the binding.
fn counted_across_isolates(env: &Env, isolate: &Isolate, client: Option<&str>) -> bool {
    let config = &isolate.config;
    config.shared_limit_key.is_some()
        && client.is_some()
        && config.abuse_limit_per_minute > 0
        && SharedLimit::bind(env, SHARED_LIMIT_BINDING).is_some()
}

/// Counts one more (a valid ping, a request with a token) from `client` across isolates:
/// against the client, then, if it is within its limit, its block, so that one address over
/// its own limit does not use up its neighbours'. A binding that fails leaves the count to the
/// isolate's own limiter when `fall_back` (else it counted already). The refusal and which
/// limit made it.
async fn count_shared(
    env: &Env,
    isolate: &Isolate,
    client: Option<&str>,
    now: OffsetDateTime,
    fall_back: bool,
) -> Result<(), (Rejection, &'static str)> {
    let client = client.unwrap_or_default();
    let in_isolate = || {
        if fall_back {
            count_in_isolate(isolate, client, now)
        } else {
            Ok(())
        }
    };
    let (Some(key), Some(binding)) = (
        isolate.config.shared_limit_key.as_ref(),
        SharedLimit::bind(env, SHARED_LIMIT_BINDING),
    ) else {
        return in_isolate();
    };
    let within = async {
        if !binding.count(&key.client_key(client))?.await? {
            return Ok(false);
        }
        let block = key
            .block_key(client)
            .zip(SharedLimit::bind(env, SHARED_BLOCK_LIMIT_BINDING));
        match block {
            Some((block_key, block_binding)) => block_binding.count(&block_key)?.await,
            None => Ok(true),
        }
    };
    match within.await {
        Ok(true) => Ok(()),
        Ok(false) => Err((refused_by_shared_limit(), LIMITED_BY_SHARED)),
        Err::<_, JsValue>(_) => in_isolate(),
    }
}

fn count_in_isolate(
    isolate: &Isolate,
    client: &str,
    now: OffsetDateTime,
) -> Result<(), (Rejection, &'static str)> {
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    (isolate.limiter.borrow_mut().admit(client, seconds))
        .map_err(|limited| (limited, LIMITED_BY_PROCESS))
}

/// Reads the body under the cap. With a declared length (already checked against the cap
/// by the core, and what frames the body on the wire) it is read whole, in one call; without
/// one (chunked) chunk by chunk, stopping at the first chunk that passes the cap. A request
/// without a body has an empty one.
async fn read_capped(req: &web_sys::Request, declared: bool) -> Result<CappedBody, Rejection> {
    let mut capped = CappedBody::new();
    if declared {
        let whole = match req.array_buffer() {
            Ok(promise) => JsFuture::from(promise).await,
            Err(error) => Err(error),
        };
        // A client that aborts mid-body: what arrived is judged, as in the stream below.
        if let Ok(whole) = whole {
            capped.push(&Uint8Array::new(&whole).to_vec())?;
        }
        return Ok(capped);
    }
    let Some(body) = req.body() else {
        return Ok(capped);
    };
    let mut stream = ByteStream::from(body);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if let Err(too_large) = capped.push(&bytes) {
                    discard_rest(&mut stream).await;
                    return Err(too_large);
                }
            }
            // An error from the stream (a framing error the runtime saw) is refused, never
            // stored. A client that aborts without one looks like the end of the stream to
            // workers-rs: what arrived is then judged as the whole body (SECURITY.md).
            Err(_) => return Err(Rejection::IncompleteBody),
        }
    }
    Ok(capped)
}

/// Reads and drops what is left of an oversized body, up to a bound, so that the runtime
/// delivers the 413 (see `MAX_DISCARDED_BYTES`). Nothing of it is kept.
async fn discard_rest(stream: &mut ByteStream) {
    let mut discarded = 0usize;
    while discarded < MAX_DISCARDED_BYTES {
        match stream.next().await {
            Some(Ok(bytes)) => discarded += bytes.len(),
            _ => return,
        }
    }
}

/// The data centre that served the request, where the runtime says (not in every local run).
fn colo(req: &web_sys::Request) -> Option<String> {
    // `worker::Cf::colo` unwraps; the raw getter reports a missing colo as an error instead.
    req.cf()?.colo().ok()
}

/// The runtime's `Response` for the core's, from the isolate's init for its status and
/// headers: one call into JavaScript for the response, whatever its headers.
fn into_js_response(response: Response) -> Result<web_sys::Response, JsValue> {
    let init = RESPONSE_INITS.with(|inits| -> Result<web_sys::ResponseInit, JsValue> {
        let mut inits = inits.borrow_mut();
        let same = |made: &&ResponseInit| {
            made.status == response.status && made.headers == response.headers
        };
        if let Some(made) = inits.iter().find(same) {
            return Ok(made.init.clone());
        }
        let headers = web_sys::Headers::new()?;
        for (name, value) in &response.headers {
            headers.set(name, value)?;
        }
        let init = web_sys::ResponseInit::new();
        init.set_status(response.status);
        init.set_headers(&headers);
        if inits.len() < MAX_RESPONSE_INITS {
            inits.push(ResponseInit {
                status: response.status,
                headers: response.headers.clone(),
                init: init.clone(),
            });
        }
        Ok(init)
    })?;
    let body = (!response.body.is_empty()).then_some(response.body.as_str());
    web_sys::Response::new_with_opt_str_and_init(body, &init)
}
