// The backfill (the Worker's bundle deployed with WORKER_ROLE=backfill, and scripts/backfill.mjs)
// against the real bundle in one workerd through Miniflare: records put straight into KV, as
// a bulk put from the rollback leaves them, are not counted until the backfill hands them to
// their week's object; then the count and breakdowns match, and a second run counts nothing
// twice. The backfill takes the core's rules: a week that does not exist is refused, the
// token's scheme is case-insensitive. Run by tests/deployment.rs (needs build/ and npm ci).
import { execFileSync } from "node:child_process";
import { bundleModules, freePort, lastWeek, telemetryWorker } from "./bundle.mjs";
import { Miniflare, Log, LogLevel } from "miniflare";

const TOKEN = "backfill-test-read-token-0123456789abcdef";
// The backfill writes records, so it takes the admin token; the read token is refused.
const ADMIN = "backfill-test-admin-token-0123456789abcdef";
const { week: WEEK, monday: MONDAY } = lastWeek();
const fail = (message) => {
  console.error(message);
  process.exit(1);
};

const port = await freePort();
const bindings = { WAU_READ_TOKEN: TOKEN, ABUSE_LIMIT_PER_MINUTE: "0", SESSION_TTL_SECONDS: "7257600" };
const build = "build";
// The one bundle both Workers run: the telemetry Worker, and the backfill by its role.
const modules = bundleModules(build);
const mf = new Miniflare({
  log: new Log(LogLevel.WARN),
  cf: false,
  workers: [
    telemetryWorker({ root: build, bindings }),
    {
      name: "telemetry-backfill",
      compatibilityDate: "2026-04-01",
      modulesRoot: build,
      modules,
      // A page of 3 keys: the ten records take four requests, so the cursor is followed.
      bindings: { ADMIN_TOKEN: ADMIN, BACKFILL_PAGE: "3", WORKER_ROLE: "backfill" },
      kvNamespaces: { SESSIONS: "sessions" },
      durableObjects: { WEEKS: { className: "WeekTally", scriptName: "telemetry", useSQLite: true } },
      unsafeDirectSockets: [{ host: "127.0.0.1", port }],
    },
  ],
});
try {
  await mf.ready;
  const kv = await mf.getKVNamespace("SESSIONS", "telemetry");
  const expiration = Math.floor(Date.now() / 1000) + 7 * 86_400;
  for (let n = 0; n < 10; n++) {
    const record = {
      protocol_version: "1.0.0", daemon_version: n < 7 ? "1.0.0" : "2.0.0", platform: "linux",
      node_version: "v20.11.1", primary_framework: "react", first_seen_at: MONDAY,
    };
    const key = `session:${WEEK}:backfilled-relay-${String(n).padStart(2, "0")}`;
    await kv.put(key, JSON.stringify(record), { metadata: record, expiration });
  }
  const telemetry = await mf.getWorker("telemetry");
  const readout = async (query = "") => {
    const response = await telemetry.fetch(`http://localhost/v1/wau/${WEEK}${query}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    return response.json();
  };
  if ((await readout()).weekly_active_sessions !== 0) fail("counted before the backfill");

  const backfill = (token) =>
    execFileSync("node", ["scripts/backfill.mjs", `http://127.0.0.1:${port}`, WEEK], {
      env: { ...process.env, ADMIN_TOKEN: token },
      stdio: ["ignore", "pipe", "pipe"],
    }).toString();
  // A week that does not exist is refused by the script before any request.
  try {
    execFileSync("node", ["scripts/backfill.mjs", `http://127.0.0.1:${port}`, "2026-W99"], {
      env: { ...process.env, ADMIN_TOKEN: ADMIN },
      stdio: ["ignore", "pipe", "pipe"],
    });
    fail("2026-W99 was not refused");
  } catch (error) {
    if (error.status !== 2 || !String(error.stderr).includes("not an ISO week that exists")) {
      fail(`2026-W99: ${error.status} ${error.stderr}`);
    }
  }
  for (const wrong of ["wrong-token", TOKEN]) {
    let refused = false;
    try {
      backfill(wrong);
    } catch {
      refused = true;
    }
    if (!refused || (await readout()).weekly_active_sessions !== 0) fail(`${wrong} was not refused`);
  }

  // The core's rules, not a copy of them: a week that does not exist, a second week, a
  // lower-case scheme, a GET.
  const direct = (query, init) => fetch(`http://127.0.0.1:${port}/?${query}`, init);
  const post = (authorization) => ({ method: "POST", headers: { authorization } });
  const statuses = [
    (await direct("week=2026-W99", post(`Bearer ${ADMIN}`))).status,
    (await direct(`week=${WEEK}&week=${WEEK}`, post(`Bearer ${ADMIN}`))).status,
    (await direct(`week=${WEEK}`, post("Bearer wrong"))).status,
    (await direct(`week=${WEEK}`, { headers: { authorization: `Bearer ${ADMIN}` } })).status,
  ];
  if (JSON.stringify(statuses) !== "[400,400,401,405]") fail(`refusals: ${statuses}`);
  const lowerCase = await direct(`week=${WEEK}&cursor=`, post(`bearer ${ADMIN}`));
  if (lowerCase.status !== 200) fail(`a lower-case scheme: ${lowerCase.status}`);
  await lowerCase.arrayBuffer();

  for (const run of [1, 2]) {
    const printed = backfill(ADMIN);
    if (!printed.includes(`${WEEK}: 10 records`)) fail(`run ${run} printed: ${printed}`);
    const count = await readout();
    if (count.weekly_active_sessions !== 10) fail(`run ${run}: ${JSON.stringify(count)}`);
    const byVersion = await readout("?by=daemon_version");
    const expected = { "1.0.0": 7 };
    if (JSON.stringify(byVersion.counts) !== JSON.stringify(expected) || byVersion.withheld_sessions !== 3) {
      fail(`run ${run}, by daemon_version: ${JSON.stringify(byVersion)}`);
    }
  }
  console.log("backfill: ok");
} finally {
  await mf.dispose();
}
