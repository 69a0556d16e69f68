//! Login throttling: failed sign-ins are counted per user name and per client address in
//! fixed windows; past the limit, further attempts are refused (429) before any password
//! is hashed, so a flood costs neither memory nor CPU. A success clears the user's count.
//! Kept in memory: each replica throttles on its own, which bounds a flood per replica.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins one user name may have in a window.
pub const USER_FAILURES: u32 = 10;
/// Failed sign-ins one address may have in a window (it may try several names).
pub const ADDRESS_FAILURES: u32 = 50;
/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Counters kept at the most; beyond that, expired ones are dropped, then the oldest.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct LoginThrottle {
    counts: Mutex<HashMap<Key, Count>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

struct Count {
    since: Instant,
    failures: u32,
}

impl LoginThrottle {
    /// None if an attempt may go ahead, else how long until it may.
    pub fn refusal(&self, user: &str, address: Option<IpAddr>) -> Option<Duration> {
        let counts = self.counts.lock().expect("not poisoned");
        let now = Instant::now();
        let over = |key: &Key, limit: u32| {
            counts
                .get(key)
                .filter(|c| now.duration_since(c.since) < WINDOW && c.failures >= limit)
                .map(|c| WINDOW - now.duration_since(c.since))
        };
        over(&Key::User(user.to_string()), USER_FAILURES).or_else(|| address.and_then(|a| over(&Key::Address(a), ADDRESS_FAILURES)))
    }

    pub fn failed(&self, user: &str, address: Option<IpAddr>) {
        let mut counts = self.counts.lock().expect("not poisoned");
        let now = Instant::now();
        if counts.len() >= MAX_ENTRIES {
            counts.retain(|_, c| now.duration_since(c.since) < WINDOW);
            if counts.len() >= MAX_ENTRIES {
                let oldest = counts.iter().min_by_key(|(_, c)| c.since).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    counts.remove(&k);
                }
            }
        }
        let keys = std::iter::once(Key::User(user.to_string())).chain(address.map(Key::Address));
        for key in keys {
            let count = counts.entry(key).or_insert(Count { since: now, failures: 0 });
            if now.duration_since(count.since) >= WINDOW {
                *count = Count { since: now, failures: 0 };
            }
            count.failures += 1;
        }
    }

    pub fn succeeded(&self, user: &str) {
        self.counts.lock().expect("not poisoned").remove(&Key::User(user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_refused_after_its_failures_and_cleared_by_a_success() {
        let t = LoginThrottle::default();
        for _ in 0..USER_FAILURES {
            assert_eq!(t.refusal("alice", None), None);
            t.failed("alice", None);
        }
        assert!(t.refusal("alice", None).is_some_and(|d| d <= WINDOW));
        assert_eq!(t.refusal("bob", None), None, "other users are not affected");
        t.succeeded("alice");
        assert_eq!(t.refusal("alice", None), None);
    }

    #[test]
    fn an_address_is_refused_across_user_names() {
        let t = LoginThrottle::default();
        let a: IpAddr = "127.0.0.9".parse().unwrap();
        for i in 0..ADDRESS_FAILURES {
            t.failed(&format!("user{i}"), Some(a));
        }
        assert!(t.refusal("someone-new", Some(a)).is_some());
        assert_eq!(t.refusal("someone-new", Some("127.0.0.8".parse().unwrap())), None);
    }
}
