//! The `WEEKS` Durable Object namespace as the Worker calls it: a week's sessions spread over
//! `WEEK_SHARDS` [`WeekTally`] objects by a hash of the session id (the core's `shard_of`
//! and `week_object_name`), and the internal protocol between them, named here once: the
//! paths, what a request carries (headers for one session, body lines for a batch), and the
//! lines an answer holds.
//!
//! [`WeekTally`]: crate::week_tally::WeekTally

use telemetry_core::week::{shard_of, week_object_name};
use telemetry_core::{Dimension, IsoWeek, SessionWrite, Tally};
use worker::Env;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::web_sys;
use worker::worker_sys::{DurableObject, DurableObjectNamespace};

pub const BINDING: &str = "WEEKS";

/// Any origin: a stub's `fetch` goes to its object whatever the URL's host.
const ORIGIN: &str = "https://week";

/// `POST`: keep records, a [`record_line`] each in the body (the pings that reached an
/// isolate together, `crate::record_batch`); answers 200 with one line per record, in order:
/// [`WRITTEN`] and the record it wrote (for KV), [`HELD`] alone when it held that record
/// already, or [`FAILED`] and what failed.
pub const RECORD_PATH: &str = "/record";
pub const WRITTEN: char = '+';
pub const HELD: char = '=';
pub const FAILED: char = '!';
/// `POST`: note that KV missed the records of sessions, a session id per line of the body, so
/// that each one's next ping puts it again; answers 204.
pub const NOT_IN_KV_PATH: &str = "/not-in-kv";
/// `POST`: delete a session ([`SESSION_HEADER`]); answers how many records went.
pub const DELETE_PATH: &str = "/delete";
/// `GET /tally/<dimension>`: the week's tally along a dimension, a [`tally_line`] per value.
pub const TALLY_PREFIX: &str = "/tally/";
pub const SESSION_HEADER: &str = "x-session";

/// A record to keep, as a line of [`RECORD_PATH`]'s body: `<session> <expires at> <record>`,
/// the expiry in seconds since the epoch (a session id is never a space, and a record's JSON
/// never a line break).
pub fn record_line(session_id: &str, expires_at: i64, record: &str) -> String {
    format!("{session_id} {expires_at} {record}")
}

/// A record's answer from its object: the record it wrote, `None` for one it held already, or
/// what failed.
pub type Answer = Result<Option<String>, String>;

/// One line of [`RECORD_PATH`]'s answer as the record's [`Answer`].
fn parse_answer_line(line: &str) -> Answer {
    let mut chars = line.chars();
    match chars.next() {
        Some(WRITTEN) => Ok(Some(chars.as_str().to_owned())),
        Some(HELD) => Ok(None),
        Some(FAILED) => Err(chars.as_str().to_owned()),
        _ => Err("an answer line".into()),
    }
}

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
    /// Objects per week (`WEEK_SHARDS`).
    shards: u16,
}

impl Weeks {
    /// The namespace bound as `WEEKS`, a week spread over `shards` objects; `None` when the
    /// deployment has no such binding.
    pub fn bind(env: &Env, shards: u16) -> Option<Self> {
        let namespace = crate::kv::binding(env, BINDING)?.unchecked_into();
        // At least one: the configuration refuses 0, and no count may lose a week's objects.
        let shards = shards.max(1);
        Some(Self { namespace, shards })
    }

    /// Hands a ping's record to its session's object in its week, which decides: a new or
    /// changed record is kept and moves the tallies, and the object answers the record it
    /// wrote (the one handed over, or with `other` in a field past the week's bound on values,
    /// `telemetry_core::stored_week::keep_within`) for KV; a repeat that changed nothing
    /// changes nothing, and answers `None`. One record, one request, for the backfill; pings
    /// go in batches ([`Self::send_records`], `crate::record_batch`).
    pub async fn record(
        &self,
        write: &SessionWrite,
        record: &str,
        expires_at: i64,
    ) -> Result<Option<String>, JsValue> {
        let line = record_line(write.session_id.as_str(), expires_at, record);
        let answers = self.send_records(&self.object_of(write), vec![line]).await;
        let answer = answers.into_iter().next();
        answer
            .unwrap_or(Err("no answer".into()))
            .map_err(JsValue::from)
    }

    /// The name of the object that keeps `write`'s session in its week.
    pub fn object_of(&self, write: &SessionWrite) -> String {
        week_object_name(write.week, shard_of(write.session_id.as_str(), self.shards))
    }

    /// Sends [`record_line`]s to the object named `object` in one request; answers each
    /// line's [`Answer`] in order, every one the request's error should it fail.
    pub async fn send_records(&self, object: &str, lines: Vec<String>) -> Vec<Answer> {
        let sent = lines.len();
        let answered = async {
            let request = self.send(object, RECORD_PATH, &[], Some(&lines.join("\n")))?;
            answer(request).await
        };
        let failed = |error: String| vec![Err(error); sent];
        match answered.await {
            Ok((_, text)) if text.lines().count() == sent => {
                text.lines().map(parse_answer_line).collect()
            }
            // Answers matched to records by their place: a count that differs matches none.
            Ok(_) => failed("the object's answers do not match its records".into()),
            Err(error) => failed(crate::kv::describe(&error)),
        }
    }

    /// Tells the object named `object` that KV missed the records it wrote for these
    /// sessions (their puts failed, or its answer was lost): they stay counted, and each one's
    /// next ping puts its record again. One request, however many sessions.
    pub async fn note_not_in_kv(&self, object: &str, session_ids: &[&str]) -> Result<(), JsValue> {
        let body = session_ids.join("\n");
        answer(self.send(object, NOT_IN_KV_PATH, &[], Some(&body))?).await?;
        Ok(())
    }

    /// Deletes a session from a week (a deletion request), from the one object of the week
    /// that can hold it: the request is sent at once, and the future it returns answers how
    /// many records went, so that many weeks are asked together without a join combinator in
    /// the bundle.
    pub fn delete(
        &self,
        week: IsoWeek,
        session_id: &str,
    ) -> Result<impl Future<Output = Result<u64, JsValue>> + use<>, JsValue> {
        let shard = shard_of(session_id, self.shards);
        let sent = self.send_to(week, shard, DELETE_PATH, &[(SESSION_HEADER, session_id)])?;
        Ok(async move {
            let (_, deleted) = answer(sent).await?;
            deleted.parse().map_err(|_| "a count".into())
        })
    }

    /// The week's sessions by value along `dimension`, from its objects' tallies added up:
    /// one request per object, a few rows each, whatever the week's size. Every object is
    /// asked at once, and so is every week of a readout: the future answers when all have.
    pub fn tally(
        &self,
        week: IsoWeek,
        dimension: Dimension,
    ) -> Result<impl Future<Output = Result<Tally, JsValue>> + use<>, JsValue> {
        let path = format!("{TALLY_PREFIX}{}", dimension.name());
        let sent = (0..self.shards)
            .map(|shard| self.send_to(week, shard, &path, &[]))
            .collect::<Result<Vec<_>, JsValue>>()?;
        Ok(async move {
            let mut tally = Tally::default();
            for shard in sent {
                tally.add_all(&parse_tally_lines(&answer(shard).await?.1)?);
            }
            Ok(tally)
        })
    }

    /// Sends one request to a shard of a week's object.
    fn send_to(
        &self,
        week: IsoWeek,
        shard: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<JsFuture, JsValue> {
        self.send(&week_object_name(week, shard), path, headers, None)
    }

    /// Sends one request to the object named `name`, a `POST` when it carries headers or a
    /// body. A request of one session carries it in headers, which the object reads without
    /// awaiting a body.
    fn send(
        &self,
        name: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<JsFuture, JsValue> {
        let object: DurableObject = self.namespace.get_by_name(name)?;
        let init = web_sys::RequestInit::new();
        if !headers.is_empty() {
            let sent = web_sys::Headers::new()?;
            for (name, value) in headers {
                sent.set(name, value)?;
            }
            init.set_headers(&sent);
        }
        if let Some(body) = body {
            init.set_body(&JsValue::from_str(body));
        }
        if !headers.is_empty() || body.is_some() {
            init.set_method("POST");
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
