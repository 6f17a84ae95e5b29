//! The HTTP side: one handler that moves bytes between hyper and the protocol core, exactly
//! as the Worker's fetch handler does.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use futures_util::StreamExt;
use telemetry_core::event::{Handled, LIMITED_BY_PROCESS, StoreOperation, method_label, to_line};
use telemetry_core::{
    AbuseLimiter, CappedBody, Config, Next, Readout, Rejection, RequestHead, Response, Route,
    SessionId, decide_erasure, decide_ping, erased_response, forgotten_response, ready_response,
    route, utc_from_unix_millis,
};

use crate::connection::Slot;
use crate::store::Store;
use crate::writer::Queue;
use crate::{TARGET, unix_now};

pub struct AppState {
    pub config: Config,
    /// The header a reverse proxy puts the client's address in (`--client-address-header`);
    /// without it, the peer address is the client's.
    pub client_address_header: Option<String>,
    /// How long a request's body may take to arrive: past it, 408.
    pub body_timeout: Duration,
    pub store: Store,
    pub queue: Queue,
    pub limiter: Mutex<AbuseLimiter>,
}

/// Every path goes to one handler: the core does the routing, so both targets route alike.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> axum::response::Response {
    let started = Instant::now();
    let method = method_label(request.method().as_str());
    let handled = decide(&state, request).await;
    if handled.route == Route::Session {
        let response = &handled.response;
        crate::metrics::METRICS.ping_answered(response.status, response.outcome);
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    crate::log_line(to_line(&handled.event(TARGET, method, duration_ms, None)));
    into_axum_response(handled.response)
}

async fn decide(state: &AppState, request: Request) -> Handled {
    let (parts, body) = request.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    // The client's address, for the abuse limit only; it is never stored or logged.
    let client = client_address(state, &parts);
    let head = RequestHead {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        content_type: header("content-type"),
        content_length: header("content-length"),
        authorization: header("authorization"),
        client: client.as_deref(),
        query: parts.uri.query(),
        accept: header("accept"),
    };
    // The dashboard's files are static: served before the core routes what is left.
    if let Some(page) = crate::dashboard::answer(head.method, head.path) {
        return Handled::new(Route::Dashboard, page);
    }
    let now_seconds = u64::try_from(unix_now()).unwrap_or(0);
    let config = &state.config;
    let (route_taken, next) = route(
        &head,
        &config.tokens,
        config.public_readout,
        &mut &state.limiter,
        now_seconds,
    );
    match next {
        Next::Respond(response) => Handled::new(route_taken, response),
        Next::ReadPing => ping(state, &parts, body, &head).await,
        Next::ReadErasure => erase(state, &parts, body, &head).await,
        Next::Readout(readout) => answer_readout(state, readout).await,
        Next::Forget(session_id) => forget(state, session_id).await,
        Next::CheckStore => {
            let response = match state.store.check().await {
                Ok(()) => {
                    crate::note_store_answered(StoreOperation::Read);
                    ready_response()
                }
                Err(error) => {
                    crate::log_store_failure(StoreOperation::Read, None, &error.text());
                    Rejection::StoreUnavailable.into_response()
                }
            };
            Handled::new(Route::Ready, response)
        }
    }
}

/// Reads a body under the cap and in time, telling the connection's watchdog (absent in
/// unit tests) that the client is sending meanwhile.
async fn read_body(state: &AppState, parts: &Parts, body: Body) -> Result<CappedBody, Rejection> {
    let slot = parts.extensions.get::<Arc<Slot>>();
    slot.inspect(|slot| slot.reading_body());
    let body = tokio::time::timeout(state.body_timeout, read_capped(body)).await;
    slot.inspect(|slot| slot.handling());
    body.unwrap_or(Err(Rejection::BodyTimeout))
}

/// A ping the head admitted: reads the body under the cap and in time, decides it, and
/// queues the write; 204 only once it is queued (a full queue is a 503, never a loss).
async fn ping(state: &AppState, parts: &Parts, body: Body, head: &RequestHead<'_>) -> Handled {
    let body = match read_body(state, parts, body).await {
        Ok(body) => body,
        Err(rejection) => return Handled::new(Route::Session, rejection.into_response()),
    };
    let now = utc_from_unix_millis(unix_now().saturating_mul(1000));
    let decided = decide_ping(head, body.as_bytes(), now, &mut &state.limiter);
    let (response, week) = match decided {
        Ok(write) => {
            let week = write.week;
            match state.queue.push(write) {
                Ok(()) => (Response::no_content(), Some(week)),
                Err(rejection) => (rejection.into_response(), Some(week)),
            }
        }
        Err(rejection) => (rejection.into_response(), None),
    };
    Handled {
        body_bytes: body.len(),
        week,
        limited_by: (response.status == 429).then_some(LIMITED_BY_PROCESS),
        ..Handled::new(Route::Session, response)
    }
}

/// A readout the head admitted: the core says which tallies to fetch, they are fetched from
/// the store in order, and the core answers from them.
async fn answer_readout(state: &AppState, readout: Readout) -> Handled {
    let week = readout.week();
    let now = unix_now();
    let fetched = async {
        let mut tallies = Vec::new();
        for (week, dimension) in readout.fetches(state.config.retention(), now) {
            tallies.push(state.store.tally_week(week, dimension).await?);
        }
        Ok::<_, crate::store::StoreError>(tallies)
    };
    let answered = (fetched.await).map(|tallies| readout.answer(tallies, &state.config, now));
    let response = answered.unwrap_or_else(|error| {
        crate::log_store_failure(StoreOperation::Read, week, &error.text());
        Rejection::StoreUnavailable.into_response()
    });
    Handled {
        week,
        ..Handled::new(Route::WeeklyActive, response)
    }
}

/// An erasure request the head admitted: read and decided as a ping is, then the session's
/// records go from every week as an operator's deletion takes them, and the answer is the
/// same whether there were any.
async fn erase(state: &AppState, parts: &Parts, body: Body, head: &RequestHead<'_>) -> Handled {
    let body = match read_body(state, parts, body).await {
        Ok(body) => body,
        Err(rejection) => return Handled::new(Route::Erase, rejection.into_response()),
    };
    let now = utc_from_unix_millis(unix_now().saturating_mul(1000));
    let response = match decide_erasure(head, body.as_bytes(), now, &mut &state.limiter) {
        Ok(session_id) => match state.store.delete_session(session_id, unix_now()).await {
            Ok(_) => erased_response(),
            Err(error) => {
                crate::log_store_failure(StoreOperation::Delete, None, &error.text());
                Rejection::StoreUnavailable.into_response()
            }
        },
        Err(rejection) => rejection.into_response(),
    };
    Handled {
        body_bytes: body.len(),
        limited_by: (response.status == 429).then_some(LIMITED_BY_PROCESS),
        ..Handled::new(Route::Erase, response)
    }
}

/// A deletion request the head admitted: the session's records go from every week, as
/// `rollback delete-session` deletes them.
async fn forget(state: &AppState, session_id: SessionId) -> Handled {
    let response = match state.store.delete_session(session_id, unix_now()).await {
        Ok(deleted) => forgotten_response(deleted as u64),
        Err(error) => {
            crate::log_store_failure(StoreOperation::Delete, None, &error.text());
            Rejection::StoreUnavailable.into_response()
        }
    };
    Handled::new(Route::Forget, response)
}

/// From the configured proxy header: its last entry, the address the proxy itself saw, when
/// that parses as an address; else the peer address of the connection (behind the proxy, the
/// proxy's own: one bucket that every request without a usable address shares). A client
/// that sends no header, an empty one or a value of its choosing is therefore still limited,
/// and cannot pick a bucket of its own.
fn client_address(state: &AppState, parts: &Parts) -> Option<String> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let forwarded = state.client_address_header.as_ref().and_then(|name| {
        let value = parts.headers.get(name.as_str())?.to_str().ok()?;
        value.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
    });
    forwarded.or(peer).map(|address| address.to_string())
}

/// Reads the body chunk by chunk, stopping at the first chunk that passes the cap.
async fn read_capped(body: Body) -> Result<CappedBody, Rejection> {
    let mut capped = CappedBody::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => capped.push(&bytes)?,
            // A framing error (a bad chunk size, a chunked body cut off) or a client that went
            // away: the body is not what the client sent, so it is refused, never stored; a
            // proxy in front may already have answered the client otherwise.
            Err(_) => return Err(Rejection::IncompleteBody),
        }
    }
    Ok(capped)
}

fn into_axum_response(response: Response) -> axum::response::Response {
    let mut out = axum::response::Response::new(Body::from(response.body));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt;

    const PING: &str = r#"{"protocol_version":"1.0.0","daemon_version":"1.0.0","session_id":"SESSION","platform":"linux","node_version":"20.0.0","primary_framework":"vue"}"#;

    fn temp_store(name: &str) -> (Store, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("rollback-unit-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store =
            crate::store::SqliteStore::open(&path, telemetry_core::summary::Retention::default())
                .unwrap();
        (Store::Sqlite(store), path)
    }

    const UNIT_TOKEN: &str = "unit-test-read-token-0123456789abcdef";

    fn state(store: Store, queue: Queue) -> Arc<AppState> {
        let token = UNIT_TOKEN;
        let config =
            Config::from_lookup(|name| (name == "WAU_READ_TOKEN").then(|| token.into())).unwrap();
        Arc::new(AppState {
            config,
            client_address_header: None,
            body_timeout: Duration::from_secs(10),
            store,
            queue,
            limiter: Mutex::new(AbuseLimiter::new(0)),
        })
    }

    async fn post_ping(app: &Router, id: &str) -> axum::response::Response {
        let request = HttpRequest::post("/v1/session")
            .header("content-type", "application/json")
            .body(Body::from(PING.replace("SESSION", id)))
            .unwrap();
        app.clone().oneshot(request).await.unwrap()
    }

    async fn readout(app: &Router) -> axum::response::Response {
        let week = telemetry_core::IsoWeek::containing(utc_from_unix_millis(unix_now() * 1000));
        let request = HttpRequest::get(format!("/v1/wau/{week}"))
            .header("authorization", format!("Bearer {UNIT_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap()
    }

    fn break_store(path: &std::path::Path) {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection
            .execute_batch("DROP TABLE sessions; DROP TABLE tallies; DROP TABLE summaries; DROP TABLE deletions")
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_answers_503_and_a_recovered_store_gets_every_queued_record() {
        let (store, path) = temp_store("queue");
        break_store(&path);
        let (queue, writer, _) = crate::writer::start_with_capacity(store.clone(), 3600, 1);
        let app = app(state(store.clone(), queue));
        // The writer takes the first ping and retries it; the second fills the queue.
        assert_eq!(post_ping(&app, "queued-1").await.status(), 204);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(post_ping(&app, "queued-2").await.status(), 204);
        let full = post_ping(&app, "queued-3").await;
        assert_eq!(full.status(), 503);
        assert_eq!(full.headers()["retry-after"], "5");
        assert_eq!(
            readout(&app).await.status(),
            503,
            "readout while the store is down"
        );

        // The store comes back: both acknowledged pings are written, the refused one is not.
        crate::store::SqliteStore::open(&path, telemetry_core::summary::Retention::default())
            .unwrap();
        drop(app);
        writer.drain().await;
        let week = telemetry_core::IsoWeek::containing(utc_from_unix_millis(unix_now() * 1000));
        assert_eq!(store.count_week(week).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn the_peer_address_feeds_the_abuse_limit() {
        let (store, _path) = temp_store("abuse");
        let (queue, _writer, _) = crate::writer::start(store.clone(), 3600);
        let state = state(store, queue);
        *state.limiter.lock().unwrap() = AbuseLimiter::new(1);
        let app = app(state);
        let from = |peer: [u8; 4], id: &str| {
            let mut request = HttpRequest::post("/v1/session")
                .header("content-type", "application/json")
                .body(Body::from(PING.replace("SESSION", id)))
                .unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
            request
        };
        let first = app
            .clone()
            .oneshot(from([192, 0, 2, 1], "abuse-aaa-1"))
            .await
            .unwrap();
        let second = app
            .clone()
            .oneshot(from([192, 0, 2, 1], "abuse-aaa-2"))
            .await
            .unwrap();
        let other = app
            .clone()
            .oneshot(from([192, 0, 2, 2], "abuse-bbb-1"))
            .await
            .unwrap();
        assert_eq!(
            (first.status(), second.status(), other.status()),
            (
                StatusCode::NO_CONTENT,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::NO_CONTENT
            )
        );
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::*;
    use axum::http::Request as HttpRequest;

    #[test]
    fn behind_a_proxy_the_last_forwarded_address_is_the_client() {
        let path = std::env::temp_dir().join(format!("rollback-proxy-{}.db", std::process::id()));
        let store = Store::Sqlite(
            crate::store::SqliteStore::open(&path, telemetry_core::summary::Retention::default())
                .unwrap(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let queue = runtime.block_on(async { crate::writer::start(store.clone(), 60).0 });
        let state = AppState {
            config: Config::from_lookup(|_| None).unwrap(),
            client_address_header: Some("x-forwarded-for".into()),
            body_timeout: Duration::from_secs(10),
            store,
            queue,
            limiter: Mutex::new(AbuseLimiter::new(0)),
        };
        let parts = |value: Option<&str>| {
            let mut request = HttpRequest::get("/");
            if let Some(value) = value {
                request = request.header("x-forwarded-for", value);
            }
            let mut request = request.body(()).unwrap();
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 1))));
            request.into_parts().0
        };
        let spoofed = parts(Some("198.51.100.66, 203.0.113.5"));
        assert_eq!(
            client_address(&state, &spoofed).as_deref(),
            Some("203.0.113.5")
        );
        // No usable address in the header: the proxy's own, one bucket for all such
        // requests, never no limit and never a bucket the client names.
        for unusable in [
            None,
            Some(""),
            Some("   "),
            Some("garbage"),
            Some("203.0.113.5, x"),
        ] {
            assert_eq!(
                client_address(&state, &parts(unusable)).as_deref(),
                Some("10.0.0.1"),
                "{unusable:?}"
            );
        }
        let v6 = parts(Some("2001:db8::1"));
        assert_eq!(client_address(&state, &v6).as_deref(), Some("2001:db8::1"));
        let direct = AppState {
            client_address_header: None,
            ..state
        };
        assert_eq!(
            client_address(&direct, &parts(None)).as_deref(),
            Some("10.0.0.1")
        );
    }
}
