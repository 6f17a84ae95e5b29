//! The `SESSIONS` KV namespace: one put per accepted ping, and a paginated count per week.
//!
//! The binding is called directly rather than through workers-rs's `KvStore`, which looks up
//! five methods on every bind and converts metadata and listed keys through serde: a put
//! hands the record's JSON to `JSON.parse` for its metadata, a count reads only how many
//! keys a page holds.

use telemetry_core::event::{StoreFailureEvent, to_line};
use telemetry_core::limits::KV_LIST_PAGE;
use telemetry_core::readout::{LISTED_FIELDS, Tally, record_to_write, tally_listed_keys};

use telemetry_core::{Dimension, IsoWeek, SessionWrite, expires_at, week_key_prefix};
use worker::js_sys::{self, JSON, Object, Reflect};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, console_log};

/// The name both targets' wide events give this deploy target.
pub const TARGET: &str = "worker";

const BINDING: &str = "SESSIONS";

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    /// A KV namespace binding (`KVNamespace` in Cloudflare's types).
    type KvNamespace;

    #[wasm_bindgen(method, catch)]
    fn put(
        this: &KvNamespace,
        key: &str,
        value: &str,
        options: &Object,
    ) -> Result<js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn list(this: &KvNamespace, options: &Object) -> Result<js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn get(this: &KvNamespace, key: &str) -> Result<js_sys::Promise, JsValue>;
}

pub struct Sessions {
    namespace: KvNamespace,
}

impl Sessions {
    /// The namespace bound as `SESSIONS`; `None` when the deployment has no such binding.
    pub fn bind(env: &Env) -> Option<Self> {
        let binding = Reflect::get(env, &BINDING.into()).ok()?;
        let namespace = binding.is_object().then(|| binding.unchecked_into())?;
        Some(Self { namespace })
    }

    /// Writes one record received at `now_unix` with its expiry (cut to the day, as the
    /// core decides), as the value and as the key's metadata so that a `list` can count and
    /// break a week down without reading values. Runs in `waitUntil`, so a failure can only
    /// be logged: it gets its own event.
    ///
    /// A repeat is read first and written only when a field changed, with the stored
    /// `first_seen_at` (the core's `RecordChange`): KV allows one write a second per key and,
    /// on the free plan, 1,000 a day, and a relay pings at every start.
    pub async fn put(self, write: SessionWrite, now_unix: i64, ttl_seconds: u64) {
        let key = write.key();
        let expiration = expires_at(now_unix, ttl_seconds) as f64;
        let result = async {
            let stored = JsFuture::from(self.namespace.get(&key)?).await?;
            let stored = stored.as_string();
            let Some(record) = record_to_write(stored.as_deref(), &write.record_json) else {
                return Ok(JsValue::UNDEFINED);
            };
            let options = Object::new();
            Reflect::set(&options, &"expiration".into(), &expiration.into())?;
            Reflect::set(&options, &"metadata".into(), &JSON::parse(&record)?)?;
            let promise = self.namespace.put(&key, &record, &options)?;
            JsFuture::from(promise).await
        }
        .await;
        if let Err(error) = result {
            // The store may quote the key, and the key holds the session id.
            let error = describe(&error).replace(write.session_id.as_str(), "<session>");
            let event = StoreFailureEvent::new(TARGET, "put", Some(write.week), &error);
            console_log!("{}", to_line(&event));
        }
    }

    /// Counts a week's sessions by listing its prefix, a page of keys at a time. `None`
    /// when KV fails; the failure is logged.
    pub async fn count_week(&self, week: IsoWeek) -> Option<u64> {
        let prefix = JsValue::from(week_key_prefix(week));
        let mut count = 0u64;
        let mut cursor = JsValue::UNDEFINED;
        loop {
            match self.list_page(&prefix, &cursor).await {
                Ok((keys, next)) => {
                    count += keys;
                    match next {
                        Some(next) => cursor = next,
                        None => return Some(count),
                    }
                }
                Err(error) => {
                    let error = describe(&error);
                    let event = StoreFailureEvent::new(TARGET, "list", Some(week), &error);
                    console_log!("{}", to_line(&event));
                    return None;
                }
            }
        }
    }

    /// A week's sessions counted by their value along `dimension`, read from the records
    /// the keys carry as metadata, a page at a time. `None` when KV fails or a key has no
    /// record; the failure is logged.
    pub async fn tally_week(&self, week: IsoWeek, dimension: Dimension) -> Option<Tally> {
        let prefix = JsValue::from(week_key_prefix(week));
        let mut tally = Tally::default();
        let mut cursor = JsValue::UNDEFINED;
        loop {
            let page = async {
                let page = self.list(&prefix, &cursor).await?;
                let keys = Reflect::get(&page, &"keys".into())?;
                let fields = LISTED_FIELDS.iter().copied().map(JsValue::from_str);
                let fields: js_sys::Array = fields.collect();
                let keys = JSON::stringify_with_replacer(&keys, &fields)?;
                tally_listed_keys(&String::from(keys), dimension, &mut tally)
                    .map_err(|error| JsValue::from(error.as_str()))?;
                next_cursor(&page)
            };
            match page.await {
                Ok(Some(next)) => cursor = next,
                Ok(None) => return Some(tally),
                Err(error) => {
                    let error = describe(&error);
                    let event = StoreFailureEvent::new(TARGET, "list", Some(week), &error);
                    console_log!("{}", to_line(&event));
                    return None;
                }
            }
        }
    }

    /// One page of a prefix's keys: how many, and the cursor of the next page if any.
    async fn list_page(
        &self,
        prefix: &JsValue,
        cursor: &JsValue,
    ) -> Result<(u64, Option<JsValue>), JsValue> {
        let page = self.list(prefix, cursor).await?;
        let keys = Reflect::get(&page, &"keys".into())?;
        let count = keys.unchecked_into::<js_sys::Array>().length();
        Ok((u64::from(count), next_cursor(&page)?))
    }

    /// One `list` call: up to a page of keys under `prefix`, from `cursor` on.
    async fn list(&self, prefix: &JsValue, cursor: &JsValue) -> Result<JsValue, JsValue> {
        let options = Object::new();
        Reflect::set(&options, &"prefix".into(), prefix)?;
        Reflect::set(
            &options,
            &"limit".into(),
            &JsValue::from(KV_LIST_PAGE as f64),
        )?;
        if !cursor.is_undefined() {
            Reflect::set(&options, &"cursor".into(), cursor)?;
        }
        JsFuture::from(self.namespace.list(&options)?).await
    }
}

/// The cursor of the page after `page`, if the listing goes on.
fn next_cursor(page: &JsValue) -> Result<Option<JsValue>, JsValue> {
    let complete = Reflect::get(page, &"list_complete".into())?;
    let cursor = Reflect::get(page, &"cursor".into())?;
    let more = complete.is_falsy() && cursor.as_string().is_some_and(|c| !c.is_empty());
    Ok(more.then_some(cursor))
}

/// A thrown value as text for a `store_failure` event.
fn describe(error: &JsValue) -> String {
    match error.dyn_ref::<js_sys::Error>() {
        Some(error) => String::from(error.message()),
        None => error.as_string().unwrap_or_else(|| "unknown error".into()),
    }
}
