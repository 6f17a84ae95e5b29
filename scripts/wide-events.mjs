// Reads `wrangler tail --format json` on stdin and prints only the Worker's wide events, one
// JSON line each. Each tail event also carries the request's URL, headers and `cf` object
// (the client's address and location among them): none of that is printed or kept.
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

let pending = "";
stdin.setEncoding("utf8");
stdin.on("data", (chunk) => {
  const { values, rest } = splitValues(pending + chunk);
  pending = rest;
  for (const value of values) {
    for (const line of wideEvents(value)) stdout.write(line + "\n");
  }
});
