// Backfills the weeks' objects from KV through the backfill Worker (scripts/backfill/):
//   ADMIN_TOKEN=... node scripts/backfill.mjs https://telemetry-backfill.<account>.workers.dev 2026-W47 [2026-W48 …]
// Each week is handed over a page at a time until KV's listing ends; prints the count per week.
import { argv, env, exit } from "node:process";

const [base, ...weeks] = argv.slice(2);
if (!base || weeks.length === 0 || !env.ADMIN_TOKEN) {
  console.error("usage: ADMIN_TOKEN=… node scripts/backfill.mjs BACKFILL_URL WEEK [WEEK …]");
  exit(2);
}
// A week that does not exist (2026-W99, 2025-W53) is refused here, before any request.
const weeksInYear = (year) => {
  const dec28 = new Date(Date.UTC(year, 11, 28));
  const day = (dec28.getUTCDay() + 6) % 7;
  const thursday = new Date(dec28.getTime() + (3 - day) * 86_400_000);
  const jan1 = Date.UTC(thursday.getUTCFullYear(), 0, 1);
  return Math.ceil(((thursday - jan1) / 86_400_000 + 1) / 7);
};
for (const week of weeks) {
  const parsed = /^(\d{4})-W(\d{2})$/.exec(week);
  if (!parsed || Number(parsed[2]) < 1 || Number(parsed[2]) > weeksInYear(Number(parsed[1]))) {
    console.error(`${week}: not an ISO week that exists (YYYY-Www, e.g. 2026-W48)`);
    exit(2);
  }
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
