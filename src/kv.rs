//! The `SESSIONS` KV namespace: one put per accepted ping, and a paginated count per week.

use telemetry_core::event::{StoreFailureEvent, to_line};
use telemetry_core::limits::KV_LIST_PAGE;
use telemetry_core::{IsoWeek, SessionWrite, expires_at, week_key_prefix};
use worker::kv::KvStore;
use worker::{Env, console_log};

/// The name both targets' wide events give this deploy target.
pub const TARGET: &str = "worker";

const BINDING: &str = "SESSIONS";

pub struct Sessions {
    store: KvStore,
}

impl Sessions {
    pub fn bind(env: &Env) -> worker::Result<Self> {
        Ok(Self {
            store: env.kv(BINDING)?,
        })
    }

    /// Writes one record received at `now_unix` with its expiry (cut to the day, as the
    /// core decides), as the value and as the key's metadata so that a `list` can count and
    /// break a week down without reading values. Runs in `waitUntil`, so a failure can only
    /// be logged: it gets its own event.
    pub async fn put(self, write: SessionWrite, now_unix: i64, ttl_seconds: u64) {
        let key = write.key();
        let metadata = serde_json::from_str::<serde_json::Value>(&write.record_json);
        let expiration = u64::try_from(expires_at(now_unix, ttl_seconds)).unwrap_or(0);
        let result = match (self.store.put(&key, write.record_json.as_str()), metadata) {
            (Ok(put), Ok(metadata)) => match put.expiration(expiration).metadata(metadata) {
                Ok(put) => put.execute().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(error) = result {
            // The store may quote the key, and the key holds the session id.
            let error = error.replace(write.session_id.as_str(), "<session>");
            let event = StoreFailureEvent::new(TARGET, "put", Some(write.week), &error);
            console_log!("{}", to_line(&event));
        }
    }

    /// Counts a week's sessions by listing its prefix, a page of keys at a time. `None`
    /// when KV fails; the failure is logged.
    pub async fn count_week(&self, week: IsoWeek) -> Option<u64> {
        let prefix = week_key_prefix(week);
        let mut count = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let mut list = self.store.list().prefix(prefix.clone()).limit(KV_LIST_PAGE);
            if let Some(cursor) = cursor.take() {
                list = list.cursor(cursor);
            }
            let page = match list.execute().await {
                Ok(page) => page,
                Err(error) => {
                    let error = error.to_string();
                    let event = StoreFailureEvent::new(TARGET, "list", Some(week), &error);
                    console_log!("{}", to_line(&event));
                    return None;
                }
            };
            count += page.keys.len() as u64;
            match page.cursor.filter(|c| !c.is_empty()) {
                Some(next) if !page.list_complete => cursor = Some(next),
                _ => return Some(count),
            }
        }
    }
}
