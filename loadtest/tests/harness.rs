//! A short harness run against the rollback on a temporary SQLite store, so the harness and
//! its count check cannot rot: it must pass, write its report, send (and have answered) every
//! kind of relay ping, unchanged repeats included, and verify the count; and a violated
//! threshold must fail the run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "harness-token-0123456789abcdef0123456789abcdef";

/// The real `rollback` binary, built by the same cargo next to `loadtest`.
fn rollback_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "rollback", "--bin", "rollback"])
        .status()
        .expect("run cargo build -p rollback");
    assert!(status.success(), "building the rollback failed");
    Path::new(env!("CARGO_BIN_EXE_loadtest")).with_file_name("rollback")
}

/// The rollback on a fresh SQLite file, on a free port; killed on drop.
struct Server {
    addr: SocketAddr,
    child: Child,
}

impl Server {
    /// `abuse_limit` 0: one machine is one client address, so a load test turns it off.
    fn start(dir: &Path, abuse_limit: u32) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(rollback_binary())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--store")
            .arg(format!("sqlite://{}", dir.join("telemetry.db").display()))
            .env("WAU_READ_TOKEN", TOKEN)
            .env("ABUSE_LIMIT_PER_MINUTE", abuse_limit.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "rollback did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { addr, child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn harness(server: &Server, dir: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--host", &format!("http://{}", server.addr)])
        .args(["--users", "4", "--increase-rate", "4", "--run-time", "3s"])
        .arg("--report-file")
        .arg(dir.join("report.html"))
        .env("WAU_READ_TOKEN", TOKEN)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_short_run_passes_writes_its_report_and_verifies_the_count() {
    let dir = scratch("pass");
    let server = Server::start(&dir, 0);
    let output = harness(&server, &dir, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("count check passed"), "{stdout}");
    // Each kind of relay ping was sent and answered 204, the unchanged repeats above all: the
    // path the stores optimise must be loaded, not only first pings.
    for kind in ["new session", "unchanged repeat", "upgrade"] {
        assert!(
            answered(&stdout, kind) > 0,
            "no {kind} answered 204: {stdout}"
        );
    }
    // The 204s' p50 and p95, every ping's and each kind's, each p95 at least its p50.
    let latency = (stdout.lines())
        .find_map(|line| line.strip_prefix("204 latency, p50 / p95: "))
        .unwrap_or_else(|| panic!("no latency line: {stdout}"));
    let figures: Vec<f64> = (latency.split(['/', ';', ' ']))
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(figures.len(), 8, "{latency}");
    for pair in figures.chunks(2) {
        assert!(pair[0] > 0.0 && pair[1] >= pair[0], "{latency}");
    }
    // The run erased what it created: the week is as it found it.
    let created = stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("erased the ")?
                .strip_suffix(" sessions the run created")
        })
        .unwrap_or_else(|| panic!("no erasure line: {stdout}"));
    assert!(created.parse::<u64>().unwrap() > 0, "{stdout}");
    assert!(
        weekly_count(&server).ends_with(r#""weekly_active_sessions":0}"#),
        "the run's sessions are still counted"
    );
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        report.contains("<title>Goose Attack Report")
            && ["new session", "unchanged repeat", "upgrade"]
                .iter()
                .all(|kind| report.contains(kind)),
        "report lacks the run or a kind of ping"
    );
}

/// The current week's readout body, read with the token over a plain HTTP/1.1 request.
fn weekly_count(server: &Server) -> String {
    use std::io::{Read, Write};
    let week = {
        let output = Command::new("date")
            .args(["-u", "+%G-W%V"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET /v1/wau/{week} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// How many pings of `kind` the harness says were answered 204, from its line
/// "relay pings answered 204: 12 new session, 70 unchanged repeat, 7 upgrade".
fn answered(stdout: &str, kind: &str) -> u64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("relay pings answered 204: "))
        .unwrap_or_else(|| panic!("no summary of pings answered: {stdout}"));
    line.split(", ")
        .find_map(|part| part.strip_suffix(kind)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of {kind} in {line:?}"))
}

#[test]
fn a_violated_threshold_fails_the_run_with_a_clear_message() {
    let dir = scratch("threshold");
    let server = Server::start(&dir, 0);
    // No request answers in under a microsecond: the p95 rule fails, and says so in words.
    let output = harness(&server, &dir, &[("LOADTEST_P95_MS", "0.001")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("thresholds failed"), "{stderr}");
    assert!(stderr.contains("(observed "), "{stderr}");
    assert!(
        !stderr.contains("ThresholdResult"),
        "a debug dump: {stderr}"
    );
}

#[test]
fn the_abuse_limit_left_on_is_named_as_the_cause() {
    let dir = scratch("limited");
    // With the abuse limit on, one machine's load is mostly answered 429.
    let server = Server::start(&dir, 10);
    let output = harness(&server, &dir, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "% of pings refused with 429: the abuse limit is on. Set ABUSE_LIMIT_PER_MINUTE=0"
        ),
        "{stderr}"
    );
}

#[test]
fn a_host_that_is_not_this_machine_is_refused_before_anything_is_sent() {
    let dir = scratch("production");
    for host in ["https://telemetry.example.com", "http://192.0.2.10:8787"] {
        let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(["--host", host, "--users", "1", "--run-time", "1s"])
            .env("WAU_READ_TOKEN", TOKEN)
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{host}: {stderr}");
        assert!(
            stderr.contains("is not this machine") && stderr.contains("--against-production"),
            "{stderr}"
        );
    }
}

#[test]
fn help_says_what_the_harness_does_before_goose_s_options() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for said in [
        "WAU_READ_TOKEN",
        "LOADTEST_P95_MS",
        "LOADTEST_MAX_ERROR_RATE",
        "ABUSE_LIMIT_PER_MINUTE=0",
        "--against-production",
        "POST /v1/erase",
        "--host",
        "--users",
    ] {
        assert!(help.contains(said), "--help lacks {said}:\n{help}");
    }
}
