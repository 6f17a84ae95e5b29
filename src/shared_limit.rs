//! Cloudflare's Rate Limiting bindings, called as the runtime exposes them: `limit({ key })`
//! answers `{ success }`. Called directly rather than through workers-rs's wrapper, whose serde
//! conversion of the answer brought serde_wasm_bindgen and the float formatting of its error
//! messages into the bundle.

use std::future::Future;

use worker::Env;
use worker::js_sys::{Function, Object, Promise, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;

/// One Rate Limiting binding.
pub struct SharedLimit(JsValue);

impl SharedLimit {
    /// The binding named `name`, if the deployment has one.
    pub fn bind(env: &Env, name: &str) -> Option<Self> {
        crate::kv::binding(env, name).map(Self)
    }

    /// Counts one more under `key`. The call is made now; the future answers whether the key
    /// is still within its limit.
    pub fn count(
        &self,
        key: &str,
    ) -> Result<impl Future<Output = Result<bool, JsValue>> + use<>, JsValue> {
        let limit: Function = Reflect::get(&self.0, &"limit".into())?.dyn_into()?;
        let options = Object::new();
        Reflect::set(&options, &"key".into(), &key.into())?;
        let promise: Promise = limit.call1(&self.0, &options)?.dyn_into()?;
        Ok(async move {
            let outcome = JsFuture::from(promise).await?;
            Ok(Reflect::get(&outcome, &"success".into())?.is_truthy())
        })
    }
}
