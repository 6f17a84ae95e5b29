// Profiles one Worker under load: serves it from workerd through Miniflare with V8's
// inspector on, samples the CPU while wrk runs one load script, and prints the functions
// with the most self time (wasm functions by name when the module keeps its names section).
//
//   node bench/profile.mjs rust|ts bench/healthz.lua [seconds]
//
// For wasm names, profile a module that keeps them: wasm-bindgen's output before wasm-opt
// strips them (target/worker-glue/index_bg.wasm) copied over build/index_bg.wasm.
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { lastWeek } from "../tests/bundle.mjs";
import { Miniflare, Log, LogLevel } from "miniflare";
import WebSocket from "ws";

const [which, script, seconds = "5"] = process.argv.slice(2);
const port = 18_790;
const inspectorPort = 18_791;
const bindings = { WAU_READ_TOKEN: "bench-token-0123456789abcdef0123456789", ABUSE_LIMIT_PER_MINUTE: "0" };
const modules =
  which === "rust"
    ? [
        { type: "ESModule", path: "build/index.js" },
        { type: "CompiledWasm", path: "build/index_bg.wasm" },
      ]
    : [{ type: "ESModule", path: process.env.BENCH_TS_BUNDLE }];
const mf = new Miniflare({
  workers: [
    {
      name: which,
      compatibilityDate: "2026-04-01",
      modulesRoot: which === "rust" ? "build" : dirname(process.env.BENCH_TS_BUNDLE),
      modules,
      bindings,
      kvNamespaces: { SESSIONS: "sessions" },
      unsafeDirectSockets: [{ host: "127.0.0.1", port }],
      unsafeInspectorProxy: true,
    },
  ],
  cf: false,
  inspectorPort,
  kvPersist: join(mkdtempSync(join(tmpdir(), "profile-")), "kv"),
  log: new Log(LogLevel.WARN),
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.pipe(process.stderr);
  },
});
await mf.ready;

const socket = new WebSocket(`ws://127.0.0.1:${inspectorPort}/${which}`);
await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
let id = 0;
const pending = new Map();
socket.on("message", (data) => {
  const message = JSON.parse(data.toString());
  pending.get(message.id)?.(message.result);
});
const send = (method, params = {}) =>
  new Promise((resolve) => {
    pending.set(++id, resolve);
    socket.send(JSON.stringify({ id, method, params }));
  });

await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: 100 });
if (process.env.PROFILE_OFF !== "1") await send("Profiler.start");
const wrk = execFileSync("wrk", ["-t1", "-c16", `-d${seconds}s`, "-s", script, `http://127.0.0.1:${port}`], {
  env: { ...process.env, READOUT_PATH: `/v1/wau/${lastWeek().week}`, READOUT_TOKEN: "bench-token-0123456789abcdef0123456789" },
});
console.log(wrk.toString().split("\n").filter((line) => /Requests\/sec|Non-2xx/.test(line)).join("\n"));
if (process.env.PROFILE_OFF === "1") process.exit(0);
const { profile } = await send("Profiler.stop");

// Self time per function: each sample is one node, the function on top of the stack.
const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const selfSamples = new Map();
for (const sample of profile.samples) {
  const { callFrame } = nodes.get(sample);
  const name = `${callFrame.functionName || "(anonymous)"} ${callFrame.url.split("/").pop()}`;
  selfSamples.set(name, (selfSamples.get(name) ?? 0) + 1);
}
const total = profile.samples.length;
// An attached inspector slows workerd itself down a hundredfold; that time shows as an
// unnamed frame with no script, left out here so that the Worker's own functions compare.
const outside = new Set(["(idle) ", "(anonymous) ", "(program) "]);
const inside = [...selfSamples].filter(([name]) => !outside.has(name));
const busy = inside.reduce((sum, [, count]) => sum + count, 0);
console.log(`${total} samples, ${busy} in the Worker's code and the runtime's named functions:`);
inside
  .sort((a, b) => b[1] - a[1])
  .slice(0, Number(process.env.PROFILE_TOP ?? 30))
  .forEach(([name, count]) => console.log(`${((100 * count) / busy).toFixed(1).padStart(5)}%  ${name}`));
socket.close();
await mf.dispose();
