// Backfills the weeks' objects from KV through the backfill Worker (scripts/backfill/):
//   ADMIN_TOKEN=... node scripts/backfill.mjs https://telemetry-backfill.<account>.workers.dev 2026-W47 [2026-W48 …]
// Each week is handed over a page at a time until KV's listing ends; prints the count per week.
import { argv, env, exit } from "node:process";

const [base, ...weeks] = argv.slice(2);
if (!base || weeks.length === 0 || !env.ADMIN_TOKEN) {
  console.error("usage: ADMIN_TOKEN=… node scripts/backfill.mjs BACKFILL_URL WEEK [WEEK …]");
  exit(2);
}
for (const week of weeks) {
  let cursor = null;
  let handed = 0;
  do {
    const url = new URL(base);
    url.searchParams.set("week", week);
    if (cursor) url.searchParams.set("cursor", cursor);
    const response = await fetch(url, {
      method: "POST",
      headers: { authorization: `Bearer ${env.ADMIN_TOKEN}` },
    });
    const body = await response.json().catch(() => ({}));
    if (response.status !== 200) {
      console.error(`${week}: ${response.status} ${JSON.stringify(body)} after ${handed} records`);
      exit(1);
    }
    handed += body.handed;
    cursor = body.cursor;
  } while (cursor);
  console.log(`${week}: ${handed} records handed to the week's object`);
}
