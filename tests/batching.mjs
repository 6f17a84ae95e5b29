// Pings that reach one isolate together are kept together (src/record_batch.rs), and none is
// lost: the real bundle in one workerd through Miniflare, its week over three objects, driven
// through its own socket by 16 clients at once, as a relay fleet's pings arrive. It checks
// that every new session is counted and put in KV once, that unchanged repeats write nothing
// and changed ones are kept as changed, that the object requests were fewer than the pings
// (they went in batches), that a batch whose KV puts fail keeps its sessions counted and
// their next pings put them, with no session id logged, and that the runtime cancelled no
// request's work. Behind a wrapper of the Worker's bindings that counts KV puts and object
// requests, and refuses puts when told to. Run by tests/deployment.rs (needs build/ and npm ci).
import http from "node:http";
import { freePort, telemetryWorker, thisWeek } from "./bundle.mjs";
import { Miniflare, Log, LogLevel } from "miniflare";

const TOKEN = "batching-test-read-token-0123456789abcdef";
const CLIENTS = 16;
const fail = (message) => {
  console.error(message);
  process.exit(1);
};
const wrapper = `
import Inner, { WeekTally } from "./index.js";
export { WeekTally };
const counts = { puts: 0, object_requests: 0 };
let refusing = false;
// Calls of \`method\`, or only those whose first argument \`only\` accepts; KV puts refused
// while \`refusing\`; and the requests that keep pings held 20 ms, as a busy object would,
// so that the pings behind them wait and go together, however fast this machine.
const counted = (binding, method, name, only = () => true) => new Proxy(binding, {
  get(target, property) {
    const value = target[property];
    if (typeof value !== "function") return value;
    if (property !== method) return value.bind(target);
    return (...args) => {
      if (!only(args[0])) return value.apply(target, args);
      counts[name]++;
      // As a store may, the error quotes the key, which holds the session id.
      if (name === "puts" && refusing) return Promise.reject(new Error(\`KV put(\${args[0]}) limit exceeded for the day.\`));
      if (name === "object_requests") return new Promise((resolve) => setTimeout(resolve, 20)).then(() => value.apply(target, args));
      return value.apply(target, args);
    };
  },
});
// A stub's requests that keep pings (not the readouts' tallies).
const keeping = (request) => new URL(request.url ?? request).pathname === "/record";
const weeks = (namespace) => new Proxy(namespace, {
  get(target, property) {
    const value = target[property];
    if (typeof value !== "function") return value;
    if (property !== "get" && property !== "getByName") return value.bind(target);
    return (...args) => counted(value.apply(target, args), "fetch", "object_requests", keeping);
  },
});
export default {
  fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === "/__test/counts") {
      if (url.searchParams.has("refusing")) refusing = url.searchParams.get("refusing") === "1";
      return Response.json(counts);
    }
    const wrapped = new Proxy(env, {
      get: (t, p) => (p === "SESSIONS" ? counted(t[p], "put", "puts") : p === "WEEKS" ? weeks(t[p]) : t[p]),
    });
    return Inner.fetch(request, wrapped, ctx);
  },
};`;
const logged = [];
const errors = [];
const port = await freePort();
const mf = new Miniflare({
  log: new Log(LogLevel.WARN),
  cf: false,
  workers: [
    telemetryWorker({
      wrapper,
      entry: "__batching.mjs",
      bindings: { WAU_READ_TOKEN: TOKEN, ABUSE_LIMIT_PER_MINUTE: "0", WEEK_SHARDS: "3" },
      unsafeDirectSockets: [{ host: "127.0.0.1", port }],
    }),
  ],
  handleRuntimeStdio(stdout, stderr) {
    stdout.on("data", (chunk) => logged.push(String(chunk)));
    stderr.on("data", (chunk) => errors.push(String(chunk)));
  },
});
const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
/** One request through the Worker's socket: its status and body. */
const send = (method, path, body, headers = {}) =>
  new Promise((resolve, reject) => {
    const request = http.request({ host: "127.0.0.1", port, method, path, agent, headers }, (response) => {
      let text = "";
      response.on("data", (chunk) => (text += chunk));
      response.on("end", () => resolve({ status: response.statusCode, text }));
    });
    request.on("error", reject);
    request.end(body);
  });
const ping = (id, version) =>
  JSON.stringify({
    protocol_version: "1.0.0", daemon_version: version, session_id: id, platform: "linux",
    node_version: "v20.11.1", primary_framework: "react",
  });
/** Sends every ping, `CLIENTS` at a time, each client sending its next once answered. */
async function flood(pings) {
  let next = 0;
  const client = async () => {
    while (next < pings.length) {
      const [id, version] = pings[next++];
      const { status, text } = await send("POST", "/v1/session", ping(id, version), { "content-type": "application/json" });
      if (status !== 204) fail(`ping ${id}: ${status} ${text}`);
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
}
const id = (n) => `batching-session-${String(n).padStart(5, "0")}`;
const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);
try {
  await mf.ready;
  const kv = await mf.getKVNamespace("SESSIONS", "telemetry");
  const { week } = thisWeek();
  const readout = async (query = "") => {
    const { text } = await send("GET", `/v1/wau/${week}${query}`, undefined, { authorization: `Bearer ${TOKEN}` });
    return JSON.parse(text);
  };
  const counts = async (query = "") => JSON.parse((await send("GET", `/__test/counts${query}`)).text);
  const settle = async (check, what) => {
    for (let tries = 0; tries < 300; tries++) {
      if (await check()) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    fail(`never: ${what}`);
  };
  const keys = async () => {
    let listed = 0;
    let cursor;
    do {
      const page = await kv.list({ prefix: `session:${week}:`, cursor });
      listed += page.keys.length;
      cursor = page.list_complete ? undefined : page.cursor;
    } while (cursor);
    return listed;
  };

  // 2,000 new sessions; then, all at once, 1,000 of them unchanged, 500 upgraded, 500 more new.
  await flood(range(0, 2_000).map((n) => [id(n), "0.9.3"]));
  await settle(async () => (await readout()).weekly_active_sessions === 2_000, "2,000 new sessions counted");
  const mixed = [
    ...range(0, 1_000).map((n) => [id(n), "0.9.3"]),
    ...range(1_000, 1_500).map((n) => [id(n), "0.9.4"]),
    ...range(2_000, 2_500).map((n) => [id(n), "0.9.3"]),
  ].sort((a, b) => (a[0].slice(-1) + a[0]).localeCompare(b[0].slice(-1) + b[0]));
  await flood(mixed);
  await settle(async () => (await counts()).puts >= 3_000, "3,000 KV puts");
  await new Promise((resolve) => setTimeout(resolve, 500));
  const byVersion = (await readout("?by=daemon_version")).counts;
  if (byVersion["0.9.3"] !== 2_000 || byVersion["0.9.4"] !== 500) fail(`by version: ${JSON.stringify(byVersion)}`);
  if ((await readout()).weekly_active_sessions !== 2_500) fail(`counted ${JSON.stringify(await readout())}`);
  if ((await keys()) !== 2_500) fail(`KV holds ${await keys()} keys, not 2,500`);
  const upgraded = await kv.get(`session:${week}:${id(1_234)}`, "json");
  if (upgraded?.daemon_version !== "0.9.4") fail(`an upgraded session's record: ${JSON.stringify(upgraded)}`);
  const { puts, object_requests } = await counts();
  // A put per new or changed record, none for the 1,000 unchanged repeats.
  if (puts !== 3_000) fail(`${puts} KV puts, not 3,000`);
  const pings = 4_000;
  if (object_requests === 0 || object_requests > pings / 3) fail(`${object_requests} requests kept ${pings} pings: no batching`);
  const failures = () => logged.join("").split("\n").filter((line) => line.includes('"event":"store_failure"'));
  if (failures().length > 0) fail(`store failures: ${failures().slice(0, 3).join("\n")}`);

  // While KV refuses, 300 more new sessions are counted and their puts fail, a batch at a
  // time; once it takes writes, each one's next ping (unchanged) puts its record.
  await counts("?refusing=1");
  await flood(range(3_000, 3_300).map((n) => [id(n), "0.9.3"]));
  await settle(async () => (await readout()).weekly_active_sessions === 2_800, "2,800 counted while KV refused");
  await settle(async () => failures().length >= 300, "a store_failure for each refused put");
  if ((await keys()) !== 2_500) fail(`KV holds ${await keys()} keys while refusing`);
  await counts("?refusing=0");
  await flood(range(3_000, 3_300).map((n) => [id(n), "0.9.3"]));
  await settle(async () => (await keys()) === 2_800, "the 300 records put by their next pings");
  if (failures().some((line) => line.includes("batching-session-"))) fail("a session id in a store_failure");
  const cancelled = errors.join("").split("\n").filter((line) => /different request context|have been canceled/i.test(line));
  if (cancelled.length > 0) fail(`the runtime cancelled work: ${cancelled.slice(0, 3).join("\n")}`);
  console.log(`batching: ok (${object_requests} object requests kept ${pings} pings; ${puts} KV puts)`);
} finally {
  agent.destroy();
  await mf.dispose();
}
