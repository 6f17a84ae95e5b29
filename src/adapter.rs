//! The fetch handler: request in, core decision, response out, one wide event logged.

use std::cell::RefCell;

use futures_util::StreamExt;
use telemetry_core::abuse::refused_by_shared_limit;
use telemetry_core::event::{
    LIMITED_BY_PROCESS, LIMITED_BY_SHARED, RequestEvent, method_label, to_line,
};
use telemetry_core::limits::MAX_DISCARDED_BYTES;
use telemetry_core::{
    AbuseLimiter, CappedBody, Config, IsoWeek, Next, Rejection, RequestHead, Response, Route,
    SessionWrite, decide_ping, route, utc_from_unix_millis, weekly_active_response,
};
use time::OffsetDateTime;
use worker::worker_sys::ext::RequestExt;
use worker::{Context, Date, Env, Headers, Request, console_log, event};

use crate::kv::{Sessions, TARGET};

thread_local! {
    /// The isolate's abuse limiter; created on the first ping with the configured limit.
    static LIMITER: RefCell<Option<AbuseLimiter>> = const { RefCell::new(None) };
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<worker::Response> {
    let started_ms = Date::now().as_millis();
    let method = method_label(&req.inner().method());
    let colo = colo(&req);
    let handled = handle(req, &env, &ctx).await;
    let event = RequestEvent::new(
        TARGET,
        handled.route,
        method,
        &handled.response,
        handled.body_bytes,
        Date::now().as_millis().saturating_sub(started_ms),
        handled.week,
    )
    .colo(colo.as_deref())
    .limited_by(handled.limited_by);
    console_log!("{}", to_line(&event));
    into_worker_response(handled.response)
}

/// What one request came to, for the response and its wide event.
struct Handled {
    route: Route,
    response: Response,
    body_bytes: usize,
    week: Option<IsoWeek>,
    /// On a 429, which limit answered.
    limited_by: Option<&'static str>,
}

async fn handle(mut req: Request, env: &Env, ctx: &Context) -> Handled {
    let mut handled = Handled {
        route: Route::Unknown,
        response: Rejection::Internal.into_response(),
        body_bytes: 0,
        week: None,
        limited_by: None,
    };
    // Vars and secrets share one namespace in a Worker's env.
    let Ok(config) = Config::from_lookup(|name| env.var(name).ok().map(|v| v.to_string())) else {
        console_log!("{{\"event\":\"config_error\",\"target\":\"{TARGET}\"}}");
        return handled;
    };
    let method = req.inner().method();
    let path = req.path();
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let (content_type, content_length) = (header("content-type"), header("content-length"));
    let (authorization, client) = (header("authorization"), header("cf-connecting-ip"));
    let head = RequestHead {
        method: &method,
        path: &path,
        content_type: content_type.as_deref(),
        content_length: content_length.as_deref(),
        authorization: authorization.as_deref(),
        client: client.as_deref(),
    };
    let (route, next) = route(&head, config.read_token.as_ref());
    handled.route = route;
    handled.response = match next {
        Next::Respond(response) => response,
        Next::ReadPing => {
            let body = match read_capped(&mut req).await {
                Ok(body) => body,
                Err(rejection) => {
                    return Handled {
                        response: rejection.into_response(),
                        ..handled
                    };
                }
            };
            handled.body_bytes = body.len();
            let now = utc_from_unix_millis(i64::try_from(Date::now().as_millis()).unwrap_or(0));
            let (decided, limited_by) = decide_counted(env, &config, &head, &body, now).await;
            handled.limited_by = limited_by;
            match (decided, Sessions::bind(env)) {
                (Ok(write), Ok(sessions)) => {
                    handled.week = Some(write.week);
                    // The answer goes out now; the runtime keeps the isolate alive for the write.
                    ctx.wait_until(sessions.put(
                        write,
                        now.unix_timestamp(),
                        config.session_ttl_seconds,
                    ));
                    Response::no_content()
                }
                (Ok(_), Err(_)) => Rejection::StoreUnavailable.into_response(),
                (Err(rejection), _) => rejection.into_response(),
            }
        }
        Next::CountWeek(week) => {
            handled.week = Some(week);
            match Sessions::bind(env) {
                Ok(sessions) => match sessions.count_week(week).await {
                    Some(count) => weekly_active_response(week, count),
                    None => Rejection::StoreUnavailable.into_response(),
                },
                Err(_) => Rejection::StoreUnavailable.into_response(),
            }
        }
    };
    handled
}

/// The binding of Cloudflare's Rate Limiting, which counts a client across isolates.
const SHARED_LIMIT_BINDING: &str = "ABUSE_LIMIT";

/// Decides a ping and counts it against the abuse limit: the Rate Limiting binding when it
/// and `ABUSE_LIMIT_KEY` are configured (it sees a keyed hash of the client, never the
/// address), else, or when the binding fails, the isolate's own limiter. Only a valid ping
/// counts. Returns which limit refused it, if one did.
async fn decide_counted(
    env: &Env,
    config: &Config,
    head: &RequestHead<'_>,
    body: &CappedBody,
    now: OffsetDateTime,
) -> (Result<SessionWrite, Rejection>, Option<&'static str>) {
    let shared = match (&config.shared_limit_key, head.client) {
        (Some(key), Some(client)) if config.abuse_limit_per_minute > 0 => env
            .rate_limiter(SHARED_LIMIT_BINDING)
            .ok()
            .map(|binding| (binding, key.client_key(client))),
        _ => None,
    };
    let Some((binding, client_key)) = shared else {
        let decided = in_isolate(config, |limiter| {
            decide_ping(head, body.as_bytes(), now, limiter)
        });
        let limited = matches!(decided, Err(Rejection::TooManyRequests { .. }));
        return (decided, limited.then_some(LIMITED_BY_PROCESS));
    };
    let write = match decide_ping(head, body.as_bytes(), now, &mut AbuseLimiter::new(0)) {
        Ok(write) => write,
        Err(rejection) => return (Err(rejection), None),
    };
    match binding.limit(client_key).await {
        Ok(outcome) if outcome.success => (Ok(write), None),
        Ok(_) => (Err(refused_by_shared_limit()), Some(LIMITED_BY_SHARED)),
        Err(_) => {
            let client = head.client.unwrap_or_default();
            let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
            match in_isolate(config, |limiter| limiter.admit(client, seconds)) {
                Ok(()) => (Ok(write), None),
                Err(limited) => (Err(limited), Some(LIMITED_BY_PROCESS)),
            }
        }
    }
}

/// Runs `count` with the isolate's abuse limiter, made on first use with the configured limit.
fn in_isolate<T>(config: &Config, count: impl FnOnce(&mut AbuseLimiter) -> T) -> T {
    LIMITER.with(|cell| {
        let mut cell = cell.borrow_mut();
        count(cell.get_or_insert_with(|| AbuseLimiter::new(config.abuse_limit_per_minute)))
    })
}

/// Reads the body chunk by chunk, stopping at the first chunk that passes the cap.
async fn read_capped(req: &mut Request) -> Result<CappedBody, Rejection> {
    let mut body = CappedBody::new();
    // workers-rs reports a request without a body as an error: that body is empty.
    let Ok(mut stream) = req.stream() else {
        return Ok(body);
    };
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if let Err(too_large) = body.push(&bytes) {
                    discard_rest(&mut stream).await;
                    return Err(too_large);
                }
            }
            // A client that aborts looks like the end of the stream; what arrived is judged.
            Err(_) => break,
        }
    }
    Ok(body)
}

/// Reads and drops what is left of an oversized body, up to a bound, so that the runtime
/// delivers the 413 (see `MAX_DISCARDED_BYTES`). Nothing of it is kept.
async fn discard_rest(stream: &mut worker::ByteStream) {
    let mut discarded = 0usize;
    while discarded < MAX_DISCARDED_BYTES {
        match stream.next().await {
            Some(Ok(bytes)) => discarded += bytes.len(),
            _ => return,
        }
    }
}

/// The data centre that served the request, where the runtime says (not in every local run).
fn colo(req: &Request) -> Option<String> {
    // `worker::Cf::colo` unwraps; the raw getter reports a missing colo as an error instead.
    req.inner().cf()?.colo().ok()
}

fn into_worker_response(response: Response) -> worker::Result<worker::Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    let builder = worker::Response::builder()
        .with_status(response.status)
        .with_headers(headers);
    Ok(if response.body.is_empty() {
        builder.empty()
    } else {
        builder.fixed(response.body.into_bytes())
    })
}
