//! The abuse limit: a fixed window of valid pings per client address, held in memory only.
//!
//! Addresses are kept as keyed hashes, never as text, and never leave the process. In a
//! Worker each isolate counts on its own, so the limit there is per isolate: a brake on a
//! single noisy client, not a global quota.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

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

pub struct AbuseLimiter {
    limit: u32,
    hasher: RandomState,
    windows: HashMap<u64, Window>,
}

impl AbuseLimiter {
    /// `limit` valid pings per client and window; 0 turns the limit off.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            hasher: RandomState::new(),
            windows: HashMap::new(),
        }
    }

    /// Counts one valid ping from `client` at `now_unix_seconds`, or refuses it with the
    /// seconds left in the client's window.
    pub fn admit(&mut self, client: &str, now_unix_seconds: u64) -> Result<(), Rejection> {
        if self.limit == 0 {
            return Ok(());
        }
        let key = self.hasher.hash_one(client);
        if self.windows.len() >= ABUSE_MAX_TRACKED_CLIENTS && !self.windows.contains_key(&key) {
            self.windows
                .retain(|_, w| now_unix_seconds < w.started_at + ABUSE_WINDOW_SECONDS);
            if self.windows.len() >= ABUSE_MAX_TRACKED_CLIENTS {
                // Fail open rather than grow without bound under an address flood.
                self.windows.clear();
            }
        }
        let window = self.windows.entry(key).or_insert(Window {
            started_at: now_unix_seconds,
            pings: 0,
        });
        let ends_at = window.started_at.saturating_add(ABUSE_WINDOW_SECONDS);
        if now_unix_seconds >= ends_at || now_unix_seconds < window.started_at {
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
    }

    #[test]
    fn a_clock_going_backwards_opens_a_new_window() {
        let mut limiter = AbuseLimiter::new(1);
        limiter.admit("a", 500).unwrap();
        assert_eq!(limiter.admit("a", 400), Ok(()));
    }
}
