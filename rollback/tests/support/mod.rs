//! Starts the real `rollback` binary on a free port, and a real `redis-server`, and stops them.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use contract_suite::{RawRequest, free_local_port, send};

pub struct Rollback {
    pub addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
}

/// A directory of its own for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rollback-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

impl Rollback {
    /// Starts the server on `store` (a `--store` URL; empty for none) with these environment
    /// variables, logging into `dir`, and waits for `/healthz`.
    pub fn start(store: &str, dir: &Path, vars: &[(&str, &str)]) -> Self {
        Self::start_with_args(store, dir, vars, &[])
    }

    /// [`Rollback::start`] with more command-line arguments.
    pub fn start_with_args(store: &str, dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> Self {
        let port = free_local_port();
        let log_path = dir.join(format!("rollback-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rollback"));
        command.args(["--listen", &format!("127.0.0.1:{port}")]);
        // An empty `store`: none on the command line, for a test of where else it comes from.
        if !store.is_empty() {
            command.args(["--store", store]);
        }
        command
            .args(args)
            .env_remove("ROLLBACK_STORE")
            .env_remove("WAU_READ_TOKEN")
            .env_remove("ADMIN_TOKEN")
            .env_remove("ABUSE_LIMIT_PER_MINUTE")
            .env_remove("SESSION_TTL_SECONDS")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = command.spawn().expect("start rollback");
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if send(server.addr, &RawRequest::new("GET", "/healthz")).is_ok_and(|r| r.status == 200)
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("rollback exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "rollback not ready:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The server's resident memory, in bytes, as Linux counts it.
    pub fn resident_bytes(&self) -> u64 {
        resident_bytes(self.child.id())
    }

    /// The server's open file descriptors, as Linux counts them.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rollback did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of the test's own, on a free port, persisting every write (AOF with
/// fsync always) so that a SIGKILL loses nothing Redis acknowledged.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start(dir: &Path) -> Self {
        let mut server = Self {
            port: free_local_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again, on the same port and data) and waits until it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): run scripts/setup.sh, or apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start: {ping:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test's redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Caddy serving `rollback/deploy/Caddyfile` as it is, on a free loopback port in plain HTTP,
/// in front of `upstream`; its log (everything it prints) goes to a file.
pub struct Caddy {
    pub addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
}

impl Caddy {
    pub fn start(upstream: SocketAddr, dir: &Path) -> Self {
        let port = free_local_port();
        let log_path = dir.join(format!("caddy-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let caddyfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Caddyfile");
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            // The file's placeholders: a plain-HTTP site on this port, no admin endpoint (tests
            // run side by side), and its state in the test's directory.
            .env("TELEMETRY_SITE", format!("http://127.0.0.1:{port}"))
            .env("ROLLBACK_UPSTREAM", upstream.to_string())
            .env("CADDY_ADMIN", "off")
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start caddy ({e}): run scripts/setup.sh, or apt-get install caddy")
            });
        let mut caddy = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Caddy answers once it listens: 200 from the rollback's /healthz, or 502 without it.
        while send(caddy.addr, &RawRequest::new("GET", "/healthz")).is_err() {
            if let Ok(Some(status)) = caddy.child.try_wait() {
                panic!("caddy exited ({status}):\n{}", caddy.log());
            }
            assert!(
                Instant::now() < deadline,
                "caddy not ready:\n{}",
                caddy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        caddy
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Caddy's resident memory, in bytes.
    pub fn resident_bytes(&self) -> u64 {
        resident_bytes(self.child.id())
    }
}

/// A process's `VmRSS`, in bytes (0 when it cannot be read).
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
