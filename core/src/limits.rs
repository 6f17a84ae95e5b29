//! Named limits of the protocol, each with the reason for its number.

/// Largest request body accepted, in bytes. A valid ping is about 200 bytes; 1 KiB leaves
/// room for long pre-release versions while keeping a flood of bodies cheap to refuse.
pub const MAX_BODY_BYTES: usize = 1024;

/// How much of an oversized streamed body the Worker reads and throws away before answering
/// 413. Under `wrangler dev`, an answer sent while the request body is still unread comes back
/// as a 503 or not at all; draining (never buffering) the rest makes the 413 reliable, and
/// past this bound the client is not worth the CPU time.
pub const MAX_DISCARDED_BYTES: usize = 256 * 1024;

/// Longest accepted version string. Real versions are under 32 characters; the bound keeps
/// a stored record well under KV's 1024-byte metadata limit whatever the body holds.
pub const MAX_VERSION_CHARS: usize = 64;

/// Shortest and longest session id. Shorter ids collide; longer ones are not random ids.
pub const SESSION_ID_CHARS: std::ops::RangeInclusive<usize> = 8..=64;

/// How long a record is kept: 12 weeks, enough for a quarter's trend and no longer.
pub const DEFAULT_SESSION_TTL_SECONDS: u64 = 12 * 7 * 24 * 60 * 60;

/// Shortest TTL an operator may configure: Cloudflare KV refuses expirations under 60 s.
pub const MIN_SESSION_TTL_SECONDS: u64 = 60;

/// Largest metadata Cloudflare KV stores beside a key; the record must fit in it.
pub const MAX_KV_METADATA_BYTES: usize = 1024;

/// Valid pings one client address may send per abuse window. A relay pings once a day;
/// even an office of relays behind one NAT restarting together stays far below this.
pub const DEFAULT_ABUSE_LIMIT_PER_WINDOW: u32 = 120;

/// Length of the abuse window, in seconds.
pub const ABUSE_WINDOW_SECONDS: u64 = 60;

/// Windows the in-memory abuse limiter tracks at once (a client's and its block's: two per
/// address, about 60 bytes each); past this the oldest window is forgotten early rather than
/// letting memory grow with an attacker's addresses.
pub const ABUSE_MAX_TRACKED_CLIENTS: usize = 20_000;

/// Shortest operator token accepted (`WAU_READ_TOKEN`, `ADMIN_TOKEN`): 32 characters, as
/// `openssl rand -hex 16` makes, so that guessing one is hopeless even for a client spread
/// over more addresses than the abuse limit can hold apart.
pub const MIN_TOKEN_CHARS: usize = 32;

/// Distinct values a week's tally names along one dimension at most. A week sees tens of
/// daemon versions and a handful of Node majors; a flood of made-up versions (any pre-release
/// tag is valid semver) would otherwise grow the tallies, and every breakdown with them,
/// without bound. Past it, a ping's new value is counted, and stored, as
/// [`crate::stored_week::OTHER_VALUE`]: at most 1,001 rows per dimension and week.
pub const MAX_TALLIED_VALUES: u64 = 1_000;
