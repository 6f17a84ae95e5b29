// Reads `wrangler tail --format json` on stdin and prints only the Worker's wide events, one
// JSON line each, and for every invocation that did not end well (an exception, the CPU or
// memory limit exceeded, a cancelled request) one `worker_outcome` line: the outcome, how many
// of that outcome so far, and each exception's name and message with any URL or address
// taken out. Each tail event also carries the request's URL, headers and `cf` object (the
// client's address and location among them): none of that is printed or kept.
//   npx wrangler tail --format json | node scripts/wide-events.mjs
import { stdin, stdout } from "node:process";

/** Splits a stream of concatenated JSON values (wrangler prints them pretty, one after
 * another) into whole values; returns them and the unfinished rest. */
function splitValues(text) {
  const values = [];
  let depth = 0, inString = false, escaped = false, start = -1, end = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === "\\") escaped = true;
      else if (c === '"') inString = false;
    } else if (c === '"' && depth > 0) inString = true;
    else if (c === "{" || c === "[") {
      if (depth++ === 0) start = i;
    } else if ((c === "}" || c === "]") && --depth === 0) {
      values.push(text.slice(start, i + 1));
      end = i + 1;
    }
  }
  return { values, rest: text.slice(end) };
}

function wideEvents(value) {
  let event;
  try {
    event = JSON.parse(value);
  } catch {
    return [];
  }
  const lines = [];
  for (const log of Array.isArray(event?.logs) ? event.logs : []) {
    for (const message of Array.isArray(log?.message) ? log.message : []) {
      if (typeof message !== "string" || !message.startsWith('{"event":')) continue;
      try {
        if (typeof JSON.parse(message).event === "string") lines.push(message);
      } catch {
        // Not one of ours.
      }
    }
  }
  return lines;
}

/** An exception's text without what could point at a client: URLs and addresses. */
function scrub(text) {
  return text
    .replace(/[a-z][a-z0-9+.-]*:\/\/\S+/gi, "<url>")
    .replace(/\b\d{1,3}(\.\d{1,3}){3}\b/g, "<address>")
    .replace(/\b[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}\b/gi, "<address>")
    .slice(0, 300);
}

const outcomes = {};

/** The line for an invocation that did not end `ok`, or none. */
function outcomeLines(value) {
  let event;
  try {
    event = JSON.parse(value);
  } catch {
    return [];
  }
  const outcome = typeof event?.outcome === "string" ? event.outcome : "unknown";
  if (outcome === "ok") return [];
  outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
  const exceptions = (Array.isArray(event?.exceptions) ? event.exceptions : []).map((exception) => ({
    name: scrub(String(exception?.name ?? "Error")).slice(0, 80),
    message: scrub(String(exception?.message ?? "")),
  }));
  return [JSON.stringify({ event: "worker_outcome", outcome, count: outcomes[outcome], exceptions })];
}

let pending = "";
stdin.setEncoding("utf8");
stdin.on("data", (chunk) => {
  const { values, rest } = splitValues(pending + chunk);
  pending = rest;
  for (const value of values) {
    for (const line of [...wideEvents(value), ...outcomeLines(value)]) stdout.write(line + "\n");
  }
});
