//! The `SESSIONS` KV namespace, the store of records: one key per week and session, put
//! when its week's object finds the session new or changed, with the record as its value and
//! metadata. A ping never reads it: the object decides.
//!
//! The binding is called directly rather than through workers-rs's `KvStore`, which looks up
//! five methods on every bind and converts metadata through serde: a put hands the record's
//! JSON to `JSON.parse` for its metadata.

use telemetry_core::event::{StoreFailureEvent, StoreOperation, to_line};
use telemetry_core::{IsoWeek, SessionWrite};
use worker::js_sys::{self, JSON, Object, Reflect};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, console_log};

/// The name both targets' wide events give this deploy target.
pub const TARGET: &str = "worker";

pub const BINDING: &str = "SESSIONS";

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
    fn get(this: &KvNamespace, key: &str) -> Result<js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn delete(this: &KvNamespace, key: &str) -> Result<js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn list(this: &KvNamespace, options: &Object) -> Result<js_sys::Promise, JsValue>;
}

pub struct Sessions {
    namespace: KvNamespace,
}

impl Sessions {
    /// The namespace bound as `SESSIONS`; `None` when the deployment has no such binding.
    pub fn bind(env: &Env) -> Option<Self> {
        let namespace = binding(env, BINDING)?.unchecked_into();
        Some(Self { namespace })
    }

    /// Puts a record with its expiry, as the value and as the key's metadata (which
    /// `export-kv` reads from a listing without reading values). Sent at once; the future
    /// answers when KV has.
    pub fn put_record(
        &self,
        write: &SessionWrite,
        record: &str,
        expires_at: i64,
    ) -> Result<JsFuture, JsValue> {
        let options = Object::new();
        Reflect::set(&options, &"expiration".into(), &(expires_at as f64).into())?;
        Reflect::set(&options, &"metadata".into(), &JSON::parse(record)?)?;
        Ok(JsFuture::from(self.namespace.put(
            &write.key(),
            record,
            &options,
        )?))
    }

    /// Puts a key with an empty value that expires at `expires_at` (seconds since the
    /// epoch): a deletion journal's entry.
    pub async fn put_marker(&self, key: &str, expires_at: i64) -> Result<(), JsValue> {
        let options = Object::new();
        Reflect::set(&options, &"expiration".into(), &(expires_at as f64).into())?;
        JsFuture::from(self.namespace.put(key, "", &options)?).await?;
        Ok(())
    }

    /// Deletes a key (a deletion request); deleting a missing key is no error. Sent at
    /// once; the future answers when KV has.
    pub fn delete(&self, key: &str) -> Result<JsFuture, JsValue> {
        Ok(JsFuture::from(self.namespace.delete(key)?))
    }

    /// One page of the keys under `prefix` with their expiration and metadata (the backfill):
    /// KV's own answer, `{keys, list_complete, cursor}`.
    pub async fn list(
        &self,
        prefix: &str,
        limit: u64,
        cursor: Option<&str>,
    ) -> Result<JsValue, JsValue> {
        let options = Object::new();
        Reflect::set(&options, &"prefix".into(), &prefix.into())?;
        Reflect::set(&options, &"limit".into(), &(limit as f64).into())?;
        if let Some(cursor) = cursor {
            Reflect::set(&options, &"cursor".into(), &cursor.into())?;
        }
        JsFuture::from(self.namespace.list(&options)?).await
    }

    /// Reads a key: sent at once; the future answers its value (a string) or null.
    pub fn lookup(&self, key: &str) -> Result<JsFuture, JsValue> {
        Ok(JsFuture::from(self.namespace.get(key)?))
    }
}

/// The binding named `name` in `env`, called directly; `None` when the deployment has none.
/// Not generic: the caller casts it, and the module carries one copy.
pub fn binding(env: &Env, name: &str) -> Option<JsValue> {
    let binding = Reflect::get(env, &name.into()).ok()?;
    binding.is_object().then_some(binding)
}

/// Logs a failed storage call as a `store_failure` event. The store may quote a key, and a
/// key holds the session id, which never reaches a log: it is masked wherever it appears.
pub fn log_failure(
    operation: StoreOperation,
    week: Option<IsoWeek>,
    session_id: Option<&str>,
    error: &JsValue,
) {
    let mut error = describe(error);
    if let Some(session_id) = session_id {
        error = error.replace(session_id, "<session>");
    }
    let event = StoreFailureEvent::new(TARGET, operation, week, &error);
    console_log!("{}", to_line(&event));
    STORE_FAILING.set(true);
}

thread_local! {
    /// Whether this isolate's last store operation failed: the next that succeeds says so.
    static STORE_FAILING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes a store operation that succeeded: after a failure in this isolate, one
/// `store_recovered` line.
pub fn note_answered(operation: StoreOperation) {
    if STORE_FAILING.replace(false) {
        let event = telemetry_core::event::StoreRecoveredEvent::new(TARGET, operation);
        console_log!("{}", to_line(&event));
    }
}

/// A thrown value as text for a `store_failure` event.
pub(crate) fn describe(error: &JsValue) -> String {
    match error.dyn_ref::<js_sys::Error>() {
        Some(error) => String::from(error.message()),
        None => error.as_string().unwrap_or_else(|| "unknown error".into()),
    }
}
