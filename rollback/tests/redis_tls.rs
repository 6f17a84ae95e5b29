//! `rediss://`: the rollback talks TLS to Redis (as a managed Redis needs), trusts only
//! certificates from the system's (here: the test's) CA list, and refuses to start otherwise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contract_suite::{current_iso_week, free_local_port, ping_request, readout_request, send};
use support::{Rollback, scratch_dir};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed for this test: apt-get install openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a server certificate for localhost, made for this test only.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rollback-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext"), "subjectAltName=DNS:localhost").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
}

struct TlsRedis(Child);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tls_redis(dir: &Path, port: u16) -> TlsRedis {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
        .args(["--tls-port", &port.to_string()])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is needed: run scripts/setup.sh");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server with TLS did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsRedis(child)
}

#[test]
fn rediss_stores_over_tls_and_refuses_an_untrusted_server() {
    let dir = scratch_dir("redis-tls");
    make_certificates(&dir);
    let port = free_local_port();
    let _redis = start_tls_redis(&dir, port);
    let url = format!("rediss://localhost:{port}/0");

    // Trusting the test CA (rustls reads SSL_CERT_FILE), pings are stored and counted.
    let ca = dir.join("ca.pem");
    let server = Rollback::start(
        &url,
        &dir,
        &[
            ("WAU_READ_TOKEN", "tls-0123456789abcdef0123456789abcdef"),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    );
    let ping = ping_request("tls-session-1");
    assert_eq!(send(server.addr, &ping).unwrap().status, 204);
    let readout = readout_request(&current_iso_week(), "tls-0123456789abcdef0123456789abcdef");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = send(server.addr, &readout).unwrap().text();
        if body.ends_with("\"weekly_active_sessions\":1}") {
            break;
        }
        assert!(Instant::now() < deadline, "never counted over TLS: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);

    // Without the CA the certificate is not trusted: a clear error and a non-zero exit.
    let output = Command::new(env!("CARGO_BIN_EXE_rollback"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_local_port()),
            "--store",
            &url,
        ])
        .env("SSL_CERT_FILE", dir.join("ext"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}
