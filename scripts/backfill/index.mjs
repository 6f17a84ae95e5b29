// The backfill Worker (see wrangler.toml): POST /?week=YYYY-Www[&cursor=C] with the read
// token hands one page of the week's KV records to the week's object and answers
// {"handed":N,"cursor":C|null}; scripts/backfill.mjs calls it until the cursor is null.
// The object applies the core's rules (a record it holds already changes nothing), so a
// page handed twice, or a whole week run again, counts nothing twice.
const WEEK = /^[0-9]{4}-W[0-9]{2}$/;

export default {
  async fetch(request, env) {
    if (request.method !== "POST") return answer(405, { error: "method_not_allowed" });
    if (!(await admits(request.headers.get("authorization"), env.WAU_READ_TOKEN))) {
      return answer(401, { error: "unauthorized" });
    }
    const url = new URL(request.url);
    const week = url.searchParams.get("week") ?? "";
    if (!WEEK.test(week)) return answer(400, { error: "invalid_week" });
    const page = await env.SESSIONS.list({
      prefix: `session:${week}:`,
      limit: Number(env.BACKFILL_PAGE ?? 500),
      cursor: url.searchParams.get("cursor") || undefined,
    });
    const object = env.WEEKS.get(env.WEEKS.idFromName(week));
    let handed = 0;
    for (const key of page.keys) {
      if (!key.metadata || !key.expiration) {
        // Not a record as the Worker writes it: say so by position, never by key (an id).
        return answer(500, { error: "not_a_record", handed });
      }
      const response = await object.fetch("https://week/record", {
        method: "POST",
        headers: {
          "x-session": key.name.slice(`session:${week}:`.length),
          "x-expires-at": String(key.expiration),
          // The record as KV holds it: the fields in the order the core wrote them.
          "x-record": JSON.stringify(key.metadata),
        },
      });
      await response.arrayBuffer();
      if (response.status !== 200 && response.status !== 204) {
        return answer(502, { error: "week_object_failed", handed });
      }
      handed++;
    }
    return answer(200, { handed, cursor: page.list_complete ? null : page.cursor });
  },
};

function answer(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}

// The bearer token compared in constant time, as the telemetry Worker does; no token
// configured: nothing is admitted.
async function admits(header, token) {
  if (!token || !header?.startsWith("Bearer ")) return false;
  const digest = async (text) =>
    new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return crypto.subtle.timingSafeEqual(await digest(header.slice(7)), await digest(token));
}
