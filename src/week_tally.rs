//! `WeekTally`, the Durable Object that keeps one ISO week (or one shard of it) as the core
//! models it (`telemetry_core::stored_week`): its sessions' latest records and their tallies,
//! kept as one row per profile (`telemetry_core::ProfileMoves`: a new session writes one tally
//! row, not one per dimension) and changed together, so a readout reads a few rows; and the
//! week's summary (`telemetry_core::summary`), which keeps counting the sessions whose records
//! expired until `SUMMARY_RETENTION_WEEKS` after the week, when the object's alarm deletes it.
//! Each request runs alone from its first read of storage to its answer (an object is
//! single-threaded, and nothing is awaited in between), so an inconsistency is repaired in the
//! request that finds it: the week's tallies rebuilt from its records, the change applied, one
//! event logged.
//!
//! The Worker reaches it at [`Weeks`](crate::weeks::Weeks) through the paths, headers and
//! body lines named there.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use telemetry_core::config::{SUMMARY_RETENTION_VAR, summary_retention_weeks};
use telemetry_core::event::{StoreInconsistentEvent, StoreOperation, to_line};
use telemetry_core::limits::MAX_TALLIED_VALUES;
use telemetry_core::stored_week::{
    self, Inconsistent, KeepError, OTHER_VALUE, TalliedValues, Vocabulary, values_of,
};
use telemetry_core::summary::{DEFAULT_SUMMARY_RETENTION_WEEKS, Leaving, Retention};
use telemetry_core::tally::{PROFILE_SEPARATOR, moved_row};
use telemetry_core::week::week_of_object_name;
use telemetry_core::{Dimension, IsoWeek, ProfileMoves, TallyMoves};
use worker::console_log;
use worker::js_sys::{Array, Date, Function, Object, Reflect};
use worker::wasm_bindgen;
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::{JsFuture, future_to_promise};
use worker::worker_sys::web_sys;
use worker::worker_sys::{DurableObjectState, SqlStorage};

use crate::weeks::{
    DELETE_PATH, FAILED, HELD, NOT_IN_KV_PATH, RECORD_PATH, SESSION_HEADER, TALLY_PREFIX, WRITTEN,
    tally_line,
};

/// `expires_at` is indexed so that the alarm finds the week's next expiry without a scan.
const SCHEMA: &str = "\
    CREATE TABLE IF NOT EXISTS sessions (\
        session_id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at INTEGER NOT NULL\
    ) WITHOUT ROWID;\
    CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);\
    CREATE TABLE IF NOT EXISTS profiles (\
        platform TEXT NOT NULL, primary_framework TEXT NOT NULL, daemon_version TEXT NOT NULL, \
        protocol_version TEXT NOT NULL, node_major TEXT NOT NULL, sessions INTEGER NOT NULL, \
        PRIMARY KEY (platform, primary_framework, daemon_version, protocol_version, node_major)\
    ) WITHOUT ROWID;\
    CREATE TABLE IF NOT EXISTS summary (\
        dimension TEXT NOT NULL, value TEXT NOT NULL, sessions INTEGER NOT NULL, \
        PRIMARY KEY (dimension, value)\
    ) WITHOUT ROWID;\
    CREATE INDEX IF NOT EXISTS profiles_by_framework ON profiles (primary_framework);\
    CREATE INDEX IF NOT EXISTS profiles_by_daemon ON profiles (daemon_version);\
    CREATE INDEX IF NOT EXISTS profiles_by_protocol ON profiles (protocol_version);\
    CREATE INDEX IF NOT EXISTS profiles_by_node ON profiles (node_major);\
    CREATE TABLE IF NOT EXISTS not_in_kv (session_id TEXT PRIMARY KEY) WITHOUT ROWID;";

/// A profile's columns, in the order of `Dimension::ALL` (each named as its dimension).
macro_rules! profile_columns {
    () => {
        "platform, primary_framework, daemon_version, protocol_version, node_major"
    };
}
/// The statement that moves profiles: this, then a `(?,?,?,?,?,?)` per profile, then the tail.
const MOVE_PROFILES: &str = concat!(
    "INSERT INTO profiles (",
    profile_columns!(),
    ", sessions) VALUES "
);
const MOVE_PROFILES_TAIL: &str = concat!(
    " ON CONFLICT (",
    profile_columns!(),
    ") DO UPDATE SET sessions = sessions + excluded.sessions RETURNING ",
    profile_columns!(),
    ", sessions"
);
/// Profiles per upsert: six bound values each, under SQLite's 100 per statement.
const PROFILES_PER_STATEMENT: usize = 16;

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
    /// The week this object keeps, from its name, for the events it logs and its summary.
    week: Option<IsoWeek>,
    /// How long its summary is kept (`SUMMARY_RETENTION_WEEKS`, read from the vars).
    retention: Retention,
    /// What this instance knows of its storage, so that a ping reads no more than it must.
    known: Rc<Known>,
}

/// What an object's instance has learnt of its own storage, which only it writes (an object
/// runs one request at a time between awaits, and none awaits amid its storage calls): each is forgotten, or read again, where the storage could
/// have changed under it, and a fresh instance starts knowing nothing.
#[derive(Default)]
struct Known {
    /// The dimensions (bits, in the order of `Dimension::ALL`) whose tally names the most
    /// values it may, as last counted: a flood's every ping would otherwise count a thousand
    /// rows. The bits go whenever a profile's row is dropped.
    full: Cell<u8>,
    /// (dimension, value) that a tally or summary row named when last read, sorted: a new
    /// session's values are nearly always among them, and are then not read again. A value
    /// goes when its live row does.
    named: RefCell<Vec<(u8, String)>>,
    /// The earliest expiry among the week's sessions (`Some(None)`: it holds none), read once
    /// per instance and kept by the writes and the alarm: the alarm is set from it.
    earliest: Cell<Option<Option<f64>>>,
}

impl Known {
    fn forget_named(&self, dimension: Dimension, value: &str) {
        let mut named = self.named.borrow_mut();
        let key = (dimension as u8, value);
        if let Ok(at) = named.binary_search_by(|(d, v)| (*d, v.as_str()).cmp(&key)) {
            named.remove(at);
        }
    }
}

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen)]
impl WeekTally {
    #[wasm_bindgen(constructor)]
    pub fn new(state: DurableObjectState, env: JsValue) -> Result<WeekTally, JsValue> {
        let storage: Storage = state.storage()?.unchecked_into();
        let sql = storage.sql();
        sql.exec(SCHEMA, Array::new())?;
        // An object made before profiles kept a row per dimension and value: its tallies are
        // rebuilt as profiles from its records, once.
        let older = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tallies'";
        let migrate = sql.exec(older, Array::new())?.to_array().length() > 0;
        let week = state.id().ok().and_then(|id| id.name());
        let week = week.as_deref().and_then(week_of_object_name);
        let known = Rc::default();
        // The Worker refuses to run with a bad value (it reads the same variable through
        // `Config`), so the default here only ever stands in for an unset one.
        let var = Reflect::get(&env, &JsValue::from(SUMMARY_RETENTION_VAR)).ok();
        let summary_weeks = summary_retention_weeks(var.and_then(|v| v.as_string()).as_deref());
        let retention = Retention {
            summary_weeks: summary_weeks.unwrap_or(DEFAULT_SUMMARY_RETENTION_WEEKS),
            ..Retention::default()
        };
        let object = Self {
            storage,
            sql,
            week,
            retention,
            known,
        };
        if migrate {
            object.store().transaction(Box::new(|week| {
                week.rebuild()?;
                week.exec("DROP TABLE tallies", &[])?;
                Ok(JsValue::UNDEFINED)
            }))?;
        }
        Ok(object)
    }

    /// The Worker's requests (the paths of [`crate::weeks`]), answered at once (the object's
    /// storage calls are synchronous), but for those that carry sessions in their body, which
    /// are answered once it is read. Nothing is read of the object's state before that await,
    /// so that each request still runs alone from its first read to its answer.
    pub fn fetch(&self, req: web_sys::Request) -> Result<JsValue, JsValue> {
        let url = req.url();
        let week = self.store();
        let path = telemetry_core::path_of_url(&url);
        if path == RECORD_PATH || path == NOT_IN_KV_PATH {
            let body = JsFuture::from(req.text()?);
            let records = path == RECORD_PATH;
            let answer = async move {
                let body = body.await?.as_string().unwrap_or_default();
                // As a Worker of the version before batches sent it: its ping is not kept,
                // and its next one, to a Worker of this version, is.
                if body.is_empty() {
                    return response(500, Some("sessions go in the body, a line each"));
                }
                if !records {
                    for session_id in body.lines() {
                        week.note_not_in_kv(session_id)?;
                    }
                    return response(204, None);
                }
                let now = (Date::now() / 1000.0).floor();
                let mut answers = String::with_capacity(body.len() + 16);
                for line in body.lines() {
                    week.record_line(line, now, &mut answers);
                    answers.push('\n');
                }
                response(200, Some(&answers))
            };
            let answer = async move { answer.await.map(JsValue::from) };
            return Ok(future_to_promise(answer).into());
        }
        let headers = req.headers();
        let header = |name: &str| headers.get(name).ok().flatten();
        let answer = match path {
            DELETE_PATH => match header(SESSION_HEADER) {
                Some(session_id) => {
                    let now = (Date::now() / 1000.0).floor();
                    week.delete(&session_id, now).map(Some)
                }
                None => Err("a deletion names its session".into()),
            },
            tally => match tally.strip_prefix(TALLY_PREFIX) {
                Some(dimension) => {
                    let now = (Date::now() / 1000.0).floor();
                    week.tally(dimension, now).map(Some)
                }
                None => Err("no such request".into()),
            },
        };
        let (status, body) = match answer {
            Ok(Some(body)) => (200, Some(body)),
            Ok(None) => (204, None),
            Err(error) => (500, Some(crate::kv::describe(&error))),
        };
        response(status, body.as_deref()).map(JsValue::from)
    }

    /// Deletes the sessions whose expiry has come, moving them from the tallies to the
    /// summary, and the summary once its retention ends; then sets the alarm again for the
    /// next of those.
    pub fn alarm(&self) -> Result<(), JsValue> {
        self.store().expire((Date::now() / 1000.0).floor())
    }
}

impl WeekTally {
    fn store(&self) -> Store {
        Store {
            storage: self.storage.clone(),
            sql: self.sql.clone(),
            week: self.week,
            retention: self.retention,
            known: Rc::clone(&self.known),
        }
    }
}

/// What runs inside a transaction; its value is the transaction's.
type TransactionBody = dyn FnOnce(&Store) -> Result<JsValue, JsValue>;
/// A statement that deletes records and returns each one's record.
type Deletion = dyn Fn(&Store) -> Result<Array, JsValue>;
/// The object's tally rows as the core's bound on a week's values asks about them, read in
/// the request that writes (an object runs one at a time).
struct Named<'a>(&'a Store);

impl TalliedValues for Named<'_> {
    type Error = JsValue;

    // Live and summary rows together: the bound is on what a readout of the week names.
    fn names(&mut self, dimension: Dimension, value: &str) -> Result<bool, JsValue> {
        let key = (dimension as u8, value);
        let found =
            (self.0.known.named.borrow()).binary_search_by(|(d, v)| (*d, v.as_str()).cmp(&key));
        let Err(insert_at) = found else {
            return Ok(true);
        };
        let rows = self.0.exec(
            &format!(
                "SELECT 1 FROM profiles WHERE {} = ?2 \
                 UNION ALL SELECT 1 FROM summary WHERE dimension = ?1 AND value = ?2 LIMIT 1",
                dimension.name()
            ),
            &[dimension.name().into(), value.into()],
        )?;
        let named = rows.length() > 0;
        if named {
            let mut known = self.0.known.named.borrow_mut();
            known.insert(insert_at, (dimension as u8, value.to_owned()));
        }
        Ok(named)
    }

    fn distinct(&mut self, dimension: Dimension) -> Result<u64, JsValue> {
        let bit = 1 << dimension as u8;
        if self.0.known.full.get() & bit != 0 {
            return Ok(MAX_TALLIED_VALUES);
        }
        let rows = self.0.exec(
            &format!(
                "SELECT count(*) AS n FROM ( \
                     SELECT {} AS value FROM profiles \
                     UNION SELECT value FROM summary WHERE dimension = ?1 \
                 ) WHERE value <> ?2",
                dimension.name()
            ),
            &[dimension.name().into(), OTHER_VALUE.into()],
        )?;
        let counted = first_column(&rows).and_then(|n| n.as_f64()).unwrap_or(0.0) as u64;
        if counted >= MAX_TALLIED_VALUES {
            self.0.known.full.set(self.0.known.full.get() | bit);
        }
        Ok(counted)
    }
}

/// The change a repair applies before it rebuilds the tallies.
type FirstChange = dyn FnOnce(&Store) -> Result<(), JsValue>;

/// The object's storage and its SQL handle (cheap JavaScript references), for one request.
#[derive(Clone)]
struct Store {
    storage: Storage,
    sql: SqlStorage,
    week: Option<IsoWeek>,
    retention: Retention,
    known: Rc<Known>,
}

/// An answer of the object to the Worker.
fn response(status: u16, body: Option<&str>) -> Result<web_sys::Response, JsValue> {
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    web_sys::Response::new_with_opt_str_and_init(body, &init)
}

impl Store {
    /// Keeps one [`crate::weeks::record_line`] ([`Self::record`]) and appends its answer line
    /// to `answers`. A record that fails fails alone: the batch's others are kept.
    fn record_line(&self, line: &str, now: f64, answers: &mut String) {
        let mut fields = line.splitn(3, ' ');
        let kept = match (fields.next(), fields.next(), fields.next()) {
            (Some(session_id), Some(expires_at), Some(record)) => {
                self.record(session_id, expires_at, record, now)
            }
            _ => Err("a record line names its session, expiry and record".into()),
        };
        match kept {
            Ok(Some(written)) => {
                answers.push(WRITTEN);
                answers.push_str(&written);
            }
            Ok(None) => answers.push(HELD),
            Err(error) => {
                answers.push(FAILED);
                answers.push_str(&crate::kv::describe(&error).replace('\n', " "));
            }
        }
    }

    /// Runs one statement; its rows, each an object of columns (see [`columns`]).
    fn exec(&self, query: &str, bindings: &[JsValue]) -> Result<Array, JsValue> {
        let bindings: Array = bindings.iter().collect();
        Ok(self.sql.exec(query, bindings)?.to_array())
    }

    /// Keeps a ping's record as the core decides ([`stored_week::keep_within`], its values
    /// bounded by the tallies as this request reads them) and moves the tallies with it, in
    /// one transaction, at `now` (seconds since the epoch). Returns the record it wrote, which
    /// the Worker puts in KV, or `None` for a repeat that changed nothing (nothing written).
    fn record(
        &self,
        session_id: &str,
        expires_at: &str,
        incoming: &str,
        now: f64,
    ) -> Result<Option<String>, JsValue> {
        // Parsed as an integer: a float parser would add its tables to the module.
        let expires_at: i64 = expires_at.parse().map_err(|_| "an expiry in seconds")?;
        let expires_at = expires_at as f64;
        let stored = self.exec(
            "SELECT record, EXISTS (SELECT 1 FROM not_in_kv WHERE session_id = ?1) \
             FROM sessions WHERE session_id = ?1",
            &[session_id.into()],
        )?;
        let not_in_kv = (stored.get(0).is_object()).then(|| columns(&stored.get(0)).get(1));
        let not_in_kv = not_in_kv.is_some_and(|missing| missing.as_f64() == Some(1.0));
        let stored = first_column(&stored).and_then(|record| record.as_string());
        let mut vocabulary = Vocabulary::new(Named(self));
        let kept = stored_week::keep_within(stored.as_deref(), incoming, &mut vocabulary);
        let (record, moves, found) = match kept {
            // Held already: nothing to write, here or in KV, unless KV missed the record
            // (`not_in_kv`): the Worker puts it now, and says again should that fail.
            Ok(None) if not_in_kv => {
                self.exec(
                    "DELETE FROM not_in_kv WHERE session_id = ?",
                    &[session_id.into()],
                )?;
                return Ok(stored);
            }
            Ok(None) => return Ok(None),
            Ok(Some(kept)) => {
                let mut moves = ProfileMoves::default();
                let before = stored.as_deref().map(values_of).transpose();
                let after = values_of(&kept.record);
                if let (Ok(before), Ok(after)) = (before, after) {
                    moves.replace(before, Some(after));
                }
                (kept.record, moves, None)
            }
            // The stored record goes; the ping's is kept as a new session's, and the repair
            // below counts the week from its records.
            Err(KeepError::Inconsistent(found)) => {
                // Kept within the week's bound as a new session's would be.
                let as_new = stored_week::keep_within(None, incoming, &mut vocabulary);
                let record = match as_new {
                    Ok(Some(kept)) => kept.record,
                    _ => incoming.to_owned(),
                };
                (record, ProfileMoves::default(), Some(found))
            }
            Err(KeepError::Store(error)) => return Err(error),
        };
        let next_expiry = match self.known.earliest.get() {
            Some(known) => known,
            None => self.next_expiry()?,
        };
        let row = [session_id.into(), record.as_str().into(), expires_at.into()];
        let upsert = move |week: &Store| {
            week.exec(
                "INSERT INTO sessions (session_id, record, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (session_id) DO UPDATE \
                 SET record = excluded.record, expires_at = excluded.expires_at",
                &row,
            )?;
            // The record goes to KV now.
            if not_in_kv {
                week.exec("DELETE FROM not_in_kv WHERE session_id = ?", &row[..1])?;
            }
            Ok(())
        };
        let applied = match found {
            None => {
                let upsert = upsert.clone();
                self.transaction(Box::new(move |week| {
                    upsert(week)?;
                    week.apply(&moves)?;
                    Ok(JsValue::UNDEFINED)
                }))
                .map(drop)
            }
            Some(found) => Err(JsValue::from(found.name())),
        };
        if let Err(error) = applied {
            let found = inconsistency(&error).ok_or(error)?;
            self.repair(
                StoreOperation::Write,
                found,
                Box::new(move |week| upsert(week)),
            )?;
        }
        // An earliest expiry already past means the alarm that should have deleted it did not
        // run to the end (the platform gives up retrying one): set it again.
        match next_expiry {
            Some(next) if next <= now => self.set_alarm(now)?,
            Some(next) if next <= expires_at => {}
            _ => self.set_alarm(expires_at)?,
        }
        // A session whose expiry moved later, or that went, leaves this too early, which
        // only sets an alarm that finds nothing due yet.
        let earliest = next_expiry.map_or(expires_at, |next| next.min(expires_at));
        self.known.earliest.set(Some(Some(earliest)));
        Ok(Some(record))
    }

    /// Notes that KV missed a session's record (the Worker's put failed): its next ping,
    /// even one that changes nothing, is answered with the record to put again.
    fn note_not_in_kv(&self, session_id: &str) -> Result<(), JsValue> {
        self.exec(
            "INSERT INTO not_in_kv (session_id) \
             SELECT session_id FROM sessions WHERE session_id = ? ON CONFLICT DO NOTHING",
            &[session_id.into()],
        )?;
        Ok(())
    }

    /// Deletes a session's record (a deletion request, at `now`) and takes it out of the
    /// tallies: out of the week's count until its summary is made, into the summary after.
    fn delete(&self, session_id: &str, now: f64) -> Result<String, JsValue> {
        let leaving = match self.week {
            Some(week) => self.retention.on_deletion(week, now as i64),
            None => Leaving::Uncounted,
        };
        let session_id = JsValue::from(session_id);
        let delete = move |week: &Store| {
            let deleted = week.exec(
                "DELETE FROM sessions WHERE session_id = ? RETURNING record",
                std::slice::from_ref(&session_id),
            )?;
            week.exec(
                "DELETE FROM not_in_kv WHERE session_id = ?",
                std::slice::from_ref(&session_id),
            )?;
            Ok(deleted)
        };
        let deleted = self.repairing(StoreOperation::Delete, leaving, delete)?;
        Ok(deleted.to_string())
    }

    /// The week's tally along a dimension, live and summary added, a [`tally_line`] per
    /// value. A summary past its retention at `now` goes first: the alarm set for it may
    /// have been set under a longer `SUMMARY_RETENTION_WEEKS`.
    fn tally(&self, dimension: &str, now: f64) -> Result<String, JsValue> {
        if self.summary_expiry()?.is_some_and(|at| at <= now) {
            self.exec("DELETE FROM summary", &[])?;
            self.known.named.borrow_mut().clear();
            self.known.full.set(0);
        }
        let dimension = Dimension::parse(dimension).ok_or("no such dimension")?;
        let rows = self.exec(
            &format!(
                "SELECT value, sum(sessions) FROM ( \
                     SELECT {} AS value, sessions FROM profiles \
                     UNION ALL SELECT value, sessions FROM summary WHERE dimension = ?1 \
                 ) GROUP BY value",
                dimension.name()
            ),
            &[dimension.name().into()],
        )?;
        let mut lines = String::new();
        for row in rows.iter() {
            let row = columns(&row);
            if let (Some(value), Some(sessions)) = (row.get(0).as_string(), row.get(1).as_f64()) {
                lines.push_str(&tally_line(&value, sessions as u64));
            }
        }
        Ok(lines)
    }

    /// Deletes what has expired at `now` (seconds since the epoch), a bounded batch at a
    /// time, and sets the next alarm.
    fn expire(&self, now: f64) -> Result<(), JsValue> {
        let expire = move |week: &Store| {
            week.exec(
                "DELETE FROM sessions WHERE session_id IN ( \
                     SELECT session_id FROM sessions WHERE expires_at <= ? LIMIT ? \
                 ) RETURNING record",
                &[now.into(), EXPIRED_PER_ALARM.into()],
            )
        };
        let leaving = self.retention.on_expiry();
        let deleted = self.repairing(StoreOperation::Expire, leaving, expire)?;
        // What KV missed of sessions that have gone no longer matters.
        self.exec(
            "DELETE FROM not_in_kv WHERE session_id NOT IN (SELECT session_id FROM sessions)",
            &[],
        )?;
        if deleted == EXPIRED_PER_ALARM {
            return self.set_alarm(now);
        }
        let mut summary_goes = self.summary_expiry()?;
        if summary_goes.is_some_and(|at| at <= now) {
            self.exec("DELETE FROM summary", &[])?;
            self.known.named.borrow_mut().clear();
            self.known.full.set(0);
            summary_goes = None;
        }
        let next_record = self.next_expiry()?;
        self.known.earliest.set(Some(next_record));
        let next = match (next_record, summary_goes) {
            (Some(record), Some(summary)) => Some(record.min(summary)),
            (record, summary) => record.or(summary),
        };
        match next {
            Some(next) => self.set_alarm(next),
            None => Ok(()),
        }
    }

    /// When the week's summary goes, if it holds one; at once when none is kept any more.
    fn summary_expiry(&self) -> Result<Option<f64>, JsValue> {
        if self.exec("SELECT 1 FROM summary LIMIT 1", &[])?.length() == 0 {
            return Ok(None);
        }
        let week = self.week.ok_or("a week object without a week")?;
        Ok(Some(
            self.retention
                .summary_expires_at(week)
                .map_or(f64::MIN, |at| at as f64),
        ))
    }

    /// Runs `delete` (a statement deleting records, returning each one's record) and takes
    /// what it deleted out of the tallies (into the summary, for sessions `leaving` as
    /// [`Leaving::Summarised`]), in one transaction; on an inconsistency, repairs the week
    /// and runs it again. Returns how many records went.
    fn repairing(
        &self,
        operation: StoreOperation,
        leaving: Leaving,
        delete: impl Fn(&Store) -> Result<Array, JsValue> + Clone + 'static,
    ) -> Result<u32, JsValue> {
        let run = |delete: Box<Deletion>| {
            self.transaction(Box::new(move |week| {
                let deleted = delete(week)?;
                week.take_out(&deleted, leaving)?;
                Ok(deleted.length().into())
            }))
        };
        let deleted = match run(Box::new(delete.clone())) {
            Ok(deleted) => deleted,
            Err(error) => {
                let found = inconsistency(&error).ok_or(error)?;
                self.repair(operation, found, Box::new(|_| Ok(())))?;
                run(Box::new(delete))?
            }
        };
        Ok(deleted.as_f64().unwrap_or(0.0) as u32)
    }

    /// Rebuilds the week's tallies from its records in one transaction, after `first` (the
    /// change that found the inconsistency, when it is a write), dropping the records that
    /// are not records, and logs the one `store_inconsistent` event.
    fn repair(
        &self,
        operation: StoreOperation,
        found: Inconsistent,
        first: Box<FirstChange>,
    ) -> Result<(), JsValue> {
        let dropped = self.transaction(Box::new(move |week| {
            first(week)?;
            Ok(week.rebuild()?.into())
        }))?;
        let dropped = dropped.as_f64().unwrap_or(0.0) as u64;
        let event =
            StoreInconsistentEvent::new(crate::kv::TARGET, operation, self.week, found, dropped);
        console_log!("{}", to_line(&event));
        Ok(())
    }

    /// Counts the week's profiles afresh from its records (inside the caller's transaction),
    /// dropping the records that are not records; returns how many were dropped.
    fn rebuild(&self) -> Result<u32, JsValue> {
        // Row by row from the cursor: an object's memory holds a large week's profiles,
        // never its records.
        let rows = (self.sql)
            .exec("SELECT session_id, record FROM sessions", Array::new())?
            .raw();
        let mut profiles = ProfileMoves::default();
        let mut invalid = Vec::new();
        for row in rows.into_iter().filter_map(Result::ok) {
            let row: Array = row.unchecked_into();
            let record = row.get(1).as_string().unwrap_or_default();
            match values_of(&record) {
                Ok(values) => profiles.add(values, 1),
                Err(_) => invalid.push(row.get(0)),
            }
        }
        for session_id in &invalid {
            self.exec(
                "DELETE FROM sessions WHERE session_id = ?",
                std::slice::from_ref(session_id),
            )?;
        }
        self.exec(
            "DELETE FROM not_in_kv WHERE session_id NOT IN (SELECT session_id FROM sessions)",
            &[],
        )?;
        self.exec("DELETE FROM profiles", &[])?;
        // A summary row cannot be rebuilt (its records are gone): one that is not a count
        // is dropped.
        self.exec(
            "DELETE FROM summary WHERE typeof(sessions) <> 'integer' OR sessions < 0",
            &[],
        )?;
        self.known.full.set(0);
        self.known.named.borrow_mut().clear();
        self.apply(&profiles)?;
        Ok(invalid.len() as u32)
    }

    /// Takes deleted records (rows of one column) out of the tallies, and into the summary
    /// when they stay counted.
    fn take_out(&self, deleted: &Array, leaving: Leaving) -> Result<(), JsValue> {
        let mut departure = stored_week::Departure::default();
        let mut live = ProfileMoves::default();
        for row in deleted.iter() {
            let record = columns(&row).get(0).as_string().unwrap_or_default();
            let gone = stored_week::depart(&record, leaving).map_err(|found| found.name())?;
            departure.extend(&gone);
            live.replace(values_of(&record).ok(), None);
        }
        self.apply(&live)?;
        self.add_to_summary(&departure.summary)
    }

    /// Adds sessions to the summary's rows (they only ever gain, until the summary goes).
    fn add_to_summary(&self, gains: &TallyMoves) -> Result<(), JsValue> {
        for (dimension, value, sessions) in gains.iter() {
            self.exec(
                "INSERT INTO summary (dimension, value, sessions) VALUES (?, ?, ?) \
                 ON CONFLICT (dimension, value) DO UPDATE SET sessions = sessions + excluded.sessions",
                &[dimension.name().into(), value.into(), (sessions as f64).into()],
            )?;
        }
        Ok(())
    }

    /// Applies profile moves by the core's rule for a row ([`moved_row`]), a statement per
    /// [`PROFILES_PER_STATEMENT`] profiles (a ping moves one or two): each row moved by its
    /// sessions and returned with its count after. A profile whose count falls to zero loses
    /// its row; one that would fall below zero is an inconsistency, thrown as its name so that
    /// the transaction rolls back and the caller repairs.
    fn apply(&self, moves: &ProfileMoves) -> Result<(), JsValue> {
        let moves: Vec<_> = moves.iter().collect();
        for batch in moves.chunks(PROFILES_PER_STATEMENT) {
            let mut statement = String::from(MOVE_PROFILES);
            let mut bindings = Vec::with_capacity(batch.len() * 6);
            for (profile, sessions) in batch {
                if !bindings.is_empty() {
                    statement.push(',');
                }
                statement.push_str("(?,?,?,?,?,?)");
                bindings.extend(profile.split(PROFILE_SEPARATOR).map(JsValue::from));
                bindings.push((*sessions as f64).into());
            }
            statement.push_str(MOVE_PROFILES_TAIL);
            for row in self.exec(&statement, &bindings)?.iter() {
                let row = columns(&row);
                // The count after the move, judged as a row holding nothing moved by it.
                let after = row.get(5).as_f64().unwrap_or(-1.0) as i64;
                if moved_row(0, after).map_err(|found| found.name())?.is_some() {
                    continue;
                }
                // A row dropped: its values may be named no more, and a dimension at its
                // bound may have room again. (A row added leaves the bits as they are: a full
                // dimension admits no value, and one that fills up is counted again when
                // next asked, since its bit was not set.)
                self.known.full.set(0);
                let key: Vec<JsValue> = (0..5).map(|at| row.get(at)).collect();
                for (dimension, value) in Dimension::ALL.into_iter().zip(&key) {
                    self.known
                        .forget_named(dimension, &value.as_string().unwrap_or_default());
                }
                self.exec(
                    "DELETE FROM profiles WHERE platform = ? AND primary_framework = ? \
                     AND daemon_version = ? AND protocol_version = ? AND node_major = ?",
                    &key,
                )?;
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

/// The inconsistency a thrown value names, if it names one.
fn inconsistency(error: &JsValue) -> Option<Inconsistent> {
    Inconsistent::from_name(&error.as_string()?)
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
