// The Worker's entry module, bundled by scripts/build-worker.sh around wasm-bindgen's glue
// (./index.js beside it there): a plain `{ fetch }` export that calls the Rust handler, and
// the week's object class, both reinstantiating the wasm module after a trap.
//
// Why not worker-build's own entry: it makes a `WorkerEntrypoint` instance per request behind
// two `Proxy`s, which cost /healthz a fifth of its throughput (BENCHMARKS.md). Its recovery
// is kept: a trap (a Rust panic aborts as `unreachable`) leaves the instance's memory in an
// unknown state, so the next call first resets the module (wasm-bindgen's
// `--experimental-reset-state-function`) instead of running on a broken instance for the
// rest of the isolate's life.
import * as wasm from "./index.js";

// Panics print their backtrace through `console.error`; keep it whole.
Error.stackTraceLimit = 100;

// Shared with the Rust side (worker's `__worker_init_state`): its panic hook sets
// `criticalError`, and each start of the module (the first and every reset) raises
// `instanceId`, which tells an object that its Rust instance belongs to a module now gone.
const initState = wasm.__worker_init_state();

function resetIfTrapped() {
  if (initState.criticalError) {
    console.log("Reinitializing Wasm application");
    wasm.__wbg_reset_state();
    initState.criticalError = false;
    initState.instanceId++;
  }
}

function noteTrap(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    console.error("Critical", error);
    initState.criticalError = true;
  }
}

function rethrowNotingTrap(error) {
  noteTrap(error);
  throw error;
}

// A trap thrown from a callback that the runtime calls outside any call of ours (a timer's,
// say) and that nothing catches reaches the global error event. (Any exception through the
// module also marks it terminated in the glue itself, which resets it at the next call.)
addEventListener("error", (event) => noteTrap(event.error));

// The handler answers the head-only routes with a `Response` and the rest with a `Promise`;
// both pass through as they are, a rejection noted on its way. The calls are written out,
// not spread through a helper: this is on every request's path.
function settled(answer) {
  return answer instanceof Promise ? answer.catch(rethrowNotingTrap) : answer;
}

export default {
  fetch(request, env, ctx) {
    resetIfTrapped();
    try {
      return settled(wasm.fetch(request, env, ctx));
    } catch (error) {
      rethrowNotingTrap(error);
    }
  },
};

// The week's Durable Object. Its Rust instance lives in the wasm memory, so after a reset it
// is made again from the same state and env (it keeps nothing that its storage does not).
export class WeekTally {
  constructor(state, env) {
    this.state = state;
    this.env = env;
    this.make();
  }

  make() {
    resetIfTrapped();
    try {
      this.inner = new wasm.WeekTally(this.state, this.env);
    } catch (error) {
      rethrowNotingTrap(error);
    }
    this.instanceId = initState.instanceId;
  }

  current() {
    // Every call into the module first runs the glue's own pending reset (after a panic, or
    // an exception thrown through it): this one makes it happen before the object's pointer
    // is used, so that the reset shows in `instanceId` and the object is made again.
    wasm.__worker_init_state();
    resetIfTrapped();
    if (this.instanceId !== initState.instanceId) {
      this.make();
    }
    return this.inner;
  }

  fetch(request) {
    const inner = this.current();
    try {
      return settled(inner.fetch(request));
    } catch (error) {
      rethrowNotingTrap(error);
    }
  }

  alarm() {
    const inner = this.current();
    try {
      return settled(inner.alarm());
    } catch (error) {
      rethrowNotingTrap(error);
    }
  }
}
