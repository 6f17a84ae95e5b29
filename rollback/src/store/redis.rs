//! Redis: one hash per week, `sessions:<YYYY-Www>`, field = session id, value = record, and
//! beside it `tallies:<YYYY-Www>`, field = `<dimension>:<value>`, value = sessions, plus a
//! `generation` field that every change of the week increments (a repair checks it), and
//! `summary:<YYYY-Www>`, alike, counting the sessions whose records have gone but which the
//! week still counts ([`telemetry_core::summary`]). One `HGETALL` of each answers a count or a
//! breakdown, at any week size.
//!
//! Redis 7.0 cannot expire single hash fields, so the week's records hash expires as a whole,
//! when the week's first record would (`EXPIREAT … NX`, the core's expiry, cut to the day): no
//! record outlives the TTL, and the week's later records go up to a week earlier than they
//! would in KV. When summaries are kept, the tallies outlive the records hash (until the
//! summary's retention ends): tallies without records are the summary of sessions whose
//! records went, and the next change of the week folds them into `summary:` first.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use telemetry_core::stored_week::{
    self, Inconsistent, KeepError, OTHER_VALUE, TalliedValues, Vocabulary,
};
use telemetry_core::summary::{Leaving, Retention};
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite, Tally, TallyMoves};

use super::{LiveRecord, StoreError};

/// How long a command or a (re)connection may take before it counts as a failure.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    retention: Retention,
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// Oldest Redis this store runs on: `EXPIREAT … NX` and `EXPIRETIME` came in 7.0. On an
/// older server every batch would fail, forever; better to refuse to start.
const MIN_MAJOR_VERSION: u32 = 7;

/// Checks `redis_version` in the `INFO server` answer.
fn check_version(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))
        .unwrap_or("unknown");
    let major = version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok());
    match major {
        Some(major) if major >= MIN_MAJOR_VERSION => Ok(()),
        _ => Err(format!(
            "Redis {MIN_MAJOR_VERSION}.0 or newer is needed (EXPIREAT … NX); the server reports {version}"
        )),
    }
}

fn week_key(week: IsoWeek) -> String {
    format!("sessions:{week}")
}

fn tallies_key(week: IsoWeek) -> String {
    format!("tallies:{week}")
}

fn summary_key(week: IsoWeek) -> String {
    format!("summary:{week}")
}

/// `EVAL script` on a week's three keys, records, tallies and summary, as both scripts take
/// them, with the summary's expiry first (`""`: no summary is kept).
fn eval_on_week(script: &str, week: IsoWeek, retention: Retention) -> redis::Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(script)
        .arg(3)
        .arg(week_key(week))
        .arg(tallies_key(week))
        .arg(summary_key(week))
        .arg(
            retention
                .summary_expires_at(week)
                .map_or(String::new(), |at| at.to_string()),
        );
    eval
}

/// Run first by both scripts: a week whose records hash has expired as a whole still has
/// tallies, counting sessions that have no record any more. They become the week's summary
/// (`ARGV[1]`, its expiry; `""`: none is kept, and they just go) before anything else
/// changes, and the script returns 0 so that the caller reads the week again.
const FOLD_EXPIRED: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local fields = redis.call('HGETALL', KEYS[2])
  local folded = false
  for i = 1, #fields, 2 do
    if fields[i] ~= 'generation' then
      folded = true
      local held = fields[i + 1]
      if ARGV[1] ~= '' and string.match(held, '^%d+$') and #held <= 18 then
        -- A summary count that is not one (a hand edit) is replaced, never added to: HINCRBY
        -- would fail half-way, and a script is not rolled back.
        local summarised = redis.call('HGET', KEYS[3], fields[i])
        if summarised and (not string.match(summarised, '^%d+$') or #summarised > 18) then
          redis.call('HSET', KEYS[3], fields[i], held)
        else
          redis.call('HINCRBY', KEYS[3], fields[i], held)
        end
      end
    end
  end
  if folded then
    redis.call('DEL', KEYS[2])
    if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
      redis.call('EXPIREAT', KEYS[3], ARGV[1])
    end
    return 0
  end
end
"#;

/// The deletion journal: a sorted set of the sessions deleted here, each scored by when its
/// entry expires (the TTL after the deletion, as a record written then would).
const DELETIONS: &str = "deletions";

/// Records an export reads at a time.
const RECORDS_PER_PAGE: usize = 1_000;

/// A hash's fields and values, as `HGETALL` answers them.
type HashFields = Vec<(String, String)>;

/// A tally's field: the dimension's name has no `:`, so the first one ends it.
fn tally_field(dimension: Dimension, value: &str) -> String {
    format!("{}:{value}", dimension.name())
}

/// The tallies hash's field that counts the week's changes: no dimension's field, which all
/// hold a `:`.
const GENERATION: &str = "generation";

/// Applies one week's changes if the records they were computed from are still there.
/// `KEYS` as [`eval_on_week`] gives them; `ARGV`: the summary's expiry ([`FOLD_EXPIRED`]); the
/// tallies' generation the changes were computed from when they name a value the tallies did
/// not (`""`: no check); the number of records read, then that many (session id, record read,
/// `""` for none); the number of writes, then that many (session id, record, `""` to delete);
/// the number of tally moves, then that many (tally field, sessions moved) pairs; then the
/// summary's (field, sessions gained) pairs. A record that changed since it was read (another
/// instance wrote it), or a generation that moved (another instance may have named values,
/// and the bound on them must hold), makes the script change nothing and return 0: the
/// caller reads again and recomputes. A tally that would fall below zero, or a count that is
/// not a count, makes it change nothing and return -1: the week is inconsistent. Every rule
/// (which repeat is written, how tallies move, which values are named, what a summary
/// keeps) is the core's, computed in Rust; this only checks and applies.
fn apply_week_script() -> String {
    format!("{FOLD_EXPIRED}{APPLY_WEEK}")
}

const APPLY_WEEK: &str = r#"
if ARGV[2] ~= '' and (redis.call('HGET', KEYS[2], 'generation') or '0') ~= ARGV[2] then
  return 0
end
local read = tonumber(ARGV[3])
for i = 4, 2 * read + 2, 2 do
  if (redis.call('HGET', KEYS[1], ARGV[i]) or '') ~= ARGV[i + 1] then return 0 end
end
local at = 2 * read + 4
local writes = tonumber(ARGV[at])
local moves = at + 2 * writes + 1
local moved = tonumber(ARGV[moves])
local gains = moves + 2 * moved + 1
-- Every count checked as HINCRBY will read it (digits only) before anything is written: a
-- script is not rolled back, so it must not fail half-way.
local function count_of(key, field)
  local held = redis.call('HGET', key, field) or '0'
  if not string.match(held, '^%-?%d+$') or #held > 18 then return nil end
  return tonumber(held)
end
if count_of(KEYS[2], 'generation') == nil then return -1 end
for i = moves + 1, gains - 1, 2 do
  local held = count_of(KEYS[2], ARGV[i])
  if held == nil or held + tonumber(ARGV[i + 1]) < 0 then return -1 end
end
for i = gains, #ARGV, 2 do
  if count_of(KEYS[3], ARGV[i]) == nil then return -1 end
end
for i = at + 1, at + 2 * writes, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
for i = moves + 1, gains - 1, 2 do
  if redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) == 0 then
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
for i = gains, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
end
if gains <= #ARGV and ARGV[1] ~= '' then redis.call('EXPIREAT', KEYS[3], ARGV[1]) end
redis.call('HINCRBY', KEYS[2], 'generation', 1)
return 1
"#;

/// Replaces a week's tallies with a rebuild if the week has not changed since it was read,
/// and drops the summary's counts that are not counts.
/// `KEYS` as [`eval_on_week`] gives them; `ARGV`: the summary's expiry ([`FOLD_EXPIRED`]),
/// the generation read (`""` for none), the tallies' expiry (`""`: the records'), the number
/// of records to drop, then their session ids, then (tally field, sessions) pairs. Returns 0
/// when the week changed in between (the caller reads again), else 1.
fn replace_tallies_script() -> String {
    format!("{FOLD_EXPIRED}{REPLACE_TALLIES}")
}

const REPLACE_TALLIES: &str = r#"
if (redis.call('HGET', KEYS[2], 'generation') or '') ~= ARGV[2] then return 0 end
-- A summary count that is not a count (a hand edit) cannot be rebuilt: it is dropped.
local summary = redis.call('HGETALL', KEYS[3])
for i = 1, #summary, 2 do
  if not string.match(summary[i + 1], '^%d+$') or #summary[i + 1] > 18 then
    redis.call('HDEL', KEYS[3], summary[i])
  end
end
local dropped = tonumber(ARGV[4])
for i = 5, 4 + dropped do redis.call('HDEL', KEYS[1], ARGV[i]) end
local generation = tonumber(ARGV[2]) or 0
redis.call('DEL', KEYS[2])
-- A week left without records keeps no live tallies: there is nothing for them to count.
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
for i = 5 + dropped, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], 'generation', generation + 1)
local expiry = tonumber(ARGV[3]) or redis.call('EXPIRETIME', KEYS[1])
if expiry > 0 then redis.call('EXPIREAT', KEYS[2], expiry) end
return 1
"#;

/// How many times a week's changes are recomputed when other instances keep writing the same
/// sessions in between; after that the batch fails and the writer retries it.
const CONFLICT_RETRIES: usize = 8;

/// One week's changes, as [`APPLY_WEEK`] takes them: the records they were computed from,
/// the records to write (`None`: to delete), the tallies' moves, and the tallies' generation
/// when the changes name a value the tallies did not.
#[derive(Default)]
struct WeekChanges {
    read: Vec<(String, Option<String>)>,
    writes: Vec<(String, Option<String>)>,
    moves: TallyMoves,
    /// What the week's summary gains: a deleted session that stays counted.
    summary: TallyMoves,
    named_new_values_at: Option<String>,
}

/// A week's tally fields and generation, read with its records, for the core's bound on the
/// values a week names ([`stored_week::Vocabulary`]).
#[derive(Default)]
struct TallySnapshot {
    /// `<dimension>:<value>` fields, sorted.
    fields: Vec<String>,
    generation: String,
}

impl TallySnapshot {
    /// From the week's tallies and its summary: the bound is on what a readout of the week
    /// names, both added.
    fn of(tallies: HashFields, summary: HashFields) -> Self {
        let mut snapshot = Self {
            generation: "0".into(),
            ..Self::default()
        };
        for (field, value) in tallies.into_iter().chain(summary) {
            if field == GENERATION {
                snapshot.generation = value;
            } else {
                snapshot.fields.push(field);
            }
        }
        snapshot.fields.sort_unstable();
        snapshot.fields.dedup();
        snapshot
    }
}

/// Whether `moves` add sessions to a tally row `tallies` does not hold.
fn adds_a_row(moves: &TallyMoves, tallies: &TallySnapshot) -> bool {
    moves.iter().any(|(dimension, value, sessions)| {
        sessions > 0
            && tallies
                .fields
                .binary_search(&tally_field(dimension, value))
                .is_err()
    })
}

impl TalliedValues for &TallySnapshot {
    type Error = StoreError;

    fn names(&mut self, dimension: Dimension, value: &str) -> Result<bool, StoreError> {
        let field = tally_field(dimension, value);
        Ok(self.fields.binary_search(&field).is_ok())
    }

    fn distinct(&mut self, dimension: Dimension) -> Result<u64, StoreError> {
        let prefix = tally_field(dimension, "");
        let other = tally_field(dimension, OTHER_VALUE);
        let named = (self.fields.iter())
            .filter(|field| field.starts_with(&prefix) && **field != other)
            .count();
        Ok(named as u64)
    }
}

impl WeekChanges {
    /// What `run` (one week's pings, in order) does to the records read for it: a new session
    /// is written, a repeat only when a field changed, and a repeat within the run sees the
    /// ping before it.
    fn of_pings(
        week: IsoWeek,
        run: &[SessionWrite],
        read: Vec<(String, Option<String>)>,
        tallies: &TallySnapshot,
    ) -> Result<Self, StoreError> {
        let inconsistent = |found| StoreError::Inconsistent { week, found };
        let mut vocabulary = Vocabulary::new(tallies);
        let mut latest = read.clone();
        let mut changed = vec![false; latest.len()];
        let mut moves = TallyMoves::default();
        for write in run {
            let at = latest
                .iter()
                .position(|(id, _)| id == write.session_id.as_str());
            let (Some((_, stored)), Some(changed)) = (
                at.and_then(|at| latest.get_mut(at)),
                at.and_then(|at| changed.get_mut(at)),
            ) else {
                return Err(StoreError::Unavailable(format!(
                    "{week}: a session missing from its read"
                )));
            };
            let kept =
                stored_week::keep_within(stored.as_deref(), &write.record_json, &mut vocabulary)
                    .map_err(|error| match error {
                        KeepError::Inconsistent(found) => inconsistent(found),
                        KeepError::Store(error) => error,
                    })?;
            let Some(kept) = kept else { continue };
            moves.extend(&kept.moves);
            *stored = Some(kept.record);
            *changed = true;
        }
        let mut changed = changed.into_iter();
        latest.retain(|_| changed.next().unwrap_or(false));
        // Checked whenever a row the snapshot lacks gains sessions, not only when the
        // vocabulary named a new value: another instance may have freed and refilled the
        // room the snapshot saw.
        let named_new_values_at =
            (vocabulary.grew || adds_a_row(&moves, tallies)).then(|| tallies.generation.clone());
        Ok(Self {
            read,
            writes: latest,
            moves,
            summary: TallyMoves::default(),
            named_new_values_at,
        })
    }

    /// Deleting a session's record, read as `record`, the session `leaving` the count or not.
    fn of_deletion(
        week: IsoWeek,
        session_id: &str,
        record: String,
        leaving: Leaving,
    ) -> Result<Self, StoreError> {
        let departure = stored_week::depart(&record, leaving)
            .map_err(|found| StoreError::Inconsistent { week, found })?;
        Ok(Self {
            read: vec![(session_id.to_owned(), Some(record))],
            writes: vec![(session_id.to_owned(), None)],
            moves: departure.live,
            summary: departure.summary,
            named_new_values_at: None,
        })
    }

    /// `EVAL APPLY_WEEK` with these changes.
    fn script(&self, week: IsoWeek, retention: Retention) -> redis::Cmd {
        let mut eval = eval_on_week(&apply_week_script(), week, retention);
        eval.arg(self.named_new_values_at.as_deref().unwrap_or(""));
        for pairs in [&self.read, &self.writes] {
            eval.arg(pairs.len());
            for (id, record) in pairs {
                eval.arg(id).arg(record.as_deref().unwrap_or(""));
            }
        }
        eval.arg(self.moves.iter().count());
        for moves in [&self.moves, &self.summary] {
            for (dimension, value, sessions) in moves.iter() {
                eval.arg(tally_field(dimension, value)).arg(sessions);
            }
        }
        eval
    }
}

impl RedisStore {
    /// Connects and checks with `PING`. The connection reconnects by itself afterwards.
    pub async fn connect(url: &str, retention: Retention) -> Result<Self, StoreError> {
        // rustls needs a process-wide crypto provider for rediss://; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let mut connection = client.get_connection_manager_with_config(config).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await?;
        check_version(&info).map_err(StoreError::Unavailable)?;
        Ok(Self {
            connection,
            retention,
        })
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// When a week's tallies hash expires: with the week's records hash when no summary is
    /// kept; else when the summary goes (tallies left without records are part of it), and
    /// never before the week's last record could.
    fn tallies_expire_at(&self, week: IsoWeek, records_expire_at: i64) -> i64 {
        let last_record = self.retention.records_until(week);
        (self.retention.summary_expires_at(week))
            .map_or(records_expire_at, |summary| summary.max(last_record))
    }

    pub async fn write_batch(
        &self,
        batch: &[SessionWrite],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        // A batch is almost always one week: one read and one script per week.
        for run in batch.chunk_by(|a, b| a.week == b.week) {
            let Some(first) = run.first() else { continue };
            let mut ids: Vec<&str> = run.iter().map(|write| write.session_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let changes = |read, tallies: &TallySnapshot| {
                WeekChanges::of_pings(first.week, run, read, tallies)
            };
            self.apply(first.week, &ids, Some(expires_at), changes)
                .await?;
        }
        Ok(())
    }

    /// Reads the week's records of `ids` (and, for pings, its tallies), computes the changes
    /// from them, and applies those unless another instance changed one of the records (or
    /// named values the changes did not see) in between: then it reads again.
    async fn apply(
        &self,
        week: IsoWeek,
        ids: &[&str],
        expires_at: Option<i64>,
        changes: impl Fn(
            Vec<(String, Option<String>)>,
            &TallySnapshot,
        ) -> Result<WeekChanges, StoreError>,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        // Pings (which have an expiry) may name new values; a deletion never does.
        let pings = expires_at.is_some();
        for _ in 0..CONFLICT_RETRIES {
            let mut read = redis::pipe();
            read.atomic().cmd("HMGET").arg(week_key(week)).arg(ids);
            if pings {
                read.cmd("HGETALL").arg(tallies_key(week));
                read.cmd("HGETALL").arg(summary_key(week));
            }
            let (stored, tallies, summary): (Vec<Option<String>>, HashFields, HashFields) = if pings
            {
                read.query_async(&mut connection).await?
            } else {
                let (stored,): (Vec<Option<String>>,) = read.query_async(&mut connection).await?;
                (stored, Vec::new(), Vec::new())
            };
            let read = ids.iter().map(|id| (*id).to_owned()).zip(stored).collect();
            let changes = changes(read, &TallySnapshot::of(tallies, summary))?;
            if changes.writes.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            pipe.atomic()
                .add_command(changes.script(week, self.retention));
            // NX: only a week's first write sets it, so no later record extends the hash's
            // life, and with it the life of the week's earlier records, past their TTL.
            if let Some(expires_at) = expires_at {
                let tallies_expire_at = self.tallies_expire_at(week, expires_at);
                for (key, at) in [
                    (week_key(week), expires_at),
                    (tallies_key(week), tallies_expire_at),
                ] {
                    pipe.cmd("EXPIREAT").arg(key).arg(at).arg("NX").ignore();
                }
            }
            let (applied,): (i64,) = pipe.query_async(&mut connection).await?;
            match applied {
                1 => return Ok(()),
                -1 => {
                    let found = Inconsistent::TallyBelowZero;
                    return Err(StoreError::Inconsistent { week, found });
                }
                _ => {}
            }
        }
        Err(StoreError::Unavailable(format!(
            "{week}: its records kept changing through {CONFLICT_RETRIES} attempts to write them"
        )))
    }

    /// The week's sessions counted along `dimension`, from its tallies. A count that is not
    /// a count (a hand edit) is an inconsistency.
    pub async fn tally_week(
        &self,
        week: IsoWeek,
        dimension: Dimension,
    ) -> Result<Tally, StoreError> {
        let mut connection = self.connection.clone();
        let (live, summary): (HashFields, HashFields) = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(tallies_key(week))
            .cmd("HGETALL")
            .arg(summary_key(week))
            .query_async(&mut connection)
            .await?;
        let prefix = tally_field(dimension, "");
        let mut rows = Vec::new();
        for (field, sessions) in live.into_iter().chain(summary) {
            if let Some(value) = field.strip_prefix(&prefix) {
                let sessions = sessions.parse().map_err(|_| StoreError::Inconsistent {
                    week,
                    found: Inconsistent::TallyBelowZero,
                })?;
                rows.push((value.to_owned(), sessions));
            }
        }
        // A hash's fields come in no order: sorted once, not inserted one by one.
        Ok(Tally::from_rows(rows))
    }

    /// Rebuilds the week's tallies from its records, dropping the records that are not
    /// records, unless another instance changes the week meanwhile: then it reads again.
    /// Returns how many records were dropped.
    pub async fn repair(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        for _ in 0..CONFLICT_RETRIES {
            let (records, generation): (Vec<(String, String)>, Option<String>) = redis::pipe()
                .atomic()
                .cmd("HGETALL")
                .arg(week_key(week))
                .cmd("HGET")
                .arg(tallies_key(week))
                .arg(GENERATION)
                .query_async(&mut connection)
                .await?;
            let rebuilt = stored_week::rebuild(records);
            let tallies_expire_at = (self.retention.keeps_summaries())
                .then(|| self.tallies_expire_at(week, 0).to_string());
            let mut script = eval_on_week(&replace_tallies_script(), week, self.retention);
            script
                .arg(generation.unwrap_or_default())
                .arg(tallies_expire_at.unwrap_or_default())
                .arg(rebuilt.invalid.len())
                .arg(&rebuilt.invalid);
            for (dimension, value, sessions) in rebuilt.tallies.iter() {
                script.arg(tally_field(dimension, value)).arg(sessions);
            }
            let replaced: bool = script.query_async(&mut connection).await?;
            if replaced {
                return Ok(rebuilt.invalid.len() as u64);
            }
        }
        Err(StoreError::Unavailable(format!(
            "{week}: its records kept changing through {CONFLICT_RETRIES} attempts to repair it"
        )))
    }

    /// Gives every week's tallies and summary the expiry the configured retention says, at
    /// the server's start: a week written before summaries were kept (or under another
    /// `SUMMARY_RETENTION_WEEKS`) would otherwise keep the expiry it was given then, its
    /// numbers going with its records or staying past the retention. Returns how many weeks
    /// it went through.
    pub async fn apply_retention(&self, now: i64) -> Result<usize, StoreError> {
        let mut connection = self.connection.clone();
        let mut weeks = weeks_with(&mut connection, "tallies:").await?;
        weeks.extend(weeks_with(&mut connection, "summary:").await?);
        weeks.sort_unstable();
        weeks.dedup();
        for &week in &weeks {
            let records_expire_at: i64 = redis::cmd("EXPIRETIME")
                .arg(week_key(week))
                .query_async(&mut connection)
                .await?;
            let mut pipe = redis::pipe();
            match self.retention.summary_expires_at(week) {
                Some(summary) if summary > now => {
                    let tallies = self.tallies_expire_at(week, records_expire_at);
                    pipe.cmd("EXPIREAT")
                        .arg(tallies_key(week))
                        .arg(tallies)
                        .ignore();
                    pipe.cmd("EXPIREAT")
                        .arg(summary_key(week))
                        .arg(summary)
                        .ignore();
                }
                // Past its retention, or none kept: the summary goes, and the tallies go
                // with the records (at once when those have gone).
                _ => {
                    pipe.cmd("DEL").arg(summary_key(week)).ignore();
                    if records_expire_at > 0 {
                        pipe.cmd("EXPIREAT")
                            .arg(tallies_key(week))
                            .arg(records_expire_at)
                            .ignore();
                    } else {
                        pipe.cmd("DEL").arg(tallies_key(week)).ignore();
                    }
                }
            }
            pipe.query_async::<()>(&mut connection).await?;
        }
        Ok(weeks.len())
    }

    /// Deletes the journal's entries that have expired at `now` (the expiry task), so that no
    /// id stays past its TTL in memory or on disk.
    pub async fn expire_journal(&self, now: i64) -> Result<usize, StoreError> {
        Ok(redis::cmd("ZREMRANGEBYSCORE")
            .arg(DELETIONS)
            .arg("-inf")
            .arg(now)
            .query_async(&mut self.connection.clone())
            .await?)
    }

    /// When the journal's next entry expires, if it holds one.
    pub async fn next_journal_expiry(&self) -> Result<Option<i64>, StoreError> {
        let first: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(DELETIONS)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(first.first().map(|(_, at)| *at))
    }

    /// The deletion journal at `now`: the sessions deleted here, for the other target.
    pub async fn journal(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(DELETIONS)
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(&mut self.connection.clone())
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// Takes `ids` out of the deletion journal; returns how many it held.
    pub async fn forget_journaled(&self, ids: &[SessionId]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = ids.iter().map(SessionId::as_str).collect();
        Ok(redis::cmd("ZREM")
            .arg(DELETIONS)
            .arg(ids)
            .query_async(&mut self.connection.clone())
            .await?)
    }

    /// `PING`.
    pub async fn check(&self) -> Result<(), StoreError> {
        Ok(redis::cmd("PING")
            .query_async::<()>(&mut self.connection.clone())
            .await?)
    }

    /// The weeks with a records hash, in order.
    pub async fn weeks_held(&self) -> Result<Vec<IsoWeek>, StoreError> {
        let mut weeks = stored_weeks(&mut self.connection.clone()).await?;
        weeks.sort();
        Ok(weeks)
    }

    pub async fn records_of_week(&self, week: IsoWeek) -> Result<Vec<LiveRecord>, StoreError> {
        let (records, expires_at) = week_records(&mut self.connection.clone(), week).await?;
        // -2: no such hash (no records); -1: a hash without an expiry, which this store never
        // writes: refuse to hand on records whose lifetime is unknown.
        if expires_at < 0 && !records.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "{week}: the hash has no expiry"
            )));
        }
        Ok(records
            .into_iter()
            .map(|(session_id, record_json)| LiveRecord {
                session_id,
                record_json,
                expires_at,
            })
            .collect())
    }

    /// One page of the week's records, from `cursor` (`None`: the first page), and the cursor
    /// of the next page (`None`: that was the last): `HSCAN`, so that an export holds a page
    /// in memory, never the week.
    pub async fn records_page(
        &self,
        week: IsoWeek,
        cursor: Option<String>,
    ) -> Result<(Vec<LiveRecord>, Option<String>), StoreError> {
        let mut connection = self.connection.clone();
        let ((next, fields), expires_at): ((String, Vec<String>), i64) = redis::pipe()
            .atomic()
            .cmd("HSCAN")
            .arg(week_key(week))
            .arg(cursor.as_deref().unwrap_or("0"))
            .arg("COUNT")
            .arg(RECORDS_PER_PAGE)
            .cmd("EXPIRETIME")
            .arg(week_key(week))
            .query_async(&mut connection)
            .await?;
        if expires_at < 0 && !fields.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "{week}: the hash has no expiry"
            )));
        }
        let records = (fields.chunks_exact(2))
            .filter_map(|pair| match pair {
                [session_id, record_json] => Some(LiveRecord {
                    session_id: session_id.clone(),
                    record_json: record_json.clone(),
                    expires_at,
                }),
                _ => None,
            })
            .collect();
        Ok((records, (next != "0").then_some(next)))
    }

    /// Deletes the session's field from every week's hash (found with `SCAN`, since which
    /// weeks it was seen in is not recorded anywhere else), and moves the week's tallies.
    pub async fn delete_session(
        &self,
        session_id: &SessionId,
        now: i64,
        journal_until: i64,
    ) -> Result<usize, StoreError> {
        let mut deleted = 0;
        let id = session_id.as_str();
        // Journaled whether or not this store held a record: the Worker's KV may hold one
        // that an import would otherwise bring here after the deletion. The key lives as
        // long as its latest entry.
        redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(DELETIONS)
            .arg("GT")
            .arg(journal_until)
            .arg(id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(DELETIONS)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("EXPIREAT")
            .arg(DELETIONS)
            .arg(journal_until)
            .arg("NX")
            .ignore()
            .cmd("EXPIREAT")
            .arg(DELETIONS)
            .arg(journal_until)
            .arg("GT")
            .ignore()
            .query_async::<()>(&mut self.connection.clone())
            .await?;
        for week in stored_weeks(&mut self.connection.clone()).await? {
            // Atomic rather than a `Cell`: the future is held across awaits by a server task.
            let found = std::sync::atomic::AtomicBool::new(false);
            let changes = |read: Vec<(String, Option<String>)>, _: &TallySnapshot| {
                let record = read.into_iter().next().and_then(|(_, record)| record);
                found.store(record.is_some(), std::sync::atomic::Ordering::Relaxed);
                record.map_or_else(
                    || Ok(WeekChanges::default()),
                    |record| {
                        let leaving = self.retention.on_deletion(week, now);
                        WeekChanges::of_deletion(week, id, record, leaving)
                    },
                )
            };
            // The week's hashes keep the expiry they have.
            self.apply(week, &[id], None, changes).await?;
            deleted += usize::from(found.load(std::sync::atomic::Ordering::Relaxed));
        }
        Ok(deleted)
    }
}

/// A week's records (session id, record) and its hash's `EXPIRETIME`, read together.
async fn week_records(
    connection: &mut ConnectionManager,
    week: IsoWeek,
) -> Result<(Vec<(String, String)>, i64), StoreError> {
    Ok(redis::pipe()
        .atomic()
        .cmd("HGETALL")
        .arg(week_key(week))
        .cmd("EXPIRETIME")
        .arg(week_key(week))
        .query_async(connection)
        .await?)
}

/// Every week that has a records hash.
async fn stored_weeks(connection: &mut ConnectionManager) -> Result<Vec<IsoWeek>, StoreError> {
    weeks_with(connection, "sessions:").await
}

/// Every week that has a key named `<prefix><week>`.
async fn weeks_with(
    connection: &mut ConnectionManager,
    prefix: &str,
) -> Result<Vec<IsoWeek>, StoreError> {
    let mut weeks: Vec<IsoWeek> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await?;
        weeks.extend(
            keys.iter()
                .filter_map(|key| key.strip_prefix(prefix).and_then(IsoWeek::parse)),
        );
        if next == 0 {
            // SCAN may name a key twice.
            weeks.sort_unstable();
            weeks.dedup();
            return Ok(weeks);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_7_or_newer_is_accepted() {
        let info = |version: &str| {
            format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
        };
        assert!(check_version(&info("7.0.15")).is_ok());
        assert!(check_version(&info("8.2.1")).is_ok());
        let old = check_version(&info("6.2.14")).unwrap_err();
        assert!(
            old.contains("7.0 or newer") && old.contains("6.2.14"),
            "{old}"
        );
        assert!(check_version("# Server\r\n").is_err());
    }
}
