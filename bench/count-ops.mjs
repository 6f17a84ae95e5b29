// Counts the storage operations each Worker makes per request of each kind: KV reads, writes,
// deletes and lists, requests to week objects, and the rows the objects' SQL read and wrote
// (their cursors' rowsRead and rowsWritten), by running each Worker behind a wrapper of its
// bindings (bench/sides.mjs), never by reading code. Prints a markdown table, per request.
//
//   node bench/count-ops.mjs STATE_DIR   (BENCH_TS_BUNDLE and BENCH_OBVIOUS_BUNDLE set)
import { freePort, thisWeek } from "../tests/bundle.mjs";
import { serve, side, token } from "./sides.mjs";

const [stateDir] = process.argv.slice(2);
const names = (process.env.BENCH_SIDES ?? "rust ts obvious").split(" ");
const ports = {};
for (const name of names) ports[name] = await freePort();
const mf = await serve(stateDir, names.map((name) => side(name, { port: ports[name], counted: true })));

const url = (name, path) => `http://127.0.0.1:${ports[name]}${path}`;
const counts = async (name) => (await fetch(url(name, "/__bench/counts"))).json();
/** The counts once the Worker's `waitUntil` work has settled: unchanged over 400 ms. */
async function settled(name) {
  let last = JSON.stringify(await counts(name));
  for (let still = 0; still < 4; ) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = JSON.stringify(await counts(name));
    still = now === last ? still + 1 : 0;
    last = now;
  }
  return JSON.parse(last);
}
const ping = (id, version = "0.9.3", extra = "") =>
  `{"protocol_version":"1.0.0","daemon_version":"${version}","session_id":"${id}","platform":"linux",` +
  `"node_version":"v20.11.1","primary_framework":"react"${extra}}`;
const post = (name, body) =>
  fetch(url(name, "/v1/session"), { method: "POST", headers: { "content-type": "application/json" }, body });
const { week } = thisWeek();

const N = 100;
const ids = Array.from({ length: N }, (_, i) => `count-ops-session-${String(i).padStart(4, "0")}`);
// Each kind: how many requests, how one is sent, and by how many clients at once (one, unless
// it says), each sending its next once answered.
const kinds = [
  ["/healthz", N, () => fetch(url(current, "/healthz"))],
  ["refused (400, unknown field)", N, (i) => post(current, ping(ids[i], "0.9.3", ',"user_email":"x@example.com"'))],
  ["new session", N, (i) => post(current, ping(ids[i]))],
  ["unchanged repeat", N, (i) => post(current, ping(ids[i]))],
  ["changed repeat (an upgrade)", N, (i) => post(current, ping(ids[i], "0.9.4"))],
  // A week of 10 sessions: each new, then six unchanged, one in ten upgrading at its fifth ping.
  ["realistic mix (1 new, 6 repeats, 1 upgrade in 10)", 70, (i) => {
    const session = i % 10;
    const day = Math.floor(i / 10);
    const version = session === 0 && day >= 4 ? "0.9.4" : "0.9.3";
    return post(current, ping(`count-ops-mix-${session}`, version));
  }],
  // As a fleet's pings arrive: 16 clients, each sending its next once answered. The Rust
  // Worker keeps the pings that reach it while a request to their object is in flight in one.
  ["new session, 16 clients at once", 400, (i) => post(current, ping(`count-ops-burst-${String(i).padStart(4, "0")}`)), 16],
  ["readout (count of this week)", 10, () =>
    fetch(url(current, `/v1/wau/${week}`), { headers: { authorization: `Bearer ${token}` } })],
];
const columns = ["kv_reads", "kv_writes", "kv_deletes", "kv_lists", "object_requests", "rows_read", "rows_written"];
let current;
const rows = [];
for (const [kind, n, send, clients = 1] of kinds) {
  for (const name of names) {
    current = name;
    const before = await settled(name);
    let next = 0;
    const client = async () => {
      while (next < n) {
        const response = await send(next++);
        await response.arrayBuffer();
      }
    };
    await Promise.all(Array.from({ length: clients }, client));
    const after = await settled(name);
    const per = columns.map((column) => {
      const value = (after[column] - before[column]) / n;
      return Number.isInteger(value) ? String(value) : value.toFixed(2);
    });
    rows.push(`| ${kind} | ${name} | ${per.join(" | ")} |`);
  }
}
console.log("| request | Worker | KV reads | KV writes | KV deletes | KV lists | object requests | rows read | rows written |");
console.log("|---|---|---:|---:|---:|---:|---:|---:|---:|");
for (const row of rows) console.log(row);
await mf.dispose();
