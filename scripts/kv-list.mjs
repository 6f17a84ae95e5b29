// Lists the telemetry Worker's KV keys under a prefix as `wrangler kv key list` prints them
// (name, expiration, metadata), every page of the listing:
//   node scripts/kv-list.mjs --prefix session:2026-W48: --remote
//   node scripts/kv-list.mjs --prefix session:2026-W48: --local --persist-to DIR
// With --remote it is wrangler's own listing, which follows KV's cursor. wrangler's local
// listing stops after its first page (1,000 keys), so --local reads the same persisted
// namespace through Miniflare and follows the cursor itself: a rehearsal of the DNS swap
// (scripts/failover-drill.sh --local) sees every key, as the real one does.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { argv, exit, stdout } from "node:process";
import { Miniflare, Log, LogLevel } from "miniflare";

const option = (name) => {
  const at = argv.indexOf(name);
  return at === -1 ? undefined : argv[at + 1];
};
const prefix = option("--prefix");
const local = argv.includes("--local");
const remote = argv.includes("--remote");
const persistTo = option("--persist-to");
if (!prefix || local === remote || (local && !persistTo)) {
  console.error("usage: node scripts/kv-list.mjs --prefix PREFIX (--remote | --local --persist-to DIR)");
  exit(2);
}
// The namespace's id, as wrangler.toml names it: local state is kept under it.
const NAMESPACE = "00000000000000000000000000000000";

if (remote) {
  const wrangler = join("node_modules", ".bin", "wrangler");
  const args = ["kv", "key", "list", "--binding", "SESSIONS", "--remote", "--prefix", prefix];
  stdout.write(execFileSync(wrangler, args, { stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 30 }));
  exit(0);
}

const mf = new Miniflare({
  // Quiet on standard output, which carries the listing; no request to Cloudflare for `cf`.
  log: new Log(LogLevel.ERROR),
  cf: false,
  modules: true,
  script: "export default { fetch() { return new Response(null, { status: 404 }); } }",
  kvNamespaces: { SESSIONS: NAMESPACE },
  kvPersist: join(persistTo, "v3", "kv"),
});
try {
  const kv = await mf.getKVNamespace("SESSIONS");
  // Written as it is read, a page at a time: the listing is never held whole.
  stdout.write("[");
  let cursor;
  let first = true;
  do {
    const page = await kv.list({ prefix, cursor });
    for (const key of page.keys) {
      stdout.write(`${first ? "\n" : ",\n"}${JSON.stringify(key)}`);
      first = false;
    }
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  stdout.write(first ? "]\n" : "\n]\n");
} finally {
  await mf.dispose();
}
