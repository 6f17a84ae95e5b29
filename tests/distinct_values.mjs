// A flood of distinct values against the real bundle in one workerd through Miniflare (no dev
// proxy in the way): each session sends a made-up daemon version of its own. The week's object keeps its tallies at the core's bound (1,000 values
// and `other`), counts every session, and a breakdown answers from those 1,001 rows. Then a
// named session erases itself (POST /v1/erase) and the last flooded one pings again: it takes
// the room under its own name, in the object and in KV alike. Run by tests/deployment.rs
// (needs build/ and npm ci). FLOOD_SESSIONS sets the size.
import { bundleModules } from "./bundle.mjs";
import { Miniflare, Log, LogLevel } from "miniflare";

const TOKEN = "distinct-values-read-token-0123456789abcdef";
// 20,000 in CI (twenty times the bound, about a minute here); FLOOD_SESSIONS=100000 for the
// issue's figure, run by hand (about seven minutes on 2 cores).
const SESSIONS = Number(process.env.FLOOD_SESSIONS ?? 20_000);
const BOUND = 1_000;
const CONCURRENCY = 32;
const fail = (message) => {
  console.error(message);
  process.exit(1);
};

const build = "build";
const modules = bundleModules(build);
const mf = new Miniflare({
  log: new Log(LogLevel.WARN),
  // The wide events of 100,000 pings are not wanted here; errors still show.
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.pipe(process.stderr);
  },
  cf: false,
  compatibilityDate: "2026-04-01",
  modulesRoot: build,
  modules,
  // A floor of one, so that the named values show one by one.
  bindings: {
    WAU_READ_TOKEN: TOKEN,
    ABUSE_LIMIT_PER_MINUTE: "0",
    SESSION_TTL_SECONDS: "7257600",
    BREAKDOWN_MIN_SESSIONS: "1",
  },
  kvNamespaces: { SESSIONS: "sessions" },
  durableObjects: { WEEKS: { className: "WeekTally", useSQLite: true } },
});
try {
  await mf.ready;
  const version = (n) => `1.0.0-flood.${n}`;
  const sessionId = (n) => `flooding-relay-${String(n).padStart(6, "0")}`;
  const ping = (n) =>
    mf.dispatchFetch("http://localhost/v1/session", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        protocol_version: "1.0.0",
        daemon_version: version(n),
        session_id: sessionId(n),
        platform: "linux",
        node_version: "v20.11.1",
        primary_framework: "react",
      }),
    });
  const started = Date.now();
  let next = 0;
  const refused = [];
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < SESSIONS) {
        const n = next++;
        const response = await ping(n);
        await response.arrayBuffer();
        if (response.status !== 204) refused.push(`${n}: ${response.status}`);
      }
    }),
  );
  if (refused.length > 0) fail(`refused pings: ${refused.slice(0, 5).join(", ")}`);
  const sent = (Date.now() - started) / 1000;
  const readout = async (query) => {
    const response = await mf.dispatchFetch(`http://localhost/v1/wau/${isoWeek(new Date())}${query}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    return response.json();
  };
  // The writes land inside waitUntil: wait for the count.
  let count;
  for (let tries = 0; tries < 200; tries++) {
    count = await readout("");
    if (count.weekly_active_sessions === SESSIONS) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (count.weekly_active_sessions !== SESSIONS) fail(`counted ${JSON.stringify(count)}, sent ${SESSIONS}`);
  const read = Date.now();
  const byVersion = await readout("?by=daemon_version");
  const readMs = Date.now() - read;
  const named = Object.keys(byVersion.counts).filter((value) => value !== "other");
  if (named.length !== BOUND || byVersion.counts.other !== SESSIONS - BOUND || byVersion.withheld_sessions !== 0) {
    fail(`by daemon_version: ${named.length} named, ${JSON.stringify({ ...byVersion, counts: undefined })}`);
  }
  if (!named.every((value) => byVersion.counts[value] === 1)) fail("a named value counts more than its session");
  // One named session erases itself: its room goes to the next new value, here the last
  // flooded session's own, when it pings again (it is new to KV too, which holds "other").
  const erased = named[0].replace("1.0.0-flood.", "");
  const erasure = await mf.dispatchFetch("http://localhost/v1/erase", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ session_id: sessionId(Number(erased)) }),
  });
  await erasure.arrayBuffer();
  if (erasure.status !== 204) fail(`erasure: ${erasure.status}`);
  const last = SESSIONS - 1;
  if (byVersion.counts[version(last)] !== undefined) fail(`${version(last)} was named before there was room`);
  await (await ping(last)).arrayBuffer();
  let moved;
  for (let tries = 0; tries < 100; tries++) {
    moved = await readout("?by=daemon_version");
    if (moved.counts[version(last)] === 1) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (
    moved.counts[version(last)] !== 1 ||
    moved.counts[version(Number(erased))] !== undefined ||
    moved.counts.other !== SESSIONS - BOUND - 1 ||
    moved.weekly_active_sessions !== SESSIONS - 1
  ) {
    fail(`after the erasure and a repeat: ${JSON.stringify({ ...moved, counts: undefined })}, other ${moved.counts.other}`);
  }
  console.log(
    `distinct values: ok (${SESSIONS} sessions in ${sent.toFixed(1)} s, a breakdown of ${BOUND + 1} rows in ${readMs} ms)`,
  );
} finally {
  await mf.dispose();
}

/** The ISO week of `date` as `YYYY-Www`, as the service names it. */
function isoWeek(date) {
  const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const weekday = day.getUTCDay() || 7;
  day.setUTCDate(day.getUTCDate() + 4 - weekday);
  const yearStart = new Date(Date.UTC(day.getUTCFullYear(), 0, 1));
  const week = Math.ceil(((day - yearStart) / 86_400_000 + 1) / 7);
  return `${day.getUTCFullYear()}-W${String(week).padStart(2, "0")}`;
}
