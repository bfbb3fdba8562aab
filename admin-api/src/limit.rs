//! Rate limiting of failed logins: per client address and per login name,
//! 5 failures within 15 minutes block further attempts for the rest of
//! that window (answered 429 without checking the password). In memory:
//! each node limits what it sees.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in a window.
pub const MAX_FAILURES: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys remembered at most (oldest forgotten first).
const MAX_KEYS: usize = 100_000;

/// Failure counts.
#[derive(Debug, Default)]
pub struct Limiter {
    fails: Mutex<HashMap<String, (u32, Instant)>>,
}

/// The keys a login counts against: the client address and the name.
pub fn keys(ip: Option<&str>, name: &str) -> Vec<String> {
    let mut k = vec![format!("name:{}", name.to_lowercase())];
    if let Some(ip) = ip {
        k.push(format!("ip:{ip}"));
    }
    k
}

impl Limiter {
    /// How long until any of `keys` may try again, if blocked.
    pub fn blocked(&self, keys: &[String]) -> Option<Duration> {
        let m = self.fails.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| m.get(k))
            .filter(|(n, at)| *n >= MAX_FAILURES && at.elapsed() < WINDOW)
            .map(|(_, at)| WINDOW.saturating_sub(at.elapsed()))
            .max()
    }

    /// Counts a failure against each key.
    pub fn fail(&self, keys: &[String]) {
        let mut m = self.fails.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_KEYS {
            m.retain(|_, (_, at)| at.elapsed() < WINDOW);
        }
        for k in keys {
            let e = m.entry(k.clone()).or_insert((0, Instant::now()));
            if e.1.elapsed() >= WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    /// Forgets the name's failures after a good login (the address keeps
    /// its count, so one good account does not unlock guessing others).
    pub fn clear(&self, keys: &[String]) {
        let mut m = self.fails.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys.iter().filter(|k| k.starts_with("name:")) {
            m.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_block_the_name_and_the_address() {
        let l = Limiter::default();
        let k = keys(Some("10.0.0.1"), "Anne");
        for _ in 0..4 {
            l.fail(&k);
            assert!(l.blocked(&k).is_none());
        }
        l.fail(&k);
        assert!(l.blocked(&k).is_some());
        // Another name from the same address: blocked by the address.
        assert!(l.blocked(&keys(Some("10.0.0.1"), "bo")).is_some());
        // The same name from elsewhere: blocked by the name.
        assert!(l.blocked(&keys(Some("10.0.0.2"), "anne")).is_some());
        // Another name from elsewhere: free.
        assert!(l.blocked(&keys(Some("10.0.0.2"), "bo")).is_none());
    }
}
