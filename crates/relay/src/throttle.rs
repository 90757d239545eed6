//! Failed authentication: logged with the client's address and the
//! credential id presented (never the secret), counted in `/metrics`, and
//! limited per client address and per credential id, so that guessing is
//! visible and answered 429 once it is more than a slip.
//!
//! The limit can never be turned against others: a credential is always
//! checked, and the right one is served whatever its address or id has
//! suffered (only a failure learns it is limited). The client's address is
//! the one a trusted balancer names (`serve::client`), so one client behind
//! a balancer does not limit the others; and counting by id as well catches
//! guessing that rotates addresses.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;

use crate::metrics::{AuthFailureLabels, Metrics};

/// Addresses, and ids, tracked at most; past it, those back to a full
/// allowance are forgotten, and while none is, new ones go uncounted.
const MAX_TRACKED: usize = 65_536;

/// The longest credential id kept or logged, in characters.
const MAX_ID: usize = 80;

/// Token buckets per client address and per credential id: each failure
/// takes one token from both, `per_minute` come back every minute, and a
/// failure that finds either empty is answered 429.
pub struct AuthGuard {
    per_minute: f64,
    addresses: Mutex<HashMap<IpAddr, Bucket>>,
    ids: Mutex<HashMap<String, Bucket>>,
    failures: Family<AuthFailureLabels, Counter>,
    limited: Counter,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl AuthGuard {
    pub fn new(per_minute: u32, metrics: &Metrics) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            addresses: Mutex::default(),
            ids: Mutex::default(),
            failures: metrics.auth_failures.clone(),
            limited: metrics.rate_limited.clone(),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let earned = now.duration_since(bucket.updated).as_secs_f64() * self.per_minute / 60.0;
        Bucket { tokens: (bucket.tokens + earned).min(self.per_minute), updated: now }
    }

    /// Takes one token from `key`'s bucket; how long until one is back if
    /// there was none to take.
    fn take<K: Hash + Eq + Clone>(
        &self,
        buckets: &Mutex<HashMap<K, Bucket>>,
        key: &K,
        now: Instant,
    ) -> Option<Duration> {
        let mut buckets = buckets.lock().expect("auth guard lock");
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            buckets.retain(|_, b| self.refilled(*b, now).tokens < self.per_minute);
            if buckets.len() >= MAX_TRACKED {
                // Full of failing keys: a new one goes uncounted rather than
                // wiping out the limits the others have earned.
                return None;
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.per_minute, updated: now });
        let mut refilled = self.refilled(*bucket, now);
        let wait =
            (refilled.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - refilled.tokens) * 60.0 / self.per_minute));
        refilled.tokens = (refilled.tokens - 1.0).max(0.0);
        *bucket = refilled;
        wait
    }

    /// Records a failed authentication by `client` presenting `credential`
    /// (with its id, when the request named one). `detail` may come from the
    /// peer: it is logged escaped and shortened. `Some(wait)` when the
    /// address or the id has failed too often: answer 429 with that wait.
    pub fn failed(
        &self,
        client: Option<IpAddr>,
        credential: &'static str,
        id: Option<&str>,
        detail: &str,
    ) -> Option<Duration> {
        self.failures.get_or_create(&AuthFailureLabels { credential }).inc();
        let id = id.map(|id| shortened(id, MAX_ID));
        let now = Instant::now();
        let by_address = client.and_then(|ip| self.take(&self.addresses, &borealis_serve::client_key(ip), now));
        let by_id = id.as_ref().and_then(|id| self.take(&self.ids, &format!("{credential}:{id}"), now));
        let wait = by_address.max(by_id);
        let from = client.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let limited = match (by_address, by_id) {
            (Some(_), Some(_)) => "address and id",
            (Some(_), None) => "address",
            (None, Some(_)) => "id",
            (None, None) => "no",
        };
        tracing::warn!(peer = %from, credential, id = id.as_deref().unwrap_or("-"), limited, detail = shortened(detail, 120).as_str(), "authentication failed");
        if wait.is_some() {
            self.limited.inc();
        }
        wait
    }
}

/// At most `max` characters of `text`, marked when cut.
pub fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_are_limited_per_address_and_per_id_and_recover() {
        let guard = AuthGuard::new(10, &Metrics::default());
        let client = Some(IpAddr::from([192, 0, 2, 1]));
        let other = Some(IpAddr::from([192, 0, 2, 2]));
        for i in 0..10 {
            assert_eq!(guard.failed(client, "client_secret", Some(&format!("agt_{i}")), "wrong"), None);
        }
        let wait = guard.failed(client, "client_secret", Some("agt_new"), "wrong").unwrap();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(6), "{wait:?}");
        assert_eq!(
            guard.failed(other, "client_secret", Some("agt_other"), "wrong"),
            None,
            "another address is not limited"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(guard.failed(client, "client_secret", None, "wrong"), None, "the allowance comes back");

        // One id guessed from ever new addresses is limited by its id.
        for i in 0..10u8 {
            assert_eq!(guard.failed(Some(IpAddr::from([198, 51, 100, i])), "client_secret", Some("agt_x"), "w"), None);
        }
        assert!(guard.failed(Some(IpAddr::from([198, 51, 100, 200])), "client_secret", Some("agt_x"), "w").is_some());
        assert_eq!(
            guard.failed(Some(IpAddr::from([198, 51, 100, 201])), "agent_token", Some("agt_x"), "w"),
            None,
            "ids are per credential kind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_client_is_counted_by_its_64() {
        let guard = AuthGuard::new(3, &Metrics::default());
        for host in 1..=3u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, host]);
            assert_eq!(guard.failed(Some(ip), "admin_token", None, "wrong"), None);
        }
        let next_host = IpAddr::from([0x2001, 0xdb8, 0, 7, 0xffff, 0, 0, 1]);
        assert!(guard.failed(Some(next_host), "admin_token", None, "wrong").is_some(), "one /64, one allowance");
        let other_64 = IpAddr::from([0x2001, 0xdb8, 0, 8, 0, 0, 0, 1]);
        assert_eq!(guard.failed(Some(other_64), "admin_token", None, "wrong"), None);
    }

    #[test]
    fn details_are_shortened() {
        assert_eq!(shortened("abcdef", 3), "abc…");
        assert_eq!(shortened("abc", 3), "abc");
    }
}
