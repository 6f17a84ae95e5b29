//! The `WEEKS` Durable Object namespace as the Worker calls it: one [`WeekTally`] per ISO
//! week, named by the week, and the internal protocol between them, named here once: the
//! paths, the headers a request carries, and the tally lines an answer holds.
//!
//! [`WeekTally`]: crate::week_tally::WeekTally

use telemetry_core::{Dimension, IsoWeek, SessionWrite, Tally};
use worker::Env;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::web_sys;
use worker::worker_sys::{DurableObject, DurableObjectNamespace};

pub const BINDING: &str = "WEEKS";

/// Any origin: a stub's `fetch` goes to its object whatever the URL's host.
const ORIGIN: &str = "https://week";

/// `POST`: keep a ping's record ([`SESSION_HEADER`], [`EXPIRES_AT_HEADER`], [`RECORD_HEADER`]);
/// answers 200 with the record kept, or 204 when the object held that record already.
pub const RECORD_PATH: &str = "/record";
/// `POST`: delete a session ([`SESSION_HEADER`]); answers how many records went.
pub const DELETE_PATH: &str = "/delete";
/// `GET /tally/<dimension>`: the week's tally along a dimension, a [`tally_line`] per value.
pub const TALLY_PREFIX: &str = "/tally/";
pub const SESSION_HEADER: &str = "x-session";
/// Seconds since the epoch, as an integer.
pub const EXPIRES_AT_HEADER: &str = "x-expires-at";
pub const RECORD_HEADER: &str = "x-record";

/// One value of a tally in an answer's body: `<value> <sessions>` and a line break (values
/// are versions and names of a validated ping: never a space or a line break).
pub fn tally_line(value: &str, sessions: u64) -> String {
    format!("{value} {sessions}\n")
}

/// The tally of an answer made of [`tally_line`]s.
fn parse_tally_lines(lines: &str) -> Result<Tally, JsValue> {
    let mut tally = Tally::default();
    for line in lines.lines() {
        let (value, sessions) = line
            .split_once(' ')
            .and_then(|(value, sessions)| Some((value, sessions.parse().ok()?)))
            .ok_or_else(|| JsValue::from("a tally line"))?;
        tally.add(value, sessions);
    }
    Ok(tally)
}

pub struct Weeks {
    namespace: DurableObjectNamespace,
}

impl Weeks {
    /// The namespace bound as `WEEKS`; `None` when the deployment has no such binding.
    pub fn bind(env: &Env) -> Option<Self> {
        let namespace = crate::kv::binding(env, BINDING)?.unchecked_into();
        Some(Self { namespace })
    }

    /// Hands a new or changed record to its week's object, which keeps it and moves the
    /// tallies (or, if it holds that record already, does nothing). Answers the record the
    /// object holds now: the one handed over, or with `other` in a field past the week's
    /// bound on values (`telemetry_core::stored_week::keep_within`).
    pub async fn record(
        &self,
        write: &SessionWrite,
        record: &str,
        expires_at: i64,
    ) -> Result<String, JsValue> {
        let headers = [
            (SESSION_HEADER, write.session_id.as_str()),
            (EXPIRES_AT_HEADER, &expires_at.to_string()),
            (RECORD_HEADER, record),
        ];
        let (_, held) = self.call(write.week, RECORD_PATH, &headers).await?;
        Ok(held)
    }

    /// Deletes a session from a week (a deletion request): the request is sent at once, and
    /// the future it returns answers how many records went, so that many weeks are asked
    /// together without a join combinator in the bundle.
    pub fn delete(
        &self,
        week: IsoWeek,
        session_id: &str,
    ) -> Result<impl Future<Output = Result<u64, JsValue>> + use<>, JsValue> {
        let sent = self.send(week, DELETE_PATH, &[(SESSION_HEADER, session_id)])?;
        Ok(async move {
            let (_, deleted) = answer(sent).await?;
            deleted.parse().map_err(|_| "a count".into())
        })
    }

    /// The week's live sessions by value along `dimension`, from the object's tallies: one
    /// request, a few rows, whatever the week's size. Sent at once, as [`Weeks::delete`].
    pub fn tally(
        &self,
        week: IsoWeek,
        dimension: Dimension,
    ) -> Result<impl Future<Output = Result<Tally, JsValue>> + use<>, JsValue> {
        let path = format!("{TALLY_PREFIX}{}", dimension.name());
        let sent = self.send(week, &path, &[])?;
        Ok(async move { parse_tally_lines(&answer(sent).await?.1) })
    }

    /// One request to the week's object: its status and body, or the object's error.
    async fn call(
        &self,
        week: IsoWeek,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), JsValue> {
        answer(self.send(week, path, headers)?).await
    }

    /// Sends one request to the week's object. What a request carries goes in headers: the
    /// object then answers without reading a body.
    fn send(
        &self,
        week: IsoWeek,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<JsFuture, JsValue> {
        let object: DurableObject = self.namespace.get_by_name(&week.to_string())?;
        let init = web_sys::RequestInit::new();
        if !headers.is_empty() {
            let sent = web_sys::Headers::new()?;
            for (name, value) in headers {
                sent.set(name, value)?;
            }
            init.set_method("POST");
            init.set_headers(&sent);
        }
        let request = web_sys::Request::new_with_str_and_init(&format!("{ORIGIN}{path}"), &init)?;
        Ok(JsFuture::from(object.fetch_with_request(&request)?))
    }
}

/// A sent request's status and body, or the object's error.
async fn answer(sent: JsFuture) -> Result<(u16, String), JsValue> {
    let response: web_sys::Response = sent.await?.unchecked_into();
    let text = JsFuture::from(response.text()?).await?;
    let text = text.as_string().unwrap_or_default();
    match response.status() {
        status @ (200 | 204) => Ok((status, text)),
        _ => Err(text.into()),
    }
}
