// The Worker's bundle as Miniflare takes it: every module under build/ (scripts/build-worker.sh
// makes it), the wasm compiled, the rest as ES modules; and the week a test or bench seeds.
// Shared by the Node tests and benches.
import { readdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";

export function bundleModules(root = "build") {
  return readdirSync(root, { recursive: true })
    .filter((file) => /\.(m?js|wasm)$/.test(file))
    .map((file) => ({ type: file.endsWith(".wasm") ? "CompiledWasm" : "ESModule", path: join(root, file) }));
}

/**
 * Miniflare's options for the telemetry Worker as wrangler.toml binds it (KV as `SESSIONS`,
 * the week objects with SQLite as `WEEKS`), on the bundle under `root`: with `bindings` (its
 * vars), and `wrapper`, when given, as the entry module (it imports `./index.js`), named
 * `entry` under `root`.
 */
export function telemetryWorker({ root = "build", bindings, wrapper, entry = "__test.mjs", ...more }) {
  const modules = bundleModules(root);
  return {
    name: "telemetry",
    compatibilityDate: "2026-04-01",
    modulesRoot: root,
    modules: wrapper ? [{ type: "ESModule", path: join(root, entry), contents: wrapper }, ...modules] : modules,
    bindings,
    kvNamespaces: { SESSIONS: "sessions" },
    durableObjects: { WEEKS: { className: "WeekTally", useSQLite: true } },
    ...more,
  };
}

/**
 * Last week, as the service names it (`YYYY-Www`, on the UTC calendar), and its Monday as a
 * record's `first_seen_at`: a week the readout reads from its store. (A week past what the
 * service keeps is answered 0 without asking the store.)
 */
export function lastWeek() {
  return weekOf(Date.now() - 7 * 86_400_000);
}

/** This week, as [`lastWeek`] names it: the week a ping sent now is counted in. */
export function thisWeek() {
  return weekOf(Date.now());
}

/**
 * Sends a valid ping of session `id` to `worker` (Miniflare's handle on the telemetry Worker)
 * and throws unless it is answered 204.
 */
export async function sendPing(worker, id) {
  const body = JSON.stringify({
    protocol_version: "1.0.0", daemon_version: "0.9.3", session_id: id, platform: "linux",
    node_version: "v20.11.1", primary_framework: "react",
  });
  const response = await worker.fetch("http://localhost/v1/session", {
    method: "POST", headers: { "content-type": "application/json" }, body,
  });
  await response.arrayBuffer();
  if (response.status !== 204) throw new Error(`ping ${id}: ${response.status}`);
}

/** A free port on 127.0.0.1, for a Worker's socket. */
export function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The ISO week holding `millis` (since the epoch) and its Monday. */
function weekOf(millis) {
  const day = new Date(millis);
  const monday = new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate() - ((day.getUTCDay() + 6) % 7)));
  const thursday = new Date(monday.getTime() + 3 * 86_400_000);
  const yearStart = Date.UTC(thursday.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((thursday - yearStart) / 86_400_000 + 1) / 7);
  return {
    week: `${thursday.getUTCFullYear()}-W${String(week).padStart(2, "0")}`,
    monday: `${monday.toISOString().slice(0, 10)}T00:00:00Z`,
  };
}
