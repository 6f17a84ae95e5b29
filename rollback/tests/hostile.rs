//! Hostile clients against the real binary: slow heads, slow bodies, idle connections and a
//! flood of stalled connections are cut within their limits, a normal client is still served
//! meanwhile, a ping flood from one address is limited while another address is served, and
//! SIGTERM with stalled clients connected still writes every acknowledged ping.

#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use contract_suite::ADMIN_TOKEN;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use contract_suite::{
    RawRequest, Target, current_iso_week, ping_json, ping_request, readout_request, send, send_from,
};
use rollback::connection::{DEFAULT_BODY_TIMEOUT, DEFAULT_HEAD_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
use support::{Rollback, scratch_dir};

const TOKEN: &str = "hostile-token-0123456789abcdef0123456789abcdef";

/// A ping's head declaring its whole body, with `part` of the body after it.
fn partial_ping(id: &str, part: usize) -> Vec<u8> {
    let body = ping_json(id);
    let mut bytes = format!(
        "POST /v1/session HTTP/1.1\r\nhost: rollback\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body.as_bytes()[..part]);
    bytes
}

const HALF_A_HEAD: &[u8] = b"POST /v1/session HTTP/1.1\r\nhost: rollback\r\ncontent-ty";

/// Connects and sends `bytes`, then nothing more.
fn stall(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// Reads until the server closes the connection (or `within` passes): what it sent, and
/// how long after `since` it closed.
fn until_closed(mut stream: TcpStream, since: Instant, within: Duration) -> (String, Duration) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        since.elapsed(),
    )
}

fn target(addr: SocketAddr) -> Target {
    Target {
        addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    }
}

fn count_settled(addr: SocketAddr, expected: u64) -> u64 {
    target(addr).count_settled(expected).unwrap()
}

fn start(dir: &std::path::Path, args: &[&str]) -> Rollback {
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let vars = [
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ];
    Rollback::start_with_args(&store, dir, &vars, args)
}

#[test]
fn slow_heads_slow_bodies_and_idle_connections_are_cut_within_their_limits() {
    let dir = scratch_dir("hostile-limits");
    let server = start(
        &dir,
        &[
            "--head-timeout-seconds",
            "1",
            "--body-timeout-seconds",
            "1",
            "--idle-timeout-seconds",
            "2",
        ],
    );
    let addr = server.addr;
    let started = Instant::now();
    let slow_head = stall(addr, HALF_A_HEAD);
    let slow_body = stall(addr, &partial_ping("slow-body-0001", 20));
    let silent = stall(addr, b"");
    let mut kept_alive = stall(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: rollback\r\nconnection: keep-alive\r\n\r\n",
    );
    let mut first = [0u8; 17];
    kept_alive.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");

    // Meanwhile a normal client is served.
    assert_eq!(
        send(addr, &ping_request("normal-0001")).unwrap().status,
        204
    );

    let wait = Duration::from_secs(10);
    let handles = [
        ("slow head", slow_head, 1.0),
        ("slow body", slow_body, 1.0),
        ("silent", silent, 2.0),
        ("kept alive", kept_alive, 2.0),
    ]
    .map(|(name, stream, limit)| {
        std::thread::spawn(move || (name, limit, until_closed(stream, started, wait)))
    });
    for handle in handles {
        let (name, limit, (received, after)) = handle.join().unwrap();
        let after = after.as_secs_f64();
        // The watchdog looks every quarter of the shortest limit: allow that and some slack.
        assert!(
            after >= limit && after < limit + 1.5,
            "{name}: closed after {after:.2} s, limit {limit} s"
        );
        if name == "slow body" {
            assert!(received.starts_with("HTTP/1.1 408 "), "{name}: {received}");
            assert!(
                received.contains("\"error\":\"request_timeout\""),
                "{received}"
            );
        }
        if name == "slow head" || name == "silent" {
            assert!(received.is_empty(), "{name}: {received}");
        }
    }
    // The cut body wrote nothing; the normal ping was stored.
    assert_eq!(count_settled(addr, 1), 1);
}

#[test]
fn a_flood_of_stalled_connections_neither_locks_out_a_client_nor_exhausts_descriptors() {
    let dir = scratch_dir("hostile-flood");
    // Time limits far longer than the test: only the bound and its eviction can help.
    let server = start(
        &dir,
        &[
            "--max-connections",
            "40",
            "--head-timeout-seconds",
            "60",
            "--body-timeout-seconds",
            "60",
            "--idle-timeout-seconds",
            "60",
        ],
    );
    let addr = server.addr;
    for n in 0..5 {
        let response = send(addr, &ping_request(&format!("before-flood-{n}"))).unwrap();
        assert_eq!(response.status, 204);
    }
    let files_before = server.open_files();
    let flood: Vec<TcpStream> = (0..200)
        .map(|n| {
            if n % 2 == 0 {
                stall(addr, HALF_A_HEAD)
            } else {
                stall(addr, &partial_ping(&format!("flood-{n:04}"), 10))
            }
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // A normal client gets its answers promptly, every time.
    for n in 0..5 {
        let asked = Instant::now();
        let health = send(addr, &RawRequest::new("GET", "/healthz")).unwrap();
        assert_eq!(health.status, 200);
        let ping = send(addr, &ping_request(&format!("during-flood-{n}"))).unwrap();
        assert_eq!(ping.status, 204);
        let readout = send(addr, &readout_request(&current_iso_week(), TOKEN)).unwrap();
        assert_eq!(readout.status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "answered after {:?}",
            asked.elapsed()
        );
    }
    let files_during = server.open_files();
    assert!(
        files_during <= files_before + 40 + 2,
        "{files_during} open files during the flood, {files_before} before, bound 40"
    );
    drop(flood);
    // Every ping answered 204 was stored; none of the flood's half-sent ones was.
    assert_eq!(count_settled(addr, 10), 10);
}

#[test]
fn a_ping_flood_from_one_address_is_limited_while_another_address_is_served() {
    let dir = scratch_dir("hostile-ping-flood");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let vars = [
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "5"),
    ];
    let server = Rollback::start(&store, &dir, &vars);
    let addr = server.addr;
    let flooder: IpAddr = "127.0.0.3".parse().unwrap();
    let flood = std::thread::spawn(move || {
        (0..200)
            .map(|n| {
                let ping = ping_request(&format!("flood-ping-{n:04}"));
                send_from(flooder, addr, &ping).unwrap().status
            })
            .collect::<Vec<u16>>()
    });
    let neighbour: IpAddr = "127.0.0.2".parse().unwrap();
    for n in 0..5 {
        let ping = ping_request(&format!("neighbour-{n}"));
        assert_eq!(send_from(neighbour, addr, &ping).unwrap().status, 204);
    }
    let statuses = flood.join().unwrap();
    let accepted = statuses.iter().filter(|s| **s == 204).count();
    assert_eq!(accepted, 5, "the flooder got its limit and no more");
    assert!(statuses.iter().all(|s| *s == 204 || *s == 429));
    assert_eq!(count_settled(addr, 10), 10);
}

#[test]
fn sigterm_with_stalled_clients_connected_still_writes_every_acknowledged_ping() {
    let dir = scratch_dir("hostile-sigterm");
    let args = [
        "--head-timeout-seconds",
        "60",
        "--body-timeout-seconds",
        "60",
        "--shutdown-grace-seconds",
        "1",
    ];
    let mut server = start(&dir, &args);
    let addr = server.addr;
    for n in 0..50 {
        let response = send(addr, &ping_request(&format!("before-stop-{n:03}"))).unwrap();
        assert_eq!(response.status, 204);
    }
    let _stalled = [
        stall(addr, HALF_A_HEAD),
        stall(addr, &partial_ping("stalled-at-stop", 30)),
        stall(addr, b""),
    ];
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "took {:?} with stalled clients connected",
        stopped.elapsed()
    );
    assert!(server.log().contains("every acknowledged record is stored"));
    drop(server);

    let restarted = start(&dir, &[]);
    assert_eq!(target(restarted.addr).weekly_count().unwrap(), 50);
}

/// Caddy in front cuts slow clients no later than the rollback would, reads no body much
/// larger than a ping, and drops idle upstream connections before the rollback does.
#[test]
fn the_caddyfile_carries_the_rollbacks_limits() {
    let caddyfile = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile");
    let output = std::process::Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--config", caddyfile])
        .env("CADDY_ADMIN", "off")
        .output()
        .expect("caddy adapt (run scripts/setup.sh, or apt-get install caddy)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let server = &config["apps"]["http"]["servers"]["srv0"];
    let nanos = |value: &serde_json::Value| Duration::from_nanos(value.as_u64().unwrap());
    assert_eq!(nanos(&server["read_header_timeout"]), DEFAULT_HEAD_TIMEOUT);
    assert!(nanos(&server["read_timeout"]) <= DEFAULT_HEAD_TIMEOUT + DEFAULT_BODY_TIMEOUT);
    assert_eq!(nanos(&server["idle_timeout"]), DEFAULT_IDLE_TIMEOUT);
    let header_limit = server["max_header_bytes"].as_u64().unwrap();
    assert!(header_limit <= 16 * 1024, "max_header_size {header_limit}");
    // The site's handlers, found by name: their order follows Caddy's directive order.
    let handlers = server["routes"][0]["handle"][0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|route| route["handle"].as_array().unwrap().iter())
        .collect::<Vec<_>>();
    let handler = |name: &str| {
        *handlers
            .iter()
            .find(|handler| handler["handler"] == name)
            .unwrap_or_else(|| panic!("no {name} handler in {config}"))
    };
    let body_limit = handler("request_body")["max_size"].as_u64().unwrap();
    assert!(
        body_limit <= 16 * 1024,
        "request_body max_size {body_limit}"
    );
    let upstream = handler("reverse_proxy");
    let upstream_idle = nanos(&upstream["transport"]["keep_alive"]["idle_timeout"]);
    assert!(
        upstream_idle < DEFAULT_IDLE_TIMEOUT,
        "upstream keep-alive {upstream_idle:?}"
    );
}

/// A chunked ping whose body ends in a framing error (a bad chunk size after a whole, valid
/// ping) or is cut off before its last chunk: refused, and nothing is stored.
#[test]
fn a_body_that_ends_in_a_framing_error_or_an_abort_is_refused_and_never_stored() {
    let dir = scratch_dir("hostile-framing");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let server = Rollback::start(
        &store,
        &dir,
        &[
            (
                "WAU_READ_TOKEN",
                "framing-token-0123456789abcdef0123456789abcdef",
            ),
            ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ],
    );
    let target = contract_suite::Target {
        addr: server.addr,
        token: "framing-token-0123456789abcdef0123456789abcdef".into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    };
    let ping = contract_suite::ping_json("framing-relay-01");
    let head = "POST /v1/session HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{ping}\r\n", ping.len());
    for (what, tail, read_answer) in [
        ("a bad chunk size", "zz\r\n\r\n", true),
        ("no last chunk: the client goes away", "", false),
    ] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(format!("{head}{chunk}{tail}").as_bytes())
            .unwrap();
        if read_answer {
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            let answer = String::from_utf8_lossy(&answer);
            assert!(!answer.starts_with("HTTP/1.1 204"), "{what}: {answer}");
        } else {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
        }
    }
    // Both are over; a whole ping after them is stored, so the writer is not just slow.
    assert_eq!(
        send(
            server.addr,
            &contract_suite::ping_request("framing-relay-02")
        )
        .unwrap()
        .status,
        204
    );
    assert_eq!(
        target.count_settled(1).unwrap(),
        1,
        "only the whole ping is stored"
    );
}

/// Unfinished oversized heads cannot hold memory: 300 connections each sending one header of
/// up to 300 KB straight to the rollback (under hyper's default buffer of about 400 KB) and of
/// up to 900 KB through Caddy (under Go's default 1 MB), never ending the head: without the
/// bounds each would be held. Each is cut at the 16 KB bound, and both processes stay within
/// 64 MB of where they started.
#[test]
fn unfinished_oversized_heads_leave_memory_within_a_bound() {
    const CONNECTIONS: usize = 300;
    const BOUND: u64 = 64 * 1024 * 1024;
    let dir = scratch_dir("hostile-heads");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let server = Rollback::start_with_args(
        &store,
        &dir,
        &[],
        &["--client-address-header", "X-Forwarded-For"],
    );
    let caddy = support::Caddy::start(server.addr, &dir);
    let (server_before, caddy_before) = (server.resident_bytes(), caddy.resident_bytes());
    for (addr, head_bytes) in [(server.addr, 300 * 1024), (caddy.addr, 900 * 1024)] {
        let streams: Vec<TcpStream> = (0..CONNECTIONS)
            .filter_map(|_| {
                let mut stream = TcpStream::connect(addr).ok()?;
                stream
                    .set_write_timeout(Some(Duration::from_secs(2)))
                    .ok()?;
                let _ = stream.write_all(b"POST /v1/session HTTP/1.1\r\nhost: x\r\nx-padding: ");
                let filler = vec![b'a'; 64 * 1024];
                // Until the bound cuts it (a write error) or the whole head is sent.
                let mut sent = 0;
                while sent < head_bytes && stream.write_all(&filler).is_ok() {
                    sent += filler.len();
                }
                Some(stream)
            })
            .collect();
        // Time for both to read what the kernel holds for them.
        std::thread::sleep(Duration::from_millis(1500));
        let (server_now, caddy_now) = (server.resident_bytes(), caddy.resident_bytes());
        assert!(
            server_now < server_before + BOUND && caddy_now < caddy_before + BOUND,
            "with {} unfinished heads to {addr}: rollback {server_before} → {server_now}, caddy {caddy_before} → {caddy_now}",
            streams.len()
        );
        drop(streams);
    }
    // And both still serve.
    assert_eq!(
        send(server.addr, &contract_suite::ping_request("after-heads-01"))
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        send(caddy.addr, &contract_suite::ping_request("after-heads-02"))
            .unwrap()
            .status,
        204
    );
}
