// A Rust panic in the Worker, against a bundle built with the `recovery-check` feature (its
// one difference: a route that panics while holding the isolate's limiter borrowed), in one
// workerd through Miniflare: the panicking request fails, and the isolate does not stay
// broken. The next requests are answered, and the week's object, made before the panic,
// is made again over the reset module and keeps counting. Without a reset every request
// after the panic would fail on the borrow it left. Run by tests/deployment.rs, which builds
// the bundle into the directory given as the first argument.
import { sendPing, telemetryWorker, thisWeek } from "./bundle.mjs";
import { Miniflare, Log, LogLevel } from "miniflare";

const root = process.argv[2];
const TOKEN = "recovery-test-read-token-0123456789abcdef";
const fail = (message) => {
  console.error(message);
  process.exit(1);
};
const logged = [];
const mf = new Miniflare({
  log: new Log(LogLevel.WARN),
  cf: false,
  workers: [
    telemetryWorker({ root, bindings: { WAU_READ_TOKEN: TOKEN, ABUSE_LIMIT_PER_MINUTE: "0", WEEK_SHARDS: "1" } }),
  ],
  handleRuntimeStdio(stdout, stderr) {
    stdout.on("data", (chunk) => logged.push(String(chunk)));
    stderr.on("data", (chunk) => logged.push(String(chunk)));
  },
});
try {
  await mf.ready;
  const worker = await mf.getWorker("telemetry");
  const ping = (id) => sendPing(worker, id);
  const { week } = thisWeek();
  const count = async () => {
    const response = await worker.fetch(`http://localhost/v1/wau/${week}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    if (response.status !== 200) fail(`readout: ${response.status}`);
    return (await response.json()).weekly_active_sessions;
  };
  const settle = async (want, what) => {
    for (let tries = 0; tries < 100; tries++) {
      if ((await count()) === want) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    fail(`never: ${what} (counted ${await count()})`);
  };
  const healthz = async (when) => {
    const response = await worker.fetch("http://localhost/healthz");
    await response.arrayBuffer();
    if (response.status !== 200) fail(`/healthz ${when}: ${response.status}`);
  };

  await healthz("before the panic");
  await ping("recovery-relay-1");
  await settle(1, "the first session counted");

  let status = "thrown";
  try {
    const response = await worker.fetch("http://localhost/__recovery-check/panic");
    await response.arrayBuffer();
    status = response.status;
  } catch {
    // Miniflare rethrows the Worker's uncaught exception: the request failed, as it should.
  }
  if (status !== "thrown" && status < 500) fail(`the panicking request was answered ${status}`);
  const panicked = () => logged.join("").includes("the panic of the recovery check");
  for (let tries = 0; tries < 50 && !panicked(); tries++) await new Promise((r) => setTimeout(r, 100));
  if (!panicked()) fail(`no panic logged:\n${logged.join("")}`);

  await healthz("after the panic");
  await ping("recovery-relay-2");
  await settle(2, "the second session counted after the panic, by the object made again");
  await healthz("at the end");
  console.log("recovery: ok");
} finally {
  await mf.dispose();
}
