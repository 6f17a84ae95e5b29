//! The abuse limit: a fixed window of valid pings per client address, held in memory only.
//!
//! Addresses are kept as keyed hashes, never as text. An IPv6 client counts by its /64, the
//! block a single site is handed (one host can use billions of its addresses). When the
//! limiter tracks as many clients as it may, the window that began first is dropped to make
//! room, so memory stays bounded and everyone else keeps counting.
//!
//! [`AbuseLimiter`] counts in one process (the rollback) or one isolate (the Worker, where
//! that is a brake on a single noisy client, not a global quota). A limiter shared across
//! isolates (the Worker's Rate Limiting binding) is handed [`SharedLimitKey::client_key`]
//! instead of the address, and refuses with [`refused_by_shared_limit`].

use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::limits::{ABUSE_MAX_TRACKED_CLIENTS, ABUSE_WINDOW_SECONDS};
use crate::rejection::Rejection;

#[derive(Debug, Clone, Copy)]
struct Window {
    started_at: u64,
    pings: u32,
}

/// Counts a client's ping against the abuse limit: the limiter itself (the Worker, one per
/// isolate) or a lock around one shared by threads (the rollback), taken only for the count,
/// not while the ping is parsed.
pub trait Admission {
    fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection>;
}

impl Admission for AbuseLimiter {
    fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection> {
        AbuseLimiter::admit(self, client, now_unix_seconds)
    }
}

impl Admission for &std::sync::Mutex<AbuseLimiter> {
    fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection> {
        let mut limiter = self.lock().map_err(|_| Rejection::Internal)?;
        limiter.admit(client, now_unix_seconds)
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
        let mut hasher = Sha256::new();
        hasher.update(u64::try_from(self.secret.len()).unwrap_or(0).to_le_bytes());
        hasher.update(&self.secret);
        hasher.update(counted_as(client));
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
    /// The same windows by (start, client), oldest first, to find the one to drop.
    by_start: BTreeSet<(u64, u64)>,
}

/// What a client is counted as: an IPv4 address, an IPv6 /64, or (for a value that is not an
/// address, from a misconfigured proxy header) the text itself.
fn counted_as(client: &str) -> Vec<u8> {
    match client.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.octets().to_vec(),
        Ok(IpAddr::V6(v6)) => v6.octets().get(..8).unwrap_or_default().to_vec(),
        Err(_) => client.as_bytes().to_vec(),
    }
}

impl AbuseLimiter {
    /// `limit` valid pings per client and window; 0 turns the limit off.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            hasher: RandomState::new(),
            windows: HashMap::new(),
            by_start: BTreeSet::new(),
        }
    }

    /// Counts one valid ping from `client` at `now_unix_seconds`, or refuses it with the
    /// seconds left in the client's window.
    pub fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection> {
        if self.limit == 0 {
            return Ok(());
        }
        let key = self.hasher.hash_one(counted_as(client));
        if self.windows.len() >= ABUSE_MAX_TRACKED_CLIENTS
            && !self.windows.contains_key(&key)
            && let Some((_, oldest)) = self.by_start.pop_first()
        {
            self.windows.remove(&oldest);
        }
        let window = self.windows.entry(key).or_insert_with(|| {
            self.by_start.insert((now_unix_seconds, key));
            Window {
                started_at: now_unix_seconds,
                pings: 0,
            }
        });
        let ends_at = window.started_at.saturating_add(ABUSE_WINDOW_SECONDS);
        if now_unix_seconds >= ends_at || now_unix_seconds < window.started_at {
            self.by_start.remove(&(window.started_at, key));
            self.by_start.insert((now_unix_seconds, key));
            *window = Window {
                started_at: now_unix_seconds,
                pings: 0,
            };
        }
        if window.pings >= self.limit {
            let retry_after_seconds = window
                .started_at
                .saturating_add(ABUSE_WINDOW_SECONDS)
                .saturating_sub(now_unix_seconds)
                .max(1);
            return Err(Rejection::TooManyRequests {
                retry_after_seconds,
            });
        }
        window.pings += 1;
        Ok(())
    }

    /// How many clients are tracked now, to show memory stays bounded.
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
        assert_eq!(limiter.by_start.len(), limiter.tracked_clients());
    }

    #[test]
    fn a_flood_drops_the_oldest_windows_and_a_limited_client_stays_limited() {
        let mut limiter = AbuseLimiter::new(1);
        for n in 0..ABUSE_MAX_TRACKED_CLIENTS - 1 {
            limiter.admit(&format!("early-{n}"), 100).unwrap();
        }
        limiter.admit("203.0.113.9", 101).unwrap();
        assert!(limiter.admit("203.0.113.9", 101).is_err());
        // New addresses past the bound push out the windows that began first, one each.
        for n in 0..100 {
            limiter.admit(&format!("flood-{n}"), 102).unwrap();
        }
        assert_eq!(limiter.tracked_clients(), ABUSE_MAX_TRACKED_CLIENTS);
        assert!(
            limiter.admit("203.0.113.9", 103).is_err(),
            "a flood must not clear a limited client's window"
        );
        let dropped = (0..ABUSE_MAX_TRACKED_CLIENTS - 1)
            .map(|n| limiter.hasher.hash_one(counted_as(&format!("early-{n}"))))
            .filter(|key| !limiter.windows.contains_key(key))
            .count();
        assert_eq!(dropped, 100, "one of the earliest windows per new client");
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
        assert_eq!(limiter.by_start.len(), limiter.tracked_clients());
    }

    #[test]
    fn a_clock_going_backwards_opens_a_new_window() {
        let mut limiter = AbuseLimiter::new(1);
        limiter.admit("a", 500).unwrap();
        assert_eq!(limiter.admit("a", 400), Ok(()));
    }
}
