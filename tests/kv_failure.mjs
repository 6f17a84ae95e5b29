// A KV that refuses writes (its daily limit on the Free plan, an outage) against the real
// bundle in one workerd through Miniflare, its week spread over three objects: a new
// session's ping is still counted, the object notes that KV missed its record, the session's
// next ping (unchanged) puts the record once KV takes writes again, and the ping after that
// writes nothing. The Worker runs behind a wrapper of its SESSIONS binding whose put throws
// while told to. Run by tests/deployment.rs (needs build/ and npm ci).
import { sendPing, telemetryWorker, thisWeek } from "./bundle.mjs";
import { Miniflare, Log, LogLevel } from "miniflare";

const TOKEN = "kv-failure-test-read-token-0123456789abcdef";
const fail = (message) => {
  console.error(message);
  process.exit(1);
};
const wrapper = `
import Inner, { WeekTally } from "./index.js";
export { WeekTally };
let refusing = false;
let puts = 0;
const sessions = (kv) => new Proxy(kv, {
  get(target, name) {
    if (name === "put") {
      return (...args) => {
        // As a store may, the error quotes the key, which holds the session id.
        if (refusing) return Promise.reject(new Error(\`KV put(\${args[0]}) limit exceeded for the day.\`));
        puts++;
        return target.put(...args);
      };
    }
    const value = target[name];
    return typeof value === "function" ? value.bind(target) : value;
  },
});
export default {
  fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === "/__test/kv") {
      refusing = url.searchParams.get("refusing") === "1";
      return Response.json({ puts });
    }
    const wrapped = new Proxy(env, { get: (t, p) => (p === "SESSIONS" ? sessions(t[p]) : t[p]) });
    return Inner.fetch(request, wrapped, ctx);
  },
};`;
const logged = [];
const mf = new Miniflare({
  log: new Log(LogLevel.WARN),
  cf: false,
  workers: [
    telemetryWorker({
      wrapper,
      entry: "__kv_failure.mjs",
      bindings: { WAU_READ_TOKEN: TOKEN, ABUSE_LIMIT_PER_MINUTE: "0", WEEK_SHARDS: "3" },
    }),
  ],
  handleRuntimeStdio(stdout, stderr) {
    stdout.on("data", (chunk) => logged.push(String(chunk)));
    stderr.pipe(process.stderr);
  },
});
try {
  await mf.ready;
  const worker = await mf.getWorker("telemetry");
  const kv = await mf.getKVNamespace("SESSIONS", "telemetry");
  const ping = (id) => sendPing(worker, id);
  const kvControl = async (refusing) =>
    (await (await worker.fetch(`http://localhost/__test/kv?refusing=${refusing ? 1 : 0}`)).json()).puts;
  const { week: iso } = thisWeek();
  const count = async () => {
    const response = await worker.fetch(`http://localhost/v1/wau/${iso}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    return (await response.json()).weekly_active_sessions;
  };
  const settle = async (check, what) => {
    for (let tries = 0; tries < 100; tries++) {
      if (await check()) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    fail(`never: ${what}`);
  };
  const keys = async () => (await kv.list({ prefix: "session:" })).keys.map(({ name }) => name);

  await kvControl(true);
  await ping("kv-failure-relay-1");
  await settle(async () => (await count()) === 1, "the session counted while KV refused");
  await settle(() => logged.join("").includes('"event":"store_failure"'), "a store_failure logged");
  if ((await keys()).length !== 0) fail(`KV holds ${await keys()} while refusing`);

  await kvControl(false);
  await ping("kv-failure-relay-1");
  const key = `session:${iso}:kv-failure-relay-1`;
  await settle(async () => (await keys()).includes(key), "the record put by the next ping");
  const puts = await kvControl(false);
  await ping("kv-failure-relay-1");
  await new Promise((resolve) => setTimeout(resolve, 500));
  if ((await kvControl(false)) !== puts) fail("an unchanged ping wrote KV once it held the record");
  if ((await count()) !== 1) fail(`counted ${await count()}, not 1`);
  const line = logged.join("").split("\n").find((l) => l.includes('"event":"store_failure"'));
  // The error quoted the key: the id in it is masked, never logged.
  if (!line.includes('"operation":"write"') || !line.includes("<session>") || line.includes("kv-failure-relay-1")) {
    fail(`logged: ${line}`);
  }
  console.log("kv failure: ok");
} finally {
  await mf.dispose();
}
