// The Workers the benches compare, as Miniflare options: the Rust bundle (build/), the
// TypeScript reference (reads before it writes) and the obvious TypeScript design (one KV put
// per ping), each with its own KV, the same settings, and optionally a socket of its own.
// With `counted`, a Worker runs behind a wrapper module that counts what it asks of its
// bindings (bench/count-ops.mjs reads the counts at /__bench/counts).
import { dirname } from "node:path";
import { bundleModules } from "../tests/bundle.mjs";
import { Miniflare, Log, LogLevel } from "miniflare";

export const token = process.env.BENCH_TOKEN ?? "bench-token-0123456789abcdef0123456789";
const bindings = {
  WAU_READ_TOKEN: token,
  ABUSE_LIMIT_PER_MINUTE: "0",
  SESSION_TTL_SECONDS: "7257600",
  ...(process.env.BENCH_WEEK_SHARDS ? { WEEK_SHARDS: process.env.BENCH_WEEK_SHARDS } : {}),
};
const compatibilityDate = "2026-04-01";

/** Miniflare's options for the Worker `name` (rust, ts, obvious). */
export function side(name, { port, counted = false } = {}) {
  const sockets = port ? { unsafeDirectSockets: [{ host: "127.0.0.1", port }] } : {};
  if (name === "rust") {
    const root = process.env.BENCH_RUST_DIR ?? "build";
    const modules = bundleModules(root);
    return {
      name,
      compatibilityDate,
      modulesRoot: root,
      modules: counted ? [counting(root, "./index.js", true), ...modules] : modules,
      bindings,
      kvNamespaces: { SESSIONS: `${name}-sessions` },
      // As wrangler.toml binds it: the week objects, with SQLite storage.
      durableObjects: { WEEKS: { className: "WeekTally", useSQLite: true } },
      ...sockets,
    };
  }
  // esbuild's bundles, made once by the caller (BENCH_TS_BUNDLE, BENCH_OBVIOUS_BUNDLE).
  const bundle = name === "ts" ? process.env.BENCH_TS_BUNDLE : process.env.BENCH_OBVIOUS_BUNDLE;
  const root = dirname(bundle);
  const module = { type: "ESModule", path: bundle };
  return {
    name,
    compatibilityDate,
    modulesRoot: root,
    modules: counted ? [counting(root, `./${bundle.slice(root.length + 1)}`, false), module] : [module],
    bindings,
    kvNamespaces: { SESSIONS: `${name}-sessions` },
    ...sockets,
  };
}

/** One workerd serving `workers` (options of `side`) with its state in `stateDir`, ready. */
export async function serve(stateDir, workers) {
  const mf = new Miniflare({
    workers,
    cf: false, // no fetch of the real `Request.cf` (offline); a placeholder instead
    kvPersist: `${stateDir}/kv`,
    durableObjectsPersist: `${stateDir}/do`,
    log: new Log(LogLevel.WARN),
    // The wide events go to workerd's stdout, which is discarded; they are still made.
    handleRuntimeStdio(stdout, stderr) {
      stdout.resume();
      stderr.pipe(process.stderr);
    },
  });
  await mf.ready;
  return mf;
}

/** The wrapper module that counts KV calls, object requests and SQL rows, as the entry. */
function counting(root, inner, withObject) {
  const contents = `
import Inner${withObject ? ", { WeekTally as InnerTally }" : ""} from ${JSON.stringify(inner)};
const counts = { kv_reads: 0, kv_writes: 0, kv_deletes: 0, kv_lists: 0, object_requests: 0, rows_read: 0, rows_written: 0 };
const cursors = [];
const bound = (target, value) => (typeof value === "function" ? value.bind(target) : value);
function wrap(target, calls) {
  return new Proxy(target, {
    get(t, p) {
      const value = t[p];
      const call = calls[p];
      return call ? (...args) => call(value.apply(t, args), args) : bound(t, value);
    },
  });
}
const kvCount = (name) => (result) => { counts[name]++; return result; };
const kv = (namespace) => wrap(namespace, {
  get: kvCount("kv_reads"), getWithMetadata: kvCount("kv_reads"), put: kvCount("kv_writes"),
  delete: kvCount("kv_deletes"), list: kvCount("kv_lists"),
});
const stub = (object) => wrap(object, { fetch: (result) => { counts.object_requests++; return result; } });
const objects = (namespace) => wrap(namespace, { get: stub, getByName: stub });
const env = (inner) => new Proxy(inner, {
  get(t, p) {
    if (p === "SESSIONS") return kv(t[p]);
    if (p === "WEEKS") return objects(t[p]);
    return t[p];
  },
});
function settle() {
  for (const cursor of cursors.splice(0)) {
    counts.rows_read += cursor.rowsRead;
    counts.rows_written += cursor.rowsWritten;
  }
  return counts;
}
const sql = (inner) => wrap(inner, { exec: (cursor) => { cursors.push(cursor); return cursor; } });
const storage = (inner) => new Proxy(inner, { get: (t, p) => (p === "sql" ? sql(t.sql) : bound(t, t[p])) });
const state = (inner) => new Proxy(inner, { get: (t, p) => (p === "storage" ? storage(t.storage) : bound(t, t[p])) });
${withObject ? `
export class WeekTally {
  constructor(ctx, innerEnv) { this.inner = new InnerTally(state(ctx), innerEnv); }
  fetch(request) { return this.inner.fetch(request); }
  alarm() { return this.inner.alarm(); }
}` : ""}
export default {
  fetch(request, innerEnv, ctx) {
    if (new URL(request.url).pathname === "/__bench/counts") return Response.json(settle());
    return Inner.fetch(request, env(innerEnv), ctx);
  },
};
`;
  return { type: "ESModule", path: `${root}/__counting.mjs`, contents };
}
