// The Worker's bundle as Miniflare takes it: every module under build/ (scripts/build-worker.sh
// makes it), the wasm compiled, the rest as ES modules. Shared by the Node tests and benches.
import { readdirSync } from "node:fs";
import { join } from "node:path";

export function bundleModules(root = "build") {
  return readdirSync(root, { recursive: true })
    .filter((file) => /\.(m?js|wasm)$/.test(file))
    .map((file) => ({ type: file.endsWith(".wasm") ? "CompiledWasm" : "ESModule", path: join(root, file) }));
}
