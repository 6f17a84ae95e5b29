//! The `WEEKS` Durable Object namespace as the Worker calls it: one [`WeekTally`] per ISO
//! week, named by the week, reached by a `fetch` to its internal paths.
//!
//! [`WeekTally`]: crate::week_tally::WeekTally

use telemetry_core::readout::Tally;
use telemetry_core::{Dimension, IsoWeek, SessionWrite};
use worker::Env;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::web_sys;
use worker::worker_sys::{DurableObject, DurableObjectNamespace};

const BINDING: &str = "WEEKS";

/// Any origin: a stub's `fetch` goes to its object whatever the URL's host.
const ORIGIN: &str = "https://week";

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
    /// tallies (or, if it holds that record already, does nothing).
    pub async fn record(
        &self,
        write: &SessionWrite,
        record: &str,
        expires_at: i64,
    ) -> Result<(), JsValue> {
        let headers = [
            ("x-session", write.session_id.as_str()),
            ("x-expires-at", &expires_at.to_string()),
            ("x-record", record),
        ];
        self.call(write.week, "/record", &headers).await.map(drop)
    }

    /// Deletes a session from a week (a deletion request); returns how many records went.
    pub async fn delete(&self, week: IsoWeek, session_id: &str) -> Result<u64, JsValue> {
        let (_, deleted) = self
            .call(week, "/delete", &[("x-session", session_id)])
            .await?;
        deleted.parse().map_err(|_| "a count".into())
    }

    /// The week's live sessions: one request, a few rows, whatever the week's size.
    pub async fn count(&self, week: IsoWeek) -> Result<u64, JsValue> {
        let (_, count) = self.call(week, "/count", &[]).await?;
        count.parse().map_err(|_| "a count".into())
    }

    /// The week's live sessions by value along `dimension`, from the object's tallies.
    pub async fn tally(&self, week: IsoWeek, dimension: Dimension) -> Result<Tally, JsValue> {
        let path = format!("/tally/{}", dimension.name());
        let (_, lines) = self.call(week, &path, &[]).await?;
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

    /// One request to the week's object: its status and body, or the object's error. What
    /// a request carries goes in headers: the object then answers without reading a body.
    async fn call(
        &self,
        week: IsoWeek,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), JsValue> {
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
        let response: web_sys::Response = JsFuture::from(object.fetch_with_request(&request)?)
            .await?
            .unchecked_into();
        let text = JsFuture::from(response.text()?).await?;
        let text = text.as_string().unwrap_or_default();
        match response.status() {
            status @ (200 | 204) => Ok((status, text)),
            _ => Err(text.into()),
        }
    }
}
