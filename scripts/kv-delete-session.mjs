// Deletes one session's records from the Worker's KV (a deletion request): the keys
// session:<week>:<id> of this ISO week and the 13 before it, which covers the default
// 12-week retention. The key list goes to a private temporary directory, removed after.
//   node scripts/kv-delete-session.mjs <session_id> --remote            (production)
//   node scripts/kv-delete-session.mjs <session_id> --local [--persist-to DIR]
// Further arguments go to `wrangler kv bulk delete`. With a longer SESSION_TTL_SECONDS, set
// WEEKS to the number of weeks to go back. `--dry-run [--at RFC3339]` prints the keys and
// deletes nothing (tests/deployment.rs checks them against the core's ISO weeks).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { argv, env, exit } from "node:process";
import { fileURLToPath } from "node:url";

const DAY_MS = 86_400_000;

/** The ISO week of a UTC instant, as YYYY-Www. */
function isoWeek(ms) {
  const weekday = (new Date(ms).getUTCDay() + 6) % 7; // Monday 0
  const thursday = new Date(ms - weekday * DAY_MS + 3 * DAY_MS);
  const year = thursday.getUTCFullYear();
  const jan4 = Date.UTC(year, 0, 4);
  const firstMonday = jan4 - ((new Date(jan4).getUTCDay() + 6) % 7) * DAY_MS;
  const day = Date.UTC(year, thursday.getUTCMonth(), thursday.getUTCDate());
  const week = 1 + Math.floor((day - firstMonday) / (7 * DAY_MS));
  return `${year}-W${String(week).padStart(2, "0")}`;
}

const [sessionId, ...wranglerArgs] = argv.slice(2);
if (!/^[A-Za-z0-9_-]{8,64}$/.test(sessionId ?? "")) {
  console.error("usage: kv-delete-session.mjs <session_id> --remote|--local [wrangler kv flags]");
  exit(2);
}
const dryRun = wranglerArgs[0] === "--dry-run";
if (!dryRun && !wranglerArgs.includes("--remote") && !wranglerArgs.includes("--local")) {
  console.error("say --remote (production KV) or --local (wrangler dev's KV)");
  exit(2);
}
const weeksBack = Number.parseInt(env.WEEKS ?? "13", 10);
const now = dryRun && wranglerArgs[1] === "--at" ? Date.parse(wranglerArgs[2]) : Date.now();
const keys = [];
for (let n = 0; n <= weeksBack; n++) keys.push(`session:${isoWeek(now - n * 7 * DAY_MS)}:${sessionId}`);
if (dryRun) {
  console.log(JSON.stringify(keys));
  exit(0);
}

const dir = mkdtempSync(join(tmpdir(), "kv-delete-")); // mode 0700
try {
  const file = join(dir, "keys.json");
  writeFileSync(file, JSON.stringify(keys), { mode: 0o600 });
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  execFileSync(
    join(root, "node_modules/.bin/wrangler"),
    ["kv", "bulk", "delete", file, "--binding", "SESSIONS", "--force", ...wranglerArgs],
    { cwd: root, stdio: ["ignore", "inherit", "inherit"] },
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`deleted the session's keys in the last ${weeksBack + 1} weeks`);
