//! The Cloudflare Worker: streams the body under the cap, asks the protocol core what to
//! answer, keeps accepted records in their week's Durable Object (the readout's tallies) and
//! in KV inside `waitUntil`, and logs one wide event.
//!
//! Deployed a second time with `WORKER_ROLE = "backfill"`, the same bundle is the maintenance
//! Worker that hands KV's records to the weeks' objects ([`backfill`]).
//!
//! Everything here is I/O; every rule lives in `telemetry-core`. On the host this crate is
//! empty, so that `cargo test` can build the black-box contract suite in `tests/`.

#[cfg(target_arch = "wasm32")]
mod adapter;
#[cfg(target_arch = "wasm32")]
mod backfill;
#[cfg(target_arch = "wasm32")]
mod kv;
#[cfg(target_arch = "wasm32")]
mod record_batch;
#[cfg(target_arch = "wasm32")]
mod shared_limit;
#[cfg(target_arch = "wasm32")]
mod week_tally;
#[cfg(target_arch = "wasm32")]
mod weeks;
