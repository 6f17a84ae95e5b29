//! The black-box HTTP contract suite: a table of cases from DESIGN.md's wire contract, run
//! unchanged against any deploy target that listens on a plain-HTTP address.
//!
//! The suite knows only HTTP. It checks each answer (status, error code, headers, body) and
//! the store through the readout alone: after every refused request the week's count must not
//! move, after every new accepted session it must grow by one. A target's own test adds what
//! only it can see (stored records, log lines), using [`Run::sent`] to know what to look for.

// A test tool: a panic here fails a test run, it cannot take a service down.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod cases;
pub mod dashboard;
pub mod http;
pub mod population;
pub mod privacy;
pub mod public_view;
pub mod schemathesis;
mod week;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use cases::{Case, Expect, ping_json};
pub use http::{Framing, RawRequest, RawResponse, send, send_from};
pub use week::current_iso_week;

/// Where and how to reach the service under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `WAU_READ_TOKEN` the target was started with (the suite needs one to count).
    pub token: String,
    /// The `ADMIN_TOKEN` it was started with (deletions), or `None` when it has none.
    pub admin_token: Option<String>,
    /// The target's `ABUSE_LIMIT_PER_MINUTE`; when set, the rate-limit case runs last.
    pub abuse_limit: Option<u32>,
}

/// What a run sent and what it found.
#[derive(Debug, Default)]
pub struct Run {
    /// One line per failed check, naming the case.
    pub failures: Vec<String>,
    /// Session ids answered 204, without repeats.
    pub accepted: Vec<String>,
    /// Session ids only ever sent in refused requests: none may be stored.
    pub refused: Vec<String>,
    /// Every body sent, so a target's test can check that none reached its logs.
    pub sent: Vec<Vec<u8>>,
    /// The number of cases run.
    pub cases: usize,
}

/// How long a background write may take to show in the readout.
const WRITE_VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// Where the suite's operator reads from: another loopback /24 than the relays' 127.0.0.1,
/// so neither the client's nor its block's abuse limit is shared.
pub const OPERATOR_ADDRESS: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 1));

/// The admin token the targets' tests configure: a random-looking secret as long as the
/// service requires (32 characters at least).
pub const ADMIN_TOKEN: &str = "contract-admin-token-5e0c2b9a7d41f386";

/// A valid ping from `session_id`, as a relay sends it.
pub fn ping_request(session_id: &str) -> RawRequest {
    RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(ping_json(session_id))
}

/// The operator's readout of `week` with `token`.
pub fn readout_request(week: &str, token: &str) -> RawRequest {
    RawRequest::new("GET", &format!("/v1/wau/{week}"))
        .header("authorization", &format!("Bearer {token}"))
}

/// A loopback port that was free a moment ago, for a server a test starts.
pub fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a free loopback port")
}

impl Target {
    /// The current week's count, as the readout gives it.
    pub fn weekly_count(&self) -> Result<u64, String> {
        self.readout(&current_iso_week())
    }

    fn readout(&self, week: &str) -> Result<u64, String> {
        // From an address of its own, as an operator's would be: the rate-limit probes take
        // the suite's client over the limit, and then even the right token waits there.
        let response = send_from(
            OPERATOR_ADDRESS,
            self.addr,
            &readout_request(week, &self.token),
        )?;
        if response.status != 200 {
            return Err(format!(
                "readout answered {}: {}",
                response.status,
                response.text()
            ));
        }
        response
            .json()
            .and_then(|v| v.get("weekly_active_sessions")?.as_u64())
            .ok_or_else(|| format!("readout body {:?}", response.text()))
    }

    /// The count of the current week once it equals `expected` (writes land a little after
    /// their 204), or the last one seen after a bounded wait.
    pub fn count_settled(&self, expected: u64) -> Result<u64, String> {
        let deadline = Instant::now() + WRITE_VISIBLE_WITHIN;
        loop {
            let count = self.readout(&current_iso_week())?;
            if count == expected || Instant::now() >= deadline {
                return Ok(count);
            }
            // Every readout carries the token, and the abuse limit counts each: a slow write
            // must not spend the limit the suite's last readout needs.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs every case against `target`, then checks the week's final count.
pub fn run(target: &Target) -> Run {
    let mut run = Run::default();
    let tag = run_tag();
    let mut expected = match target.readout(&current_iso_week()) {
        Ok(count) => count,
        Err(error) => {
            run.failures.push(format!("initial readout: {error}"));
            return run;
        }
    };
    let mut table = cases::table(&tag, &target.token);
    if let Some(limit) = target.abuse_limit {
        table.extend(cases::abuse(&tag, limit));
    }
    let mut rate_limited = false;
    for case in &table {
        run.cases += 1;
        run.sent.push(case.request.body.clone());
        let response = match send(target.addr, &case.request) {
            Ok(response) => response,
            Err(error) => {
                run.failures.push(format!("{}: {error}", case.name));
                continue;
            }
        };
        let mut problems = case.check(&response);
        let new_session = case
            .session
            .as_ref()
            .filter(|id| response.status == 204 && !run.accepted.contains(id));
        if let Some(id) = new_session {
            run.accepted.push(id.clone());
            expected += 1;
        } else if let Some(id) = case.session.as_ref().filter(|_| response.status != 204)
            && !run.accepted.contains(id)
        {
            run.refused.push(id.clone());
        }
        // Accepted writes land in the background: wait for them; refused ones must not land.
        // The rate-limit probes are sent as fast as they can be instead, their count checked
        // once at the end: the limit's window is a minute from the run's first ping, and
        // waiting for each write on a loaded machine could outlast it and never see a 429.
        if case.stop_after_status.is_none() {
            let count = if new_session.is_some() {
                target.count_settled(expected)
            } else {
                target.readout(&current_iso_week())
            };
            match count {
                Ok(count) if count == expected => {}
                Ok(count) => problems.push(format!("week count is {count}, expected {expected}")),
                Err(error) => problems.push(error),
            }
        }
        for problem in problems {
            run.failures.push(format!("{}: {problem}", case.name));
        }
        if case.stop_after_status == Some(response.status) {
            rate_limited = true;
            break;
        }
    }
    if target.abuse_limit.is_some() && !rate_limited {
        run.failures
            .push("rate limit: no 429 after four times the configured limit of valid pings".into());
    }
    // Every accepted write has landed (the probes' too), and a refused request's write would
    // have had time to land by now.
    let _ = target.count_settled(expected);
    std::thread::sleep(Duration::from_millis(500));
    match target.readout(&current_iso_week()) {
        Ok(count) if count == expected => {}
        Ok(count) => run
            .failures
            .push(format!("final week count is {count}, expected {expected}")),
        Err(error) => run.failures.push(format!("final readout: {error}")),
    }
    run
}

/// The readout of a target started without a read token: it must not exist.
pub fn run_without_token(addr: SocketAddr) -> Run {
    let mut run = Run::default();
    for case in cases::without_token() {
        run.cases += 1;
        match send(addr, &case.request) {
            Ok(response) => run.failures.extend(
                case.check(&response)
                    .into_iter()
                    .map(|p| format!("{}: {p}", case.name)),
            ),
            Err(error) => run.failures.push(format!("{}: {error}", case.name)),
        }
    }
    run
}

/// The table's cases as a run sends them (the rate-limit probe aside), for tools that start
/// from real requests: `examples/fuzz_seeds.rs` turns them into the fuzzers' seed corpus.
pub fn contract_cases(token: &str) -> Vec<Case> {
    cases::table("seed", token)
}

/// A tag unique to this run, so its session ids are new to any store.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}
