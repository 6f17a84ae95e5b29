//! The abuse limit: a fixed window of valid pings per client address, held in memory only.
//!
//! Addresses are kept as keyed hashes, never as text. A ping counts twice: against its client
//! (an IPv4 address, or an IPv6 /64, the block a single site is handed: one host can use
//! billions of its addresses) and against its client's block (an IPv4 /24, an IPv6 /48),
//! which may send [`PREFIX_LIMIT_FACTOR`] times as much. A flood spread over a block's
//! addresses is then bounded by the block, and one address behind a NAT (a campus, an office)
//! is bounded only by its own limit, as before: a block's limit is never the lower one.
//! When the limiter tracks as many windows as it may, the window that began first is dropped
//! to make room, so memory stays bounded and everyone else keeps counting.
//!
//! [`AbuseLimiter`] counts in one process (the rollback) or one isolate (the Worker, where
//! that is a brake on a single noisy client, not a global quota). A limiter shared across
//! isolates (the Worker's Rate Limiting binding) is handed [`SharedLimitKey::client_key`]
//! instead of the address, and refuses with [`refused_by_shared_limit`].

use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::limits::{ABUSE_MAX_TRACKED_CLIENTS, ABUSE_WINDOW_SECONDS};
use crate::rejection::Rejection;

#[derive(Debug, Clone, Copy)]
struct Window {
    started_at: u64,
    pings: u32,
}

/// How many times a client's limit its block (an IPv4 /24, an IPv6 /48) may send. A relay
/// pings about once a day, so a block of a thousand relays sends about one ping a minute;
/// only more than 480 of them starting in the same minute would meet the block's limit (and
/// those dropped are counted by their next daily ping). A flood over the block's addresses
/// stops there.
pub const PREFIX_LIMIT_FACTOR: u32 = 4;

/// Counts a client's ping (or a wrong token) against the abuse limit: the limiter itself (the
/// Worker, one per isolate) or a lock around one shared by threads (the rollback), taken only
/// for the count, not while the ping is parsed.
pub trait Admission {
    /// Counts one more from `client`, or refuses it with the seconds left in its window.
    fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection>;
    /// Whether `client` is refused now, without counting anything: a request with the right
    /// token is still refused while its client is over the limit, so that the answer to a
    /// guess never tells a right one from a wrong one.
    fn refused(&mut self, client: &str, now_unix_seconds: u64) -> Option<Rejection>;
}

impl Admission for AbuseLimiter {
    fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection> {
        AbuseLimiter::admit(self, client, now_unix_seconds)
    }

    fn refused(&mut self, client: &str, now_unix_seconds: u64) -> Option<Rejection> {
        AbuseLimiter::refused(self, client, now_unix_seconds)
    }
}

impl Admission for &std::sync::Mutex<AbuseLimiter> {
    fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection> {
        let mut limiter = self.lock().map_err(|_| Rejection::Internal)?;
        limiter.admit(client, now_unix_seconds)
    }

    fn refused(&mut self, client: &str, now_unix_seconds: u64) -> Option<Rejection> {
        match self.lock() {
            Ok(limiter) => limiter.refused(client, now_unix_seconds),
            Err(_) => Some(Rejection::Internal),
        }
    }
}

/// The secret that keys the client key a limiter shared beyond this process sees (the
/// Worker's Rate Limiting binding, counted by Cloudflare across isolates): that limiter gets
/// a keyed hash of what the client is counted as, never the address. Without the secret an
/// IPv4 address could be found again from its hash by trying all four billion. No `Debug`.
pub struct SharedLimitKey {
    secret: Vec<u8>,
}

/// Shortest secret accepted: 16 bytes of a random token.
pub const MIN_SHARED_LIMIT_KEY_BYTES: usize = 16;

impl SharedLimitKey {
    /// The configured secret; `None` when unset or shorter than [`MIN_SHARED_LIMIT_KEY_BYTES`].
    pub fn from_configured(value: Option<&str>) -> Option<Self> {
        value
            .filter(|v| v.len() >= MIN_SHARED_LIMIT_KEY_BYTES)
            .map(|v| Self {
                secret: v.as_bytes().to_vec(),
            })
    }

    /// The key `client` (an address, as the abuse limit counts it: IPv6 by /64) is counted
    /// under: 32 hex digits of SHA-256 over the secret and the client.
    pub fn client_key(&self, client: &str) -> String {
        self.keyed(&counted_as(client))
    }

    /// The key `client`'s block (IPv4 /24, IPv6 /48) is counted under, for the binding whose
    /// limit is [`PREFIX_LIMIT_FACTOR`] times the client's; `None` for a value that is not an
    /// address (it has no block).
    pub fn block_key(&self, client: &str) -> Option<String> {
        block_of(client).map(|block| self.keyed(&block))
    }

    fn keyed(&self, counted: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(u64::try_from(self.secret.len()).unwrap_or(0).to_le_bytes());
        hasher.update(&self.secret);
        hasher.update(counted);
        hasher
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The refusal when a shared limiter says no: it does not say for how long, so the client
/// is asked to wait a whole window.
pub fn refused_by_shared_limit() -> Rejection {
    Rejection::TooManyRequests {
        retry_after_seconds: ABUSE_WINDOW_SECONDS,
    }
}

pub struct AbuseLimiter {
    limit: u32,
    hasher: RandomState,
    windows: HashMap<u64, Window>,
    /// (start, key) of each window as it began, oldest first, to find the one to drop. A
    /// window that began again is pushed anew; its earlier entry is stale (its start no longer
    /// matches) and skipped. A queue rather than an ordered set: the Worker's bundle then
    /// carries no B-tree.
    by_start: VecDeque<(u64, u64)>,
}

/// What a client is counted as: an IPv4 address, an IPv6 /64, or (for a value that is not an
/// address: the adapters hand over only addresses, so this is a guard) the text itself. The
/// first byte says which, so that no IPv4 address and IPv6 prefix share a window.
fn counted_as(client: &str) -> Vec<u8> {
    match client.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => [&[4][..], &v4.octets()].concat(),
        Ok(IpAddr::V6(v6)) => [&[6][..], v6.octets().get(..8).unwrap_or_default()].concat(),
        Err(_) => [b"t", client.as_bytes()].concat(),
    }
}

/// The block a client's address belongs to: an IPv4 /24 or an IPv6 /48 (a site's allocation),
/// tagged apart from any client; `None` for a value that is not an address.
fn block_of(client: &str) -> Option<Vec<u8>> {
    match client.parse::<IpAddr>().ok()?.to_canonical() {
        IpAddr::V4(v4) => Some([&[24][..], v4.octets().get(..3)?].concat()),
        IpAddr::V6(v6) => Some([&[48][..], v6.octets().get(..6)?].concat()),
    }
}

impl AbuseLimiter {
    /// `limit` valid pings per client and window; 0 turns the limit off.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            hasher: RandomState::new(),
            windows: HashMap::new(),
            by_start: VecDeque::new(),
        }
    }

    /// Counts one valid ping (or wrong token) from `client` at `now_unix_seconds`, against
    /// the client and its block, or refuses it with the seconds left in the window that is
    /// full. A refused ping counts against neither.
    pub fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection> {
        if self.limit == 0 {
            return Ok(());
        }
        let counted = self.counted(client);
        // Room first, so that making it never drops one of this ping's own windows.
        let missing = counted
            .iter()
            .filter(|(key, _)| !self.windows.contains_key(key))
            .count();
        while self.windows.len() + missing > ABUSE_MAX_TRACKED_CLIENTS {
            let Some((started_at, oldest)) = self.by_start.pop_front() else {
                break;
            };
            if !self.is_current_entry(started_at, oldest) {
                continue;
            }
            if counted.iter().any(|(key, _)| *key == oldest) {
                // This ping's own window (its block's, say) stays: to the back of the queue.
                self.by_start.push_back((started_at, oldest));
                if self.by_start.len() <= counted.len() {
                    break;
                }
                continue;
            }
            self.windows.remove(&oldest);
        }
        for (key, _) in &counted {
            self.open_window(*key, now_unix_seconds);
        }
        if let Some(refused) = self.refused(client, now_unix_seconds) {
            return Err(refused);
        }
        for (key, _) in &counted {
            if let Some(window) = self.windows.get_mut(key) {
                window.pings += 1;
            }
        }
        Ok(())
    }

    /// Whether a ping from `client` would be refused now; counts nothing.
    pub fn refused(&self, client: &str, now_unix_seconds: u64) -> Option<Rejection> {
        if self.limit == 0 {
            return None;
        }
        let retry_after_seconds = self
            .counted(client)
            .iter()
            .filter_map(|(key, limit)| {
                let window = self.windows.get(key)?;
                let ends_at = window.started_at.saturating_add(ABUSE_WINDOW_SECONDS);
                let current = (window.started_at..ends_at).contains(&now_unix_seconds);
                (current && window.pings >= *limit)
                    .then(|| ends_at.saturating_sub(now_unix_seconds).max(1))
            })
            .max()?;
        Some(Rejection::TooManyRequests {
            retry_after_seconds,
        })
    }

    /// The windows a ping from `client` counts in, and each one's limit.
    fn counted(&self, client: &str) -> Vec<(u64, u32)> {
        let mut counted = vec![(self.hasher.hash_one(counted_as(client)), self.limit)];
        if let Some(block) = block_of(client) {
            let block_limit = self.limit.saturating_mul(PREFIX_LIMIT_FACTOR);
            counted.push((self.hasher.hash_one(block), block_limit));
        }
        counted
    }

    /// The window `key` counts in at `now`: a new one if it has none or its window ended (or
    /// the clock went back before it began).
    fn open_window(&mut self, key: u64, now: u64) {
        let fresh = Window {
            started_at: now,
            pings: 0,
        };
        let window = self.windows.entry(key).or_insert(Window {
            started_at: u64::MAX,
            ..fresh
        });
        let ends_at = window.started_at.saturating_add(ABUSE_WINDOW_SECONDS);
        if now >= ends_at || now < window.started_at {
            *window = fresh;
            self.by_start.push_back((now, key));
        }
        // Stale entries are dropped once they outnumber the windows, so the queue stays
        // within twice the bound.
        if self.by_start.len() > 2 * self.windows.len() + 64 {
            let windows = &self.windows;
            (self.by_start).retain(|(started_at, key)| {
                windows
                    .get(key)
                    .is_some_and(|w| w.started_at == *started_at)
            });
        }
    }

    /// Whether `(started_at, key)` in the queue is the window `key` has now.
    fn is_current_entry(&self, started_at: u64, key: u64) -> bool {
        (self.windows.get(&key)).is_some_and(|window| window.started_at == started_at)
    }

    /// How many windows (clients and blocks) are tracked now, to show memory stays bounded.
    pub fn tracked_clients(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_the_limit_waits_for_its_window_to_end() {
        let mut limiter = AbuseLimiter::new(3);
        for _ in 0..3 {
            assert_eq!(limiter.admit("203.0.113.9", 1_000), Ok(()));
        }
        assert_eq!(
            limiter.admit("203.0.113.9", 1_010),
            Err(Rejection::TooManyRequests {
                retry_after_seconds: 50
            })
        );
        assert_eq!(
            limiter.admit("198.51.100.1", 1_010),
            Ok(()),
            "other clients unaffected"
        );
        assert_eq!(limiter.admit("203.0.113.9", 1_060), Ok(()), "a new window");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let mut limiter = AbuseLimiter::new(0);
        assert!((0..1000).all(|_| limiter.admit("a", 5).is_ok()));
        assert_eq!(limiter.tracked_clients(), 0);
    }

    #[test]
    fn memory_stays_bounded_under_an_address_flood() {
        let mut limiter = AbuseLimiter::new(5);
        for n in 0..(ABUSE_MAX_TRACKED_CLIENTS * 3) {
            limiter.admit(&format!("client-{n}"), 7).unwrap();
        }
        assert!(limiter.tracked_clients() <= ABUSE_MAX_TRACKED_CLIENTS);
        assert!(limiter.by_start.len() <= 2 * limiter.tracked_clients() + 64);
    }

    #[test]
    fn a_flood_drops_the_oldest_windows_and_a_limited_client_stays_limited() {
        let mut limiter = AbuseLimiter::new(1);
        // Text clients have no block: one window each; the address below has two.
        for n in 0..ABUSE_MAX_TRACKED_CLIENTS - 2 {
            limiter.admit(&format!("early-{n}"), 100).unwrap();
        }
        limiter.admit("203.0.113.9", 101).unwrap();
        assert!(limiter.admit("203.0.113.9", 101).is_err());
        // New clients past the bound push out the windows that began first, one each.
        for n in 0..100 {
            limiter.admit(&format!("flood-{n}"), 102).unwrap();
        }
        assert_eq!(limiter.tracked_clients(), ABUSE_MAX_TRACKED_CLIENTS);
        assert!(
            limiter.admit("203.0.113.9", 103).is_err(),
            "a flood must not clear a limited client's window"
        );
        let dropped = (0..ABUSE_MAX_TRACKED_CLIENTS - 2)
            .map(|n| limiter.hasher.hash_one(counted_as(&format!("early-{n}"))))
            .filter(|key| !limiter.windows.contains_key(key))
            .count();
        assert_eq!(dropped, 100, "one of the earliest windows per new client");
    }

    #[test]
    fn a_flood_over_a_block_stops_at_the_block_s_limit() {
        let limit = 3;
        let block_limit = usize::try_from(limit * PREFIX_LIMIT_FACTOR).unwrap();
        let over_a_48 = |n: usize| format!("2001:db8:7:{n:x}::1");
        let over_a_24 = |n: usize| format!("198.51.100.{n}");
        let blocks: [(&dyn Fn(usize) -> String, &str); 2] =
            [(&over_a_48, "2001:db8:8::1"), (&over_a_24, "198.51.101.1")];
        for (client, elsewhere) in blocks {
            let mut limiter = AbuseLimiter::new(limit);
            // Each address (each /64) once: all distinct clients, one block.
            let admitted = (0..100)
                .filter(|&n| limiter.admit(&client(n), 10).is_ok())
                .count();
            assert_eq!(admitted, block_limit, "{elsewhere}");
            assert_eq!(
                limiter.admit(&client(200), 10),
                Err(Rejection::TooManyRequests {
                    retry_after_seconds: 60
                })
            );
            assert!(limiter.admit(elsewhere, 10).is_ok(), "another block");
            assert!(limiter.admit(&client(0), 70).is_ok(), "the next window");
        }
    }

    #[test]
    fn one_address_behind_a_nat_keeps_its_whole_limit() {
        // A campus behind one address: only the address's own limit applies, since its block
        // allows more; a neighbour in the same /24 still has the block's remainder.
        let mut limiter = AbuseLimiter::new(120);
        let admitted = (0..500)
            .filter(|_| limiter.admit("192.0.2.10", 5).is_ok())
            .count();
        assert_eq!(admitted, 120);
        assert!(limiter.admit("192.0.2.11", 5).is_ok());
    }

    #[test]
    fn refused_says_whether_a_client_is_over_without_counting() {
        let mut limiter = AbuseLimiter::new(2);
        assert_eq!(limiter.refused("192.0.2.1", 0), None);
        limiter.admit("192.0.2.1", 0).unwrap();
        for _ in 0..10 {
            assert_eq!(
                limiter.refused("192.0.2.1", 1),
                None,
                "a look is not a count"
            );
        }
        limiter.admit("192.0.2.1", 1).unwrap();
        assert_eq!(
            limiter.refused("192.0.2.1", 20),
            Some(Rejection::TooManyRequests {
                retry_after_seconds: 40
            })
        );
        assert_eq!(limiter.refused("192.0.2.1", 60), None, "its window ended");
        assert_eq!(AbuseLimiter::new(0).refused("192.0.2.1", 0), None);
    }

    #[test]
    fn a_shared_limit_sees_a_keyed_hash_of_the_client_never_the_address() {
        assert!(SharedLimitKey::from_configured(None).is_none());
        assert!(SharedLimitKey::from_configured(Some("too-short")).is_none());
        let key =
            SharedLimitKey::from_configured(Some("a-secret-of-32-random-characters")).unwrap();
        let other =
            SharedLimitKey::from_configured(Some("another-secret-of-32-characters!")).unwrap();
        let hashed = key.client_key("203.0.113.7");
        assert_eq!(hashed.len(), 32);
        assert!(hashed.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            hashed,
            key.client_key("203.0.113.7"),
            "stable across isolates"
        );
        assert_eq!(hashed, key.client_key("::ffff:203.0.113.7"));
        assert_ne!(hashed, key.client_key("203.0.113.8"));
        assert_ne!(
            hashed,
            other.client_key("203.0.113.7"),
            "keyed by the secret"
        );
        assert_eq!(
            key.client_key("2001:db8:1:2::1"),
            key.client_key("2001:db8:1:2:ffff::9"),
            "one /64, one key"
        );
        assert_ne!(
            key.client_key("2001:db8:1:2::1"),
            key.client_key("2001:db8:1:3::1")
        );
        assert_eq!(
            key.block_key("2001:db8:1:2::1"),
            key.block_key("2001:db8:1:ffff::1"),
            "one /48, one block key"
        );
        assert_eq!(key.block_key("203.0.113.7"), key.block_key("203.0.113.200"));
        assert_ne!(key.block_key("203.0.113.7"), key.block_key("203.0.114.7"));
        assert_ne!(
            key.block_key("203.0.113.7").unwrap(),
            key.client_key("203.0.113.7"),
            "a block is never counted as a client"
        );
        assert_eq!(key.block_key("not an address"), None);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself() {
        let mut limiter = AbuseLimiter::new(2);
        limiter.admit("2001:db8:1:2::1", 10).unwrap();
        limiter
            .admit("2001:db8:1:2:ffff:ffff:ffff:ffff", 10)
            .unwrap();
        assert!(
            limiter.admit("2001:db8:1:2:abcd::7", 10).is_err(),
            "same /64"
        );
        assert!(limiter.admit("2001:db8:1:3::1", 10).is_ok(), "another /64");
        limiter.admit("192.0.2.7", 10).unwrap();
        limiter.admit("::ffff:192.0.2.7", 10).unwrap();
        assert!(
            limiter.admit("192.0.2.7", 10).is_err(),
            "the same IPv4 client"
        );
        assert!(limiter.admit("192.0.2.8", 10).is_ok());
        assert!(limiter.admit("not an address", 10).is_ok());
        assert!(limiter.by_start.len() <= 2 * limiter.tracked_clients() + 64);
    }

    #[test]
    fn windows_that_begin_again_leave_no_growing_queue() {
        let mut limiter = AbuseLimiter::new(5);
        for minute in 0..10_000 {
            limiter.admit("192.0.2.1", minute * 60).unwrap();
            limiter.admit("192.0.2.2", minute * 60 + 30).unwrap();
        }
        assert_eq!(limiter.tracked_clients(), 3, "two clients and their block");
        assert!(
            limiter.by_start.len() <= 2 * 3 + 64,
            "{}",
            limiter.by_start.len()
        );
    }

    #[test]
    fn a_clock_going_backwards_opens_a_new_window() {
        let mut limiter = AbuseLimiter::new(1);
        limiter.admit("a", 500).unwrap();
        assert_eq!(limiter.admit("a", 400), Ok(()));
    }
}
