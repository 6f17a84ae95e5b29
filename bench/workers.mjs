// Serves the Rust bundle (build/) and the TypeScript yardsticks (bench/reference-ts/, as the
// reference and as the obvious design) from one workerd through Miniflare's API, each on its
// own port with its own local KV, and no dev proxy in front (wrangler dev's proxy halves
// throughput and hides the Worker).
//
//   node bench/workers.mjs STATE_DIR rust=PORT ts=PORT obvious=PORT   (any of them; runs until SIGTERM)
//
// They get the same settings (bench/sides.mjs): the bench token, the abuse limit off (one
// client sends all the load), the 12-week TTL. The TypeScript bundles are esbuild's output,
// built once by the caller so that a cold start does not include the build.
import { lastWeek } from "../tests/bundle.mjs";
import { serve, side } from "./sides.mjs";

const [stateDir, ...wanted] = process.argv.slice(2);
const workers = wanted.map((arg) => {
  const [name, port] = arg.split("=");
  return side(name, { port: Number(port) });
});
const mf = await serve(stateDir, workers);
// BENCH_SEED_SESSIONS=N fills last week (lastWeek(), READOUT_PATH in scripts/bench-workers.sh) of each namespace with the same N records, so that
// both readouts count the same week; the Rust Worker's week objects get them too, in the
// requests its Worker makes to keep pings (the readout counts from there).
const seeded = Number(process.env.BENCH_SEED_SESSIONS ?? 0);
const record = {
  protocol_version: "1.0.0", daemon_version: "0.9.3", platform: "linux",
  node_version: "v20.11.1", primary_framework: "react", first_seen_at: lastWeek().monday,
};
for (const { name } of workers) {
  const kv = await mf.getKVNamespace("SESSIONS", name);
  for (let start = 0; start < seeded; start += 200) {
    const batch = [];
    for (let i = start; i < Math.min(seeded, start + 200); i++) {
      const key = `session:${lastWeek().week}:seed-${String(i).padStart(8, "0")}`;
      batch.push(kv.put(key, JSON.stringify(record), { metadata: record }));
    }
    await Promise.all(batch);
  }
}
if (seeded > 0 && workers.some(({ name }) => name === "rust")) {
  const weeks = await mf.getDurableObjectNamespace("WEEKS", "rust");
  // The core's `shard_of` and `week_object_name` (core/src/week.rs): FNV-1a of the id.
  const shards = Number(process.env.BENCH_WEEK_SHARDS ?? 1);
  const objectOf = (id) => {
    let hash = 0x811c9dc5;
    for (const byte of Buffer.from(id)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
    const shard = hash % shards;
    return shard === 0 ? lastWeek().week : `${lastWeek().week}.${shard}`;
  };
  // As the Worker hands records over (src/weeks.rs, `record_line`): a line per record.
  const expiresAt = Math.floor(Date.now() / 1000) + 7 * 86_400;
  const lines = new Map();
  for (let i = 0; i < seeded; i++) {
    const id = `seed-${String(i).padStart(8, "0")}`;
    const object = objectOf(id);
    if (!lines.has(object)) lines.set(object, []);
    lines.get(object).push(`${id} ${expiresAt} ${JSON.stringify(record)}`);
  }
  for (const [object, held] of lines) {
    const stub = weeks.get(weeks.idFromName(object));
    for (let start = 0; start < held.length; start += 200) {
      const body = held.slice(start, start + 200).join("\n");
      const response = await stub.fetch("https://week/record", { method: "POST", body });
      const answers = (await response.text()).split("\n").filter(Boolean);
      if (response.status !== 200 || answers.some((line) => line.startsWith("!"))) {
        throw new Error(`seeding the week object: ${response.status} ${answers.find((line) => line.startsWith("!"))}`);
      }
    }
  }
}
console.log("ready");
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
