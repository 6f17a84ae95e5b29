//! `rollback`: starts the rollback server from its command line and environment.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rollback::ServeOptions;
use rollback::connection::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEAD_TIMEOUT, DEFAULT_IDLE_TIMEOUT, TimeLimits,
};
use rollback::server::{DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_GRACE};
use rollback::store::{Store, StoreUrl};
use telemetry_core::Config;
use tokio::net::TcpListener;

/// The telemetry service's rollback server: the Worker's HTTP contract, on this machine.
#[derive(Debug, Parser)]
#[command(
    name = "rollback",
    version,
    after_help = "Environment (the same as the Worker's; each may instead be a systemd credential,\n\
        the file of its name in $CREDENTIALS_DIRECTORY):\n  \
        WAU_READ_TOKEN          the operator's token for the readout (GET /v1/wau/<week>, GET\n                          \
        /v1/wau?from=&to=); unset or empty: those routes answer 404\n  \
        ADMIN_TOKEN             the operator's token for deletions (DELETE /v1/session/<id>);\n                          \
        unset or empty: that route answers 404. Each token: at least 32\n                          \
        characters (openssl rand -hex 32), the two different\n  \
        SESSION_TTL_SECONDS     how long records are kept (default 7257600, 12 weeks; at least 60)\n  \
        ABUSE_LIMIT_PER_MINUTE  valid pings and wrong tokens per client address (IPv6: /64) and\n                          \
        minute (default 120; 0: off); 4 times that per IPv4 /24 or IPv6 /48\n  \
        BREAKDOWN_MIN_SESSIONS  the privacy floor of a breakdown (?by=): rarer values are summed\n                          \
        into withheld_sessions (default 5; at least 1)\n  \
        SUMMARY_RETENTION_WEEKS how long a week's summary (counts by value, no id) outlives its\n                          \
        records, after the week ends (default 104; 0: none; at most 520)\n  \
        PUBLIC_READOUT          1: counts, breakdowns and series readable without a token\n  \
        PUBLIC_DAEMON_VERSIONS, PUBLIC_PROTOCOL_VERSIONS, PUBLIC_NODE_MAJORS: the values a\n                          \
        public breakdown names (comma-separated); every other value shows as other\n  \
        ROLLBACK_STORE, ROLLBACK_*_TIMEOUT_SECONDS, ROLLBACK_MAX_CONNECTIONS: the options above"
)]
struct Options {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (8788: the Worker's `wrangler dev` takes 8787, so that both run
    /// side by side; the unit sets 8787 for Caddy).
    #[arg(long, default_value = "127.0.0.1:8788")]
    listen: SocketAddr,
    /// Where records are kept: sqlite://PATH, or redis://HOST:PORT[/DB] (rediss:// for TLS)
    /// for several instances sharing one store [default: sqlite://telemetry.db].
    /// A URL with a password belongs in ROLLBACK_STORE (or its systemd credential), not on
    /// the command line.
    #[arg(long, global = true, env = "ROLLBACK_STORE", hide_env_values = true)]
    store: Option<String>,
    /// With a maintenance command, make the SQLite file if it does not exist. Without it a
    /// missing file is an error (a mistyped path would otherwise read as an empty store);
    /// the server makes its file on its first start.
    #[arg(long, global = true)]
    create: bool,
    /// Where to serve Prometheus metrics (`GET /metrics`: pings accepted and refused by
    /// reason, failed writes, write latency, queue depth, open connections; no id, no
    /// address). Off unless given; keep it off the public interface.
    #[arg(long, env = "ROLLBACK_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Behind a reverse proxy: the header it puts the client's address in (X-Forwarded-For,
    /// as the shipped Caddyfile sets it; its last entry is used). The abuse limit then counts
    /// that address; a request whose header holds no address counts as the proxy's own.
    #[arg(long)]
    client_address_header: Option<String>,
    /// After SIGTERM or Ctrl-C, how long to wait for queued records to be written.
    #[arg(long, default_value_t = 30)]
    drain_timeout_seconds: u64,
    /// How long a connection may wait for the first byte of a request (new or kept alive).
    #[arg(long, env = "ROLLBACK_IDLE_TIMEOUT_SECONDS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_seconds: u64,
    /// How long a request's head may take from its first byte; past it the connection closes.
    #[arg(long, env = "ROLLBACK_HEAD_TIMEOUT_SECONDS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = DEFAULT_HEAD_TIMEOUT.as_secs())]
    head_timeout_seconds: u64,
    /// How long a request's body may take once its head has arrived; past it, 408.
    #[arg(long, env = "ROLLBACK_BODY_TIMEOUT_SECONDS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = DEFAULT_BODY_TIMEOUT.as_secs())]
    body_timeout_seconds: u64,
    /// Connections served at once. At the bound, the connection that has kept the server
    /// waiting longest is closed to make room; new ones wait in the listen backlog.
    #[arg(
        long,
        env = "ROLLBACK_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = DEFAULT_MAX_CONNECTIONS
    )]
    max_connections: u32,
    /// After SIGTERM or Ctrl-C, how long open connections may finish their requests before
    /// they are closed; the queue is written after that in any case.
    #[arg(long, default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace_seconds: u64,
}

/// Without a command, the server runs.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Import a week from the Worker's KV: FILE is what `wrangler kv key list --remote
    /// --prefix session:<YYYY-Www>:` prints, or - to read it from standard input (no dump file
    /// to clean up). Each record keeps its expiry; expired ones are skipped. Run it with the
    /// server stopped or running. A listing of exactly 1,000 keys (one page of wrangler's)
    /// is refused unless --listing-is-whole says it is the whole week.
    ImportKv {
        file: std::path::PathBuf,
        #[arg(long)]
        listing_is_whole: bool,
    },
    /// Print the records of the weeks given (YYYY-Www …), or of every week from --from to
    /// --to, for `wrangler kv bulk put --remote`, each with the expiry it has here. Streamed:
    /// memory stays flat however large the weeks.
    ExportKv {
        weeks: Vec<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Delete every record of one session, in every week (a deletion request). Run it with
    /// the server stopped or running.
    DeleteSession { session_id: String },
    /// List the weeks the store holds records of, each with its weekly-active sessions.
    Weeks,
    /// Make here the deletions the Worker made during a DNS swap: FILE is what `wrangler kv
    /// key list --remote --prefix deletion:` prints, or - for standard input. Each session's
    /// records go from every week, and later imports skip it.
    ImportDeletions { file: std::path::PathBuf },
    /// Print the sessions deleted here within the TTL (the deletion journal), one id a line,
    /// for the Worker's `DELETE /v1/session/<id>` when traffic goes back to it.
    Deletions,
    /// Take the session ids read from FILE (or - for standard input), one a line, out of the
    /// deletion journal: those whose deletion reached the Worker.
    ForgetDeletions { file: std::path::PathBuf },
}

/// The weeks `export-kv` is asked for: those named, or every week from `from` to `to`.
fn export_weeks(
    named: &[String],
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<telemetry_core::IsoWeek>, String> {
    use telemetry_core::IsoWeek;
    let parse = |text: &str| {
        IsoWeek::parse(text).ok_or_else(|| "a week must be YYYY-Www, e.g. 2026-W48".to_owned())
    };
    match (named.is_empty(), from, to) {
        (false, None, None) => named.iter().map(|week| parse(week)).collect(),
        (true, Some(from), Some(to)) => {
            (parse(from)?.through(parse(to)?, 1_000)).ok_or_else(|| {
                "--from must not be after --to, and the span at most 1,000 weeks".to_owned()
            })
        }
        _ => Err("name the weeks (YYYY-Www …), or give both --from and --to".into()),
    }
}

/// A command's input: the file, or standard input for `-` (no dump file left behind).
fn read_input(file: &std::path::Path) -> Result<String, String> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    text.map_err(|error| format!("cannot read {}: {error}", file.display()))
}

#[tokio::main]
async fn main() -> ExitCode {
    // Operational messages go to stderr; stdout carries only the wide events (and the
    // output of export-kv).
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_current_span(false)
        .init();
    let options = Options::parse();
    let config = match Config::from_lookup(setting) {
        Ok(config) => config,
        Err(error) => return fail(&format!("configuration: {error}")),
    };
    if let Some(name) = &options.client_address_header
        && axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        return fail("--client-address-header: not a valid header name");
    }
    let store = (options.store.clone())
        .or_else(|| setting("ROLLBACK_STORE"))
        .unwrap_or_else(|| DEFAULT_STORE.to_owned());
    let url = match StoreUrl::parse(&store) {
        Ok(url) => url,
        Err(error) => return fail(&format!("--store: {error}")),
    };
    // The server checks its port before it touches the store: a second server started by
    // mistake makes no file.
    let listener = match options.command {
        Some(_) => None,
        None => match TcpListener::bind(options.listen).await {
            Ok(listener) => Some(listener),
            Err(error) => return fail(&format!("cannot listen on {}: {error}", options.listen)),
        },
    };
    if let (Some(_), StoreUrl::Sqlite(path)) = (&options.command, &url)
        && !options.create
        && !path.exists()
    {
        return fail(&format!(
            "no store at {}: a mistyped --store? (--create makes a new, empty one)",
            path.display()
        ));
    }
    let store = match Store::open(&url, config.retention()).await {
        Ok(store) => store,
        Err(error) => return fail(&format!("cannot open the store: {error}")),
    };
    // A maintenance command first deletes what has expired (records, the deletion journal's
    // entries): with the server stopped (the swap back), nothing else would.
    if options.command.is_some()
        && let Err(error) = store.expire(rollback::unix_now()).await
    {
        return fail(&format!("expiring what is due: {error}"));
    }
    match options.command {
        Some(Command::ImportKv {
            file,
            listing_is_whole,
        }) => {
            let input: Box<dyn std::io::Read + Send> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                match std::fs::File::open(&file) {
                    Ok(opened) => Box::new(opened),
                    Err(error) => {
                        return fail(&format!("cannot read {}: {error}", file.display()));
                    }
                }
            };
            let imported = rollback::kv_transfer::import(
                &store,
                input,
                config.session_ttl_seconds,
                rollback::unix_now(),
                listing_is_whole,
            )
            .await;
            return match imported {
                Ok(imported) => {
                    println!(
                        "imported {} records: {} new to the store, {} it held already ({} expired and {} of sessions deleted here, not imported)",
                        imported.written,
                        imported.new,
                        (imported.written as u64).saturating_sub(imported.new),
                        imported.expired,
                        imported.deleted_here
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            };
        }
        Some(Command::DeleteSession { session_id }) => {
            // Never echoed: a mistyped id is still somebody's.
            let Some(session_id) = telemetry_core::SessionId::parse(&session_id) else {
                return fail("not a session id (8 to 64 of A-Z a-z 0-9 _ -)");
            };
            return match store.delete_session(session_id, rollback::unix_now()).await {
                Ok(deleted) => {
                    println!("deleted {deleted} records");
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&format!("deleting from the store: {error}")),
            };
        }
        Some(Command::ExportKv { weeks, from, to }) => {
            let weeks = match export_weeks(&weeks, from.as_deref(), to.as_deref()) {
                Ok(weeks) => weeks,
                Err(error) => return fail(&error),
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let exported =
                rollback::kv_transfer::export(&store, &weeks, rollback::unix_now(), &mut out);
            return match exported.await {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            };
        }
        Some(Command::ImportDeletions { file }) => {
            let listing = match read_input(&file) {
                Ok(text) => text,
                Err(error) => return fail(&error),
            };
            let now = rollback::unix_now();
            let ttl = config.session_ttl_seconds;
            let imported = rollback::kv_transfer::import_deletions(&store, &listing, now, ttl);
            return match imported.await {
                Ok(done) => {
                    println!(
                        "deleted {} records of {} sessions deleted on the Worker",
                        done.records, done.sessions
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            };
        }
        Some(Command::Deletions) => {
            return match store.journal(rollback::unix_now()).await {
                Ok(ids) => {
                    for id in ids {
                        println!("{id}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&format!("reading the store: {error}")),
            };
        }
        Some(Command::ForgetDeletions { file }) => {
            let text = match read_input(&file) {
                Ok(text) => text,
                Err(error) => return fail(&error),
            };
            let mut ids = Vec::new();
            for (at, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match telemetry_core::SessionId::parse(line.trim()) {
                    Some(id) => ids.push(id),
                    None => return fail(&format!("line {}: not a session id", at + 1)),
                }
            }
            return match store.forget_journaled(ids).await {
                Ok(forgotten) => {
                    println!("took {forgotten} sessions out of the deletion journal");
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&format!("writing to the store: {error}")),
            };
        }
        Some(Command::Weeks) => {
            return match store.weeks().await {
                Ok(weeks) => {
                    for (week, sessions) in weeks {
                        println!("{week} {sessions}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&format!("reading the store: {error}")),
            };
        }
        None => {}
    }
    let Some(listener) = listener else {
        return fail("no listener");
    };
    if let Err(error) = store.apply_retention(rollback::unix_now()).await {
        return fail(&format!(
            "applying SUMMARY_RETENTION_WEEKS to the store: {error}"
        ));
    }
    if let Some(address) = options.metrics_listen {
        match TcpListener::bind(address).await {
            Ok(metrics) => rollback::metrics::serve(metrics),
            Err(error) => return fail(&format!("cannot listen on {address} for metrics: {error}")),
        }
    }
    tracing::info!(
        listen = %options.listen,
        readout = config.tokens.read.is_some(),
        deletion = config.tokens.admin.is_some(),
        "rollback listening"
    );
    let shutdown = async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections; writing what is queued");
    };
    let seconds = Duration::from_secs;
    let serve_options = ServeOptions {
        client_address_header: options
            .client_address_header
            .map(|h| h.to_ascii_lowercase()),
        time_limits: TimeLimits {
            idle: seconds(options.idle_timeout_seconds),
            head: seconds(options.head_timeout_seconds),
            body: seconds(options.body_timeout_seconds),
        },
        max_connections: usize::try_from(options.max_connections).unwrap_or(usize::MAX),
        shutdown_grace: seconds(options.shutdown_grace_seconds),
        drain_timeout: seconds(options.drain_timeout_seconds),
    };
    // Requests never wait on stdout: wide events go out from a thread of their own.
    rollback::log::to_stdout_in_background();
    let served = rollback::serve(listener, config, store, serve_options, shutdown).await;
    rollback::log::flush(rollback::log::FLUSH_AT_EXIT);
    match served {
        Ok(()) => {
            tracing::info!("stopped; every acknowledged record is stored");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.to_string()),
    }
}

/// Where records are kept when neither `--store`, `ROLLBACK_STORE` nor its credential says.
const DEFAULT_STORE: &str = "sqlite://telemetry.db";

/// A setting from the environment, or else from systemd's credentials: the file of its name
/// in `$CREDENTIALS_DIRECTORY` (the unit's `LoadCredential=`), so that a secret need not be
/// in the environment, where `/proc` and child processes can see it. A trailing line break
/// is not part of the value.
fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        let directory = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        let text = std::fs::read_to_string(std::path::Path::new(&directory).join(name)).ok()?;
        Some(text.trim_end_matches(['\n', '\r']).to_owned())
    })
}

fn fail(message: &str) -> ExitCode {
    eprintln!("rollback: {message}");
    ExitCode::FAILURE
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
