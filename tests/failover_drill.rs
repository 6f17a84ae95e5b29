//! RUNBOOK's DNS swap and back, rehearsed with `scripts/failover-drill.sh --local` between the
//! Worker (`wrangler dev`, local KV and week objects, the backfill Worker beside it) and the
//! rollback (the real binary on SQLite), with a week larger than one KV page on both sides and
//! sessions deleted on either side during the swap: every session either side held arrives
//! on the other, nothing deleted comes back, and the counts and breakdowns agree.

#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Each test binary uses part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contract_suite::{
    ADMIN_TOKEN, RawRequest, Target, current_iso_week, free_local_port, ping_request, send,
};
use support::wrangler::Wrangler;

const TOKEN: &str = "drill-read-token-0123456789abcdef0123456789";
/// Sessions each side holds: more than one page (1,000 keys) of KV's listing.
const SESSIONS: usize = 1_050;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rollback binary, built if this test runs on its own.
fn rollback_bin() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--quiet", "-p", "rollback", "--bin", "rollback"])
        .status()
        .expect("cargo build -p rollback");
    assert!(status.success(), "building the rollback failed");
    root().join("target/debug/rollback")
}

/// The rollback server on a free port, stopped when dropped.
struct RollbackServer {
    addr: SocketAddr,
    child: Child,
}

impl RollbackServer {
    fn start(bin: &Path, store: &str) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_local_port()));
        let child = Command::new(bin)
            .args(["--listen", &addr.to_string(), "--store", store])
            .env("WAU_READ_TOKEN", TOKEN)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("ABUSE_LIMIT_PER_MINUTE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the rollback");
        let deadline = Instant::now() + Duration::from_secs(30);
        while send(addr, &RawRequest::new("GET", "/readyz")).map(|r| r.status) != Ok(200) {
            assert!(Instant::now() < deadline, "the rollback did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { addr, child }
    }
}

impl Drop for RollbackServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn target(addr: SocketAddr) -> Target {
    Target {
        addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    }
}

fn ping_all(addr: SocketAddr, ids: impl Iterator<Item = String>) {
    for id in ids {
        let response = send(addr, &ping_request(&id)).unwrap();
        assert_eq!(response.status, 204, "{id}: {}", response.text());
    }
}

fn erase(addr: SocketAddr, id: &str) {
    let request = RawRequest::new("POST", "/v1/erase")
        .header("content-type", "application/json")
        .body(format!(r#"{{"session_id":"{id}"}}"#).into_bytes());
    assert_eq!(send(addr, &request).unwrap().status, 204, "erasing {id}");
}

/// The admin's deletion: how many records it found (0 once a session is gone everywhere).
fn records_of(addr: SocketAddr, id: &str) -> u64 {
    let request = RawRequest::new("DELETE", &format!("/v1/session/{id}"))
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"));
    let response = send(addr, &request).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.json().unwrap()["deleted_records"]
        .as_u64()
        .unwrap()
}

fn readout(addr: SocketAddr, query: &str) -> String {
    let path = format!("/v1/wau/{}{query}", current_iso_week());
    let request = RawRequest::new("GET", &path).header("authorization", &format!("Bearer {TOKEN}"));
    send(addr, &request).unwrap().text()
}

/// Runs one step of the drill in local mode; what it printed.
fn drill(step: &str, bin: &Path, args: &[&str]) -> String {
    let output = Command::new("bash")
        .current_dir(root())
        .arg("scripts/failover-drill.sh")
        .arg(step)
        .args(args)
        .arg(current_iso_week())
        .env("ROLLBACK", bin)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run scripts/failover-drill.sh");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{step}: {printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

#[test]
fn the_swap_to_the_rollback_and_back_loses_nothing_and_resurrects_nothing() {
    let bin = rollback_bin();
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    let dir = std::env::temp_dir().join(format!("telemetry-drill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let rollback = RollbackServer::start(&bin, &store);
    let persist = worker.kv_dir();
    let local = [
        "--local",
        "--persist-to",
        persist.to_str().unwrap(),
        "--store",
        &store,
    ];

    // Before the swap: the Worker holds a week past one page, and one of its sessions was
    // erased there.
    ping_all(
        worker.addr,
        (0..SESSIONS).map(|n| format!("drill-worker-{n:05}")),
    );
    assert_eq!(
        target(worker.addr).count_settled(SESSIONS as u64),
        Ok(SESSIONS as u64)
    );
    erase(worker.addr, "drill-worker-00000");

    // The swap: every record the Worker held reaches the rollback, the erased one does not.
    let printed = drill("to-rollback", &bin, &local);
    assert!(printed.contains("1049 new to the store"), "{printed}");
    let on_rollback = SESSIONS as u64 - 1;
    assert_eq!(
        target(rollback.addr).count_settled(on_rollback),
        Ok(on_rollback)
    );

    // During the swap: the rollback takes a week's worth of new sessions; one session is
    // erased on the rollback, another on the Worker (reached directly, as an operator could).
    ping_all(
        rollback.addr,
        (0..SESSIONS).map(|n| format!("drill-rollback-{n:05}")),
    );
    erase(rollback.addr, "drill-worker-00001");
    erase(worker.addr, "drill-worker-00002");
    erase(rollback.addr, "drill-rollback-00000");

    // And back: the Worker's deletions first, the weeks into KV and their objects, then the
    // rollback's deletions onto the Worker.
    let backfill = worker.start_backfill_beside(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let backfill_url = format!("http://{}", backfill.addr);
    let mut back = local.to_vec();
    back.extend(["--backfill", &backfill_url]);
    drill("back-to-worker", &bin, &back);
    let worker_url = format!("http://{}", worker.addr);
    let replayed = drill(
        "replay-deletions",
        &bin,
        &["--store", &store, "--worker", &worker_url],
    );
    // The two erased on the rollback, and the two the Worker journaled (the rollback's
    // journal took them in with their deletion; deleting them again on the Worker is a no-op).
    assert!(replayed.contains("took 4 sessions"), "{replayed}");

    // Both hold every session either held, less the four erased, and answer alike.
    let expected = 2 * SESSIONS as u64 - 4;
    assert_eq!(target(worker.addr).count_settled(expected), Ok(expected));
    assert_eq!(target(rollback.addr).count_settled(expected), Ok(expected));
    for query in ["", "?by=platform", "?by=daemon_version", "?by=node_major"] {
        assert_eq!(
            readout(worker.addr, query),
            readout(rollback.addr, query),
            "{query}"
        );
    }
    for gone in [
        "drill-worker-00000",
        "drill-worker-00001",
        "drill-worker-00002",
        "drill-rollback-00000",
    ] {
        assert_eq!(
            records_of(worker.addr, gone),
            0,
            "{gone} came back on the Worker"
        );
        assert_eq!(
            records_of(rollback.addr, gone),
            0,
            "{gone} came back on the rollback"
        );
    }
    // KV holds exactly the sessions counted: every page of the listing.
    let listed = Command::new("node")
        .current_dir(root())
        .args(["scripts/kv-list.mjs", "--prefix"])
        .arg(format!("session:{}:", current_iso_week()))
        .args(["--local", "--persist-to"])
        .arg(&persist)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len() as u64, expected);
    drop(backfill);
    let _ = std::fs::remove_dir_all(&dir);
}
