//! `WeekTally`, the Durable Object that counts one ISO week: its sessions' latest records
//! and their tallies along every dimension, changed together, so a readout reads a few rows.
//!
//! The Worker reaches it at [`Weeks`](crate::weeks::Weeks) through four internal paths; the
//! rules (which record to keep, how a change moves the tallies) are the core's, the SQL is
//! the rollback SQLite store's without its `week` column, since an object holds one week.

use telemetry_core::Dimension;
use telemetry_core::readout::{TallyMoves, record_to_write};
use worker::js_sys::{Array, Date, Function, Object};
use worker::wasm_bindgen;
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::web_sys;
use worker::worker_sys::{DurableObjectState, SqlStorage};

/// `expires_at` is indexed so that the alarm finds the week's next expiry without a scan.
const SCHEMA: &str = "\
    CREATE TABLE IF NOT EXISTS sessions (\
        session_id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at INTEGER NOT NULL\
    ) WITHOUT ROWID;\
    CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);\
    CREATE TABLE IF NOT EXISTS tallies (\
        dimension TEXT NOT NULL, value TEXT NOT NULL, sessions INTEGER NOT NULL, \
        PRIMARY KEY (dimension, value)\
    ) WITHOUT ROWID;";

/// Expired sessions deleted per transaction by the alarm, which comes back at once for the
/// rest: a day of a large week's sessions expires at the same second.
const EXPIRED_PER_ALARM: u32 = 2_000;

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    /// The object's storage (`DurableObjectStorage`), with the three calls used here.
    #[derive(Clone)]
    type Storage;

    #[wasm_bindgen(method, getter)]
    fn sql(this: &Storage) -> SqlStorage;

    /// Runs a function as one transaction: every write it made is rolled back if it throws.
    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(this: &Storage, body: &Function) -> Result<JsValue, JsValue>;

    /// Sets the object's one alarm to a time in milliseconds since the epoch.
    #[wasm_bindgen(method, catch, js_name = setAlarm)]
    fn set_alarm(this: &Storage, at_ms: f64) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen)]
pub struct WeekTally {
    storage: Storage,
    sql: SqlStorage,
}

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen)]
impl WeekTally {
    #[wasm_bindgen(constructor)]
    pub fn new(state: DurableObjectState, _env: JsValue) -> Result<WeekTally, JsValue> {
        let storage: Storage = state.storage()?.unchecked_into();
        let sql = storage.sql();
        sql.exec(SCHEMA, Array::new())?;
        Ok(Self { storage, sql })
    }

    /// The Worker's requests, answered at once (the object's storage calls are synchronous):
    /// `POST /record` (a ping's session, expiry and record in the headers `x-session`,
    /// `x-expires-at`, `x-record`; answers the record it keeps, or 204 when it held that
    /// record already), `GET /count`, `GET /tally/<dimension>` (a line of value and sessions per
    /// value), `POST /delete` (the session in `x-session`; answers how many records went).
    pub fn fetch(&self, req: web_sys::Request) -> Result<web_sys::Response, JsValue> {
        let url = req.url();
        let headers = req.headers();
        let header = |name: &str| headers.get(name).ok().flatten();
        let week = self.store();
        let answer = match telemetry_core::path_of_url(&url) {
            "/record" => match (
                header("x-session"),
                header("x-expires-at"),
                header("x-record"),
            ) {
                (Some(session_id), Some(expires_at), Some(record)) => {
                    week.record(&session_id, &expires_at, &record)
                }
                _ => Err("a record update names its session, expiry and record".into()),
            },
            "/delete" => match header("x-session") {
                Some(session_id) => week.delete(&session_id).map(Some),
                None => Err("a deletion names its session".into()),
            },
            "/count" => week.count().map(|count| Some(count.to_string())),
            tally => match tally.strip_prefix("/tally/") {
                Some(dimension) => week.tally(dimension).map(Some),
                None => Err("no such request".into()),
            },
        };
        let (status, body) = match answer {
            Ok(Some(body)) => (200, Some(body)),
            Ok(None) => (204, None),
            Err(error) => (500, Some(crate::kv::describe(&error))),
        };
        let init = web_sys::ResponseInit::new();
        init.set_status(status);
        web_sys::Response::new_with_opt_str_and_init(body.as_deref(), &init)
    }

    /// Deletes the sessions whose expiry has come and takes them out of the tallies, then
    /// sets the alarm again for the next expiry.
    pub fn alarm(&self) -> Result<(), JsValue> {
        self.store().expire()
    }
}

impl WeekTally {
    fn store(&self) -> Store {
        Store {
            storage: self.storage.clone(),
            sql: self.sql.clone(),
        }
    }
}

/// What runs inside a transaction; its value is the transaction's.
type TransactionBody = dyn FnOnce(&Store) -> Result<JsValue, JsValue>;

/// The object's storage and its SQL handle (cheap JavaScript references), for one request.
#[derive(Clone)]
struct Store {
    storage: Storage,
    sql: SqlStorage,
}

impl Store {
    /// Runs one statement; its rows, each an object of columns (see [`columns`]).
    fn exec(&self, query: &str, bindings: &[JsValue]) -> Result<Array, JsValue> {
        let bindings: Array = bindings.iter().collect();
        Ok(self.sql.exec(query, bindings)?.to_array())
    }

    /// Keeps a ping's record as the core decides (a new session, or a changed field with the
    /// first ping's `first_seen_at`) and moves the tallies with it, in one transaction.
    /// Returns the record written, or `None` when the object held it already (the Worker
    /// puts its own in KV either way: it decided it from KV, the store of records).
    fn record(
        &self,
        session_id: &str,
        expires_at: &str,
        incoming: &str,
    ) -> Result<Option<String>, JsValue> {
        // Parsed as an integer: a float parser would add its tables to the module.
        let expires_at: i64 = expires_at.parse().map_err(|_| "an expiry in seconds")?;
        let expires_at = expires_at as f64;
        let stored = self.exec(
            "SELECT record FROM sessions WHERE session_id = ?",
            &[session_id.into()],
        )?;
        let stored = first_column(&stored).and_then(|record| record.as_string());
        let Some(record) = record_to_write(stored.as_deref(), incoming) else {
            return Ok(None);
        };
        let mut moves = TallyMoves::default();
        let before = stored.as_deref().map(values_in).transpose()?;
        moves.replace_values(before, Some(values_in(&record)?));
        let next_expiry = self.next_expiry()?;
        let row = [session_id.into(), record.as_str().into(), expires_at.into()];
        self.transaction(Box::new(move |week| {
            week.exec(
                "INSERT INTO sessions (session_id, record, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (session_id) DO UPDATE \
                 SET record = excluded.record, expires_at = excluded.expires_at",
                &row,
            )?;
            week.apply(&moves)?;
            Ok(JsValue::UNDEFINED)
        }))?;
        if next_expiry.is_none_or(|next| expires_at < next) {
            self.set_alarm(expires_at)?;
        }
        Ok(Some(record))
    }

    /// Deletes a session's record (a deletion request) and takes it out of the tallies.
    fn delete(&self, session_id: &str) -> Result<String, JsValue> {
        let session_id = JsValue::from(session_id);
        let deleted = self.transaction(Box::new(move |week| {
            let deleted = week.exec(
                "DELETE FROM sessions WHERE session_id = ? RETURNING record",
                &[session_id],
            )?;
            week.take_out(&deleted)?;
            Ok(deleted.length().into())
        }))?;
        Ok((deleted.as_f64().unwrap_or(0.0) as u32).to_string())
    }

    /// The week's live sessions: each counts once along any dimension.
    fn count(&self) -> Result<u64, JsValue> {
        let total = self.exec(
            "SELECT coalesce(sum(sessions), 0) FROM tallies WHERE dimension = 'platform'",
            &[],
        )?;
        let total = first_column(&total).and_then(|total| total.as_f64());
        Ok(total.unwrap_or(0.0) as u64)
    }

    /// The week's tally along a dimension, a line `<value> <sessions>` per value (values
    /// are versions and names of a validated ping: never a space or a line break).
    fn tally(&self, dimension: &str) -> Result<String, JsValue> {
        let rows = self.exec(
            "SELECT value, sessions FROM tallies WHERE dimension = ?",
            &[dimension.into()],
        )?;
        let mut lines = String::new();
        for row in rows.iter() {
            let row = columns(&row);
            if let (Some(value), Some(sessions)) = (row.get(0).as_string(), row.get(1).as_f64()) {
                lines.push_str(&format!("{value} {}\n", sessions as u64));
            }
        }
        Ok(lines)
    }

    /// Deletes what has expired, a bounded batch at a time, and sets the next alarm.
    fn expire(&self) -> Result<(), JsValue> {
        let now = (Date::now() / 1000.0).floor();
        let deleted = self.transaction(Box::new(move |week| {
            let deleted = week.exec(
                "DELETE FROM sessions WHERE session_id IN ( \
                     SELECT session_id FROM sessions WHERE expires_at <= ? LIMIT ? \
                 ) RETURNING record",
                &[now.into(), EXPIRED_PER_ALARM.into()],
            )?;
            week.take_out(&deleted)?;
            Ok(deleted.length().into())
        }))?;
        let deleted = deleted.as_f64().unwrap_or(0.0) as u32;
        if deleted == EXPIRED_PER_ALARM {
            return self.set_alarm(now);
        }
        match self.next_expiry()? {
            Some(next) => self.set_alarm(next),
            None => Ok(()),
        }
    }

    /// Takes deleted records (rows of one column) out of the tallies.
    fn take_out(&self, deleted: &Array) -> Result<(), JsValue> {
        let mut moves = TallyMoves::default();
        for row in deleted.iter() {
            let record = columns(&row).get(0).as_string().unwrap_or_default();
            moves.replace_values(Some(values_in(&record)?), None);
        }
        self.apply(&moves)
    }

    /// Applies tally moves; a value whose count falls to zero loses its row. Taking a
    /// session from a value that has none would be a bug: the transaction fails instead.
    fn apply(&self, moves: &TallyMoves) -> Result<(), JsValue> {
        for (dimension, value, sessions) in moves.iter() {
            let at = [
                dimension.name().into(),
                value.into(),
                (sessions as f64).into(),
            ];
            if sessions > 0 {
                self.exec(
                    "INSERT INTO tallies (dimension, value, sessions) VALUES (?, ?, ?) \
                     ON CONFLICT (dimension, value) \
                     DO UPDATE SET sessions = sessions + excluded.sessions",
                    &at,
                )?;
                continue;
            }
            let left = self.exec(
                "UPDATE tallies SET sessions = sessions + ?3 \
                 WHERE dimension = ?1 AND value = ?2 AND sessions + ?3 >= 0 \
                 RETURNING sessions",
                &at,
            )?;
            match first_column(&left).and_then(|left| left.as_f64()) {
                Some(0.0) => {
                    self.exec(
                        "DELETE FROM tallies WHERE dimension = ? AND value = ?",
                        &at[..2],
                    )?;
                }
                Some(_) => {}
                None => return Err("the tallies hold fewer sessions than are leaving".into()),
            }
        }
        Ok(())
    }

    /// The earliest expiry among the week's sessions, if it holds any.
    fn next_expiry(&self) -> Result<Option<f64>, JsValue> {
        let next = self.exec("SELECT min(expires_at) FROM sessions", &[])?;
        Ok(first_column(&next).and_then(|next| next.as_f64()))
    }

    /// Sets the alarm. The call's promise is not awaited: storage calls of a SQLite-backed
    /// object take effect at once, and its answer waits until they are durable.
    fn set_alarm(&self, at_seconds: f64) -> Result<(), JsValue> {
        self.storage.set_alarm(at_seconds * 1000.0)?;
        Ok(())
    }

    /// Runs `body` as one storage transaction, rolled back if it fails; returns its value.
    /// Not generic, so that the module carries one closure for every caller.
    fn transaction(&self, body: Box<TransactionBody>) -> Result<JsValue, JsValue> {
        let week = self.clone();
        // An error is thrown back into the runtime, which then rolls the writes back.
        let run = Closure::once(move || body(&week));
        self.storage
            .transaction_sync(run.as_ref().unchecked_ref::<Function>())
    }
}

/// A stored record's values along every dimension; a record without them cannot be counted.
fn values_in(record: &str) -> Result<[&str; 5], JsValue> {
    Dimension::values_in(record).ok_or_else(|| "a stored record that is not a valid record".into())
}

/// The first column of the first row of a raw result.
fn first_column(rows: &Array) -> Option<JsValue> {
    let row = rows.get(0);
    (!row.is_undefined()).then(|| columns(&row).get(0))
}

/// A row's columns in the order the statement names them.
fn columns(row: &JsValue) -> Array {
    Object::values(row.unchecked_ref())
}
