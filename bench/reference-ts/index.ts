// The yardsticks for the Rust Worker: the same contract written the way a competent TypeScript
// developer would (zod for the schema, KV put in waitUntil, the readout by listing, one wide
// event per request). scripts/bench.sh serves it beside the Rust bundle; it is never deployed.
//
// Built twice by esbuild (scripts/bench-workers.sh): as the reference, which reads a ping's
// record before it writes (a repeat that changed nothing writes nothing), and with
// `--define:OBVIOUS=true` as the obvious design, which puts every ping's record, unread.
import { z } from "zod";

declare const OBVIOUS: boolean;

interface Env {
  SESSIONS: KVNamespace;
  WAU_READ_TOKEN?: string;
  SESSION_TTL_SECONDS?: string;
  ABUSE_LIMIT_PER_MINUTE?: string;
}

const MAX_BODY_BYTES = 1024;
const SEMVER = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;

const Ping = z.strictObject({
  protocol_version: z.string().regex(SEMVER),
  daemon_version: z.string().regex(SEMVER),
  session_id: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
  platform: z.enum(["darwin", "linux", "win32", "freebsd", "openbsd"]),
  node_version: z.string().regex(/^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/),
  primary_framework: z.enum(["react", "vue", "next", "nuxt", "svelte", "astro", "solid", "unknown"]),
});

const SECURITY_HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/** An answer and what the request's wide event says of it. */
interface Reply {
  response: Response;
  outcome: string;
  week?: string;
  bodyBytes?: number;
}

function json(status: number, outcome: string, body: unknown, headers: Record<string, string> = {}): Reply {
  const response = new Response(JSON.stringify(body), {
    status,
    headers: { ...SECURITY_HEADERS, "content-type": "application/json", ...headers },
  });
  return { response, outcome };
}

function error(status: number, code: string, message: string, headers?: Record<string, string>): Reply {
  return json(status, code, { error: code, message }, headers);
}

/** The ISO week of a UTC instant, as `YYYY-Www`. */
function isoWeek(date: Date): string {
  const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const weekday = day.getUTCDay() || 7;
  day.setUTCDate(day.getUTCDate() + 4 - weekday); // the Thursday decides the year
  const year = day.getUTCFullYear();
  const week = Math.ceil(((day.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${String(week).padStart(2, "0")}`;
}

/** Whether `YYYY-Www` names a week that exists (week 53 only in long years). */
function isRealWeek(week: string): boolean {
  const match = /^(\d{4})-W(\d{2})$/.exec(week);
  if (!match) return false;
  const [year, number] = [Number(match[1]), Number(match[2])];
  return number >= 1 && (number <= 52 || isoWeek(new Date(Date.UTC(year, 11, 28))) === week);
}

/** Reads the body up to the cap; `null` once it grows past it. */
async function readCapped(request: Request): Promise<Uint8Array | null> {
  if (!request.body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of request.body) {
    length += chunk.byteLength;
    if (length > MAX_BODY_BYTES) return null;
    chunks.push(chunk);
  }
  const body = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

// Valid pings per client and minute, counted in this isolate.
const windows = new Map<string, { minute: number; count: number }>();
function limited(client: string, perMinute: number, now: number): boolean {
  if (perMinute <= 0) return false;
  const minute = Math.floor(now / 60_000);
  const window = windows.get(client);
  if (!window || window.minute !== minute) {
    if (windows.size >= 10_000) windows.clear();
    windows.set(client, { minute, count: 1 });
    return false;
  }
  return ++window.count > perMinute;
}

async function session(request: Request, env: Env, ctx: ExecutionContext): Promise<Reply> {
  if (request.method !== "POST") return error(405, "method_not_allowed", "use POST", { allow: "POST" });
  const type = request.headers.get("content-type") ?? "";
  if (type.split(";")[0].trim().toLowerCase() !== "application/json") {
    return error(415, "unsupported_media_type", "send application/json");
  }
  if (Number(request.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) {
    return error(413, "payload_too_large", "the body is over 1024 bytes");
  }
  const body = await readCapped(request);
  if (body === null) return error(413, "payload_too_large", "the body is over 1024 bytes");
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    return error(400, "invalid_json", "the body is not valid JSON");
  }
  const ping = Ping.safeParse(parsed);
  if (!ping.success) return error(400, "invalid_field", "the body does not match the schema");
  const now = Date.now();
  const client = request.headers.get("cf-connecting-ip") ?? "unknown";
  if (limited(client, Number(env.ABUSE_LIMIT_PER_MINUTE ?? 120), now)) {
    return error(429, "too_many_requests", "slow down", { "retry-after": "60" });
  }
  const { session_id, ...fields } = ping.data;
  const record = { ...fields, first_seen_at: new Date(now).toISOString().slice(0, 10) + "T00:00:00Z" };
  const week = isoWeek(new Date(now));
  const key = `session:${week}:${session_id}`;
  // A repeat keeps the first ping's day and writes only when a field changed; the obvious
  // design writes every ping, one KV put and nothing else.
  const write = async () => {
    if (OBVIOUS) {
      await env.SESSIONS.put(key, JSON.stringify(record), {
        expirationTtl: Number(env.SESSION_TTL_SECONDS ?? 7_257_600),
        metadata: record,
      });
      return;
    }
    const stored = await env.SESSIONS.get<typeof record>(key, "json");
    if (stored) {
      record.first_seen_at = stored.first_seen_at;
      if (JSON.stringify(stored) === JSON.stringify(record)) return;
    }
    await env.SESSIONS.put(key, JSON.stringify(record), {
      expirationTtl: Number(env.SESSION_TTL_SECONDS ?? 7_257_600),
      metadata: record,
    });
  };
  ctx.waitUntil(
    write().catch((e) => console.log(JSON.stringify({ event: "store_failure", operation: "put", error: String(e) }))),
  );
  const response = new Response(null, { status: 204, headers: SECURITY_HEADERS });
  return { response, outcome: "accepted", week, bodyBytes: body.length };
}

async function digest(text: string): Promise<ArrayBuffer> {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
}

async function weeklyActive(request: Request, env: Env, week: string): Promise<Reply> {
  if (!env.WAU_READ_TOKEN) return error(404, "not_found", "no such route");
  if (request.method !== "GET") return error(405, "method_not_allowed", "use GET", { allow: "GET" });
  const header = request.headers.get("authorization") ?? "";
  const given = header.startsWith("Bearer ") ? header.slice(7) : "";
  const [a, b] = await Promise.all([digest(given), digest(env.WAU_READ_TOKEN)]);
  if (!crypto.subtle.timingSafeEqual(a, b)) {
    return error(401, "unauthorized", "a valid bearer token is required", { "www-authenticate": "Bearer" });
  }
  if (!isRealWeek(week)) return error(400, "invalid_week", "the week must be YYYY-Www and exist");
  let count = 0;
  let cursor: string | undefined;
  do {
    const page = await env.SESSIONS.list({ prefix: `session:${week}:`, cursor });
    count += page.keys.length;
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  return { ...json(200, "ok", { week, weekly_active_sessions: count }), week };
}

async function route(request: Request, env: Env, ctx: ExecutionContext): Promise<[string, Reply]> {
  const { pathname } = new URL(request.url);
  if (pathname === "/v1/session") return ["session", await session(request, env, ctx)];
  if (pathname === "/healthz") {
    return request.method === "GET"
      ? ["health", { response: new Response("ok", { headers: { ...SECURITY_HEADERS, "content-type": "text/plain" } }), outcome: "ok" }]
      : ["health", error(405, "method_not_allowed", "use GET", { allow: "GET" })];
  }
  if (pathname.startsWith("/v1/wau/")) return ["weekly_active", await weeklyActive(request, env, pathname.slice(8))];
  return ["unknown", error(404, "not_found", "no such route")];
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const started = Date.now();
    const [routeName, reply] = await route(request, env, ctx);
    // The same wide event as the Rust Worker's: one JSON line, no address, no id.
    console.log(
      JSON.stringify({
        event: "request",
        target: OBVIOUS ? "obvious-ts" : "reference-ts",
        route: routeName,
        method: request.method,
        status: reply.response.status,
        outcome: reply.outcome,
        body_bytes: reply.bodyBytes ?? 0,
        duration_ms: Date.now() - started,
        week: reply.week,
        colo: request.cf?.colo,
      }),
    );
    return reply.response;
  },
} satisfies ExportedHandler<Env>;
